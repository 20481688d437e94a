#!/usr/bin/env bash
# Layout rules that a compiler cannot check:
#  - dcmtk headers only inside the adapter folder scp/dcm/;
#  - libpq only under db/, libmicrohttpd only under web/, C++ only in scp/dcm/;
#  - the tree is clang-format clean.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
fail=0
leaks=$(git ls-files '*.c' '*.h' '*.cc' | grep -v '^scp/dcm/' | xargs grep -ln '#include <dcmtk/' 2>/dev/null)
if [ -n "$leaks" ]; then
	echo "dcmtk included outside scp/dcm/: $leaks"
	fail=1
fi
leaks=$(git ls-files '*.c' '*.h' '*.cc' | grep -v '^db/' | grep -v '^tests/db/' | xargs grep -ln '#include <libpq-fe.h>' 2>/dev/null)
if [ -n "$leaks" ]; then
	echo "libpq included outside db/: $leaks"
	fail=1
fi
leaks=$(git ls-files '*.c' '*.h' '*.cc' | grep -v '^web/' | xargs grep -ln '#include <microhttpd.h>' 2>/dev/null)
if [ -n "$leaks" ]; then
	echo "libmicrohttpd included outside web/: $leaks"
	fail=1
fi
leaks=$(git ls-files '*.cc' '*.cpp' '*.cxx' | grep -v '^scp/dcm/')
if [ -n "$leaks" ]; then
	echo "C++ outside scp/dcm/: $leaks"
	fail=1
fi
if command -v clang-format >/dev/null; then
	if ! git ls-files '*.c' '*.h' '*.cc' | xargs clang-format --dry-run -Werror 2>/dev/null; then
		echo "clang-format: some files are not formatted (run: git ls-files '*.c' '*.h' '*.cc' | xargs clang-format -i)"
		fail=1
	fi
fi
[ $fail = 0 ] && echo "layout checks passed"
exit $fail
