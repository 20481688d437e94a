#!/usr/bin/python3
"""The CPU one C-FIND costs a node and its PostgreSQL, shape by shape
(docs/scale.md: the capacity of one node, and whether queries are worth
sending to a hot standby).

    cpu_per_query.py --port P --aec AE --plan PLAN.json --node-pid PID
                     --pg-pid PID [--shapes a,b] [--repeat R] [--out FILE.json]

For each shape of the plan (find/gen.py's, as bench/find/run.sh writes it
into its work dir), findclient.py runs its queries (warm-up included) on
one association while the CPU time (user + system) of the node's process
tree and of the PostgreSQL cluster's tree is read from /proc before and
after, R times over (CPU time is counted in clock ticks of 10 ms: a
selective shape's 55 queries are a tick or two). Both trees must serve
nothing else meanwhile: a kept bench/find
work dir (--keep) with the node started again on it is the way.
Prints one line per shape: queries, the median latency (ms), node CPU ms
a query, PostgreSQL CPU ms a query, and the queries per second one CPU
would serve at that cost.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from lib import tree_cpu  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aec", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--node-pid", type=int, required=True)
    ap.add_argument("--pg-pid", type=int, required=True, help="the postmaster")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--repeat", type=int, default=1, help="findclient runs per shape")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    shapes = [s for s in plan["shapes"] if not a.shapes or s["name"] in a.shapes.split(",")]
    rows = []
    print("%-36s %7s %9s %9s %9s %11s" % ("shape", "queries", "p50 ms", "node ms/q", "pg ms/q", "q/s per CPU"))
    for s in shapes:
        n, node_s, pg_s, ms = 0, 0.0, 0.0, []
        for _ in range(a.repeat):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                n0, p0 = tree_cpu(a.node_pid, a.pg_pid)
                r = subprocess.run([sys.executable, os.path.join(HERE, "findclient.py"), "run", "--port",
                                    str(a.port), "--aec", a.aec, "--plan", a.plan, "--shapes", s["name"],
                                    "--echo", "0", "--out", out.name], capture_output=True, text=True)
                # the workers live on: their CPU in /proc is current
                n1, p1 = tree_cpu(a.node_pid, a.pg_pid)
                if r.returncode != 0:
                    break
                with open(out.name) as f:
                    doc = json.load(f)
            n += len(s.get("warmup", [])) + len(s["queries"])
            node_s, pg_s = node_s + n1 - n0, pg_s + p1 - p0
            ms += [x for sh in doc.get("shapes", []) for x in sh.get("ms", [])]
        if r.returncode != 0 or not n:
            print("%s: findclient failed: %s" % (s["name"], r.stderr.strip()[-300:]), file=sys.stderr)
            continue
        node, pg = 1000 * node_s / n, 1000 * pg_s / n
        p50 = sorted(ms)[len(ms) // 2] if ms else 0
        row = {"shape": s["name"], "label": s["label"], "queries": n, "p50_ms": p50, "node_cpu_ms": node,
               "pg_cpu_ms": pg}
        rows.append(row)
        print("%-36s %7d %9.2f %9.3f %9.3f %11.0f" % (s["label"][:36], n, p50, node, pg,
                                                     1000 / (node + pg) if node + pg > 0 else 0))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
