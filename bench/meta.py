"""The run description every bench/*/run.sh writes (META_TXT): key=value
lines, read by the reports."""

import os


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
