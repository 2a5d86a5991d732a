"""MLflow adapter for the stages: tracking URI, one run per stage, model downloads.

Nothing here runs at import time. The tracking URI comes from ``MLFLOW_TRACKING_URI``
when set (a server), otherwise a local SQLite store ``mlflow.db`` in the working
directory with local artifacts, so no server is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RUN_FILE = "run.json"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def client():
    """An MlflowClient bound to the configured tracking URI."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """Nested params -> MLflow's flat ``a.b.c`` keys."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run named after the pipeline stage (run name = stage name)."""
    import mlflow

    client()  # sets the tracking URI
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=stage, tags={"recops.stage": stage, **(tags or {})}) as run:
        yield run


def metric_key(name: str) -> str:
    """MLflow metric names may not contain '@'."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None, run_id: str | None = None) -> None:
    import mlflow

    clean = {metric_key(f"{prefix}{k}"): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if run_id is None:
        mlflow.log_metrics(clean, step=step)
    else:
        c = client()
        for k, v in clean.items():
            c.log_metric(run_id, k, v, step=step or 0)


def write_run_file(out_dir: Path, run_id: str, extra: dict[str, Any] | None = None) -> None:
    (Path(out_dir) / RUN_FILE).write_text(json.dumps({"run_id": run_id, **(extra or {})}, indent=1) + "\n")


def read_run_file(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `recops train` first")
    return json.loads(path.read_text())


def weights_file(model_dir: Path, uri: str = "the model") -> Path:
    """The weights-only ``model.pt`` of a downloaded pyfunc model: the artifact ``RecopsPyfunc`` loads, as
    named in its MLmodel file (falls back to the first ``model.pt`` below ``model_dir``)."""
    import yaml

    for mlmodel in sorted(Path(model_dir).rglob("MLmodel")):
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
        artifact = (((meta.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}).get("model")
        if isinstance(artifact, dict) and artifact.get("path") and (mlmodel.parent / artifact["path"]).is_file():
            return mlmodel.parent / artifact["path"]
    found = sorted(Path(model_dir).rglob("model.pt"))
    if not found:
        raise FileNotFoundError(f"{uri} holds no model.pt artifact (not a model logged by recops)")
    return found[0]


def download_model_file(name: str, version: str, dst: Path | None = None) -> Path:
    """Download ``models:/name/version`` into ``dst`` (default: a new temp folder); its weights-only model.pt."""
    import mlflow

    client()
    dst = Path(dst or tempfile.mkdtemp(prefix="recops-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    return weights_file(local, f"models:/{name}/{version}")
