"""One-shot set-up steps of the compose stack (docker/docker-compose.yaml); each is idempotent.

    python docker/stack_init.py storage     databases and buckets (the `stack-init` service)
    python docker/stack_init.py workspace   refresh the recops workspace from the image (build + airflow-init)
    python docker/stack_init.py airflow     metadata DB, pool, logins, reviewer connection (airflow-init)

Every setting and secret comes from the environment (the compose file passes each service only the
ones it needs); nothing secret is printed. MLflow accounts and grants are `python -m recops.access setup`
(the `mlflow-init` service), shared with the native stack (scripts/stack.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

#: Variables holding a SQLAlchemy URL whose database must exist on the PostgreSQL server.
DATABASE_URI_VARS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_BACKEND_STORE_URI", "RECOPS_MLFLOW_AUTH_DATABASE_URI")
#: Variables holding an ``s3://bucket/prefix`` URL whose bucket must exist.
BUCKET_URL_VARS = ("RECOPS_STORAGE_URL", "RECOPS_DVC_REMOTE_URL", "MLFLOW_ARTIFACTS_DESTINATION")
#: What the workspace takes from the image: the DVC project (stage commands, params, dependencies).
WORKSPACE_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config")
WORKSPACE_DIRS = ("src", "expectations")
POOL = ("recops_workspace", "1", "recops stages share one DVC workspace: one stage at a time")

T = TypeVar("T")


class InitError(RuntimeError):
    pass


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise InitError(f"environment variable {name} is not set (see docker/stack.env.example)")
    return value


def _retry(what: str, fn: Callable[[], T], seconds: float = 60.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception as err:  # the service may still be starting: retry until the deadline
            if time.monotonic() >= deadline:
                raise InitError(f"{what}: {type(err).__name__}: {err}") from None
            time.sleep(2)


# --------------------------------------------------------------------------- storage
def bucket_of(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InitError(f"expected an s3://bucket/prefix URL, got {url!r}")
    return parsed.netloc


def create_databases(env: Mapping[str, str]) -> list[str]:
    import psycopg2
    from sqlalchemy.engine import make_url

    created = []
    for var in DATABASE_URI_VARS:
        url = make_url(_require(env, var))
        if not url.get_backend_name().startswith("postgresql") or not url.database:
            raise InitError(f"{var} must be a postgresql URL with a database name")

        def connect(url=url):
            return psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                    dbname="postgres", connect_timeout=5)

        conn = _retry(f"PostgreSQL at {url.host}:{url.port or 5432}", connect)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{url.database}"')
                    created.append(url.database)
        finally:
            conn.close()
        print(f"stack-init: database {url.database} ready ({var})")
    return created


def create_buckets(env: Mapping[str, str]) -> list[str]:
    import boto3

    endpoint = _require(env, "AWS_ENDPOINT_URL")
    region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    existing = {b["Name"] for b in _retry(f"S3 at {endpoint}", s3.list_buckets).get("Buckets", [])}
    created = []
    for bucket in sorted({bucket_of(_require(env, var)) for var in BUCKET_URL_VARS}):
        if bucket not in existing:
            extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            s3.create_bucket(Bucket=bucket, **extra)
            created.append(bucket)
        print(f"stack-init: bucket {bucket} ready")
    return created


# --------------------------------------------------------------------------- workspace
def sync_workspace(source: Path, target: Path, env: Mapping[str, str]) -> None:
    """Make ``target`` the DVC workspace of the project in ``source``: its files are replaced by the
    image's (code, params, expectations); data/, reports/, dvc.lock and the DVC cache are kept."""
    target.mkdir(parents=True, exist_ok=True)
    for rel in WORKSPACE_FILES:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)
    for rel in WORKSPACE_DIRS:
        shutil.rmtree(target / rel, ignore_errors=True)
        shutil.copytree(source / rel, target / rel, ignore=shutil.ignore_patterns("__pycache__"))
    # no git in the images: DVC runs without an SCM; the S3 remote comes from the environment
    local = ["[core]", "    no_scm = true"]
    if remote := env.get("RECOPS_DVC_REMOTE_URL"):
        local[1:1] = ["    remote = stack"]
        local += ["['remote \"stack\"']", f"    url = {remote}"]
        if endpoint := env.get("AWS_ENDPOINT_URL"):
            local.append(f"    endpointurl = {endpoint}")
    (target / ".dvc" / "config.local").write_text("\n".join(local) + "\n", encoding="utf-8")
    print(f"stack-init: workspace {target} refreshed from {source}")


# --------------------------------------------------------------------------- airflow
def _airflow(*args: str) -> None:
    res = subprocess.run(["airflow", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise InitError(f"airflow {args[0]} {args[1] if len(args) > 1 else ''} failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}")


def init_airflow(env: Mapping[str, str]) -> None:
    """Metadata DB, the workspace pool, the login file of the simple auth manager, and the reviewer's
    MLflow login as an Airflow connection (only the promote / rollback tasks read it)."""
    _retry("airflow db migrate", lambda: _airflow("db", "migrate"), seconds=120)
    _airflow("pools", "set", *POOL)
    passwords = _require(env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    subprocess.run([sys.executable, "-m", "recops.access", "airflow-passwords", "--out", passwords],
                   check=True, stdout=subprocess.DEVNULL)
    tracking = urlparse(_require(env, "MLFLOW_TRACKING_URI"))
    conn_id = env.get("RECOPS_MLFLOW_REVIEWER_CONN_ID") or "recops_mlflow_reviewer"
    connection = {conn_id: {
        "conn_type": "http", "host": tracking.hostname, "port": tracking.port, "schema": tracking.scheme,
        "login": env.get("RECOPS_MLFLOW_REVIEWER_USERNAME") or "recops-reviewer",
        "password": _require(env, "RECOPS_MLFLOW_REVIEWER_PASSWORD"),
        "description": "MLflow reviewer account: used by the promote and rollback tasks only"}}
    with tempfile.TemporaryDirectory() as tmp:  # private file: no secret on a command line
        path = Path(tmp) / "connections.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(connection, f)
        _airflow("connections", "import", "--overwrite", str(path))
    print(f"stack-init: Airflow metadata DB migrated, pool {POOL[0]}, logins, connection {conn_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("storage", help="PostgreSQL databases and S3 buckets")
    ws = sub.add_parser("workspace", help="refresh the recops workspace from the project in the image")
    ws.add_argument("--source", type=Path, default=Path("/opt/recops/app"))
    ws.add_argument("--target", type=Path, default=None, help="default: RECOPS_HOME")
    sub.add_parser("airflow", help="metadata DB, pool, logins, reviewer connection")
    args = parser.parse_args(argv)
    env = os.environ
    try:
        if args.command == "storage":
            create_databases(env)
            create_buckets(env)
        elif args.command == "workspace":
            sync_workspace(args.source, args.target or Path(_require(env, "RECOPS_HOME")), env)
        else:
            init_airflow(env)
    except InitError as err:
        print(f"stack-init: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
