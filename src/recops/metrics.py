"""Full-ranking evaluation: every user is scored against the whole catalog (no sampled negatives).

Definitions (binary relevance; ``rel`` = the user's set of held-out relevant items, ``K`` = cutoff):

* ``recall@K    = |top-K ∩ rel| / |rel|``   (standard definition; NOT divided by ``min(|rel|, K)``, so
  a user with more than K relevant items cannot reach 1)
* ``precision@K = |top-K ∩ rel| / K``
* ``hit_rate@K  = 1 if |top-K ∩ rel| > 0 else 0``
* ``ndcg@K      = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K, item_r in rel} 1 / log2(r + 1)`` (ranks r from 1)
  and ``IDCG@K`` the DCG of ``min(|rel|, K)`` hits at the top.
* ``mrr         = 1 / rank of the first relevant item``, looking only at the ``Kmax = top_idx.shape[1]``
  retrieved items (0 if none is in there). ``evaluate_model`` uses ``Kmax = max(ks)``, so this is MRR@max(ks).

Items the user already interacted with in train are removed from the ranking (set to -inf) before top-k,
so a relevant item that is also in the history can never be hit. Users without any relevant item get NaN
per-user values and are ignored by ``aggregate``; ``evaluate_model`` skips them altogether. Per-user arrays
are kept so that models can be compared with a paired bootstrap over the same users.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recops.models.batching import PAD, pad_histories

Exclude = torch.Tensor | Sequence[Sequence[int] | np.ndarray] | None


def _exclusion_flat_index(exclude: Exclude, n_rows: int, n_items: int, device: torch.device | str) -> torch.Tensor:
    """LongTensor of ``row * n_items + item`` for every excluded (row, item) of a list or padded tensor."""
    if isinstance(exclude, torch.Tensor):
        if exclude.shape[0] != n_rows:
            raise ValueError(f"{exclude.shape[0]} exclusion rows for {n_rows} score rows")
        exclude = exclude.to(device).long()
        rows = torch.arange(n_rows, device=device).unsqueeze(1).expand_as(exclude)
        keep = exclude >= 0  # PAD = -1 is not an item
        return rows[keep] * n_items + exclude[keep]
    if len(exclude) != n_rows:
        raise ValueError(f"{len(exclude)} exclusion rows for {n_rows} score rows")
    arrays = [np.asarray(list(e) if isinstance(e, set | frozenset) else e, dtype=np.int64).reshape(-1) for e in exclude]
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), [len(a) for a in arrays])
    cols = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    keep = cols >= 0
    return torch.from_numpy(rows[keep] * n_items + cols[keep]).to(device)


def _dense_mask(exclude: torch.Tensor, n_rows: int, n_items: int, device: torch.device | str) -> torch.Tensor:
    mask = (exclude.to_dense() if exclude.layout != torch.strided else exclude).to(device)
    if mask.shape != (n_rows, n_items):
        raise ValueError(f"mask shape {tuple(mask.shape)} != {(n_rows, n_items)}")
    return mask.bool()


def _is_mask(exclude: Exclude) -> bool:
    return isinstance(exclude, torch.Tensor) and (exclude.dtype == torch.bool or exclude.layout != torch.strided)


def exclusion_mask(exclude: Exclude, n_rows: int, n_items: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """BoolTensor[n_rows, n_items], True = excluded. ``exclude`` is one of:

    * a per-row sequence of item index arrays/lists/sets (e.g. the users' full train histories);
    * a padded LongTensor[n_rows, L] (PAD = -1 ignored), e.g. from ``pad_histories``;
    * a dense bool mask [n_rows, n_items], or a sparse COO/CSR tensor of that shape.
    """
    if _is_mask(exclude):
        return _dense_mask(exclude, n_rows, n_items, device)
    mask = torch.zeros(n_rows * n_items, dtype=torch.bool, device=device)
    if exclude is not None:
        mask[_exclusion_flat_index(exclude, n_rows, n_items, device)] = True
    return mask.view(n_rows, n_items)


def topk_full_ranking(scores: torch.Tensor, exclude: Exclude, k: int,
                      inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items per row after setting excluded items (see ``exclusion_mask`` for the accepted forms)
    to -inf. ``scores`` is left untouched unless ``inplace=True`` (saves a copy for throw-away scores).

    Returns ``(top_idx LongTensor[B, k], top_scores [B, k])`` sorted by descending score. If a row has
    fewer than k non-excluded items, the missing slots are ``PAD`` (-1) with score -inf.
    """
    n_rows, n_items = scores.shape
    if not 0 < k <= n_items:
        raise ValueError(f"k={k} must be in [1, n_items={n_items}]")
    if inplace and scores.dtype == torch.float32 and scores.is_contiguous():
        masked = scores
    else:
        masked = scores.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    if _is_mask(exclude):
        masked.masked_fill_(_dense_mask(exclude, n_rows, n_items, scores.device), float("-inf"))
    elif exclude is not None:
        flat_index = _exclusion_flat_index(exclude, n_rows, n_items, scores.device)
        masked.view(-1).index_fill_(0, flat_index, float("-inf"))
    top_scores, top_idx = torch.topk(masked, k, dim=1)
    top_idx = top_idx.masked_fill(top_scores == float("-inf"), PAD)
    return top_idx, top_scores


def _as_item_array(items: Iterable[int] | np.ndarray) -> np.ndarray:
    if isinstance(items, set | frozenset):
        items = list(items)
    return np.unique(np.asarray(items, dtype=np.int64).reshape(-1))


def ranking_metrics(top_idx: torch.Tensor | np.ndarray, targets: Sequence[Iterable[int] | np.ndarray],
                    ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user metrics (float64 arrays of length B, NaN for users with no relevant item).

    top_idx: [B, Kmax] ranked item indices (PAD = -1 never counts as a hit); targets: B relevant-item
    collections (duplicates ignored). Keys: ``recall@k, precision@k, ndcg@k, hit_rate@k`` for k in ks,
    and ``mrr`` (cut off at Kmax). See the module docstring for the definitions.
    """
    top = top_idx.detach().cpu().numpy() if isinstance(top_idx, torch.Tensor) else np.asarray(top_idx)
    top = top.astype(np.int64, copy=False)
    n_rows, k_max = top.shape
    if len(targets) != n_rows:
        raise ValueError(f"{len(targets)} target rows for {n_rows} ranking rows")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > k_max:
        raise ValueError(f"ks={ks} must lie in [1, Kmax={k_max}]")

    rel = [_as_item_array(t) for t in targets]
    n_rel = np.array([len(r) for r in rel], dtype=np.float64)
    # hits[b, r] = top[b, r] in rel[b], vectorised through (row, item) keys
    base = int(max(top.max(initial=0), max((int(r[-1]) for r in rel if len(r)), default=0))) + 2
    rows = np.arange(n_rows, dtype=np.int64)
    rel_keys = np.concatenate([rows[b] * base + r for b, r in enumerate(rel)]) if rel else np.zeros(0, np.int64)
    hits = np.isin(rows[:, None] * base + top, rel_keys) & (top >= 0)

    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))
    hits_cum = np.cumsum(hits, axis=1)
    dcg_cum = np.cumsum(hits * discounts, axis=1)
    ideal_cum = np.cumsum(discounts)
    empty = n_rel == 0

    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ks:
            n_hits = hits_cum[:, k - 1].astype(np.float64)
            idcg = ideal_cum[np.clip(np.minimum(n_rel, k).astype(np.int64) - 1, 0, None)]
            out[f"recall@{k}"] = np.where(empty, np.nan, n_hits / n_rel)
            out[f"precision@{k}"] = np.where(empty, np.nan, n_hits / k)
            out[f"ndcg@{k}"] = np.where(empty, np.nan, dcg_cum[:, k - 1] / idcg)
            out[f"hit_rate@{k}"] = np.where(empty, np.nan, (n_hits > 0).astype(np.float64))
        first = hits.argmax(axis=1)
        out["mrr"] = np.where(empty, np.nan, np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0))
    return out


def aggregate(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of every per-user metric over users with a defined value (NaN-aware)."""
    out = {}
    for name, values in per_user.items():
        values = np.asarray(values, dtype=np.float64)
        out[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def catalog_coverage(top_idx: torch.Tensor | np.ndarray, n_items: int, k: int) -> float:
    """Fraction of the catalog recommended to at least one user in the top-k lists."""
    top = top_idx.detach().cpu().numpy() if isinstance(top_idx, torch.Tensor) else np.asarray(top_idx)
    items = np.unique(top[:, :k])
    return float(np.count_nonzero(items >= 0)) / n_items


@dataclass
class EvalResult:
    user_idx: np.ndarray              # [U] evaluated users (those with >= 1 relevant item), input order
    per_user: dict[str, np.ndarray]   # metric -> [U], aligned with user_idx (for paired bootstrap)
    aggregate: dict[str, float]       # metric means + coverage@k + n_users
    top_idx: np.ndarray               # [U, max(ks)] recommendations, PAD = -1 for missing slots


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, histories: Sequence[Sequence[int] | np.ndarray],
                   targets: Sequence[Iterable[int] | np.ndarray], ks: Sequence[int] = (10, 20),
                   batch_size: int = 1024, device: torch.device | str | None = None,
                   user_idx: Sequence[int] | np.ndarray | None = None,
                   exclude_history: bool = True) -> EvalResult:
    """Full-ranking evaluation of any ``recops.models`` model.

    histories[i] / targets[i]: chronological train items / held-out relevant items of the i-th user,
    whose model user index is ``user_idx[i]`` (default ``i``). The model sees the last
    ``model.max_history_len`` history items; the *whole* history is excluded from the ranking. The model
    is put in eval mode (and restored afterwards) and scored on ``device`` (default: where it lives).
    """
    if len(histories) != len(targets):
        raise ValueError("histories and targets must have the same length")
    if device is not None:
        model.to(device)
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    users = np.arange(len(histories)) if user_idx is None else np.asarray(user_idx, dtype=np.int64)
    target_arrays = [_as_item_array(t) for t in targets]
    rows = np.flatnonzero([len(t) > 0 for t in target_arrays])
    k_max = max(ks)

    # score users in order of history length so that padding (and sequence-model compute) is minimal
    lengths = np.array([min(len(histories[i]), model.max_history_len) for i in rows], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    was_training = model.training
    model.eval()
    try:
        item_emb = model.item_embeddings()
        tops = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[order[start:start + batch_size]]
            hists = [histories[i] for i in chunk]
            width = min(model.max_history_len, max(1, max(len(h) for h in hists)))
            hist_tensor = pad_histories(hists, width).to(device)
            user_tensor = torch.from_numpy(users[chunk]).to(device)
            scores = model.encode_users(user_tensor, hist_tensor) @ item_emb.T
            top_idx, _ = topk_full_ranking(scores, hists if exclude_history else None, k_max, inplace=True)
            tops.append(top_idx.cpu())
    finally:
        model.train(was_training)

    top = np.zeros((len(rows), k_max), dtype=np.int64)
    if tops:
        top[order] = torch.cat(tops).numpy()
    per_user = ranking_metrics(top, [target_arrays[i] for i in rows], ks)
    agg = aggregate(per_user)
    for k in sorted(set(ks)):
        agg[f"coverage@{k}"] = catalog_coverage(top, model.n_items, k)
    agg["n_users"] = float(len(rows))
    return EvalResult(user_idx=users[rows], per_user=per_user, aggregate=agg, top_idx=top)
