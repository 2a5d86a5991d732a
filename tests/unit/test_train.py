"""The training loop on tiny synthetic features (every test trains for well under a second per epoch)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recops.config import EvaluationParams, FeatureParams, ModelParams, Params, TrainParams
from recops.dataset import FeatureData
from recops.features import build_features, write_feature_dir
from recops.metrics import evaluate_model
from recops.models import PopularityConfig, SASRecConfig, TwoTowerConfig, build_model
from recops.train import (
    ResumeError,
    TrainResult,
    load_trained_model,
    resolve_device,
    run_train,
    save_trained_model,
    train,
)

TIMING_KEYS = {"seconds", "samples_per_s"}

TINY_MODELS = {
    "sasrec": SASRecConfig(dim=16, max_len=16, n_layers=1, n_heads=2, dropout=0.2),
    "two_tower": TwoTowerConfig(dim=16, history_len=8, dropout=0.1),
    "popularity": PopularityConfig(),
}


# ------------------------------------------------------------------------------------ synthetic features
def walk_events(n_users: int = 40, n_items: int = 30, min_len: int = 12, max_len: int = 24,
                seed: int = 0, late_users: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users walk through the catalog (item i is mostly followed by i + 1) over one shared month, so every
    user has train, val and test events under a global time split and the next item is learnable.
    ``late_users`` extra users only arrive in the last two days (no train events)."""
    rng = np.random.default_rng(seed)
    t0 = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    rows = []
    for u in range(n_users + late_users):
        length = int(rng.integers(min_len, max_len + 1))
        item = int(rng.integers(n_items))
        start = t0 if u < n_users else t0 + 28 * 86400
        times = np.sort(rng.integers(start, t0 + 30 * 86400, size=length))
        seen = set()
        for t in times:
            while item in seen:  # no re-watches: every held-out item is something to discover
                item = (item + 1) % n_items
            seen.add(item)
            rows.append((f"u{u}", f"i{item}", 4.0 + 0.5 * float(rng.integers(0, 3)), int(t)))
            item = (item + 1) % n_items if rng.random() < 0.85 else int(rng.integers(n_items))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    catalog = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "title": [f"Movie {i} ({1980 + i % 40})" for i in range(n_items)],
        "genres": ["|".join(genres[: 1 + i % 4]) for i in range(n_items)],
    })
    return events, catalog


def feature_set(**kwargs):
    events, catalog = walk_events(**kwargs)
    params = FeatureParams(kcore={"user": 1, "item": 1})
    return build_features(events, catalog, params, logical_date=dt.date(2024, 2, 1))


def write_features(folder: Path, **kwargs) -> Path:
    """A features folder in the real on-disk format (what ``recops features`` writes)."""
    write_feature_dir(feature_set(**kwargs), Path(folder))
    return Path(folder)


@pytest.fixture(scope="module")
def features() -> FeatureData:
    fs = feature_set()
    return FeatureData(interactions=fs.interactions, users=fs.users, items=fs.items, meta=fs.meta)


def params(kind: str, tmp_path: Path, **train_kw) -> tuple[ModelParams, TrainParams, EvaluationParams]:
    cfg = TINY_MODELS[kind]
    mp = ModelParams(kind=kind, **{kind: cfg})
    defaults = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "patience": 100, "seed": 7, "device": "cpu",
                "out_dir": str(tmp_path / "model"), "checkpoint_dir": str(tmp_path / "ckpt")}
    return mp, TrainParams(**(defaults | train_kw)), EvaluationParams(ks=[5, 10, 20])


def run(features: FeatureData, kind: str, tmp_path: Path, resume: bool = False, **train_kw) -> TrainResult:
    mp, tp, ep = params(kind, tmp_path, **train_kw)
    return train(features, mp, tp, ep, resume=resume, progress=False)


def strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------ tests
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_synthetic_features_have_val_users(features):
    val = features.held_out("val")
    assert len(val) >= 30 and features.n_items == 30


@pytest.mark.parametrize("kind", ["sasrec", "two_tower"])
def test_loss_decreases_and_history_rows(features, kind, tmp_path):
    rows = []
    result = train(features, *params(kind, tmp_path, epochs=6), progress=False, on_epoch=rows.append)
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.9 * losses[0], losses
    assert result.epochs_run == 6 and not result.stopped_early and result.device == "cpu"
    assert rows == result.history
    row = result.history[-1]
    for key in ("epoch", "train_loss", "samples_per_s", "seconds", "val_ndcg@10", "val_recall@20", "val_ndcg@5"):
        assert key in row, key
    assert [r["epoch"] for r in result.history] == list(range(1, 7))
    best = max(result.history, key=lambda r: r["val_ndcg@10"])
    assert result.best_epoch == best["epoch"] and result.best_val["ndcg@10"] == best["val_ndcg@10"]
    assert not result.model.training


@pytest.mark.parametrize("kind", ["sasrec", "two_tower"])
def test_same_seed_same_history_and_weights_on_cpu(features, kind, tmp_path):
    a = run(features, kind, tmp_path / "a", epochs=2)
    b = run(features, kind, tmp_path / "b", epochs=2)
    assert strip_timing(a.history) == strip_timing(b.history)
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    c = run(features, kind, tmp_path / "c", epochs=2, seed=8)
    assert strip_timing(c.history) != strip_timing(a.history)


def test_best_weights_are_returned(features, tmp_path):
    result = run(features, "sasrec", tmp_path, epochs=3)
    metrics = evaluate_model(result.model, *_val_args(features))
    assert metrics.aggregate["ndcg@10"] == pytest.approx(result.best_val["ndcg@10"], abs=1e-9)


def _val_args(features):
    val = features.held_out("val")
    return val.histories, val.targets, [5, 10, 20], 1024, None, val.user_idx


def test_early_stopping_when_val_cannot_improve(features, tmp_path):
    # lr so small that the weights do not move: val ndcg@10 stays put and never improves after epoch 1
    result = run(features, "sasrec", tmp_path, epochs=10, patience=1, lr=1e-12)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1
    assert result.history[0]["val_ndcg@10"] == result.history[1]["val_ndcg@10"]
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["stopped_early"] and ckpt["train_state"]["epoch"] == 2


def test_checkpoint_loads_weights_only(features, tmp_path):
    result = run(features, "two_tower", tmp_path, epochs=2)
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["kind"] == "two_tower" and ckpt["config"] == TINY_MODELS["two_tower"].model_dump()
    st = ckpt["train_state"]
    assert st["epoch"] == 2 and len(st["history"]) == 2 and st["optimizer"]["state"]
    assert set(st["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert isinstance(st["rng"]["numpy"]["keys"], torch.Tensor)
    assert st["best_epoch"] == result.best_epoch
    assert_same_weights(st["best_state_dict"], {k: v.cpu() for k, v in result.model.state_dict().items()})
    assert strip_timing(st["history"]) == strip_timing(result.history)


def test_saved_model_carries_everything_serving_needs(features, tmp_path):
    result = run(features, "sasrec", tmp_path, epochs=2)
    path = save_trained_model(result, features, tmp_path / "model")
    assert path == tmp_path / "model" / "model.pt"
    payload = torch.load(path, weights_only=True)
    extra = payload["extra"]
    assert payload["config"] == TINY_MODELS["sasrec"].model_dump()
    users = features.users.sort_values("user_idx")
    assert extra["user_ids"] == users["user_id"].tolist() and len(extra["item_ids"]) == features.n_items
    full = features.sequences(("train", "val", "test"))
    assert [len(h) for h in extra["user_histories"]] == [len(s) for s in full]
    assert extra["user_histories"][3] == full[3].tolist()
    assert extra["item_embeddings"].shape == (features.n_items, 16)
    assert extra["popularity"].shape == (features.n_items,)
    assert extra["best_epoch"] == result.best_epoch and extra["val_metrics"] == result.best_val
    assert extra["feature_meta"] == features.meta

    model, loaded = load_trained_model(path)
    assert loaded["extra"]["best_epoch"] == result.best_epoch and not model.training
    torch.testing.assert_close(model.item_embeddings(), extra["item_embeddings"])
    metrics = evaluate_model(model, *_val_args(features))
    assert metrics.aggregate["ndcg@10"] == pytest.approx(result.best_val["ndcg@10"], abs=1e-9)

    out = tmp_path / "model"
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    plot = json.loads((out / "plots" / "val_ndcg.json").read_text())
    assert set(plot[0]) == {"epoch", "ndcg@10", "recall@20", "train_loss"}
    summary = json.loads((out / "train_metrics.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["epochs_run"] == 2
    assert summary["device"] == "cpu" and summary["val"]["ndcg@10"] == result.best_val["ndcg@10"]


@pytest.mark.parametrize("half_life", [None, 7.0])
def test_popularity_goes_through_the_same_path(features, tmp_path, half_life):
    mp, tp, ep = params("popularity", tmp_path, epochs=30)
    mp = ModelParams(kind="popularity", popularity=PopularityConfig(half_life_days=half_life))
    result = train(features, mp, tp, ep, progress=False)
    assert result.epochs_run == 1 and result.best_epoch == 1 and not result.stopped_early
    assert result.history[0]["train_loss"] is None and result.best_val["ndcg@10"] > 0
    if half_life is None:
        counts = np.bincount(features.train["item_idx"], minlength=features.n_items)
        assert torch.equal(result.model.scores, torch.from_numpy(counts.astype(np.float32)))
    path = save_trained_model(result, features, tmp_path / "model")
    model, payload = load_trained_model(path)
    assert torch.equal(model.scores, result.model.scores)
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["train_state"]["optimizer"] is None
    json.loads((tmp_path / "model" / "plots" / "val_ndcg.json").read_text())  # valid JSON (no NaN)


def test_resume_continues_to_the_same_end(features, tmp_path):
    reference = run(features, "sasrec", tmp_path / "ref", epochs=4)
    first = run(features, "sasrec", tmp_path / "split", epochs=2)
    assert first.epochs_run == 2
    resumed = run(features, "sasrec", tmp_path / "split", resume=True, epochs=4)
    assert resumed.epochs_run == 4
    assert strip_timing(resumed.history) == strip_timing(reference.history)
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())
    last = {p: torch.load(p / "ckpt" / "last.pt", weights_only=True) for p in (tmp_path / "ref", tmp_path / "split")}
    assert_same_weights(*(c["state_dict"] for c in last.values()))
    # resuming a finished run trains nothing and returns the same result
    again = run(features, "sasrec", tmp_path / "split", resume=True, epochs=4)
    assert again.history == resumed.history and again.best_epoch == resumed.best_epoch


def test_resume_without_checkpoint_starts_fresh(features, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="recops.train"):
        result = run(features, "sasrec", tmp_path, resume=True, epochs=1)
    assert result.epochs_run == 1 and "starting fresh" in caplog.text


def test_resume_with_changed_model_config_fails(features, tmp_path):
    run(features, "sasrec", tmp_path, epochs=1)
    mp, tp, ep = params("sasrec", tmp_path, epochs=2)
    changed = ModelParams(kind="sasrec", sasrec=TINY_MODELS["sasrec"].model_copy(update={"dim": 8}))
    with pytest.raises(ResumeError, match=r"dim: checkpoint 16 != params 8"):
        train(features, changed, tp, ep, resume=True, progress=False)
    other = ModelParams(kind="two_tower", two_tower=TINY_MODELS["two_tower"])
    with pytest.raises(ResumeError, match="kind: checkpoint 'sasrec' != params 'two_tower'"):
        train(features, other, tp, ep, resume=True, progress=False)


def test_deterministic_mode_is_restored(features, tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    run(features, "popularity", tmp_path)
    assert torch.are_deterministic_algorithms_enabled() == before


def test_two_tower_users_without_train_examples_contribute_nothing(tmp_path):
    model = build_model(TINY_MODELS["two_tower"], 5, 30, None)
    assert torch.count_nonzero(model.user_id.weight) == 0
    fs = feature_set(late_users=5)
    features = FeatureData(interactions=fs.interactions, users=fs.users, items=fs.items, meta=fs.meta)
    result = run(features, "two_tower", tmp_path, epochs=1, weight_decay=0.1)
    trained = torch.tensor([len(s) >= 2 for s in features.sequences(("train",))])
    assert (~trained).sum() == 5
    weight = result.model.user_id.weight.detach()
    assert torch.count_nonzero(weight[~trained]) == 0 and torch.count_nonzero(weight[trained]) > 0


def test_run_train_from_a_features_folder(tmp_path):
    folder = write_features(tmp_path / "features", n_users=20, n_items=25)
    p = Params.model_validate({
        "model": {"kind": "sasrec", "sasrec": TINY_MODELS["sasrec"].model_dump()},
        "train": {"epochs": 1, "device": "cpu", "out_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "ck")},
    })
    result = run_train(p, folder, progress=False)
    assert result.epochs_run == 1 and (tmp_path / "out" / "model.pt").exists()
    assert (tmp_path / "ck" / "last.pt").exists() and (tmp_path / "out" / "train_metrics.json").exists()


@pytest.mark.gpu
def test_one_epoch_on_cuda_with_bf16(features, tmp_path):
    """GPU machines only (`make test-gpu`); `make test` deselects the gpu marker."""
    assert torch.cuda.is_available(), "the gpu tests need CUDA: run them on a GPU machine (make test-gpu)"
    for kind in ("sasrec", "two_tower"):
        result = run(features, kind, tmp_path / kind, epochs=1, device="cuda", bf16=True)
        assert result.device.startswith("cuda") and math.isfinite(result.history[0]["train_loss"])
        assert next(result.model.parameters()).is_cuda
        path = save_trained_model(result, features, tmp_path / kind / "model")
        model, _ = load_trained_model(path)
        assert not next(model.parameters()).is_cuda
