"""``recops train`` under a real ``torchrun --standalone`` on CPU (gloo): one process gives the plain
loop's weights, two processes train one valid model, and only rank 0 talks to MLflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recops.config import Params
from recops.dataset import FeatureData
from recops.models.batching import make_batches
from recops.train import load_trained_model, run_train
from tests.unit.test_train import TINY_MODELS, assert_same_weights, strip_timing, write_features

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def params_for(root: Path, features: Path) -> dict:
    return {
        "model": {"kind": "sasrec", "sasrec": TINY_MODELS["sasrec"].model_dump()},
        "features": {"output_dir": str(features)},
        "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "patience": 100, "seed": 7, "device": "cpu",
                  "out_dir": str(root / "model"), "checkpoint_dir": str(root / "ckpt")},
        "evaluation": {"ks": [5, 10, 20]},
    }


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("torchrun") / "features", n_users=40, n_items=30)


def torchrun_train(root: Path, features: Path, nproc: int, *launcher: str) -> tuple[Params, str]:
    """``torchrun --standalone --nproc_per_node <nproc> <launcher> train`` in ``root`` (own params.yaml,
    own SQLite MLflow store)."""
    torchrun = shutil.which("torchrun", path=str(BIN))
    assert torchrun, f"torchrun not found next to {sys.executable}"
    raw = params_for(root, features)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RECOPS_GIT_COMMIT": "test",
                        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "RECOPS_PARAMS"):
        env.pop(var, None)
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(nproc), *launcher, "train", "--no-progress"]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-4000:]
    return Params.model_validate(raw), output


def train_runs(root: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments) if r.info.run_name == "train"]


def test_torchrun_with_one_process_matches_the_plain_loop(features, tmp_path) -> None:
    params, output = torchrun_train(tmp_path / "ddp", features, 1, "--no-python", str(BIN / "recops"))
    assert "(rank 0 of 1)" in output  # the DDP path ran (process group of one, gloo)

    plain_params = Params.model_validate(params_for(tmp_path / "plain", features))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the torchrun process
    try:
        plain = run_train(plain_params, features, progress=False)
    finally:
        torch.set_num_threads(threads)

    model, payload = load_trained_model(Path(params.train.out_dir) / "model.pt")
    assert_same_weights(model.state_dict(), plain.model.state_dict())
    assert strip_timing(payload["extra"]["history"]) == strip_timing(plain.history)
    runs = train_runs(tmp_path / "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_torchrun_with_two_processes_trains_one_valid_model(features, tmp_path) -> None:
    root = tmp_path / "ddp2"
    params, output = torchrun_train(root, features, 2, "-m", "recops")
    assert "(rank 0 of 2)" in output and "train: sasrec best epoch" in output

    model, payload = load_trained_model(Path(params.train.out_dir) / "model.pt")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    history = payload["extra"]["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["train_loss"] < history[0]["train_loss"]
    assert payload["extra"]["val_metrics"]["ndcg@10"] > 0
    # both ranks trained: the epoch's example count is the sum over the two shards (padded to equal steps)
    data = FeatureData.load(features)
    batches = make_batches(params.model.selected(), data.sequences(("train",)), data.n_items, 16,
                           generator=torch.Generator())
    assert history[0]["train_examples"] == sum(batches.shard(r, 2).n_examples for r in (0, 1))
    # rank 0 alone logged to MLflow and wrote the checkpoint and the report
    runs = train_runs(root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (root / "ckpt" / "last.pt").exists() and (root / "reports" / "train.json").exists()
