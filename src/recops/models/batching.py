"""Turning per-user train sequences into model inputs and training batches.

Conventions (shared by every model, metric and batch in ``recops``):

* Items are the integer indices ``0..n_items-1`` produced by the features stage.
* ``PAD = -1`` marks padding in every *external* tensor (histories, batches, top-k results).
  Sequence models shift by ``+1`` internally so that their embedding row 0 is the padding row;
  that shift never leaks out of a model.
* Histories are chronological and **left-padded** (right-aligned): the most recent item is always in
  the last column. ``pad_histories`` builds them.

Batches are plain ``dict[str, Tensor]`` (CPU, ``int64``); move them with ``to_device``. All randomness
(shuffling, positions, negatives) is drawn eagerly from the ``torch.Generator`` you pass in, so the
same generator seed gives the same batches, and a returned ``Batches`` can be iterated more than once.

Typical epoch loop::

    gen = torch.Generator().manual_seed(seed)
    for epoch in range(n_epochs):
        for batch in make_batches(cfg, train_sequences, n_items, batch_size=256, generator=gen):
            loss, logs = model.loss(to_device(batch, device))
            opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypedDict

import numpy as np
import torch

from recops.models.config import PopularityConfig, SASRecConfig, TwoTowerConfig

PAD = -1

Batch = dict[str, torch.Tensor]


class ItemFeatures(TypedDict, total=False):
    """Item side features (row i describes item i).

    genre_multi_hot: FloatTensor[n_items, n_genres]
    year:            FloatTensor[n_items]  normalised; 0 for unknown
    popularity:      FloatTensor[n_items]  train interaction counts (used by logQ / popularity)
    """

    genre_multi_hot: torch.Tensor
    year: torch.Tensor
    popularity: torch.Tensor


def check_item_features(item_features: Mapping[str, torch.Tensor] | None, n_items: int,
                        required: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Validate shapes and return a float32 CPU copy of the item features (``{}`` for ``None``)."""
    feats = {k: torch.as_tensor(v).detach().to("cpu", torch.float32).clone() for k, v in (item_features or {}).items()}
    unknown = set(feats) - {"genre_multi_hot", "year", "popularity"}
    if unknown:
        raise ValueError(f"unknown item features: {sorted(unknown)}")
    missing = [k for k in required if k not in feats]
    if missing:
        raise ValueError(f"missing item features: {missing}")
    for name, t in feats.items():
        want_dim = 2 if name == "genre_multi_hot" else 1
        if t.dim() != want_dim or t.shape[0] != n_items:
            raise ValueError(f"item feature {name!r} has shape {tuple(t.shape)}; expected {want_dim}-d with {n_items} rows")
    return feats


# ---------------------------------------------------------------------------------------------------------
# ragged sequences


def _flatten(sequences: Sequence[Sequence[int] | np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (values, offsets, lengths): user u's items are ``values[offsets[u] : offsets[u] + lengths[u]]``."""
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays), dtype=np.int64)
    if len(arrays) > 1:
        offsets[1:] = np.cumsum(lengths[:-1])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return values, offsets, lengths


def _gather_windows(values: np.ndarray, offsets: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Row r = items ``[ends[r] - width, ends[r])`` of its user (positions relative to the user's start),
    left-padded with PAD where the position is < 0. ``offsets`` are the rows' absolute user offsets."""
    pos = ends[:, None] + np.arange(-width, 0, dtype=np.int64)[None, :]
    valid = pos >= 0
    flat = np.where(valid, offsets[:, None] + pos, 0)
    out = values[flat] if len(values) else np.zeros_like(flat)
    return np.where(valid, out, PAD)


def pad_histories(sequences: Sequence[Sequence[int] | np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad (right-align) chronological item lists to ``LongTensor[B, max_len]`` with ``PAD``.

    Only the most recent ``max_len`` items of each list are kept.
    """
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    values, offsets, lengths = _flatten(sequences)
    return torch.from_numpy(_gather_windows(values, offsets, lengths, max_len))


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------
# batches


class Batches:
    """A re-iterable, sized sequence of batches. Example order (and all random draws) are fixed at
    construction; tensors are only materialised while iterating."""

    def __init__(self, order: np.ndarray, batch_size: int, make: Callable[[int, np.ndarray], Batch],
                 drop_last: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        n = _n_batches(len(order), batch_size, drop_last)
        self._chunks = [order[i * batch_size:(i + 1) * batch_size] for i in range(n)]
        self._ids = list(range(n))  # batch i always carries the random draws made for batch i
        self._make = make

    @property
    def n_examples(self) -> int:
        return int(sum(len(c) for c in self._chunks))

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[Batch]:
        for i, chunk in zip(self._ids, self._chunks, strict=True):
            yield self._make(i, chunk)

    def shard(self, rank: int, world_size: int) -> Batches:
        """Rank ``rank``'s share for data-parallel training: batches ``rank, rank + world_size, ...``.

        Like ``DistributedSampler``, the batch list is first padded by repeating it from the start, so
        every rank takes the same number of steps (DDP needs that). ``shard(0, 1)`` is ``self``."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        if world_size == 1:
            return self
        n = len(self._chunks)
        steps = -(-n // world_size)
        picked = [j % n for j in range(rank, steps * world_size, world_size)] if n else []
        out = object.__new__(Batches)
        out._chunks = [self._chunks[j] for j in picked]
        out._ids = [self._ids[j] for j in picked]
        out._make = self._make
        return out


def _n_batches(n_examples: int, batch_size: int, drop_last: bool) -> int:
    return n_examples // batch_size if drop_last else -(-n_examples // batch_size)


def _perm(n: int, generator: torch.Generator) -> np.ndarray:
    return torch.randperm(n, generator=generator).numpy()


def sasrec_batches(sequences: Sequence[Sequence[int] | np.ndarray], config: SASRecConfig, n_items: int,
                   batch_size: int, generator: torch.Generator, stride: int | None = None,
                   drop_last: bool = False) -> Batches:
    """Next-item training windows for SASRec.

    Every user with >= 2 items gives the window of their last ``max_len + 1`` items, split into
    ``input = w[:-1]`` and ``target = w[1:]`` (target[t] is the item that follows input[t]).
    With ``stride`` set, long sequences additionally give earlier windows ending every ``stride`` items
    before the end (sliding windows); ``None`` is the paper's setting (most recent window only).

    Batch keys:
        ``input``     LongTensor[B, L]  left-padded items (PAD = -1), L <= max_len (all-PAD leading
                                        columns are trimmed, positions stay right-aligned)
        ``target``    LongTensor[B, L]  next item, PAD where input is PAD
        ``user_idx``  LongTensor[B]
        ``negatives`` LongTensor[n_negatives]  uniform items, shared by the batch (sampled_softmax only)
    """
    values, offsets, lengths = _flatten(sequences)
    users, ends = [], []
    for u, n in enumerate(lengths.tolist()):
        if n < 2:
            continue
        e = n
        while e >= 2:
            users.append(u)
            ends.append(e)
            if stride is None:
                break
            e -= stride
    users_a, ends_a = np.asarray(users, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    order = _perm(len(users_a), generator)
    negatives = None
    if config.loss == "sampled_softmax":
        n_batches = _n_batches(len(order), batch_size, drop_last)
        negatives = torch.randint(n_items, (n_batches, config.n_negatives), generator=generator)

    def make(i: int, idx: np.ndarray) -> Batch:
        window = _gather_windows(values, offsets[users_a[idx]], ends_a[idx], config.max_len + 1)
        inp, tgt = window[:, :-1], window[:, 1:].copy()
        tgt[inp == PAD] = PAD
        first = int(np.argmax((inp != PAD).any(0)))  # leading all-PAD columns carry no information
        batch = {
            "input": torch.from_numpy(np.ascontiguousarray(inp[:, first:])),
            "target": torch.from_numpy(np.ascontiguousarray(tgt[:, first:])),
            "user_idx": torch.from_numpy(users_a[idx]),
        }
        if negatives is not None:
            batch["negatives"] = negatives[i]
        return batch

    return Batches(order, batch_size, make, drop_last)


def two_tower_batches(sequences: Sequence[Sequence[int] | np.ndarray], config: TwoTowerConfig, n_items: int,
                      batch_size: int, generator: torch.Generator, max_examples_per_user: int | None = None,
                      drop_last: bool = False) -> Batches:
    """(history, target) retrieval examples plus item-item co-occurrence pairs for the two-tower model.

    One epoch = every train position ``t >= 1`` of every user as a target (optionally a random subset of
    at most ``max_examples_per_user`` positions per user), whose history is the ``history_len`` items
    strictly before it. Each example also yields one item-item pair ``(seq[t], seq[t + o])`` with the
    offset ``o`` drawn uniformly from the valid non-zero offsets in ``[-item_item_window, item_item_window]``.

    Batch keys:
        ``user_idx``        LongTensor[B]
        ``history``         LongTensor[B, history_len]  left-padded (PAD = -1), items strictly before target
        ``target``          LongTensor[B]
        ``ii_anchor``       LongTensor[B]   item-item pair, anchor = target
        ``ii_context``      LongTensor[B]   an item within the window of the anchor in the same sequence
        ``extra_negatives`` LongTensor[extra_negatives]  uniform items (only if config.extra_negatives > 0)
    """
    values, offsets, lengths = _flatten(sequences)
    users, positions = [], []
    for u, n in enumerate(lengths.tolist()):
        if n < 2:
            continue
        pos = np.arange(1, n, dtype=np.int64)
        if max_examples_per_user is not None and len(pos) > max_examples_per_user:
            keep = torch.randperm(len(pos), generator=generator)[:max_examples_per_user].numpy()
            pos = np.sort(pos[keep])
        users.append(np.full(len(pos), u, dtype=np.int64))
        positions.append(pos)
    users_a = np.concatenate(users) if users else np.zeros(0, dtype=np.int64)
    pos_a = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)

    # item-item context offset, uniform over valid non-zero offsets in [lo, hi] (lo <= -1 since t >= 1)
    w = config.item_item_window
    lo = np.maximum(-w, -pos_a)
    hi = np.minimum(w, lengths[users_a] - 1 - pos_a)
    n_valid = hi - lo  # (hi - lo + 1) offsets minus the zero offset
    u01 = torch.rand(len(pos_a), generator=generator, dtype=torch.float64).numpy()
    off = lo + np.minimum((u01 * n_valid).astype(np.int64), n_valid - 1)
    off = np.where(off >= 0, off + 1, off)

    order = _perm(len(users_a), generator)
    extra = None
    if config.extra_negatives > 0:
        n_batches = _n_batches(len(order), batch_size, drop_last)
        extra = torch.randint(n_items, (n_batches, config.extra_negatives), generator=generator)

    def make(i: int, idx: np.ndarray) -> Batch:
        u, t = users_a[idx], pos_a[idx]
        base = offsets[u]
        batch = {
            "user_idx": torch.from_numpy(u),
            "history": torch.from_numpy(_gather_windows(values, base, t, config.history_len)),
            "target": torch.from_numpy(values[base + t]),
            "ii_anchor": torch.from_numpy(values[base + t]),
            "ii_context": torch.from_numpy(values[base + t + off[idx]]),
        }
        if extra is not None:
            batch["extra_negatives"] = extra[i]
        return batch

    return Batches(order, batch_size, make, drop_last)


def make_batches(config: PopularityConfig | TwoTowerConfig | SASRecConfig,
                 sequences: Sequence[Sequence[int] | np.ndarray], n_items: int, batch_size: int,
                 generator: torch.Generator, **kwargs) -> Batches:
    """Dispatch on ``config.kind``. Popularity is not trained with batches (use ``model.fit``)."""
    if isinstance(config, SASRecConfig):
        return sasrec_batches(sequences, config, n_items, batch_size, generator, **kwargs)
    if isinstance(config, TwoTowerConfig):
        return two_tower_batches(sequences, config, n_items, batch_size, generator, **kwargs)
    raise TypeError(f"{type(config).__name__} is not trained with batches; call model.fit(...)")
