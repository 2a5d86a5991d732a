"""``recops evaluate``: full-catalog ranking metrics on a held-out window.

Any model is scored the same way: its user/item indices are translated from the
current features' id maps through item and user *ids*, so a champion trained on an
older feature version is evaluated on exactly the same test cases as the candidate
(items it never saw simply cannot be recommended by it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recops.config import EvaluationParams
from recops.dataset import FeatureData, HeldOut, Window
from recops.metrics import aggregate, catalog_coverage, ranking_metrics, topk_full_ranking
from recops.models.batching import PAD, pad_histories


@dataclass(frozen=True)
class Evaluation:
    window: str
    overall: dict[str, float]
    slices: dict[str, dict[str, float]]
    per_user: pd.DataFrame  # user_id + one column per metric, one row per test case

    def as_dict(self) -> dict[str, Any]:
        return {"window": self.window, "overall": self.overall, "slices": self.slices}


def _index(ids: Sequence[str]) -> dict[str, int]:
    return {str(x): i for i, x in enumerate(ids)}


@torch.no_grad()
def rank(
    model: torch.nn.Module,
    histories: list[np.ndarray],
    user_idx: np.ndarray,
    k: int,
    batch_size: int = 1024,
) -> np.ndarray:
    """Top-k item indices (model space) per case; history excluded; user_idx < 0 = anonymous."""
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    item_emb = model.item_embeddings()
    k = min(k, model.n_items)
    top = np.full((len(histories), k), PAD, dtype=np.int64)
    for start in range(0, len(histories), batch_size):
        sl = slice(start, start + batch_size)
        hists = histories[sl]
        width = min(model.max_history_len, max(1, max((len(h) for h in hists), default=1)))
        hist_t = pad_histories(hists, width).to(device)
        users = torch.as_tensor(user_idx[sl], device=device)
        known = users >= 0
        vec = torch.empty(len(hists), item_emb.shape[1], device=device)
        if known.any():
            vec[known] = model.encode_users(users[known], hist_t[known]).to(vec.dtype)
        if (~known).any():
            vec[~known] = model.encode_histories(hist_t[~known]).to(vec.dtype)
        idx, _ = topk_full_ranking(vec @ item_emb.T, hists, k, inplace=True)
        top[sl] = idx.cpu().numpy()
    return top


def _tail_items(features: FeatureData, tail_share: float) -> np.ndarray:
    """Least popular ``tail_share`` of the catalog by training count (the long tail)."""
    counts = np.bincount(features.train["item_idx"].to_numpy(), minlength=features.n_items)
    order = np.argsort(-counts, kind="stable")
    n_head = int(round(features.n_items * (1 - tail_share)))
    return np.sort(order[n_head:])


def evaluate(
    model: torch.nn.Module,
    model_user_ids: Sequence[str],
    model_item_ids: Sequence[str],
    features: FeatureData,
    params: EvaluationParams,
    window: Window = "test",
    held: HeldOut | None = None,
) -> Evaluation:
    """Evaluate ``model`` (with its own id maps) on the held-out ``window`` of ``features``."""
    held = held if held is not None else features.held_out(window)
    if len(held) == 0:
        raise ValueError(f"the {window} window has no test case; accept more periods or widen features.split")
    cur_items = features.items.sort_values("item_idx")["item_id"].astype(str).tolist()
    cur_users = features.users.sort_values("user_idx")["user_id"].astype(str).tolist()
    m_item = _index(model_item_ids)
    m_user = _index(model_user_ids)
    cur2m = np.array([m_item.get(i, -1) for i in cur_items], dtype=np.int64)
    m2cur = np.array([-1] * len(model_item_ids), dtype=np.int64)
    m2cur[cur2m[cur2m >= 0]] = np.flatnonzero(cur2m >= 0)

    histories = [cur2m[h][cur2m[h] >= 0] for h in held.histories]
    users = np.array([m_user.get(cur_users[u], -1) for u in held.user_idx], dtype=np.int64)
    ks = sorted(k for k in set(params.ks) if k <= features.n_items)
    if not ks:
        raise ValueError(f"every cut-off in evaluation.ks {params.ks} exceeds the catalog of {features.n_items} items")
    top_m = rank(model, histories, users, max(ks), params.batch_size)
    top = np.where(top_m >= 0, m2cur[np.clip(top_m, 0, None)], PAD)

    per_user = ranking_metrics(top, held.targets, ks)
    overall = aggregate(per_user)
    for k in ks:
        overall[f"coverage@{k}"] = catalog_coverage(top, features.n_items, k)
    overall["n_users"] = float(len(held))

    slices: dict[str, dict[str, float]] = {}
    few = np.array([len(h) <= params.slices.few_interactions_max for h in held.histories])
    if few.any():
        slices["few_interactions"] = {**aggregate({m: v[few] for m, v in per_user.items()}), "n_users": float(few.sum())}
    tail = _tail_items(features, params.slices.long_tail_share)
    tail_targets = [np.intersect1d(t, tail) for t in held.targets]
    has_tail = np.array([len(t) > 0 for t in tail_targets])
    if has_tail.any():
        tail_metrics = ranking_metrics(top[has_tail], [t for t in tail_targets if len(t)], ks)
        slices["long_tail"] = {**aggregate(tail_metrics), "n_users": float(has_tail.sum())}

    frame = pd.DataFrame({"user_id": [cur_users[u] for u in held.user_idx], **per_user})
    return Evaluation(window, overall, slices, frame)
