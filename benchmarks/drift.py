"""Benchmark: drift detection on real MovieLens periods with the monitor's settings from params.yaml.

Usage: python benchmarks/drift.py --movielens DIR [--periods 30] [--splits 20] [--reference 7]
       [--shock-items 300] [--output benchmarks/results/drift.json]

The log is cut into ``--periods`` equal-count periods (as ``recops simulate`` and the replay cut it).
For every period after the first ``--reference + 1``:

* **false positives**: ``--splits`` random halves of the period are compared with each other; a split
  counts when the trigger features' drift share reaches ``monitor.drift.share_threshold``;
* **natural drift**: the period against the ``--reference`` periods before it;
* **shift**: the same period with a popularity shock (``recops.simulate.popularity_shock``) against the
  same, unshocked reference.

All comparisons use ``recops.drift`` (Evidently ``ValueDrift``), the code path of ``recops monitor``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from recops.benchmark import machine_info, write_result
from recops.config import load_params
from recops.drift import drift_report, first_genres, interaction_features
from recops.monitor import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from recops.simulate import popularity_shock
from recops.sources import read_movielens


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(float(np.median(values)), 4), "max": round(max(values), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movielens", type=Path, required=True, help="folder with ratings.csv and movies.csv")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--periods", type=int, default=30)
    ap.add_argument("--splits", type=int, default=20, help="random halves per period")
    ap.add_argument("--reference", type=int, default=None, help="default: monitor.reference_periods")
    ap.add_argument("--shock-items", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/drift.json"))
    args = ap.parse_args()
    policy = load_params(args.params).monitor
    ref_n = args.reference or policy.reference_periods
    if args.periods < ref_n + 3 or args.splits < 1:
        ap.error(f"--periods must be >= reference + 3 ({ref_n + 3}) and --splits >= 1")

    data = read_movielens(args.movielens)
    events = data.interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    events["period"] = np.arange(len(events)) * args.periods // len(events)
    genres = first_genres(data.catalog)
    triggers, threshold = policy.drift.trigger_columns, policy.drift.share_threshold

    def compare(reference, current):
        return drift_report(reference, current, policy.drift.thresholds, NUMERIC_FEATURES, CATEGORICAL_FEATURES)

    start = time.perf_counter()
    flagged = splits = 0
    natural: dict[str, list[float]] = {c: [] for c in triggers}
    shifted: dict[str, list[float]] = {c: [] for c in triggers}
    natural_alarms = shift_detected = 0
    rows = []
    rng = np.random.default_rng(args.seed)
    for p in range(ref_n + 1, args.periods):
        upto = events[events["period"] <= p]
        refs = list(range(p - ref_n, p))
        own = interaction_features(upto, [p], genres)
        for _ in range(args.splits):
            half = rng.permutation(len(own)) < len(own) // 2
            flagged += compare(own[half], own[~half]).share(triggers) >= threshold
            splits += 1
        plain = interaction_features(upto, [*refs, p], genres)
        nat = compare(plain[plain["period"] != p], plain[plain["period"] == p])
        first = int(np.flatnonzero(upto["period"].to_numpy() == p)[0])
        shocked = interaction_features(popularity_shock(upto, first, args.shock_items, args.seed), [*refs, p], genres)
        sh = compare(shocked[shocked["period"] != p], shocked[shocked["period"] == p])
        for c in triggers:
            natural[c].append(nat.columns[c].score)
            shifted[c].append(sh.columns[c].score)
        natural_alarms += nat.share(triggers) >= threshold
        shift_detected += sh.share(triggers) >= threshold
        rows.append({"period": p, "natural_trigger_share": nat.share(triggers), "shift_trigger_share": sh.share(triggers)})
    n = len(rows)
    result = {
        "benchmark": "drift detection (recops.drift, Evidently ValueDrift) on ml-latest-small, equal-count periods",
        "periods": args.periods,
        "periods_evaluated": n,
        "reference_periods": ref_n,
        "trigger_columns": triggers,
        "share_threshold": threshold,
        "thresholds": policy.drift.thresholds,
        "false_positive_rate_random_halves": round(flagged / splits, 4),
        "random_splits": splits,
        "natural_alarm_rate_vs_reference": round(natural_alarms / n, 4),
        "shift_detection_rate": round(shift_detected / n, 4),
        "natural_scores": {c: _summary(v) for c, v in natural.items()},
        "shift_scores": {c: _summary(v) for c, v in shifted.items()},
        "shock_items": args.shock_items,
        "per_period": rows,
        "seconds": round(time.perf_counter() - start, 1),
        **machine_info(),
    }
    write_result(result, args.output)
    print(json.dumps({k: v for k, v in result.items() if k != "per_period"}, indent=1))


if __name__ == "__main__":
    main()
