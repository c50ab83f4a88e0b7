"""sql.partitions' pure part (names, days, when the Recorder makes partitions ahead) and
sql.option_rows' value rules."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from sql.option_rows import REAL_MAX, REAL_TINY, as_real, most_common
from sql.partitions import PartitionsAhead, days_from, is_partition, partition_name, utc_day

MIDNIGHT = dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()


def test_partition_names_are_the_table_and_the_utc_day() -> None:
    assert partition_name("option_minutes", dt.date(2026, 12, 7)) == "option_minutes_p20261207"
    assert is_partition("option_minutes_p20261207") and is_partition("surface_points_p20210722")
    assert not is_partition("option_minutes") and not is_partition("orders_audit_p20261207")
    assert not is_partition("option_minutes_p2026120")
    assert utc_day(MIDNIGHT - 0.001) == dt.date(2026, 12, 6) and utc_day(MIDNIGHT) == dt.date(2026, 12, 7)
    assert days_from(dt.date(2026, 12, 31), 3) == [dt.date(2026, 12, 31), dt.date(2027, 1, 1), dt.date(2027, 1, 2)]


def test_partitions_ahead_are_due_once_a_day_until_made() -> None:
    ahead = PartitionsAhead(days_ahead=2)
    today = [dt.date(2026, 12, 7), dt.date(2026, 12, 8), dt.date(2026, 12, 9)]
    assert ahead.due(MIDNIGHT + 60) == today
    assert ahead.due(MIDNIGHT + 120) == today  # not made yet (the database did not answer): asked again
    ahead.done(MIDNIGHT + 120)
    assert ahead.due(MIDNIGHT + 180) == []
    assert ahead.due(MIDNIGHT + 86_399) == []
    assert ahead.due(MIDNIGHT + 86_400) == [dt.date(2026, 12, 8), dt.date(2026, 12, 9), dt.date(2026, 12, 10)]
    assert PartitionsAhead(days_ahead=0).due(MIDNIGHT) == [dt.date(2026, 12, 7)]


@pytest.mark.parametrize("value, stored", [
    (None, None), (float("nan"), None), (float("inf"), None), (-float("inf"), None), (1e39, None), (-1e39, None),
    (REAL_MAX, REAL_MAX), (1e-45, 0.0), (-1e-40, 0.0), (REAL_TINY, REAL_TINY), (0.0, 0.0), (0.1455, 0.1455),
    (-3.25, -3.25),
])
def test_a_value_is_stored_as_a_real_can_hold_it(value: float | None, stored: float | None) -> None:
    assert as_real(value) == stored


def test_the_most_common_value_ignores_missing_ones_and_takes_the_first_of_a_tie() -> None:
    assert most_common([32004.5, 32004.5, 32005.0, None, float("nan")]) == 32004.5
    assert most_common([2.0, 1.0, 1.0, 2.0]) == 2.0
    assert most_common([None, float("nan")]) is None and most_common([]) is None
    assert not math.isnan(most_common([float("nan"), 1.0]) or math.nan)
