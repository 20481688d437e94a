#!/bin/sh
# unit_mounts.sh RW_DIR... -- COMMAND [ARGS...]
# COMMAND in a mount namespace arranged as systemd arranges pacsnode.service's
# (for machines where systemd is not PID 1; test_deb.sh runs the installed
# node in it):
#   ProtectSystem=strict, ReadWritePaths=  every mount read-only but RW_DIRs
#                                          (and the private ones below)
#   ProtectHome=yes                        /home, /root, /run/user empty, read-only
#   PrivateTmp=yes                         /tmp, /var/tmp empty
#   PrivateDevices=yes                     a /dev of null, zero, full, random,
#                                          urandom, tty, shm, fd
#   ProtectProc=invisible, ProcSubset=pid  a /proc of our user's processes only,
#                                          without /proc/sys and the like
# As root; COMMAND drops to the unit's user itself (setpriv). The rest of
# the unit (capabilities, the system call filter) is COMMAND's business
# (unit_seccomp.py).
set -eu

if [ -z "${PN_UNIT_NS:-}" ]; then
	PN_UNIT_NS=1 exec unshare --mount --propagation private -- "$0" "$@"
fi
unset PN_UNIT_NS

rw=""
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	rw="$rw $1"
	shift
done
[ $# -gt 1 ] || {
	echo "usage: $0 RW_DIR... -- COMMAND [ARGS...]" >&2
	exit 2
}
shift

# PrivateTmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp

# PrivateDevices: built in the private /tmp, then moved over /dev
stage=/tmp/.unit-dev
mkdir "$stage"
mount -t tmpfs -o mode=755,nosuid,noexec tmpfs "$stage"
for d in null zero full random urandom tty; do
	touch "$stage/$d"
	mount --bind "/dev/$d" "$stage/$d"
done
mkdir "$stage/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$stage/shm"
ln -s /proc/self/fd "$stage/fd"
ln -s /proc/self/fd/0 "$stage/stdin"
ln -s /proc/self/fd/1 "$stage/stdout"
ln -s /proc/self/fd/2 "$stage/stderr"
mount --move "$stage" /dev
rmdir "$stage"

# ProtectProc=invisible, ProcSubset=pid
mount -t proc -o subset=pid,hidepid=invisible,nosuid,nodev,noexec proc /proc

# ProtectHome=yes
for d in /home /root /run/user; do
	if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=755 tmpfs "$d"; fi
done

# ProtectSystem=strict with ReadWritePaths=: each RW_DIR its own mount
# first, then every other mount read-only (the API file systems and the
# private mounts above stay as they are)
for d in $rw; do
	mount --bind "$d" "$d"
done
awk '{ print $5 }' /proc/self/mountinfo | sort -u | while read -r target; do
	case "$target" in
	/proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | /var/tmp | /home | /root | /run/user) continue ;;
	*\\*) continue ;; # an escaped name (a space): none of ours
	esac
	for d in $rw; do
		[ "$target" != "$d" ] || continue 2
	done
	mount -o remount,bind,ro "$target" 2>/dev/null || true
done

exec "$@"
