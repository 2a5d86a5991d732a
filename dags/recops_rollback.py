"""recops_rollback: move the champion back (manual only)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag

from recops import orchestration as o

DOC = f"""
### recops_rollback

Manual only. Trigger with `target` (`previous` = the `previous_champion` alias, or a version of the
production model), `who` and `reason`; one task runs
`recops rollback [--to N] --who <who> --reason <reason>`, which moves the `champion` alias and appends
to the audit log. Uses pool `{o.POOL}` like every stage.
"""


@dag(
    dag_id="recops_rollback",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params={
        "target": Param("previous", type="string", pattern=r"^(previous|[0-9]+)$",
                        description="'previous' or a production model version number."),
        "who": Param(type="string", minLength=1, description="Who rolls back (audit log)."),
        "reason": Param(type="string", minLength=1, description="Why (audit log)."),
    },
    default_args=o.default_args(retries=1),
    on_failure_callback=o.on_failure,
    tags=["recops", "model"],
    doc_md=DOC,
)
def recops_rollback():
    o.stage(
        "rollback", o.Shell('${RECOPS_TO:+--to "$RECOPS_TO"}'), "--who", "$RECOPS_WHO", "--reason", "$RECOPS_REASON",
        timeout=dt.timedelta(minutes=15), mlflow_conn_id=o.REVIEWER_CONN_ID,
        env={
            "RECOPS_TO": "{{ '' if params.target == 'previous' else params.target }}",
            "RECOPS_WHO": "{{ params.who }}",
            "RECOPS_REASON": "{{ params.reason }}",
        },
    )


recops_rollback()
