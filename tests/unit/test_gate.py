import numpy as np
import pandas as pd
import pytest

from recops.config import GateParams
from recops.gate import decide, paired_bootstrap

PARAMS = GateParams(floors={"ndcg@10": 0.05, "recall@20": 0.1},
                    champion={"metric": "ndcg@10", "margin": 0.0, "confidence": 0.95, "n_bootstrap": 2000})
GOOD = {"ndcg@10": 0.2, "recall@20": 0.3}


def per_user(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [str(i) for i in range(len(values))], "ndcg@10": values})


def test_floors_pass_and_fail_with_reasons() -> None:
    assert decide(GOOD, PARAMS).passed
    d = decide({"ndcg@10": 0.01, "recall@20": 0.3}, PARAMS)
    assert not d.passed
    assert "ndcg@10 = 0.0100 is below its floor 0.05" in d.reasons[0]
    assert d.floors["recall@20"]["passed"] is True


def test_missing_floor_metric_fails() -> None:
    d = decide({"ndcg@10": 0.2}, PARAMS)
    assert not d.passed and "recall@20" in d.reasons[0]


def test_no_champion_bootstraps_only_when_allowed() -> None:
    assert decide(GOOD, PARAMS).bootstrap_champion is True
    strict = PARAMS.model_copy(update={"allow_bootstrap": False})
    d = decide(GOOD, strict)
    assert d.passed and not d.bootstrap_champion
    assert "reviewer" in d.reasons[0]
    assert decide({"ndcg@10": 0.0, "recall@20": 0.0}, PARAMS).bootstrap_champion is False


def test_clearly_worse_candidate_fails_against_champion() -> None:
    rng = np.random.default_rng(0)
    champ = rng.uniform(0.2, 0.6, 300)
    cand = champ - 0.05 + rng.normal(0, 0.02, 300)
    d = decide(GOOD, PARAMS, per_user(cand), per_user(champ), champion_version="3")
    assert not d.passed
    assert d.comparison.prob_worse_than_margin > 0.95 and d.comparison.ci_high < 0
    assert "worse than champion 3" in d.reasons[0]


def test_equal_or_better_candidate_passes() -> None:
    rng = np.random.default_rng(1)
    champ = rng.uniform(0.2, 0.6, 300)
    assert decide(GOOD, PARAMS, per_user(champ.copy()), per_user(champ)).passed
    noisy_better = champ + 0.01 + rng.normal(0, 0.05, 300)
    d = decide(GOOD, PARAMS, per_user(noisy_better), per_user(champ))
    assert d.passed and d.comparison.mean_difference > 0


def test_margin_tolerates_small_drops() -> None:
    rng = np.random.default_rng(2)
    champ = rng.uniform(0.2, 0.6, 500)
    cand = champ - 0.01
    assert not decide(GOOD, PARAMS, per_user(cand), per_user(champ)).passed
    lenient = PARAMS.model_copy(update={"champion": PARAMS.champion.model_copy(update={"margin": 0.02})})
    assert decide(GOOD, lenient, per_user(cand), per_user(champ)).passed


def test_bootstrap_is_paired_and_seeded() -> None:
    a = np.array([0.0, 1.0, 0.5, 0.25])
    b1 = paired_bootstrap(a, a, metric="m", margin=0, confidence=0.9, n=500, seed=3)
    assert b1.ci_low == b1.ci_high == 0.0  # identical pairs: no spread at all when paired
    b2 = paired_bootstrap(a + 0.1, a, metric="m", margin=0, confidence=0.9, n=500, seed=3)
    assert b2.mean_difference == pytest.approx(0.1) and b2.prob_worse_than_margin == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, a[:2], metric="m", margin=0, confidence=0.9, n=100, seed=0)


def test_different_test_cases_are_refused() -> None:
    with pytest.raises(ValueError, match="same test cases"):
        decide(GOOD, PARAMS, per_user(np.ones(5)), per_user(np.ones(4)))
