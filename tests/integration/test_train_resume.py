"""Crash recovery: ``kill -9`` a training process mid-run, resume it, and end exactly where an
uninterrupted run with the same seed ends (CPU is deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recops.config import Params
from tests.unit.test_train import write_features

pytestmark = pytest.mark.integration

EPOCHS = 4
SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)  # same arithmetic in every process
from recops.config import Params
from recops.train import run_train
params = Params.model_validate(json.loads(sys.argv[1]))
run_train(params, sys.argv[2], resume=sys.argv[3] == "1", progress=False)
"""


def make_params(root: Path) -> Params:
    return Params.model_validate({
        "model": {"kind": "sasrec", "sasrec": {"dim": 32, "max_len": 40, "n_layers": 2, "n_heads": 2,
                                               "dropout": 0.2}},
        "train": {"epochs": EPOCHS, "batch_size": 8, "lr": 3e-3, "patience": EPOCHS, "seed": 3,
                  "device": "cpu", "out_dir": str(root / "model"), "checkpoint_dir": str(root / "ckpt")},
        "evaluation": {"ks": [10, 20]},
    })


def start(params: Params, features: Path, resume: bool) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, params.model_dump_json(), str(features), "1" if resume else "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    features = write_features(tmp_path / "features", n_users=1200, n_items=150, min_len=30, max_len=60)

    crashed = make_params(tmp_path / "crashed")
    checkpoint = Path(crashed.train.checkpoint_dir) / "last.pt"
    proc = start(crashed, features, resume=False)
    deadline = time.monotonic() + 90
    while not checkpoint.exists():  # written (atomically) after epoch 1
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint after 90 s"
        time.sleep(0.01)
    time.sleep(0.3)  # an epoch takes ~1 s: now we are inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(checkpoint, weights_only=True)["train_state"]["epoch"]
    assert 1 <= killed_at < EPOCHS, "the run finished before it could be killed"
    assert not (Path(crashed.train.out_dir) / "model.pt").exists()

    finish(start(crashed, features, resume=True))

    reference = make_params(tmp_path / "reference")
    finish(start(reference, features, resume=False))

    runs = {}
    for name, p in (("crashed", crashed), ("reference", reference)):
        last = torch.load(Path(p.train.checkpoint_dir) / "last.pt", weights_only=True)
        model = torch.load(Path(p.train.out_dir) / "model.pt", weights_only=True)
        history = json.loads((Path(p.train.out_dir) / "history.json").read_text())
        runs[name] = (last, model, history)

    (last_c, model_c, hist_c), (last_r, model_r, hist_r) = runs["crashed"], runs["reference"]
    assert len(hist_c) == len(hist_r) == EPOCHS
    assert last_c["train_state"]["epoch"] == EPOCHS
    timing = {"seconds", "samples_per_s"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in hist_c] == \
           [{k: v for k, v in r.items() if k not in timing} for r in hist_r]
    for a, b in ((last_c["state_dict"], last_r["state_dict"]), (model_c["state_dict"], model_r["state_dict"])):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert model_c["extra"]["best_epoch"] == model_r["extra"]["best_epoch"]
