#!/usr/bin/python3
"""Runs a program under the system call restrictions of systemd/pacsnode.service,
as systemd would set them up, for machines where systemd is not PID 1:

    unit_seccomp.py UNIT PROGRAM [ARGS...]

From the unit: SystemCallFilter= (allow list, ~ lines taken out, groups
expanded by `systemd-analyze syscall-filter`), SystemCallArchitectures=native,
MemoryDenyWriteExecute=yes (no writable and executable mapping, no mprotect to
executable), RestrictAddressFamilies= (other families: EAFNOSUPPORT), and
NoNewPrivileges. A call outside the filter kills the process (SIGSYS), as
under systemd without SystemCallErrorNumber=. PN_SECCOMP_ACTION=log logs
instead (kernel audit log), to find what a program needs.

The integration tests run the node through this with PACSNODE_BIN pointing
at tests/package/pacsnode-seccomp (scripts/dev.sh package)."""

import errno
import os
import socket
import subprocess
import sys

import seccomp

PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000


def directives(unit):
    out = []
    with open(unit) as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#;" and "=" in line:
                k, v = line.split("=", 1)
                out.append((k.strip(), v.strip()))
    return out


_groups = {}


def expand(name):
    """A syscall name, or a @group with its nested groups, as a set."""
    if not name.startswith("@"):
        return {name}
    if name not in _groups:
        text = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                              stdout=subprocess.PIPE, text=True).stdout
        calls = set()
        for line in text.splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                calls |= expand(line)
        _groups[name] = calls
    return _groups[name]


def allowed_calls(dirs):
    allow = None
    for k, v in dirs:
        if k != "SystemCallFilter":
            continue
        deny = v.startswith("~")
        names = set()
        for word in v.lstrip("~").split():
            names |= expand(word)
        if deny:
            allow = (allow if allow is not None else set()) - names
        else:
            allow = (allow or set()) | names
    return allow


def families(dirs):
    for k, v in dirs:
        if k == "RestrictAddressFamilies":
            return {getattr(socket, name) for name in v.split()}
    return None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    unit, argv = sys.argv[1], sys.argv[2:]
    dirs = directives(unit)
    allow = allowed_calls(dirs)
    if not allow:
        sys.exit("%s: no SystemCallFilter=" % unit)
    log = os.environ.get("PN_SECCOMP_ACTION") == "log"
    deny = seccomp.LOG if log else seccomp.KILL_PROCESS
    f = seccomp.SyscallFilter(defaction=deny)
    # MemoryDenyWriteExecute=yes: these calls allowed only without the
    # flags it forbids (a rule may not repeat the default action, so the
    # plain allow is replaced by conditional ones)
    conditional = {}
    if dict(dirs).get("MemoryDenyWriteExecute") == "yes":
        wx = PROT_WRITE | PROT_EXEC
        conditional = {"mmap": (2, wx, (0, PROT_WRITE, PROT_EXEC)),
                       "mprotect": (2, PROT_EXEC, (0,)),
                       "pkey_mprotect": (2, PROT_EXEC, (0,)),
                       "shmat": (2, SHM_EXEC, (0,))}
    fams = families(dirs)
    if fams:
        # RestrictAddressFamilies=: socket() for those, EAFNOSUPPORT for
        # the others
        conditional["socket"] = (0, 0xFFFFFFFF, tuple(sorted(fams)))
        for fam in range(0, 46):
            if fam not in fams:
                f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, fam))
    # SystemCallArchitectures=native: only the native arch in the filter
    # (libseccomp's default), other ABIs meet the default action
    for name in sorted(allow):
        try:
            if name in conditional:
                arg, mask, values = conditional[name]
                for v in values:
                    f.add_rule(seccomp.ALLOW, name, seccomp.Arg(arg, seccomp.MASKED_EQ, mask, v))
            else:
                f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call on this architecture
    f.load()  # sets NoNewPrivileges first (libseccomp's default)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
