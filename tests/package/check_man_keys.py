#!/usr/bin/python3
"""Every key scp/config.c's parser accepts has an entry in pacsnode.conf(5),
under its section, and the page names no key the parser does not know.

    check_man_keys.py [scp/config.c] [man/pacsnode.conf.5]

The parser's keys are the rows of its tables ({"section", "key", parse_...});
the page's are the `.B key` lines right after a `.TP` under a `.SS [section]`
heading ([peer.LABEL] is the table's "peer")."""

import os
import re
import sys

top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
config_c = sys.argv[1] if len(sys.argv) > 1 else os.path.join(top, "scp", "config.c")
page = sys.argv[2] if len(sys.argv) > 2 else os.path.join(top, "man", "pacsnode.conf.5")

with open(config_c) as f:
    parser = set(re.findall(r'^\s*\{"([a-z_]+)", "([a-z0-9_]+)", parse_\w+', f.read(), re.M))
if len(parser) < 10:
    sys.exit("%s: found only %d keys in the tables; has their form changed?" % (config_c, len(parser)))

documented = set()
section = None
after_tp = False
with open(page) as f:
    for line in f:
        line = line.rstrip("\n")
        m = re.match(r"\.SS \[([a-z_]+)(?:\.LABEL)?\]$", line)
        if m:
            section = m.group(1)
        elif line.startswith(".SH"):
            section = None
        elif after_tp and section:
            m = re.match(r"\.B ([a-z0-9_]+)$", line)
            if m:
                documented.add((section, m.group(1)))
        after_tp = line == ".TP"

missing = sorted(parser - documented)
stale = sorted(documented - parser)
for s, k in missing:
    print("%s: [%s] %s is accepted by %s but not described" % (page, s, k, config_c))
for s, k in stale:
    print("%s: [%s] %s is described but %s does not accept it" % (page, s, k, config_c))
if missing or stale:
    sys.exit(1)
print("pacsnode.conf(5) describes all %d keys of the parser" % len(parser))
