"""Benchmark: next-item prediction under the published SASRec protocol (``recops benchmark sequential``).

Usage:
  python benchmarks/sequential.py --movielens ../shared/datasets/ml-latest-small
  python benchmarks/sequential.py --sequences ml-1m.txt --format pairs        # SASRec repo's file
  python benchmarks/sequential.py --sequences Beauty.txt --format lines       # S3Rec's file
  options: [--models sasrec,two_tower,popularity] [--set train.epochs=50] [--set sasrec:train.epochs=100]
           [--params params.yaml] [--dataset NAME] [--output-dir benchmarks/results] [--threads 2]
           [--via-cli] [--keep-sequences FILE] [--no-paper-settings]

Protocol (``recops.benchmark``): each user's last item is the test target, the second-last the
validation target (early stopping on val NDCG@10), the rest trains; every model ranks the
full catalog with the user's history masked; HR@{5,10,20} and NDCG@{5,10,20} on the test
targets. Results of all models go to ``<output-dir>/sequential_<dataset>.json``.

``--movielens DIR`` converts a MovieLens release (read with ``recops.sources.read_movielens``)
the way the SASRec papers' ``ml-1m.txt`` was made:

* every rating is an interaction (implicit feedback, no rating threshold);
* each user's items are ordered by timestamp, ties (same second) in the order of the
  ratings file -- as the SASRec repo's ``DataProcessing.py`` does with a stable sort;
* 5-core filter, by default a *single pass* like ``DataProcessing.py``: interactions of users
  or items with fewer than 5 interactions in the whole file are dropped once (after that a
  user or item may fall below 5; ``--kcore-mode iterative`` repeats until none does);
* users and items are re-indexed 1..N in order of first appearance in the (filtered) ratings
  file, and written as ``user item`` lines grouped by user in chronological order.

Training settings come from params.yaml, overridden by the SASRec+CE paper settings below
(``--no-paper-settings`` keeps params.yaml as is) and then by ``--set KEY=VALUE`` (dotted
params.yaml keys, YAML values; ``MODEL:KEY=VALUE`` applies to one model only). Checkpoints are
written to a temporary folder, never to the project's ``train.checkpoint_dir``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from recops.benchmark import machine_info, read_sequences, run_sequential, write_result, write_sequences
from recops.config import ConfigError, parse_params
from recops.sources import find_movielens_dir, read_movielens

log = logging.getLogger("recops.benchmarks.sequential")

MODELS = ("popularity", "two_tower", "sasrec")
# SASRec trained with full cross entropy (SASRec+CE / "gSASRec"-style papers) on MovieLens:
PAPER_SETTINGS = (
    "model.sasrec.max_len=200",
    "model.sasrec.dim=64",
    "model.sasrec.n_layers=2",
    "model.sasrec.n_heads=1",
    "model.sasrec.dropout=0.2",
    "model.sasrec.loss=full_ce",
    "train.lr=0.001",
    "train.batch_size=128",
    "train.weight_decay=0.0",
    "train.epochs=200",
    "train.patience=20",
)
REFERENCE = ("Published class for CE-trained SASRec on ML-1M (full ranking, leave-one-out): NDCG@10 ~ 0.18. "
             "Only comparable on ML-1M itself (ml-1m.txt); other datasets give other absolute values.")


# --------------------------------------------------------------------------- settings
def parse_override(text: str) -> tuple[str | None, list[str], Any]:
    """``[model:]a.b.c=value`` -> (model or None, ["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=50")
    model, colon, key = key.strip().rpartition(":") if ":" in key else ("", "", key.strip())
    if colon and model not in MODELS:
        raise ValueError(f"--set {text!r}: unknown model {model!r} (one of {', '.join(MODELS)})")
    path = key.split(".")
    if any(not p for p in path):
        raise ValueError(f"--set {text!r}: malformed key {key!r}")
    return model or None, path, yaml.safe_load(raw) if raw.strip() else None


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def model_settings(raw: dict[str, Any], overrides: list[str], model: str, checkpoint_dir: Path) -> dict[str, Any]:
    """params.yaml dict with the overrides for ``model`` applied (and a private checkpoint folder)."""
    data = copy.deepcopy(raw)
    for text in overrides:
        only, path, value = parse_override(text)
        if only is None or only == model:
            apply_override(data, path, value)
    apply_override(data, ["model", "kind"], model)
    apply_override(data, ["train", "checkpoint_dir"], str(checkpoint_dir))
    return data


# --------------------------------------------------------------------------- MovieLens -> pairs
def _ratings_in_file_order(folder: Path) -> pd.DataFrame:
    """user_id, item_id (str, as read_movielens writes them), timestamp, file_pos of the ratings file."""
    folder = find_movielens_dir(folder)
    if (folder / "ratings.csv").is_file():
        df = pd.read_csv(folder / "ratings.csv", usecols=["userId", "movieId", "timestamp"],
                         dtype={"userId": np.int64, "movieId": np.int64, "timestamp": np.int64})
        df.columns = ["user_id", "item_id", "timestamp"]
    else:  # ml-1m / ml-10m: UserID::MovieID::Rating::Timestamp, no text fields
        raw = (folder / "ratings.dat").read_bytes().replace(b"::", b"\t")
        df = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, usecols=[0, 1, 3],
                         names=["user_id", "item_id", "rating", "timestamp"], dtype=np.int64)
        df = df[["user_id", "item_id", "timestamp"]]
    df["user_id"] = df["user_id"].astype(str)
    df["item_id"] = df["item_id"].astype(str)
    df["file_pos"] = np.arange(len(df), dtype=np.int64)
    return df


def _occurrence(df: pd.DataFrame) -> pd.Series:
    return df.groupby(["user_id", "item_id", "timestamp"], sort=False).cumcount()


def kcore(df: pd.DataFrame, min_user: int, min_item: int, mode: str) -> tuple[pd.DataFrame, int]:
    """Drop interactions of users/items below the thresholds; ``single`` pass or ``iterative``."""
    if mode not in ("single", "iterative"):
        raise ValueError(f"k-core mode must be 'single' or 'iterative', not {mode!r}")
    passes = 0  # passes that removed something
    while True:
        users = df["user_id"].map(df["user_id"].value_counts())
        items = df["item_id"].map(df["item_id"].value_counts())
        keep = (users >= min_user) & (items >= min_item)
        if keep.all():
            return df, passes
        df, passes = df[keep], passes + 1
        if mode == "single":
            return df, passes


def movielens_sequences(folder: Path, min_user: int = 5, min_item: int = 5,
                        mode: str = "single") -> tuple[dict[str, list[str]], dict[str, Any]]:
    """MovieLens release -> {user "1".."N": chronological item ids "1".."M"} plus preprocessing stats."""
    data = read_movielens(folder)
    inter = data.interactions[["user_id", "item_id", "timestamp"]].copy()
    # read_movielens sorts by (timestamp, user_id, item_id) as strings; recover the file order of ties
    raw = _ratings_in_file_order(folder)
    inter["occ"], raw["occ"] = _occurrence(inter), _occurrence(raw)
    df = inter.merge(raw, on=["user_id", "item_id", "timestamp", "occ"], how="left", validate="one_to_one")
    if df["file_pos"].isna().any():
        raise ValueError(f"{folder}: {int(df['file_pos'].isna().sum())} ratings not matched to the ratings file")
    df = df.sort_values("file_pos", kind="stable").reset_index(drop=True)
    before = {"interactions": len(df), "users": df["user_id"].nunique(), "items": df["item_id"].nunique()}
    df, passes = kcore(df, min_user, min_item, mode)
    if df.empty:
        raise ValueError(f"{folder}: no interaction is left after the {min_user}/{min_item}-core filter")
    # ids 1..N by first appearance in the (filtered) file, as DataProcessing.py assigns them
    user_map = {u: str(n) for n, u in enumerate(pd.unique(df["user_id"]), 1)}
    item_map = {i: str(n) for n, i in enumerate(pd.unique(df["item_id"]), 1)}
    df = df.sort_values(["timestamp", "file_pos"], kind="stable")
    seqs: dict[str, list[str]] = {user_map[u]: [] for u in pd.unique(df["user_id"])}
    for u, i in zip(df["user_id"].map(user_map), df["item_id"].map(item_map), strict=True):
        seqs[u].append(i)
    seqs = dict(sorted(seqs.items(), key=lambda kv: int(kv[0])))
    lengths = np.array([len(s) for s in seqs.values()])
    stats = {
        "source": str(folder),
        "implicit": "every rating is an interaction",
        "order": "timestamp, ties in ratings-file order",
        "kcore": {"min_user": min_user, "min_item": min_item, "mode": mode, "passes": passes},
        "before_filter": before,
        "users_below_min_after_filter": int((lengths < min_user).sum()),
        "items_below_min_after_filter": int((pd.Series([i for s in seqs.values() for i in s]).value_counts()
                                             < min_item).sum()),
    }
    return seqs, stats


def sequence_stats(seqs: dict[str, list[str]]) -> dict[str, Any]:
    lengths = np.array([len(s) for s in seqs.values()])
    return {
        "users": len(seqs),
        "items": len({i for s in seqs.values() for i in s}),
        "interactions": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 1),
        "median_length": float(np.median(lengths)),
        "users_with_3_or_more": int((lengths >= 3).sum()),
        # recops.dataset.HeldOut drops a test case whose target is already in the history (a re-consumed item)
        "test_users": sum(len(s) >= 3 and s[-1] not in s[:-1] for s in seqs.values()),
        "val_users": sum(len(s) >= 3 and s[-2] not in s[:-2] for s in seqs.values()),
    }


# --------------------------------------------------------------------------- running
def run_model(model: str, settings: dict[str, Any], seq_file: Path, fmt: str, work: Path, via_cli: bool) -> dict:
    if not via_cli:
        params = parse_params(settings, f"params + overrides ({model})")
        return run_sequential(params, seq_file, fmt, model)  # type: ignore[arg-type]
    params_file = work / f"params_{model}.yaml"
    params_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    out = work / f"result_{model}.json"
    recops = Path(sys.executable).parent / "recops"
    cmd = [str(recops), "--params", str(params_file), "benchmark", "sequential", "--sequences", str(seq_file),
           "--format", fmt, "--output", str(out), "--model", model]
    log.info("running %s", " ".join(cmd))
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {res.returncode}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--movielens", type=Path, help="MovieLens release folder (converted to the pairs format)")
    src.add_argument("--sequences", type=Path, help="ready-made sequence file (ml-1m.txt, Beauty.txt, ...)")
    ap.add_argument("--format", choices=("pairs", "lines"), default="pairs", help="format of --sequences")
    ap.add_argument("--dataset", help="name in the output file (default: folder / file name)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: popularity,two_tower,sasrec")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                    help="override a params.yaml setting, e.g. train.epochs=50 or sasrec:train.patience=10")
    ap.add_argument("--no-paper-settings", action="store_true", help="do not apply the SASRec+CE paper settings")
    ap.add_argument("--min-user", type=int, default=5)
    ap.add_argument("--min-item", type=int, default=5)
    ap.add_argument("--kcore-mode", choices=("single", "iterative"), default="single")
    ap.add_argument("--keep-sequences", type=Path, help="also write the converted pairs file here")
    ap.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (in-process runs)")
    ap.add_argument("--via-cli", action="store_true", help="run each model as `recops benchmark sequential`")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # for --via-cli subprocesses
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    try:
        raw = yaml.safe_load(args.params.read_text(encoding="utf-8")) or {}
        overrides = [*(() if args.no_paper_settings else PAPER_SETTINGS), *args.overrides]
        for text in overrides:
            parse_override(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        ap.error(str(err))

    with tempfile.TemporaryDirectory(prefix="recops-seqbench-") as tmp:
        work = Path(tmp)
        if args.movielens is not None:
            seqs, prep = movielens_sequences(args.movielens, args.min_user, args.min_item, args.kcore_mode)
            seq_file, fmt = work / "sequences.txt", "pairs"
            write_sequences(seqs, seq_file, "pairs")
            if args.keep_sequences is not None:
                args.keep_sequences.parent.mkdir(parents=True, exist_ok=True)
                write_sequences(seqs, args.keep_sequences, "pairs")
            dataset = args.dataset or find_movielens_dir(args.movielens).name
        else:
            seq_file, fmt = args.sequences, args.format
            seqs = read_sequences(seq_file, fmt)
            prep = {"source": str(seq_file), "format": fmt, "note": "used as is"}
            dataset = args.dataset or seq_file.stem
        stats = sequence_stats(seqs)
        log.info("%s: %s", dataset, stats)

        results: dict[str, Any] = {}
        settings_used: dict[str, Any] = {}
        for model in models:
            try:
                settings = model_settings(raw, overrides, model, work / f"checkpoints_{model}")
                parse_params(settings, f"params + overrides ({model})")
            except (ValueError, ConfigError) as err:
                ap.error(str(err))
            settings_used[model] = {"train": settings.get("train", {}),
                                    "model": settings.get("model", {}).get(model, {})}
            settings_used[model]["train"] = {k: v for k, v in settings_used[model]["train"].items()
                                             if k not in ("out_dir", "checkpoint_dir")}
            log.info("training %s", model)
            start = time.perf_counter()
            results[model] = run_model(model, settings, seq_file, fmt, work, args.via_cli)
            results[model]["wall_seconds"] = round(time.perf_counter() - start, 1)
            log.info("%s: %s", model, results[model])

    output = {
        "benchmark": "leave-one-out next-item prediction, full-catalog ranking, history masked",
        "dataset": dataset,
        "data": stats,
        "preprocessing": prep,
        "metrics_note": "HR@K = hit rate of the single test item in the top K; NDCG@K with one relevant item",
        "results": results,
        "settings": settings_used,
        "overrides": overrides,
        "reference": REFERENCE,
        **machine_info(),
    }
    out_path = args.output_dir / f"sequential_{dataset}.json"
    write_result(output, out_path)
    print(json.dumps({m: {k: r[k] for k in ("HR@10", "NDCG@10", "best_epoch", "epochs_run", "seconds")}
                      for m, r in results.items()}, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
