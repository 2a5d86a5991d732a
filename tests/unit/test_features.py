import datetime as dt

import numpy as np
import pandas as pd
import pytest

from recops.config import FeatureParams
from recops.features import build_features, extend_id_map, global_time_cuts, kcore, parse_year, split_genres
from tests.conftest import synthetic_events

FP = FeatureParams(implicit_threshold=0.0, kcore={"user": 2, "item": 2})


def test_parse_year_and_genres() -> None:
    assert parse_year("Heat (1995)") == 1995
    assert parse_year("Babylon 5 (1994-1998)") == 1994
    assert parse_year("No year here") == 0
    assert split_genres("Action|Sci-Fi") == ["Action", "Sci-Fi"]
    assert split_genres("(no genres listed)") == []


def test_kcore_result_satisfies_core_property(events) -> None:
    core = kcore(events, 5, 6)
    assert (core["user_id"].value_counts() >= 5).all()
    assert (core["item_id"].value_counts() >= 6).all()


def test_id_maps_are_stable_and_append_only() -> None:
    v1 = synthetic_events(n_users=10, seed=1)
    v2 = pd.concat([v1, synthetic_events(n_users=20, seed=2).assign(timestamp=lambda d: d.timestamp + 10**8)], ignore_index=True)
    v2.loc[v2.index >= len(v1), "user_id"] = "new-" + v2.loc[v2.index >= len(v1), "user_id"]
    m1 = extend_id_map(None, v1, "user_id", "user_idx")
    m2 = extend_id_map(m1, v2, "user_id", "user_idx")
    assert m2.iloc[: len(m1)].equals(m1)  # existing ids never change
    assert m2["user_idx"].tolist() == list(range(len(m2)))  # appended densely
    assert m2["user_id"].is_unique
    assert set(m2["user_id"].iloc[len(m1):]) == {u for u in v2["user_id"] if u.startswith("new-")}


def test_feature_versions_keep_ids(events, catalog) -> None:
    early = events[events["timestamp"] < events["timestamp"].quantile(0.7)]
    f1 = build_features(early, catalog, FP)
    f2 = build_features(events, catalog, FP, previous_users=f1.users, previous_items=f1.items[["item_id", "item_idx"]])
    merged = f1.items.merge(f2.items, on="item_id", suffixes=("_1", "_2"))
    assert (merged["item_idx_1"] == merged["item_idx_2"]).all()
    assert len(f2.items) >= len(f1.items)


def test_global_time_split_never_trains_on_the_future(events, catalog) -> None:
    fs = build_features(events, catalog, FP)
    inter = fs.interactions
    train_max = inter.loc[inter.split == "train", "timestamp"].max()
    val = inter.loc[inter.split == "val", "timestamp"]
    test = inter.loc[inter.split == "test", "timestamp"]
    assert train_max < fs.meta["split"]["val_start"] <= val.min()
    assert val.max() < fs.meta["split"]["test_start"] <= test.min()
    # sequences hold only training events, in time order
    for _items, ts in zip(fs.sequences["items"], fs.sequences["timestamps"], strict=True):
        assert list(ts) == sorted(ts)
        assert max(ts) <= train_max


def test_leave_last_out_holds_out_each_users_last_events(events, catalog) -> None:
    fp = FeatureParams(implicit_threshold=0.0, kcore={"user": 3, "item": 1}, split={"method": "leave_last_out"})
    inter = build_features(events, catalog, fp).interactions
    for _, g in inter.groupby("user_idx"):
        g = g.sort_values("timestamp", kind="stable")
        assert g["split"].iloc[-1] == "test" and g["split"].iloc[-2] == "val"
        assert (g["split"].iloc[:-2] == "train").all()


def test_implicit_threshold_and_item_features(events, catalog) -> None:
    fs = build_features(events, catalog, FeatureParams(implicit_threshold=3.5, kcore={"user": 1, "item": 1}))
    assert (fs.interactions["rating"] >= 3.5).all()
    assert fs.items["year"].between(1990, 2020).all()
    assert all(isinstance(g, list | np.ndarray) for g in fs.items["genres"])
    assert fs.meta["genres"] == sorted({"Action", "Comedy", "Drama", "Sci-Fi"})


def test_global_time_cuts_quantiles() -> None:
    assert global_time_cuts(np.arange(100), 0.1, 0.2) == (70, 80)


def test_empty_input_is_a_clear_error(events, catalog) -> None:
    with pytest.raises(ValueError, match="no interaction has rating"):
        build_features(events, catalog, FeatureParams(implicit_threshold=99))
    with pytest.raises(ValueError, match="k-core"):
        build_features(events, catalog, FeatureParams(implicit_threshold=0, kcore={"user": 500, "item": 1}))


def test_summary_counts_new_items(events, catalog) -> None:
    cut = int(events["timestamp"].quantile(0.5))
    fs = build_features(events, catalog, FP, logical_date=dt.date(2020, 1, 31), period_start=cut)
    assert fs.summary["rows"] == len(fs.interactions)
    assert 0 <= fs.summary["new_items_this_period"] <= fs.summary["items"]
