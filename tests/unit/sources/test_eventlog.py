"""Unit tests for mapping generic event logs and catalogs onto canonical frames."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pandas as pd
import pytest

from recops.sources import INTERACTION_COLUMNS, read_catalog, read_event_log

EVENTS_CSV = """uid,sku,score,ts_ms,extra
007,A-1,4.0,1700000000999,x
7,B-2,2.5,1700000000000,y
007,B-2,,1600000000500,z
"""
MAPPING = {"user_id": "uid", "item_id": "sku", "rating": None, "timestamp": "ts_ms"}


def _assert_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert [str(t) for t in frame.dtypes] == ["object", "object", "float64", "int64"]
    assert all(isinstance(v, str) for v in frame["user_id"])
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_csv_ms_timestamps_default_rating_and_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV)

    frame = read_event_log(str(path), fmt="csv", columns=MAPPING, timestamp_unit="ms", default_rating=2.0)

    _assert_schema(frame)
    assert frame.values.tolist() == [
        ["007", "B-2", 2.0, 1600000000],
        ["007", "A-1", 2.0, 1700000000],  # ms floored to seconds
        ["7", "B-2", 2.0, 1700000000],
    ]


def test_rating_column_mapped(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("u,i,r,t\nb,x,3,20\na,y,4.5,10\n")
    frame = read_event_log(
        path, fmt="csv", columns={"user_id": "u", "item_id": "i", "rating": "r", "timestamp": "t"}
    )
    assert frame.values.tolist() == [["a", "y", 4.5, 10], ["b", "x", 3.0, 20]]


def test_iso_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "u,i,when\n"
        "a,x,2024-01-01T00:00:00Z\n"
        "b,x,2024-01-01T02:00:00+02:00\n"
        "c,x,2024-01-01 00:00:01.900\n"  # naive -> UTC, fraction floored
        "d,x,2024-01-02\n"
        "e,x,2024-01-01T23:00:00-01\n"
    )
    frame = read_event_log(
        path, fmt="csv", columns={"user_id": "u", "item_id": "i", "timestamp": "when"}, timestamp_unit="iso"
    )
    assert frame[["user_id", "timestamp"]].values.tolist() == [
        ["a", 1704067200],
        ["b", 1704067200],
        ["c", 1704067201],
        ["d", 1704153600],
        ["e", 1704153600],
    ]


def test_missing_column_lists_available(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV)
    columns = {**MAPPING, "item_id": "product"}
    with pytest.raises(
        ValueError, match=r"'product'.*item_id.*available columns: uid, sku, score, ts_ms, extra"
    ):
        read_event_log(path, fmt="csv", columns=columns, timestamp_unit="ms")


def test_invalid_mapping_and_unit(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV)
    with pytest.raises(ValueError, match="lacks a source column"):
        read_event_log(path, fmt="csv", columns={"user_id": "uid", "timestamp": "ts_ms"})
    with pytest.raises(ValueError, match="unknown canonical column"):
        read_event_log(path, fmt="csv", columns={**MAPPING, "session": "extra"})
    with pytest.raises(ValueError, match="missing value"):
        read_event_log(path, fmt="csv", columns={**MAPPING, "rating": "score"}, timestamp_unit="ms")


def test_parquet_directory_us_and_datetime(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    pd.DataFrame({"user": [1, 2], "item": [10, 20], "t": [2_000_000_000, 1_000_000]}).to_parquet(
        folder / "a.parquet"
    )
    pd.DataFrame({"user": [3], "item": [30], "t": [3_500_000]}).to_parquet(folder / "b.parquet")
    (folder / "_SUCCESS").write_text("")

    frame = read_event_log(
        folder,
        fmt="parquet",
        columns={"user_id": "user", "item_id": "item", "timestamp": "t"},
        timestamp_unit="us",
    )
    _assert_schema(frame)
    assert frame.values.tolist() == [["2", "20", 1.0, 1], ["3", "30", 1.0, 3], ["1", "10", 1.0, 2000]]

    typed = tmp_path / "typed.parquet"
    when = pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T00:00:05Z"])
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "t": when}).to_parquet(typed)
    frame = read_event_log(
        typed, fmt="parquet", columns={"user_id": "user", "item_id": "item", "timestamp": "t"}
    )
    assert frame["timestamp"].tolist() == [1704067200, 1704067205]


def test_fsspec_url() -> None:
    fs = fsspec.filesystem("memory")
    with fs.open("/recops-test/events.csv", "w") as fh:
        fh.write("u,i,t\na,x,5\n")
    try:
        frame = read_event_log(
            "memory://recops-test/events.csv",
            fmt="csv",
            columns={"user_id": "u", "item_id": "i", "timestamp": "t"},
        )
    finally:
        fs.rm("/recops-test", recursive=True)
    assert frame.values.tolist() == [["a", "x", 1.0, 5]]


def test_read_catalog_with_and_without_genres(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('sku,name,cats\n001,"Lamp, desk",Home|Light\n002,Chair,\n')
    frame = read_catalog(path, fmt="csv", columns={"item_id": "sku", "title": "name", "genres": "cats"})
    assert list(frame.columns) == ["item_id", "title", "genres"]
    assert frame.values.tolist() == [["001", "Lamp, desk", "Home|Light"], ["002", "Chair", ""]]

    frame = read_catalog(path, fmt="csv", columns={"item_id": "sku", "title": "name", "genres": None})
    assert frame["genres"].tolist() == ["", ""]


def test_read_catalog_parquet_list_genres(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"id": [1, 2], "t": ["A", None], "g": [["x", "y"], []]}).to_parquet(path)
    frame = read_catalog(path, fmt="parquet", columns={"item_id": "id", "title": "t", "genres": "g"})
    assert frame.values.tolist() == [["1", "A", "x|y"], ["2", "", ""]]


def test_empty_ids_are_rejected_and_empty_logs_are_fine(tmp_path: Path) -> None:
    columns = {"user_id": "u", "item_id": "i", "timestamp": "t"}
    path = tmp_path / "events.csv"
    path.write_text("u,i,t\n,x,5\n")
    with pytest.raises(ValueError, match="'user_id' contains empty id"):
        read_event_log(path, fmt="csv", columns=columns)

    path.write_text("u,i,t\n")
    frame = read_event_log(path, fmt="csv", columns=columns, timestamp_unit="iso")
    assert frame.empty
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert [str(t) for t in frame.dtypes] == ["object", "object", "float64", "int64"]
