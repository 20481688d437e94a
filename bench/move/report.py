#!/usr/bin/python3
"""Format the move benchmark results: table, ratios, PASS/FAIL and memory.

Usage: report.py RESULTS_TSV META_TXT

RESULTS_TSV rows (written by run.sh), tab separated, one per measured run:
  source  run  status(ok|FAIL)  seconds  count  total_bytes  files_received
  bytes_received  rss_first_kb  rss_peak_kb  rss_peak_sum_kb  rss_samples
  busy_first_kb  busy_peak_kb  busy_cpu_s  dest_cpu_s  note
(rss_*: the sampled processes, see rss.py; busy_*: the one among them that
used the most CPU time, i.e. for pacsnode the worker that served the move;
dest_cpu_s: the CPU time the destination storescp used during the run)
META_TXT: key=value lines describing the run.

Each source was measured R times; the table shows the median time (and the
rates derived from it) plus every run's instances/s. A source with any
failed run is reported as FAILED, without a rate.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import header, netns_line, rates, read_meta  # noqa: E402

SOURCES = [
    # (name in the TSV, label in the table)
    ("storescu", "storescu, files on disk"),
    ("Orthanc+PostgreSQL", "Orthanc+PostgreSQL C-MOVE"),
    ("pacsnode", "pacsnode C-MOVE"),
]
# (reference source, minimum pacsnode/reference ratio of instances/s)
TARGETS = [("storescu", 0.9), ("Orthanc+PostgreSQL", 2.0)]



def num(s):
    try:
        return int(s)
    except ValueError:
        return None


def fnum(s):
    try:
        return float(s)
    except ValueError:
        return None


def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            (src, rep, status, secs, count, nbytes, files, rbytes, first, peak,
             psum, samples, bfirst, bpeak, bcpu, dcpu, note) = line.rstrip("\n").split("\t")
            rows.append(dict(src=src, rep=int(rep), status=status,
                             secs=float(secs) if secs else None,
                             count=int(count), bytes=int(nbytes), files=files,
                             rbytes=num(rbytes), first=num(first),
                             peak=num(peak), psum=num(psum),
                             samples=num(samples) or 0, bfirst=num(bfirst),
                             bpeak=num(bpeak), bcpu=fnum(bcpu), dcpu=fnum(dcpu),
                             note=note))
    return rows


def mib(kb):
    return "-" if kb is None else "%.1f MiB" % (kb / 1024)


def main():
    meta = read_meta(sys.argv[2])
    rows = read_rows(sys.argv[1])
    groups = {}
    for r in rows:
        groups.setdefault(r["src"], []).append(r)

    out = []
    p = out.append
    count = rows[0]["count"] if rows else 0
    nbytes = rows[0]["bytes"] if rows else 0
    out.extend(header(meta, "pacsnode move benchmark (bench/move/run.sh)"))
    p("other benchmarks running: %s" % meta.get("other_bench", "?"))
    if count:
        p("data: one study of %d CT instances, 512x512x16 bit, explicit VR little "
          "endian, %.1f MB in all (MB = 10^6 bytes of the Part 10 files)"
          % (count, nbytes / 1e6))
    p("destination: one dcmtk storescp (single process, files written without "
      "fsync, emptied after each run)")
    p("  storescu sends the files from the page cache; pacsnode and Orthanc read "
      "their stored copies,")
    p("  also cached (a warm-up round, not recorded, moves everything once)")
    p("time: the client process (movescu -S, STUDY level; or storescu) from start "
      "to exit; TCP_NODELAY=1,")
    p("  max PDU %s everywhere; each figure is the median of %s run(s), the order "
      "changing between runs (all six permutations)" % (meta.get("pdu", "?"), meta.get("repeat", "?")))
    p("versions: dcmtk %s; orthanc %s; postgresql %s"
      % (meta.get("dcmtk", "?"), meta.get("orthanc", "?"), meta.get("postgresql", "?")))
    p("pacsnode: %s" % meta.get("pacsnode", "?"))
    p(netns_line(meta))
    p("")

    hdr = "%-27s %8s %8s %8s  %-11s %11s %9s  %s" % (
        "source", "seconds", "inst/s", "MB/s", "received", "peak RSS", "dest CPU",
        "inst/s of each run")
    p(hdr)
    p("-" * len(hdr))
    rate = {}
    notes = {"pacsnode": meta.get("pacsnode_note", ""),
             "Orthanc+PostgreSQL": meta.get("orthanc_note", "")}
    for src, label in SOURCES:
        runs = groups.get(src)
        if not runs:
            why = notes.get(src) or "not requested"
            p("%-27s %8s %8s %8s  not measured: %s" % (label, "-", "-", "-", why))
            continue
        n = runs[0]["count"]
        peak = max((r["peak"] for r in runs if r["peak"] is not None), default=None)
        failed = [r for r in runs if r["status"] != "ok" or not r["secs"]]
        if failed:
            f = failed[0]
            p("%-27s %8s %8s %8s  %-11s %11s %9s  FAILED in %d of %d runs: %s" % (
                label, "-", "-", "-", "%s/%d" % (f["files"], n), mib(peak), "-",
                len(failed), len(runs), f["note"]))
            continue
        secs, ips, mbs, each = rates(n, runs[0]["bytes"], [r["secs"] for r in runs])
        rate[src] = ips
        busy = [r["dcpu"] / r["secs"] for r in runs if r["dcpu"] is not None]
        dest = "%.0f%%" % (100 * statistics.median(busy)) if busy else "-"
        p("%-27s %8.2f %8.1f %8.1f  %-11s %11s %9s  %s" % (
            label, secs, ips, mbs, "%s/%d" % (runs[0]["files"], n), mib(peak), dest, each))
    p("dest CPU: the CPU time the destination storescp used during a run, as a share of "
      "the run's time (median)")
    p("")

    p("%-36s %6s %8s  %s" % ("ratio of instances/s", "value", "target", "result"))
    for ref, target in TARGETS:
        label = "pacsnode / %s" % ref
        a, b = rate.get("pacsnode"), rate.get(ref)
        if a is None or b is None:
            why = "pacsnode" if a is None else ref
            p("%-36s %6s %8s  n/a (no valid %s measurement)"
              % (label, "-", ">= %.1f" % target, why))
        else:
            v = a / b
            p("%-36s %6.2f %8s  %s" % (label, v, ">= %.1f" % target,
                                      "PASS" if v >= target else "FAIL"))
    # storescp is single-threaded and every C-STORE waits for its response:
    # a run cannot be shorter than the receiver's own CPU time, which is
    # about the same whoever sends (the same files, the same PDU size).
    dcpu = [r["dcpu"] for r in rows if r["dcpu"] is not None and r["status"] == "ok"]
    if dcpu and statistics.median(dcpu) > 0:
        floor = statistics.median(dcpu)
        p("")
        p("the destination's own work: %.2f s of CPU per run (median of all runs). A run "
          "cannot be shorter," % floor)
        p("  so even a sender that cost nothing would reach at most about:")
        for ref, _ in TARGETS:
            runs = groups.get(ref, [])
            if ref in rate:
                secs = statistics.median(r["secs"] for r in runs)
                p("  %.1f x %s" % (secs / floor, ref))
    p("")

    p("peak RSS: the largest VmRSS seen, sampled every %s s during the timed part "
      "(max over runs) of" % meta.get("rss_interval_s", "?"))
    p("  pacsnode: its largest worker process; Orthanc: its one process; "
      "storescu: the sender")
    pn = groups.get("pacsnode")
    if pn:
        def most(key, runs=pn):
            return max((r[key] for r in runs if r[key] is not None), default=None)
        growth = max((r["bpeak"] - r["bfirst"] for r in pn
                      if r["bpeak"] is not None and r["bfirst"] is not None), default=None)
        cpu = [r["bcpu"] for r in pn if r["bcpu"] is not None]
        p("pacsnode, the worker that served the move (the child with the most CPU "
          "time, %s s median):" % ("%.2f" % statistics.median(cpu) if cpu else "?"))
        p("  %s before the move, %s at most during it: it grew by at most %s in one move"
          % (mib(most("bfirst")), mib(most("bpeak")), mib(growth)))
        p("  any worker at most %s; all workers together at most %s; at least %d "
          "samples per move;" % (mib(most("peak")), mib(most("psum")),
                                 min(r["samples"] for r in pn)))
        p("  the study is %.0f MiB" % (nbytes / 1048576))
    print("\n".join(out))


if __name__ == "__main__":
    main()
