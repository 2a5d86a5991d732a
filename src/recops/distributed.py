"""Data-parallel training under ``torchrun`` (``DistributedDataParallel``).

``recops train`` is the same command on one process and on many::

    recops train                                                       # one process
    torchrun --standalone --nproc_per_node 4 -m recops train           # 4 processes, one per GPU
    torchrun --standalone --nproc_per_node 4 --no-python recops train  # the same, via the entry point

``torchrun`` gives every process ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous
address). When they are set, :func:`process_group` joins the group (NCCL on CUDA, gloo on CPU);
each process trains on its own share of every epoch's batches (:meth:`Batches.shard`), DDP
averages the gradients, so every replica takes the same optimizer steps. Rank 0 validates and
broadcasts the metrics (every rank then takes the same early-stopping decision) and is the only
process that writes checkpoints, the model, reports and MLflow runs.

Without those variables every helper here is a no-op: a plain process is a world of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedError(RuntimeError):
    """The distributed environment is inconsistent (e.g. more processes than GPUs)."""


@dataclass(frozen=True)
class World:
    """This process's place in the job; ``launched`` is True under torchrun (even with one process)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> World:
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            size, rank, local = (int(env.get(name, "0")) for name in _VARS)
        except ValueError:
            raise DistributedError(
                "WORLD_SIZE / RANK / LOCAL_RANK must be integers; got "
                + ", ".join(f"{name}={env.get(name)!r}" for name in _VARS)) from None
        if size < 1 or not 0 <= rank < size or local < 0:
            raise DistributedError(f"inconsistent torchrun environment: WORLD_SIZE={size} RANK={rank} "
                                   f"LOCAL_RANK={local}")
        return cls(rank=rank, local_rank=local, size=size, launched=True)


def current() -> World:
    return World.from_environ()


def local_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` for a CUDA job under torchrun."""
    if device.type != "cuda" or not world.launched:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA "
                               "device(s) are visible: start at most one process per GPU (--nproc_per_node)")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the torchrun job for the duration of the block (NCCL on CUDA, gloo on CPU), then leave it.

    A no-op outside torchrun, and when the caller already initialised a group (which it then owns)."""
    if not world.launched or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


class LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``: DDP synchronises gradients only for calls that go
    through its own ``forward``, and the recops models train through ``loss``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self.model.loss(batch)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to train with: DDP around ``LossModule(model)`` in a process group, else the plain one."""
    trainer = LossModule(model)
    if not active():
        return trainer
    return nn.parallel.DistributedDataParallel(trainer, device_ids=[device.index] if device.type == "cuda" else None)


def sum_across(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Sum every value over all ranks (float64; identical keys on every rank)."""
    if not active():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist(), strict=True))


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object, e.g. a metrics dict)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
