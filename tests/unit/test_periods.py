import datetime as dt

import numpy as np
import pytest

from recops import periods


def test_period_bounds_are_half_open_utc_days() -> None:
    lo, hi = periods.period_bounds(dt.date(2024, 1, 2), 1)
    assert hi - lo == 86400
    assert periods.from_epoch(lo) == dt.date(2024, 1, 2)
    assert periods.from_epoch(hi - 1) == dt.date(2024, 1, 2)
    assert periods.from_epoch(hi) == dt.date(2024, 1, 3)


def test_check_aligned_rejects_mid_period_dates() -> None:
    periods.check_aligned(dt.date(2024, 1, 8), dt.date(2024, 1, 1), 7)
    with pytest.raises(ValueError, match="not a period start.*2024-01-08"):
        periods.check_aligned(dt.date(2024, 1, 10), dt.date(2024, 1, 1), 7)


@pytest.mark.parametrize("mode", ["equal_count", "real_time"])
def test_replay_maps_every_event_inside_the_simulated_span(events, mode) -> None:
    start = dt.date(2024, 1, 1)
    out = periods.replay_timeline(events, start=start, periods=10, days=1, mode=mode)
    assert len(out) == len(events)
    idx = periods.period_of(out["timestamp"].to_numpy(), start, 1)
    assert idx.min() == 0 and idx.max() == 9
    # order of events is preserved by the mapping
    assert np.all(np.diff(out["timestamp"].to_numpy()) >= 0)
    assert out["user_id"].tolist() == events.sort_values(["timestamp", "user_id", "item_id"])["user_id"].tolist()


def test_equal_count_periods_have_equal_sizes(events) -> None:
    out = periods.replay_timeline(events, start=dt.date(2024, 1, 1), periods=7, days=1, mode="equal_count")
    counts = np.bincount(periods.period_of(out["timestamp"].to_numpy(), dt.date(2024, 1, 1), 1))
    assert len(counts) == 7
    assert counts.max() - counts.min() <= 1


def test_real_time_keeps_bursts(events) -> None:
    burst = events.copy()
    burst.loc[: len(burst) // 2, "timestamp"] = burst["timestamp"].min()  # half the log in one instant
    out = periods.replay_timeline(burst, start=dt.date(2024, 1, 1), periods=10, days=1, mode="real_time")
    counts = np.bincount(periods.period_of(out["timestamp"].to_numpy(), dt.date(2024, 1, 1), 1), minlength=10)
    assert counts[0] > len(burst) // 2


def test_replay_is_deterministic(events) -> None:
    a = periods.replay_timeline(events, start=dt.date(2024, 1, 1), periods=5, days=2, mode="equal_count")
    b = periods.replay_timeline(events.sample(frac=1, random_state=3), start=dt.date(2024, 1, 1), periods=5, days=2, mode="equal_count")
    assert a.equals(b)
