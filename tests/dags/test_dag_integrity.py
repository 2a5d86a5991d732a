"""The DAG files: they load, they are documented and safe to parse, and every stage task runs the
``recops <stage>`` command of the same name (fast: no Airflow database, no pipeline run)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
DAG_IDS = {"recops_daily", "recops_retrain", "recops_rollback"}
STAGE_IDS = {"ingest", "validate", "features", "monitor", "train", "evaluate", "gate", "register", "promote", "rollback"}
GLUE_TASKS = {"request_retrain", "candidate", "approve"}  # Python / HITL tasks, no recops command
HEAVY = ("torch", "pandas", "numpy", "mlflow", "evidently", "great_expectations")
HEAVY_IMPORT = re.compile(rf"^(import|from) ({'|'.join(HEAVY)})\b", re.MULTILINE)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    return {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "RECOPS_HOME": str(REPO)}


@pytest.fixture(scope="module")
def dagbag(airflow_env):
    mp = pytest.MonkeyPatch()
    for key, value in airflow_env.items():
        mp.setenv(key, value)
    mp.delenv("RECOPS_PARAMS", raising=False)
    from airflow.dag_processing.dagbag import DagBag

    try:
        yield DagBag(dag_folder=str(REPO / "dags"))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def cli_commands() -> set[str]:
    import typer

    from recops.cli import app

    return set(typer.main.get_command(app).commands)


def stage_tasks(dagbag) -> list[Any]:
    from recops.orchestration import StageOperator

    return [t for d in dagbag.dags.values() for t in d.tasks if isinstance(t, StageOperator)]


def test_dagbag_loads_without_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    assert not any(dagbag.captured_warnings.values()), dagbag.captured_warnings


def test_every_dag_is_documented_and_alerts(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.tags and "recops" in dag.tags, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 200 and "recops_workspace" in dag.doc_md, dag.dag_id
        assert dag.on_failure_callback, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.on_failure_callback, (dag.dag_id, task.task_id)
            assert task.execution_timeout and task.execution_timeout > dt.timedelta(0), (dag.dag_id, task.task_id)


def test_stage_tasks_run_the_cli_command_of_their_name(dagbag, cli_commands) -> None:
    from airflow.providers.standard.operators.bash import BashOperator

    from recops.orchestration import POOL

    tasks = stage_tasks(dagbag)
    assert {t.task_id for t in tasks} == STAGE_IDS
    assert {t.task_id for t in tasks} <= cli_commands
    for task in tasks:
        assert isinstance(task, BashOperator)
        assert re.search(rf"/recops {task.task_id}( |$)", task.bash_command), task.bash_command
        assert task.pool == POOL and task.cwd == str(REPO) and task.append_env
        assert task.env["RECOPS_HOME"] == str(REPO)
        assert task.retries > 0 and task.retry_exponential_backoff > 1 and task.max_retry_delay, task.task_id
    others = {t.task_id for d in dagbag.dags.values() for t in d.tasks} - STAGE_IDS
    assert others == GLUE_TASKS


def test_stage_commands_match_the_dvc_stages(dagbag) -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for task in stage_tasks(dagbag):
        if task.task_id in dvc:
            assert dvc[task.task_id]["cmd"].split()[:2] == ["recops", task.task_id]


def test_daily_schedule_follows_the_period_calendar(dagbag) -> None:
    from airflow.sdk import DeltaDataIntervalTimetable

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    dag = dagbag.dags["recops_daily"]
    assert isinstance(dag.timetable, DeltaDataIntervalTimetable)
    assert dag.timetable.delta == dt.timedelta(days=params["period"]["days"])
    start = dt.date.fromisoformat(str(params["replay"]["start_date"]))
    assert dag.start_date.date() == start and dag.catchup is True
    last = start + dt.timedelta(days=params["period"]["days"] * (params["replay"]["periods"] - 1))
    assert dag.end_date.date() == last
    order = [t.task_id for t in dag.topological_sort()]
    assert order[:4] == ["ingest", "validate", "features", "monitor"]
    assert set(order[4:]) == {"rollback", "request_retrain"}
    assert dag.task_dict["rollback"].upstream_task_ids == {"monitor"}
    assert "rollback --auto --date '{{ ds }}'" in dag.task_dict["rollback"].bash_command.replace('"', "'")
    assert "{{ ds }}" in dag.task_dict["ingest"].bash_command
    assert "dvc commit --force --quiet features" in dag.task_dict["features"].bash_command
    assert dag.task_dict["validate"].fail_fast.keys() == {3}


def test_retrain_is_asset_scheduled_and_reviewed(dagbag) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from recops.orchestration import RETRAIN_ASSET

    dag = dagbag.dags["recops_retrain"]
    assert RETRAIN_ASSET in dag.timetable.asset_condition.objects
    assert RETRAIN_ASSET in dagbag.dags["recops_daily"].task_dict["request_retrain"].outlets
    assert dag.catchup is False and "reason" in dag.params
    assert dag.task_dict["gate"].fail_fast.keys() == {4} and dag.task_dict["register"].fail_fast.keys() == {4}
    assert isinstance(dag.task_dict["approve"], ApprovalOperator)
    assert [t.task_id for t in dag.topological_sort()] == [
        "train", "evaluate", "gate", "register", "candidate", "approve", "promote"]
    daily = dagbag.dags["recops_daily"]
    top_daily = max(len(t.get_flat_relative_ids(upstream=False)) + t.priority_weight for t in daily.tasks)
    for task in stage_tasks(dagbag):
        if task.dag_id == "recops_retrain":
            assert task.weight_rule == "absolute" and task.priority_weight > top_daily, task.task_id
    promote = dag.task_dict["promote"]
    assert "approve" in promote.env["RECOPS_REVIEWER"] and "candidate" in promote.env["RECOPS_CANDIDATE_VERSION"]


def _retrain_dag(airflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **placement: str) -> Any:
    """recops_retrain parsed afresh with the scale-out variables ``placement`` (and no others)."""
    from airflow.dag_processing.dagbag import DagBag

    for key, value in airflow_env.items():
        monkeypatch.setenv(key, value)
    for var in ("RECOPS_TRAIN_QUEUE", "RECOPS_TRAIN_NPROC", "RECOPS_TRAIN_EXECUTOR", "RECOPS_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in placement.items():
        monkeypatch.setenv(var, value)
    # Airflow caches the configured executors per process: read AIRFLOW__CORE__EXECUTOR afresh
    from collections import defaultdict

    from airflow.executors import executor_loader

    monkeypatch.setattr(executor_loader, "_executor_names", [])
    for cache in ("_alias_to_executors_per_team", "_module_to_executors_per_team",
                  "_classname_to_executors_per_team", "_team_name_to_executors"):
        monkeypatch.setattr(executor_loader, cache, defaultdict(getattr(executor_loader, cache).default_factory))
    return DagBag(dag_folder=str(REPO / "dags" / "recops_retrain.py"))


def test_train_is_routed_to_the_configured_queue(airflow_env, monkeypatch) -> None:
    from airflow.configuration import conf

    default_queue = conf.get("operators", "default_queue")
    plain = _retrain_dag(airflow_env, monkeypatch).dags["recops_retrain"]
    assert {t.queue for t in plain.tasks} == {default_queue}  # LocalExecutor runs it as before
    assert "torchrun" not in plain.task_dict["train"].bash_command

    gpu = _retrain_dag(airflow_env, monkeypatch, RECOPS_TRAIN_QUEUE="gpu", RECOPS_TRAIN_NPROC="2")
    dag = gpu.dags["recops_retrain"]
    assert dag.task_dict["train"].queue == "gpu"
    assert {t.queue for t in dag.tasks if t.task_id != "train"} == {default_queue}  # only train moves
    command = dag.task_dict["train"].bash_command
    assert re.search(r"/torchrun --standalone --nproc_per_node 2 --no-python \S+/recops train --no-progress$",
                     command), command
    assert "RECOPS_TRAIN_QUEUE" in dag.doc_md and "docs/scale-out.md" in dag.doc_md
    assert {t.executor for t in plain.tasks} | {t.executor for t in dag.tasks} == {None}  # the default executor

    # several executors (the native stack): train goes to the Celery worker of queue gpu, the rest stays local
    celery = _retrain_dag(airflow_env, monkeypatch, AIRFLOW__CORE__EXECUTOR="LocalExecutor,CeleryExecutor",
                          RECOPS_TRAIN_QUEUE="gpu", RECOPS_TRAIN_EXECUTOR="CeleryExecutor")
    assert not celery.import_errors, celery.import_errors
    dag = celery.dags["recops_retrain"]
    assert (dag.task_dict["train"].queue, dag.task_dict["train"].executor) == ("gpu", "CeleryExecutor")
    assert {t.executor for t in dag.tasks if t.task_id != "train"} == {None}
    assert "RECOPS_TRAIN_EXECUTOR" in dag.doc_md
    # an executor Airflow does not run is an import error, not a task that waits forever
    unknown = _retrain_dag(airflow_env, monkeypatch, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                           RECOPS_TRAIN_EXECUTOR="CeleryExecutor")
    assert "recops_retrain" not in unknown.dags
    assert any("CeleryExecutor" in err for err in unknown.import_errors.values()), unknown.import_errors

    bad = _retrain_dag(airflow_env, monkeypatch, RECOPS_TRAIN_NPROC="two")
    assert "recops_retrain" not in bad.dags
    assert any("RECOPS_TRAIN_NPROC='two'" in err for err in bad.import_errors.values()), bad.import_errors


def test_rollback_is_manual_with_target_who_reason(dagbag, tmp_path) -> None:
    import jinja2

    dag = dagbag.dags["recops_rollback"]
    assert dag.timetable.can_be_scheduled is False
    assert set(dag.params) == {"target", "who", "reason"}
    task = dag.task_dict["rollback"]
    fake = tmp_path / "recops"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    fake.chmod(0o755)
    command = task.bash_command.replace(task.bash_command.split()[0], str(fake), 1)
    for target, expected in (("previous", []), ("3", ["[--to]", "[3]"])):
        env = {k: jinja2.Template(v).render(params={"target": target, "who": "Bo O'Neil", "reason": "bad; recs"})
               for k, v in task.env.items()}
        out = subprocess.run(["bash", "-c", command], env={**os.environ, **env}, capture_output=True, text=True).stdout
        assert out.split("\n")[:-1] == ["[rollback]", *expected, "[--who]", "[Bo O'Neil]", "[--reason]", "[bad; recs]"]


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_parses_fast_without_db_or_heavy_imports(path: Path, airflow_env, tmp_path) -> None:
    for source in (path, REPO / "src/recops/orchestration.py"):
        assert not HEAVY_IMPORT.search(source.read_text()), source
    assert len(path.read_text().splitlines()) < 150
    # Any metadata-DB connection or session, Variable or Connection lookup during the parse is
    # recorded (and refused) by the probe, even where the DAG file would swallow the error.
    probe = r"""
import json, sys, time
from sqlalchemy import event
from sqlalchemy.pool import Pool
calls = []
def deny(what):
    def _deny(*args, **kwargs):
        calls.append(what)
        raise RuntimeError(what + " used while parsing a DAG file")
    return _deny
event.listen(Pool, "connect", deny("metadata DB connection"))
import airflow.settings
airflow.settings.Session = deny("metadata DB session")
import airflow.sdk.execution_time.context as ctx
for name in ("_get_variable", "_get_variable_keys", "_get_connection"):
    setattr(ctx, name, deny(name))
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
heavy = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
print("RESULT " + json.dumps({"seconds": elapsed, "errors": bag.import_errors, "dags": sorted(bag.dag_ids),
                              "heavy": heavy, "db": calls}))
"""
    env = {**os.environ, **airflow_env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'parse.db'}"}
    res = subprocess.run([sys.executable, "-c", probe, str(path), ",".join(HEAVY)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["errors"] == {} and len(result["dags"]) == 1, result
    assert result["db"] == [] and result["heavy"] == [], result
    assert result["seconds"] < 2.0, result


# ---------------------------------------------------------------------------- glue tasks and helpers
def _write(root: Path, rel: str, obj: dict) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(obj))


def test_request_retrain_emits_only_when_the_monitor_says_so(dagbag, tmp_path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from recops.orchestration import RETRAIN_ASSET

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path))
    fn = dagbag.dags["recops_daily"].task_dict["request_retrain"].python_callable

    class Accessor:
        extra: dict = {}

    events = {RETRAIN_ASSET: Accessor()}
    _write(tmp_path, "reports/monitor/date=2024-02-01.json",
           {"decision": {"retrain": False, "reason": "cooldown", "scores": {}}})
    with pytest.raises(AirflowSkipException, match="cooldown"):
        fn(ds="2024-02-01", outlet_events=events)
    scores = {"new_item_share": 0.3}
    _write(tmp_path, "reports/monitor/date=2024-02-02.json",
           {"decision": {"retrain": True, "reason": "data drift", "trigger": "drift", "dedup_key": "drift:3",
                         "scores": scores}})
    fn(ds="2024-02-02", outlet_events=events)
    assert events[RETRAIN_ASSET].extra == {"reason": "data drift", "trigger": "drift", "dedup_key": "drift:3",
                                           "period": "2024-02-02", "scores": scores}


def test_candidate_skips_review_when_bootstrapped(dagbag, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_UI_URL", "http://mlflow.local:5000/")
    fn = dagbag.dags["recops_retrain"].task_dict["candidate"].python_callable
    register = {"candidate_model": "recops-candidates", "candidate_version": "3", "champion_version": "2",
                "bootstrapped": False}
    _write(tmp_path, "reports/register.json", {**register, "bootstrapped": True})
    assert fn(params={"reason": "manual"}, triggering_asset_events={}) is False
    _write(tmp_path, "reports/register.json", register)
    _write(tmp_path, "reports/gate.json", {"passed": True, "reasons": [], "candidate": {"ndcg@10": 0.1}})
    _write(tmp_path, "data/model/run.json", {"run_id": "abc123"})

    class Event:
        extra = {"period": "2024-02-02", "reason": "new items"}

    out = fn(params={"reason": "manual"}, triggering_asset_events={"a": [Event(), Event()]})
    assert out["version"] == "3"
    assert "http://mlflow.local:5000/#/runs/abc123" in out["body"] and "ndcg@10 0.1000" in out["body"]
    assert out["body"].count("2024-02-02: new items") == 2  # two coalesced requests, one review


def test_stage_operator_fails_fast_only_on_decision_exit_codes() -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from recops.orchestration import StageOperator

    def execute(code: int) -> Any:
        return StageOperator(task_id="validate", bash_command=f"echo out; exit {code}", fail_fast={3: "quarantined"},
                             cwd="/tmp").execute({})

    with pytest.raises(AirflowFailException, match="exited with code 3: quarantined"):
        execute(3)
    with pytest.raises(AirflowException) as err:  # an ordinary error: retried
        execute(1)
    assert not isinstance(err.value, AirflowFailException)
    with pytest.raises(AirflowException):  # 99 is not a skip for recops
        execute(99)
    assert execute(0) == "out"


def test_failure_summary_is_one_paragraph() -> None:
    from recops.orchestration import failure_summary

    class TI:
        dag_id, task_id, run_id, try_number, max_tries = "recops_daily", "validate", "scheduled__2024-01-05", 2, 2
        log_url = "http://localhost:8080/dags/recops_daily/runs/x/tasks/validate?try_number=2"

    text = failure_summary({"ti": TI(), "logical_date": dt.datetime(2024, 1, 5, tzinfo=dt.UTC),
                            "exception": RuntimeError("recops validate exited\nwith code 3")})
    assert "\n" not in text
    for part in ("recops_daily", "'validate'", "2024-01-05T00:00:00+00:00", "try 2 of 3", "RuntimeError",
                 "with code 3", TI.log_url):
        assert part in text


def test_monitor_decision_contract() -> None:
    """The daily DAG reads {"retrain", "reason", "trigger", "dedup_key", "scores"} and the rollback task
    {"rollback", "to", "version"} from the monitor's decision."""
    from recops.monitor import MonitorParams, decide

    current = {"date": "2024-01-10", "status": "accepted", "accepted_periods": 10, "champion": None,
               "previous_champion": None, "drift": {"trigger_share": 0.0}, "performance": {}}
    first = decide(current, [], MonitorParams())
    assert first["retrain"] and first["trigger"] == "first_model" and first["rollback"] is False
    assert {"retrain", "reason", "trigger", "dedup_key", "scores", "rollback"} <= set(first)
    assert decide({**current, "accepted_periods": 3}, [], MonitorParams())["retrain"] is False  # warm-up


def test_tasks_that_move_champion_use_the_reviewer_connection(dagbag) -> None:
    """On an MLflow server with basic auth only reviewers may move `champion`: these tasks take the reviewer's
    login from an Airflow connection; every other stage runs with the pipeline account."""
    from recops.orchestration import REVIEWER_CONN_ID

    movers = {("recops_retrain", "promote"), ("recops_rollback", "rollback"), ("recops_daily", "rollback")}
    for task in stage_tasks(dagbag):
        expected = REVIEWER_CONN_ID if (task.dag_id, task.task_id) in movers else None
        assert task.mlflow_conn_id == expected, (task.dag_id, task.task_id)

