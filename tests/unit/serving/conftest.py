"""Shared pieces of the serving tests: tiny real models (one per kind) and an API on a loopback port."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest

from recops.recommender import Recommender
from recops.serving.app import create_app
from recops.serving.holder import LoadedModel, ModelHolder, ModelPoller
from recops.serving.params import ServingParams
from recops.serving.server import run_in_thread
from tests.unit.test_recommender import make_payload

KINDS = ("two_tower", "sasrec", "popularity")


@pytest.fixture(scope="session")
def payloads() -> dict[str, dict]:
    """model.pt payloads as train writes them, one per model kind (different seeds: different rankings)."""
    return {kind: make_payload(kind, seed=i) for i, kind in enumerate(KINDS)}


def loaded(payload: dict, version: str) -> LoadedModel:
    rec = Recommender.from_payload(payload)
    rec.version = version
    return LoadedModel(version=version, recommender=rec, source="test payload", loaded_at=time.time())


@contextlib.contextmanager
def api(holder: ModelHolder, params: ServingParams | None = None,
        poller: ModelPoller | None = None) -> Iterator[httpx.Client]:
    """The real application under uvicorn on a free loopback port, and an HTTP client for it."""
    with run_in_thread(create_app(holder, params, poller=poller)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client
