"""recops_retrain: train -> evaluate -> gate -> register -> (review) approve -> promote."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from recops import orchestration as o

DOC = f"""
### recops_retrain

Runs on each retraining request (`{o.RETRAIN_ASSET.uri}`, emitted by `recops_daily`), weekly
(Monday 04:00 UTC) as a fallback, or by hand (param `reason`).

`train` -> `evaluate` -> `gate` -> `register` run the DVC stages' commands on the current features.
`gate` exit 4 (the candidate failed the gate) fails the run at once, **without retries**: the
decision is deterministic, nothing is registered, and the failure callback reports why.
`candidate` reads `reports/register.json`: a bootstrapped first champion (no champion existed)
needs no review, so `approve` and `promote` are skipped. Otherwise `approve` (Human-in-the-loop,
*Required actions* in the UI) shows the gate evidence and the MLflow run; **Approve** runs
`recops promote --version <candidate> --reviewer <who approved>`; **Reject** (or no answer within
7 days) skips `promote` and the champion stays.

**Coalescing.** `max_active_runs=1`. While a run is queued or running, the scheduler does not create
another asset-triggered run; new requests wait in the asset queue (one row per asset), and when the
run ends a single new run consumes *all* events received since the previous run (see its
*triggering asset events* and the review text). N requests during a run = 1 follow-up run.
Stage tasks use pool `{o.POOL}` (one DVC workspace shared with `recops_daily`) with a higher
priority than the daily tasks, so a waiting retraining step gets the slot first; the pool serializes
tasks, not runs, so a daily `features` can still land between two retraining steps in a narrow window.

**Scale-out** (read when this file is parsed; see `docs/scale-out.md`). `RECOPS_TRAIN_QUEUE` routes
`train` to a Celery queue, e.g. `gpu`, served by `airflow celery worker --queues gpu` on a GPU host;
unset, `train` stays on the default queue (LocalExecutor and CeleryExecutor alike). With several
executors (`LocalExecutor,CeleryExecutor`), `RECOPS_TRAIN_EXECUTOR=CeleryExecutor` hands it to Celery.
`RECOPS_TRAIN_NPROC` (`1` by default; `N` or `gpu`) runs it under `torchrun --standalone` with one
DistributedDataParallel process per GPU; rank 0 alone writes the model and logs to MLflow.
"""


@dag(
    dag_id="recops_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC"), assets=[o.RETRAIN_ASSET]
    ),
    catchup=False,
    max_active_runs=1,
    params={"reason": Param("manual run", type="string", description="Why retrain (manual runs).")},
    default_args=o.default_args(priority_weight=o.RETRAIN_PRIORITY, weight_rule="absolute"),
    on_failure_callback=o.on_failure,
    tags=["recops", "model"],
    doc_md=DOC,
)
def recops_retrain():
    gate_failed = {o.EXIT_GATE_FAILED: "the candidate failed the gate; nothing is registered"}
    train = o.stage("train", "--no-progress", timeout=dt.timedelta(hours=4), **o.train_placement())
    evaluate = o.stage("evaluate", timeout=dt.timedelta(hours=1))
    gate = o.stage("gate", timeout=dt.timedelta(hours=1), fail_fast=gate_failed)
    register = o.stage("register", timeout=dt.timedelta(minutes=30), fail_fast=gate_failed)

    @task.short_circuit(execution_timeout=dt.timedelta(minutes=5))
    def candidate(params=None, triggering_asset_events=None):
        """The registered candidate and the review text; False (skip review) when bootstrapped."""
        register = o.read_report("reports/register.json")
        if register.get("bootstrapped"):
            print(f"v{register['champion_version']} bootstrapped as the first champion: no review needed")
            return False
        run = o.read_report("data/model/run.json")
        body = o.review_body(register, o.read_report("reports/gate.json"),
                             o.retrain_reasons(params, triggering_asset_events), o.mlflow_run_url(run.get("run_id")))
        return {"version": register["candidate_version"], "body": body}

    approve = ApprovalOperator(
        task_id="approve",
        subject="Promote recops candidate v{{ ti.xcom_pull(task_ids='candidate')['version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='candidate')['body'] }}",
        defaults="Reject",
        response_timeout=dt.timedelta(days=7),
        execution_timeout=dt.timedelta(minutes=10),
        retries=0,
        doc_md="Human review of the candidate (Required actions); Approve runs `promote`.",
    )
    promote = o.stage(
        "promote", "--version", "$RECOPS_CANDIDATE_VERSION", "--reviewer", "$RECOPS_REVIEWER",
        "--note", "$RECOPS_NOTE", timeout=dt.timedelta(minutes=15), mlflow_conn_id=o.REVIEWER_CONN_ID,
        env={
            "RECOPS_CANDIDATE_VERSION": "{{ ti.xcom_pull(task_ids='candidate')['version'] }}",
            "RECOPS_REVIEWER": "{{ ti.xcom_pull(task_ids='approve')['responded_by_user']['name'] }}",
            "RECOPS_NOTE": "approved in Airflow: {{ dag.dag_id }} {{ run_id }}",
        },
    )
    train >> evaluate >> gate >> register >> candidate() >> approve >> promote


recops_retrain()
