#!/usr/bin/python3
"""The QIDO-RS query plan: bench/find's plan for N instances (gen.py's
model and queries, unchanged) plus one shape C-FIND's benchmark does not
have but a viewer asks first: every series of one study
(GET /studies/{study}/series, no other key).

    plan.py N OUT.json [PER_SHAPE [LARGE_TARGET]]

WARMUP, LARGE_REPEAT and LITERAL_REPEAT are read from the environment as
gen.py reads them. The number of matches of every query comes from the
model, never from a server.
"""

import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "find"))
import gen  # noqa: E402


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    n, out = int(argv[1]), argv[2]
    per_shape = int(argv[3]) if len(argv) > 3 else 100
    large_target = int(argv[4]) if len(argv) > 4 else 10000
    warm = int(os.environ.get("WARMUP", "5"))
    m = gen.Model(n)
    plan = gen.build_queries(m, per_shape, warm, large_target, int(os.environ.get("LARGE_REPEAT", "3")),
                             int(os.environ.get("LITERAL_REPEAT", "20")))
    rng = random.Random("pacsnode-bench-web-study-series:%d" % n)
    q = []
    for _ in range(per_shape + warm):
        s = rng.randrange(len(m.st_pat))
        q.append({"keys": {"StudyInstanceUID": m.study_uid(s)}, "expected": len(m.st_series[s])})
    shape = {"name": "study_series", "label": "SERIES all of a study", "level": "SERIES",
             "return_keys": [], "warmup": q[:warm], "queries": q[warm:]}
    at = next(i for i, s in enumerate(plan["shapes"]) if s["name"] == "series_modality")
    plan["shapes"].insert(at, shape)
    with open(out, "w") as f:
        json.dump(plan, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main(sys.argv)
