"""``recops features``: rebuild the training set from every accepted period.

Pure core (:func:`build_features`) plus thin I/O (:func:`run_features`). Outputs are
Parquet files in one directory that DVC versions as a whole:

- ``interactions.parquet`` user_idx, item_idx, timestamp, rating, split (train/val/test)
- ``users.parquet`` / ``items.parquet`` id maps (+ item features: year, genres, train count)
- ``sequences.parquet`` chronological train items per user
- ``meta.json`` sizes, split cut-offs, genre vocabulary, logical date

Id maps persist in the lake (``state/id_maps``) and only grow: an id keeps its index
forever, new users and items are appended in order of first appearance.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.config import FeatureParams
from recops.ingest import CATALOG, INTERACTIONS
from recops.storage import Partition, Storage, canonical_json
from recops.tables import from_parquet_bytes, to_parquet_bytes

log = logging.getLogger(__name__)

YEAR_RE = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
ID_MAP_USERS = "state/id_maps/users.parquet"
ID_MAP_ITEMS = "state/id_maps/items.parquet"


@dataclass(frozen=True)
class FeatureSet:
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    sequences: pd.DataFrame
    meta: dict[str, Any]
    summary: dict[str, Any]


# --------------------------------------------------------------------------- pure pieces
def parse_year(title: str) -> int:
    """Release year from a MovieLens-style title 'Heat (1995)'; 0 when absent."""
    m = YEAR_RE.search(title or "")
    return int(m.group(1)) if m else 0


def split_genres(genres: str) -> list[str]:
    return [g for g in (genres or "").split("|") if g and g != "(no genres listed)"]


def kcore(df: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Iteratively drop users and items with too few interactions until stable."""
    while True:
        uc = df["user_id"].map(df["user_id"].value_counts())
        ic = df["item_id"].map(df["item_id"].value_counts())
        keep = (uc >= min_user) & (ic >= min_item)
        if keep.all():
            return df
        df = df[keep]


def extend_id_map(previous: pd.DataFrame | None, events: pd.DataFrame, id_col: str, idx_col: str) -> pd.DataFrame:
    """Append ids unseen in ``previous`` in order of first appearance (then id).

    Existing ids keep their index; the result is deterministic for a given input.
    """
    prev = previous if previous is not None else pd.DataFrame({id_col: pd.Series(dtype=str), idx_col: pd.Series(dtype="int64")})
    first_seen = events.groupby(id_col, sort=False)["timestamp"].min().reset_index()
    new = first_seen[~first_seen[id_col].isin(prev[id_col])].sort_values(["timestamp", id_col], kind="stable")
    start = int(prev[idx_col].max()) + 1 if len(prev) else 0
    added = pd.DataFrame({id_col: new[id_col].astype(str).to_numpy(), idx_col: np.arange(start, start + len(new), dtype="int64")})
    return pd.concat([prev[[id_col, idx_col]], added], ignore_index=True)


def global_time_cuts(timestamps: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Timestamps where validation and test begin (quantiles of the event times)."""
    ts = np.sort(np.asarray(timestamps))
    n = len(ts)
    test_cut = int(ts[min(n - 1, int(np.floor(n * (1 - test_fraction))))])
    val_cut = int(ts[min(n - 1, int(np.floor(n * (1 - test_fraction - val_fraction))))])
    return val_cut, test_cut


def assign_split(df: pd.DataFrame, params: FeatureParams) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Label rows train/val/test without leaking the future into training.

    ``global_time``: one cut-off for everyone; training holds only events strictly
    before validation starts, validation strictly before test starts.
    ``leave_last_out``: each user's last event is test and the one before is
    validation (users with at least three events), the rest is train.
    """
    s = params.split
    df = df.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    if s.method == "global_time":
        val_cut, test_cut = global_time_cuts(df["timestamp"].to_numpy(), s.val_fraction, s.test_fraction)
        ts = df["timestamp"].to_numpy()
        split = np.where(ts >= test_cut, "test", np.where(ts >= val_cut, "val", "train"))
        return df.assign(split=split), {"method": s.method, "val_start": val_cut, "test_start": test_cut}
    rank_from_end = df.groupby("user_id").cumcount(ascending=False).to_numpy()
    n_user = df["user_id"].map(df["user_id"].value_counts()).to_numpy()
    split = np.where((rank_from_end == 0) & (n_user >= 3), "test", np.where((rank_from_end == 1) & (n_user >= 3), "val", "train"))
    return df.assign(split=split), {"method": s.method}


def item_table(item_map: pd.DataFrame, catalog: pd.DataFrame, train: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    items = item_map.merge(catalog[["item_id", "title", "genres"]], on="item_id", how="left")
    items["title"] = items["title"].fillna("")
    items["year"] = items["title"].map(parse_year).astype("int32")
    items["genres"] = items["genres"].fillna("").map(split_genres)
    counts = train["item_idx"].value_counts()
    items["train_count"] = items["item_idx"].map(counts).fillna(0).astype("int64")
    vocab = sorted({g for gs in items["genres"] for g in gs})
    return items.sort_values("item_idx").reset_index(drop=True), vocab


def build_features(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    params: FeatureParams,
    previous_users: pd.DataFrame | None = None,
    previous_items: pd.DataFrame | None = None,
    logical_date: dt.date | None = None,
    period_start: int | None = None,
) -> FeatureSet:
    """All accepted events up to the logical date -> the training set.

    ``period_start`` (epoch seconds of the latest period) is only used to count what
    is new this period for the summary.
    """
    positives = events[events["rating"] >= params.implicit_threshold][["user_id", "item_id", "rating", "timestamp"]]
    positives = positives.drop_duplicates(["user_id", "item_id", "timestamp"])
    if positives.empty:
        raise ValueError(f"no interaction has rating >= {params.implicit_threshold}: nothing to build features from")
    labelled, split_info = assign_split(positives, params)
    core_basis = labelled[labelled["split"] == "train"] if params.split.method == "global_time" else labelled
    core = kcore(core_basis, params.kcore.user, params.kcore.item)
    if core.empty:
        raise ValueError(
            f"k-core filtering (user>={params.kcore.user}, item>={params.kcore.item}) left no interactions; "
            "lower features.kcore or accept more periods"
        )
    items = extend_id_map(previous_items, core, "item_id", "item_idx")
    if params.split.method == "global_time":
        # Held-out rows keep every user (people new in the window are evaluated too, from
        # their own earlier events) but only items the model could have learned.
        held_out = labelled[(labelled["split"] != "train") & labelled["item_id"].isin(items["item_id"])]
        kept = pd.concat([core, held_out])
    else:
        kept = core
    users = extend_id_map(previous_users, kept, "user_id", "user_idx")
    kept = kept.merge(users, on="user_id").merge(items, on="item_id")
    inter = (
        kept[["user_idx", "item_idx", "timestamp", "rating", "split"]]
        .astype({"rating": "float32"})
        .sort_values(["timestamp", "user_idx", "item_idx"], kind="stable")
        .reset_index(drop=True)
    )
    train = inter[inter["split"] == "train"]
    item_feats, genres = item_table(items, catalog, train)
    seq = train.groupby("user_idx", sort=True).agg(items=("item_idx", list), timestamps=("timestamp", list)).reset_index()
    counts = inter["split"].value_counts()
    new_items = new_users = 0
    if period_start is not None:
        # first appearance in the accepted log itself, before any filtering
        first_item = events.groupby("item_id")["timestamp"].min()
        first_user = events.groupby("user_id")["timestamp"].min()
        new_items, new_users = int((first_item >= period_start).sum()), int((first_user >= period_start).sum())
    meta = {
        "logical_date": logical_date.isoformat() if logical_date else None,
        "n_users": len(users),
        "n_items": len(items),
        "genres": genres,
        "split": split_info,
        "implicit_threshold": params.implicit_threshold,
    }
    summary = {
        "logical_date": meta["logical_date"],
        "rows": len(inter),
        "train_rows": int(counts.get("train", 0)),
        "val_rows": int(counts.get("val", 0)),
        "test_rows": int(counts.get("test", 0)),
        "users": int(inter["user_idx"].nunique()),
        "items": int(inter["item_idx"].nunique()),
        "id_map_users": len(users),
        "id_map_items": len(items),
        "new_users_this_period": new_users,
        "new_items_this_period": new_items,
        "new_ids_in_map": {"users": len(users) - (0 if previous_users is None else len(previous_users)),
                           "items": len(items) - (0 if previous_items is None else len(previous_items))},
    }
    return FeatureSet(inter, users.sort_values("user_idx").reset_index(drop=True), item_feats, seq, meta, summary)


# --------------------------------------------------------------------------- I/O
def load_accepted(storage: Storage, until: dt.date | None) -> tuple[pd.DataFrame, pd.DataFrame, list[dt.date]]:
    dates = [d for d in storage.partition_dates("raw", INTERACTIONS) if until is None or d <= until]
    if not dates:
        raise FileNotFoundError(
            f"no accepted period{'' if until is None else f' up to {until}'} in {storage.uri('raw', INTERACTIONS)}; "
            "run `recops ingest` and `recops validate` first"
        )
    frames = [
        from_parquet_bytes(storage.read_partition(Partition("raw", INTERACTIONS, d))["part-0.parquet"]) for d in dates
    ]
    catalog_dates = [d for d in storage.partition_dates("raw", CATALOG) if d <= dates[-1]]
    if not catalog_dates:
        raise FileNotFoundError(f"no accepted catalog in {storage.uri('raw', CATALOG)}")
    catalog = from_parquet_bytes(storage.read_partition(Partition("raw", CATALOG, catalog_dates[-1]))["items.parquet"])
    return pd.concat(frames, ignore_index=True), catalog, dates


def _read_map(storage: Storage, key: str) -> pd.DataFrame | None:
    path = storage.path(key)
    return from_parquet_bytes(storage.read_bytes(path)) if storage.exists(path) else None


def write_feature_dir(fs: FeatureSet, out_dir: Path) -> None:
    """Write all outputs into a temp dir, then swap it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, frame in (("interactions", fs.interactions), ("users", fs.users), ("items", fs.items), ("sequences", fs.sequences)):
            (tmp / f"{name}.parquet").write_bytes(to_parquet_bytes(frame))
        (tmp / "meta.json").write_bytes(canonical_json(fs.meta))
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_features(
    params: FeatureParams,
    storage: Storage,
    period_days: int,
    until: dt.date | None = None,
    out_dir: Path | None = None,
    summary_path: Path | None = None,
) -> dict[str, Any]:
    from recops.periods import to_epoch

    events, catalog, dates = load_accepted(storage, until)
    fs = build_features(
        events,
        catalog,
        params,
        previous_users=_read_map(storage, ID_MAP_USERS),
        previous_items=_read_map(storage, ID_MAP_ITEMS),
        logical_date=dates[-1],
        period_start=to_epoch(dates[-1]),
    )
    fs.summary["periods"] = len(dates)
    # maps first: ids handed out are never taken back, even if a later step fails
    storage.write_bytes(storage.path(ID_MAP_USERS), to_parquet_bytes(fs.users[["user_id", "user_idx"]]))
    storage.write_bytes(storage.path(ID_MAP_ITEMS), to_parquet_bytes(fs.items[["item_id", "item_idx"]]))
    write_feature_dir(fs, Path(out_dir or params.output_dir))
    if summary_path is not None:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(fs.summary, indent=1, sort_keys=True) + "\n")
    return fs.summary
