"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration

STAGES = ("ingest", "validate", "features", "train", "evaluate", "gate", "register")


def _copy_repo(src: Path, dst: Path, env: dict) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=src, check=True, capture_output=True, text=True,
    ).stdout.split()
    for rel in files:
        if (src / rel).is_file() and not rel.startswith("reports/"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["train"]["epochs"] = 3  # keep the test short; the benchmark runs the real settings
    params["gate"]["champion"]["margin"] = 1.0  # experiments below must not be stopped by the gate
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env, capture_output=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root, ml_small) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RECOPS_DATA_MIRROR": str(ml_small), "GX_ANALYTICS_ENABLED": "false", "MLFLOW_ENABLE_TELEMETRY": "false",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    for var in ("RECOPS_STORAGE_URL", "MLFLOW_TRACKING_URI", "RECOPS_PARAMS"):
        env.pop(var, None)
    _copy_repo(repo_root, ws, env)
    return ws, env


def dvc(ws: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(["dvc", *args], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_repro_runs_every_stage_then_is_a_noop(workspace) -> None:
    ws, env = workspace
    out = dvc(ws, env, "repro").stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    validation = json.loads((ws / "reports/validate.json").read_text())
    assert validation["accepted_periods"] == 120 and validation["quarantined_periods"] == 0
    summary = json.loads((ws / "reports/features.json").read_text())
    assert summary["periods"] == 120 and summary["rows"] > 10_000 and summary["items"] > 1_000
    evaluation = json.loads((ws / "reports/evaluate.json").read_text())
    assert 0 < evaluation["overall"]["ndcg@10"] <= 1 and evaluation["overall"]["n_users"] > 20
    register = json.loads((ws / "reports/register.json").read_text())
    assert register["candidate_version"] == "1" and register["bootstrapped"] is True
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])
    assert json.loads((ws / "reports/plots/val_curve.json").read_text())[0]["epoch"] == 1

    start = time.perf_counter()
    again = dvc(ws, env, "repro").stdout
    elapsed = time.perf_counter() - start
    assert "Running stage" not in again
    assert elapsed < 30  # the benchmark records the real figure; this only catches a re-run


def test_changing_a_feature_param_invalidates_features_only(workspace) -> None:
    ws, env = workspace
    original = (ws / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["features"]["kcore"]["user"] = 10
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(dvc(ws, env, "status", "--json").stdout)
    assert set(status) == {"features"}
    out = dvc(ws, env, "repro", "--single-item", "features").stdout
    assert "Running stage 'features'" in out and "Running stage 'validate'" not in out
    users = pd.read_parquet(ws / "data/features/users.parquet")
    assert users["user_idx"].tolist() == list(range(len(users)))  # the id map only grew
    (ws / "params.yaml").write_text(original)
    dvc(ws, env, "repro", "--single-item", "features")


def test_dvc_experiment_with_a_changed_learning_rate(workspace) -> None:
    ws, env = workspace
    dvc(ws, env, "exp", "run", "-S", "train.lr=0.002", "--name", "lr-0002")
    table = json.loads(dvc(ws, env, "exp", "show", "--json").stdout)
    text = json.dumps(table)
    assert "lr-0002" in text
    assert "0.002" in text
    assert "reports/evaluate.json" in text and "ndcg@10" in text


def test_rerunning_the_data_stages_from_scratch_reproduces_their_hashes(workspace) -> None:
    ws, env = workspace
    lock1 = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    shutil.rmtree(ws / "data")
    dvc(ws, env, "repro", "--force", "features")
    lock2 = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    for stage in ("ingest", "validate", "features"):
        assert lock1[stage]["outs"][0]["md5"] == lock2[stage]["outs"][0]["md5"], stage
