"""Drift detection on real MovieLens periods with the default policy of params.yaml (Evidently 0.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recops.config import load_params
from recops.drift import drift_report, first_genres, interaction_features
from recops.monitor import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from recops.simulate import popularity_shock
from recops.sources import read_movielens

pytestmark = pytest.mark.integration

N_PERIODS = 40
PERIOD = 24  # 0-based index of the period under test


@pytest.fixture(scope="module")
def movielens(ml_small):
    data = read_movielens(ml_small)
    events = data.interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    events["period"] = np.arange(len(events)) * N_PERIODS // len(events)  # equal_count, as the replay cuts it
    return events, first_genres(data.catalog)


@pytest.fixture(scope="module")
def policy(repo_root):
    return load_params(repo_root / "params.yaml").monitor


def _drifted(result, policy) -> bool:
    return result.share(policy.drift.trigger_columns) >= policy.drift.share_threshold


def test_random_halves_of_one_period_do_not_drift(movielens, policy):
    events, genres = movielens
    upto = events[events["period"] <= PERIOD]
    feats = interaction_features(upto, [PERIOD], genres)
    assert len(feats) > 1000
    flagged, shares = 0, []
    for seed in range(25):
        half = np.random.default_rng(seed).permutation(len(feats)) < len(feats) // 2
        result = drift_report(feats[half], feats[~half], policy.drift.thresholds, NUMERIC_FEATURES,
                              CATEGORICAL_FEATURES)
        shares.append(result.share(policy.drift.trigger_columns))
        flagged += _drifted(result, policy)
    fpr = flagged / 25
    print(f"false-positive rate over 25 random splits: {fpr:.0%} (trigger shares {sorted(set(shares))})")
    assert fpr <= 0.10


def test_a_popularity_shock_is_detected_against_the_reference_window(movielens, policy):
    events, genres = movielens
    upto = events[events["period"] <= PERIOD]
    start = int(np.flatnonzero(upto["period"].to_numpy() == PERIOD)[0])
    shocked = popularity_shock(upto, start, 300, seed=0)
    ref_periods = list(range(PERIOD - policy.reference_periods, PERIOD))
    feats = interaction_features(shocked, [*ref_periods, PERIOD], genres)
    result = drift_report(feats[feats["period"] != PERIOD], feats[feats["period"] == PERIOD],
                          policy.drift.thresholds, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    assert result.columns["item_popularity"].drifted
    assert _drifted(result, policy), result.as_dict()
    # the shock only touched item identities: the user-side features cannot have moved
    plain = interaction_features(upto, [*ref_periods, PERIOD], genres)
    for col in ("rating", "user_activity", "sequence_length", "new_user"):
        assert plain[col].equals(feats[col])
    html = result.snapshot.get_html_str(as_iframe=False)
    assert "item_popularity" in html


def test_shock_swaps_head_and_tail_from_the_start_row_only():
    events = pd.DataFrame({"item_id": [str(i) for i in range(40)] * 3, "user_id": "u"})
    events = pd.concat([events, pd.DataFrame({"item_id": ["0"] * 50, "user_id": "u"})], ignore_index=True)
    out = popularity_shock(events, 100, n_items=2, seed=1)
    assert out["item_id"].iloc[:100].equals(events["item_id"].iloc[:100])
    changed = out["item_id"].iloc[100:] != events["item_id"].iloc[100:]
    assert changed.any()
    assert "0" not in set(out["item_id"].iloc[130:])  # the most popular item moved to a tail identity
    with pytest.raises(ValueError, match="needs at least"):
        popularity_shock(events, 0, n_items=20, seed=0)


def test_drift_benchmark_script_reports_the_rates(repo_root, ml_small, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "drift.json"
    subprocess.run([sys.executable, str(repo_root / "benchmarks/drift.py"), "--movielens", str(ml_small),
                    "--params", str(repo_root / "params.yaml"), "--periods", "12", "--splits", "2",
                    "--reference", "4", "--output", str(out)], check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["periods_evaluated"] == 7 and result["random_splits"] == 14
    assert 0.0 <= result["false_positive_rate_random_halves"] <= 0.1
    assert result["shift_detection_rate"] >= 0.5
    assert set(result["shift_scores"]) == set(result["trigger_columns"])
