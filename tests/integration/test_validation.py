"""Validation catches real corruptions of a real MovieLens period and writes nothing downstream."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recops.config import Env, parse_params
from recops.ingest import ingest
from recops.storage import Partition, Storage
from recops.tables import from_parquet_bytes, to_parquet_bytes
from recops.validation import Suites, validate

pytestmark = pytest.mark.integration

DAY = dt.date(2024, 1, 9)
PARAMS = {"replay": {"start_date": "2024-01-01", "periods": 120}, "ingest": {"until": "2024-01-09"}}


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def lake(tmp_path_factory, ml_small):
    """Eight accepted real periods, plus the real ninth period landed."""
    root = tmp_path_factory.mktemp("lake")
    params = parse_params(PARAMS)
    storage = Storage(str(root))
    ingest(params, Env(data_mirror=str(ml_small)), storage)
    suites = Suites(Path(__file__).resolve().parents[2] / "expectations")
    results = validate(params, storage, suites, date=None)
    assert [r.status for r in results] == ["accepted"] * 9
    # take the ninth period back out of raw so each case validates it afresh
    storage.delete_partition(Partition("raw", "interactions", DAY))
    storage.delete_partition(Partition("raw", "catalog", DAY))
    return params, storage, suites


def _frames(storage):
    inter = from_parquet_bytes(storage.read_partition(Partition("landing", "interactions", DAY))["part-0.parquet"])
    cat = from_parquet_bytes(storage.read_partition(Partition("landing", "catalog", DAY))["items.parquet"])
    return inter, cat


def _csv(df: pd.DataFrame, encoding: str = "utf-8") -> bytes:
    return df.to_csv(index=False).encode(encoding)


def corruptions(inter: pd.DataFrame, cat: pd.DataFrame) -> dict[str, tuple[dict, dict | None, str]]:
    """name -> (interaction files, catalog files or None for unchanged, expectation that must fail)."""
    n = len(inter)
    wrong_type = inter.astype({"rating": str})
    wrong_type.loc[:3, "rating"] = "four"
    nulls = inter.astype({"user_id": object})
    nulls.loc[:4, "user_id"] = None
    out_of_range = inter.copy()
    out_of_range.loc[:9, "rating"] = 7.5
    duplicated = pd.concat([inter, inter.iloc[:20]], ignore_index=True)
    outside = inter.copy()
    outside.loc[:9, "timestamp"] += 3 * 86400
    unknown = inter.copy()
    unknown.loc[: n // 10, "item_id"] = "no-such-item"
    spike = pd.concat([inter.assign(user_id=inter["user_id"] + f"-{k}") for k in range(8)], ignore_index=True)
    latin = inter.head(50).copy()
    latin.loc[0, "user_id"] = "jos\u00e9"
    truncated = _csv(inter)[: len(_csv(inter)) // 2]
    truncated = truncated[: truncated.rfind(b",")]  # cut in the middle of a row
    dup_catalog = pd.concat([cat, cat.iloc[:3]], ignore_index=True)
    empty_titles = cat.copy()
    empty_titles.loc[:2, "title"] = ""
    pq = lambda df: {"part-0.parquet": to_parquet_bytes(df)}  # noqa: E731
    return {
        "missing column": (pq(inter.drop(columns=["rating"])), None, "expect_table_columns_to_match_set"),
        "wrong dtype": (pq(wrong_type), None, "expect_column_values_to_be_of_type(rating)"),
        "null ids": (pq(nulls), None, "expect_column_values_to_not_be_null(user_id)"),
        "rating out of range": (pq(out_of_range), None, "expect_column_values_to_be_between(rating)"),
        "duplicated rows": (pq(duplicated), None, "expect_compound_columns_to_be_unique"),
        "timestamps outside period": (pq(outside), None, "expect_column_values_to_be_between(timestamp)"),
        "unknown items": (pq(unknown), None, "expect_column_values_to_be_in_set(item_in_catalog)"),
        "empty file": ({"part-0.csv": b""}, None, "file_is_readable"),
        "header only": ({"part-0.csv": b"user_id,item_id,rating,timestamp\n"}, None, "expect_table_row_count_to_be_between"),
        "truncated csv": ({"part-0.csv": truncated}, None, "file_is_readable"),
        "wrong encoding": ({"part-0.csv": _csv(latin, "latin-1")}, None, "file_is_readable"),
        "catalog duplicate ids": (pq(inter), {"items.parquet": to_parquet_bytes(dup_catalog)}, "expect_column_values_to_be_unique(item_id)"),
        "catalog empty titles": (pq(inter), {"items.parquet": to_parquet_bytes(empty_titles)}, "expect_column_value_lengths_to_be_between(title)"),
        "volume spike": (pq(spike), None, "expect_table_row_count_to_be_between"),
    }


def test_real_period_passes(lake) -> None:
    params, storage, suites = lake
    (result,) = validate(params, storage, suites, date=DAY, force=True)
    assert result.status == "accepted", result.failures
    storage.delete_partition(Partition("raw", "interactions", DAY))
    storage.delete_partition(Partition("raw", "catalog", DAY))


CASES = [
    "missing column", "wrong dtype", "null ids", "rating out of range", "duplicated rows",
    "timestamps outside period", "unknown items", "empty file", "header only", "truncated csv",
    "wrong encoding", "catalog duplicate ids", "catalog empty titles", "volume spike",
]


def test_case_list_matches_corruptions(lake) -> None:
    assert sorted(corruptions(*_frames(lake[1]))) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_corruption_is_quarantined_and_nothing_downstream_changes(lake, case: str) -> None:
    params, storage, suites = lake
    root = Path(storage.root)
    original = storage.read_partition(Partition("landing", "interactions", DAY))
    original_cat = storage.read_partition(Partition("landing", "catalog", DAY))
    inter_files, cat_files, expected = corruptions(*_frames(storage))[case]
    before = tree_digest(root / "raw")
    try:
        storage.write_partition(Partition("landing", "interactions", DAY), inter_files)
        if cat_files is not None:
            storage.write_partition(Partition("landing", "catalog", DAY), cat_files)
        (result,) = validate(params, storage, suites, date=DAY)
        assert result.status == "quarantined"
        messages = [str(f) for f in result.failures]
        assert any(expected in m for m in messages), messages
        assert tree_digest(root / "raw") == before  # nothing accepted, nothing altered
        assert not (root / "state").exists()
        q = storage.read_partition(Partition("quarantine", "interactions", DAY))
        report = json.loads(q["validation_result.json"])
        assert report["success"] is False and any(expected in m for m in report["failures"])
        assert q["data_docs.html"].lstrip().lower().startswith(b"<!doctype html")
        assert any(name.startswith("landed-") for name in q)  # the rejected files are kept for inspection
    finally:
        storage.write_partition(Partition("landing", "interactions", DAY), original)
        storage.write_partition(Partition("landing", "catalog", DAY), original_cat)
        storage.delete_partition(Partition("quarantine", "interactions", DAY))
        storage.delete_partition(Partition("quarantine", "catalog", DAY))


def test_cli_exits_non_zero_naming_each_failure(lake, tmp_path, monkeypatch, repo_root) -> None:
    params, storage, _ = lake
    inter, _ = _frames(storage)
    original = storage.read_partition(Partition("landing", "interactions", DAY))
    bad = inter.copy()
    bad.loc[:4, "rating"] = 9.0
    bad.loc[5:9, "timestamp"] -= 5 * 86400
    storage.write_partition(Partition("landing", "interactions", DAY), {"part-0.parquet": to_parquet_bytes(bad)})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps(PARAMS))
    monkeypatch.setenv("RECOPS_STORAGE_URL", storage.url)
    from recops.cli import app

    try:
        res = CliRunner().invoke(app, ["validate", "--date", DAY.isoformat(), "--suites", str(repo_root / "expectations")])
        assert res.exit_code == 3, res.output
        assert "expect_column_values_to_be_between(rating)" in res.output
        assert "expect_column_values_to_be_between(timestamp)" in res.output
        summary = json.loads((tmp_path / "reports/validate.json").read_text())
        assert summary["quarantined_dates"] == [DAY.isoformat()]
    finally:
        storage.write_partition(Partition("landing", "interactions", DAY), original)
        storage.delete_partition(Partition("quarantine", "interactions", DAY))
