"""Serving against a real MLflow registry (SQLite + local artifacts in tmp) and a real uvicorn server on a
loopback port: hot swap while clients keep requesting, and the serving check that gates ``recops promote``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from recops import registry
from recops.cli import app as cli
from recops.config import RegistryParams, parse_params
from recops.lifecycle import promote_stage
from recops.recommender import Recommender
from recops.serving.check import ServingCheckFailed, check_registered
from recops.serving.holder import RegistrySource
from recops.serving.params import ServingParams
from recops.serving.server import build_app, run_in_thread
from recops.storage import Storage
from tests.integration.test_registry import audit, env, prod, ver  # noqa: F401  (fixtures)
from tests.unit.test_recommender import N_USERS, make_payload

pytestmark = pytest.mark.integration

USERS = [str(100 + u) for u in range(N_USERS)]
SESSION = ["m1", "m2", "m5"]
CHECK = {"users": 8, "sessions": 4, "similar_items": 5, "unknown_users": 1, "rounds": 2,
         "p99_budget_ms": 2000.0}  # this test is about the gate's logic, not this machine's latency


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def served_version(base: str) -> str | None:
    resp = httpx.get(f"{base}/readyz", timeout=10)
    return resp.json()["model_version"] if resp.status_code == 200 else None


def test_hot_swap_under_load_promote_and_rollback(env, prod: RegistryParams, audit,  # noqa: F811
                                                  monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.uri)
    client = env.client
    # production v1 = candidate 1 (two_tower), production v2 = candidate 2 (sasrec): different lists
    expected = {}
    for version, kind in (("1", "two_tower"), ("2", "sasrec")):
        rec = Recommender.from_payload(env.payloads[kind])
        expected[version] = {"users": {u: rec.recommend_user(u, 5).item_ids for u in USERS},
                             "session": rec.recommend_history(SESSION, 5).item_ids}
    assert expected["1"]["users"] != expected["2"]["users"]
    registry.promote(client, prod, audit, version="1", reviewer="alice", note=None)

    app = build_app(ServingParams(poll_seconds=0.2), RegistrySource(prod.production_model))
    stop = threading.Event()
    errors: list[str] = []
    sequences: list[list[str]] = []

    def hammer(base: str, n: int) -> None:
        versions: list[str] = []
        sequences.append(versions)
        with httpx.Client(base_url=base, timeout=30) as http:
            i = 0
            while not stop.is_set():
                i += 1
                user = USERS[(n + i) % len(USERS)]
                try:
                    if i % 4 == 0:
                        resp = http.post("/v1/recommendations", json={"item_ids": SESSION, "k": 5})
                    else:
                        resp = http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
                except httpx.HTTPError as err:
                    errors.append(f"request failed: {err!r}")
                    continue
                if resp.status_code != 200:
                    errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                    continue
                body = resp.json()
                version = body["model_version"]
                want = expected[version]["session"] if i % 4 == 0 else expected[version]["users"][user]
                if [it["item_id"] for it in body["items"]] != want or resp.headers["x-model-version"] != version:
                    errors.append(f"answer labelled version {version} is not that version's list")
                versions.append(version)

    with run_in_thread(app) as base:
        wait_for(lambda: served_version(base) == "1", what="the first champion to load")
        threads = [threading.Thread(target=hammer, args=(base, n), daemon=True) for n in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: all(len(s) >= 5 for s in sequences) and len(sequences) == 3, what="clients")
            new = registry.promote(client, prod, audit, version="2", reviewer="bob", note="hot swap")
            assert ver(new) == "2"
            wait_for(lambda: all(s and s[-1] == "2" for s in sequences), what="every client to get version 2")
            marks = [len(s) for s in sequences]
            wait_for(lambda: all(len(s) >= m + 5 for s, m in zip(sequences, marks, strict=True)), what="load on v2")
            assert ver(registry.rollback(client, prod, audit, who="oncall", reason="test")) == "1"
            wait_for(lambda: all(s[-1] == "1" for s in sequences), what="every client back on version 1")
            marks = [len(s) for s in sequences]
            wait_for(lambda: all(len(s) >= m + 5 for s, m in zip(sequences, marks, strict=True)), what="load on v1")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        metrics = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
                   for s in f.samples}

    assert errors == []
    for seq in sequences:
        changes = [b for a, b in zip(seq, seq[1:], strict=False) if a != b]
        assert changes == ["2", "1"], f"a client saw versions flap: {changes}"  # 1...1 2...2 1...1
    assert metrics["recops_model_swaps_total"] == 3  # first load, promotion, rollback
    assert metrics["recops_model_load_failures_total"] == 0
    assert metrics["recops_model_version"] == 1


def log_candidate(env, payload: dict, tmp: Path, name: str) -> str:  # noqa: F811
    path = tmp / f"{name}.pt"
    torch.save(payload, path)
    with mlflow.start_run(experiment_id=env.exp_id, run_name=name) as run:
        registry.log_model(path)
    mv = registry.register_candidate(env.client, RegistryParams(), run.info.run_id, evidence={"passed": True},
                                     data_version={}, commit="cafe")
    return ver(mv)


@pytest.fixture(scope="module")
def broken_version(env, tmp_path_factory) -> str:  # noqa: F811
    """A candidate whose weights diverged to NaN: loads fine, answers garbage."""
    payload = make_payload("two_tower", seed=7)
    for tensor in payload["state_dict"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    return log_candidate(env, payload, tmp_path_factory.mktemp("broken"), "broken")


def test_serving_check_gates_promotion(env, prod: RegistryParams, broken_version: str, tmp_path: Path,  # noqa: F811
                                       monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.uri)
    client = env.client
    storage = Storage(str(tmp_path / "lake"))
    params = parse_params({"registry": {"production_model": prod.production_model}, "serving": {"check": CHECK}})

    with pytest.raises(ServingCheckFailed) as broken:
        promote_stage(params, storage, broken_version, "alice", None)
    message = str(broken.value)
    assert message.startswith(f"promotion refused: serving check of recops-candidates version {broken_version} FAILED")
    assert "requests got a wrong answer" in message and "produced non-finite scores" in message
    assert registry.champion(client, prod) is None
    assert client.search_model_versions(f"name='{prod.production_model}'") == []  # nothing was copied
    tag = client.get_model_version("recops-candidates", broken_version).tags["serving_check"]
    assert '"passed": false' in tag

    slow = params.model_copy(update={"serving": params.serving.model_copy(
        update={"check": params.serving.check.model_copy(update={"p99_budget_ms": 0.001})})})
    with pytest.raises(ServingCheckFailed, match=r"p99 latency [0-9.]+ ms exceeds the budget of 0\.001 ms"):
        promote_stage(slow, storage, "1", "alice", None)
    assert registry.champion(client, prod) is None

    result = promote_stage(params, storage, "1", "alice", "checked")
    assert result["champion_version"] == "1" and result["serving_check"]["passed"] is True
    assert result["serving_check"]["requests"] > 0 and result["serving_check"]["p99_ms"] <= CHECK["p99_budget_ms"]
    assert ver(registry.champion(client, prod)) == "1"
    (entry,) = [e for e in registry.AuditLog(storage).entries() if e["action"] == "promote"]
    assert entry["evidence"]["serving_check"]["passed"] is True

    missing = check_registered(params.serving, "recops-candidates", "99")
    assert not missing.passed and missing.requests == 0
    assert "could not download models:/recops-candidates/99" in missing.reasons[0]


def test_cli_promote_refuses_a_failing_candidate(env, prod: RegistryParams, broken_version: str,  # noqa: F811
                                                 tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.uri)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"registry": {"production_model": prod.production_model}, "serving": {"check": CHECK}}))
    runner = CliRunner()

    refused = runner.invoke(cli, ["promote", "--version", broken_version, "--reviewer", "alice"])
    assert refused.exit_code == 1
    assert f"serving check of recops-candidates version {broken_version} FAILED" in refused.output
    assert registry.champion(env.client, prod) is None

    check = runner.invoke(cli, ["serving-check", "--version", "2"])
    assert check.exit_code == 0, check.output
    assert "serving check of recops-candidates version 2 passed" in check.output
    assert "not found" in runner.invoke(cli, ["serving-check", "--version", "99"]).output

    ok = runner.invoke(cli, ["promote", "--version", "2", "--reviewer", "alice"])
    assert ok.exit_code == 0, ok.output
    assert f"{prod.production_model} v1 is champion (by alice), serving check p99" in ok.output
