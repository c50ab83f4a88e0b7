"""The daily maintenance's schedule: once per UTC day from GRACE past midnight (or at the first call later
in the day), archiving the days before today minus keep_days (None when keep_days is 0: off)."""

from __future__ import annotations

import datetime as dt

from sql.day_order import GRACE
from sql.maintenance import MaintenanceSchedule

DAY = 86_400.0
MIDNIGHT = dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()
AFTER_GRACE = MIDNIGHT + GRACE.total_seconds()


def test_the_archive_is_off_when_keep_days_is_zero_but_the_run_still_happens() -> None:
    schedule = MaintenanceSchedule(0)
    runs = [schedule.due(MIDNIGHT + n * 3600) for n in range(48)]
    made = [r for r in runs if r is not None]
    assert len(made) == 2 and all(r.archive_before is None for r in made)


def test_once_a_utc_day_after_the_grace_for_the_days_before_today_minus_keep_days() -> None:
    schedule = MaintenanceSchedule(7)
    assert schedule.due(MIDNIGHT) is None  # the last minutes of yesterday may still be written
    assert schedule.due(AFTER_GRACE - 1) is None
    run = schedule.due(AFTER_GRACE)
    assert run is not None and run.archive_before == dt.date(2026, 11, 30)
    assert run.now == dt.datetime.fromtimestamp(AFTER_GRACE, dt.UTC)
    assert schedule.due(MIDNIGHT + 3600) is None
    assert schedule.due(MIDNIGHT + DAY - 1) is None
    assert schedule.due(MIDNIGHT + DAY) is None
    later = schedule.due(AFTER_GRACE + DAY)
    assert later is not None and later.archive_before == dt.date(2026, 12, 1)
    assert schedule.due(AFTER_GRACE + DAY + 60) is None


def test_a_start_late_in_the_day_runs_at_once() -> None:
    schedule = MaintenanceSchedule(0)
    assert schedule.due(MIDNIGHT + 10 * 3600) is not None
    assert schedule.due(MIDNIGHT + 10 * 3600 + 60) is None
