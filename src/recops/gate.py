"""``recops gate``: may this candidate replace the champion?

A candidate passes when

(a) every metric named in ``gate.floors`` clears its floor, and
(b) it is not worse than the current champion on the same test cases: a paired
    bootstrap over users of the difference (candidate - champion) in
    ``gate.champion.metric``; the candidate fails when, with probability of at least
    ``confidence``, it is worse by more than ``margin``, i.e. when the upper
    ``confidence`` quantile of the bootstrapped mean difference is below ``-margin``.

With no champion, (b) is skipped and the decision records whether bootstrapping
(making the first champion without a reviewer) is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recops.config import GateParams


@dataclass(frozen=True)
class Bootstrap:
    metric: str
    n_users: int
    candidate_mean: float
    champion_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    prob_worse_than_margin: float
    n_resamples: int


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    floors: dict[str, dict[str, float | bool]] = field(default_factory=dict)
    champion_version: str | None = None
    comparison: Bootstrap | None = None
    bootstrap_champion: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["comparison"] = asdict(self.comparison) if self.comparison else None
        return out


def paired_bootstrap(
    candidate: np.ndarray, champion: np.ndarray, *, metric: str, margin: float, confidence: float, n: int, seed: int
) -> Bootstrap:
    """Bootstrap the mean per-user difference, resampling users (pairs stay together)."""
    cand = np.asarray(candidate, dtype=np.float64)
    champ = np.asarray(champion, dtype=np.float64)
    if cand.shape != champ.shape or cand.ndim != 1 or len(cand) == 0:
        raise ValueError("paired bootstrap needs two equal-length, non-empty per-user arrays")
    diff = cand - champ
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = 1 - confidence
    return Bootstrap(
        metric=metric,
        n_users=len(diff),
        candidate_mean=float(cand.mean()),
        champion_mean=float(champ.mean()),
        mean_difference=float(diff.mean()),
        ci_low=float(np.quantile(means, alpha / 2)),
        ci_high=float(np.quantile(means, 1 - alpha / 2)),
        prob_worse_than_margin=float((means < -margin).mean()),
        n_resamples=n,
    )


def decide(
    candidate: dict[str, float],
    params: GateParams,
    candidate_per_user: pd.DataFrame | None = None,
    champion_per_user: pd.DataFrame | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Pure decision from metrics (and per-user metrics for the champion comparison)."""
    d = GateDecision(passed=True, champion_version=champion_version)
    for metric, floor in params.floors.items():
        if metric not in candidate:
            d.passed = False
            d.reasons.append(f"floor metric {metric!r} was not computed (known: {', '.join(sorted(candidate))})")
            continue
        ok = candidate[metric] >= floor
        d.floors[metric] = {"value": candidate[metric], "floor": floor, "passed": ok}
        if not ok:
            d.passed = False
            d.reasons.append(f"{metric} = {candidate[metric]:.4f} is below its floor {floor}")
    if champion_per_user is None:
        d.bootstrap_champion = d.passed and params.allow_bootstrap
        if d.passed and not params.allow_bootstrap:
            d.reasons.append("no champion yet and gate.allow_bootstrap is false: a reviewer must promote it")
        return d
    c = params.champion
    merged = candidate_per_user.merge(champion_per_user, on="user_id", suffixes=("_candidate", "_champion"))
    if len(merged) != len(candidate_per_user):
        raise ValueError("candidate and champion were not evaluated on the same test cases")
    col = c.metric
    if f"{col}_candidate" not in merged:
        raise ValueError(f"gate.champion.metric {col!r} is not a per-user metric")
    boot = paired_bootstrap(
        merged[f"{col}_candidate"].to_numpy(), merged[f"{col}_champion"].to_numpy(),
        metric=col, margin=c.margin, confidence=c.confidence, n=c.n_bootstrap, seed=c.seed,
    )
    d.comparison = boot
    if boot.prob_worse_than_margin >= c.confidence:
        d.passed = False
        d.reasons.append(
            f"worse than champion {champion_version} on {col}: mean difference {boot.mean_difference:+.4f} "
            f"(CI {boot.ci_low:+.4f}..{boot.ci_high:+.4f}); P(worse by more than {c.margin}) = "
            f"{boot.prob_worse_than_margin:.3f} >= {c.confidence}"
        )
    return d
