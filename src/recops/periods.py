"""Periods and replay: pure functions mapping timestamps onto the pipeline's calendar.

A *period* is a half-open interval ``[start, start + days)`` in UTC, named by its
start date (Airflow's logical date). A *replay* maps a historical log's own timeline
onto a simulated calendar so that, e.g., 22 years of MovieLens arrive as 120 daily
periods.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
import pandas as pd

DAY = 86_400


def to_epoch(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def from_epoch(ts: int) -> dt.date:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).date()


def period_bounds(date: dt.date, days: int) -> tuple[int, int]:
    """Epoch seconds ``[start, end)`` of the period starting at ``date``."""
    start = to_epoch(date)
    return start, start + days * DAY


def check_aligned(date: dt.date, origin: dt.date, days: int) -> None:
    """Refuse a date that is not a period start on the calendar (origin + k * days)."""
    offset = (date - origin).days
    if offset % days:
        raise ValueError(
            f"{date.isoformat()} is not a period start: periods are {days} days long and "
            f"aligned to {origin.isoformat()} (nearest: {(origin + dt.timedelta(days=offset - offset % days)).isoformat()})"
        )


def period_dates(origin: dt.date, periods: int, days: int) -> list[dt.date]:
    return [origin + dt.timedelta(days=i * days) for i in range(periods)]


def period_of(timestamps: np.ndarray, origin: dt.date, days: int) -> np.ndarray:
    """Index of the period each timestamp falls in (negative before the origin)."""
    return np.floor_divide(np.asarray(timestamps, dtype=np.int64) - to_epoch(origin), days * DAY)


def replay_timeline(
    events: pd.DataFrame,
    *,
    start: dt.date,
    periods: int,
    days: int,
    mode: Literal["equal_count", "real_time"],
) -> pd.DataFrame:
    """Map the log's timeline onto ``periods`` periods starting at ``start``.

    - ``equal_count``: events in chronological order are cut into ``periods`` slices
      of (nearly) equal size; within a slice relative timing is preserved.
    - ``real_time``: the log's span ``[t_min, t_max]`` is scaled linearly onto the
      simulated span, so bursts in the log stay bursts.

    Order is preserved (the output is sorted like the input) and the mapping is a
    pure function of the log, so replaying twice gives identical periods.
    """
    if periods < 1:
        raise ValueError("periods must be >= 1")
    out = events.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    n = len(out)
    if n == 0:
        return out
    ts = out["timestamp"].to_numpy(dtype=np.int64)
    span = days * DAY
    if mode == "equal_count":
        p = (np.arange(n, dtype=np.int64) * periods) // n
        lo = pd.Series(ts).groupby(p).transform("min").to_numpy()
        hi = pd.Series(ts).groupby(p).transform("max").to_numpy()
        frac = (ts - lo) / (hi - lo + 1)
    elif mode == "real_time":
        t0, t1 = int(ts.min()), int(ts.max())
        pos = (ts - t0) / (t1 - t0 + 1) * periods
        p = np.floor(pos).astype(np.int64)
        frac = pos - p
    else:  # pragma: no cover - guarded by config validation
        raise ValueError(f"unknown replay mode {mode!r}")
    out["timestamp"] = to_epoch(start) + p * span + np.floor(frac * span).astype(np.int64)
    return out
