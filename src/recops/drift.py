"""Drift and live performance of the champion: the pure core of ``recops monitor``.

Everything here takes data frames and a :class:`~recops.recommender.Recommender` and returns results;
storage, MLflow and the policy live in :mod:`recops.monitor`.

**Interaction features** (one row per accepted interaction; the aggregate ones are joined onto it, so
each is weighted by the interactions it explains):

* ``rating``: the explicit rating.
* ``item_popularity``: log(1 + interactions the item had before the reference window) - the item
  popularity distribution, reference and current rows both measured out-of-sample on one table.
* ``user_activity``: log(1 + the user's interactions in that period).
* ``sequence_length``: log(1 + the user's accepted interactions before that period).
* ``genre``: the item's first genre in the catalog.
* ``new_item`` / ``new_user``: first appearance of the id in the accepted log is in that period.

**Prediction features** (one row per recommended slot of the champion's top-K): ``rec_popularity``
(log(1 + training popularity) of the recommended item) and ``rec_genre``.

Drift is measured with Evidently 0.7 ``ValueDrift`` metrics: a distance per column with a per-column
threshold (normed Wasserstein for numeric columns, Jensen-Shannon for categorical ones). Distances,
unlike p-values, do not flag every small shift once samples are large. The *drift share* is the share
of the policy's trigger columns that drifted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from recops.recommender import Recommender

from recops.monitor import (  # noqa: F401  (re-exported: the feature names)
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    PREDICTION_CATEGORICAL,
    PREDICTION_NUMERIC,
)

NO_GENRE = "(no genre)"


def first_genres(catalog: pd.DataFrame) -> dict[str, str]:
    """item id -> first genre (``NO_GENRE`` when the catalog lists none)."""
    genres = catalog["genres"].fillna("").astype(str).str.split("|").str[0].str.strip()
    genres = genres.where(genres.ne("") & genres.ne("(no genres listed)"), NO_GENRE)
    return dict(zip(catalog["item_id"].astype(str), genres, strict=True))


def interaction_features(events: pd.DataFrame, periods: Sequence[Any], genres: Mapping[str, str],
                         popularity_before: Any | None = None) -> pd.DataFrame:
    """Per-interaction drift features of the rows of ``periods`` (``events``: columns user_id, item_id,
    rating, period, holding every accepted period up to the latest of ``periods``; first appearances and
    prior activity are computed from it). Item popularity is counted over the periods before
    ``popularity_before`` (default: the first of ``periods``), one table for every row, so that the
    reference rows are as out-of-sample as the current ones. The ``period`` column is kept."""
    missing = {"user_id", "item_id", "rating", "period"} - set(events.columns)
    if missing:
        raise ValueError(f"events lack column(s) {sorted(missing)}")
    events = events.assign(user_id=events["user_id"].astype(str), item_id=events["item_id"].astype(str))
    per_user_period = events[["user_id", "period"]].value_counts().rename("n").reset_index()
    per_user_period = per_user_period.sort_values(["user_id", "period"], kind="stable")
    per_user_period["before"] = per_user_period.groupby("user_id")["n"].cumsum() - per_user_period["n"]
    first_user = events.groupby("user_id")["period"].min()
    first_item = events.groupby("item_id")["period"].min()
    anchor = min(periods) if popularity_before is None else popularity_before
    pop = events.loc[events["period"] < anchor, "item_id"].value_counts()
    rows = events[events["period"].isin(list(periods))]
    keyed = rows[["user_id", "period"]].merge(per_user_period, on=["user_id", "period"], how="left",
                                               validate="many_to_one")
    item_pop = rows["item_id"].map(pop).fillna(0.0).to_numpy(dtype="float64")
    period = rows["period"].to_numpy()
    return pd.DataFrame({
        "period": period,
        "rating": rows["rating"].astype("float64").to_numpy(),
        "item_popularity": np.log1p(item_pop),
        "user_activity": np.log1p(keyed["n"].to_numpy(dtype="float64")),
        "sequence_length": np.log1p(keyed["before"].to_numpy(dtype="float64")),
        "genre": rows["item_id"].map(genres).fillna(NO_GENRE).to_numpy(),
        "new_item": np.where(rows["item_id"].map(first_item).to_numpy() == period, "yes", "no"),
        "new_user": np.where(rows["user_id"].map(first_user).to_numpy() == period, "yes", "no"),
    })


def prediction_features(recommendations: Sequence[Sequence[str]], popularity: pd.Series,
                        genres: Mapping[str, str]) -> pd.DataFrame:
    """One row per recommended item: its training popularity and genre."""
    items = pd.Series([str(i) for rec in recommendations for i in rec], dtype="object")
    pop = popularity.copy()
    pop.index = pop.index.astype(str)
    return pd.DataFrame({
        "rec_popularity": np.log1p(items.map(pop).fillna(0.0).to_numpy(dtype="float64")),
        "rec_genre": items.map(genres).fillna(NO_GENRE).to_numpy(),
    })


# --------------------------------------------------------------------------- Evidently
@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return bool(self.score >= self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "score": round(self.score, 6), "threshold": self.threshold,
                "drifted": self.drifted}


@dataclass
class DriftResult:
    """Per-column drift of one Evidently report, plus the snapshot to save (HTML / JSON)."""

    columns: dict[str, ColumnDrift]
    reference_rows: int
    current_rows: int
    snapshot: Any = field(repr=False, default=None)

    def share(self, columns: Sequence[str] | None = None) -> float:
        """Share of ``columns`` (default: all) that drifted."""
        names = list(columns) if columns is not None else list(self.columns)
        names = [c for c in names if c in self.columns]
        return float(np.mean([self.columns[c].drifted for c in names])) if names else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"reference_rows": self.reference_rows, "current_rows": self.current_rows,
                "share": round(self.share(), 6), "columns": {c: d.as_dict() for c, d in self.columns.items()}}


NUMERIC_METHOD = "wasserstein"
CATEGORICAL_METHOD = "jensenshannon"


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, thresholds: Mapping[str, float],
                 numeric: Sequence[str], categorical: Sequence[str]) -> DriftResult:
    """Evidently ``ValueDrift`` for every column of ``thresholds`` between two frames."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    if reference.empty or current.empty:
        raise ValueError(f"drift needs rows on both sides (reference {len(reference)}, current {len(current)})")
    unknown = set(thresholds) - set(numeric) - set(categorical)
    if unknown:
        raise ValueError(f"no drift feature named {sorted(unknown)}; known: {sorted([*numeric, *categorical])}")
    num = [c for c in numeric if c in thresholds]
    cat = [c for c in categorical if c in thresholds]
    methods = {**{c: NUMERIC_METHOD for c in num}, **{c: CATEGORICAL_METHOD for c in cat}}
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report([ValueDrift(column=c, method=methods[c], threshold=float(thresholds[c])) for c in methods])
    cols = [*num, *cat]
    snapshot = report.run(
        Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=definition),
    )
    scores: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift(column="):
            scores[name[len("ValueDrift(column="):].split(",")[0]] = float(metric["value"])
    missing = set(methods) - set(scores)
    if missing:
        raise RuntimeError(f"Evidently returned no drift value for {sorted(missing)}")
    return DriftResult(
        columns={c: ColumnDrift(c, methods[c], scores[c], float(thresholds[c])) for c in methods},
        reference_rows=len(reference), current_rows=len(current), snapshot=snapshot,
    )


# --------------------------------------------------------------------------- live performance
def live_cases(history: pd.DataFrame, period: pd.DataFrame) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(user ids, chronological histories, targets) for the users active in ``period``.

    ``history``: positive interactions before the period; ``period``: the period's positives. Targets
    are the period's items the user had not interacted with before (repeats cannot be recommended).
    """
    hist = history.sort_values("timestamp", kind="stable")
    by_user = hist.groupby(hist["user_id"].astype(str))["item_id"].agg(lambda s: [str(x) for x in s])
    users, histories, targets = [], [], []
    for user, items in period.groupby(period["user_id"].astype(str))["item_id"]:
        past = by_user.get(user, [])
        seen = set(past)
        target = sorted({str(i) for i in items} - seen)
        if target:
            users.append(str(user))
            histories.append(past)
            targets.append(target)
    return users, histories, targets


def live_performance(recommender: Recommender, users: Sequence[str], histories: Sequence[Sequence[str]],
                     targets: Sequence[Sequence[str]], ks: Sequence[int]) -> tuple[dict[str, float], list[list[str]]]:
    """Recall@K / NDCG@K / MRR of ``recommender`` against what the users did.

    Returns (metrics, the top-max(ks) item ids per user). Targets unknown to the model count as misses.
    ``n_cases``: users scored; ``fallback_share``: share served by the popularity fallback.
    """
    from recops.metrics import aggregate, ranking_metrics

    if not users:
        return {"n_cases": 0.0}, []
    k_max = min(max(ks), recommender.n_items)
    recs = recommender.recommend_with_histories(users, histories, k_max)
    index = {item: i for i, item in enumerate(recommender.item_ids)}
    top = np.full((len(recs), k_max), -1, dtype=np.int64)
    for row, rec in enumerate(recs):
        top[row, :len(rec.item_ids)] = [index[i] for i in rec.item_ids]
    target_idx = [[index.get(i, -2 - j) for j, i in enumerate(t)] for t in targets]
    metrics = aggregate(ranking_metrics(top, target_idx, [k for k in ks if k <= k_max]))
    metrics["n_cases"] = float(len(users))
    metrics["fallback_share"] = float(np.mean([r.fallback for r in recs]))
    return metrics, [r.item_ids for r in recs]
