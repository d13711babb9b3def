"""Prints bench/python.sh's table from the two JSON results (sunray's, Ray's)."""

import json
import sys
from pathlib import Path

s, r = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])


def fmt(v, scale, digits):
    if isinstance(v, dict):
        m, lo, hi = (v[k] * scale for k in ("median", "min", "max"))
        return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"
    return f"{v * scale:.{digits}f}"


def mid(v):
    return v["median"] if isinstance(v, dict) else v


ROWS = [
    ("import", "import_s", "ms", 1e3, 1, False),
    ("init() to ready (local cluster)", "init_s", "ms", 1e3, 1, False),
    ("10,000 no-op tasks", "tasks_per_s", "tasks/s", 1, 0, True),
    ("round trip get(f.remote())", "round_trip_us", "us", 1, 1, False),
    ("seed: first round", "seed_first_round_s", "s", 1, 4, False),
    ("seed: steady round", "seed_steady_round_s", "s", 1, 4, False),
]
print(f"{'figure':34} {'sunray':>26} {'Ray':>28}  sunray vs Ray")
for name, key, unit, scale, digits, higher_better in ROWS:
    a, b = mid(s[key]), mid(r[key])
    ratio = a / b if higher_better else b / a
    print(
        f"{name:34} {fmt(s[key], scale, digits):>20} {unit:5} "
        f"{fmt(r[key], scale, digits):>22} {unit:5}  {ratio:6.1f}x better"
    )
