"""The monitor's retrain / rollback policy: a pure function of this period and the earlier summaries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from pydantic import ValidationError

from recops.monitor import (
    DriftPolicy,
    MonitorParams,
    PerformancePolicy,
    RollbackPolicy,
    decide,
    reference_window,
)

POLICY = MonitorParams(
    warmup_periods=3, retrain_every_periods=None, cooldown_periods=2, dedup_periods=10,
    drift=DriftPolicy(share_threshold=0.5, consecutive_periods=2),
    performance=PerformancePolicy(baseline_periods=2, window_periods=2, max_drop=0.5, min_cases=1),
    rollback=RollbackPolicy(recent_periods=6, margin=0.1, min_difference=0.005, consecutive_periods=2),
)
START = dt.date(2024, 1, 1)


def period(i: int, *, champion: str | None = "1", previous: str | None = None, share: float = 0.0,
           champ_ndcg: float | None = 0.2, prev_ndcg: float | None = None) -> dict:
    perf = {}
    if champion is not None and champ_ndcg is not None:
        perf["champion"] = {"version": champion, "ndcg@10": champ_ndcg, "n_cases": 20}
    if previous is not None and prev_ndcg is not None:
        perf["previous_champion"] = {"version": previous, "ndcg@10": prev_ndcg, "n_cases": 20}
    return {"date": (START + dt.timedelta(days=i)).isoformat(), "status": "accepted", "accepted_periods": i + 1,
            "champion": champion, "previous_champion": previous, "drift": {"trigger_share": share},
            "performance": perf}


def run(periods: list[dict], policy: MonitorParams = POLICY) -> list[dict]:
    """Decide period after period, as the monitor does, feeding each decision back into the history."""
    history: list[dict] = []
    for p in periods:
        p["decision"] = decide(p, history, policy)
        history.append(p)
    return [p["decision"] for p in history]


def test_warm_up_then_first_model_once():
    decisions = run([period(i, champion=None) for i in range(8)])
    assert [d["retrain"] for d in decisions] == [False, False, True, False, False, False, False, False]
    assert decisions[2]["trigger"] == "first_model"
    assert "warming up" in decisions[0]["reason"]
    assert "cooldown" in decisions[3]["reason"]
    assert "dedup" in decisions[5]["reason"]


def test_drift_needs_consecutive_periods_and_fires_once_per_champion():
    shares = [0, 0, 0, 0.7, 0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    decisions = run([period(i, share=s) for i, s in enumerate(shares)])
    fired = [i for i, d in enumerate(decisions) if d["retrain"]]
    assert fired == [6], decisions  # the lone drifted period 3 does not count; 5-6 do; never again for v1
    assert decisions[6]["trigger"] == "drift" and decisions[6]["dedup_key"] == "degraded:1"
    assert decisions[6]["drift_episode_start"] == period(5)["date"]
    assert all("dedup" in d["reason"] or "cooldown" in d["reason"] for d in decisions[7:])


def test_drift_on_a_new_champion_is_a_new_key():
    periods = [period(i, share=0.7 if i >= 3 else 0.0) for i in range(6)]
    periods += [period(i, champion="2", previous="1", share=0.7, prev_ndcg=0.2) for i in range(6, 12)]
    decisions = run(periods)
    assert [(i, d["dedup_key"]) for i, d in enumerate(decisions) if d["retrain"]] == [(4, "degraded:1"), (6, "degraded:2")]


def test_cooldown_blocks_any_request():
    policy = POLICY.model_copy(update={"retrain_every_periods": 1, "cooldown_periods": 3})
    decisions = run([period(i) for i in range(10)], policy)
    fired = [i for i, d in enumerate(decisions) if d["retrain"]]
    assert fired == [2, 5, 8], decisions  # right after warm-up, then every 3 (the cooldown)
    assert decisions[3]["reason"].startswith("cooldown")


def test_performance_drop_against_the_champions_first_periods():
    ndcg = [0.20, 0.22, 0.21, 0.19, 0.08, 0.06, 0.05]
    decisions = run([period(i, champ_ndcg=v) for i, v in enumerate(ndcg)])
    fired = [(i, d["trigger"]) for i, d in enumerate(decisions) if d["retrain"]]
    assert fired == [(5, "performance")]
    assert decisions[5]["scores"]["performance_baseline"] == pytest.approx(0.21)
    assert decisions[5]["scores"]["performance_window"] == pytest.approx(0.07)


def test_performance_drop_waits_for_a_developing_drift_episode():
    ndcg = [0.20, 0.22, 0.21, 0.19, 0.08, 0.06, 0.05, 0.05]
    shares = [0, 0, 0, 0, 0.7, 0.7, 0.7, 0.7]
    decisions = run([period(i, champ_ndcg=v, share=sh) for i, (v, sh) in enumerate(zip(ndcg, shares, strict=True))])
    fired = [(i, d["trigger"]) for i, d in enumerate(decisions) if d["retrain"]]
    assert fired == [(5, "drift")]  # at 4-5 the drop is there, but the drift episode decides


def test_rollback_exactly_after_consecutive_worse_periods():
    base = [period(i, champion="1", champ_ndcg=0.2) for i in range(3)]
    new = [period(3, champion="2", previous="1", champ_ndcg=0.05, prev_ndcg=0.2),   # worse
           period(4, champion="2", previous="1", champ_ndcg=0.25, prev_ndcg=0.2),   # better: streak reset
           period(5, champion="2", previous="1", champ_ndcg=0.10, prev_ndcg=0.2),   # worse (1)
           period(6, champion="2", previous="1", champ_ndcg=0.185, prev_ndcg=0.2),  # within the 10% margin
           period(7, champion="2", previous="1", champ_ndcg=0.10, prev_ndcg=0.2),   # worse (1)
           period(8, champion="2", previous="1", champ_ndcg=0.10, prev_ndcg=0.2)]   # worse (2): roll back
    decisions = run(base + new)
    assert [d["rollback"] for d in decisions] == [False] * 8 + [True]
    assert decisions[8]["to"] == "1" and decisions[8]["version"] == "2"
    assert "2 period(s) in a row" in decisions[8]["rollback_reason"]
    assert decisions[8]["reason"] != decisions[8]["rollback_reason"]  # the retrain reason is its own


def test_no_rollback_once_the_champion_is_no_longer_recent():
    periods = [period(i, champion="2", previous="1", champ_ndcg=0.2, prev_ndcg=0.2) for i in range(6)]
    periods += [period(i, champion="2", previous="1", champ_ndcg=0.0, prev_ndcg=0.2) for i in range(6, 9)]
    decisions = run(periods)
    assert not any(d["rollback"] for d in decisions)  # champion for > recent_periods=6 periods


def test_no_rollback_on_differences_below_the_absolute_minimum():
    periods = [period(i, champion="2", previous="1", champ_ndcg=0.001, prev_ndcg=0.004) for i in range(4)]
    assert not any(d["rollback"] for d in run(periods))  # 75% worse, but by 0.003 < min_difference


def test_rollback_disabled():
    policy = POLICY.model_copy(update={"rollback": RollbackPolicy(enabled=False)})
    periods = [period(i, champion="2", previous="1", champ_ndcg=0.0, prev_ndcg=0.3) for i in range(4)]
    assert not any(d["rollback"] for d in run(periods, policy))


def test_quarantined_period_decides_nothing():
    p = {**period(5), "status": "quarantined", "drift": {}}
    d = decide(p, [period(i) for i in range(5)], POLICY)
    assert not d["retrain"] and not d["rollback"] and "quarantined" in d["reason"]


def test_reference_window_is_the_champions_data_and_starts_at_the_drift_episode():
    days = [START + dt.timedelta(days=i) for i in range(20)]
    assert reference_window(days, days[15], days[9], 4, []) == days[6:10]
    assert reference_window(days, days[15], None, 4, []) == days[11:15]
    history = [{"date": days[8].isoformat(), "decision": {"retrain": True, "trigger": "drift",
                                                           "drift_episode_start": days[7].isoformat()}}]
    assert reference_window(days, days[15], days[9], 4, history) == days[7:10]
    assert reference_window(days, days[15], days[3], 7, []) == days[1:4]  # never the first period


@pytest.mark.parametrize(("section", "bad", "needle"), [
    ("drift", {"thresholds": {"colour": 0.1}}, "unknown feature(s) ['colour']"),
    ("drift", {"trigger_columns": ["rating", "nope"]}, "trigger_columns ['nope']"),
    ("performance", {"metric": "ndcg@50"}, "needs its K in ks"),
    ("performance", {"metric": "auc"}, "use recall@K, ndcg@K or mrr"),
])
def test_bad_policy_settings_name_the_problem(section, bad, needle):
    with pytest.raises(ValidationError, match=re.escape(needle)):
        MonitorParams.model_validate({section: bad})


def test_alert_callback_must_be_module_colon_function():
    with pytest.raises(ValidationError, match="package.module:function"):
        MonitorParams(alert_callback="not-a-path")
