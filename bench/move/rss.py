#!/usr/bin/python3
"""Sample the resident set size (VmRSS) of a process, or of its descendants,
every INTERVAL seconds until SIGTERM or SIGINT; then write one line of
key=value pairs to OUT.

Usage: rss.py self|children PID OUT [INTERVAL]

  self      the process PID itself (e.g. Orthanc: one process, many threads)
  children  every descendant of PID, found again at each sample through
            /proc/<pid>/task/<tid>/children (e.g. pacsnode's workers,
            which the listener PID forks)

OUT.ready is created after the first sample, so that the caller can start
the measured operation knowing the sampler is already looking.

Output keys:
  samples      number of samples taken
  first_kb     the largest VmRSS of one process in the first sample
  peak_kb      the largest VmRSS of one process in any sample
  peak_pid     the process that had it
  peak_sum_kb  the largest sum of VmRSS over all sampled processes
  procs        how many distinct processes were seen
  busy_pid     the process that used the most CPU time while sampled (for
               pacsnode: the worker that served the move)
  busy_cpu_s   its CPU time (user + system) over the sampling, in seconds
  busy_first_kb, busy_peak_kb
               its VmRSS in its first sample, and its largest VmRSS
"""

import os
import signal
import sys
import time

_stop = False


def _on_signal(signum, frame):
    global _stop
    _stop = True


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None                  # gone, or a kernel thread


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])   # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("self", "children"):
        sys.exit(__doc__)
    mode, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) == 5 else 0.05
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    samples = 0
    first = peak = peak_sum = 0
    peak_pid = 0
    seen = set()
    per = {}                     # pid -> [first_kb, peak_kb, first_ticks, last_ticks]
    while True:
        pids = [pid] if mode == "self" else descendants(pid)
        total = 0
        biggest = 0
        for p in pids:
            kb = rss_kb(p)
            if kb is None:
                continue
            seen.add(p)
            ticks = cpu_ticks(p)
            if p not in per:
                per[p] = [kb, kb, ticks, ticks]
            else:
                st = per[p]
                st[1] = max(st[1], kb)
                if ticks is not None:
                    st[3] = ticks
            total += kb
            biggest = max(biggest, kb)
            if kb > peak:
                peak, peak_pid = kb, p
        peak_sum = max(peak_sum, total)
        samples += 1
        if samples == 1:
            first = biggest
            open(out + ".ready", "w").close()
        if _stop:               # one last sample after the signal, then out
            break
        time.sleep(interval)

    def used(st):
        return st[3] - st[2] if st[2] is not None and st[3] is not None else -1
    busy_pid, busy = 0, [0, 0, None, None]
    for p, st in per.items():
        if busy_pid == 0 or used(st) > used(busy):
            busy_pid, busy = p, st
    hz = os.sysconf("SC_CLK_TCK")
    with open(out + ".tmp", "w") as f:
        f.write("samples=%d first_kb=%d peak_kb=%d peak_pid=%d peak_sum_kb=%d procs=%d "
                "busy_pid=%d busy_cpu_s=%.2f busy_first_kb=%d busy_peak_kb=%d\n"
                % (samples, first, peak, peak_pid, peak_sum, len(seen), busy_pid,
                   max(used(busy), 0) / hz, busy[0], busy[1]))
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
