#!/usr/bin/python3
"""Storage commitment timings (bench/commit/run.sh): N-ACTION-RQ for every
instance of a stored study, sent by npm dcmjs-dimse (tests/js/commitment.js,
the client the integration tests use), and the time to its N-ACTION-RSP and
to the N-EVENT-REPORT-RQ that follows.

    commitclient.py --port P --refs REFS.json --listen-out FILE --out OUT.json
                    [--repeat R] [--cold]

REFS.json: [[SOP Class UID, SOP Instance UID], ...] of the study. Each
round sends one request with a new Transaction UID twice over:
  same  the requester keeps its association open (the node reports on it)
  new   the requester releases as soon as the N-ACTION-RSP is in; the node
        reports on a new association to the peer's port, where
        `commitment.js listen` (started by run.sh, its output in FILE) takes it
Times are from the requester's association being accepted (the request goes
out at once after it) to the response and to the report, in ms, each event
stamped by the process that saw it (one machine, one clock). With --cold the
page cache is dropped (sync; drop_caches, as root) before each request, so
the node's check of every file's checksum reads them from the disk.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "js", "commitment.js")


def new_uid():
    return "2.25.%d" % random.SystemRandom().getrandbits(120)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def events(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def listener_report(path, transaction, deadline):
    """The listener's report line for `transaction`, waiting until deadline."""
    while time.time() < deadline:
        with open(path, encoding="utf-8", errors="replace") as f:
            for e in events(f.read()):
                if e.get("event") == "report" and e.get("transaction") == transaction:
                    return e
        time.sleep(0.01)
    return None


def one(a, refs, mode):
    tx = new_uid()
    spec = {"transaction": tx, "refs": refs, "linger": 0 if mode == "new" else 1500}
    if a.cold:
        drop_caches()
    p = subprocess.run(["node", JS, "request", "127.0.0.1", str(a.port), a.aet, a.aec, json.dumps(spec)],
                       capture_output=True, text=True, timeout=120)
    ev = events(p.stdout)
    acc = next((e for e in ev if e["event"] == "accepted"), None)
    act = next((e for e in ev if e["event"] == "action"), None)
    if mode == "same":
        rep = next((e for e in ev if e["event"] == "report"), None)
    else:
        rep = listener_report(a.listen_out, tx, time.time() + 60)
    r = {"mode": mode, "transaction": tx, "error": None}
    if not acc or not act:
        r["error"] = "no association or no N-ACTION response: %s %s" % (p.stdout[-300:], p.stderr[-300:])
        return r
    r["action_status"] = act["status"]
    r["action_ms"] = act["t"] - acc["t"]
    if not rep:
        r["error"] = "no report (%s association)" % mode
        return r
    r["report_ms"] = rep["t"] - acc["t"]
    r["via"] = rep.get("via")
    r["event_type"] = rep.get("eventType")
    r["referenced"] = len(rep.get("referenced") or [])
    r["failed"] = len(rep.get("failed") or [])
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aet", default="BENCHSCU")
    ap.add_argument("--aec", default="PACSNODE")
    ap.add_argument("--refs", required=True)
    ap.add_argument("--listen-out", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args()
    with open(a.refs) as f:
        refs = json.load(f)
    rounds = []
    one(a, refs, "same")            # warm-up, not recorded
    for i in range(a.repeat):
        # alternate which comes first, so neither always follows the other
        for mode in (("same", "new") if i % 2 == 0 else ("new", "same")):
            rounds.append(one(a, refs, mode))
            print(json.dumps(rounds[-1]), file=sys.stderr)
    with open(a.out, "w") as f:
        json.dump({"instances": len(refs), "cold": a.cold, "rounds": rounds}, f, indent=1)
    return 0 if all(r["error"] is None for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
