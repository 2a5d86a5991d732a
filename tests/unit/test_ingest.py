import datetime as dt
from pathlib import Path

import pandas as pd

from recops.config import parse_params
from recops.ingest import available_periods, land_period, on_calendar, slice_period
from recops.storage import Partition, Storage
from recops.tables import from_parquet_bytes


def params(**replay):
    return parse_params({"replay": {"start_date": "2024-01-01", "periods": 6, **replay}})


def test_periods_partition_the_log_exactly(events) -> None:
    p = params()
    timeline = on_calendar(events, p)
    dates = available_periods(timeline, p)
    assert dates == [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(6)]
    parts = [slice_period(timeline, d, 1) for d in dates]
    assert sum(len(x) for x in parts) == len(events)
    assert pd.concat(parts).duplicated(["user_id", "item_id", "timestamp"]).sum() == 0


def test_landing_twice_is_byte_identical_and_never_duplicates(tmp_path: Path, events, catalog) -> None:
    p = params()
    storage = Storage(str(tmp_path))
    timeline = on_calendar(events, p)
    d = dt.date(2024, 1, 3)
    part = slice_period(timeline, d, 1)
    land_period(storage, d, part, catalog)
    snapshot = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    land_period(storage, d, slice_period(timeline, d, 1), catalog)
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == snapshot
    landed = from_parquet_bytes(storage.read_partition(Partition("landing", "interactions", d))["part-0.parquet"])
    assert len(landed) == len(part)


def test_duplicate_source_events_land_once(events) -> None:
    p = params()
    doubled = on_calendar(pd.concat([events, events]), p)
    d = available_periods(doubled, p)[0]
    part = slice_period(doubled, d, 1)
    assert not part.duplicated(["user_id", "item_id", "timestamp"]).any()
