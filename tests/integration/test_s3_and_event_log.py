"""The same stages on an S3 lake (moto server on loopback) and on a generic event log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recops.cli import app
from recops.storage import Partition, Storage
from tests.conftest import synthetic_catalog, synthetic_events

pytestmark = pytest.mark.integration


def invoke(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_stages_run_against_an_s3_lake(chdir_tmp, s3_endpoint, monkeypatch, ml_small, repo_root) -> None:
    (chdir_tmp / "params.yaml").write_text(json.dumps({
        "replay": {"start_date": "2024-01-01", "periods": 120},
        "ingest": {"until": "2024-01-05"},
        "features": {"kcore": {"user": 2, "item": 2}},
    }))
    monkeypatch.setenv("RECOPS_STORAGE_URL", "s3://recops-test/lake")
    monkeypatch.setenv("RECOPS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("RECOPS_DATA_MIRROR", str(ml_small))
    assert "landed 5 period(s)" in invoke("ingest")
    assert "5 accepted" in invoke("validate", "--suites", str(repo_root / "expectations"))
    invoke("features")
    import boto3

    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="recops-test")["Contents"]}
    assert "lake/raw/interactions/date=2024-01-05/_SUCCESS" in keys
    assert "lake/state/id_maps/items.parquet" in keys
    assert not any(".tmp-" in k for k in keys)
    storage = Storage("s3://recops-test/lake", s3_endpoint_url=s3_endpoint)
    assert storage.partition_dates("raw", "interactions")[-1] == dt.date(2024, 1, 5)
    assert (chdir_tmp / "data/features/interactions.parquet").exists()


def test_generic_event_log_on_its_own_calendar(chdir_tmp, repo_root) -> None:
    events = synthetic_events(n_users=40, n_items=30, per_user=15, start=dt.date(2023, 3, 1), days=3)
    log = events.rename(columns={"user_id": "uid", "item_id": "sku", "timestamp": "ts"})
    log["ts"] = log["ts"] * 1000  # milliseconds
    log.drop(columns=["rating"]).to_csv(chdir_tmp / "events.csv", index=False)
    synthetic_catalog(30).rename(columns={"item_id": "sku", "title": "name"}).to_csv(chdir_tmp / "catalog.csv", index=False)
    (chdir_tmp / "params.yaml").write_text(json.dumps({
        "source": {"kind": "event_log", "event_log": {
            "path": "events.csv", "format": "csv", "timestamp_unit": "ms",
            "columns": {"user_id": "uid", "item_id": "sku", "rating": None, "timestamp": "ts"},
            "catalog_path": "catalog.csv", "catalog_columns": {"item_id": "sku", "title": "name", "genres": "genres"}}},
        "replay": {"enabled": False},
        "validation": {"volume": {"min_ratio": 0.01, "max_ratio": 100}},
        "features": {"implicit_threshold": 1.0, "kcore": {"user": 2, "item": 2}},
    }))
    invoke("ingest", "--date", "2023-03-02")
    landed = Storage("data/lake").read_partition(Partition("landing", "interactions", dt.date(2023, 3, 2)))
    df = pd.read_parquet(__import__("io").BytesIO(landed["part-0.parquet"]))
    assert len(df) == ((events["timestamp"] >= 1677715200) & (events["timestamp"] < 1677801600)).sum()
    assert set(df["rating"]) == {1.0}
    invoke("ingest")  # every period of the log
    out = invoke("validate", "--suites", str(repo_root / "expectations"))
    assert "3 accepted" in out and "0 quarantined" in out
    assert "up to 2023-03-03" in invoke("features")


def test_bad_params_fail_naming_the_key(chdir_tmp) -> None:
    (chdir_tmp / "params.yaml").write_text("replay:\n  perods: 3\n")
    res = CliRunner().invoke(app, ["ingest"])
    assert res.exit_code == 1
    assert "replay.perods" in res.output


def test_ingest_rejects_a_date_off_the_calendar(chdir_tmp, ml_small, monkeypatch) -> None:
    (chdir_tmp / "params.yaml").write_text(json.dumps({"period": {"days": 7}}))
    monkeypatch.setenv("RECOPS_DATA_MIRROR", str(ml_small))
    res = CliRunner().invoke(app, ["ingest", "--date", "2024-01-03"])
    assert res.exit_code == 1 and "not a period start" in res.output
    assert not Path("data/lake/landing").exists()
