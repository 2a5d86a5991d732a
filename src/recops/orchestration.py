"""Shared wiring for the Airflow DAGs in ``dags/``: paths, commands, retries, callbacks.

The DAG files only wire tasks together; everything they share lives here. Nothing in this
module imports torch, pandas, numpy, mlflow or the recops stages, and nothing touches the
Airflow metadata database or a connection, so DAG files that import it parse fast.

Every stage task runs the same ``recops <stage>`` command as the DVC stage of the same
name, in the project directory (``RECOPS_HOME``, default: the repository holding
``dags/``), through the project's own ``recops`` executable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from recops.config import Params

log = logging.getLogger("recops.airflow")

#: Every stage task takes the one slot of this pool: all stages read and write one DVC
#: workspace (data/, reports/, dvc.lock, mlflow.db), which is not safe to share.
POOL = "recops_workspace"

#: Absolute priority of the retraining tasks: above every daily task (at most 5, "downstream"
#: weights), so the next retraining step wins the pool slot over a waiting daily task.
RETRAIN_PRIORITY = 10

#: ``recops_daily`` emits an event on this asset when the monitor asks for retraining;
#: ``recops_retrain`` is scheduled on it.
RETRAIN_ASSET = Asset("recops://retraining-request")

#: Airflow connection holding the MLflow *reviewer* login (login/password). Only tasks built with
#: ``stage(..., mlflow_conn_id=REVIEWER_CONN_ID)`` (promote, rollback) read it; every other task runs
#: with the worker's own MLflow identity, the pipeline account (MLFLOW_TRACKING_USERNAME/PASSWORD).
REVIEWER_CONN_ID = os.environ.get("RECOPS_MLFLOW_REVIEWER_CONN_ID") or "recops_mlflow_reviewer"

#: Exit codes of the recops CLI that are decisions, not errors: retrying cannot change them.
EXIT_QUARANTINED = 3
EXIT_GATE_FAILED = 4

_MODULE_ROOT = Path(__file__).resolve().parents[2]  # src/recops/orchestration.py -> repository root


# --------------------------------------------------------------------------- paths & params
def project_dir(anchor: str | os.PathLike[str] | None = None) -> Path:
    """The recops workspace: ``RECOPS_HOME``, else the parent of the folder holding ``anchor``
    (pass a DAG file's ``__file__``: ``dags/x.py`` -> the repository), else this checkout."""
    if home := os.environ.get("RECOPS_HOME"):
        return Path(home).expanduser().resolve()
    if anchor is not None:
        return Path(anchor).resolve().parent.parent
    if (_MODULE_ROOT / "dvc.yaml").exists():  # an editable install of this checkout
        return _MODULE_ROOT
    return Path.cwd()


def read_params(anchor: str | os.PathLike[str] | None = None) -> Params:
    """The workspace's typed ``params.yaml`` (``RECOPS_PARAMS`` overrides the file).

    Loading it imports pydantic only (no torch), so DAG files stay fast to parse."""
    from recops.config import load_params

    path = Path(os.environ.get("RECOPS_PARAMS") or "params.yaml")
    return load_params(path if path.is_absolute() else project_dir(anchor) / path)


def period_days(params: Params) -> int:
    return params.period.days


def replay_calendar(params: Params) -> tuple[dt.datetime, dt.datetime | None]:
    """(first period start, last period start or None) as UTC datetimes.

    With replay on, the calendar is finite: ``replay.periods`` periods from ``replay.start_date``;
    bounding the DAG by it keeps catch-up from scheduling periods that hold no data."""
    start = params.replay.start_date
    first = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
    if not params.replay.enabled:
        return first, None
    return first, first + dt.timedelta(days=params.period.days * (params.replay.periods - 1))


# --------------------------------------------------------------------------- commands
def _bin(name: str) -> str:
    """An executable of the project's virtual environment (``RECOPS_BIN`` points at recops)."""
    if name == "recops" and (explicit := os.environ.get("RECOPS_BIN")):
        return explicit
    for folder in (project_dir() / ".venv" / "bin", Path(sys.executable).parent):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name) or name


class Shell(str):
    """A shell fragment passed to the command as is (e.g. ``${X:+--to "$X"}``)."""


def _quote(arg: str) -> str:
    if isinstance(arg, Shell):
        return str(arg)
    # "$NAME" stays an environment reference (values with quotes or spaces are passed safely
    # through the task's env); everything else, Jinja included, is a single shell word.
    if arg.startswith("$") and arg[1:].replace("_", "").isalnum():
        return f'"{arg}"'
    return shlex.quote(arg)


def recops_command(stage: str, *args: str) -> str:
    """``<venv>/bin/recops <stage> <args>``: the same command the DVC stage runs."""
    return " ".join([shlex.quote(_bin("recops")), stage, *(_quote(a) for a in args)])


def dvc_command(*args: str) -> str:
    return " ".join([shlex.quote(_bin("dvc")), *(_quote(a) for a in args)])


def stage_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Added to the worker's environment (``append_env=True``: RECOPS_*, AWS_*, MLFLOW_* pass through)."""
    return {
        "RECOPS_HOME": str(project_dir()),
        "PYTHONUNBUFFERED": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        "COLUMNS": "160",
        **(extra or {}),
    }


# --------------------------------------------------------------------------- retries & callbacks
def default_args(**overrides: Any) -> dict[str, Any]:
    """Retries with exponential backoff (1, 2, 4 ... minutes, at most 30), a one-hour default
    timeout and the failure summary. Note: in Airflow 3.3 ``retry_exponential_backoff`` is a
    multiplier; ``True`` would mean 1.0, i.e. a constant delay."""
    return {
        "owner": "recops",
        "depends_on_past": False,
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=1),
        "on_failure_callback": on_failure,
        **overrides,
    }


def failure_summary(context: Mapping[str, Any]) -> str:
    """One paragraph: which DAG / task / period failed, on which try, why, and where the log is."""
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or "-"
    logical = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    attempt = f"try {try_number}" + (f" of {max_tries + 1}" if isinstance(max_tries, int) else "")
    error = context.get("exception") or context.get("reason") or "unknown error"
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    try:
        url = getattr(ti, "log_url", None) or "n/a"
    except Exception:  # the URL is a convenience; never fail the callback over it
        url = "n/a"
    return (
        f"recops failure: task '{task_id}' of DAG '{dag_id}' failed for logical date "
        f"{logical.isoformat() if hasattr(logical, 'isoformat') else logical or '-'} (run {run_id}, {attempt}): "
        f"{' '.join(str(error).split())}. Log: {url}"
    )


def on_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` for tasks and DAG runs: log the summary (never raises)."""
    try:
        log.error(failure_summary(context))
    except Exception:  # pragma: no cover - a callback must not mask the real failure
        log.exception("recops: could not summarise a failure")


# --------------------------------------------------------------------------- stage tasks
class StageOperator(BashOperator):
    """A ``BashOperator`` that runs one ``recops <stage>`` command.

    Exit codes in ``fail_fast`` are decisions (3: the period was quarantined, 4: the gate
    failed), not transient errors: the task fails at once with that reason and is not retried.
    Any other non-zero exit fails normally and is retried with backoff.
    """

    def __init__(self, *, fail_fast: Mapping[int, str] | None = None, mlflow_conn_id: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("skip_on_exit_code", None)  # 99 is not a skip signal for recops
        super().__init__(**kwargs)
        self.fail_fast = dict(fail_fast or {})
        self.mlflow_conn_id = mlflow_conn_id

    def mlflow_login(self) -> dict[str, str]:
        """MLFLOW_TRACKING_USERNAME/PASSWORD from connection ``mlflow_conn_id``, for this task only.

        Without the connection the task keeps the worker's identity when MLflow is a local store (no
        accounts), and fails with a clear message when it is a server (the pipeline account may not
        write the production model)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            if (os.environ.get("MLFLOW_TRACKING_URI") or "").startswith(("http://", "https://")):
                raise AirflowFailException(
                    f"Airflow connection {self.mlflow_conn_id!r} not found: task {self.task_id!r} needs the MLflow "
                    "reviewer account (login/password) to write the production model; see docs/production-stack.md"
                ) from None
            log.info("no connection %r: %s runs with the worker's MLflow identity", self.mlflow_conn_id, self.task_id)
            return {}
        if not conn.login or not conn.password:
            raise AirflowFailException(f"Airflow connection {self.mlflow_conn_id!r} has no login/password")
        return {"MLFLOW_TRACKING_USERNAME": conn.login, "MLFLOW_TRACKING_PASSWORD": conn.password}

    def execute(self, context: Any) -> Any:
        if self.mlflow_conn_id:  # after rendering: the password never lands in the rendered fields
            self.env = {**(self.env or {}), **self.mlflow_login()}
        try:
            return super().execute(context)
        except AirflowSkipException:
            raise
        except Exception:
            proc = self.subprocess_hook.sub_process
            code = proc.returncode if proc is not None else None
            if code in self.fail_fast:
                raise AirflowFailException(
                    f"recops {self.task_id} exited with code {code}: {self.fail_fast[code]} (not retried)"
                ) from None
            raise


def stage(task_id: str, *args: str, timeout: dt.timedelta, then: str | None = None,
          env: Mapping[str, str] | None = None, launcher: Sequence[str] = (), **kwargs: Any) -> StageOperator:
    """The task for stage ``task_id``: ``recops <task_id> <args>`` in the workspace, in the pool.

    ``then`` is a shell command run after a successful stage in the same task (same pool slot);
    ``launcher`` is a command prefix that starts the recops executable (e.g. ``torchrun ... --no-python``)."""
    command = " ".join([*(shlex.quote(a) for a in launcher), recops_command(task_id, *args)])
    if then:
        command = f"{command} && {then}"
    return StageOperator(
        task_id=task_id,
        bash_command=command,
        cwd=str(project_dir()),
        env=stage_env(env),
        append_env=True,
        pool=POOL,
        execution_timeout=timeout,
        doc_md=f"Runs `recops {task_id}` (the DVC stage of the same name) in the recops workspace.",
        **kwargs,
    )


_NPROC = re.compile(r"^([1-9][0-9]*|gpu|auto)$")


def train_placement(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where and how the ``train`` task runs: ``stage("train", ..., **train_placement())``.

    Read when the DAG file is parsed (so set them for every Airflow component):

    * ``RECOPS_TRAIN_QUEUE``: the Celery queue of the task, e.g. ``gpu`` (served by
      ``airflow celery worker --queues gpu`` on a GPU host); unset: Airflow's default queue,
      which every executor (LocalExecutor included) runs.
    * ``RECOPS_TRAIN_EXECUTOR``: the executor of the task when Airflow runs several
      (``AIRFLOW__CORE__EXECUTOR=LocalExecutor,CeleryExecutor``: the first is the default), e.g.
      ``CeleryExecutor`` so that the queue above is served by a Celery worker; unset: the default
      executor. It must be one of the configured executors, or the DAG fails to import.
    * ``RECOPS_TRAIN_NPROC``: training processes on that host: ``1`` (default) runs ``recops train``;
      ``N`` or ``gpu`` (one per visible GPU) runs it under ``torchrun --standalone`` (DDP).
    """
    env = os.environ if environ is None else environ
    placement: dict[str, Any] = {}
    if queue := env.get("RECOPS_TRAIN_QUEUE", "").strip():
        placement["queue"] = queue
    if executor := env.get("RECOPS_TRAIN_EXECUTOR", "").strip():
        placement["executor"] = executor
    nproc = env.get("RECOPS_TRAIN_NPROC", "").strip() or "1"
    if not _NPROC.match(nproc):
        raise ValueError(f"RECOPS_TRAIN_NPROC={nproc!r}: expected a positive integer, 'gpu' or 'auto'")
    if nproc != "1":
        placement["launcher"] = [_bin("torchrun"), "--standalone", "--nproc_per_node", nproc, "--no-python"]
    return placement


# --------------------------------------------------------------------------- reports read by glue tasks
def read_report(relative: str) -> dict[str, Any]:
    """A JSON report of the workspace (``reports/...``)."""
    path = project_dir() / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: did the stage that writes it run?") from None


def monitor_report(ds: str) -> dict[str, Any]:
    return read_report(f"reports/monitor/date={ds}.json")


def mlflow_run_url(run_id: str | None) -> str:
    """A link to an MLflow run: ``MLFLOW_TRACKING_UI_URL`` (e.g. http://127.0.0.1:5000), else the
    tracking URI, else the local SQLite store (then ``mlflow ui`` serves it)."""
    base = (os.environ.get("MLFLOW_TRACKING_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
    if not run_id:
        return base or "n/a"
    if base.startswith(("http://", "https://")):
        return f"{base}/#/runs/{run_id}"  # MLflow's direct run page
    store = base or f"sqlite:///{project_dir() / 'mlflow.db'}"
    return f"run {run_id} in {store} (open it with `mlflow ui --backend-store-uri {store}`)"


def retrain_reasons(params: Mapping[str, Any] | None, triggering_asset_events: Any) -> list[str]:
    """Why this retraining run exists: the monitor's requests it consumed (one per coalesced
    asset event), else the ``reason`` param of a manual run."""
    reasons = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            reasons.append(f"{extra.get('period', '?')}: {extra.get('reason', 'no reason recorded')}")
    if not reasons:
        reasons.append(str((params or {}).get("reason") or "manual run"))
    return reasons


def review_body(register: Mapping[str, Any], gate: Mapping[str, Any], reasons: list[str], run_url: str) -> str:
    """Markdown shown to the reviewer in the approval task."""
    cand = gate.get("candidate") or {}
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(cand.items()) if isinstance(v, int | float) and k != "n_users")
    lines = [
        f"**Candidate** `{register.get('candidate_model')}` v{register.get('candidate_version')} "
        f"(champion now: v{register.get('champion_version') or 'none'})",
        "",
        f"**Why retrain:** {'; '.join(reasons) or 'not recorded'}",
        "",
        f"**Gate:** {'passed' if gate.get('passed') else 'FAILED'}; {'; '.join(gate.get('reasons') or []) or 'no remarks'}",
        "",
        f"**Test metrics:** {metrics or 'n/a'}",
        "",
        f"**MLflow run:** {run_url}",
        "",
        "Approve to promote this version to champion (`recops promote`); reject to keep the champion.",
    ]
    return "\n".join(lines)
