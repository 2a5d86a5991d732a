"""Access control of the production stack: MLflow basic-auth accounts and grants, Airflow logins.

Used by ``scripts/stack.sh`` (native stack on 127.0.0.1) and by the compose file's init step, so both
set up the same accounts from the same environment variables. Every command is idempotent.

MLflow (server started with ``--app-name basic-auth`` and ``default_permission = READ``):

=====================  ====================================  ===========================================
account                ``recops-candidates`` / experiment    ``recops`` (production, ``@champion``)
=====================  ====================================  ===========================================
pipeline               MANAGE / EDIT: runs, model versions,  READ: the gate compares with the champion
                       ``@challenger``
reviewer               EDIT (tags ``promoted_to``)           MANAGE: copies candidates in, moves
                                                             ``@champion`` / ``@previous_champion``
admin                  everything (MLflow admin)             everything
=====================  ====================================  ===========================================

Both registered models and the experiment are created here by the admin, before the pipeline runs:
MLflow gives the creator of a registered model MANAGE on it, so the pipeline must never be the one
that creates ``recops``.

Commands (``python -m recops.access <command>``; secrets only from the environment)::

    mlflow-auth-config --out FILE   write basic_auth.ini (auth DB from RECOPS_MLFLOW_AUTH_DATABASE_URI)
    airflow-passwords --out FILE    write the simple auth manager's password file from
                                    RECOPS_AIRFLOW_<USER>_PASSWORD for every user of
                                    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS
    setup [--params FILE] [--wait S]  accounts, grants, registered models and experiment on the
                                    server at MLFLOW_TRACKING_URI, as RECOPS_MLFLOW_ADMIN_USERNAME
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("recops.access")

DEFAULT_PERMISSION = "READ"
DEFAULT_ADMIN = "admin"
DEFAULT_PIPELINE = "recops-pipeline"
DEFAULT_REVIEWER = "recops-reviewer"
PERMISSION_DENIED = "PERMISSION_DENIED"


class AccessError(RuntimeError):
    """The access setup cannot proceed (missing setting, server unreachable, refused request)."""


def _require(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise AccessError(f"environment variable {name} is not set (see docs/production-stack.md)")
    return value


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class Grant:
    username: str
    resource_type: str  # "registered_model" or "experiment"
    resource: str  # registered model name or experiment name (resolved to its id when granted)
    permission: str


@dataclass(frozen=True)
class Accounts:
    admin: Account
    pipeline: Account
    reviewer: Account

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Accounts:
        e = os.environ if environ is None else environ
        return cls(
            admin=Account(e.get("RECOPS_MLFLOW_ADMIN_USERNAME") or DEFAULT_ADMIN,
                          _require(e, "RECOPS_MLFLOW_ADMIN_PASSWORD")),
            pipeline=Account(e.get("RECOPS_MLFLOW_PIPELINE_USERNAME") or DEFAULT_PIPELINE,
                             _require(e, "RECOPS_MLFLOW_PIPELINE_PASSWORD")),
            reviewer=Account(e.get("RECOPS_MLFLOW_REVIEWER_USERNAME") or DEFAULT_REVIEWER,
                             _require(e, "RECOPS_MLFLOW_REVIEWER_PASSWORD")),
        )


def plan(accounts: Accounts, *, candidates_model: str, production_model: str, experiment: str) -> list[Grant]:
    """The grants of the pipeline and reviewer accounts (everything else: ``default_permission`` READ)."""
    pipeline, reviewer = accounts.pipeline.username, accounts.reviewer.username
    return [
        Grant(pipeline, "experiment", experiment, "EDIT"),
        Grant(pipeline, "registered_model", candidates_model, "MANAGE"),
        Grant(pipeline, "registered_model", production_model, "READ"),
        Grant(reviewer, "registered_model", candidates_model, "EDIT"),
        Grant(reviewer, "registered_model", production_model, "MANAGE"),
    ]


# --------------------------------------------------------------------------- config files
def write_mlflow_auth_config(out: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``basic_auth.ini`` for ``mlflow server --app-name basic-auth`` (MLFLOW_AUTH_CONFIG_PATH).

    It holds the auth database URI (with its password): written with mode 0600. The admin password is
    not written: the server reads it from MLFLOW_AUTH_ADMIN_PASSWORD when it creates the admin."""
    e = os.environ if environ is None else environ
    cfg = configparser.ConfigParser()
    cfg["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": _require(e, "RECOPS_MLFLOW_AUTH_DATABASE_URI"),
        "admin_username": e.get("RECOPS_MLFLOW_ADMIN_USERNAME") or DEFAULT_ADMIN,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        # Checking a password costs a PBKDF2 hash per request; cache successful checks briefly. Password
        # changes through the API invalidate the entry at once (one server worker: no stale copies).
        "auth_cache_ttl_seconds": "30",
    }
    return _write_private(out, cfg)


def airflow_users(spec: str) -> list[tuple[str, str]]:
    """``"admin:admin,reviewer:user"`` (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS) -> [(name, role)]."""
    users = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, role = item.partition(":")
        if not sep or not name or role.lower() not in ("viewer", "user", "op", "admin"):
            raise AccessError(f"bad simple auth manager user {item!r}: expected name:viewer|user|op|admin")
        users.append((name, role.lower()))
    return users


def airflow_password_var(username: str) -> str:
    return "RECOPS_AIRFLOW_" + "".join(c if c.isalnum() else "_" for c in username.upper()) + "_PASSWORD"


def write_airflow_passwords(out: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The simple auth manager's password file, ``{"user": "password"}``, from the environment (so
    Airflow never generates and prints passwords itself)."""
    e = os.environ if environ is None else environ
    users = airflow_users(_require(e, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"))
    passwords = {name: _require(e, airflow_password_var(name)) for name, _ in users}
    return _write_private(out, passwords)


def _write_private(out: Path, content: Any) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if isinstance(content, configparser.ConfigParser):
            content.write(f)
        else:
            f.write(json.dumps(content) + "\n")
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------- MLflow
def is_permission_denied(err: BaseException) -> bool:
    """An MLflow error for a request the server refused for lack of permission (HTTP 403), also when
    MLflow re-raised it under another code (``copy_model_version`` wraps it as INTERNAL_ERROR)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if getattr(current, "error_code", None) == PERMISSION_DENIED:
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


@contextlib.contextmanager
def mlflow_credentials(account: Account) -> Iterator[None]:
    """Make MLflow's REST clients authenticate as ``account`` (they read these variables per request)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(MLFLOW_TRACKING_USERNAME=account.username, MLFLOW_TRACKING_PASSWORD=account.password)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _code(err: BaseException) -> str | None:
    return getattr(err, "error_code", None)


def wait_for_server(tracking_uri: str, timeout: float) -> None:
    """Wait until ``<tracking_uri>/health`` answers (the route needs no login)."""
    import requests

    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while True:
        try:
            res = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5)
            if res.status_code == 200:
                return
            last = f"HTTP {res.status_code}"
        except requests.RequestException as err:
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() >= deadline:
            raise AccessError(f"MLflow server at {tracking_uri} not ready after {timeout:.0f}s ({last})")
        time.sleep(1)


def setup_mlflow(tracking_uri: str, accounts: Accounts, *, candidates_model: str, production_model: str,
                 experiment: str) -> list[Grant]:
    """Create or update the accounts, the registered models, the experiment and the grants. Idempotent:
    existing users get the given password, existing grants the planned level."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    if not tracking_uri.startswith(("http://", "https://")):
        raise AccessError(f"MLFLOW_TRACKING_URI must be the tracking server's URL, not {tracking_uri!r}")
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    grants = plan(accounts, candidates_model=candidates_model, production_model=production_model,
                  experiment=experiment)
    with mlflow_credentials(accounts.admin):
        try:
            admin = auth.get_user(accounts.admin.username)
        except MlflowException as err:
            raise AccessError(f"cannot log in to {tracking_uri} as {accounts.admin.username!r}: {err}") from None
        if not admin.is_admin:
            raise AccessError(f"{accounts.admin.username!r} is not an MLflow admin on {tracking_uri}")
        for account in (accounts.pipeline, accounts.reviewer):
            try:
                auth.create_user(account.username, account.password)
                log.info("created MLflow user %s", account.username)
            except MlflowException as err:
                if _code(err) != "RESOURCE_ALREADY_EXISTS":
                    raise
                auth.update_user_password(account.username, account.password)
                log.info("MLflow user %s exists: password set", account.username)
        for name, description in ((candidates_model, "Every evaluated recops model; @challenger is the newest."),
                                  (production_model, "Promoted recops models; @champion is served.")):
            try:
                client.create_registered_model(name, description=description)
                log.info("created registered model %s", name)
            except MlflowException as err:
                if _code(err) != "RESOURCE_ALREADY_EXISTS":
                    raise
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        for g in grants:
            resource_id = experiment_id if g.resource_type == "experiment" else g.resource
            try:
                auth.grant_user_permission(g.username, g.resource_type, resource_id, g.permission)
            except MlflowException as err:
                if _code(err) != "RESOURCE_ALREADY_EXISTS":
                    raise
                auth.revoke_user_permission(g.username, g.resource_type, resource_id)
                auth.grant_user_permission(g.username, g.resource_type, resource_id, g.permission)
            log.info("MLflow grant: %s %s on %s %s", g.username, g.permission, g.resource_type, g.resource)
    return grants


# --------------------------------------------------------------------------- CLI
def _registry_names(params_path: str | None) -> dict[str, str]:
    from recops.config import RegistryParams, load_params

    registry = load_params(params_path).registry if params_path else RegistryParams()
    return {"candidates_model": registry.candidates_model, "production_model": registry.production_model,
            "experiment": registry.experiment}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recops.access", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mlflow-auth-config", help="write basic_auth.ini for the MLflow server")
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("airflow-passwords", help="write the Airflow simple auth manager password file")
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("setup", help="MLflow users, registered models, experiment and grants")
    p.add_argument("--params", default=None, help="params.yaml with the registry names (default: built-in)")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the server first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="recops.access: %(message)s")
    try:
        if args.command == "mlflow-auth-config":
            print(write_mlflow_auth_config(args.out))
        elif args.command == "airflow-passwords":
            print(write_airflow_passwords(args.out))
        else:
            uri = _require(os.environ, "MLFLOW_TRACKING_URI")
            if args.wait:
                wait_for_server(uri, args.wait)
            grants = setup_mlflow(uri, Accounts.from_environ(), **_registry_names(args.params))
            print(f"MLflow access ready on {uri}: {len(grants)} grants")
    except AccessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
