#!/usr/bin/python3
"""Format the store benchmark results: table, ratios and PASS/FAIL.

Usage: report.py RESULTS_TSV META_TXT [PGCOST_TSV]

RESULTS_TSV rows (written by run.sh), tab separated, one per measurement:
  receiver  associations  run  status(ok|FAIL)  seconds  count  total_bytes
  stored  note  [receiver_cpu  postgres_cpu  sender_cpu  other_cpu]
(the CPU seconds of the run, "-" when unknown; shown for --tls runs)
META_TXT: key=value lines describing the run (tls=1 after --tls).
PGCOST_TSV rows (run.sh's pg_cost), one per pacsnode run: receiver
  associations run wal_bytes wal_records wal_fpi wal_syncs transactions
  database_growth instance_rows instance_indexes heap_bytes index_bytes

Each (receiver, associations) pair was measured R times; the table shows the
median time (and the rates derived from it) plus every run's instances/s. A
pair with any failed run is reported as FAILED, without a rate.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import header, netns_line, rates, read_meta  # noqa: E402

# (reference receiver, associations, minimum pacsnode/reference ratio)
TARGETS = [
    ("storescp", 1, 0.6),
    ("storescp", 4, 0.8),
    ("Orthanc+PostgreSQL", 1, 3.0),
    ("Orthanc+PostgreSQL", 4, 3.0),
]
IGNORE = "storescp --ignore --bit-preserving"
# storescp with an fsync of each file before its response (fsync_on_close.c)
DURABLE = {1: "storescp + fsync", 4: "storescp --fork + fsync"}
INFO_RATIOS = [(IGNORE, 1), ("storescp --fork", 4)]
# issue 23: against the durable peer on the same disk
DURABLE_TARGET = 0.9
# --tls (issue 19): (measured, reference, associations, minimum ratio)
TLS = "pacsnode over TLS"
TLS_DURABLE = {1: "storescp +tls + fsync", 4: "storescp --fork +tls + fsync"}
TLS_TARGETS = [
    (TLS, "pacsnode", 1, 0.85),
    (TLS, "pacsnode", 4, 0.85),
    (TLS, TLS_DURABLE[1], 1, 1.0),
    (TLS, TLS_DURABLE[4], 4, 1.0),
]
# what TLS costs storescp, with and without the fsync (information)
TLS_INFO = [("storescp +tls", "storescp", 1), ("storescp +tls", "storescp", 4),
            (TLS_DURABLE[1], DURABLE[1], 1), (TLS_DURABLE[4], DURABLE[4], 4)]



def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            rcv, k, rep, status, secs, count, nbytes, stored, note = f[:9]
            cpu = [float(x) if x not in ("", "-") else None for x in (f[9:13] + ["-"] * 4)[:4]]
            rows.append(dict(rcv=rcv, k=int(k), rep=int(rep), status=status,
                             secs=float(secs) if secs else None, count=int(count),
                             bytes=int(nbytes), stored=stored, note=note, cpu=cpu))
    return rows


def main():
    meta = read_meta(sys.argv[2])
    rows = read_rows(sys.argv[1])
    shared = [r for r in rows if r["status"] == "shared"]   # --wait-quiet: done again
    rows = [r for r in rows if r["status"] != "shared"]

    groups = {}                    # (rcv, k) -> [rows], in first-seen order
    for r in rows:
        groups.setdefault((r["rcv"], r["k"]), []).append(r)
    # Table order: by association count, then receiver as first measured.
    order = sorted(groups, key=lambda g: (g[1], list(groups).index(g)))

    out = []
    p = out.append
    count = rows[0]["count"] if rows else 0
    nbytes = rows[0]["bytes"] if rows else 0
    out.extend(header(meta, "pacsnode store benchmark (bench/store/run.sh)"))
    if count:
        p("data: %d CT instances, 512x512x16 bit, explicit VR little endian, "
          "%.1f MB in all, %.0f bytes each on average (MB = 10^6 bytes)"
          % (count, nbytes / 1e6, nbytes / count))
    p("senders: dcmtk storescu with TCP_NODELAY=1; max PDU %s for every receiver; "
      "1 assoc = one storescu" % meta.get("pdu", "?"))
    p("  over all files; 4 assoc = four storescu processes in parallel on a quarter "
      "of the files each,")
    p("  timed from the first start to the last exit")
    p("each figure: median of %s run(s), each into a fresh store and a fresh database"
      % meta.get("repeat", "?"))
    p("versions: dcmtk %s; orthanc %s; postgresql %s"
      % (meta.get("dcmtk", "?"), meta.get("orthanc", "?"), meta.get("postgresql", "?")))
    p("pacsnode: %s" % meta.get("pacsnode", "?"))
    p(netns_line(meta))
    if "wait_quiet" in meta:
        wq = (meta["wait_quiet"].split() + ["?", "?"])[:3]
        p("--wait-quiet: waited %s s in all for other work on the machine to stop before a run; %d run(s)"
          % (wq[0], len(shared)))
        p("  done again because other work kept more than %s CPUs busy during them (left out below)" % wq[2])
    tls = meta.get("tls") == "1"
    if tls:
        p("TLS: senders storescu +tls with a client certificate (+tls KEY CERT +cf CA, dcmtk's default profile,")
        p("  non-downgrading BCP 195); %s" % meta.get("tls_certs", "?"))
        p("  AES-NI on this CPU: %s; negotiated (echoscu -d, the same dcmtk client stack as storescu):"
          % meta.get("aes_ni", "?"))
        for key in sorted((k for k in meta if k.startswith("tls_negotiated_")), key=lambda k: int(k.split("_")[-1])):
            label, _, what = meta[key].partition("\t")
            p("    %-30s %s" % (label, what))
    p("")

    w = max([20] + [len(g[0]) for g in order])  # the receiver column
    hdr = "%-*s %5s %8s %8s %8s  %-11s %s" % (
        w, "receiver", "assoc", "seconds", "inst/s", "MB/s", "stored", "inst/s of each run")
    p(hdr)
    p("-" * len(hdr))
    rate = {}
    for g in order:
        runs = groups[g]
        rcv, k = g
        n = runs[0]["count"]
        failed = [r for r in runs if r["status"] != "ok" or not r["secs"]]
        if failed:
            f = failed[0]
            p("%-*s %5d %8s %8s %8s  %-11s FAILED in %d of %d runs: %s" % (
                w, rcv, k, "-", "-", "-", "%s/%d" % (f["stored"], n),
                len(failed), len(runs), f["note"]))
            continue
        secs, ips, mbs, each = rates(n, runs[0]["bytes"], [r["secs"] for r in runs])
        rate[g] = ips
        p("%-*s %5d %8.2f %8.1f %8.1f  %-11s %s" % (
            w, rcv, k, secs, ips, mbs, "%s/%d" % (runs[0]["stored"], n), each))
    if not any(r["rcv"] == "pacsnode" for r in rows):
        p("%-*s %5s %8s %8s %8s  not run: %s" % (
            w, "pacsnode", "-", "-", "-", "-", meta.get("pacsnode", "?")))
    p("")

    lw = max([44] + [len("pacsnode / %s, %d assoc" % r) for r in INFO_RATIOS])
    p("%-*s %6s %8s  %s" % (lw, "ratio of instances/s", "value", "target", "result"))
    for ref, k, target in TARGETS:
        label = "pacsnode / %s, %d assoc" % (ref, k)
        a, b = rate.get(("pacsnode", k)), rate.get((ref, k))
        if a is None or b is None:
            why = "pacsnode" if a is None else ref
            p("%-*s %6s %8s  n/a (no valid %s measurement)"
              % (lw, label, "-", ">= %.1f" % target, why))
        else:
            v = a / b
            p("%-*s %6.2f %8s  %s" % (lw, label, v, ">= %.1f" % target,
                                      "PASS" if v >= target else "FAIL"))
    for k in (1, int(meta.get("parallel", "4"))):
        ref = DURABLE.get(k)
        a, b = rate.get(("pacsnode", k)), rate.get((ref, k))
        label = "pacsnode / %s, %d assoc (issue 23)" % (ref, k)
        if a is None or b is None:
            p("%-*s %6s %8s  n/a (no valid %s measurement)"
              % (lw, label, "-", ">= %.1f" % DURABLE_TARGET, "pacsnode" if a is None else ref))
        else:
            v = a / b
            p("%-*s %6.2f %8s  %s" % (lw, label, v, ">= %.1f" % DURABLE_TARGET,
                                      "PASS" if v >= DURABLE_TARGET else "FAIL"))
    for ref, k in INFO_RATIOS:
        a, b = rate.get(("pacsnode", k)), rate.get((ref, k))
        if a is not None and b is not None:
            p("%-*s %6.2f %8s  (information only)"
              % (lw, "pacsnode / %s, %d assoc" % (ref, k), a / b, "-"))
    gap_lines(rate, groups, meta, p)
    if tls:
        tls_lines(rate, groups, meta, p)
    if meta.get("nodes"):
        nodes_lines(rate, groups, meta, p)
    if len(sys.argv) > 3 and os.path.exists(sys.argv[3]):
        pgcost_lines(sys.argv[3], rate, meta, p)
    durable_lines(rate, p)
    floor_lines(meta, rate, p)
    print("\n".join(out))


def pgcost_lines(path, rate, meta, p):
    """What PostgreSQL pays per stored instance (medians over the runs):
    WAL bytes, records, full-page images and fsyncs, transactions, the
    database's growth and the instance row's share; and how many
    instances/s one PostgreSQL on this disk carries before its WAL fsyncs
    or its WAL volume are the limit."""
    by = {}
    with open(path) as f:
        for line in f:
            x = line.rstrip("\n").split("\t")
            if len(x) < 13:
                continue
            try:
                v = [float(y) for y in x[3:13]]
            except ValueError:
                continue
            if v[6] > 0:
                by.setdefault((x[0], int(x[1])), []).append(v)
    if not by:
        return
    p("")
    p("PostgreSQL per stored instance (medians; start to stop of the node, only its database busy: WAL")
    p("bytes, records, full-page images and fsyncs of pg_stat_wal, the database's transactions incl.")
    p("read-only ones, its growth, and the instance table's heap and index bytes per row):")
    hdr = "%-20s %5s %8s %7s %6s %8s %7s %8s %4s %7s %8s" % (
        "receiver", "assoc", "WAL B/i", "recs/i", "FPI/i", "fsyncs/i", "xacts/i", "db B/i", "idx", "heap/i",
        "index/i")
    p(hdr)
    p("-" * len(hdr))
    med = {}
    for (rcv, k), runs in by.items():
        m = [statistics.median(r[i] for r in runs) for i in range(10)]
        wal, recs, fpi, syncs, xacts, growth, rows, nidx, heap, idx = m
        med[(rcv, k)] = (wal / rows, syncs / rows)
        p("%-20s %5d %8.0f %7.1f %6.2f %8.3f %7.2f %8.0f %4.0f %7.0f %8.0f" % (
            rcv, k, wal / rows, recs / rows, fpi / rows, syncs / rows, xacts / rows, growth / rows, nidx,
            heap / rows, idx / rows))
    # This disk's WAL fsync rate: pgbench with one client waits for one
    # fsync a commit (the better of the start and end floors). Divided by
    # the WAL fsyncs an instance took (several sessions' commits share one
    # fsync: group commit), that bounds one PostgreSQL's store rate.
    floors = []
    for t in ("start", "end"):
        v = meta.get("floor_%s_1" % t)
        try:
            floors.append(float(v.split()[1]))
        except (AttributeError, IndexError, ValueError):
            pass
    par = int(meta.get("parallel", "4"))
    key = ("pacsnode", par) if ("pacsnode", par) in med else sorted(med)[-1]
    wal_i, sync_i = med[key]
    if floors and sync_i > 0:
        cap = max(floors) / sync_i
        p("one PostgreSQL on this disk: %.0f WAL fsyncs/s (pgbench, 1 client) / %.3f fsyncs an instance (%s,"
          % (max(floors), sync_i, key[0]))
        p("  %d assoc) = %.0f instances/s before its WAL fsyncs are the limit, at %.1f MB/s of WAL"
          % (key[1], cap, cap * wal_i / 1e6))
        r = rate.get(key)
        if r:
            p("  (this run's rate of that row: %.0f/s, %.1f x below it; more sessions share each fsync more)"
              % (r, cap / r))


def tls_lines(rate, groups, meta, p):
    """--tls: the targets of issue 19, what TLS costs storescp, and the CPU
    time of every row (where a run's time goes on a machine of few CPUs)."""
    p("")
    lw = max([44] + [len("%s / %s, %d assoc" % (a, b, k)) for a, b, k, _ in TLS_TARGETS])
    p("%-*s %6s %8s  %s" % (lw, "TLS (issue 19), ratio of instances/s", "value", "target", "result"))
    for a_name, b_name, k, target in TLS_TARGETS:
        label = "%s / %s, %d assoc" % (a_name, b_name, k)
        a, b = rate.get((a_name, k)), rate.get((b_name, k))
        if a is None or b is None:
            p("%-*s %6s %8s  n/a (no valid %s measurement)"
              % (lw, label, "-", ">= %.2f" % target, a_name if a is None else b_name))
        else:
            v = a / b
            p("%-*s %6.2f %8s  %s" % (lw, label, v, ">= %.2f" % target, "PASS" if v >= target else "FAIL"))
    for a_name, b_name, k in TLS_INFO:
        a, b = rate.get((a_name, k)), rate.get((b_name, k))
        if a is not None and b is not None:
            p("%-*s %6.2f %8s  (information only)" % (lw, "%s / %s, %d assoc" % (a_name, b_name, k), a / b, "-"))

    cpu_table(groups, meta, p)


def cpu_table(groups, meta, p, only=None):
    """CPU seconds per run (medians), per instance, and the share of the
    machine's CPUs the run kept busy; `only`: the receivers to show (all
    measured with CPU times when None)."""
    ncpu = os.cpu_count() or 1
    try:
        ncpu = int(meta.get("host", "").split()[0])
    except (ValueError, IndexError):
        pass
    rows = []
    for g, runs in groups.items():
        if only is not None and g[0] not in only:
            continue
        ok = [r for r in runs if r["status"] == "ok" and r["secs"]]
        if not ok or all(r["cpu"][0] is None and r["cpu"][2] is None for r in ok):
            continue
        med = []
        for i in range(4):
            vals = [r["cpu"][i] for r in ok if r["cpu"][i] is not None]
            med.append(statistics.median(vals) if vals else None)
        secs = statistics.median(r["secs"] for r in ok)
        rows.append((g, med, secs, ok[0]["count"]))
    if not rows:
        return
    rows.sort(key=lambda x: (x[0][1], list(groups).index(x[0])))
    p("")
    p("CPU time of each run (medians; receiver: its processes; postgres: the whole cluster; senders: the")
    p("storescu processes; other: the rest of the machine, kernel threads and any other work), per")
    p("instance, and the share of the %d CPUs the run kept busy (all four):" % ncpu)
    w = max([20] + [len(g[0]) for g, _, _, _ in rows])
    hdr = "%-*s %5s %9s %9s %9s %9s %9s %9s %9s %6s" % (
        w, "receiver", "assoc", "rcv s", "pg s", "send s", "other s", "rcv ms/i", "pg ms/i", "send ms/i", "busy")
    p(hdr)
    p("-" * len(hdr))

    def f(v, fmt):
        return fmt % v if v is not None else "-"

    for (rcv, k), (rc, pg, sd, ot), secs, n in rows:
        busy = sum(x for x in (rc, pg, sd, ot) if x is not None) / secs / ncpu
        p("%-*s %5d %9s %9s %9s %9s %9s %9s %9s %5.0f%%" % (
            w, rcv, k, f(rc, "%.2f"), f(pg, "%.2f"), f(sd, "%.2f"), f(ot, "%.2f"),
            f(rc and 1000 * rc / n, "%.3f"), f(pg and 1000 * pg / n, "%.3f"), f(sd and 1000 * sd / n, "%.3f"),
            100 * busy))


def gap_lines(rate, groups, meta, p):
    """Where pacsnode's time an instance goes beyond the durable storescp's
    (issue 23): storescp + fsync pays one fsync an instance, pacsnode the
    file's fsync and then its index row's COMMIT (a WAL fsync), which
    cannot overlap on one association; the rest is the node's own work.
    The COMMIT's share is the disk's floor (pgbench INSERT + COMMIT with
    as many clients, the better of start and end)."""
    lines = []
    for k in (1, int(meta.get("parallel", "4"))):
        a, d = rate.get(("pacsnode", k)), rate.get((DURABLE.get(k), k))
        if not a or not d:
            continue
        floors = []
        for t in ("start", "end"):
            try:
                floors.append(float(meta.get("floor_%s_%d" % (t, k)).split()[1]))
            except (AttributeError, IndexError, ValueError):
                pass
        gap = 1000 * k / a - 1000 * k / d   # ms an association spends per instance, more than the peer
        ok = [r for r in groups.get(("pacsnode", k), []) if r["status"] == "ok" and r["cpu"][0] is not None]
        cpu = statistics.median(1000 * r["cpu"][0] / r["count"] for r in ok) if ok else None
        pg = statistics.median(1000 * r["cpu"][1] / r["count"] for r in ok if r["cpu"][1] is not None) \
            if ok else None
        line = "  %d assoc: %.2f ms an instance on each association, %.2f ms more than %s" % (
            k, 1000 * k / a, gap, DURABLE[k])
        lines.append(line)
        if floors:
            commit = 1000 * k / max(floors)
            lines.append("    of which the index row's COMMIT on this disk (pgbench, %d client%s): %.2f ms;"
                         " the rest %.2f ms" % (k, "" if k == 1 else "s", commit, gap - commit))
        if cpu is not None:
            lines.append("    CPU an instance: the node %.2f ms, PostgreSQL %s ms"
                         % (cpu, "%.2f" % pg if pg is not None else "?"))
    if lines:
        p("")
        p("pacsnode against the durable storescp (the time an instance costs an association, from the rates):")
        for line in lines:
            p(line)


def node_label(n):
    return "pacsnode, %d node%s" % (n, "" if n == 1 else "s")


def nodes_lines(rate, groups, meta, p):
    """--nodes (issue 23): N nodes on one database and one storage root,
    the associations dealt over them. The aggregate rate against one node's,
    and the CPU each instance costs (all nodes' processes, and PostgreSQL):
    on a machine of few CPUs the rate stays flat once they are busy, and the
    CPU per instance says what one core per node would give."""
    par = int(meta.get("parallel", "4"))
    ns = sorted({int(x) for x in meta["nodes"].split(",") if x.strip()})
    p("")
    p("several nodes on one PostgreSQL and one storage root (--nodes %s), %d associations dealt"
      % (meta["nodes"], par))
    p("round-robin over the nodes' ports:")
    one = rate.get((node_label(1), par)) or rate.get(("pacsnode", par))
    for n in ns:
        v = rate.get((node_label(n), par))
        if v is None:
            p("  %-20s n/a (no valid measurement)" % node_label(n))
            continue
        p("  %-20s %7.1f inst/s%s" % (node_label(n), v, " = %.2f x one node" % (v / one) if one else ""))
    cpu_table(groups, meta, p, only={node_label(n) for n in ns})


def durable_lines(rate, p):
    """What an fsync alone costs storescp: the share of its rate that a
    receiver like it keeps once each response waits for its file, against
    the share the targets ask of pacsnode, which also indexes."""
    lines = []
    for k, target in ((1, 0.6), (4, 0.8)):
        d, ref = rate.get((DURABLE[k], k)), rate.get(("storescp", k))
        if d is None or ref is None:
            continue
        lines.append("  %d assoc: %s %.0f/s = %.2f x storescp (the target asks %.1f x of pacsnode)"
                     % (k, DURABLE[k], d, d / ref, target))
    if lines:
        p("")
        p("storescp itself, made durable (an fsync of each file before its response, nothing else):")
        for line in lines:
            p(line)


def floor_lines(meta, rate, p):
    """The disk's floor for a durable store, measured in the same run, and
    what it means for the targets relative to storescp."""
    par = int(meta.get("parallel", "4"))
    got = {}
    for tag in ("start", "end"):
        for k in (1, par):
            v = meta.get("floor_%s_%d" % (tag, k))
            if v:
                f, c = v.split()
                got[(tag, k)] = (f, c)
    if not got:
        return
    p("")
    p("the disk's floor, measured in this run (bench/store/floor.py; pgbench), at the start / at the end:")
    for k in (1, par):
        vals = [got.get((t, k)) for t in ("start", "end")]
        fs = " / ".join(v[0] if v else "?" for v in vals)
        cs = " / ".join(v[1] if v else "?" for v in vals)
        p("  %d thread(s): 512 KB file written + fsync + folder fsync %s files/s; "
          "INSERT + COMMIT %s/s" % (k, fs, cs))
    # One association waits for everything, one step after the other, for
    # every instance: storescp's own work (receive, write), then the file's
    # fsync, then the commit.
    for k, target in ((1, 0.6), (par, 0.8)):
        best = None
        for t in ("start", "end"):
            v = got.get((t, k))
            try:
                f, c = float(v[0]), float(v[1])
            except (TypeError, ValueError):
                continue
            best = (f, c) if best is None or f > best[0] else best
        ref = rate.get(("storescp", k))
        if best is None or ref is None:
            continue
        f, c = best
        disk = 1 / (1 / f + 1 / c)
        serial = 1 / (1 / ref + 1 / f + 1 / c)
        p("  %d assoc, with the better floor: file then commit, in turn, %.0f/s; storescp's work, then"
          % (k, disk))
        p("    file, then commit, in turn, %.0f/s = %.2f x storescp (target %.1f x = %.0f/s); only"
          % (serial, serial / ref, target, target * ref))
        p("    overlapping the file's write-back with receiving it can do better")
    # What is left for a durable store once the sender's own work and the
    # transfer are paid: storescp --ignore --bit-preserving writes every
    # byte to /dev/null as it arrives, without parsing it.
    ign, ref = rate.get((IGNORE, 1)), rate.get(("storescp", 1))
    if ign and ref and ign <= ref:
        p("  1 assoc: %s (%.0f/s) was not faster than storescp (%.0f/s) in this run:"
          % (IGNORE, ign, ref))
        p("    the machine's noise was larger than what writing the files costs storescp")
    elif ign and ref:
        budget = 1000 / (0.6 * ref)
        p("  1 assoc: storescu's own work and the transfer (%s) take %.2f ms"
          % (IGNORE, 1000 / ign))
        if 1000 / ign < budget:
            p("    of every instance; at 0.6 x storescp (%.0f/s = %.2f ms an instance) that leaves"
              % (0.6 * ref, budget))
            p("    %.2f ms for the file's fsync and the commit, which cannot overlap the transfer"
              % (budget - 1000 / ign))
        else:
            p("    of every instance, more than 0.6 x storescp allows (%.2f ms): this run's noise"
              % budget)


if __name__ == "__main__":
    main()
