"""Counts issue 12's goals over repeated runs of scripts/compare.sh (RUNS=N): for each goal,
in how many runs it was met, and its margin in each run (how far past the goal this node was,
as a ratio: 1.00x just met, below 1.00x missed by that much; table.py says how each is
figured). On a shared machine one run can land on either side of a goal that this node only
just meets; the count and the smallest margin say how firmly it is met here.

Usage: summary.py GOALS.json [GOALS.json ...]   (the files table.py wrote, one per run)
"""

import json
import sys

runs = []
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            runs.append(json.load(f))
    except (OSError, ValueError):
        runs.append(None)
judged = [r for r in runs if r is not None]
missing = len(runs) - len(judged)
print(f"goals (issue 12) over {len(runs)} runs"
      + (f" ({missing} of them produced no table):" if missing else ":"))
names = [g["goal"] for g in judged[0]] if judged else []
for i, name in enumerate(names):
    goals = [r[i] for r in judged if i < len(r) and r[i]["goal"] == name]
    margins = [g["margin"] for g in goals if g["margin"] is not None]
    met = sum(1 for g in goals if g["met"])
    listed = " ".join(f"{m:.2f}x" for m in margins) or "-"
    low = f", smallest {min(margins):.2f}x" if margins else ""
    print(f"  met in {met} of {len(runs)}  {name:36} margins {listed}{low}")
