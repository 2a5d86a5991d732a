"""Access control pieces that need no server: grants, generated config files, error mapping, and the
promote task's reviewer login (the running stack is exercised in tests/integration/test_stack.py)."""

from __future__ import annotations

import configparser
import json
import secrets
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST

from recops.access import (
    AccessError,
    Accounts,
    airflow_password_var,
    airflow_users,
    is_permission_denied,
    plan,
    write_airflow_passwords,
    write_mlflow_auth_config,
)
from recops.config import GateParams, RegistryParams

# throw-away values made at run time (no secret-looking literal in the repository)
ENV = {f"RECOPS_MLFLOW_{who}_PASSWORD": secrets.token_hex(4) for who in ("ADMIN", "PIPELINE", "REVIEWER")}


def grants_of(user: str, grants) -> dict[tuple[str, str], str]:
    return {(g.resource_type, g.resource): g.permission for g in grants if g.username == user}


def test_pipeline_reads_production_and_only_the_reviewer_manages_it() -> None:
    accounts = Accounts.from_environ(ENV)
    assert (accounts.pipeline.username, accounts.reviewer.username) == ("recops-pipeline", "recops-reviewer")
    grants = plan(accounts, candidates_model="cands", production_model="prod", experiment="exp")
    assert grants_of("recops-pipeline", grants) == {
        ("experiment", "exp"): "EDIT", ("registered_model", "cands"): "MANAGE", ("registered_model", "prod"): "READ"}
    assert grants_of("recops-reviewer", grants) == {
        ("registered_model", "cands"): "EDIT", ("registered_model", "prod"): "MANAGE"}


def test_accounts_need_every_password_and_take_other_names() -> None:
    with pytest.raises(AccessError, match="RECOPS_MLFLOW_REVIEWER_PASSWORD"):
        Accounts.from_environ({k: v for k, v in ENV.items() if "REVIEWER" not in k})
    renamed = Accounts.from_environ({**ENV, "RECOPS_MLFLOW_REVIEWER_USERNAME": "bob"})
    assert renamed.reviewer.username == "bob" and renamed.reviewer.password == ENV["RECOPS_MLFLOW_REVIEWER_PASSWORD"]


def test_mlflow_auth_config_reads_default_read_from_a_private_file(tmp_path: Path) -> None:
    uri = "postgresql+psycopg2://" + "u:" + secrets.token_hex(4) + "@127.0.0.1:5432/mlflow_auth"
    path = write_mlflow_auth_config(tmp_path / "auth" / "basic_auth.ini",
                                    {"RECOPS_MLFLOW_AUTH_DATABASE_URI": uri, "RECOPS_MLFLOW_ADMIN_USERNAME": "root"})
    cfg = configparser.ConfigParser()
    cfg.read(path)
    assert cfg["mlflow"]["default_permission"] == "READ"
    assert cfg["mlflow"]["database_uri"] == uri and cfg["mlflow"]["admin_username"] == "root"
    assert "admin_password" not in cfg["mlflow"]  # the server takes it from MLFLOW_AUTH_ADMIN_PASSWORD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(AccessError, match="RECOPS_MLFLOW_AUTH_DATABASE_URI"):
        write_mlflow_auth_config(tmp_path / "x.ini", {})


def test_airflow_password_file_from_the_environment(tmp_path: Path) -> None:
    users = "admin:admin, reviewer:user,ops-1:op"
    assert airflow_users(users) == [("admin", "admin"), ("reviewer", "user"), ("ops-1", "op")]
    assert airflow_password_var("ops-1") == "RECOPS_AIRFLOW_OPS_1_PASSWORD"
    passwords = {name: secrets.token_hex(4) for name in ("admin", "reviewer", "ops-1")}
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
           **{airflow_password_var(name): value for name, value in passwords.items()}}
    path = write_airflow_passwords(tmp_path / "passwords.json", env)
    assert json.loads(path.read_text()) == passwords
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(AccessError, match="RECOPS_AIRFLOW_REVIEWER_PASSWORD"):
        write_airflow_passwords(tmp_path / "p.json", {k: v for k, v in env.items() if "REVIEWER" not in k})
    with pytest.raises(AccessError, match="superuser"):
        airflow_users("admin:superuser")


def test_permission_denied_is_recognised_also_when_rewrapped() -> None:
    denied = MlflowException("403 Permission denied", error_code=PERMISSION_DENIED)
    assert is_permission_denied(denied)
    try:  # what MlflowClient.copy_model_version does with it
        try:
            raise denied
        except MlflowException as err:
            raise MlflowException("Failed to create model version copy", error_code=INTERNAL_ERROR) from err
    except MlflowException as wrapped:
        assert wrapped.error_code == "INTERNAL_ERROR" and is_permission_denied(wrapped)
    assert not is_permission_denied(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_permission_denied(ValueError("x"))


class RefusingRegistry:
    """An MlflowClient stand-in: a candidate exists, no champion, and writes to the production model get 403."""

    def __init__(self) -> None:
        self.copies = 0

    def get_model_version(self, name, version):
        return SimpleNamespace(name=name, version=version, tags={"gate.passed": "true"})

    def get_model_version_by_alias(self, name, alias):
        raise MlflowException(f"no alias {alias}", error_code=RESOURCE_DOES_NOT_EXIST)

    def get_registered_model(self, name):
        return SimpleNamespace(name=name)

    def copy_model_version(self, src, dst):
        self.copies += 1
        raise MlflowException("API request failed with error code 403 != 200", error_code=PERMISSION_DENIED)


class NoAudit:
    def append(self, entry):  # pragma: no cover - must not be reached
        raise AssertionError(f"nothing may be audited for a refused promotion: {entry}")


def test_a_refused_promotion_names_the_account_and_bootstrap_steps_aside(monkeypatch) -> None:
    from recops.registry import RegistryError, RegistryPermissionError, bootstrap_champion, promote

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "recops-pipeline")
    client = RefusingRegistry()
    with pytest.raises(RegistryPermissionError, match=r"refused .* 'recops' for account 'recops-pipeline'") as err:
        promote(client, RegistryParams(), NoAudit(), version="3", reviewer="alice", note=None)
    assert isinstance(err.value, RegistryError)  # the CLI's clear-error path
    assert bootstrap_champion(client, RegistryParams(), GateParams(), NoAudit(), version="3") is None
    assert client.copies == 2


def test_the_reviewer_login_comes_from_the_connection_for_that_task_only(monkeypatch) -> None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

    from recops.orchestration import REVIEWER_CONN_ID, StageOperator

    token = secrets.token_hex(4)
    connections = {REVIEWER_CONN_ID: SimpleNamespace(login="recops-reviewer", password=token)}

    def get_connection(conn_id):
        if conn_id not in connections:
            raise AirflowNotFoundException(conn_id)
        return connections[conn_id]

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(get_connection))
    promote = StageOperator(task_id="promote", bash_command="true", mlflow_conn_id=REVIEWER_CONN_ID)
    assert promote.mlflow_login() == {"MLFLOW_TRACKING_USERNAME": "recops-reviewer", "MLFLOW_TRACKING_PASSWORD": token}
    assert StageOperator(task_id="train", bash_command="true").mlflow_conn_id is None

    missing = StageOperator(task_id="promote", bash_command="true", mlflow_conn_id="absent")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(AirflowFailException, match="'absent' not found"):
        missing.mlflow_login()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # local dev: no accounts to switch
    assert missing.mlflow_login() == {}
    connections["empty"] = SimpleNamespace(login="", password="")
    with pytest.raises(AirflowFailException, match="no login/password"):
        StageOperator(task_id="promote", bash_command="true", mlflow_conn_id="empty").mlflow_login()
