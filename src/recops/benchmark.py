"""``recops benchmark sequential``: the published next-item protocol, for comparison.

Input formats:

- ``pairs``: ``user item`` per line in chronological order (the SASRec papers' ml-1m.txt);
- ``lines``: ``user item1 item2 ...`` per line (S3Rec / ICLRec data files).

Protocol: each user's last item is the test target, the second-last the validation
target, the rest is training; the model ranks the full catalog with the user's history
masked. Reported: HR@{5,10,20} and NDCG@{5,10,20} on the test targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recops.dataset import FeatureData

Format = Literal["pairs", "lines"]
KS = (5, 10, 20)


def read_sequences(path: Path, fmt: Format) -> dict[str, list[str]]:
    """User -> chronological item ids, from either published format."""
    seqs: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if fmt == "pairs":
                if len(parts) != 2:
                    raise ValueError(f"{path}:{n}: expected 'user item' (pairs format), got {line.strip()!r}")
                seqs.setdefault(parts[0], []).append(parts[1])
            else:
                if len(parts) < 2:
                    raise ValueError(f"{path}:{n}: expected 'user item1 item2 ...' (lines format), got {line.strip()!r}")
                seqs.setdefault(parts[0], []).extend(parts[1:])
    if not seqs:
        raise ValueError(f"{path}: no sequences found")
    return seqs


def leave_last_out_features(seqs: dict[str, list[str]]) -> FeatureData:
    """FeatureData with the last item of each user as test and the one before as validation."""
    users = list(seqs)
    item_ids = sorted({i for s in seqs.values() for i in s}, key=lambda x: (len(x), x))
    item_idx = {i: n for n, i in enumerate(item_ids)}
    rows_u, rows_i, rows_t, rows_s = [], [], [], []
    for u, s in enumerate(users):
        seq = seqs[s]
        n = len(seq)
        for t, item in enumerate(seq):
            split = "test" if (t == n - 1 and n >= 3) else "val" if (t == n - 2 and n >= 3) else "train"
            rows_u.append(u)
            rows_i.append(item_idx[item])
            rows_t.append(t)
            rows_s.append(split)
    inter = pd.DataFrame({"user_idx": rows_u, "item_idx": rows_i, "timestamp": rows_t, "rating": np.float32(1.0), "split": rows_s})
    users_df = pd.DataFrame({"user_id": users, "user_idx": np.arange(len(users))})
    items_df = pd.DataFrame({"item_id": item_ids, "item_idx": np.arange(len(item_ids)), "title": "", "year": 0,
                             "genres": [[] for _ in item_ids]})
    meta = {"n_users": len(users), "n_items": len(item_ids), "genres": [], "split": {"method": "leave_last_out"}}
    return FeatureData(inter, users_df, items_df, meta)


def sequences_from_features(folder: Path) -> dict[str, list[str]]:
    """Chronological positive sequences of a recops features folder (all splits)."""
    fd = FeatureData.load(folder)
    df = fd.interactions.sort_values(["timestamp", "user_idx", "item_idx"], kind="stable")
    users = fd.users.set_index("user_idx")["user_id"]
    items = fd.items.set_index("item_idx")["item_id"]
    return {str(users[u]): [str(items[i]) for i in g["item_idx"]] for u, g in df.groupby("user_idx", sort=True)}


def write_sequences(seqs: dict[str, list[str]], path: Path, fmt: Format) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for u, items in seqs.items():
            if fmt == "pairs":
                f.writelines(f"{u} {i}\n" for i in items)
            else:
                f.write(" ".join([u, *items]) + "\n")


def published_metrics(overall: dict[str, float]) -> dict[str, float]:
    """HR@K / NDCG@K in the papers' naming (one target per user, so HR@K = Recall@K)."""
    out = {}
    for k in KS:
        out[f"HR@{k}"] = round(float(overall[f"hit_rate@{k}"]), 4)
        out[f"NDCG@{k}"] = round(float(overall[f"ndcg@{k}"]), 4)
    return out


def run_sequential(params, path: Path, fmt: Format, model_kind: str = "sasrec") -> dict:
    """Train ``model_kind`` with the settings in params.yaml under the published protocol."""
    import tempfile
    import time

    from recops.config import EvaluationParams
    from recops.evaluate import evaluate
    from recops.train import train

    fd = leave_last_out_features(read_sequences(path, fmt))
    eval_params = EvaluationParams(ks=list(KS), batch_size=params.evaluation.batch_size, slices=params.evaluation.slices)
    model_params = params.model.model_copy(update={"kind": model_kind})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recops-bench-") as tmp:  # never touch the pipeline's checkpoint
        train_params = params.train.model_copy(update={"checkpoint_dir": tmp})
        result = train(fd, model_params, train_params, eval_params, progress=False)
    users = fd.users["user_id"].tolist()
    items = fd.items["item_id"].tolist()
    ev = evaluate(result.model, users, items, fd, eval_params, window="test")
    return {
        **published_metrics(ev.overall),
        "model": model_kind,
        "users": fd.n_users,
        "test_users": int(ev.overall["n_users"]),
        "items": fd.n_items,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "seconds": round(time.perf_counter() - start, 1),
        "device": result.device,
    }


def machine_info() -> dict:
    """Where a benchmark ran: recorded next to every figure (torch fields only when torch is loaded)."""
    import os
    import platform
    import sys

    info = {
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],  # other processes share the cores
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, **info}
    return info


def write_result(result: dict, path: Path) -> None:
    """Write a benchmark result as JSON, creating the folder."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
