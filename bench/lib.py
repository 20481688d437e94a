"""Shared by the benchmarks' Python (imported by path: the folder above a
bench's own one goes on sys.path): the run description every
bench/*/run.sh writes (meta.txt: key=value lines), the reports' readers,
numbers and common lines, and the Part 10 dataset the generators start
from."""

import json
import os
import statistics


def read_meta(path):
    """The key=value lines of path as a dict ({} when there is no file)."""
    meta = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k] = v
    return meta


def load_json(path):
    """The JSON document at path, or None when there is no file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_tsv(path):
    """The non-empty lines of a tab-separated file as lists ([] when none)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def pct(vals, q):
    """Nearest-rank percentile q (0-100) of vals; None when empty."""
    if not vals:
        return None
    s = sorted(vals)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def fmt(v, width=7):
    """A latency in ms in width characters, 2 decimals below 100, 1 below
    1,000, none above; "-" for None."""
    if v is None:
        return "%*s" % (width, "-")
    if v >= 1000:
        return "%*.0f" % (width, v)
    if v >= 100:
        return "%*.1f" % (width, v)
    return "%*.2f" % (width, v)


def human(n):
    """1000000 as "1M", 100000 as "100k"; other values as they are."""
    try:
        n = int(n)
    except ValueError:
        return str(n)
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def rates(n, nbytes, secs):
    """One row of runs of n instances, nbytes in all, that took secs (a list
    of seconds): the median seconds, the instances/s and MB/s (10^6 bytes)
    at that median, and each run's instances/s ("a, b, c")."""
    med = statistics.median(secs)
    return med, n / med, nbytes / 1e6 / med, ", ".join("%.0f" % (n / s) for s in secs)


# --- the reports' common lines ----------------------------------------------
def header(meta, title):
    """A report's first lines: its title, when the run started and how long
    it took, the host (and the work dir's file system), the load average."""
    host = meta.get("host", "?")
    if "work_fs" in meta:
        host += "; work dir on %s" % meta["work_fs"]
    return [title,
            "started %s, took %s s" % (meta.get("started", "?"), meta.get("duration_s", "?")),
            "host: %s" % host,
            "load average (1, 5, 15 min): %s" % meta.get("load", "?")]


def busy_warning(meta):
    """The warning lines when the machine was busy as the run started."""
    try:
        ones = [float(x.split()[0]) for x in meta.get("load", "").split(" at the start, ")]
    except ValueError:
        ones = []
    if ones and ones[0] > 1.0:       # at the end it includes the benchmark's own work
        return ["WARNING: the machine was busy when the run started (1-minute load above 1): the figures may be",
                "  noisy; re-run on a quiet machine before trusting a PASS or FAIL near the line"]
    return []


def netns_line(meta):
    return "servers in a private network namespace (loopback only): %s" % (
        "yes" if meta.get("netns") == "1" else "no")


# --- latency per query shape (find/ and web/) -------------------------------
SETS = ["pacsnode-big", "pacsnode-small", "orthanc"]   # find/gen.py's two sets, and Orthanc's
REGIME_TEXT = {
    "idle": "CPUs idle between requests (the machine otherwise quiet)",
    "busy": "one CPU kept busy by a nice-19 spinner (no idle wake-ups)",
}


def plan_sets(meta):
    """The sets' sizes as "1M" and "100k", their names ({SETS member:
    "pacsnode 1M", ...}) and the CPU regimes measured, from meta."""
    big, small = human(meta.get("n_big", "?")), human(meta.get("n_small", "?"))
    names = {"pacsnode-big": "pacsnode %s" % big, "pacsnode-small": "pacsnode %s" % small,
             "orthanc": "Orthanc %s" % small}
    return big, small, names, [r for r in meta.get("regimes", "idle,busy").split(",") if r]


def shape_stats(s, rate_of="responses"):
    """p50, p99 (ms), the time to the first response or the headers, the
    model's matches (median) and, for the large result, matches per second
    from s[rate_of]; one shape's timed queries as the clients write them."""
    st = {"p50": pct(s["ms"], 50), "p99": pct(s["ms"], 99), "n": len(s["ms"]),
          "first50": pct(s["first_ms"], 50) if s.get("first_ms") else None,
          "matches": statistics.median(s["expected"]), "rate": None}
    if s["name"] == "large":
        st["rate"] = statistics.median(s[rate_of]) / (st["p50"] / 1000.0)
    elif s[rate_of] and s["ms"]:   # every query's responses over every query's time
        st["rate"] = sum(s[rate_of]) / (sum(s["ms"]) / 1000.0)
    return st


def collect_shapes(res, rate_of="responses"):
    """From {(target, regime): client result}: the shapes as (name, label)
    in plan order, and {(target, regime, shape): shape_stats}."""
    shapes, stat = [], {}
    for (t, r), doc in res.items():
        for s in (doc or {}).get("shapes", []):
            if s["name"] not in [x[0] for x in shapes]:
                shapes.append((s["name"], s["label"]))
            if s.get("ms"):   # a shape the server would not negotiate has none
                stat[(t, r, s["name"])] = shape_stats(s, rate_of)
    return shapes, stat


def each_shape(res, targets, names, regimes):
    """(where, shape) for every shape of every client result in res, where
    naming the server, the regime and the shape, for the reports' checks."""
    for t in targets:
        for r in regimes:
            for s in (res[(t, r)] or {}).get("shapes", []):
                yield "%s, CPUs %s, %s" % (names[t], r, s["label"]), s


def latency_table(p, title, targets, names, res, stat, shapes, r, big, small, ref, rate_label, first_label,
                  rate_ratio=False):
    """One regime's table: matches, p50/p99 of each target (targets: the big
    set, the small set, Orthanc's), Orthanc/pacsnode at the small set; a
    reference row (ref: (label, key of the client result)), the large
    result's rate (rate_label; with rate_ratio pacsnode/Orthanc too), the
    time to the first response (first_label)."""
    tb, ts, to = targets
    p("== %s ==" % title)
    hdr1 = "%-34s %13s | %-15s | %-15s | %-15s | %s" % (
        "", "matches", " " + names[tb], " " + names[ts], " " + names[to], "Orthanc/pacsnode " + small)
    hdr2 = "%-34s %6s %6s | %7s %7s | %7s %7s | %7s %7s | %7s %7s" % (
        "latency in ms", big, small, "p50", "p99", "p50", "p99", "p50", "p99", "p50", "p99")
    p(hdr1)
    p(hdr2)
    p("-" * len(hdr2))
    row = "%-34s %6s %6s |" % (ref[0], "", "")
    for t in targets:
        e = (res[(t, r)] or {}).get(ref[1])
        row += " %s %s |" % (fmt(e and e["p50"]), fmt(e and e["p99"]))
    p(row.rstrip("|").rstrip())
    for name, label in shapes:
        a, b, o = (stat.get((t, r, name)) for t in targets)
        mb = a["matches"] if a else None
        ms = (b or o)["matches"] if (b or o) else None
        row = "%-34s %6s %6s |" % (label[:34], "%g" % mb if mb is not None else "-",
                                   "%g" % ms if ms is not None else "-")
        for st in (a, b, o):
            row += " %s %s |" % (fmt(st and st["p50"]), fmt(st and st["p99"]))
        row += (" %6.1fx %6.1fx" % (o["p50"] / b["p50"], o["p99"] / b["p99"])) if b and o else " %7s %7s" % (
            "n/a", "n/a")
        p(row)
    row = "%-34s %6s %6s |" % (rate_label, "", "")
    for t in targets:
        st = stat.get((t, r, "large"))
        row += " %15s |" % ("%.0f" % st["rate"] if st and st["rate"] else "-")
    if rate_ratio:
        b, o = stat.get((ts, r, "large")), stat.get((to, r, "large"))
        row += (" %6.1fx (pacsnode/Orthanc)" % (b["rate"] / o["rate"])) if b and o else " %7s" % "n/a"
        p(row)
    else:
        p(row.rstrip("|").rstrip())
    p("%-34s %6s %6s |" % (first_label, "", ""))
    for name, label in shapes:
        row = "%-34s %6s %6s |" % ("  " + label[:32], "", "")
        for t in targets:
            st = stat.get((t, r, name))
            row += " %15s |" % (fmt(st["first50"]).strip() if st and st["first50"] is not None else "-")
        p(row.rstrip("|").rstrip())


def matches_note(p, targets, names, stat, shapes, regime):
    """The footnote under the latency tables: where the matches come from,
    and how many queries of each shape were timed."""
    p("matches: median number of matches of the timed queries (from the generator's model, never from a")
    p("server); timed queries per shape: %s" % "; ".join(
        "%s %s" % (names[t], "/".join(str(stat[(t, regime, n)]["n"]) for n, _ in shapes
                                      if (t, regime, n) in stat))
        for t in targets if any((t, regime, n) in stat for n, _ in shapes)))


# --- the generators ---------------------------------------------------------
def part10_dataset(sop_class, sop_uid, charset):
    """A pydicom Dataset with its file meta for an explicit VR little endian
    Part 10 file of one instance (written with save_as(path,
    write_like_original=False)): SOP class and instance, character set."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def tree_cpu(*roots):
    """CPU seconds (user + system) each root's process tree has used so
    far: its living processes (zombies included) and what they reaped
    (cutime, cstime). A root may be several pids (a list): their trees
    summed."""
    tick = os.sysconf("SC_CLK_TCK")
    procs, kids = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()   # from field 3 (state) on
        procs[int(d)] = sum(int(x) for x in fields[11:15])
        kids.setdefault(int(fields[1]), []).append(int(d))
    out = []
    for root in roots:
        total, todo = 0, list(root) if isinstance(root, (list, tuple)) else [root]
        while todo:
            p = todo.pop()
            total += procs.get(p, 0)
            todo.extend(kids.get(p, []))
        out.append(total / tick)
    return out

