"""Small JSON records that chain stages for DVC and feed the final summary.

The lake itself may live on S3, outside DVC's reach. Each stage therefore writes a
manifest of the lake partitions it produced (paths and content hashes). The manifest
is the stage's DVC output and the next stage's dependency, so DVC re-runs a stage
exactly when the data it reads changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recops.storage import MARKER, Storage, atomic_write_file, canonical_json

MANIFEST_DIR = Path("data/manifests")
REPORT_DIR = Path("reports")


def report_path(stage: str) -> Path:
    return REPORT_DIR / f"{stage}.json"


def write_stage_manifest(stage: str, manifest: dict[str, Any]) -> Path:
    path = MANIFEST_DIR / f"{stage}.json"
    atomic_write_file(path, canonical_json(manifest))
    return path


def write_report(stage: str, report: dict[str, Any]) -> Path:
    path = report_path(stage)
    atomic_write_file(path, canonical_json(report))
    return path


def lake_manifest(storage: Storage, areas: list[str]) -> dict[str, Any]:
    """Every committed partition under ``areas`` with the hashes of its files."""
    out: dict[str, Any] = {}
    for area in areas:
        for dataset_path in storage.ls(storage.path(area)):
            dataset = dataset_path.rsplit("/", 1)[-1]
            for d in storage.partition_dates(area, dataset):
                m = json.loads(storage.read_bytes(f"{storage.path(area, dataset, 'date=' + d.isoformat())}/{MARKER}"))
                out[f"{area}/{dataset}/date={d.isoformat()}"] = {k: v["sha256"] for k, v in m["files"].items()}
    return {"partitions": out}


def validation_summary(storage: Storage, results: list) -> dict[str, Any]:
    from recops.ingest import INTERACTIONS

    run = {s: sum(r.status == s for r in results) for s in ("accepted", "quarantined", "unchanged")}
    quarantined = storage.partition_dates("quarantine", INTERACTIONS)
    return {
        "accepted_periods": len(storage.partition_dates("raw", INTERACTIONS)),
        "quarantined_periods": len(quarantined),
        "quarantined_dates": [d.isoformat() for d in quarantined],
        "run": run,
        "failures": {r.date.isoformat(): [str(f) for f in r.failures] for r in results if r.failures},
    }


def pipeline_summary() -> dict[str, Any]:
    """Collect the reports written so far into one printable summary."""
    out: dict[str, Any] = {}
    for stage in ("validate", "features", "train", "evaluate", "gate", "register"):
        path = report_path(stage)
        if path.exists():
            out[stage] = json.loads(path.read_text())
    return out


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The short human summary printed at the end of `make run`."""
    lines = ["recops summary"]
    v = data.get("validate")
    if v:
        lines.append(f"  periods: {v['accepted_periods']} accepted, {v['quarantined_periods']} quarantined")
        lines += [f"    quarantined {d}" for d in v.get("quarantined_dates", [])[:10]]
    else:
        lines.append("  periods: none validated yet (run `dvc repro`)")
    f = data.get("features")
    if f:
        lines.append(
            f"  dataset: {f['rows']} interactions (train {f['train_rows']}, val {f['val_rows']}, test {f['test_rows']}), "
            f"{f['users']} users, {f['items']} items, up to {f['logical_date']}"
        )
    t = data.get("train")
    if t:
        lines.append(f"  model: {t['model']}, best epoch {t['best_epoch']} of {t['epochs_run']} on {t['device']}")
    e = data.get("evaluate")
    if e:
        o, b = e["overall"], e.get("popularity_baseline", {})
        lines.append(
            f"  test ({int(o['n_users'])} users): ndcg@10 {o['ndcg@10']:.4f}, recall@20 {o['recall@20']:.4f}, "
            f"mrr {o['mrr']:.4f}; popularity ndcg@10 {b.get('ndcg@10', float('nan')):.4f}"
        )
    g = data.get("gate")
    if g:
        lines.append(f"  gate: {'passed' if g['passed'] else 'failed: ' + '; '.join(g['reasons'])}")
    r = data.get("register")
    if r:
        champ = f"v{r['champion_version']}" if r.get("champion_version") else "none"
        lines.append(f"  registry: candidate v{r['candidate_version']} (challenger), champion {champ}"
                     f"{' (bootstrapped)' if r.get('bootstrapped') else ''}")
    return lines
