#!/usr/bin/python3
"""Format the storage commitment benchmark (bench/commit/run.sh).

Usage: report.py WORK_DIR

Reads meta.txt and commit-<regime>.json (commitclient.py) from WORK_DIR.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import busy_warning, header, load_json, netns_line, read_meta  # noqa: E402

REPORT_WITHIN_MS = 1000     # issue 22: the report within 1 s of the N-ACTION
REGIMES = (("warm", "files in the page cache (as right after the modality sent them)"),
           ("cold", "page cache dropped before each request (every file read from the disk)"))


def main():
    work = sys.argv[1]
    meta = read_meta(os.path.join(work, "meta.txt"))
    out = []
    p = out.append
    out.extend(header(meta, "pacsnode storage commitment benchmark (bench/commit/run.sh)"))
    out.extend(busy_warning(meta))
    n = int(meta.get("count", "0"))
    mb = int(meta.get("stored_bytes", "0") or 0) / 1e6
    p("study: %d CT instances, %.0f MB stored; requester: npm dcmjs-dimse %s (tests/js/commitment.js) on Node.js %s"
      % (n, mb, meta.get("dcmjs_dimse", "?"), meta.get("node", "?")))
    p("  one N-ACTION-RQ (Action Type 1) referencing every instance, a new Transaction UID each; %s requests"
      % meta.get("repeat", "?"))
    p("  per association kind and regime after one warm-up: 'same' keeps its association open and gets the")
    p("  report on it, 'new' releases after the N-ACTION-RSP and gets it on a new association from the node")
    p("times from the requester's association accepted (the request goes out at once) to the N-ACTION-RSP and")
    p("  to the N-EVENT-REPORT-RQ, stamped by the requester's and the listener's processes (one clock)")
    p("versions: dcmtk %s; postgresql %s" % (meta.get("dcmtk", "?"), meta.get("postgresql", "?")))
    p("pacsnode: %s" % meta.get("pacsnode", "?"))
    p(netns_line(meta))
    floor = float(meta.get("floor_s", "0") or 0)
    p("disk floor: cat of the %s stored files, 8 at a time, the page cache dropped: %.0f ms (%.0f MB/s)"
      % (meta.get("floor_files", "?"), floor * 1000, mb / floor if floor else 0))
    p("")
    p("%-6s %-5s %4s | %-21s | %-21s | %s" % ("", "", "", "N-ACTION-RSP ms", "N-EVENT-REPORT ms", "report"))
    p("%-6s %-5s %4s | %6s %6s %7s | %6s %6s %7s | %s" % ("cache", "assoc", "n", "median", "min", "max",
                                                        "median", "min", "max", "(event type, referenced/failed)"))
    p("-" * 96)
    verdicts = []
    problems = []
    for regime, _ in REGIMES:
        doc = load_json(os.path.join(work, "commit-%s.json" % regime))
        if not doc:
            continue
        for mode in ("same", "new"):
            rs = [r for r in doc["rounds"] if r["mode"] == mode]
            good = [r for r in rs if r["error"] is None]
            for r in rs:
                if r["error"]:
                    problems.append("  %s, %s association: %s" % (regime, mode, r["error"]))
                elif r["action_status"] != 0 or r["event_type"] != 1 or r["referenced"] != n or r["failed"]:
                    problems.append("  %s, %s: status 0x%04x, event type %s, %d referenced, %d failed"
                                    % (regime, mode, r["action_status"], r["event_type"], r["referenced"],
                                       r["failed"]))
                elif r["via"] != mode:
                    problems.append("  %s: a report asked on the %s association came on the %s one"
                                    % (regime, mode, r["via"]))
            if not good:
                p("%-6s %-5s %4d | no complete request" % (regime, mode, len(rs)))
                continue
            a = [r["action_ms"] for r in good]
            b = [r["report_ms"] for r in good]
            kinds = sorted({"%s, %d/%d" % (r["event_type"], r["referenced"], r["failed"]) for r in good})
            p("%-6s %-5s %4d | %6.0f %6.0f %7.0f | %6.0f %6.0f %7.0f | %s"
              % (regime, mode, len(good), statistics.median(a), min(a), max(a), statistics.median(b), min(b),
                 max(b), "; ".join(kinds)))
            if regime == "warm":
                verdicts.append(("report within %d ms of the N-ACTION, %s association, files cached (max)"
                                 % (REPORT_WITHIN_MS, mode), max(b), len(good) == len(rs) and
                                 max(b) <= REPORT_WITHIN_MS))
            else:
                cold_b = statistics.median(b)
                p("%-6s %-5s      | the report's median is %.1fx the disk floor (%.0f ms)"
                  % ("", "", cold_b / (floor * 1000) if floor else 0, floor * 1000))
    p("")
    if problems:
        p("correctness problems:")
        out.extend(problems)
    else:
        p("correctness: every request answered 0x0000 and reported with Event Type 1, every instance referenced,"
          " none failed, on the association asked for")
    p("")
    p("targets (issue 22), judged with the files cached, the case of a modality committing what it just sent;")
    p("the cold rows show the cost when the check must read every file from the disk")
    ok_all = not problems
    for label, v, ok in verdicts:
        ok_all = ok_all and ok
        p("%-78s %6.0f ms  %s" % (label, v, "PASS" if ok else "FAIL"))
    p("%d of %d targets met%s" % (sum(1 for _, _, ok in verdicts if ok), len(verdicts),
                                   "" if not problems else " (and correctness problems above)"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
