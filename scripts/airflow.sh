#!/usr/bin/env bash
# Local Airflow for recops (`make airflow`): scheduler, DAG processor, triggerer and API server/UI in
# one process tree (`airflow standalone`), with the DAGs of dags/ and the project's environment.
# State lives in airflow_home/ (git-ignored). Ctrl-C stops everything.
#
#   RECOPS_AIRFLOW_HOME   Airflow home (default: <repo>/airflow_home)
#   AIRFLOW__API__HOST    UI/API address (default 127.0.0.1)
#   AIRFLOW__API__PORT    UI/API port    (default 8080)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
if [[ ! -x "$BIN/airflow" ]]; then
    echo "error: $BIN/airflow not found: run 'make install' first" >&2
    exit 1
fi
export PATH="$BIN:$PATH"

# ---- Airflow
export AIRFLOW_HOME="${RECOPS_AIRFLOW_HOME:-$ROOT/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False   # auth on: log in as admin
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$AIRFLOW__API__PORT/}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:$AIRFLOW__API__PORT/execution/}"

# ---- recops (tasks inherit this environment: RECOPS_*, AWS_*, MLFLOW_* pass through)
export RECOPS_HOME="$ROOT"
export GX_ANALYTICS_ENABLED=false MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
MIRROR="$ROOT/../shared/datasets/ml-latest-small"
if [[ -z "${RECOPS_DATA_MIRROR:-}" && -d "$MIRROR" ]]; then
    RECOPS_DATA_MIRROR="$(cd "$MIRROR" && pwd)"
    export RECOPS_DATA_MIRROR
fi

mkdir -p "$AIRFLOW_HOME"
cd "$ROOT"
echo "recops: AIRFLOW_HOME=$AIRFLOW_HOME, DAGs from $AIRFLOW__CORE__DAGS_FOLDER"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
# One slot: every stage task of every recops DAG shares the one DVC workspace.
airflow pools set recops_workspace 1 "recops stages share one DVC workspace: one stage at a time" >/dev/null

# The simple auth manager generates the admin password once and keeps it in this file.
PASSWORDS="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
python -W ignore - <<'EOF' >/dev/null
from airflow.api_fastapi.app import create_auth_manager

create_auth_manager().init()  # writes the password file if it does not exist yet
EOF
PASSWORD="$(python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("admin", "?"))' "$PASSWORDS")"
cat <<EOF

  Airflow UI : http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT  (ready in about a minute)
  login      : admin / $PASSWORD   (stored in $PASSWORDS)
  DAGs start paused: unpause recops_daily to replay the calendar; recops_retrain to retrain on requests.

EOF
exec airflow standalone
