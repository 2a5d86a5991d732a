"""MLflow adapter: log ``model.pt`` as a pyfunc, register candidates, promote / roll back the champion.

Two registered models (names from ``params.registry``):

* ``candidates_model`` (``recops-candidates``): every trained model that was evaluated; the newest one
  carries the alias ``challenger`` and tags ``gate.passed``, ``gate.evidence``, ``data.version``,
  ``git.commit``, ``recops.model_kind``.
* ``production_model`` (``recops``): only promoted models, each a copy of a candidate version. Alias
  ``champion`` is what serving loads (``models:/recops@champion``); ``previous_champion`` is where
  ``rollback`` goes without ``--to``.

The champion is looked up from the registry on every call (never cached), so moving the alias by hand
in the MLflow UI takes effect immediately. Every promotion / rollback is appended to an audit log in the
lake (``state/audit/model_promotions.jsonl``). Every function takes an explicit ``MlflowClient``; nothing
here sets a tracking URI.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

if TYPE_CHECKING:
    from recops.config import GateParams, RegistryParams
    from recops.recommender import Recommender
    from recops.storage import Storage

log = logging.getLogger(__name__)

__all__ = [
    "ALIAS_CHALLENGER",
    "ALIAS_CHAMPION",
    "ALIAS_PREVIOUS",
    "AUDIT_KEY",
    "BOOTSTRAP_REVIEWER",
    "MODEL_ARTIFACT_NAME",
    "SIGNATURE",
    "AuditLog",
    "RecopsPyfunc",
    "RegistryError",
    "RegistryPermissionError",
    "bootstrap_champion",
    "champion",
    "data_version",
    "git_commit",
    "log_model",
    "previous_champion",
    "promote",
    "register_candidate",
    "rollback",
]

ALIAS_CHAMPION = "champion"
ALIAS_PREVIOUS = "previous_champion"
ALIAS_CHALLENGER = "challenger"
BOOTSTRAP_REVIEWER = "recops-bootstrap"
MODEL_ARTIFACT_NAME = "model"
AUDIT_KEY = "state/audit/model_promotions.jsonl"
EVIDENCE_ARTIFACT = "gate/evidence.json"
# MLflow 3.17 OSS accepts 100k characters for a model-version tag, but Databricks / older servers cap at
# 5000: keep tags portable and put the full evidence in a run artifact.
TAG_VALUE_LIMIT = 5000
DEFAULT_K = 10

# Either column may be absent: rows with a user_id are served from the user's stored history, the others
# from their ``history`` (chronological item ids of an anonymous session).
SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec(DataType.string, "user_id", required=False),
        ColSpec(Array(DataType.string), "history", required=False),
    ]),
    outputs=Schema([
        ColSpec(Array(DataType.string), "item_ids"),
        ColSpec(Array(DataType.double), "scores"),
        ColSpec(DataType.boolean, "fallback"),
    ]),
    params=ParamSchema([
        ParamSpec("k", DataType.long, DEFAULT_K),
        ParamSpec("exclude_seen", DataType.boolean, True),
    ]),
)

_ERR_NOT_FOUND = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)}
_ERR_EXISTS = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS)}


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown version, nothing to roll back to, ...)."""


class RegistryPermissionError(RegistryError):
    """The MLflow server (basic auth) refused the operation to the account in use."""


def _permission_checked(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn the server's 403 on the production model into a RegistryPermissionError that names the account
    and what the operation needs (the pipeline account only reads ``production_model``)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def checked(client: MlflowClient, params: RegistryParams, *args: Any, **kwargs: Any) -> Any:
            from recops.access import is_permission_denied

            try:
                return fn(client, params, *args, **kwargs)
            except MlflowException as err:
                if not is_permission_denied(err):
                    raise
                account = os.environ.get("MLFLOW_TRACKING_USERNAME") or "anonymous"
                raise RegistryPermissionError(
                    f"the MLflow server refused to {action} {params.production_model!r} for account {account!r}: "
                    f"this needs a reviewer account (MANAGE on {params.production_model!r}); run it with the "
                    f"reviewer's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
                ) from err

        return checked

    return wrap


def _v(mv: ModelVersion | None) -> str | None:
    """A version number as a string (MLflow 3 returns ``int`` from some stores and ``str`` from others)."""
    return None if mv is None else str(mv.version)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- pyfunc


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | str):
        return value != value or value == ""  # NaN or empty string
    return False


class RecopsPyfunc(mlflow.pyfunc.PythonModel):
    """Serving wrapper: ``predict(DataFrame[user_id | history], params={"k": 10, "exclude_seen": True})``
    -> ``DataFrame[item_ids: list[str], scores: list[float], fallback: bool]``, one row per input row.

    A row with a ``user_id`` is answered from that user's stored history (popularity fallback for unknown
    users); a row without one from its ``history`` list of item ids (anonymous session).
    """

    def load_context(self, context: Any) -> None:
        from recops.recommender import Recommender

        self.recommender: Recommender = Recommender.load(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", DEFAULT_K))
        exclude_seen = bool(params.get("exclude_seen", True))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user_id" not in frame.columns and "history" not in frame.columns:
            raise ValueError("model input needs a 'user_id' column (str) or a 'history' column (list of item ids)")
        n = len(frame)
        users = frame["user_id"].tolist() if "user_id" in frame.columns else [None] * n
        histories = frame["history"].tolist() if "history" in frame.columns else [None] * n
        user_rows = [i for i in range(n) if not _is_missing(users[i])]
        session_rows = [i for i in range(n) if _is_missing(users[i])]
        out: list[Any] = [None] * n
        rec = self.recommender
        if user_rows:
            for i, r in zip(user_rows, rec.recommend_users([str(users[i]) for i in user_rows], k, exclude_seen),
                            strict=True):
                out[i] = r
        if session_rows:
            sessions = [[] if _is_missing(histories[i]) else [str(x) for x in histories[i]] for i in session_rows]
            for i, r in zip(session_rows, rec.recommend_histories(sessions, k, exclude_seen), strict=True):
                out[i] = r
        return pd.DataFrame({
            "item_ids": [r.item_ids for r in out],
            "scores": [r.scores for r in out],
            "fallback": pd.Series([r.fallback for r in out], dtype=bool),
        }, index=frame.index)


def _package_dir() -> Path:
    import recops

    return Path(recops.__file__).resolve().parent


def _pip_requirements() -> list[str]:
    """Exact versions from the running environment of what inference imports."""
    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "pydantic", "pyyaml"):
        try:
            version = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            reqs.append(dist)
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")  # torch "2.13.0+cpu" -> a pip-installable pin
    return reqs


def _describe(model_path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(model metadata for MLmodel, an input example) read from ``model.pt``."""
    import torch

    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    extra = payload.get("extra") or {}
    meta = {
        "recops.model_kind": str(payload.get("kind")),
        "recops.n_items": int(payload.get("n_items", 0)),
        "recops.n_users": int(payload.get("n_users", 0)),
        "recops.best_epoch": extra.get("best_epoch"),
    }
    users = extra.get("user_ids") or []
    items = extra.get("item_ids") or []
    example = (pd.DataFrame({"user_id": [str(users[0])]}) if users
               else pd.DataFrame({"history": [[str(i) for i in items[:2]]]}))
    return meta, example


def log_model(model_path: Path, *, name: str = MODEL_ARTIFACT_NAME) -> ModelInfo:
    """Log ``model.pt`` as a pyfunc model of the active run (with signature, pinned requirements and the
    ``recops`` package as code, so it loads anywhere those requirements are installed) and an input example
    (checked against the signature). Also tags the run with ``recops.model_kind``."""
    run = mlflow.active_run()
    if run is None:
        raise RegistryError("log_model needs an active MLflow run (use `with mlflow.start_run():`)")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found")
    meta, example = _describe(model_path)
    mlflow.set_tag("recops.model_kind", meta["recops.model_kind"])
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=RecopsPyfunc(),
        artifacts={"model": str(model_path)},
        code_paths=[str(_package_dir())],
        pip_requirements=_pip_requirements(),
        signature=SIGNATURE,
        input_example=(example, {"k": DEFAULT_K}),
        metadata={k: v for k, v in meta.items() if v is not None},
    )


# --------------------------------------------------------------------------------------------- provenance


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """HEAD commit of the repository at ``cwd`` (``RECOPS_GIT_COMMIT`` wins, for images built without
    .git); None outside a git checkout or without git."""
    env = os.environ.get("RECOPS_GIT_COMMIT")
    if env:
        return env
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and commit else None


def data_version(dvc_lock: Path) -> dict[str, dict[str, str]]:
    """``{stage: {out_path: md5}}`` from ``dvc.lock`` (directory outs keep DVC's ``.dir`` suffix);
    ``{}`` when the file is absent."""
    try:
        text = Path(dvc_lock).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    lock = yaml.safe_load(text) or {}
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    out: dict[str, dict[str, str]] = {}
    for stage, body in sorted(stages.items()):
        hashes = {}
        for o in (body or {}).get("outs") or []:
            if isinstance(o, dict) and o.get("path") and o.get("md5"):
                hashes[str(o["path"])] = str(o["md5"])
        if hashes:
            out[str(stage)] = hashes
    return out


# --------------------------------------------------------------------------------------------- audit log


class AuditLog:
    """Append-only JSON-lines log of promotions / rollbacks in the lake.

    ``append`` is read-modify-write with an atomic whole-object write (works on local disk and S3): a crash
    never leaves a torn file. Concurrent writers could lose an entry; promotions are human-paced and run
    from one place (the CLI / the DAG), so no lock is taken.
    """

    def __init__(self, storage: Storage, key: str = AUDIT_KEY) -> None:
        self.storage = storage
        self.key = key
        self.path = storage.path(key)

    def __repr__(self) -> str:
        return f"AuditLog({self.storage.uri(self.key)!r})"

    def _read(self) -> bytes:
        try:
            return self.storage.read_bytes(self.path)
        except FileNotFoundError:
            return b""

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
        data = self._read()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        self.storage.write_bytes(self.path, data + line)

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._read().decode().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------- registry


def _tag_json(obj: Any, limit: int = TAG_VALUE_LIMIT, where: str = "") -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    if len(text) <= limit:
        return text
    suffix = f"...[truncated{'; full value in ' + where if where else ''}]"
    return text[: limit - len(suffix)] + suffix


def _ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
        return
    except MlflowException as err:
        if err.error_code not in _ERR_NOT_FOUND:
            raise
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code not in _ERR_EXISTS:  # created concurrently
            raise


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``name@alias``; None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in _ERR_NOT_FOUND or err.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE):
            return None
        raise


def _get_version(client: MlflowClient, name: str, version: str, what: str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        if err.error_code in _ERR_NOT_FOUND or err.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE):
            raise RegistryError(f"{what} version {version!r} of registered model {name!r} does not exist") from None
        raise


def _resolve_logged_model(client: MlflowClient, run_id: str, name: str) -> tuple[str, str | None]:
    """(source, model_id) for the model logged as ``name`` by ``run_id``. MLflow 3 stores logged models
    outside the run's artifacts, so ``runs:/<run>/<name>`` is resolved to ``models:/<model_id>``."""
    run = client.get_run(run_id)
    models = []
    page_token = None
    while True:
        page = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           filter_string=f"name = '{name}'", page_token=page_token)
        models.extend(m for m in page if m.source_run_id == run_id)
        page_token = page.token
        if not page_token:
            break
    if models:
        latest = max(models, key=lambda m: m.creation_timestamp or 0)
        return f"models:/{latest.model_id}", latest.model_id
    # pre-3.0 style: the model directory sits in the run's artifacts
    if any(a.path == f"{name}/MLmodel" for a in client.list_artifacts(run_id, name)):
        return f"runs:/{run_id}/{name}", None
    raise RegistryError(f"run {run_id} has no logged model named {name!r} (call registry.log_model first)")


def register_candidate(client: MlflowClient, params: RegistryParams, run_id: str, *, evidence: dict[str, Any],
                       data_version: dict[str, Any], commit: str | None, passed: bool | None = None,
                       model_kind: str | None = None, artifact_name: str = MODEL_ARTIFACT_NAME) -> ModelVersion:
    """Register the model logged by ``run_id`` as a new version of ``params.candidates_model`` and point
    ``challenger`` at it. ``passed`` defaults to ``evidence["passed"]``; ``model_kind`` to the run's
    ``recops.model_kind`` tag. The full evidence is logged to the run as ``gate/evidence.json``."""
    name = params.candidates_model
    _ensure_registered_model(client, name, "Every evaluated recops model; @challenger is the newest.")
    source, model_id = _resolve_logged_model(client, run_id, artifact_name)
    client.log_text(run_id, json.dumps(evidence, indent=1, sort_keys=True, default=str), EVIDENCE_ARTIFACT)
    if passed is None:
        passed = bool(evidence.get("passed", False))
    if model_kind is None:
        model_kind = client.get_run(run_id).data.tags.get("recops.model_kind", "unknown")
    tags = {
        "gate.passed": str(bool(passed)).lower(),
        "gate.evidence": _tag_json(evidence, where=f"runs:/{run_id}/{EVIDENCE_ARTIFACT}"),
        "data.version": _tag_json(data_version),
        "git.commit": commit or "unknown",
        "recops.model_kind": model_kind,
    }
    mv = client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model_id,
                                     description=f"{model_kind} from run {run_id}")
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, _v(mv))
    log.info("registered %s version %s (gate passed: %s)", name, _v(mv), passed)
    return client.get_model_version(name, _v(mv))


def champion(client: MlflowClient, params: RegistryParams) -> ModelVersion | None:
    """The current ``champion`` of ``params.production_model``, read from the registry on every call."""
    return _by_alias(client, params.production_model, ALIAS_CHAMPION)


def previous_champion(client: MlflowClient, params: RegistryParams) -> ModelVersion | None:
    return _by_alias(client, params.production_model, ALIAS_PREVIOUS)


def _set_or_delete_alias(client: MlflowClient, name: str, alias: str, version: str | None) -> None:
    if version is None:
        try:
            client.delete_registered_model_alias(name, alias)
        except MlflowException as err:
            if err.error_code not in _ERR_NOT_FOUND:
                raise
    else:
        client.set_registered_model_alias(name, alias, version)


@contextmanager
def _restoring_aliases(client: MlflowClient, name: str, aliases: dict[str, str | None],
                       on_failure: Callable[[BaseException], None] | None = None) -> Iterator[None]:
    """Run the body; if it raises, put every alias in ``aliases`` back to its recorded version (None =
    absent) before re-raising, so the registry never stays half-moved."""
    try:
        yield
    except BaseException as err:
        for alias, version in aliases.items():
            try:
                _set_or_delete_alias(client, name, alias, version)
            except Exception:  # keep restoring the others; the original error is what matters
                log.exception("could not restore alias %s@%s to %s", name, alias, version)
        if on_failure is not None:
            try:
                on_failure(err)
            except Exception:
                log.exception("could not record the failed registry operation")
        raise


@_permission_checked("promote a candidate into")
def promote(client: MlflowClient, params: RegistryParams, audit: AuditLog, *, version: str, reviewer: str,
            note: str | None, evidence: dict[str, Any] | None = None) -> ModelVersion:
    """Copy candidate ``version`` into ``params.production_model`` and make the copy ``champion``; the old
    champion becomes ``previous_champion``. Tags both, appends an audit entry. Returns the new champion."""
    candidates, production = params.candidates_model, params.production_model
    version = str(version)
    if not reviewer:
        raise RegistryError("promote needs a reviewer")
    candidate = _get_version(client, candidates, version, "candidate")
    old = champion(client, params)
    old_previous = previous_champion(client, params)
    _ensure_registered_model(client, production, "Promoted recops models; @champion is served.")

    new = client.copy_model_version(f"models:/{candidates}/{version}", production)
    when = _now()
    before = {ALIAS_CHAMPION: _v(old), ALIAS_PREVIOUS: _v(old_previous)}

    def record_failure(err: BaseException) -> None:
        # best effort: the copy stays (unaliased, serving nothing) and says why; the audit log says so too
        try:
            client.set_model_version_tag(production, _v(new), "promotion.failed",
                                         f"{when}: {err!r}"[:TAG_VALUE_LIMIT])
        finally:
            audit.append({"action": "promote_failed", "who": reviewer, "when": when, "candidate_version": version,
                          "copied_version": _v(new), "error": repr(err)})

    with _restoring_aliases(client, production, before, record_failure):
        client.set_registered_model_alias(production, ALIAS_CHAMPION, _v(new))
        if old is not None:
            client.set_registered_model_alias(production, ALIAS_PREVIOUS, _v(old))
        new_tags = {
            "promoted_by": reviewer,
            "promoted_at": when,
            "promoted_from": version,
            "promoted_from_model": candidates,
            "promotion_note": note or "",
            "recops.model_kind": candidate.tags.get("recops.model_kind", "unknown"),
        }
        for key in ("gate.passed", "git.commit", "data.version"):
            if key in candidate.tags:
                new_tags[key] = candidate.tags[key]
        for key, value in new_tags.items():
            client.set_model_version_tag(production, _v(new), key, value)
        if old is not None:
            client.set_model_version_tag(production, _v(old), "demoted_at", when)
            client.set_model_version_tag(production, _v(old), "demoted_by", reviewer)
        client.set_model_version_tag(candidates, version, "promoted_to", f"{production}/{_v(new)}")
        audit.append({
            "action": "promote",
            "who": reviewer,
            "when": when,
            "from": _v(old),
            "to": _v(new),
            "candidate_version": version,
            "note": note,
            "evidence": evidence,
        })
    log.info("promoted %s/%s -> %s/%s (champion; previous: %s) by %s", candidates, version, production,
             _v(new), _v(old), reviewer)
    return client.get_model_version(production, _v(new))


@_permission_checked("roll back")
def rollback(client: MlflowClient, params: RegistryParams, audit: AuditLog, *, to: str | None = None, who: str,
             reason: str) -> ModelVersion:
    """Point ``champion`` at production version ``to`` (default: ``previous_champion``); the demoted
    champion becomes ``previous_champion``. Returns the new champion."""
    production = params.production_model
    current = champion(client, params)
    old_previous = previous_champion(client, params)
    if to is None:
        if old_previous is None:
            raise RegistryError(
                f"no {ALIAS_PREVIOUS} alias on {production!r}: nothing to roll back to; pass --to VERSION"
            )
        target = old_previous
    else:
        target = _get_version(client, production, str(to), "production")
    if current is not None and _v(current) == _v(target):
        raise RegistryError(f"{production} version {_v(target)} is already the champion")
    when = _now()
    before = {ALIAS_CHAMPION: _v(current), ALIAS_PREVIOUS: _v(old_previous)}
    with _restoring_aliases(client, production, before):
        client.set_registered_model_alias(production, ALIAS_CHAMPION, _v(target))
        if current is not None:
            client.set_registered_model_alias(production, ALIAS_PREVIOUS, _v(current))
            client.set_model_version_tag(production, _v(current), "demoted_at", when)
            client.set_model_version_tag(production, _v(current), "demoted_by", who)
            client.set_model_version_tag(production, _v(current), "rollback_reason", reason)
        client.set_model_version_tag(production, _v(target), "restored_at", when)
        client.set_model_version_tag(production, _v(target), "restored_by", who)
        audit.append({
            "action": "rollback",
            "who": who,
            "when": when,
            "from": _v(current),
            "to": _v(target),
            "reason": reason,
        })
    log.info("rolled %s back from %s to %s (%s)", production, _v(current), _v(target), who)
    return client.get_model_version(production, _v(target))


def bootstrap_champion(client: MlflowClient, params: RegistryParams, gate: GateParams, audit: AuditLog, *,
                       version: str, evidence: dict[str, Any] | None = None,
                       note: str | None = None) -> ModelVersion | None:
    """With no champion yet and ``gate.allow_bootstrap``, promote candidate ``version`` (which must carry
    ``gate.passed=true``) as reviewer ``recops-bootstrap``. Returns the new champion, or None when a
    champion exists, bootstrapping is off, the candidate did not pass the gate, or the MLflow account may
    not write the production model (an access-controlled server: the first champion then needs a reviewer
    like every other)."""
    if not gate.allow_bootstrap or champion(client, params) is not None:
        return None
    candidate = _get_version(client, params.candidates_model, str(version), "candidate")
    if candidate.tags.get("gate.passed") != "true":
        log.info("not bootstrapping: candidate %s did not pass the gate", version)
        return None
    try:
        return promote(client, params, audit, version=str(version), reviewer=BOOTSTRAP_REVIEWER,
                       note=note or "bootstrap: no champion existed", evidence=evidence)
    except RegistryPermissionError as err:
        log.warning("not bootstrapping candidate %s: %s", version, err)
        return None
