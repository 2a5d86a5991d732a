"""Benchmark: full-catalog ranking (user encoding + matmul + history exclusion + top-k).

Usage: python benchmarks/ranking.py [--users 6000] [--items 3500] [--dim 64] [--k 10]
       [--repeats 7] [--threads 2] [--output benchmarks/results/ranking.json]

Times ``recops.evaluate.rank`` -- the code path of ``recops evaluate`` and the gate -- on a
randomly initialised ``TwoTowerModel`` built with ``recops.models.build_model``. Item
embeddings are computed once up front (as serving does), so one timed call covers: padding
the histories, the user tower, ``user_vec @ item_emb.T`` over the whole catalog, masking
every user's full history (20-200 items, log-uniform) and ``torch.topk``. One warm-up call,
then ``--repeats`` timed calls; median and p90 wall time are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recops.benchmark import machine_info, write_result
from recops.evaluate import rank
from recops.models import TwoTowerConfig, build_model

TARGET_SECONDS = 1.0


class PrecomputedItems(nn.Module):
    """Wraps a recops model; ``item_embeddings()`` returns a cached tensor (computed once)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.n_users, self.n_items, self.max_history_len = model.n_users, model.n_items, model.max_history_len
        with torch.no_grad():
            self.register_buffer("item_emb", model.item_embeddings().detach().float().contiguous())

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb

    def encode_users(self, user_idx: torch.Tensor | None, histories: torch.Tensor) -> torch.Tensor:
        return self.model.encode_users(user_idx, histories)

    def encode_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.model.encode_histories(histories)


def random_histories(n_users: int, n_items: int, lo: int, hi: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Distinct items per user; lengths log-uniform in [lo, hi] (many short, few long histories)."""
    hi = min(hi, n_items)
    lengths = np.exp(rng.uniform(np.log(lo), np.log(hi + 1), size=n_users)).astype(np.int64).clip(lo, hi)
    # popularity-skewed items (Zipf-like), without repeats within a user
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    perm = rng.permutation(n_items)
    return [perm[rng.choice(n_items, size=n, replace=False, p=weights)] for n in lengths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=3500)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--history-min", type=int, default=20)
    ap.add_argument("--history-max", type=int, default=200)
    ap.add_argument("--history-len", type=int, default=50, help="items the user tower looks at (params.yaml: 50)")
    ap.add_argument("--batch-size", type=int, default=1024, help="users per scoring batch (evaluation.batch_size)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/ranking.json"))
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = TwoTowerConfig(dim=args.dim, history_len=args.history_len)
    model = PrecomputedItems(build_model(config, args.users, args.items))
    histories = random_histories(args.users, args.items, args.history_min, args.history_max, rng)
    user_idx = np.arange(args.users, dtype=np.int64)

    top = rank(model, histories, user_idx, args.k, args.batch_size)  # warm-up (and a sanity check)
    assert top.shape == (args.users, args.k) and (top >= 0).all()
    assert not any(np.isin(t, h).any() for t, h in zip(top, histories, strict=True)), "history item recommended"
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        rank(model, histories, user_idx, args.k, args.batch_size)
        times.append(time.perf_counter() - start)

    median = statistics.median(times)
    p90 = float(np.percentile(times, 90))
    lengths = np.array([len(h) for h in histories])
    result = {
        "benchmark": "full-catalog ranking: recops.evaluate.rank (two-tower user encoding + matmul + "
                     "history exclusion + top-k), item embeddings precomputed",
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "k": args.k,
        "history_len_model": args.history_len,
        "history_items_excluded": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                   "max": int(lengths.max()), "total": int(lengths.sum())},
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "median_seconds": round(median, 4),
        "p90_seconds": round(p90, 4),
        "min_seconds": round(min(times), 4),
        "times_seconds": [round(t, 4) for t in times],
        "users_per_second": round(args.users / median),
        "target_seconds": TARGET_SECONDS,
        "meets_target": median < TARGET_SECONDS,
        **machine_info(),
    }
    write_result(result, args.output)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
