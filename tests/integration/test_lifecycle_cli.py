"""train -> evaluate -> gate -> register -> promote -> rollback through the CLI, on real data and a real
SQLite-backed MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recops.cli import EXIT_GATE_FAILED, app
from recops.config import FeatureParams, parse_params
from recops.features import build_features, write_feature_dir
from recops.ingest import on_calendar
from recops.sources import read_movielens

pytestmark = pytest.mark.integration

BASE = {
    "model": {"kind": "two_tower", "two_tower": {"dim": 32}},
    "train": {"epochs": 3, "patience": 3, "batch_size": 256},
    "gate": {"champion": {"n_bootstrap": 500}},
    # promote runs the serving check; its latency budget is tested in test_serving.py, not here
    "serving": {"check": {"p99_budget_ms": 1000.0}},
}


def run(*args: str, code: int = 0) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == code, res.output
    return res.output


def write_params(tmp: Path, **overrides) -> None:
    params = json.loads(json.dumps(BASE))
    for dotted, value in overrides.items():
        node = params
        *path, leaf = dotted.split("__")
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value
    parse_params(params)  # fail early on a typo in the test itself
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ml_small) -> Path:
    tmp = tmp_path_factory.mktemp("lifecycle")
    data = read_movielens(ml_small)
    events = on_calendar(data.interactions, parse_params({}))
    fs = build_features(events, data.catalog, FeatureParams())
    write_feature_dir(fs, tmp / "data" / "features")
    return tmp


def test_full_lifecycle(workdir, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    from recops import tracking
    from recops.config import RegistryParams
    from recops.registry import champion, previous_champion

    # 1. first candidate: no champion yet, so the gate bootstraps it
    write_params(workdir)
    assert "best epoch" in run("train", "--no-progress")
    assert "popularity" in run("evaluate")
    assert "no champion yet" in run("gate")
    assert "(bootstrapped)" in run("register")
    client = tracking.client()
    reg = RegistryParams()
    assert str(champion(client, reg).version) == "1"

    # 2. an untrained model is clearly worse than the champion: exit 4, nothing registered
    write_params(workdir, train__lr=1e-9, train__epochs=1, gate__floors={})
    run("train", "--no-progress")
    run("evaluate")
    out = run("gate", code=EXIT_GATE_FAILED)
    assert "worse than champion 1" in out
    gate = json.loads(Path("reports/gate.json").read_text())
    assert gate["passed"] is False and gate["comparison"]["prob_worse_than_margin"] >= 0.95
    assert "nothing is registered" in run("register", code=EXIT_GATE_FAILED)
    assert len(client.search_model_versions(f"name='{reg.candidates_model}'")) == 1
    assert str(champion(client, reg).version) == "1"

    # 3. a candidate that is not worse registers as challenger; the champion stays until a reviewer acts
    write_params(workdir, gate__champion__margin=1.0)
    run("train", "--no-progress")
    run("evaluate")
    run("gate")
    assert "v2 is challenger; champion v1" in run("register")
    assert str(client.get_model_version_by_alias(reg.candidates_model, "challenger").version) == "2"

    # 4. reviewer promotion and rollback
    promoted = run("promote", "--version", "2", "--reviewer", "alice", "--note", "ok")
    assert "v2 is champion (by alice), serving check p99" in promoted
    assert str(champion(client, reg).version) == "2"
    assert str(previous_champion(client, reg).version) == "1"
    assert "v1 is champion" in run("rollback", "--who", "bob", "--reason", "regression")
    assert str(champion(client, reg).version) == "1"
    assert "not found" in run("promote", "--version", "99", "--reviewer", "alice", code=1).lower()

    from recops.registry import AuditLog
    from recops.storage import Storage

    entries = AuditLog(Storage("data/lake")).entries()
    assert [e["action"] for e in entries] == ["promote", "promote", "rollback"]
    assert [e["who"] for e in entries] == ["recops-bootstrap", "alice", "bob"]
    assert entries[1]["from"] == "1" and entries[1]["to"] == "2"

    # 5. the champion is a pyfunc model that answers for users and for anonymous histories
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{reg.production_model}@champion")
    users = pd.read_parquet("data/features/users.parquet")["user_id"].head(3).tolist()
    pred = model.predict(pd.DataFrame({"user_id": users}), params={"k": 5})
    assert len(pred) == 3 and all(len(x) == 5 for x in pred["item_ids"])
