"""Counts issue 12's goals over repeated runs of scripts/compare.sh (RUNS=N): for each goal,
in how many runs it was met, its margin in each run (how far past the goal this node was, as a
ratio: 1.00x just met, below 1.00x missed by that much; table.py says how each is figured),
and the median of those margins.

On a shared machine one run can land on either side of a goal that this node only just meets:
a run in which other work slowed one system's phase and not another's moves every ratio of
that run. The count and the smallest margin say how firmly a goal is met here; the median
margin is the figure one such run moves least, and "met at the median" is the verdict over the
runs (with an even count, the median is the mean of the middle two margins). A run whose goal
could not be judged is counted as not met and has no margin.

Usage: summary.py GOALS.json [GOALS.json ...]   (the files table.py wrote, one per run)
"""

import json
import statistics
import sys


def median_verdict(margins, strict):
    """The median of `margins` and whether it meets its goal (above 1.00 when `strict`, at least
    1.00 otherwise), or (None, None) without margins."""
    if not margins:
        return None, None
    mid = statistics.median(margins)
    return mid, (mid > 1 if strict else mid >= 1)


def main(paths):
    runs = []
    for path in paths:
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
    verdicts = []
    for i, name in enumerate(names):
        goals = [r[i] for r in judged if i < len(r) and r[i]["goal"] == name]
        margins = [g["margin"] for g in goals if g["margin"] is not None]
        met = sum(1 for g in goals if g["met"])
        listed = " ".join(f"{m:.2f}x" for m in margins) or "-"
        low = f", smallest {min(margins):.2f}x" if margins else ""
        mid, ok = median_verdict(margins, any(g.get("strict") for g in goals))
        verdicts.append(ok)
        at_median = ("unknown" if ok is None else
                     f"{'met' if ok else 'NOT met'} at the median ({mid:.2f}x)")
        print(f"  met in {met} of {len(runs)}, {at_median:30} {name:36} "
              f"margins {listed}{low}")
    if verdicts:
        held = sum(1 for v in verdicts if v)
        print(f"{held} of {len(verdicts)} goals met at the median run")


if __name__ == "__main__":
    main(sys.argv[1:])
