"""Reads the JSON lines of bench_tpe and tpe_optuna.py on stdin; prints, per function and
searcher, the median regret [interquartile range] after 25, 50 and 100 results, and
the searcher's own time per 100 suggestions."""

import json
import statistics
import sys
from collections import defaultdict


def q(v, p):
    v = sorted(v)
    i = (len(v) - 1) * p
    lo, hi = int(i), min(int(i) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


rows = defaultdict(list)
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        rows[(r["parallel"], r["function"], r["searcher"])].append(r)

for (par, fn, searcher), rs in sorted(rows.items()):
    cells = []
    for k in ("25", "50", "100"):
        v = [r["regret"][k] for r in rs]
        cells.append(f"{statistics.median(v):.3g} [{q(v, 0.25):.3g}–{q(v, 0.75):.3g}]")
    ms = statistics.median(r["searcher_s_per_100"] for r in rs) * 1000
    print(
        f"| {par} | {fn} | {searcher} | "
        + " | ".join(cells)
        + f" | {ms:.1f} ms | {len(rs)} |"
    )
