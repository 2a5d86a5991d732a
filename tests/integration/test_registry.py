"""Registry workflow against a real MLflow (SQLite backend, artifacts in tmp): log, register, promote,
roll back, audit, and serving through ``models:/recops@champion`` (in-process and in a fresh process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from recops.config import GateParams, RegistryParams
from recops.storage import Storage
from tests.unit.test_recommender import N_ITEMS, make_payload

pytestmark = pytest.mark.integration

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from recops import registry  # noqa: E402
from recops.registry import AuditLog, RegistryError  # noqa: E402

KINDS = ("two_tower", "sasrec", "popularity")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """One MLflow store for the module: three logged runs (one per model kind), registered as candidate
    versions 1..3. Tests promote into their own production model name so they do not interfere."""
    tmp = tmp_path_factory.mktemp("mlflow")
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_TELEMETRY")}
    os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp_id = client.create_experiment("recops-test", artifact_location=tmp.as_uri() + "/artifacts")
        params = RegistryParams()
        payloads, runs, versions = {}, {}, {}
        for i, kind in enumerate(KINDS):
            payloads[kind] = make_payload(kind, seed=i)
            path = tmp / f"{kind}.pt"
            torch.save(payloads[kind], path)
            with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{kind}") as run:
                info = registry.log_model(path)
            runs[kind] = run.info.run_id
            evidence = {"passed": kind != "popularity", "metric": "ndcg@10", "candidate": 0.1 * (i + 1),
                        "per_slice": {f"slice{j}": "x" * 50 for j in range(200)} if kind == "popularity" else {}}
            versions[kind] = registry.register_candidate(
                client, params, run.info.run_id, evidence=evidence,
                data_version={"features": {"data/features": f"abc{i}.dir"}}, commit="deadbeef",
            )
        yield SimpleNamespace(tmp=tmp, uri=uri, client=client, exp_id=exp_id, payloads=payloads, runs=runs,
                              versions=versions, last_info=info)
    finally:
        mlflow.set_tracking_uri(None)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def prod(request: pytest.FixtureRequest) -> RegistryParams:
    """Registry params with a production model of this test's own."""
    return RegistryParams(production_model="prod-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name))


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(Storage(str(tmp_path / "lake")))


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def ver(mv) -> str:
    """MLflow 3.17's SQL store hands back ``version`` as an int."""
    return str(mv.version)


def test_log_and_register_candidate(env) -> None:
    client, params = env.client, RegistryParams()
    assert env.last_info.signature.params is not None
    assert [ver(v) for v in env.versions.values()] == ["1", "2", "3"]
    assert aliases(client, params.candidates_model) == {"challenger": "3"}

    v1 = client.get_model_version(params.candidates_model, "1")
    assert v1.tags["gate.passed"] == "true"
    assert v1.tags["git.commit"] == "deadbeef"
    assert v1.tags["recops.model_kind"] == "two_tower"
    assert json.loads(v1.tags["data.version"]) == {"features": {"data/features": "abc0.dir"}}
    assert json.loads(v1.tags["gate.evidence"])["candidate"] == pytest.approx(0.1)
    assert v1.run_id == env.runs["two_tower"]

    v3 = client.get_model_version(params.candidates_model, "3")
    assert v3.tags["gate.passed"] == "false"
    assert v3.tags["recops.model_kind"] == "popularity"
    assert len(v3.tags["gate.evidence"]) <= registry.TAG_VALUE_LIMIT
    assert "truncated" in v3.tags["gate.evidence"]
    # the full evidence is a run artifact
    full = json.loads(mlflow.artifacts.load_text(f"runs:/{env.runs['popularity']}/{registry.EVIDENCE_ARTIFACT}"))
    assert len(full["per_slice"]) == 200
    assert client.get_run(env.runs["sasrec"]).data.tags["recops.model_kind"] == "sasrec"

    empty = client.create_run(env.exp_id)
    with pytest.raises(RegistryError, match="no logged model named 'model'"):
        registry.register_candidate(client, params, empty.info.run_id, evidence={}, data_version={}, commit=None)
    assert aliases(client, params.candidates_model) == {"challenger": "3"}


def test_promote_moves_champion_and_previous(env, prod: RegistryParams, audit: AuditLog) -> None:
    client = env.client
    assert registry.champion(client, prod) is None  # registered model does not even exist yet

    first = registry.promote(client, prod, audit, version="1", reviewer="alice", note="first",
                             evidence={"ndcg@10": 0.1})
    assert (first.name, ver(first)) == (prod.production_model, "1")
    assert aliases(client, prod.production_model) == {"champion": "1"}
    assert first.tags["promoted_by"] == "alice"
    assert first.tags["promoted_from"] == "1"
    assert first.tags["recops.model_kind"] == "two_tower"
    assert "promoted_at" in first.tags
    assert ver(registry.champion(client, prod)) == "1"

    second = registry.promote(client, prod, audit, version="2", reviewer="bob", note=None)
    assert ver(second) == "2"
    assert second.tags["promoted_from"] == "2"
    assert aliases(client, prod.production_model) == {"champion": "2", "previous_champion": "1"}
    assert "demoted_at" in client.get_model_version(prod.production_model, "1").tags
    cand = client.get_model_version(prod.candidates_model, "2")
    assert cand.tags["promoted_to"] == f"{prod.production_model}/2"

    entries = audit.entries()
    assert [(e["action"], e["who"], e["from"], e["to"], e["candidate_version"]) for e in entries] == [
        ("promote", "alice", None, "1", "1"),
        ("promote", "bob", "1", "2", "2"),
    ]
    assert entries[0]["note"] == "first" and entries[0]["evidence"] == {"ndcg@10": 0.1}
    assert all(e["when"].endswith("+00:00") for e in entries)
    assert Path(audit.path).name == "model_promotions.jsonl" and "state/audit" in audit.path


def test_rollback_with_and_without_to(env, prod: RegistryParams, audit: AuditLog) -> None:
    client, name = env.client, prod.production_model
    for v in ("1", "2", "3"):
        registry.promote(client, prod, audit, version=v, reviewer="alice", note=None)
    assert aliases(client, name) == {"champion": "3", "previous_champion": "2"}

    back = registry.rollback(client, prod, audit, who="oncall", reason="ctr dropped")
    assert ver(back) == "2"
    assert aliases(client, name) == {"champion": "2", "previous_champion": "3"}
    assert client.get_model_version(name, "3").tags["rollback_reason"] == "ctr dropped"

    to = registry.rollback(client, prod, audit, to="1", who="oncall", reason="back to the first")
    assert ver(to) == "1"
    assert aliases(client, name) == {"champion": "1", "previous_champion": "2"}
    assert ver(registry.champion(client, prod)) == "1"

    with pytest.raises(RegistryError, match="already the champion"):
        registry.rollback(client, prod, audit, to="1", who="oncall", reason="noop")
    with pytest.raises(RegistryError, match="version '9'.*does not exist"):
        registry.rollback(client, prod, audit, to="9", who="oncall", reason="typo")
    assert aliases(client, name) == {"champion": "1", "previous_champion": "2"}

    rollbacks = [e for e in audit.entries() if e["action"] == "rollback"]
    assert [(e["who"], e["from"], e["to"], e["reason"]) for e in rollbacks] == [
        ("oncall", "3", "2", "ctr dropped"),
        ("oncall", "2", "1", "back to the first"),
    ]


def test_rollback_without_previous_is_a_clear_error(env, prod: RegistryParams, audit: AuditLog) -> None:
    with pytest.raises(RegistryError, match="no previous_champion"):
        registry.rollback(env.client, prod, audit, who="oncall", reason="nothing promoted yet")
    registry.promote(env.client, prod, audit, version="1", reviewer="alice", note=None)
    with pytest.raises(RegistryError, match="nothing to roll back to; pass --to"):
        registry.rollback(env.client, prod, audit, who="oncall", reason="only one champion")
    assert aliases(env.client, prod.production_model) == {"champion": "1"}
    assert [e["action"] for e in audit.entries()] == ["promote"]


def test_champion_follows_manual_alias_move(env, prod: RegistryParams, audit: AuditLog) -> None:
    client = env.client
    registry.promote(client, prod, audit, version="1", reviewer="alice", note=None)
    registry.promote(client, prod, audit, version="2", reviewer="alice", note=None)
    assert ver(registry.champion(client, prod)) == "2"
    # a reviewer moves the alias in the UI: seen on the very next call, even through another client
    MlflowClient(tracking_uri=env.uri).set_registered_model_alias(prod.production_model, "champion", "1")
    assert ver(registry.champion(client, prod)) == "1"
    client.delete_registered_model_alias(prod.production_model, "champion")
    assert registry.champion(client, prod) is None


def test_promote_unknown_version_leaves_aliases(env, prod: RegistryParams, audit: AuditLog) -> None:
    client = env.client
    registry.promote(client, prod, audit, version="1", reviewer="alice", note=None)
    before = aliases(client, prod.production_model)
    with pytest.raises(RegistryError, match=r"candidate version '42' of registered model 'recops-candidates' does not exist"):
        registry.promote(client, prod, audit, version="42", reviewer="alice", note=None)
    assert aliases(client, prod.production_model) == before
    assert len(client.search_model_versions(f"name='{prod.production_model}'")) == 1
    assert [e["action"] for e in audit.entries()] == ["promote"]


def test_failure_during_promote_restores_aliases(env, prod: RegistryParams, audit: AuditLog,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    client, name = env.client, prod.production_model
    registry.promote(client, prod, audit, version="1", reviewer="alice", note=None)
    registry.promote(client, prod, audit, version="2", reviewer="alice", note=None)
    assert aliases(client, name) == {"champion": "2", "previous_champion": "1"}

    real_set = MlflowClient.set_registered_model_alias

    def flaky(self, model, alias, version):
        real_set(self, model, alias, version)
        if alias == "previous_champion" and version == "2":  # champion already moved to the copy
            raise RuntimeError("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    with pytest.raises(RuntimeError, match="registry went away"):
        registry.promote(client, prod, audit, version="3", reviewer="mallory", note=None)
    monkeypatch.undo()

    assert aliases(client, name) == {"champion": "2", "previous_champion": "1"}
    assert ver(registry.champion(client, prod)) == "2"
    orphan = client.get_model_version(name, "3")  # the copy exists but serves nothing, and says why
    assert "registry went away" in orphan.tags["promotion.failed"]
    assert [e["action"] for e in audit.entries()] == ["promote", "promote", "promote_failed"]


def test_failure_in_first_promotion_removes_new_aliases(env, prod: RegistryParams, audit: AuditLog,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_append(entry):
        if entry["action"] == "promote":
            raise OSError("lake unreachable")

    monkeypatch.setattr(audit, "append", broken_append)
    with pytest.raises(OSError, match="lake unreachable"):
        registry.promote(env.client, prod, audit, version="1", reviewer="alice", note=None)
    assert aliases(env.client, prod.production_model) == {}
    assert registry.champion(env.client, prod) is None


def test_bootstrap_champion(env, prod: RegistryParams, audit: AuditLog) -> None:
    client = env.client
    assert registry.bootstrap_champion(client, prod, GateParams(allow_bootstrap=False), audit, version="1") is None
    assert registry.bootstrap_champion(client, prod, GateParams(), audit, version="3") is None  # failed the gate
    assert registry.champion(client, prod) is None

    mv = registry.bootstrap_champion(client, prod, GateParams(), audit, version="1", evidence={"why": "first"})
    assert mv is not None and ver(mv) == "1"
    assert mv.tags["promoted_by"] == registry.BOOTSTRAP_REVIEWER
    assert ver(registry.champion(client, prod)) == "1"
    assert registry.bootstrap_champion(client, prod, GateParams(), audit, version="2") is None  # champion exists
    (entry,) = audit.entries()
    assert entry["who"] == "recops-bootstrap" and entry["from"] is None and entry["evidence"] == {"why": "first"}


def test_pyfunc_champion_serves_top_k(env, audit: AuditLog) -> None:
    client, params = env.client, RegistryParams()  # production model "recops"
    registry.promote(client, params, audit, version="1", reviewer="alice", note=None)  # two_tower
    payload = env.payloads["two_tower"]
    extra = payload["extra"]
    known = extra["user_ids"][0]

    model = mlflow.pyfunc.load_model("models:/recops@champion")
    out = model.predict(pd.DataFrame({"user_id": [known, "1"]}), params={"k": 5})
    assert list(out.columns) == ["item_ids", "scores", "fallback"]
    assert out["fallback"].tolist() == [False, True]
    assert all(len(ids) == 5 for ids in out["item_ids"])
    seen = {extra["item_ids"][i] for i in extra["user_histories"][0]}
    assert not seen & set(out["item_ids"][0])
    assert list(out["scores"][0]) == sorted(out["scores"][0], reverse=True)

    from recops.recommender import Recommender

    want = Recommender.from_payload(payload).recommend_users([known], 5)[0]
    assert list(out["item_ids"][0]) == want.item_ids

    hist = model.predict(pd.DataFrame({"history": [["m1", "m2", "nope"], ["nope"]]}), params={"k": 3})
    assert hist["fallback"].tolist() == [False, True]
    assert not {"m1", "m2"} & set(hist["item_ids"][0])
    assert len(hist["item_ids"][0]) == 3
    mixed = model.predict(pd.DataFrame({"user_id": [None, known], "history": [["m1", "m2", "nope"], None]}),
                          params={"k": 3})
    assert mixed["item_ids"].map(list).tolist() == [list(hist["item_ids"][0]), list(out["item_ids"][0][:3])]
    default_k = model.predict(pd.DataFrame({"user_id": [known]}))
    assert len(default_k["item_ids"][0]) == min(registry.DEFAULT_K, N_ITEMS - len(seen))

    # a fresh interpreter, outside this repository: recops comes from the code logged with the model
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        m = mlflow.pyfunc.load_model("models:/recops@champion")
        users = m.predict(pd.DataFrame({{"user_id": [{known!r}, "1"]}}), params={{"k": 5}})
        hist = m.predict(pd.DataFrame({{"history": [["m1", "m2"]]}}), params={{"k": 4}})
        import recops
        print(json.dumps({{"users": users["item_ids"].map(list).tolist(), "fallback": users["fallback"].tolist(),
                          "hist": list(hist["item_ids"][0]), "recops": recops.__file__}}))
    """)
    sub_env = {**os.environ, "MLFLOW_TRACKING_URI": env.uri, "MLFLOW_ENABLE_TELEMETRY": "false"}
    sub_env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-c", script], cwd=env.tmp, env=sub_env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["users"][0] == list(out["item_ids"][0])
    assert got["users"][1] == list(out["item_ids"][1])
    assert got["fallback"] == [False, True]
    assert len(got["hist"]) == 4
    assert "/artifacts/" in got["recops"] and "/code/recops/" in got["recops"], got["recops"]


def test_data_version_and_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert registry.data_version(tmp_path / "dvc.lock") == {}
    lock = tmp_path / "dvc.lock"
    lock.write_text(textwrap.dedent("""
        schema: '2.0'
        stages:
          ingest:
            cmd: recops ingest
            deps:
            - path: src/recops/ingest.py
              hash: md5
              md5: 111
            outs:
            - path: data/manifests/ingest.json
              hash: md5
              md5: aaa
              size: 10
          features:
            cmd: recops features
            outs:
            - path: data/features
              hash: md5
              md5: bbb.dir
              size: 100
              nfiles: 4
    """))
    assert registry.data_version(lock) == {
        "features": {"data/features": "bbb.dir"},
        "ingest": {"data/manifests/ingest.json": "aaa"},
    }
    monkeypatch.delenv("RECOPS_GIT_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert registry.git_commit(tmp_path) is None
    monkeypatch.setenv("RECOPS_GIT_COMMIT", "cafe")
    assert registry.git_commit(tmp_path) == "cafe"
