#!/usr/bin/python3
"""Format the web benchmark's results: tables, ratios and PASS/FAIL
against issue 20's targets.

Usage: report.py WORK_DIR

Reads, from WORK_DIR (written by run.sh):
  meta.txt                      key=value lines describing the run
  loads.tsv                     step, seconds, note
  qido-<target>-<regime>.json   webclient.py qido; targets pacsnode-big,
                                pacsnode-small, orthanc; regimes idle, busy
  page-<target>-<page>.json     webclient.py get; pages index, study, thumbs
  wado.tsv                      set, source, rep, status, seconds, instances, bytes, client CPU, note
  stow.tsv                      receiver, k, rep, status, seconds, stored, bytes, note
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import (REGIME_TEXT, busy_warning, collect_shapes, each_shape, fmt, header, latency_table,  # noqa: E402
                 load_json, matches_note, netns_line, pct, plan_sets, rates, read_meta, read_tsv)
from lib import SETS as TARGETS  # noqa: E402
BIG_P50, BIG_P99 = 10.0, 50.0      # ms, every QIDO shape at 1,000,000
FASTER, FASTER_ABOVE = 10.0, 5.0   # x Orthanc's p50 where Orthanc's p50 > 5 ms
WADO_VS_MOVE, WADO_VS_ORTHANC = 0.9, 2.0
STOW_VS_CSTORE, STOW_VS_ORTHANC = 0.8, 3.0
PAGE_MS = 100.0


def first_keys(rows):
    """The (first, second column) pairs of rows, in first-seen order."""
    keys = []
    for row in rows:
        if (row[0], row[1]) not in keys:
            keys.append((row[0], row[1]))
    return keys


def main():
    work = sys.argv[1]
    meta = read_meta(os.path.join(work, "meta.txt"))
    big, small, names, regimes = plan_sets(meta)
    res = {(t, r): load_json(os.path.join(work, "qido-%s-%s.json" % (t, r))) for t in TARGETS for r in regimes}

    shapes, stat = collect_shapes(res, "expected")  # the large result's rate: the model's matches
    latency_shapes = [(n, l) for n, l in shapes if n != "large"]

    out = []
    p = out.append
    out.extend(header(meta, "pacsnode web benchmark: DICOMweb and pages (bench/web/run.sh)"))
    if meta.get("others", "none at the start; none at the end") != "none at the start; none at the end":
        p("WARNING: other benchmarks ran on this machine during the run: %s" % meta["others"])
    out.extend(busy_warning(meta))
    for key, label in (("data_big", "big set"), ("data_small", "small set")):
        if key in meta:
            d = json.loads(meta[key])
            p("%s: %d instances, %d patients, %d studies, %d series (bench/find/gen.py's model)"
              % (label, d["instances"], d["patients"], d["studies"], d["series"]))
    p("client: bench/web/webclient.py (Python %s http.client), one kept-alive connection per server and"
      % meta.get("python", "?"))
    p("  regime; a request's time runs from its first byte sent to the last byte of the body read;")
    p("  %s" % meta.get("queries", "?"))
    p("versions: dcmtk %s; orthanc %s; postgresql %s" % (meta.get("dcmtk", "?"), meta.get("orthanc", "?"),
                                                  meta.get("postgresql", "?")))
    p("pacsnode: %s" % meta.get("pacsnode", "?"))
    p(netns_line(meta))
    p("")

    loads = read_tsv(os.path.join(work, "loads.tsv"))
    if loads:
        p("%-46s %8s  %s" % ("loading (untimed)", "seconds", "note"))
        for step, secs, note in loads:
            p("%-46s %8s  %s" % (step[:46], secs, note))
        p("")

    # --- QIDO-RS ------------------------------------------------------------
    for t in TARGETS:
        for r in regimes:
            doc = res[(t, r)]
            if doc and doc.get("error"):
                p("%s, CPUs %s: %s" % (names[t], r, doc["error"]))
    for r in regimes:
        if not any(k[1] == r for k in stat):
            continue
        latency_table(p, "QIDO-RS, %s" % REGIME_TEXT.get(r, r), TARGETS, names, res, stat, shapes, r, big, small,
                      ("reference: /health, Orthanc /system", "ping"), "large result: matches/s",
                      "time to the response headers, p50:")
        p("")
    if stat:
        matches_note(p, TARGETS, names, stat, shapes, regimes[0])
        ex = None
        for t in TARGETS:
            for s in (res.get((t, regimes[0])) or {}).get("shapes", []):
                if s.get("example"):
                    ex = ex or []
                    ex.append("  %s: GET %s" % (names[t], s["example"]["path"][:110]))
                    break
        if ex:
            p("requests, e.g. (the first timed query of the first shape):")
            out.extend(ex)
        conns = ["%s %s" % (names[t], (res.get((t, r)) or {}).get("connections", "-")) for t in TARGETS
                 for r in regimes[:1] if res.get((t, r))]
        p("TCP connections used per client run (CPUs %s): %s" % (regimes[0], ", ".join(conns)))
        bad_lines = []
        for where, s in each_shape(res, TARGETS, names, regimes):
            if s["bad"]:
                x = s["bad"][0]
                bad_lines.append("  %s: %d answers wrong (warm-up included); first: GET %s -> status %s, "
                                 "%s matches, expected %s%s"
                                 % (where, len(s["bad"]), x["path"][:100], x["status"], x["responses"],
                                    x["expected"], (" (%s)" % x["body"][:80]) if x.get("body") else ""))
            if s.get("truncated"):
                bad_lines.append("  %s: stopped after %d of %d queries (MAX_SECONDS)"
                                 % (where, len(s["ms"]), s.get("planned", 0)))
        if bad_lines:
            p("correctness (status 200 and the number of matches against the model) and truncation:")
            out.extend(bad_lines)
        else:
            p("correctness: every answer had status 200 and the expected number of matches")
        p("")

    # --- pages --------------------------------------------------------------
    pages = {}
    for t in ("pacsnode-big", "pacsnode-small"):
        for pg in ("index", "study", "thumbs"):
            d = load_json(os.path.join(work, "page-%s-%s.json" % (t, pg)))
            if d:
                pages[(t, pg)] = d
    if pages:
        p("== pages (CPUs idle), ms ==")
        p("%-16s %-44s %8s %7s %7s %7s  %s" % ("server", "page", "bytes", "p50", "p99", "n", "note"))
        for (t, pg), d in pages.items():
            if pg == "thumbs":
                if d.get("thumbnail_ms"):
                    p("%-16s %-44s %8s %s %s %7d  %s" % (
                        names[t], "one thumbnail (of the study page's %d)" % d.get("thumbnails", 0), "-",
                        fmt(pct(d["thumbnail_ms"], 50)), fmt(pct(d["thumbnail_ms"], 99)), len(d["thumbnail_ms"]),
                        "PNG of the series' middle image"))
                if d.get("with_thumbnails_ms"):
                    p("%-16s %-44s %8s %s %s %7d  %s" % (
                        names[t], "study page + its thumbnails, one connection", "-",
                        fmt(pct(d["with_thumbnails_ms"], 50)), fmt(pct(d["with_thumbnails_ms"], 99)),
                        len(d["with_thumbnails_ms"]), "sequential (a browser uses up to 6 connections)"))
                continue
            label = "/ (index, newest first, 50 a page)" if pg == "index" else "/studies/{uid} (%s series)" % (
                meta.get("pages", "series=20").split("series=")[-1])
            note = ""
            if d.get("bad") or d.get("error"):
                note = "WRONG: %s" % (d.get("error") or json.dumps(d["bad"][0]))
            elif pg == "study":
                note = "%s series sections" % d.get("sections", "?")
            else:
                note = "%s table rows" % d.get("rows", "?")
            p("%-16s %-44s %8s %s %s %7d  %s" % (names[t], label, d.get("bytes", "-"),
                                                fmt(pct(d["ms"], 50) if d["ms"] else None),
                                                fmt(pct(d["ms"], 99) if d["ms"] else None), len(d["ms"]), note))
        p("")

    # --- WADO-RS --------------------------------------------------------------
    wado = read_tsv(os.path.join(work, "wado.tsv"))
    wstat = {}
    if wado:
        p("== WADO-RS of a %s-instance CT study, beside pacsnode's C-MOVE of it ==" % meta.get(
            "wado_count", "wado_count=?").split()[0])
        p("%-12s %-22s %8s %8s %8s  %-9s %6s  %s" % ("set", "source", "seconds", "inst/s", "MB/s", "delivered",
                                                    "client", "inst/s of each run"))
        keys = first_keys(wado)
        for k in keys:
            runs = [r for r in wado if (r[0], r[1]) == k]
            ok = [r for r in runs if r[3] == "ok"]
            if not ok:
                p("%-12s %-22s FAILED: %s" % (k[0], k[1], runs[0][8] if runs else "?"))
                continue
            n = int(ok[0][5])
            secs, rate, mbs, each = rates(n, int(ok[0][6]), [float(r[4]) for r in ok])
            wstat[k] = rate
            setname = "%s set" % (big if k[0] == "big" else small)
            cpus = [float(r[7]) for r in ok if r[7] not in ("-", "")]
            p("%-12s %-22s %8.3f %8.1f %8.1f  %-9s %6s  %s%s" % (
                setname[:12], k[1], secs, rate, mbs, "%d/%d" % (n, int(meta.get("wado_count", "0").split()[0] or 0)),
                "%.2f s" % statistics.median(cpus) if cpus else "-", each,
                "" if len(ok) == len(runs) else "  (%d runs FAILED)" % (len(runs) - len(ok))))
        p("(WADO-RS: one GET of the study, Accept multipart/related; type=\"application/dicom\"; transfer-syntax=*,")
        p(" the client reads the whole body and counts its parts; MB/s: bytes of the body. C-MOVE: movescu to")
        p(" one storescp (files written without fsync), as bench/move; MB/s: bytes of the files received.")
        p(" client: the WADO-RS client's own CPU time in the timed part (median); the median of the runs; the")
        p(" order rotates; the stored files in the page cache)")
        p("")

    # --- STOW-RS ------------------------------------------------------------
    stow = read_tsv(os.path.join(work, "stow.tsv"))
    sstat = {}
    if stow:
        p("== STOW-RS of %s CT instances (%s per request) beside storescu's C-STORE of the same files =="
          % (meta.get("stow_count", "?").split()[0], meta.get("stow_count", "").split("stow_batch=")[-1].split()[0]))
        p("%-30s %5s %8s %8s %8s  %-9s  %s" % ("receiver", "conns", "seconds", "inst/s", "MB/s", "stored",
                                              "inst/s of each run"))
        keys = first_keys(stow)
        keys.sort(key=lambda k: (int(k[1]), k[0]))
        for k in keys:
            runs = [r for r in stow if (r[0], r[1]) == k]
            ok = [r for r in runs if r[3] == "ok"]
            if not ok:
                p("%-30s %5s FAILED: %s" % (k[0], k[1], "; ".join(r[7] for r in runs[:1])))
                continue
            n = int(ok[0][5])
            secs, sstat[k], mbs, each = rates(n, int(ok[0][6]), [float(r[4]) for r in ok])
            p("%-30s %5s %8.2f %8.1f %8.1f  %-9s  %s%s" % (
                k[0], k[1], secs, sstat[k], mbs, "%d/%d" % (n, n), each,
                "" if len(ok) == len(runs) else "  (%d runs FAILED: %s)" % (len(runs) - len(ok), [r[7] for r in runs if r[3] != "ok"][0])))
        fl = [(k, v) for k, v in meta.items() if k.startswith("floor_")]
        if fl:
            p("the disk's floor in the same run (bench/store/floor.py: create, write, fsync file and folder;")
            p("  pgbench: one-row INSERT + COMMIT), per second:")
            for k, v in fl:
                f, c = (v.split() + ["?", "?"])[:2]
                _, when, threads = k.split("_")
                p("  %-5s %s thread(s): durable files %8s/s   INSERT+COMMIT %6s/s" % (when, threads, f, c))
        p("(each run: a fresh database and storage; K connections: K processes, each the K-th contiguous")
        p(" quarter of the files; the time runs from the start signal to the last answer; the order rotates)")
        p("")

    # --- targets ------------------------------------------------------------
    judge = "idle" if "idle" in regimes else (regimes[0] if regimes else "idle")
    p("targets (issue 20): QIDO-RS %s latencies judged with CPUs %s; the comparisons with Orthanc in every"
      % (big, judge))
    p("regime measured (%s), PASS only if met in all" % ", ".join(regimes))
    p("%-60s %20s %17s  %s" % ("", "value", "required", "result"))
    verdicts = []

    def line(label, value, required, ok):
        if ok is None:
            p("%-60s %20s %17s  %s" % (label[:60], value or "-", required, "n/a"))
            return
        verdicts.append(ok)
        p("%-60s %20s %17s  %s" % (label[:60], value, required, "PASS" if ok else "FAIL"))

    for name, label in latency_shapes:
        for q, lim in (("p50", BIG_P50), ("p99", BIG_P99)):
            st = stat.get(("pacsnode-big", judge, name))
            line("QIDO %s %s %s" % (big, q, label), fmt(st[q]).strip() + " ms" if st else None,
                 "<= %g ms" % lim, (st[q] <= lim) if st else None)
    for name, label in latency_shapes:
        vals, oks, any_target = [], [], False
        for r in regimes:
            b, o = stat.get(("pacsnode-small", r, name)), stat.get(("orthanc", r, name))
            if not (b and o):
                vals.append("-")
                oks.append(None)
                continue
            ratio = o["p50"] / b["p50"]
            if o["p50"] > FASTER_ABOVE:
                any_target = True
                oks.append(ratio >= FASTER)
                vals.append("%.1fx" % ratio)
            else:
                vals.append("(%.1fx)" % ratio)
        if None in oks or not vals or all(v == "-" for v in vals):
            line("QIDO %s Orthanc p50 / pacsnode p50, %s" % (small, label), ", ".join(vals), ">= %gx" % FASTER, None)
        elif not any_target:
            p("%-60s %20s %17s  %s" % (("QIDO %s Orthanc p50 / pacsnode p50, %s" % (small, label))[:60],
                                       ", ".join(vals), "-", "no target (Orthanc <= 5 ms)"))
        else:
            line("QIDO %s Orthanc p50 / pacsnode p50, %s" % (small, label), ", ".join(vals), ">= %gx" % FASTER,
                 all(oks))
    w, m, o = wstat.get(("small", "pacsnode WADO-RS")), wstat.get(("small", "pacsnode C-MOVE")), \
        wstat.get(("small", "Orthanc WADO-RS"))
    line("WADO-RS pacsnode / pacsnode's C-MOVE (instances/s)", "%.2f" % (w / m) if w and m else None,
         ">= %g" % WADO_VS_MOVE, (w / m >= WADO_VS_MOVE) if w and m else None)
    line("WADO-RS pacsnode / Orthanc (instances/s)", "%.2f" % (w / o) if w and o else None,
         ">= %g" % WADO_VS_ORTHANC, (w / o >= WADO_VS_ORTHANC) if w and o else None)
    for k in sorted({x[1] for x in sstat}, key=int):
        s, c, o = sstat.get(("pacsnode STOW-RS", k)), sstat.get(("pacsnode C-STORE (storescu)", k)), \
            sstat.get(("Orthanc+PostgreSQL STOW-RS", k))
        line("STOW-RS pacsnode / pacsnode's C-STORE, %s conn (instances/s)" % k,
             "%.2f" % (s / c) if s and c else None, ">= %g" % STOW_VS_CSTORE, (s / c >= STOW_VS_CSTORE) if s and c else None)
        line("STOW-RS pacsnode / Orthanc, %s conn (instances/s)" % k, "%.2f" % (s / o) if s and o else None,
             ">= %g" % STOW_VS_ORTHANC, (s / o >= STOW_VS_ORTHANC) if s and o else None)
    pt = "pacsnode-big" if any(k[0] == "pacsnode-big" for k in pages) else "pacsnode-small"
    for pg, label in (("index", "index page /"), ("study", "study page, %s series" % meta.get(
            "pages", "series=20").split("series=")[-1])):
        d = pages.get((pt, pg))
        ok_d = d and d["ms"] and not d.get("bad") and not d.get("error")
        for q in (50, 99):
            v = pct(d["ms"], q) if ok_d else None
            line("%s %s p%d (%s)" % (label, names[pt].replace("pacsnode ", ""), q, "correct" if ok_d else "wrong"),
                 "%s ms" % fmt(v).strip() if v is not None else None, "< %g ms" % PAGE_MS,
                 (v < PAGE_MS) if v is not None else None)
    p("(QIDO %s: where Orthanc's p50 is at most 5 ms in a regime there is no target there; ratios in" % small)
    p(" brackets are for information)")
    p("%d of %d targets met" % (sum(verdicts), len(verdicts)))
    print("\n".join(out))


if __name__ == "__main__":
    main()
