#!/bin/sh
# check_unit.sh SYSTEMD_ANALYZE UNIT MAX: the unit file is valid and its
# `systemd-analyze security` exposure is at most MAX (README, Operating).
set -eu
analyze=$1 unit=$2 max=$3
out=$("$analyze" security --offline=yes --no-pager "$unit" 2>&1) || true
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
	printf '%s\n' "$out"
	echo "no exposure score for $unit"
	exit 1
fi
if ! awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
	printf '%s\n' "$out" | grep '✗' || true
	echo "$unit: exposure $score, above $max"
	exit 1
fi
echo "$unit: exposure $score (at most $max)"
