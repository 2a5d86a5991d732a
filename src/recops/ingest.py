"""``recops ingest``: land one period (or every period) of new interactions.

Output per period, committed atomically::

    landing/interactions/date=D/part-0.parquet
    landing/catalog/date=D/items.parquet

Landing is a pure function of the source and the period, written deterministically,
so landing the same period twice is byte-identical and never duplicates rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recops import periods
from recops.config import Env, Params
from recops.storage import Partition, Storage
from recops.tables import CATALOG_COLUMNS, INTERACTION_COLUMNS, to_parquet_bytes

log = logging.getLogger(__name__)

INTERACTIONS = "interactions"
CATALOG = "catalog"


@dataclass(frozen=True)
class SourceData:
    interactions: pd.DataFrame  # canonical columns, source timeline
    catalog: pd.DataFrame


@dataclass
class IngestReport:
    landed: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.landed)


def load_source(params: Params, env: Env) -> SourceData:
    """Read the configured source (MovieLens download/mirror, or a generic event log)."""
    src = params.source
    if src.kind == "movielens":
        from recops.sources import fetch_movielens, read_movielens

        folder = fetch_movielens(
            src.movielens.dataset,
            Path(src.cache_dir),
            base_url=src.movielens.base_url,
            mirror=env.data_mirror,
            checksum=src.movielens.checksum,
        )
        data = read_movielens(folder)
        return SourceData(data.interactions, data.catalog)
    from recops.sources import read_catalog, read_event_log

    ev = src.event_log
    interactions = read_event_log(
        ev.path,
        fmt=ev.format,
        columns=ev.columns.model_dump(),
        timestamp_unit=ev.timestamp_unit,
        default_rating=ev.default_rating,
    )
    if ev.catalog_path:
        catalog = read_catalog(ev.catalog_path, fmt=ev.catalog_format, columns=ev.catalog_columns.model_dump())
    else:  # no catalog: every item seen is its own entry, untitled items get their id as title
        ids = pd.unique(interactions["item_id"])
        catalog = pd.DataFrame({"item_id": ids, "title": ids, "genres": ""})
    return SourceData(interactions, catalog)


def calendar_origin(params: Params) -> dt.date:
    """Day the period calendar is aligned to."""
    return params.replay.start_date if params.replay.enabled else dt.date(1970, 1, 1)


def on_calendar(events: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Events with timestamps on the pipeline's calendar (replayed when configured)."""
    if not params.replay.enabled:
        return events
    r = params.replay
    return periods.replay_timeline(events, start=r.start_date, periods=r.periods, days=params.period.days, mode=r.mode)


def available_periods(events: pd.DataFrame, params: Params) -> list[dt.date]:
    """Every period start that holds at least one event."""
    origin, days = calendar_origin(params), params.period.days
    if events.empty:
        return []
    idx = np.unique(periods.period_of(events["timestamp"].to_numpy(), origin, days))
    return [origin + dt.timedelta(days=int(i) * days) for i in idx]


def slice_period(events: pd.DataFrame, date: dt.date, days: int) -> pd.DataFrame:
    lo, hi = periods.period_bounds(date, days)
    ts = events["timestamp"].to_numpy()
    part = events.loc[(ts >= lo) & (ts < hi), INTERACTION_COLUMNS]
    part = part.drop_duplicates(["user_id", "item_id", "timestamp"], keep="last")
    return part.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def land_period(storage: Storage, date: dt.date, interactions: pd.DataFrame, catalog: pd.DataFrame) -> dict:
    """Write one period's interactions and catalog snapshot into the landing zone."""
    cat = catalog[CATALOG_COLUMNS].sort_values("item_id", kind="stable").reset_index(drop=True)
    storage.write_partition(
        Partition("landing", CATALOG, date), {"items.parquet": to_parquet_bytes(cat)}, {"rows": len(cat)}
    )
    manifest = storage.write_partition(
        Partition("landing", INTERACTIONS, date),
        {"part-0.parquet": to_parquet_bytes(interactions)},
        {"rows": len(interactions)},
    )
    return {"date": date.isoformat(), "rows": len(interactions), "sha256": manifest["files"]["part-0.parquet"]["sha256"]}


def ingest(
    params: Params,
    env: Env,
    storage: Storage,
    date: dt.date | None = None,
    until: dt.date | None = None,
) -> IngestReport:
    """Land the period starting at ``date``, or every available period up to ``until``."""
    origin, days = calendar_origin(params), params.period.days
    source = load_source(params, env)
    events = on_calendar(source.interactions, params)
    if date is not None:
        periods.check_aligned(date, origin, days)
        dates = [date]
    else:
        limit = until or params.ingest.until
        dates = [d for d in available_periods(events, params) if limit is None or d <= limit]
    report = IngestReport()
    for d in dates:
        part = slice_period(events, d, days)
        report.landed.append(land_period(storage, d, part, source.catalog))
        log.info("landed %s: %d interactions", d, len(part))
    return report
