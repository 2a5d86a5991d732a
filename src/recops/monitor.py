"""``recops monitor``: summarise one period and decide whether to ask for retraining.

A simple stand-in until drift detection lands. For a period D it records, from the lake's
accepted data only (``raw/``):

* rows, distinct users and items accepted for D;
* new users / items: ids never seen in any accepted period before D, as counts and as the
  share of D's interactions they account for (``new_user_share``, ``new_item_share``);
* how many periods have been accepted so far.

and a decision ``{"retrain": bool, "reason": str, "scores": {...}}`` written with the summary
to ``reports/monitor/date=D.json``.

Policy (``MonitorParams``; section ``monitor`` of params.yaml). It is evaluated for every
accepted period up to D in date order, so a decision is a pure function of the lake up to D:
re-running or backfilling a period gives the same answer, and no state is kept elsewhere.

1. D is not accepted (quarantined, or not validated): no retrain.
2. Fewer than ``warmup_periods`` accepted periods so far: no retrain (too little history).
3. Fewer than ``cooldown_periods`` accepted periods since the last request: no retrain.
4. ``new_item_share >= new_item_share_threshold`` (or ``new_user_share >=
   new_user_share_threshold`` when set): retrain (the catalogue moved).
5. No request yet, or ``retrain_every_periods`` accepted periods since the last one: retrain
   (first model after warm-up / scheduled refresh).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from recops.storage import Storage

REPORT_DIR = Path("reports/monitor")


class MonitorParams(BaseModel):
    """``monitor:`` in params.yaml: when the daily pipeline asks for a retraining run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warmup_periods: int = Field(default=7, ge=1, description="Accepted periods needed before the first request.")
    new_item_share_threshold: float = Field(
        default=0.25, gt=0, le=1, description="Request when this share of a period's interactions is on new items."
    )
    new_user_share_threshold: float | None = Field(
        default=None, gt=0, le=1, description="Same for new users; null = off (MovieLens users arrive in bursts)."
    )
    retrain_every_periods: int | None = Field(
        default=14, ge=1, description="Request after this many accepted periods without one; null = drift only."
    )
    cooldown_periods: int = Field(default=3, ge=0, description="Accepted periods between two requests, at least.")


# --------------------------------------------------------------------------- summaries
def _accepted_periods(storage: Storage, until: dt.date) -> Iterator[tuple[dt.date, Any]]:
    """(date, interactions frame) of every accepted period up to ``until``, in date order."""
    from recops.ingest import INTERACTIONS
    from recops.storage import Partition
    from recops.tables import from_parquet_bytes

    for d in storage.partition_dates("raw", INTERACTIONS):
        if d > until:
            break
        files = storage.read_partition(Partition("raw", INTERACTIONS, d))
        yield d, from_parquet_bytes(files["part-0.parquet"])[["user_id", "item_id"]]


def _period_summary(frame: Any, seen_users: set[str], seen_items: set[str], accepted: int) -> dict[str, Any]:
    users, items = frame["user_id"].astype(str), frame["item_id"].astype(str)
    new_user_rows = ~users.isin(seen_users)
    new_item_rows = ~items.isin(seen_items)
    rows = len(frame)
    return {
        "rows": rows,
        "users": int(users.nunique()),
        "items": int(items.nunique()),
        "new_users": int(users[new_user_rows].nunique()),
        "new_items": int(items[new_item_rows].nunique()),
        "new_user_share": round(float(new_user_rows.mean()) if rows else 0.0, 6),
        "new_item_share": round(float(new_item_rows.mean()) if rows else 0.0, 6),
        "known_users_before": len(seen_users),
        "known_items_before": len(seen_items),
        "accepted_periods": accepted,
    }


def decide(summary: dict[str, Any], policy: MonitorParams, since_last: int | None) -> dict[str, Any]:
    """The policy for one accepted period. ``since_last``: accepted periods since the last request
    (None = never requested)."""
    scores = {
        "new_item_share": summary["new_item_share"],
        "new_user_share": summary["new_user_share"],
        "rows": summary["rows"],
        "accepted_periods": summary["accepted_periods"],
        "periods_since_request": since_last,
    }

    def out(retrain: bool, reason: str) -> dict[str, Any]:
        return {"retrain": retrain, "reason": reason, "scores": scores}

    if summary["accepted_periods"] < policy.warmup_periods:
        return out(False, f"warming up: {summary['accepted_periods']} of {policy.warmup_periods} periods accepted")
    if since_last is not None and since_last < policy.cooldown_periods:
        return out(False, f"cooldown: last request {since_last} period(s) ago (< {policy.cooldown_periods})")
    if summary["new_item_share"] >= policy.new_item_share_threshold:
        return out(True, f"new items: {summary['new_item_share']:.1%} of interactions are on items never seen "
                         f"before (>= {policy.new_item_share_threshold:.1%})")
    t = policy.new_user_share_threshold
    if t is not None and summary["new_user_share"] >= t:
        return out(True, f"new users: {summary['new_user_share']:.1%} of interactions are by new users (>= {t:.1%})")
    if since_last is None:
        return out(True, f"first model: warm-up done ({summary['accepted_periods']} periods accepted)")
    every = policy.retrain_every_periods
    if every is not None and since_last >= every:
        return out(True, f"scheduled refresh: {since_last} periods since the last request (>= {every})")
    return out(False, f"no drift: new-item share {summary['new_item_share']:.1%} < "
                      f"{policy.new_item_share_threshold:.1%}, {since_last} period(s) since the last request")


def monitor(storage: Storage, policy: MonitorParams, date: dt.date | None = None) -> dict[str, Any]:
    """Summary and decision for ``date`` (default: the latest accepted period)."""
    from recops.ingest import INTERACTIONS

    accepted_dates = storage.partition_dates("raw", INTERACTIONS)
    if date is None:
        if not accepted_dates:
            raise FileNotFoundError(f"no accepted period in {storage.uri('raw', INTERACTIONS)}; run validate first")
        date = accepted_dates[-1]
    seen_users: set[str] = set()
    seen_items: set[str] = set()
    last_index: int | None = None  # accepted-period count at the last request
    last_request: str | None = None
    summary: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    accepted = 0
    for d, frame in _accepted_periods(storage, date):
        accepted += 1
        since_last = None if last_index is None else accepted - last_index
        summary = _period_summary(frame, seen_users, seen_items, accepted)
        decision = decide(summary, policy, since_last)
        if d == date:
            break
        if decision["retrain"]:
            last_index, last_request = accepted, d.isoformat()
        seen_users.update(frame["user_id"].astype(str))
        seen_items.update(frame["item_id"].astype(str))
    if date not in accepted_dates:
        status = "quarantined" if date in storage.partition_dates("quarantine", INTERACTIONS) else "not accepted"
        summary = {"rows": 0, "users": 0, "items": 0, "accepted_periods": accepted,
                   "known_users_before": len(seen_users), "known_items_before": len(seen_items)}
        decision = {"retrain": False, "reason": f"period {date.isoformat()} is {status}: nothing to monitor",
                    "scores": {"accepted_periods": accepted}}
    else:
        status = "accepted"
    assert summary is not None and decision is not None
    return {
        "date": date.isoformat(),
        "status": status,
        "summary": summary,
        "decision": decision,
        "last_request_before": last_request,
        "policy": policy.model_dump(),
    }


def report_path(date: dt.date | str, root: Path = REPORT_DIR) -> Path:
    d = date.isoformat() if isinstance(date, dt.date) else str(date)
    return root / f"date={d}.json"


def write_report(report: dict[str, Any], root: Path = REPORT_DIR) -> Path:
    """``reports/monitor/date=D.json``, written atomically (temp file + rename)."""
    from recops.storage import canonical_json

    path = report_path(report["date"], root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(canonical_json(report))
    tmp.replace(path)
    return path
