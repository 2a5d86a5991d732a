"""``recops simulate``: replay N periods of a real log through the whole loop, without Airflow.

Per period D it runs the same functions as the CLI / DVC stages / Airflow tasks:
``ingest -> validate -> features -> monitor -> (rollback) -> (train -> evaluate -> gate -> register ->
promote)``. Retraining happens in the period the monitor asks for it; a candidate that passes the gate is
promoted only with ``auto_approve`` (the explicit simulation flag standing in for the reviewer), except
the very first champion, which the registry bootstraps as in production when ``gate.allow_bootstrap``.

Injections (``--inject KIND@P``, P = 1-based period number):

* ``drift@P``: a **popularity shock** built from the log itself: from period P on, the ``shock_items``
  most popular items of the log and as many items drawn from its long tail swap identities in every
  interaction (what used to be a hit is now rarely watched and vice versa; genres move with the items).
* ``bad-model@P``: after the monitor of period P, a deliberately degraded copy of the champion (its
  item id map permuted: it ranks the wrong items) is registered and promoted, bypassing the gate.

Outputs in ``output``: ``timeline.json`` (per-period series + event log), ``events.jsonl``,
``timeline.png`` and ``timeline.html`` (plots of drift, champion performance and the retrain / promote /
rollback events). The run's own workspace (lake, features, MLflow database, reports) is
``output/workspace``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Env, Params

log = logging.getLogger(__name__)

INJECTION_KINDS = ("drift", "bad-model")
SIM_REVIEWER = "recops-simulation"
BAD_MODEL_REVIEWER = "recops-simulation:bad-model"


@dataclass(frozen=True)
class Injection:
    kind: str
    period: int  # 1-based

    @classmethod
    def parse(cls, text: str, periods: int) -> Injection:
        m = re.fullmatch(r"\s*([a-z-]+)@(\d+)\s*", text)
        if not m:
            raise ValueError(f"--inject {text!r}: expected KIND@PERIOD, e.g. drift@20 or bad-model@30")
        kind, period = m.group(1), int(m.group(2))
        if kind not in INJECTION_KINDS:
            raise ValueError(f"--inject {text!r}: unknown kind {kind!r}; use one of {', '.join(INJECTION_KINDS)}")
        if not 1 <= period <= periods:
            raise ValueError(f"--inject {text!r}: period {period} is outside 1..{periods}")
        return cls(kind, period)


@dataclass
class Timeline:
    periods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, period: int, date: dt.date, kind: str, **detail: Any) -> None:
        entry = {"period": period, "date": date.isoformat(), "kind": kind, **detail}
        self.events.append(entry)
        log.info("period %d (%s): %s %s", period, date, kind, detail or "")

    def count(self, kind: str, **match: Any) -> int:
        return sum(1 for e in self.events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()))


# --------------------------------------------------------------------------- injections (pure)
def popularity_shock(events: pd.DataFrame, start_row: int, n_items: int, seed: int) -> pd.DataFrame:
    """Swap the identities of the ``n_items`` most popular items and ``n_items`` long-tail items (drawn with
    ``seed``) in every row from ``start_row`` on (rows in chronological order)."""
    import numpy as np

    counts = events["item_id"].value_counts()
    if len(counts) < 4 * n_items:
        raise ValueError(f"popularity shock of {n_items} items needs at least {4 * n_items} items; "
                         f"the log has {len(counts)}")
    head = counts.index[:n_items].to_numpy()
    tail_pool = counts.index[len(counts) // 2:].to_numpy()
    tail = np.random.default_rng(seed).choice(tail_pool, size=n_items, replace=False)
    swap = {**dict(zip(head, tail, strict=True)), **dict(zip(tail, head, strict=True))}
    out = events.copy()
    part = out["item_id"].iloc[start_row:]
    out.loc[out.index[start_row:], "item_id"] = part.map(lambda i: swap.get(i, i)).to_numpy()
    return out


def degrade_payload(payload: dict[str, Any], seed: int) -> dict[str, Any]:
    """A copy of a model.pt payload whose item id map is permuted: it recommends the wrong items."""
    import numpy as np

    extra = dict(payload["extra"])
    items = list(extra["item_ids"])
    perm = np.random.default_rng(seed).permutation(len(items))
    extra["item_ids"] = [items[i] for i in perm]
    extra["degraded"] = "item id map permuted by recops simulate (bad-model injection)"
    return {**payload, "extra": extra}


# --------------------------------------------------------------------------- workspace
@contextlib.contextmanager
def _workspace(folder: Path, tracking_uri: str) -> Iterator[None]:
    old_cwd, old_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def _prepare_source(params: Params, env: Env, work: Path, periods: int, drift: Injection | None,
                    shock_items: int, seed: int) -> tuple[Params, list[dt.date]]:
    """Write the (possibly shocked) log as an event log in the workspace; params that replay it."""
    from recops.config import Params as ParamsModel
    from recops.ingest import available_periods, load_source, on_calendar
    from recops.tables import to_parquet_bytes

    source = load_source(params, env)
    events = source.interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    if drift is not None:
        start_row = -(-(drift.period - 1) * len(events) // periods)  # first row of period P (equal_count)
        events = popularity_shock(events, start_row, shock_items, seed)
    src = work / "source"
    src.mkdir(parents=True, exist_ok=True)
    (src / "interactions.parquet").write_bytes(to_parquet_bytes(events))
    (src / "catalog.parquet").write_bytes(to_parquet_bytes(source.catalog))
    data = params.model_dump(mode="json")
    data["source"] = {**data["source"], "kind": "event_log", "cache_dir": "data/cache", "event_log": {
        **data["source"]["event_log"], "path": str(src / "interactions.parquet"), "format": "parquet",
        "columns": {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
        "timestamp_unit": "s", "catalog_path": str(src / "catalog.parquet"), "catalog_format": "parquet",
        "catalog_columns": {"item_id": "item_id", "title": "title", "genres": "genres"}}}
    data["replay"] = {**data["replay"], "enabled": True, "periods": periods, "mode": "equal_count"}
    data["storage"] = {**data["storage"], "root": "data/lake"}
    data["ingest"] = {**data["ingest"], "until": None}
    sim = ParamsModel.model_validate(data)
    dates = available_periods(on_calendar(events, sim), sim)
    return sim, dates


# --------------------------------------------------------------------------- the loop
def _retrain(params: Params, storage, timeline: Timeline, i: int, d: dt.date, reason: str,
             auto_approve: bool) -> None:
    from recops.lifecycle import (
        GateFailed,
        evaluate_stage,
        gate_stage,
        promote_stage,
        register_stage,
        train_stage,
    )
    from recops.registry import RegistryError
    from recops.serving.check import ServingCheckFailed

    train = train_stage(params, progress=False)
    ev = evaluate_stage(params)
    metric = params.monitor.performance.metric
    timeline.event(i, d, "retrain", reason=reason, model=train["model"],
                   test_metric={metric: ev["overall"].get(metric)})
    try:
        gate_stage(params)
    except GateFailed as err:
        timeline.event(i, d, "gate_failed", reason=str(err))
        return
    reg = register_stage(params, storage)
    if reg["bootstrapped"]:
        timeline.event(i, d, "promote", version=reg["champion_version"], reviewer="recops-bootstrap",
                       candidate=reg["candidate_version"])
        return
    if not auto_approve:
        timeline.event(i, d, "awaiting_approval", candidate=reg["candidate_version"])
        return
    try:
        out = promote_stage(params, storage, reg["candidate_version"], SIM_REVIEWER, f"simulation period {i}")
    except (RegistryError, ServingCheckFailed) as err:
        timeline.event(i, d, "promote_refused", candidate=reg["candidate_version"], reason=str(err))
        return
    timeline.event(i, d, "promote", version=out["champion_version"], reviewer=SIM_REVIEWER,
                   candidate=reg["candidate_version"])


def _promote_bad_model(params: Params, storage, timeline: Timeline, i: int, d: dt.date, seed: int) -> None:
    import tempfile

    import mlflow
    import torch

    from recops import tracking
    from recops.registry import AuditLog, champion, log_model, promote, register_candidate

    client = tracking.client()
    current = champion(client, params.registry)
    if current is None:
        raise ValueError(f"bad-model@{i}: there is no champion to degrade yet; inject later")
    src = tracking.download_model_file(params.registry.production_model, str(current.version))
    payload = torch.load(src, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(degrade_payload(payload, seed), path)
        with tracking.stage_run("inject_bad_model", params.registry.experiment,
                                {"recops.model_kind": str(payload["kind"]), "recops.injection": "bad-model"}) as run:
            log_model(path)
            mlflow.log_param("degraded_from", f"{params.registry.production_model}/{current.version}")
    evidence = {"passed": False, "injection": "bad-model", "reasons": ["simulation: gate bypassed on purpose"]}
    mv = register_candidate(client, params.registry, run.info.run_id, evidence=evidence, data_version={},
                            commit=None, passed=False)
    prod = promote(client, params.registry, AuditLog(storage), version=str(mv.version), reviewer=BAD_MODEL_REVIEWER,
                   note="simulation: deliberately degraded model", evidence=evidence)
    timeline.event(i, d, "inject_bad_model", version=str(prod.version), degraded_from=str(current.version))


def simulate(params: Params, env: Env, *, periods: int, injections: Sequence[Injection], output: Path,
             auto_approve: bool, shock_items: int = 300, seed: int = 0,
             suites: Path | None = None) -> dict[str, Any]:
    """Run the loop over ``periods`` periods; write the timeline report into ``output``. Returns the timeline."""
    from recops.features import run_features
    from recops.ingest import ingest
    from recops.monitor import Models, apply_rollback, run_monitor
    from recops.storage import Storage
    from recops.validation import Suites, validate

    if periods < 2:
        raise ValueError(f"--periods {periods}: simulate at least 2 periods")
    kinds = [inj.kind for inj in injections]
    if len(set(kinds)) != len(kinds):
        raise ValueError("each injection kind can be given once")
    by_kind = {inj.kind: inj for inj in injections}
    suites = (suites or Path("expectations")).resolve()
    if not suites.is_dir():
        raise FileNotFoundError(f"expectation suites not found at {suites}")
    output = output.resolve()
    work = output / "workspace"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = env.model_copy(update={"storage_url": None})  # the simulation has its own lake
    sim, dates = _prepare_source(params, env, work, periods, by_kind.get("drift"), shock_items, seed)
    (work / "params.json").write_text(json.dumps(sim.model_dump(mode="json"), indent=1, default=str))
    timeline = Timeline()
    metric = sim.monitor.performance.metric
    with _workspace(work, f"sqlite:///{work / 'mlflow.db'}"):
        storage = Storage(sim.storage.root)
        models = Models(sim)
        try:
            for i, d in enumerate(dates, start=1):
                if "drift" in by_kind and by_kind["drift"].period == i:
                    timeline.event(i, d, "inject_drift", shock_items=shock_items)
                ingest(sim, env, storage, date=d)
                result = validate(sim, storage, Suites(suites), date=d)[0]
                accepted = result.status != "quarantined"
                row: dict[str, Any] = {"period": i, "date": d.isoformat(), "accepted": accepted}
                if not accepted:
                    timeline.event(i, d, "quarantined", reason="; ".join(str(f) for f in result.failures))
                    timeline.periods.append(row)
                    continue
                run_features(sim.features, storage, sim.period.days, until=d)
                summary = run_monitor(sim, storage, d, models)
                dec, drift = summary["decision"], summary.get("drift") or {}
                perf = summary.get("performance") or {}
                row.update(
                    champion=summary["champion"], previous_champion=summary["previous_champion"],
                    drift_share=drift.get("share"), trigger_share=drift.get("trigger_share"),
                    champion_metric=(perf.get("champion") or {}).get(metric),
                    previous_metric=(perf.get("previous_champion") or {}).get(metric),
                    cases=(perf.get("champion") or {}).get("n_cases"), decision=dec["reason"],
                )
                timeline.periods.append(row)
                if dec.get("rollback"):
                    rb = apply_rollback(sim, storage, d)
                    if rb["rolled_back"]:
                        timeline.event(i, d, "rollback", **{k: rb[k] for k in ("from", "to", "message")})
                if dec["retrain"]:
                    timeline.event(i, d, "retrain_request", trigger=dec["trigger"], dedup_key=dec["dedup_key"],
                                   reason=dec["reason"])
                    _retrain(sim, storage, timeline, i, d, dec["reason"], auto_approve)
                if "bad-model" in by_kind and by_kind["bad-model"].period == i:
                    _promote_bad_model(sim, storage, timeline, i, d, seed)
        finally:
            models.close()
    report = {"periods": timeline.periods, "events": timeline.events, "metric": metric,
              "share_threshold": sim.monitor.drift.share_threshold,
              "injections": [f"{inj.kind}@{inj.period}" for inj in injections], "auto_approve": auto_approve,
              "counts": {k: timeline.count(k) for k in
                         ("retrain_request", "retrain", "promote", "rollback", "gate_failed", "quarantined")}}
    write_timeline(report, output)
    return report


# --------------------------------------------------------------------------- report
EVENT_STYLE = {"retrain_request": ("tab:orange", "--"), "promote": ("tab:green", "-"), "rollback": ("tab:red", "-"),
               "inject_drift": ("tab:purple", ":"), "inject_bad_model": ("black", ":")}


def plot_timeline(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = report["periods"]
    x = [r["period"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax1.plot(x, [r.get("trigger_share") for r in rows], marker="o", ms=3, label="trigger-feature drift share")
    ax1.plot(x, [r.get("drift_share") for r in rows], alpha=0.5, label="all-feature drift share")
    ax1.axhline(report["share_threshold"], color="grey", lw=0.8, ls="--", label="threshold")
    ax1.set_ylabel("drift share")
    ax1.set_ylim(-0.05, 1.05)
    ax2.plot(x, [r.get("champion_metric") for r in rows], marker="o", ms=3, label="champion")
    ax2.plot(x, [r.get("previous_metric") for r in rows], marker="x", ms=3, alpha=0.7, label="previous champion")
    ax2.set_ylabel(f"live {report['metric']}")
    ax2.set_xlabel("period")
    seen: set[str] = set()
    for e in report["events"]:
        if e["kind"] not in EVENT_STYLE:
            continue
        color, style = EVENT_STYLE[e["kind"]]
        for ax in (ax1, ax2):
            ax.axvline(e["period"], color=color, ls=style, lw=1.2,
                       label=e["kind"] if ax is ax2 and e["kind"] not in seen else None)
        seen.add(e["kind"])
    ax1.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper left", fontsize=8)
    fig.suptitle("recops simulate: " + (", ".join(report["injections"]) or "no injection"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_timeline(report: dict[str, Any], output: Path) -> None:
    """timeline.json, events.jsonl, timeline.png, timeline.html (each written to a temp name, then renamed)."""
    from recops.storage import atomic_write_file

    output.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> None:
        atomic_write_file(output / name, data)

    put("timeline.json", json.dumps(report, indent=1, default=str).encode())
    put("events.jsonl", "".join(json.dumps(e, default=str) + "\n" for e in report["events"]).encode())
    png_tmp = output / ".timeline.png.tmp.png"
    plot_timeline(report, png_tmp)
    png = png_tmp.read_bytes()
    png_tmp.unlink()
    put("timeline.png", png)
    event_rows = "".join(
        f"<tr><td>{e['period']}</td><td>{e['date']}</td><td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(json.dumps({k: v for k, v in e.items() if k not in ('period', 'date', 'kind')}, default=str))}</td></tr>"
        for e in report["events"])
    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recops simulate</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 6px;font-size:13px;vertical-align:top}}</style></head><body>
<h1>recops simulate</h1><p>{len(report['periods'])} periods; injections: {html.escape(', '.join(report['injections']) or 'none')};
auto-approve: {report['auto_approve']}; {html.escape(counts)}</p>
<img alt="timeline" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Events</h2><table><tr><th>period</th><th>date</th><th>event</th><th>detail</th></tr>{event_rows}</table>
<p>Per-period Evidently reports: <code>workspace/data/lake/monitoring/periods/date=D/</code>.</p></body></html>"""
    put("timeline.html", page.encode())
