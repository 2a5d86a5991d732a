"""``recops train``: one readable training loop for every model (nanoGPT style).

::

    result = train(features, params.model, params.train, params.evaluation)
    save_trained_model(result, features, params.train.out_dir)   # -> out_dir/model.pt

What happens, in order:

1. Seed everything (torch, numpy, python) from ``train.seed`` and build the model from
   ``features.sequences(("train",))`` and ``features.item_features()``.
2. Epoch loop ``for epoch in range(start_epoch, epochs)``: shuffle the train examples with a generator
   seeded from ``(seed, epoch)``, AdamW steps with gradient clipping at 1.0 (bf16 autocast on CUDA when
   ``train.bf16``), then full-ranking validation on ``features.held_out("val")`` with
   :func:`recops.metrics.evaluate_model`. The best weights by ``val ndcg@10`` are kept; training stops
   after ``train.patience`` epochs without a gain.
3. After every epoch, ``checkpoint_dir/last.pt`` is replaced atomically. It holds the model, the
   optimizer, the best weights, the early-stopping counters, the history and every RNG state, so
   ``resume=True`` continues from the next epoch and ends exactly where an uninterrupted run would
   (bit-for-bit on CPU).

Under ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` set) the same loop is data-parallel
(:mod:`recops.distributed`): every process trains on its shard of each epoch's batches inside
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), train logs are summed over the ranks, rank 0
validates and broadcasts the metrics, and only rank 0 writes the checkpoint and the model. A world of
one gives the same weights as a plain run.

The popularity baseline has nothing to learn by gradient descent: it is fitted in closed form and goes
through a single "epoch" that only validates, so it still produces the same checkpoint and history.

Epoch numbers in histories, checkpoints and ``best_epoch`` count completed epochs from 1.
Everything written with ``torch.save`` holds only tensors and plain Python and loads with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recops import distributed
from recops.config import EvaluationParams, ModelParams, Params, TrainParams
from recops.dataset import FeatureData, HeldOut
from recops.distributed import World
from recops.metrics import evaluate_model
from recops.models import ModelConfig, build_model, checkpoint_payload, load_model
from recops.models.batching import make_batches, to_device
from recops.models.core import _plain
from recops.storage import atomic_write_file

log = logging.getLogger(__name__)

EARLY_STOPPING_METRIC = "ndcg@10"
CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.pt"
GRAD_CLIP = 1.0
REQUIRED_KS = (10, 20)  # ndcg@10 drives early stopping; recall@20 is plotted
# train settings that may change between a run and its resumption without a warning
_RESUMABLE_CHANGES = {"epochs", "patience", "device", "bf16", "out_dir", "checkpoint_dir"}


class ResumeError(ValueError):
    """The checkpoint cannot be resumed with the current params / features."""


@dataclass
class TrainResult:
    model: nn.Module                 # best weights (by val ndcg@10), eval mode, on ``device``
    config: ModelConfig
    best_epoch: int                  # 1-based; 0 if no epoch ran
    epochs_run: int                  # epochs in ``history`` (including those before a resume)
    history: list[dict[str, Any]]    # one row per epoch, see ``train``
    best_val: dict[str, float]       # validation metrics of ``best_epoch`` (unprefixed, e.g. "ndcg@10")
    stopped_early: bool
    device: str
    seconds: float = 0.0             # sum of the epochs' wall times (across resumptions)
    checkpoint_path: Path | None = None
    train_params: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- device & randomness
def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is an error."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but CUDA is not available (torch "
                           f"{torch.__version__}, built with CUDA {torch.version.cuda}); use 'auto' or 'cpu'")
    if setting not in ("cpu", "cuda"):
        raise ValueError(f"unknown device setting {setting!r}; expected auto | cpu | cuda")
    return torch.device(setting)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batching RNG for one epoch, a pure function of (seed, epoch): a resumed run sees the same batches."""
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed (dropout) of ranks > 0 for one epoch: a pure function, so a resumed job matches."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, rank]).generate_state(1, dtype=np.uint64)[0])


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors / plain Python (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"bit_generator": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(x) for x in internal], "gauss_next": gauss_next},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        for i, s in enumerate(cuda_states):
            torch.cuda.set_rng_state(s, i)
    npy = state["numpy"]
    np.random.set_state((npy["bit_generator"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms while training (restored afterwards: no lasting global side effect)."""
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


# --------------------------------------------------------------------------- files
def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None so that the JSON files stay valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_file(path, (json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n").encode())


# --------------------------------------------------------------------------- helpers
def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: checkpoint {a.get(k, '<missing>')!r} != params {b.get(k, '<missing>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<missing>") != b.get(k, "<missing>")]


def _eval_ks(ks: list[int], n_items: int) -> list[int]:
    wanted = sorted(set(ks) | set(REQUIRED_KS))
    usable = [k for k in wanted if k <= n_items]
    if 10 not in usable:
        raise ValueError(f"the catalog has {n_items} items: ndcg@10 (early stopping) needs at least 10")
    dropped = [k for k in wanted if k > n_items]
    if dropped:
        log.warning("evaluation ks %s exceed the catalog size %d and are skipped", dropped, n_items)
    return usable


def validate(model: nn.Module, held_out: HeldOut, ks: list[int], batch_size: int) -> dict[str, float]:
    """Full-ranking metrics on a held-out window (``evaluate_model`` is ``@torch.no_grad``)."""
    if len(held_out) == 0:
        return {f"ndcg@{k}": float("nan") for k in ks} | {"n_users": 0.0}
    result = evaluate_model(model, held_out.histories, held_out.targets, ks=ks, batch_size=batch_size,
                            user_idx=held_out.user_idx)
    return {k: float(v) for k, v in result.aggregate.items()}


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def _train_one_epoch(trainer: nn.Module, optimizer: torch.optim.Optimizer, batches, device: torch.device,
                     bf16: bool, desc: str, progress: bool) -> dict[str, float]:
    """One pass over ``batches`` with ``trainer(batch) -> (loss, logs)`` (a ``LossModule``, or DDP around
    one); returns the example-weighted mean loss / logs over all ranks and the throughput."""
    trainer.train()
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    sums: dict[str, float] = {}
    n_seen, t0 = 0, time.perf_counter()
    bar = tqdm(batches, total=len(batches), desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=not _progress_enabled(progress))
    for batch in bar:
        batch = to_device(batch, device)
        with autocast:
            loss, logs = trainer(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP, this also averages the gradients over the ranks
        grad_norm = torch.nn.utils.clip_grad_norm_(trainer.parameters(), GRAD_CLIP)
        optimizer.step()

        n = len(batch["user_idx"])
        n_seen += n
        logs = {k: v for k, v in logs.items() if not k.startswith("n_")} | {"grad_norm": float(grad_norm)}
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{n_seen / (time.perf_counter() - t0):.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    totals = distributed.sum_across(sums | {"n_seen": float(n_seen)}, device)
    n_seen = int(totals.pop("n_seen"))
    out = {f"train_{k}": v / max(n_seen, 1) for k, v in totals.items()}
    out["samples_per_s"] = n_seen / seconds if seconds > 0 else float("nan")
    out["train_examples"] = float(n_seen)
    return out


# --------------------------------------------------------------------------- checkpoint
def _load_checkpoint(path: Path, config: ModelConfig, features: FeatureData,
                     train_params: TrainParams) -> dict[str, Any]:
    payload = torch.load(path, weights_only=True, map_location="cpu")
    if "train_state" not in payload:
        raise ResumeError(f"{path} is not a training checkpoint (no train_state)")
    diffs = _differences(payload["config"], config.model_dump())
    if diffs:
        raise ResumeError(f"cannot resume from {path}: the model config differs from params "
                          f"({'; '.join(diffs)}); delete the checkpoint or train without --resume")
    if (payload["n_users"], payload["n_items"]) != (features.n_users, features.n_items):
        raise ResumeError(
            f"cannot resume from {path}: it was trained on {payload['n_users']} users x {payload['n_items']} items, "
            f"the features have {features.n_users} x {features.n_items}; train without --resume")
    old_train = {k: v for k, v in payload["train_state"].get("train_params", {}).items() if k not in _RESUMABLE_CHANGES}
    new_train = {k: v for k, v in train_params.model_dump(mode="json").items() if k not in _RESUMABLE_CHANGES}
    diffs = _differences(old_train, new_train)
    if diffs:
        log.warning("resuming with changed train settings (the run will differ from an uninterrupted one): %s",
                    "; ".join(diffs))
    return payload


def _save_checkpoint(path: Path, model: nn.Module, config: ModelConfig, optimizer: torch.optim.Optimizer | None,
                     train_state: dict[str, Any], metrics: dict[str, float]) -> None:
    """``last.pt``: the model (``checkpoint_payload``) plus everything needed to resume (``train_state``)."""
    train_state = {**train_state, "optimizer": optimizer.state_dict() if optimizer is not None else None}
    payload = checkpoint_payload(model, config, extra={"epoch": train_state["epoch"], "val_metrics": metrics})
    payload["train_state"] = _plain(train_state, "train_state")
    _atomic_torch_save(payload, path)


# --------------------------------------------------------------------------- the loop
def train(features: FeatureData, model_params: ModelParams, train_params: TrainParams,
          eval_params: EvaluationParams, *, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model_params.kind`` on the train split, early-stopping on val ndcg@10.

    Each history row: ``epoch`` (1-based), ``train_loss`` (None for popularity), ``train_<log>`` (the
    model's loss logs, e.g. ``train_loss_retrieval``, and ``train_grad_norm``), ``samples_per_s``
    (training examples / s; None for popularity), ``seconds`` (epoch wall time incl. validation), ``lr``
    and every validation metric prefixed ``val_`` (``val_ndcg@10``, ``val_recall@20``, ...).
    ``on_epoch(row)`` is called after each epoch's checkpoint is written.
    """
    config = model_params.selected()
    world = distributed.current()
    device = distributed.local_device(resolve_device(train_params.device), world)
    with distributed.process_group(world, device), _deterministic(device.type == "cpu"):
        return _train(features, config, train_params, eval_params, device, resume, progress and world.is_main,
                      on_epoch if world.is_main else None, world)


def _train(features: FeatureData, config: ModelConfig, tp: TrainParams, ep: EvaluationParams,
           device: torch.device, resume: bool, progress: bool,
           on_epoch: Callable[[dict[str, Any]], None] | None, world: World = World()) -> TrainResult:
    seed_everything(tp.seed)
    sequences = features.sequences(("train",))
    model = build_model(config, features.n_users, features.n_items, features.item_features())
    trainable = bool(model.trainable)
    if not trainable:  # popularity: closed form, no batches
        train_rows = features.train
        model.fit(train_rows["item_idx"].to_numpy(), train_rows["timestamp"].to_numpy())
    model.to(device)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
                 if trainable else None)

    val = features.held_out("val")
    ks = _eval_ks(list(ep.ks), features.n_items)
    if len(val) == 0:
        log.warning("no validation users: early stopping is off and the last epoch is kept")
    n_epochs = tp.epochs if trainable else 1
    ckpt_path = Path(tp.checkpoint_dir) / CHECKPOINT_NAME

    # training state (everything that goes into last.pt besides the model)
    start_epoch, history = 0, []
    best_state, best_epoch, best_metric, best_val = _state_dict_cpu(model), 0, -math.inf, {}
    bad_epochs, stopped_early = 0, False

    if resume and ckpt_path.exists():
        payload = _load_checkpoint(ckpt_path, config, features, tp)
        st = payload["train_state"]
        model.load_state_dict(payload["state_dict"])
        if optimizer is not None and st["optimizer"] is not None:
            optimizer.load_state_dict(st["optimizer"])
            for group in optimizer.param_groups:  # the current params win
                group["lr"], group["weight_decay"] = tp.lr, tp.weight_decay
        start_epoch, history = int(st["epoch"]), list(st["history"])
        best_state, best_epoch = st["best_state_dict"], int(st["best_epoch"])
        best_metric = -math.inf if st["best_metric"] is None else float(st["best_metric"])
        best_val, bad_epochs = dict(st["best_val"]), int(st["epochs_without_improvement"])
        set_rng_state(st["rng"])
        log.info("resuming from %s after epoch %d/%d (best val %s %.4f at epoch %d)", ckpt_path, start_epoch,
                 n_epochs, EARLY_STOPPING_METRIC, best_metric, best_epoch)
    elif resume:
        log.info("no checkpoint at %s: starting fresh", ckpt_path)

    trainer = distributed.wrap(model, device) if trainable else None  # after a resume: DDP syncs from rank 0
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("training %s (%d parameters) on %s for up to %d epochs: %d users, %d items%s", config.kind, n_params,
             device, n_epochs, features.n_users, features.n_items,
             f" (rank {world.rank} of {world.size})" if world.launched else "")

    stopped_early = start_epoch < n_epochs and bad_epochs >= tp.patience  # (patience may have been raised)
    if stopped_early:
        log.info("the checkpointed run already stopped early after epoch %d", start_epoch)
        start_epoch = n_epochs

    for epoch in range(start_epoch, n_epochs):
        t0 = time.perf_counter()
        if trainable:
            if world.rank > 0:  # rank 0 keeps the seeded (checkpointed) stream; the others draw their own
                torch.manual_seed(rank_seed(tp.seed, epoch, world.rank))
            batches = make_batches(config, sequences, features.n_items, tp.batch_size,
                                   generator=epoch_generator(tp.seed, epoch)).shard(world.rank, world.size)
            stats = _train_one_epoch(trainer, optimizer, batches, device, tp.bf16,
                                     desc=f"epoch {epoch + 1}/{n_epochs}", progress=progress)
        else:
            stats = {"train_loss": None, "samples_per_s": None}
        # rank 0 validates; every rank takes its metrics, so all make the same early-stopping decision
        metrics = distributed.from_main(validate(model, val, ks, ep.batch_size) if world.is_main else None)
        row = {"epoch": epoch + 1, "train_loss": stats.pop("train_loss"), "samples_per_s": stats.pop("samples_per_s")}
        row |= stats | {"lr": tp.lr if trainable else None}
        row |= {f"val_{k}": v for k, v in metrics.items()}
        row["seconds"] = time.perf_counter() - t0
        history.append(row)

        score = metrics.get(EARLY_STOPPING_METRIC, float("nan"))
        improved = len(val) == 0 or (math.isfinite(score) and score > best_metric)
        if improved:
            best_metric = score if math.isfinite(score) else best_metric
            best_epoch, best_val, bad_epochs = epoch + 1, metrics, 0
            best_state = _state_dict_cpu(model)
        else:
            bad_epochs += 1
        stop = bad_epochs >= tp.patience and epoch + 1 < n_epochs
        stopped_early = stopped_early or stop

        if world.is_main:
            _save_checkpoint(ckpt_path, model, config, optimizer, {
                "epoch": epoch + 1,
                "best_state_dict": best_state,
                "best_epoch": best_epoch,
                "best_metric": best_metric if math.isfinite(best_metric) else None,
                "best_val": best_val,
                "epochs_without_improvement": bad_epochs,
                "stopped_early": stopped_early,
                "history": history,
                "rng": rng_state(),
                "train_params": tp.model_dump(mode="json"),
            }, metrics)

        log.info("epoch %d/%d  loss %s  val %s %.4f (best %.4f @ %d)  %.1fs  %s samples/s", epoch + 1, n_epochs,
                 "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}", EARLY_STOPPING_METRIC, score,
                 best_metric, best_epoch, row["seconds"],
                 "-" if row["samples_per_s"] is None else f"{row['samples_per_s']:.0f}")
        if on_epoch is not None:
            on_epoch(dict(row))
        if stop:
            log.info("early stopping: no %s gain for %d epochs", EARLY_STOPPING_METRIC, bad_epochs)
            break

    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model, config=config, best_epoch=best_epoch, epochs_run=len(history), history=history,
        best_val=dict(best_val), stopped_early=stopped_early, device=str(device),
        seconds=float(sum(r["seconds"] for r in history)), checkpoint_path=ckpt_path,
        train_params=tp.model_dump(mode="json"),
    )


# --------------------------------------------------------------------------- the trained model
def _id_list(table, idx_col: str, id_col: str, n: int) -> list[str]:
    ids = table.set_index(idx_col)[id_col].reindex(range(n))
    if ids.isna().any():
        raise ValueError(f"the {id_col} map has no id for {int(ids.isna().sum())} of {n} indices")
    return ids.astype(str).tolist()


def save_trained_model(result: TrainResult, features: FeatureData, path: str | os.PathLike[str]) -> Path:
    """Write ``model.pt`` (+ ``history.json``, ``plots/val_ndcg.json``, ``train_metrics.json``) into the
    folder ``path`` (a path ending in ``.pt`` names the model file itself). Returns the model file path.

    ``model.pt`` = ``checkpoint_payload`` of the best weights with ``extra``: ``user_ids`` / ``item_ids``
    (ids by index), ``user_histories`` (chronological train+val+test item indices per user: what serving
    excludes), ``item_embeddings`` [n_items, d], ``popularity`` [n_items] train counts, ``best_epoch``,
    ``epochs_run``, ``val_metrics``, ``history``, ``train_params``, ``feature_meta``.
    """
    path = Path(path)
    model_path = path if path.suffix == ".pt" else path / MODEL_NAME
    out_dir = model_path.parent
    model = result.model
    model.eval()
    with torch.no_grad():
        item_embeddings = model.item_embeddings().detach().float().cpu().clone()
    item_feats = features.item_features()
    extra = {
        "user_ids": _id_list(features.users, "user_idx", "user_id", features.n_users),
        "item_ids": _id_list(features.items, "item_idx", "item_id", features.n_items),
        "user_histories": [s.tolist() for s in features.sequences(("train", "val", "test"))],
        "item_embeddings": item_embeddings,
        "popularity": item_feats["popularity"],
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_metrics": result.best_val,
        "history": result.history,
        "train_params": result.train_params,
        "feature_meta": features.meta,
    }
    _atomic_torch_save(checkpoint_payload(model, result.config, extra=extra), model_path)

    _write_json(out_dir / "history.json", result.history)
    plot = [{"epoch": r["epoch"], "ndcg@10": r.get("val_ndcg@10"), "recall@20": r.get("val_recall@20"),
             "train_loss": r.get("train_loss")} for r in result.history]
    _write_json(out_dir / "plots" / "val_ndcg.json", plot)
    _write_json(out_dir / "train_metrics.json", {
        "model": result.config.kind,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 3),
        "device": result.device,
        "val": result.best_val,
    })
    log.info("saved %s (best epoch %d, val %s %.4f)", model_path, result.best_epoch, EARLY_STOPPING_METRIC,
             result.best_val.get(EARLY_STOPPING_METRIC, float("nan")))
    return model_path


def load_trained_model(path: str | os.PathLike[str],
                       map_location: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``model.pt`` (or ``last.pt``) -> (model in eval mode, the raw payload)."""
    payload = torch.load(Path(path), weights_only=True, map_location="cpu")
    return load_model(payload, map_location=map_location), payload


def run_train(params: Params, features_dir: str | os.PathLike[str], resume: bool = False, progress: bool = True,
              on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Load the features folder, train ``params.model.kind`` and save it into ``params.train.out_dir``."""
    features = FeatureData.load(features_dir)
    result = train(features, params.model, params.train, params.evaluation, resume=resume, progress=progress,
                   on_epoch=on_epoch)
    if distributed.current().is_main:  # under torchrun, the other ranks hold the same weights
        save_trained_model(result, features, params.train.out_dir)
    return result
