"""`dvc repro` for real, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def _copy_repo(src: Path, dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=src, check=True, capture_output=True, text=True,
    ).stdout.split()
    for rel in files:
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root, ml_small) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("repo")
    _copy_repo(repo_root, ws)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RECOPS_DATA_MIRROR": str(ml_small), "GX_ANALYTICS_ENABLED": "false"}
    env.pop("RECOPS_STORAGE_URL", None)
    return ws, env


def dvc(ws: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(["dvc", *args], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_repro_builds_versioned_features_then_is_a_noop(workspace) -> None:
    ws, env = workspace
    out = dvc(ws, env, "repro").stdout
    for stage in ("ingest", "validate", "features"):
        assert f"Running stage '{stage}'" in out
    validation = json.loads((ws / "reports/validate.json").read_text())
    assert validation["accepted_periods"] == 120 and validation["quarantined_periods"] == 0
    summary = json.loads((ws / "reports/features.json").read_text())
    assert summary["periods"] == 120 and summary["rows"] > 10_000 and summary["items"] > 1_000
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert {"ingest", "validate", "features"} <= set(lock["stages"])
    assert (ws / "data/features/interactions.parquet").exists()
    metrics = json.loads(dvc(ws, env, "metrics", "show", "--json").stdout)
    assert any("reports/features.json" in str(v) for v in metrics.values())

    start = time.perf_counter()
    again = dvc(ws, env, "repro").stdout
    elapsed = time.perf_counter() - start
    assert "Running stage" not in again
    assert elapsed < 30  # the benchmark records the real figure; this only catches a re-run


def test_changing_a_feature_param_reruns_only_features(workspace) -> None:
    ws, env = workspace
    before = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["features"]["outs"][0]["md5"]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["features"]["kcore"]["user"] = 10
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(ws, env, "status").stdout
    assert "features" in status and "ingest" not in status and "validate:" not in status
    out = dvc(ws, env, "repro").stdout
    assert "Running stage 'features'" in out
    assert "Running stage 'ingest'" not in out and "Running stage 'validate'" not in out
    after = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["features"]["outs"][0]["md5"]
    assert after != before
    # the id maps only grew: the earlier users keep their indices
    import pandas as pd

    users = pd.read_parquet(ws / "data/features/users.parquet")
    assert users["user_idx"].tolist() == list(range(len(users)))


def test_rerunning_the_pipeline_from_scratch_reproduces_the_same_hashes(workspace, tmp_path) -> None:
    ws, env = workspace
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["features"]["kcore"]["user"] = 5  # back to the committed value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(ws, env, "repro")
    lock1 = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    shutil.rmtree(ws / "data")
    dvc(ws, env, "repro", "--force")
    lock2 = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    for stage in ("ingest", "validate", "features"):
        assert lock1[stage]["outs"][0]["md5"] == lock2[stage]["outs"][0]["md5"], stage
