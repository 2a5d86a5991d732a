"""recops_daily: one run per period: ingest -> validate -> features -> monitor -> rollback / request_retrain."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DeltaDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from recops import orchestration as o

PARAMS = o.read_params(__file__)  # typed params.yaml (a local file), no metadata-DB call
FIRST, LAST = o.replay_calendar(PARAMS)
DAYS = o.period_days(PARAMS)

DOC = f"""
### recops_daily

One DAG run per period of `period.days` = {DAYS} day(s); the logical date (`ds`) is the period's
start, as in `recops <stage> --date D`. Catch-up replays the calendar from `replay.start_date`
(bounded by `replay.periods` when replay is on).

| task | command (same as the DVC stage) |
|---|---|
| `ingest` | `recops ingest --date {{{{ ds }}}}` |
| `validate` | `recops validate --date {{{{ ds }}}}`; exit 3 = quarantined: fails at once, **no retry** |
| `features` | `recops features --date {{{{ ds }}}}` then `dvc commit -f features` (records the version in dvc.lock) |
| `monitor` | `recops monitor --date {{{{ ds }}}}`: Evidently drift + live performance -> lake `monitoring/`, MLflow, decision |
| `rollback` | `recops rollback --auto --date {{{{ ds }}}}`: moves `champion` back when the decision says so (alert raised); MLflow reviewer login from connection `{o.REVIEWER_CONN_ID}` |
| `request_retrain` | emits `{o.RETRAIN_ASSET.uri}` (extra: reason, trigger, dedup_key, period, scores) when the monitor says so |

**One workspace.** Every stage task takes the single slot of pool `{o.POOL}`: the stages share one
DVC workspace (data/, reports/, dvc.lock, mlflow.db), so they never run concurrently, across DAGs too.
**In order.** `max_active_runs=1`: periods are processed in date order (id maps only grow, volume
checks use the trailing accepted periods, the monitor compares with earlier periods), so catch-up and
backfills (`--max-active-runs 1`) give the same lake as running the periods one by one.
A quarantined period fails its run (downstream: upstream_failed); the next period still runs.
"""


@dag(
    dag_id="recops_daily",
    schedule=DeltaDataIntervalTimetable(dt.timedelta(days=DAYS)),
    start_date=FIRST,
    end_date=LAST,
    catchup=True,
    max_active_runs=1,
    default_args=o.default_args(),
    on_failure_callback=o.on_failure,
    tags=["recops", "data"],
    doc_md=DOC,
)
def recops_daily():
    ingest = o.stage("ingest", "--date", "{{ ds }}", timeout=dt.timedelta(minutes=30))
    validate = o.stage(
        "validate", "--date", "{{ ds }}", timeout=dt.timedelta(minutes=30),
        fail_fast={o.EXIT_QUARANTINED: "the period was quarantined (see quarantine/ and its data_docs.html)"},
    )
    features = o.stage(
        "features", "--date", "{{ ds }}", timeout=dt.timedelta(minutes=30),
        then=o.dvc_command("commit", "--force", "--quiet", "features"),
    )
    monitor = o.stage("monitor", "--date", "{{ ds }}", timeout=dt.timedelta(minutes=15))
    rollback = o.stage("rollback", "--auto", "--date", "{{ ds }}", timeout=dt.timedelta(minutes=10),
                       mlflow_conn_id=o.REVIEWER_CONN_ID)

    @task(outlets=[o.RETRAIN_ASSET], execution_timeout=dt.timedelta(minutes=5))
    def request_retrain(ds=None, outlet_events=None):
        """Ask for retraining (an asset event) when the monitor's decision says so."""
        decision = o.monitor_report(ds)["decision"]
        if not decision["retrain"]:
            raise AirflowSkipException(f"no retraining for {ds}: {decision['reason']}")
        outlet_events[o.RETRAIN_ASSET].extra = {
            "reason": decision["reason"], "trigger": decision.get("trigger"), "dedup_key": decision.get("dedup_key"),
            "period": ds, "scores": decision["scores"],
        }
        return decision

    ingest >> validate >> features >> monitor >> [rollback, request_retrain()]


recops_daily()
