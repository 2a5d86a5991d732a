"""Model lifecycle stages: train, evaluate, gate, register, promote, rollback.

Each function here is the I/O shell around a pure core (``train``, ``evaluate``,
``gate``): it reads the stage's inputs from files, records an MLflow run named after
the stage, and writes the stage's outputs (the DVC outs / metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recops import manifests, tracking
from recops.config import Params
from recops.storage import Storage

log = logging.getLogger(__name__)

EVAL_DIR = Path("data/eval")
PER_USER = EVAL_DIR / "per_user.parquet"
CHAMPION_PER_USER = EVAL_DIR / "champion_per_user.parquet"


class GateFailed(RuntimeError):
    """The candidate did not pass the gate; nothing was registered."""


@dataclass(frozen=True)
class Lineage:
    commit: str | None
    data_version: dict[str, Any]

    def tags(self) -> dict[str, str]:
        return {"git.commit": self.commit or "unknown", "data.features_sha256": self.data_version.get("features_sha256", "")}


def features_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob("*")):
        if p.is_file():
            h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def lineage(params: Params) -> Lineage:
    from recops.registry import data_version, git_commit

    return Lineage(
        commit=git_commit(),
        data_version={
            "dvc_lock": data_version(Path("dvc.lock")),
            "features_sha256": features_digest(Path(params.features.output_dir)),
            "logical_date": json.loads((Path(params.features.output_dir) / "meta.json").read_text()).get("logical_date"),
        },
    )


# --------------------------------------------------------------------------- train
def train_stage(params: Params, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    import mlflow

    from recops.registry import log_model
    from recops.train import run_train

    lin = lineage(params)
    with tracking.stage_run("train", params.registry.experiment, lin.tags()) as run:
        mlflow.log_params(tracking.flatten("", {
            "model": params.model.selected().model_dump(), "train": params.train.model_dump(),
            "features": params.features.model_dump(mode="json"),
        }))
        mlflow.log_dict(lin.data_version, "data_version.json")

        def on_epoch(row: dict[str, Any]) -> None:
            tracking.log_metrics({k: v for k, v in row.items() if k != "epoch" and v is not None}, step=int(row["epoch"]))

        result = run_train(params, params.features.output_dir, resume=resume, progress=progress, on_epoch=on_epoch)
        out = Path(params.train.out_dir)
        tracking.log_metrics(result.best_val, prefix="best_val_")
        mlflow.log_metric("best_epoch", result.best_epoch)
        mlflow.log_artifact(str(out / "history.json"))
        log_model(out / "model.pt")
        tracking.write_run_file(out, run.info.run_id, {"model": result.config.kind})
    summary = json.loads((out / "train_metrics.json").read_text())
    plots = manifests.REPORT_DIR / "plots" / "val_curve.json"
    plots.parent.mkdir(parents=True, exist_ok=True)
    plots.write_text((out / "plots" / "val_ndcg.json").read_text())
    summary["mlflow_run_id"] = run.info.run_id
    manifests.write_report("train", summary)
    return summary


# --------------------------------------------------------------------------- evaluate
def _evaluate_file(model_path: Path, params: Params, features):
    from recops.evaluate import evaluate
    from recops.train import load_trained_model

    model, payload = load_trained_model(model_path)
    return evaluate(model, payload["extra"]["user_ids"], payload["extra"]["item_ids"], features, params.evaluation)


def evaluate_stage(params: Params) -> dict[str, Any]:
    from recops.dataset import FeatureData

    features = FeatureData.load(params.features.output_dir)
    out = Path(params.train.out_dir)
    ev = _evaluate_file(out / "model.pt", params, features)
    baseline = _popularity_baseline(features, params)
    report = {**ev.as_dict(), "popularity_baseline": baseline}
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    ev.per_user.to_parquet(PER_USER, index=False)
    manifests.write_report("evaluate", report)
    train_run = tracking.read_run_file(out)["run_id"]
    with tracking.stage_run("evaluate", params.registry.experiment, {"recops.train_run_id": train_run}):
        tracking.log_metrics(ev.overall, prefix="test_")
        for name, values in ev.slices.items():
            tracking.log_metrics(values, prefix=f"test_{name}_")
        import mlflow

        mlflow.log_dict(report, "evaluation.json")
    tracking.log_metrics(ev.overall, prefix="test_", run_id=train_run)  # next to the model it describes
    return report


def _popularity_baseline(features, params: Params) -> dict[str, float]:
    """Popularity on the same cases: the number every model must beat."""
    from recops.evaluate import evaluate
    from recops.models import build_model
    from recops.models.config import PopularityConfig

    pop = build_model(PopularityConfig(), features.n_users, features.n_items,
                      {"popularity": features.item_features()["popularity"]})
    users = features.users.sort_values("user_idx")["user_id"].tolist()
    items = features.items.sort_values("item_idx")["item_id"].tolist()
    return evaluate(pop, users, items, features, params.evaluation).overall


# --------------------------------------------------------------------------- gate
def gate_stage(params: Params) -> dict[str, Any]:
    from recops.dataset import FeatureData
    from recops.gate import decide
    from recops.registry import champion

    report = json.loads(manifests.report_path("evaluate").read_text())
    candidate = pd.read_parquet(PER_USER)
    client = tracking.client()
    current = champion(client, params.registry)
    champ_frame, champ_version = None, None
    if current is not None:
        champ_version = str(current.version)
        features = FeatureData.load(params.features.output_dir)
        model_file = tracking.download_model_file(params.registry.production_model, champ_version)
        champ_eval = _evaluate_file(model_file, params, features)
        champ_frame = champ_eval.per_user
        champ_frame.to_parquet(CHAMPION_PER_USER, index=False)
    decision = decide(report["overall"], params.gate, candidate, champ_frame, champ_version)
    result = {**decision.as_dict(), "candidate": report["overall"]}
    manifests.write_report("gate", result)
    train_run = tracking.read_run_file(Path(params.train.out_dir))["run_id"]
    with tracking.stage_run("gate", params.registry.experiment, {"recops.train_run_id": train_run,
                                                                  "gate.passed": str(decision.passed).lower()}):
        import mlflow

        mlflow.log_dict(result, "gate.json")
        mlflow.log_metric("gate_passed", float(decision.passed))
    if not decision.passed:
        raise GateFailed("gate failed: " + "; ".join(decision.reasons))
    return result


# --------------------------------------------------------------------------- register / promote / rollback
def _audit(params: Params, storage: Storage):
    from recops.registry import AuditLog

    return AuditLog(storage)


def register_stage(params: Params, storage: Storage) -> dict[str, Any]:
    from recops.registry import bootstrap_champion, champion, register_candidate

    gate = json.loads(manifests.report_path("gate").read_text())
    if not gate.get("passed"):
        raise GateFailed("the gate did not pass (reports/gate.json): nothing is registered")
    train_run = tracking.read_run_file(Path(params.train.out_dir))["run_id"]
    lin = lineage(params)
    client = tracking.client()
    with tracking.stage_run("register", params.registry.experiment, {"recops.train_run_id": train_run}):
        mv = register_candidate(client, params.registry, train_run, evidence=gate, data_version=lin.data_version,
                                commit=lin.commit)
        result: dict[str, Any] = {"candidate_model": params.registry.candidates_model, "candidate_version": str(mv.version),
                                  "alias": "challenger", "champion_version": None, "bootstrapped": False}
        if gate.get("bootstrap_champion") and champion(client, params.registry) is None:
            prod = bootstrap_champion(client, params.registry, params.gate, _audit(params, storage),
                                      version=str(mv.version), evidence=gate)
            if prod is not None:
                result.update(champion_version=str(prod.version), bootstrapped=True)
        current = champion(client, params.registry)
        result["champion_version"] = str(current.version) if current else None
        import mlflow

        mlflow.log_dict(result, "register.json")
    manifests.write_report("register", result)
    return result


def promote_stage(params: Params, storage: Storage, version: str, reviewer: str, note: str | None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    from recops.registry import RegistryError, promote
    from recops.serving.check import ServingCheckFailed

    client = tracking.client()
    try:
        mv = client.get_model_version(params.registry.candidates_model, version)
    except MlflowException:
        raise RegistryError(f"version {version} of {params.registry.candidates_model} not found") from None
    try:
        evidence = json.loads(mv.tags.get("gate.evidence", "{}") or "{}")
    except json.JSONDecodeError:  # truncated to MLflow's tag limit: the full copy is a run artifact
        evidence = {"truncated": mv.tags.get("gate.evidence")}
    check = serving_check_stage(params, str(version), client)
    if not check.passed:
        raise ServingCheckFailed(f"promotion refused: {check.message()}")
    prod = promote(client, params.registry, _audit(params, storage), version=str(version), reviewer=reviewer,
                   note=note, evidence={**evidence, "serving_check": check.summary()})
    return {"champion_model": params.registry.production_model, "champion_version": str(prod.version),
            "candidate_version": str(version), "reviewer": reviewer, "serving_check": check.summary()}


def serving_check_stage(params: Params, version: str, client=None, model: str | None = None):
    """Load ``model`` (default: the candidates model) ``version`` as ``recops serve`` would and run the serving
    check (``recops.serving.check``); the result is tagged on the version as ``serving_check``."""
    from mlflow.exceptions import MlflowException

    from recops.registry import RegistryError
    from recops.serving.check import check_registered

    model = model or params.registry.candidates_model
    client = client or tracking.client()
    try:
        client.get_model_version(model, str(version))
    except MlflowException:
        raise RegistryError(f"version {version} of {model} not found") from None
    result = check_registered(params.serving, model, str(version))
    client.set_model_version_tag(model, str(version), "serving_check",
                                 json.dumps(result.summary(), sort_keys=True)[:5000])
    return result


def rollback_stage(params: Params, storage: Storage, to: str | None, who: str, reason: str) -> dict[str, Any]:
    from recops.registry import rollback

    client = tracking.client()
    mv = rollback(client, params.registry, _audit(params, storage), to=to, who=who, reason=reason)
    return {"champion_model": params.registry.production_model, "champion_version": str(mv.version)}
