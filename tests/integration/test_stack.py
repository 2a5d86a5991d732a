"""The production stack for real: ``scripts/stack.sh up`` on free loopback ports in a temporary state folder.

PostgreSQL (Airflow and MLflow databases), Redis (the Celery broker, with a password), moto's S3 server, an
MLflow server with basic auth, Postgres backend store and S3 artifacts, and Airflow (LocalExecutor by default
plus CeleryExecutor with a worker for queue ``gpu``, simple auth manager, Postgres metadata DB).
One workspace (a copy of the repository) goes through the whole story:

* ``dvc repro`` with the lake on S3 and MLflow on the server as the pipeline account, then ``dvc push``
  to the S3 remote, the cache and outputs wiped, ``dvc pull`` restores them;
* MLflow permissions: the pipeline account registered the candidate and its ``challenger`` alias but
  may not move ``champion`` nor copy into the production model; the reviewer's ``recops promote`` works;
* ``recops_daily`` for a new period through ``dag.test()`` with the metadata DB on the stack's PostgreSQL;
  ``recops_retrain`` triggered on the stack's scheduler, ``train`` routed to queue ``gpu`` and run by the
  Celery worker, the rest by the LocalExecutor (approved through the REST API by Airflow's non-admin
  reviewer; ``promote`` runs with the reviewer's MLflow login from an Airflow connection), and the API
  server refusing unauthenticated requests.

This file doubles as the ``dag.test()`` driver (Airflow configures itself once per process).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STACK = REPO / "scripts" / "stack.sh"
STAGES = ("ingest", "validate", "features", "train", "evaluate", "gate", "register")
# 20 replayed periods of ml-latest-small (about 5,000 ratings each): dvc repro lands the first three, the
# daily DAG the fourth
PERIODS, REPRO_UNTIL, NEW_PERIOD = 20, "2024-01-03", "2024-01-04"
# what the stack's processes and clients must not inherit from the test runner
FOREIGN = ("AIRFLOW", "RECOPS_", "MLFLOW_", "AWS_", "POSTGRES_", "PYTEST_", "DVC_")


# ============================================================================ helpers
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", GX_ANALYTICS_ENABLED="false",
               MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="1", **extra)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600, ok: bool = True):
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert res.returncode == 0, f"{shlex.join(cmd)} -> {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def s3_keys(stack: dict[str, str], bucket: str, prefix: str = "") -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack["AWS_ENDPOINT_URL"], aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"], region_name=stack["AWS_DEFAULT_REGION"])
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def as_account(stack: dict[str, str], role: str) -> dict[str, str]:
    """The client environment of the pipeline or the reviewer (never the admin's or another's password)."""
    env = {k: v for k, v in stack.items() if not k.endswith("_PASSWORD") and k not in (
        "MLFLOW_TRACKING_USERNAME", "RECOPS_MLFLOW_AUTH_DATABASE_URI", "MLFLOW_BACKEND_STORE_URI")}
    env["MLFLOW_TRACKING_USERNAME"] = stack[f"RECOPS_MLFLOW_{role.upper()}_USERNAME"]
    env["MLFLOW_TRACKING_PASSWORD"] = stack[f"RECOPS_MLFLOW_{role.upper()}_PASSWORD"]
    return env


def make_workspace(dst: Path, env: dict[str, str]) -> Path:
    """A git copy of the repository with small, fast settings."""
    import yaml

    from tests.integration.test_dvc_pipeline import _copy_repo

    dst.mkdir(parents=True, exist_ok=True)
    _copy_repo(REPO, dst, env)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["replay"]["periods"] = PERIODS
    params["ingest"]["until"] = REPRO_UNTIL
    params["train"].update(epochs=2, device="cpu", patience=1)
    params["model"]["two_tower"]["dim"] = 32
    params["gate"]["floors"] = {"ndcg@10": 0.0, "recall@20": 0.0}
    params["gate"]["champion"].update(margin=1.0, n_bootstrap=100)
    check = params.get("serving", {}).get("check")
    if check is not None:  # the serving check before promote: a smaller smoke set, no latency budget here
        check.update({k: v for k, v in {"users": 10, "sessions": 5, "similar_items": 5, "rounds": 1,
                                         "p99_budget_ms": 60_000.0}.items() if k in check})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def stack(tmp_path_factory, ml_small):
    """``scripts/stack.sh up`` on free ports; yields its environment (``stack.sh env``) plus the workspace."""
    git_env = clean_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
                        GIT_COMMITTER_EMAIL="t@example.com", RECOPS_DATA_MIRROR=str(ml_small))
    ws = make_workspace(tmp_path_factory.mktemp("stack") / "ws", git_env)
    # PostgreSQL runs as the `postgres` user when the tests run as root: it must reach its data folder
    state = Path(tempfile.mkdtemp(prefix="recops-stack-"))
    state.chmod(0o711)
    env = clean_env(RECOPS_STACK_DIR=str(state), RECOPS_HOME=str(ws), RECOPS_DATA_MIRROR=str(ml_small),
                    POSTGRES_PORT=str(free_port()), RECOPS_STACK_S3_PORT=str(free_port()),
                    RECOPS_STACK_MLFLOW_PORT=str(free_port()), RECOPS_STACK_AIRFLOW_PORT=str(free_port()),
                    RECOPS_STACK_REDIS_PORT=str(free_port()),
                    # the test triggers its runs itself: no catch-up of the replay calendar by the scheduler
                    AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
                    # every Airflow component parses recops_retrain with train on the Celery worker of queue gpu
                    RECOPS_TRAIN_QUEUE="gpu", RECOPS_TRAIN_EXECUTOR="CeleryExecutor")
    try:
        run([str(STACK), "up"], env, REPO, timeout=420)
        exported = run([str(STACK), "env"], env, REPO).stdout
        values = dict(shlex.split(line)[1].split("=", 1) for line in exported.splitlines() if line.startswith("export "))
        yield {"env": values, "ws": ws, "git_env": git_env, "stack_env": env, "state": state}
    finally:
        down = subprocess.run([str(STACK), "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="module")
def repro(stack) -> dict[str, Any]:
    """``dvc repro`` in the workspace: lake on S3, MLflow on the server as the pipeline account."""
    ws = stack["ws"]
    env = {**stack["git_env"], **as_account(stack["env"], "pipeline")}
    run([str(STACK), "dvc-remote", str(ws)], stack["stack_env"], REPO)
    out = run([str(BIN / "dvc"), "repro"], env, ws, timeout=600).stdout
    return {"out": out, "env": env, "register": json.loads((ws / "reports/register.json").read_text())}


# ============================================================================ (b) DVC and the lake on S3
def test_dvc_repro_on_the_s3_lake_then_push_and_pull(stack, repro) -> None:
    ws, env, keys = stack["ws"], repro["env"], s3_keys(stack["env"], "recops-lake", "lake/")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in repro["out"]
    assert not (ws / "data" / "lake").exists()  # the lake is on S3 only
    committed = sorted(k for k in keys if k.startswith("lake/raw/interactions/") and k.endswith("/_SUCCESS"))
    assert committed == [f"lake/raw/interactions/date=2024-01-0{d}/_SUCCESS" for d in range(1, 4)]
    assert not any(".tmp-" in k for k in keys)
    # the S3 remote from `stack.sh dvc-remote`: config.local, never the tracked .dvc/config
    assert stack["env"]["RECOPS_DVC_REMOTE_URL"] in (ws / ".dvc" / "config.local").read_text()
    assert "recops-dvc" not in (ws / ".dvc" / "config").read_text()

    outs = [ws / "data/model/model.pt", ws / "data/features/interactions.parquet", ws / "data/eval/per_user.parquet"]
    before = {p: digest(p) for p in outs}
    pushed = run([str(BIN / "dvc"), "push"], env, ws).stdout
    assert "pushed" in pushed
    assert len(s3_keys(stack["env"], "recops-dvc", "store/")) >= len(outs)
    shutil.rmtree(ws / ".dvc" / "cache")
    for folder in ("data/model", "data/features", "data/eval", "data/manifests"):
        shutil.rmtree(ws / folder)
    run([str(BIN / "dvc"), "pull"], env, ws)
    assert {p: digest(p) for p in outs} == before
    status = run([str(BIN / "dvc"), "status"], env, ws).stdout
    assert "up to date" in status, status


# ============================================================================ (a) MLflow permissions
def test_only_the_reviewer_can_promote_into_the_production_model(stack, repro, monkeypatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from recops.access import is_permission_denied

    ws, values = stack["ws"], stack["env"]
    uri = values["MLFLOW_TRACKING_URI"]
    register = repro["register"]
    version = register["candidate_version"]
    # on an access-controlled server the pipeline cannot bootstrap the first champion: a reviewer must
    assert register["bootstrapped"] is False and register["champion_version"] is None

    pipeline = as_account(values, "pipeline")
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, pipeline[key])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    challenger = client.get_model_version_by_alias("recops-candidates", "challenger")
    assert str(challenger.version) == version and challenger.tags["gate.passed"] == "true"
    with pytest.raises(MlflowException) as moved:
        client.set_registered_model_alias("recops", "champion", "1")
    assert is_permission_denied(moved.value) and "403" in str(moved.value)
    with pytest.raises(MlflowException) as copied:
        client.copy_model_version(f"models:/recops-candidates/{version}", "recops")
    assert is_permission_denied(copied.value)
    assert client.search_model_versions("name='recops'") == []

    # recops' own promote as the pipeline: a clear error, nothing copied, nothing audited
    from recops.config import load_params
    from recops.registry import AuditLog, RegistryPermissionError, promote
    from recops.storage import Storage

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, values[key])
    audit = AuditLog(Storage(values["RECOPS_STORAGE_URL"], s3_endpoint_url=values["AWS_ENDPOINT_URL"]))
    with pytest.raises(RegistryPermissionError, match=r"refused .*'recops-pipeline'.*reviewer account"):
        promote(client, load_params(ws / "params.yaml").registry, audit, version=version, reviewer="alice", note=None)
    assert client.search_model_versions("name='recops'") == []
    assert s3_keys(values, "recops-lake", "lake/state/audit/") == []

    recops = [str(BIN / "recops"), "promote", "--version", version, "--reviewer", "alice", "--note", "stack test"]
    promoted = run(recops, {**stack["git_env"], **as_account(values, "reviewer")}, ws)
    assert "is champion (by alice)" in promoted.stdout

    champion = client.get_model_version_by_alias("recops", "champion")  # the pipeline can still read it
    assert champion.tags["promoted_by"] == "alice" and champion.tags["promoted_from"] == version
    with pytest.raises(MlflowException) as again:  # ... and still not move it
        client.set_registered_model_alias("recops", "champion", str(champion.version))
    assert is_permission_denied(again.value)

    import requests

    assert requests.get(f"{uri}/api/2.0/mlflow/registered-models/get", params={"name": "recops"},
                        timeout=10).status_code == 401  # no login, no answer
    # artifacts: proxied by the server into the S3 bucket, nothing on the client's disk
    artifacts = s3_keys(values, "recops-mlflow", "artifacts/")
    assert any(k.endswith("/model.pt") for k in artifacts), artifacts[:20]
    assert not (ws / "mlartifacts").exists() and not (ws / "mlruns").exists()
    audit = s3_keys(values, "recops-lake", "lake/state/audit/")
    assert audit == ["lake/state/audit/model_promotions.jsonl"]


# ============================================================================ (c) Airflow on PostgreSQL
def driver_env(stack: dict[str, Any], home: Path) -> dict[str, str]:
    """The worker's environment: the pipeline's MLflow identity; the reviewer's comes from the Airflow
    connection the stack stored (encrypted with the Fernet key) for the promote task."""
    values = stack["env"]
    env = {**stack["git_env"], **as_account(values, "pipeline")}
    keep = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__LOAD_EXAMPLES",
            "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND")
    env.update({k: values[k] for k in keep})
    # dag.test() stores the DAGs it parses: the same placement as the stack's dag-processor
    env.update({k: stack["stack_env"][k] for k in ("RECOPS_TRAIN_QUEUE", "RECOPS_TRAIN_EXECUTOR")})
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"), RECOPS_HOME=str(stack["ws"]),
               AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
               RECOPS_TEST_APPROVER="reviewer", RECOPS_TEST_APPROVER_PASSWORD=values["RECOPS_AIRFLOW_REVIEWER_PASSWORD"])
    return env


def dag_test(env: dict[str, str], *args: str, timeout: float = 480) -> dict[str, Any]:
    out = run([sys.executable, __file__, "dag-test", *args], env, REPO, timeout).stdout
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_airflow_on_postgres_runs_daily_and_retrain(stack, repro, tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    ws, values = stack["ws"], stack["env"]
    env = driver_env(stack, tmp_path / "airflow_home")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_TRACKING_USERNAME"] == "recops-pipeline" and "RECOPS_MLFLOW_REVIEWER_PASSWORD" not in env

    daily = dag_test(env, "recops_daily", NEW_PERIOD)
    assert daily["state"] == "success", daily
    assert {t: daily["tasks"][t] for t in ("ingest", "validate", "features", "monitor")} == dict.fromkeys(
        ("ingest", "validate", "features", "monitor"), "success"), daily
    assert f"lake/raw/interactions/date={NEW_PERIOD}/_SUCCESS" in s3_keys(values, "recops-lake", "lake/raw/")
    assert json.loads((ws / "reports/features.json").read_text())["logical_date"] == NEW_PERIOD

    retrain = run_on_scheduler(values, "recops_retrain")
    assert retrain["state"] == "success", retrain
    assert set(retrain["tasks"].values()) == {"success"}, retrain  # approve and promote ran
    assert retrain["hitl"]["responded_by"]["name"] == "reviewer"
    # train ran on the Celery worker of queue gpu (Airflow's metadata and the worker's own log), the rest locally
    placed = task_placement(values, "recops_retrain", retrain["run_id"])
    assert placed["train"] == ("gpu", "CeleryExecutor", "success"), placed
    assert {p[1] for t, p in placed.items() if t != "train"} <= {None, "LocalExecutor"}, placed
    worker_log = (stack["state"] / "logs" / "airflow-celery-worker.log").read_text()
    executed = [line for line in worker_log.splitlines() if "Executing workload in Celery" in line]
    assert len(executed) == 1, worker_log[-4000:]
    assert "dag_id='recops_retrain'" in executed[0] and "task_id='train'" in executed[0], executed
    assert re.search(r"execute_workload\[[0-9a-f-]+\] succeeded", worker_log), worker_log[-4000:]
    register = json.loads((ws / "reports/register.json").read_text())
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "recops-pipeline")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", values["RECOPS_MLFLOW_PIPELINE_PASSWORD"])
    champion = MlflowClient(tracking_uri=values["MLFLOW_TRACKING_URI"]).get_model_version_by_alias("recops", "champion")
    assert champion.tags["promoted_by"] == "reviewer"
    assert champion.tags["promoted_from"] == register["candidate_version"]


def airflow_api(values: dict[str, str], user: str):
    import httpx

    http = httpx.Client(base_url=values["AIRFLOW__API__BASE_URL"], timeout=30)
    token = http.post("auth/token", json={"username": user,
                                          "password": values[f"RECOPS_AIRFLOW_{user.upper()}_PASSWORD"]})
    assert token.status_code == 201, token.text
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return http


def run_on_scheduler(values: dict[str, str], dag_id: str, timeout: float = 900) -> dict[str, Any]:
    """Trigger ``dag_id`` on the stack's scheduler (the admin unpauses and triggers it), approve its review as
    the reviewer through the REST API, and wait for the run to end."""
    admin, reviewer = airflow_api(values, "admin"), airflow_api(values, "reviewer")
    deadline, hitl = time.monotonic() + timeout, {}
    try:
        while admin.get(f"api/v2/dags/{dag_id}").status_code == 404:  # the dag-processor has not parsed it yet
            assert time.monotonic() < deadline, f"{dag_id} never appeared"
            time.sleep(2)
        assert admin.patch(f"api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        created = admin.post(f"api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert created.status_code == 200, created.text
        run_id, state = created.json()["dag_run_id"], "queued"
        while time.monotonic() < deadline:
            state = admin.get(f"api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                break
            if not hitl:
                open_ = reviewer.get(f"api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails",
                                     params={"response_received": False}).json().get("hitl_details", [])
                if open_:
                    ti = open_[0]["task_instance"]
                    answer = reviewer.patch(f"api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/"
                                            f"{ti['map_index']}/hitlDetails", json={"chosen_options": ["Approve"]})
                    assert answer.status_code == 200, answer.text
                    hitl = answer.json()
            time.sleep(2)
        tis = admin.get(f"api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    finally:
        admin.close()
        reviewer.close()
    return {"state": state, "run_id": run_id, "tasks": {t["task_id"]: t["state"] for t in tis}, "hitl": hitl}


def task_placement(values: dict[str, str], dag_id: str, run_id: str) -> dict[str, tuple[str, str | None, str]]:
    """(queue, executor, state) of each task instance of the run, read from Airflow's metadata database."""
    import psycopg2

    dsn = values["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT task_id, queue, executor, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
                    (dag_id, run_id))
        rows = cur.fetchall()
    conn.close()
    return {task_id: (queue, executor, state) for task_id, queue, executor, state in rows}


def test_redis_broker_requires_its_password(stack) -> None:
    import redis

    values = stack["env"]
    port = int(values["RECOPS_STACK_REDIS_PORT"])
    assert redis.Redis(host="127.0.0.1", port=port, password=values["REDIS_PASSWORD"]).ping() is True
    assert redis.Redis.from_url(values["AIRFLOW__CELERY__BROKER_URL"]).ping() is True  # what Airflow uses
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="wrong").ping()


def test_api_server_requires_a_login_and_roles_apply(stack) -> None:
    import httpx

    values = stack["env"]
    with httpx.Client(base_url=values["AIRFLOW__API__BASE_URL"], timeout=10) as http:
        assert http.get("api/v2/dags").status_code == 401
        assert http.post("auth/token", json={"username": "reviewer", "password": "wrong"}).status_code == 401
        token = http.post("auth/token", json={"username": "reviewer",
                                              "password": values["RECOPS_AIRFLOW_REVIEWER_PASSWORD"]})
        assert token.status_code == 201, token.text
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        dags = http.get("api/v2/dags", headers=auth)
        assert dags.status_code == 200 and {"recops_daily", "recops_retrain"} <= {
            d["dag_id"] for d in dags.json()["dags"]}
        assert http.get("api/v2/connections", headers=auth).status_code == 403  # role "user" is no admin
        deadline, health = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            health = http.get("api/v2/monitor/health").json()
            if all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler")):
                break
            time.sleep(3)
        assert health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy", health


# ============================================================================ driver (subprocess side)
if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    import tests.integration.test_airflow as airflow_driver

    # the approval comes from the stack's reviewer (role "user"), not test_airflow's admin
    airflow_driver.REVIEWER = os.environ["RECOPS_TEST_APPROVER"]
    airflow_driver.PASSWORD = os.environ["RECOPS_TEST_APPROVER_PASSWORD"]
    # the approval request appears after train/evaluate/gate/register: allow a loaded machine more time
    approve = airflow_driver._approve
    airflow_driver._approve = lambda dag_id, found, deadline: approve(dag_id, found, time.monotonic() + 900)
    airflow_driver.main(sys.argv[1:])
