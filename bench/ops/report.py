#!/usr/bin/python3
"""The table of bench/ops/run.sh.

Usage: report.py TSV TARGET JOBS DEEP SET COUNT BYTES [SET COUNT BYTES ...]

TSV rows: set, run, seconds, the command's CPU seconds, PostgreSQL's, the
rest of the machine's, state (ok; shared: done again, left out; kept: a
third try during other work, kept). Prints per set the median of each run
(CPU s: the command's, cat's or pacsnodectl's; others: how many CPUs the
rest of the machine kept busy meanwhile, on average),
then verify against cat: warm against cat with verify's threads, cold
against the faster of cat with verify's threads and cat with as many
readers as verify keeps reads in flight; PASS when verify reaches TARGET
times that rate.
"""

import statistics
import sys

RUNS = ["import", "reindex-warm", "reindex-cold", "verify-warm", "verify-cold", "cat-warm", "cat-cold",
        "cat-cold-deep"]


def main():
    tsv, target, jobs, deep = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    sets = sys.argv[5:]
    rows = [line.rstrip("\n").split("\t") for line in open(tsv) if line.strip()]
    label = {"cat-warm": "cat -P %s warm" % jobs, "cat-cold": "cat -P %s cold" % jobs,
             "cat-cold-deep": "cat -P %s cold" % deep}
    verdicts = []
    print("%-6s %-16s %8s %9s %8s %9s %9s %7s  %s" % ("set", "run", "s", "inst/s", "MB/s", "CPU s", "PG CPU s",
                                                    "others", "runs"))
    for k in range(0, len(sets), 3):
        name, n, size = sets[k], int(sets[k + 1]), int(sets[k + 2])
        secs = {}
        for run in RUNS:
            got = [r for r in rows if r[0] == name and r[1] == run and r[6] != "shared"]
            if not got:
                continue
            t = statistics.median(float(r[2]) for r in got)
            secs[run] = t
            others = statistics.median(float(r[5]) / float(r[2]) if float(r[2]) > 0 else 0 for r in got)
            kept = sum(1 for r in got if r[6] == "kept")
            print("%-6s %-16s %8.3f %9.0f %8.0f %9.2f %9.2f %7.2f  %s" % (
                name, label.get(run, run), t, n / t, size / 1e6 / t,
                statistics.median(float(r[3]) for r in got), statistics.median(float(r[4]) for r in got),
                others, "%d%s" % (len(got), " (%d during other work)" % kept if kept else "")))
        for cache, refs in (("warm", ["cat-warm"]), ("cold", ["cat-cold", "cat-cold-deep"])):
            v = "verify-" + cache
            refs = [r for r in refs if r in secs]
            if v not in secs or not refs:
                continue
            mbs = size / 1e6 / secs[v]
            parts = ["%s %.0f MB/s: %.2fx" % (label[r], size / 1e6 / secs[r], secs[r] / secs[v]) for r in refs]
            best = min(secs[r] for r in refs)
            ratio = best / secs[v]
            verdicts.append("%-6s %s: verify %.0f MB/s, %.0f files/s; %s -> %s (>= %.1fx of the faster cat)" % (
                name, cache, mbs, n / secs[v], "; ".join(parts), "PASS" if ratio >= target else "FAIL", target))
    print()
    print("verify against cat over the same files (wall time of each command, medians):")
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
