#!/usr/bin/python3
"""The disk's own floor for a durable store, measured beside the receivers.

Usage: floor.py DIR COUNT SIZE THREADS

Writes COUNT files of SIZE bytes into DIR (a fresh folder on the file
system under test), each the least a durable store must do: create, write,
fsync the file, fsync its folder. THREADS threads share the files, each in
its own subfolder. Prints files/s. No network, no parsing, no database:
no receiver that answers only once an instance is on disk can beat it.
"""

import os
import sys
import threading
import time


def writer(folder, n, data, errors):
    try:
        os.makedirs(folder)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(n):
            fd = os.open(os.path.join(folder, "f%06d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.close(fd)
            os.fsync(dfd)
        os.close(dfd)
    except OSError as e:
        errors.append(str(e))


def main():
    folder, count, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = os.urandom(size)
    per = count // threads
    errors = []
    ts = [threading.Thread(target=writer, args=(os.path.join(folder, "t%d" % t), per, data, errors))
          for t in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    if errors:
        sys.exit("floor.py: " + errors[0])
    print("%.1f" % (per * threads / secs))


if __name__ == "__main__":
    main()
