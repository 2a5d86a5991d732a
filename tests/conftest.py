"""Shared fixtures: the real MovieLens sample and small synthetic logs."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "datasets" / "ml-latest-small"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ml_small() -> Path:
    """The real ml-latest-small folder. Tests that need it fail (never skip) without it."""
    if not (ML_SMALL / "ratings.csv").exists():
        pytest.fail(f"MovieLens ml-latest-small not found at {ML_SMALL} (expected beside the repository)")
    return ML_SMALL


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("MLFLOW_ENABLE_TELEMETRY", "false")
    for var in ("RECOPS_STORAGE_URL", "RECOPS_PARAMS"):
        monkeypatch.delenv(var, raising=False)


def synthetic_events(n_users: int = 30, n_items: int = 40, per_user: int = 12, seed: int = 0,
                     start: dt.date = dt.date(2020, 1, 1), days: int = 30) -> pd.DataFrame:
    """A small explicit-feedback log in the canonical schema."""
    rng = np.random.default_rng(seed)
    t0 = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp())
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        times = np.sort(rng.integers(t0, t0 + days * 86400, size=per_user))
        for i, t in zip(items, times, strict=True):
            rows.append((str(u), str(i), float(rng.integers(1, 11) / 2), int(t)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return df.sort_values(["timestamp", "user_id", "item_id"]).reset_index(drop=True)


def synthetic_catalog(n_items: int = 40) -> pd.DataFrame:
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    return pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n_items)],
            "title": [f"Movie {i} ({1990 + i % 30})" for i in range(n_items)],
            "genres": ["|".join(genres[: 1 + i % 4]) for i in range(n_items)],
        }
    )


@pytest.fixture
def events() -> pd.DataFrame:
    return synthetic_events()


@pytest.fixture
def catalog() -> pd.DataFrame:
    return synthetic_catalog()


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch):
    """A real S3 API over HTTP on loopback (moto's server), with a fresh bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="recops-test")
    try:
        yield url
    finally:
        server.stop()
