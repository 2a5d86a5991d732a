"""``recops monitor``: watch one period of production and decide on retraining and rollback.

For a period D, against the **reference window** the champion was trained on (the last
``reference_periods`` accepted periods up to the champion's data cutoff, not reaching back before the
drift episode that led to its training), it computes with Evidently 0.7 (see :mod:`recops.drift`):

* **data drift** over interaction-level and aggregate features (rating, item popularity, user
  activity, sequence length, genre mix, new items, new users);
* **prediction drift**: the champion's recommended items (their popularity and genres) for the users
  of D against those for the users of the reference window;
* the champion's **live performance**: Recall@K / NDCG@K / MRR of its recommendations, made from each
  user's history before D, against what the users did in D - and the same for ``previous_champion``.

It stores with the period, in the lake under ``monitoring/periods/date=D/``, the Evidently HTML reports
and JSON snapshots and ``summary.json`` (drift share, per-feature scores, performance, decision); the
same summary goes to ``reports/monitor/date=D.json`` and everything to an MLflow run ``monitor`` in
the ``monitor.experiment`` experiment.

**Policy** (``monitor`` in params.yaml), a pure function of this period and the stored summaries of
earlier ones (:func:`decide`), so a re-run gives the same answer:

* *retrain* when the trigger columns' drift share >= ``drift.share_threshold`` for
  ``drift.consecutive_periods`` periods in a row, or when the champion's live metric over the last
  ``performance.window_periods`` is ``performance.max_drop`` (relative) below its own first
  ``performance.baseline_periods`` periods as champion, or ``retrain_every_periods`` after the last
  request, or (no champion yet) after ``warmup_periods``. A performance drop waits while a drift
  episode is still developing (drifted, but not yet for ``drift.consecutive_periods``): the drift
  request will cover it, and a retrain before the new data is in the training set is wasted.
  At most one request per
  ``cooldown_periods``, and never twice the same **dedup key** within ``dedup_periods``: drift and a
  performance drop share the key ``degraded:<champion version>``, so one corrective request is made per
  champion; a drift that retraining could not fix (candidate refused) is not asked about again.
* *roll back* when a champion promoted at most ``rollback.recent_periods`` ago does worse than
  ``previous_champion`` on the same cases by more than ``rollback.margin`` (relative) for
  ``rollback.consecutive_periods`` periods in a row. :func:`apply_rollback` (``recops rollback
  --auto``, the ``rollback`` task of recops_daily, and the simulator) carries it out through
  :func:`recops.registry.rollback` and raises an alert (log line + optional callback).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Params
    from recops.recommender import Recommender
    from recops.storage import Storage

log = logging.getLogger(__name__)

REPORT_DIR = Path("reports/monitor")
AREA, DATASET = "monitoring", "periods"
SUMMARY = "summary.json"
MONITOR_WHO = "recops-monitor"

# drift features (computed in recops.drift; named here so params load without pandas)
NUMERIC_FEATURES = ("rating", "item_popularity", "user_activity", "sequence_length")
CATEGORICAL_FEATURES = ("genre", "new_item", "new_user")
PREDICTION_NUMERIC = ("rec_popularity",)
PREDICTION_CATEGORICAL = ("rec_genre",)


# --------------------------------------------------------------------------- params
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriftPolicy(_Frozen):
    """``monitor.drift``: per-feature distance thresholds and when drift asks for retraining."""

    thresholds: dict[str, float] = Field(
        default={"rating": 0.3, "item_popularity": 0.5, "user_activity": 1.0, "sequence_length": 1.0,
                 "genre": 0.2, "new_item": 0.3, "new_user": 0.5},
        description="Data drift: threshold per feature (normed Wasserstein numeric, Jensen-Shannon categorical).",
    )
    prediction_thresholds: dict[str, float] = Field(
        default={"rec_popularity": 0.8, "rec_genre": 0.2},
        description="Prediction drift: threshold per feature of the champion's recommendations.",
    )
    trigger_columns: list[str] = Field(
        default=["item_popularity", "genre", "new_item"],
        description="Features whose drift share can trigger retraining (the others are reported only).",
    )
    share_threshold: float = Field(default=0.3, gt=0, le=1)
    consecutive_periods: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _known(self) -> DriftPolicy:
        data = set(NUMERIC_FEATURES) | set(CATEGORICAL_FEATURES)
        for key, names, known in (("thresholds", self.thresholds, data),
                                  ("prediction_thresholds", self.prediction_thresholds,
                                   set(PREDICTION_NUMERIC) | set(PREDICTION_CATEGORICAL))):
            bad = sorted(set(names) - known)
            if bad:
                raise ValueError(f"{key}: unknown feature(s) {bad}; known: {sorted(known)}")
            if any(v <= 0 for v in names.values()):
                raise ValueError(f"{key}: thresholds must be > 0")
        bad = sorted(set(self.trigger_columns) - set(self.thresholds))
        if bad:
            raise ValueError(f"trigger_columns {bad} have no threshold in monitor.drift.thresholds")
        if not self.trigger_columns:
            raise ValueError("trigger_columns must name at least one feature")
        return self


class PerformancePolicy(_Frozen):
    """``monitor.performance``: the champion's live metric against its own first periods."""

    ks: list[int] = Field(default=[10, 20], min_length=1)
    metric: str = Field(default="ndcg@10", description="Metric the policy watches (recall@K, ndcg@K, mrr).")
    baseline_periods: int = Field(default=3, ge=1)
    window_periods: int = Field(default=3, ge=1)
    max_drop: float | None = Field(default=0.5, gt=0, le=1, description="Relative drop that asks for retraining; null = off.")
    min_cases: int = Field(default=5, ge=1, description="Periods with fewer scored users are not used.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value != "mrr" and not any(value == f"{m}@{k}" for m in ("recall", "ndcg") for k in range(1, 10_001)):
            raise ValueError(f"{value!r}: use recall@K, ndcg@K or mrr")
        return value

    @model_validator(mode="after")
    def _k_listed(self) -> PerformancePolicy:
        if self.metric != "mrr" and int(self.metric.split("@")[1]) not in self.ks:
            raise ValueError(f"metric {self.metric} needs its K in ks {self.ks}")
        return self


class RollbackPolicy(_Frozen):
    """``monitor.rollback``: when a new champion is rolled back without waiting for a person."""

    enabled: bool = True
    recent_periods: int = Field(default=10, ge=1, description="A champion is 'recent' for this many periods.")
    margin: float = Field(default=0.2, ge=0, lt=1, description="Worse by more than this share of the previous "
                          "champion's metric (relative) ...")
    min_difference: float = Field(default=0.02, ge=0, description="... and by at least this much (absolute).")
    consecutive_periods: int = Field(default=2, ge=1)


class MonitorParams(_Frozen):
    """``monitor:`` in params.yaml."""

    experiment: str = Field(default="recops-monitoring", min_length=1)
    reference_periods: int = Field(default=7, ge=1, description="Accepted periods in the reference window.")
    warmup_periods: int = Field(default=7, ge=1, description="Accepted periods needed before the first request.")
    retrain_every_periods: int | None = Field(default=14, ge=1, description="Scheduled refresh; null = off.")
    cooldown_periods: int = Field(default=3, ge=0, description="Periods between two requests, at least.")
    dedup_periods: int = Field(default=28, ge=1, description="A dedup key is not requested again for this long.")
    html_reports: bool = Field(default=True, description="Write the Evidently HTML reports (JSON always).")
    alert_callback: str | None = Field(default=None, description="'module:function' called with each alert.")
    drift: DriftPolicy = DriftPolicy()
    performance: PerformancePolicy = PerformancePolicy()
    rollback: RollbackPolicy = RollbackPolicy()

    @field_validator("alert_callback")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError(f"{value!r}: use 'package.module:function'")
        return value


# --------------------------------------------------------------------------- policy (pure)
def _metric(summary: dict[str, Any], who: str, metric: str, min_cases: int) -> float | None:
    perf = (summary.get("performance") or {}).get(who) or {}
    if perf.get("n_cases", 0) < min_cases or metric not in perf:
        return None
    return float(perf[metric])


def _streak(values: list[bool]) -> int:
    n = 0
    for v in reversed(values):
        if not v:
            break
        n += 1
    return n


def decide(current: dict[str, Any], history: list[dict[str, Any]], policy: MonitorParams) -> dict[str, Any]:
    """Decision for the period summarised in ``current`` given earlier summaries (date order).

    ``current`` needs: ``accepted_periods``, ``champion`` / ``previous_champion`` (version or None),
    ``drift`` (``trigger_share``), ``performance`` (per model); it gets ``decision`` added by the caller.
    """
    accepted = [s for s in history if s.get("status") == "accepted"]
    champ, prev = current.get("champion"), current.get("previous_champion")
    perf_policy, rb = policy.performance, policy.rollback
    metric = perf_policy.metric

    # ---- drift streak and episode
    drifted_now = current["drift"].get("trigger_share", 0.0) >= policy.drift.share_threshold
    flags = [(s.get("drift") or {}).get("trigger_share", 0.0) >= policy.drift.share_threshold for s in accepted]
    drift_streak = _streak([*flags, drifted_now])
    episode_start = ([*accepted, current][-drift_streak]["date"]) if drift_streak else None

    # ---- rollback
    rollback: dict[str, Any] = {"rollback": False}
    as_champion = [s for s in accepted if s.get("champion") == champ]
    periods_as_champion = len(as_champion) + 1
    if rb.enabled and champ is not None and prev is not None and periods_as_champion <= rb.recent_periods:
        def worse(s: dict[str, Any]) -> bool:
            c = _metric(s, "champion", metric, perf_policy.min_cases)
            p = _metric(s, "previous_champion", metric, perf_policy.min_cases)
            return c is not None and p is not None and c < p * (1 - rb.margin) and p - c >= rb.min_difference

        same_pair = [s for s in as_champion if s.get("previous_champion") == prev]
        streak = _streak([worse(s) for s in same_pair] + [worse(current)])
        c_now = _metric(current, "champion", metric, perf_policy.min_cases)
        p_now = _metric(current, "previous_champion", metric, perf_policy.min_cases)
        rollback.update(worse_streak=streak)
        if streak >= rb.consecutive_periods:
            rollback.update(
                rollback=True, to=prev, version=champ,
                rollback_reason=(f"champion v{champ} did worse than previous champion v{prev} on {metric} for {streak} "
                        f"period(s) in a row (now {c_now:.4f} vs {p_now:.4f}; margin {rb.margin:.0%}, at least "
                                 f"{rb.min_difference})"),
            )

    # ---- retrain
    n_accepted = current["accepted_periods"]
    requests = [(i, s) for i, s in enumerate(accepted) if (s.get("decision") or {}).get("retrain")]
    since_last = len(accepted) - requests[-1][0] if requests else None
    scores = {"trigger_share": current["drift"].get("trigger_share"), "drift_streak": drift_streak,
              "accepted_periods": n_accepted, "periods_since_request": since_last,
              "periods_as_champion": periods_as_champion if champ is not None else None}

    def out(retrain: bool, reason: str, kind: str | None = None, key: str | None = None) -> dict[str, Any]:
        return {"retrain": retrain, "reason": reason, "trigger": kind, "dedup_key": key,
                "drift_episode_start": episode_start, "scores": scores, **rollback}

    if current.get("status") != "accepted":
        return out(False, f"period is {current.get('status')}: nothing to monitor")
    if n_accepted < policy.warmup_periods:
        return out(False, f"warming up: {n_accepted} of {policy.warmup_periods} periods accepted")
    if since_last is not None and since_last < policy.cooldown_periods:
        return out(False, f"cooldown: last request {since_last} period(s) ago (< {policy.cooldown_periods})")

    recent_keys = {(s.get("decision") or {}).get("dedup_key") for i, s in requests
                   if len(accepted) - i < policy.dedup_periods}
    candidates: list[tuple[str, str, str]] = []
    if champ is not None and drift_streak >= policy.drift.consecutive_periods:
        candidates.append(("drift", f"degraded:{champ}",
                           f"data drift: {current['drift']['trigger_share']:.0%} of trigger features drifted for "
                           f"{drift_streak} period(s) in a row (>= {policy.drift.share_threshold:.0%}; episode from "
                           f"{episode_start})"))
    drift_developing = 0 < drift_streak < policy.drift.consecutive_periods
    if champ is not None and perf_policy.max_drop is not None and not drift_developing:
        mine = [_metric(s, "champion", metric, perf_policy.min_cases) for s in as_champion]
        mine.append(_metric(current, "champion", metric, perf_policy.min_cases))
        valid = [m for m in mine if m is not None]
        if len(valid) >= perf_policy.baseline_periods + perf_policy.window_periods:
            base = sum(valid[:perf_policy.baseline_periods]) / perf_policy.baseline_periods
            now = sum(valid[-perf_policy.window_periods:]) / perf_policy.window_periods
            scores.update(performance_baseline=base, performance_window=now)
            if base > 0 and now <= base * (1 - perf_policy.max_drop):
                candidates.append(("performance", f"degraded:{champ}",
                                   f"live {metric} {now:.4f} over the last {perf_policy.window_periods} periods is "
                                   f"{1 - now / base:.0%} below the champion's first periods ({base:.4f})"))
    if champ is None:
        candidates.append(("first_model", "first-model",
                           f"first model: warm-up done ({n_accepted} periods accepted) and no champion"))
    every = policy.retrain_every_periods
    age = since_last if since_last is not None else n_accepted
    if every is not None and age >= every:
        candidates.append(("scheduled", f"scheduled:{current['date']}",
                           f"scheduled refresh: {age} periods since the last request (>= {every})"))
    for kind, key, reason in candidates:
        if key in recent_keys:
            continue
        return out(True, reason, kind, key)
    if candidates:
        return out(False, f"already requested: {', '.join(k for _, k, _ in candidates)} (dedup)")
    share = current["drift"].get("trigger_share")
    return out(False, "no drift" + (f": trigger share {share:.0%}" if share is not None else "")
               + (f", {since_last} period(s) since the last request" if since_last is not None else ""))


# --------------------------------------------------------------------------- lake I/O
def _partition(date: dt.date):
    from recops.storage import Partition

    return Partition(AREA, DATASET, date)


def stored_summaries(storage: Storage, before: dt.date | None = None) -> list[dict[str, Any]]:
    """Summaries of earlier monitored periods (date order), read from the lake."""
    out = []
    for d in storage.partition_dates(AREA, DATASET):
        if before is not None and d >= before:
            break
        base = storage.partition_path(_partition(d))
        out.append(json.loads(storage.read_bytes(f"{base}/{SUMMARY}")))
    return out


def stored_summary(storage: Storage, date: dt.date) -> dict[str, Any]:
    p = _partition(date)
    if storage.manifest(p) is None:
        raise FileNotFoundError(f"no monitoring summary for {date.isoformat()} in {storage.uri(p.key)}; "
                                "run `recops monitor --date` first")
    return json.loads(storage.read_bytes(f"{storage.partition_path(p)}/{SUMMARY}"))


def _accepted_events(storage: Storage, until: dt.date) -> tuple[pd.DataFrame, list[dt.date]]:
    import pandas as pd

    from recops.ingest import INTERACTIONS
    from recops.storage import Partition
    from recops.tables import from_parquet_bytes

    frames, dates = [], []
    for d in storage.partition_dates("raw", INTERACTIONS):
        if d > until:
            break
        frame = from_parquet_bytes(storage.read_partition(Partition("raw", INTERACTIONS, d))["part-0.parquet"])
        frames.append(frame[["user_id", "item_id", "rating", "timestamp"]].assign(period=d))
        dates.append(d)
    if not frames:
        return pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp", "period"]), []
    events = pd.concat(frames, ignore_index=True)
    events["user_id"] = events["user_id"].astype(str)
    events["item_id"] = events["item_id"].astype(str)
    return events, dates


def _catalog(storage: Storage, until: dt.date) -> pd.DataFrame:
    from recops.ingest import CATALOG
    from recops.storage import Partition
    from recops.tables import from_parquet_bytes

    dates = [d for d in storage.partition_dates("raw", CATALOG) if d <= until]
    if not dates:
        raise FileNotFoundError(f"no accepted catalog up to {until} in {storage.uri('raw', CATALOG)}")
    return from_parquet_bytes(storage.read_partition(Partition("raw", CATALOG, dates[-1]))["items.parquet"])


# --------------------------------------------------------------------------- champion I/O
class Models:
    """Champion and previous champion of the production model, loaded for monitoring (cached by version)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self._cache: dict[str, Recommender] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="recops-monitor-")

    def versions(self) -> tuple[str | None, str | None]:
        from recops import tracking
        from recops.registry import champion, previous_champion

        client = tracking.client()
        c, p = champion(client, self.params.registry), previous_champion(client, self.params.registry)
        return (str(c.version) if c else None), (str(p.version) if p else None)

    def load(self, version: str) -> Recommender:
        from recops import tracking
        from recops.recommender import Recommender

        if version not in self._cache:
            dst = Path(self._tmp.name) / version
            path = tracking.download_model_file(self.params.registry.production_model, version, dst)
            rec = Recommender.load(path)
            rec.version = version
            self._cache[version] = rec
        return self._cache[version]

    def close(self) -> None:
        self._tmp.cleanup()


def _cutoff(rec: Recommender) -> dt.date | None:
    meta = (rec.metadata or {}).get("feature_meta") or {}
    value = meta.get("logical_date")
    return dt.date.fromisoformat(value) if value else None


# --------------------------------------------------------------------------- monitor
def reference_window(accepted: list[dt.date], date: dt.date, cutoff: dt.date | None, n: int,
                     history: list[dict[str, Any]]) -> list[dt.date]:
    """The last ``n`` accepted periods before ``date`` and up to ``cutoff`` (the champion's data), not
    before the start of the drift episode whose request led to that training data, and never the very
    first accepted period (item popularity is counted over the periods before the window)."""
    end = min(cutoff, date - dt.timedelta(days=1)) if cutoff else date - dt.timedelta(days=1)
    start = None
    for s in history:
        dec = s.get("decision") or {}
        if dec.get("retrain") and dec.get("trigger") == "drift" and dt.date.fromisoformat(s["date"]) <= end:
            start = dt.date.fromisoformat(dec["drift_episode_start"])
    window = [d for d in accepted if d <= end and (start is None or d >= start)][-n:]
    if len(window) > 1 and window[0] == accepted[0]:
        window = window[1:]  # item popularity is measured on the periods before the window: keep one
    return window


def _round(obj: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in obj.items()}


def monitor(params: Params, storage: Storage, date: dt.date | None = None,
            models: Models | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Summary (with decision) and report files for period ``date`` (default: the latest accepted one)."""
    from recops.drift import (
        drift_report,
        first_genres,
        interaction_features,
        live_cases,
        live_performance,
        prediction_features,
    )
    from recops.ingest import INTERACTIONS

    policy = params.monitor
    accepted_all = storage.partition_dates("raw", INTERACTIONS)
    if date is None:
        if not accepted_all:
            raise FileNotFoundError(f"no accepted period in {storage.uri('raw', INTERACTIONS)}; run validate first")
        date = accepted_all[-1]
    history = stored_summaries(storage, before=date)
    own = models is None
    models = models or Models(params)
    try:
        champ_v, prev_v = models.versions()
        summary: dict[str, Any] = {"date": date.isoformat(), "champion": champ_v, "previous_champion": prev_v,
                                   "policy": policy.model_dump(mode="json")}
        files: dict[str, bytes] = {}
        events, accepted = _accepted_events(storage, date)
        summary["accepted_periods"] = len(accepted)
        if date not in accepted:
            status = "quarantined" if date in storage.partition_dates("quarantine", INTERACTIONS) else "not accepted"
            summary.update(status=status, drift={}, performance={}, rows=0)
            summary["decision"] = decide(summary, history, policy)
            return summary, files
        summary["status"] = "accepted"
        champ = models.load(champ_v) if champ_v else None
        cutoff = _cutoff(champ) if champ else None
        ref_dates = reference_window(accepted, date, cutoff, policy.reference_periods, history)
        summary["reference"] = {"periods": [d.isoformat() for d in ref_dates], "champion_cutoff":
                                cutoff.isoformat() if cutoff else None}
        period = events[events["period"] == date]
        pop_until = max(ref_dates) if ref_dates else date - dt.timedelta(days=1)
        popularity = events.loc[events["period"] <= pop_until, "item_id"].value_counts()
        genres = first_genres(_catalog(storage, date))
        summary["rows"] = len(period)
        summary["users"] = int(period["user_id"].nunique())
        summary["items"] = int(period["item_id"].nunique())
        earlier = events[events["period"] < date]
        summary["new_item_share"] = round(float((~period["item_id"].isin(earlier["item_id"])).mean()), 6)
        summary["new_user_share"] = round(float((~period["user_id"].isin(earlier["user_id"])).mean()), 6)

        drift: dict[str, Any] = {}
        if ref_dates:
            feats = interaction_features(events, [*ref_dates, date], genres)
            ref = feats[feats["period"].isin(ref_dates)]
            cur = feats[feats["period"] == date]
            data = drift_report(ref, cur, policy.drift.thresholds, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
            drift = {"data": data.as_dict(), "share": round(data.share(), 6),
                     "trigger_share": round(data.share(policy.drift.trigger_columns), 6)}
            files.update(_snapshot_files("data_drift", data.snapshot, policy.html_reports))

        # ---- live performance and prediction drift
        positives = events[events["rating"] >= params.features.implicit_threshold]
        perf: dict[str, Any] = {}
        cases = live_cases(positives[positives["period"] < date], positives[positives["period"] == date])
        current_recs: list[list[str]] = []
        for who, version in (("champion", champ_v), ("previous_champion", prev_v)):
            if version is None:
                continue
            metrics, recs = live_performance(models.load(version), *cases, policy.performance.ks)
            perf[who] = {"version": version, **_round(metrics)}
            if who == "champion":
                current_recs = recs
        if champ is not None and ref_dates and current_recs:
            ref_recs: list[list[str]] = []
            for d in ref_dates:
                users, hists, _ = live_cases(positives[positives["period"] < d], positives[positives["period"] == d])
                if users:
                    ref_recs += [r.item_ids for r in champ.recommend_with_histories(
                        users, hists, min(max(policy.performance.ks), champ.n_items))]
            if ref_recs:
                pred = drift_report(prediction_features(ref_recs, popularity, genres),
                                    prediction_features(current_recs, popularity, genres),
                                    policy.drift.prediction_thresholds, PREDICTION_NUMERIC, PREDICTION_CATEGORICAL)
                drift["prediction"] = pred.as_dict()
                files.update(_snapshot_files("prediction_drift", pred.snapshot, policy.html_reports))
        summary["drift"] = drift
        summary["performance"] = perf
        summary["decision"] = decide(summary, history, policy)
        return summary, files
    finally:
        if own:
            models.close()


def _snapshot_files(name: str, snapshot: Any, html: bool) -> dict[str, bytes]:
    out = {f"{name}.json": snapshot.json().encode()}
    if html:
        out[f"{name}.html"] = snapshot.get_html_str(as_iframe=False).encode()
    return out


def store(storage: Storage, summary: dict[str, Any], files: dict[str, bytes]) -> str:
    """Commit the period's monitoring partition (summary + reports) to the lake; returns its URI."""
    from recops.storage import canonical_json

    p = _partition(dt.date.fromisoformat(summary["date"]))
    storage.write_partition(p, {**files, SUMMARY: canonical_json(summary)})
    return storage.uri(p.key)


def log_to_mlflow(params: Params, summary: dict[str, Any], files: dict[str, bytes]) -> str:
    """One MLflow run ``monitor`` per period in the monitoring experiment: metrics, decision, reports."""
    import mlflow

    from recops import tracking

    dec = summary["decision"]
    tags = {"recops.date": summary["date"], "recops.champion": str(summary.get("champion")),
            "recops.retrain": str(dec["retrain"]).lower(), "recops.rollback": str(dec.get("rollback")).lower()}
    with tracking.stage_run("monitor", params.monitor.experiment, tags) as run:
        drift = summary.get("drift") or {}
        metrics = {"rows": summary.get("rows", 0), "new_item_share": summary.get("new_item_share", 0.0),
                   "new_user_share": summary.get("new_user_share", 0.0)}
        if "share" in drift:
            metrics.update(drift_share=drift["share"], trigger_drift_share=drift["trigger_share"])
            metrics.update({f"drift_{c}": v["score"] for c, v in drift["data"]["columns"].items()})
        if "prediction" in drift:
            metrics.update({f"prediction_drift_{c}": v["score"] for c, v in drift["prediction"]["columns"].items()})
        for who, values in (summary.get("performance") or {}).items():
            metrics.update({f"{who}_{k}": v for k, v in values.items() if k != "version"})
        tracking.log_metrics(metrics)
        mlflow.log_dict(summary, SUMMARY)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            if files:
                mlflow.log_artifacts(tmp, "reports")
        return run.info.run_id


def report_path(date: dt.date | str, root: Path = REPORT_DIR) -> Path:
    d = date.isoformat() if isinstance(date, dt.date) else str(date)
    return root / f"date={d}.json"


def write_report(report: dict[str, Any], root: Path = REPORT_DIR) -> Path:
    """``reports/monitor/date=D.json``, written atomically (temp file + rename)."""
    from recops.storage import atomic_write_file, canonical_json

    return atomic_write_file(report_path(report["date"], root), canonical_json(report))


def run_monitor(params: Params, storage: Storage, date: dt.date | None = None,
                models: Models | None = None) -> dict[str, Any]:
    """The whole stage: compute, store in the lake, log to MLflow, write the local report."""
    summary, files = monitor(params, storage, date, models)
    summary["lake"] = store(storage, summary, files)
    summary["mlflow_run_id"] = log_to_mlflow(params, summary, files)
    write_report(summary)
    return summary


# --------------------------------------------------------------------------- rollback + alerts
def _callback(path: str | None) -> Callable[[dict[str, Any]], None] | None:
    if path is None:
        return None
    module, name = path.split(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"monitor.alert_callback {path!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise ValueError(f"monitor.alert_callback {path!r} is not callable")
    return fn


def alert(params: Params, event: dict[str, Any]) -> None:
    """Raise an alert: a WARNING log line, then the configured callback (its failure is logged, not raised:
    the action the alert reports has already happened)."""
    log.warning("ALERT %s: %s", event.get("kind"), event.get("message"))
    fn = _callback(params.monitor.alert_callback)
    if fn is not None:
        try:
            fn(event)
        except Exception:
            log.exception("alert callback %s failed", params.monitor.alert_callback)


def apply_rollback(params: Params, storage: Storage, date: dt.date) -> dict[str, Any]:
    """Carry out the rollback the stored decision for ``date`` asks for (no-op otherwise)."""
    from recops import tracking
    from recops.registry import AuditLog, champion, rollback

    summary = stored_summary(storage, date)
    dec = summary["decision"]
    if not dec.get("rollback"):
        return {"rolled_back": False, "date": date.isoformat(), "reason": "the monitor did not ask for a rollback"}
    client = tracking.client()
    current = champion(client, params.registry)
    if current is None or str(current.version) != dec["version"]:
        return {"rolled_back": False, "date": date.isoformat(),
                "reason": f"champion is now v{current.version if current else None}, not v{dec['version']}: "
                          "already handled"}
    mv = rollback(client, params.registry, AuditLog(storage), to=dec["to"], who=MONITOR_WHO,
                  reason=f"{date.isoformat()}: {dec['rollback_reason']}")
    event = {"kind": "rollback", "date": date.isoformat(), "model": params.registry.production_model,
             "from": dec["version"], "to": str(mv.version), "message": dec["rollback_reason"]}
    alert(params, event)
    return {"rolled_back": True, **event}
