"""Airflow for real, against temporary copies of the repository.

* ``recops_daily`` through ``dag.test()`` for two consecutive periods;
* ``recops_retrain`` end to end, the approval answered through Airflow's own HITL REST route
  (``PATCH /api/v2/dags/.../taskInstances/approve/-1/hitlDetails``) while ``dag.test()`` waits;
* a three-period backfill through the Airflow CLI (``airflow backfill create``) executed by a real
  scheduler + API server on loopback, compared with running the periods one by one with the CLI.

Airflow configures itself once per process (``AIRFLOW_HOME``, database), so every Airflow step runs
in a subprocess with its own home: this file doubles as the driver (``python test_airflow.py ...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "recops_workspace"
PERIODS = ("2024-01-01", "2024-01-02", "2024-01-03")
REVIEWER, PASSWORD = "alice", "alice-test-password"
STAGES = ("ingest", "validate", "features", "monitor", "rollback")


# ============================================================================ helpers (pytest side)
def make_workspace(dst: Path) -> Path:
    """A copy of what the stages need (no git: DVC runs with core.no_scm) and small training params."""
    import yaml

    dst.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("expectations", "src"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dst / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", dst / ".dvc" / "config")
    (dst / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["train"].update(epochs=2, device="cpu")
    params["model"]["two_tower"]["dim"] = 32
    params["model"]["sasrec"]["dim"] = 32
    params["gate"]["floors"] = {"ndcg@10": 0.0, "recall@20": 0.0}  # two periods of data: tiny test set
    params["gate"]["allow_bootstrap"] = False  # the first candidate goes through human approval
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


def base_env(ws: Path, mirror: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "RECOPS_", "MLFLOW_TRACKING", "PYTEST_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RECOPS_HOME=str(ws), RECOPS_DATA_MIRROR=str(mirror),
               GX_ANALYTICS_ENABLED="false", MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="1")
    return env


def airflow_env(home: Path, ws: Path, mirror: Path, port: int | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({REVIEWER: PASSWORD}))
    port = port or 8080
    return {
        **base_env(ws, mirror),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{REVIEWER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the backfill's runs, no catch-up
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def driver(env: dict[str, str], *args: str, timeout: float = 420) -> dict[str, Any]:
    out = run([sys.executable, __file__, *args], env, REPO, timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lake_state(ws: Path) -> dict[str, Any]:
    """Every commit manifest in the lake, the id maps, the feature files and the DVC-recorded hash."""
    import yaml

    lake = ws / "data" / "lake"
    state = {str(p.relative_to(lake)): json.loads(p.read_text()) for p in sorted(lake.rglob("_SUCCESS"))}
    for key, manifest in state.items():
        if key.startswith("monitoring/"):
            # Evidently's HTML carries random element ids and its JSON snapshots can differ in the last bit of a
            # float between processes (category order follows string hashing); the summary (rounded) must match
            manifest["files"] = {"summary.json": manifest["files"]["summary.json"]}
    state.update({str(p.relative_to(lake)): file_digest(p) for p in sorted((lake / "state").rglob("*.parquet"))})
    state.update({f"features/{p.name}": file_digest(p) for p in sorted((ws / "data" / "features").iterdir())})
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["features"]
    state["dvc.lock:data/features"] = next(o["md5"] for o in lock["outs"] if o["path"] == "data/features")
    for p in sorted((ws / "reports" / "monitor").glob("date=*.json")):
        state[f"monitor/{p.name}"] = {k: v for k, v in json.loads(p.read_text()).items() if k != "mlflow_run_id"}
    return state


@contextlib.contextmanager
def processes(specs: list[tuple[str, list[str]]], env: dict[str, str], logs: Path):
    """Start long-running commands in their own process groups; always stop them (TERM, then KILL)."""
    started: list[subprocess.Popen] = []
    try:
        for name, cmd in specs:
            with open(logs / f"{name}.log", "wb") as log:
                started.append(subprocess.Popen(cmd, env=env, cwd=logs, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
        yield started
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory, ml_small) -> Path:
    """One ``airflow db migrate``; every test copies the fresh database."""
    home = tmp_path_factory.mktemp("airflow_template")
    run([str(BIN / "airflow"), "db", "migrate"], airflow_env(home, home, ml_small), home)
    return home / "airflow.db"


def new_home(tmp: Path, template: Path) -> Path:
    home = tmp / "airflow_home"
    home.mkdir(parents=True)
    shutil.copy2(template, home / "airflow.db")
    return home


@pytest.fixture(scope="module")
def daily(tmp_path_factory, migrated_db, ml_small) -> dict[str, Any]:
    """``recops_daily`` via dag.test() for 2024-01-01 and 2024-01-02 in one workspace."""
    tmp = tmp_path_factory.mktemp("daily")
    ws = make_workspace(tmp / "ws")
    env = airflow_env(new_home(tmp, migrated_db), ws, ml_small)
    results = {day: driver(env, "dag-test", "recops_daily", day) for day in PERIODS[:2]}
    return {"ws": ws, "env": env, "results": results}


# ============================================================================ tests
def test_daily_dag_runs_two_periods(daily) -> None:
    ws = daily["ws"]
    for day, result in daily["results"].items():
        assert result["state"] == "success", result
        assert {t: result["tasks"][t] for t in STAGES} == dict.fromkeys(STAGES, "success"), result
        assert result["tasks"]["request_retrain"] == "skipped"  # warm-up: the policy asks for nothing yet
        for area in ("landing", "raw"):
            assert (ws / "data/lake" / area / "interactions" / f"date={day}" / "_SUCCESS").exists()
        report = json.loads((ws / "reports/monitor" / f"date={day}.json").read_text())
        assert report["status"] == "accepted" and report["decision"]["retrain"] is False
    features = json.loads((ws / "reports/features.json").read_text())
    assert features["logical_date"] == "2024-01-02" and features["periods"] == 2
    assert "data/features" in (ws / "dvc.lock").read_text()  # features version recorded by dvc commit


def test_retraining_request_emits_an_asset_event(daily, tmp_path) -> None:
    """request_retrain's event reaches Airflow with its metadata and queues recops_retrain (the monitor
    report is written by the test: the default policy needs 7 periods before its first request)."""
    ws = daily["ws"]
    decision = {"retrain": True, "reason": "test: new items", "scores": {"new_item_share": 0.5}}
    (ws / "reports/monitor/date=2024-01-03.json").write_text(json.dumps({"date": "2024-01-03", "decision": decision}))
    try:
        result = driver(daily["env"], "dag-test", "recops_daily", "2024-01-03", "--mark-success", "|".join(STAGES),
                        "--unpause", "recops_retrain")
    finally:
        (ws / "reports/monitor/date=2024-01-03.json").unlink()
    assert result["tasks"]["request_retrain"] == "success", result
    [event] = result["asset_events"]
    assert event["uri"].startswith("recops://retraining-request")
    assert event["extra"] == {"reason": "test: new items", "trigger": None, "dedup_key": None, "period": "2024-01-03",
                              "scores": {"new_item_share": 0.5}}
    assert result["queued_for_retrain"] == 1


def test_retrain_dag_end_to_end_with_approval(daily) -> None:
    from mlflow import MlflowClient

    ws = daily["ws"]
    result = driver(daily["env"], "dag-test", "recops_retrain", "none", "--approve")
    assert result["state"] == "success", result
    assert set(result["tasks"].values()) == {"success"}, result  # approve and promote ran
    hitl = result["hitl"]
    assert hitl["subject"] == "Promote recops candidate v1 to champion?"
    assert "**Gate:** passed" in hitl["body"] and "MLflow run" in hitl["body"]
    assert hitl["responded_by"]["name"] == REVIEWER
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("recops", "champion")
    assert champion.tags["promoted_by"] == REVIEWER and champion.tags["promoted_from"] == "1"
    register = json.loads((ws / "reports/register.json").read_text())
    assert register["bootstrapped"] is False and register["champion_version"] is None  # before approval


def _cli_periods(ws: Path, env: dict[str, str], errors: list[str]) -> None:
    """The same commands as the DAG's tasks, one period after the other."""
    recops, dvc = str(BIN / "recops"), str(BIN / "dvc")
    try:
        for day in PERIODS:
            for stage in STAGES:
                run([recops, stage, *(["--auto"] if stage == "rollback" else []), "--date", day], env, ws)
                if stage == "features":
                    run([dvc, "commit", "--force", "--quiet", "features"], env, ws)
    except BaseException as err:  # reported by the test thread
        errors.append(repr(err))


def test_backfill_through_the_cli_matches_running_periods_one_by_one(tmp_path, migrated_db, ml_small) -> None:
    ws_backfill, ws_cli = make_workspace(tmp_path / "ws_backfill"), make_workspace(tmp_path / "ws_cli")
    port = free_port()
    home = new_home(tmp_path, migrated_db)
    env = airflow_env(home, ws_backfill, ml_small, port)
    errors: list[str] = []
    reference = threading.Thread(target=_cli_periods, args=(ws_cli, base_env(ws_cli, ml_small), errors))
    reference.start()
    airflow = str(BIN / "airflow")
    try:
        run([airflow, "pools", "set", POOL, "1", "recops stages share one DVC workspace"], env, home)
        run([airflow, "dags", "reserialize"], env, home)
        run([airflow, "dags", "unpause", "recops_daily"], env, home)
        run([airflow, "backfill", "create", "--dag-id", "recops_daily", "--from-date", PERIODS[0],
             "--to-date", PERIODS[-1], "--max-active-runs", "1"], env, home)
        servers = [("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]),
                   ("scheduler", [airflow, "scheduler"])]
        with processes(servers, env, home):
            states = driver(env, "wait-runs", "recops_daily", str(port), str(len(PERIODS)), timeout=400)
    finally:
        reference.join(timeout=400)
    assert not errors, errors
    assert states == dict.fromkeys(PERIODS, "success"), (states, (home / "scheduler.log").read_text()[-3000:])
    listed = run([airflow, "dags", "list-runs", "recops_daily", "-o", "json"], env, home)
    runs = json.loads(next(line for line in listed.splitlines() if line.startswith("[")))
    assert sorted((r["logical_date"][:10], r["state"], r["run_id"][:9]) for r in runs) == [
        (d, "success", "backfill_") for d in PERIODS
    ]
    got, want = lake_state(ws_backfill), lake_state(ws_cli)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []


# ============================================================================ driver (subprocess side)
def _api_client():
    """Airflow's own API app, authenticated as the reviewer through the simple auth manager."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app("core"))
    client.__enter__()
    token = client.post("/auth/token", json={"username": REVIEWER, "password": PASSWORD})
    assert token.status_code == 201, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _approve(dag_id: str, found: dict[str, Any], deadline: float) -> None:
    """Answer the first open HITL request of ``dag_id`` with Approve, through the REST API."""
    try:
        client = _api_client()
        while time.monotonic() < deadline:
            page = client.get(f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails", params={"response_received": False})
            details = page.json().get("hitl_details", [])
            if details:
                detail, ti = details[0], details[0]["task_instance"]
                url = (f"/api/v2/dags/{dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
                       f"{ti['map_index']}/hitlDetails")
                answer = client.patch(url, json={"chosen_options": ["Approve"]})
                assert answer.status_code == 200, answer.text
                found.update(subject=detail["subject"], body=detail["body"], **answer.json())
                return
            time.sleep(1)
        found["error"] = "no HITL request appeared in time"
    except BaseException as err:
        found["error"] = repr(err)
    # dag.test() would wait for the answer forever: report and end the driver now
    print("RESULT " + json.dumps({"state": "no-approval", "tasks": {}, "hitl": found}, default=str), flush=True)
    os._exit(0)


def _dag_test(dag_id: str, day: str, approve: bool, mark_success: str | None, unpause: str | None) -> dict[str, Any]:
    import datetime as dt

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    hitl: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    if approve:
        threading.Thread(target=_approve, args=(dag_id, hitl, deadline), daemon=True).start()
    logical = None if day == "none" else dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    if unpause:  # serialize every DAG of the folder first, then unpause the consumer of the event
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        manager = DagBundlesManager()
        manager.sync_bundles_to_db()
        for bundle in manager.get_all_dag_bundles():
            bundle.initialize()
            sync_bag_to_db(BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
                           bundle.name, bundle.version)
        with create_session() as session:
            session.get(DagModel, unpause).is_paused = False
    dr = bag.dags[dag_id].test(logical_date=logical, mark_success_pattern=mark_success)
    result: dict[str, Any] = {
        "state": str(dr.state), "run_id": dr.run_id,
        "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()},
        "hitl": hitl or None,
    }
    if unpause:
        client = _api_client()
        events = client.get("/api/v2/assets/events", params={"source_dag_id": dag_id, "source_run_id": dr.run_id})
        result["asset_events"] = events.json()["asset_events"]
        queued = client.get(f"/api/v2/dags/{unpause}/assets/queuedEvents")
        result["queued_for_retrain"] = queued.json()["total_entries"]
    return result


def _wait_runs(dag_id: str, port: int, expected: int, timeout: float = 360) -> dict[str, str]:
    """Poll the running API server until ``expected`` runs of ``dag_id`` are finished."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                token = client.post("/auth/token", json={"username": REVIEWER, "password": PASSWORD})
                if token.status_code == 201:
                    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
            states = {r["logical_date"][:10]: r["state"] for r in runs}
            if len(states) >= expected and all(s in ("success", "failed") for s in states.values()):
                return states
            time.sleep(3)
    return {**states, "timeout": "runs not finished"}


def main(argv: list[str]) -> None:
    if argv[0] == "dag-test":
        opts = argv[3:]
        value = {opt: opts[opts.index(opt) + 1] for opt in ("--mark-success", "--unpause") if opt in opts}
        result = _dag_test(argv[1], argv[2], "--approve" in opts, value.get("--mark-success"), value.get("--unpause"))
    elif argv[0] == "wait-runs":
        result = _wait_runs(argv[1], int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown driver command {argv[0]!r}")
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
