"""The daily archive's schedule: off at keep_days 0, else once per UTC day, for the days before today
minus keep_days."""

from __future__ import annotations

import datetime as dt

from sql.archive import ArchiveSchedule

DAY = 86_400.0
MIDNIGHT = dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()


def test_off_when_keep_days_is_zero() -> None:
    schedule = ArchiveSchedule(0)
    assert [schedule.due(MIDNIGHT + n * 3600) for n in range(48)] == [None] * 48


def test_once_a_utc_day_for_the_days_before_today_minus_keep_days() -> None:
    schedule = ArchiveSchedule(7)
    assert schedule.due(MIDNIGHT + 600) == dt.date(2026, 11, 30)
    assert schedule.due(MIDNIGHT + 3600) is None
    assert schedule.due(MIDNIGHT + DAY - 1) is None
    assert schedule.due(MIDNIGHT + DAY) == dt.date(2026, 12, 1)
    assert schedule.due(MIDNIGHT + DAY + 60) is None
