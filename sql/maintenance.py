"""The Recorder's daily maintenance of the record, in a thread and on a connection of its own.

Once a UTC day, :data:`sql.day_order.GRACE` after midnight (or at start, later in the day): the
finished days' option rows are put in block order (:func:`sql.day_order.order_finished_days`,
PostgreSQL), then, with ``recorder.archive_keep_days`` > 0, the days before today minus that many are
archived to Parquet and removed from the database (:func:`sql.archive.archive`). The Recorder's
minutes are never waited on: each step takes the live tables only under a short ``lock_timeout``
(a minute being written waits at most that long; on SQLite a minute written meanwhile waits its busy
timeout, or is spooled). A run stops starting new days after ``budget_s``; a failed step is logged
and tried again the next day (nothing is removed unless verified, a day is reordered or left as it was).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from sql.archive import ArchivedDay, archive
from sql.day_order import GRACE, OrderedDay, order_finished_days

UTC = dt.UTC


@dataclass(frozen=True)
class MaintenanceRun:
    """What a day's run does: ``now`` (UTC) and the date before which days are archived (None: the
    archive is off)."""

    now: dt.datetime
    archive_before: dt.date | None


class MaintenanceSchedule:
    """When the daily maintenance runs: at the first call of each UTC day at or after :data:`GRACE` past
    midnight (``now`` in unix seconds), archiving the days before today minus ``keep_days`` (0: never). Pure."""

    def __init__(self, keep_days: int) -> None:
        self.keep_days = keep_days
        self._done_for: dt.date | None = None

    def due(self, now: float) -> MaintenanceRun | None:
        at = dt.datetime.fromtimestamp(now, UTC)
        today = at.date()
        if self._done_for == today or at - dt.datetime.combine(today, dt.time(), UTC) < GRACE:
            return None
        self._done_for = today
        before = today - dt.timedelta(days=self.keep_days) if self.keep_days > 0 else None
        return MaintenanceRun(at, before)


class DailyMaintenance:
    """:meth:`tick` (each minute) starts a run in a daemon thread of its own with a connection of its own
    when :class:`MaintenanceSchedule` says so and no run is going."""

    def __init__(self, url: str, out: Path, *, keep_days: int, budget_s: float,
                 connect_timeout_s: float = 3.0) -> None:
        self.url = url
        self.out = out
        self.budget_s = budget_s
        self.connect_timeout_s = connect_timeout_s
        self.schedule = MaintenanceSchedule(keep_days)
        self._thread: threading.Thread | None = None
        self.last_ordered: list[OrderedDay] | None = None
        self.last_result: list[ArchivedDay] | None = None
        self.last_error: str = ""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self, now: float) -> bool:
        """Start a run if one is due at ``now``; True when started."""
        if self.running:
            return False
        run = self.schedule.due(now)
        if run is None:
            return False
        self._thread = threading.Thread(target=self._run, args=(run,), name="daily-maintenance", daemon=True)
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, run: MaintenanceRun) -> None:
        from sql.engine import make_engine

        log = structlog.get_logger(actor="recorder")
        deadline = time.monotonic() + self.budget_s
        engine = make_engine(self.url, connect_timeout_s=self.connect_timeout_s)
        errors = []
        try:
            try:  # days about to be archived are not ordered first
                self.last_ordered = order_finished_days(engine, run.now, deadline=deadline, after=run.archive_before)
                if self.last_ordered:
                    log.info("days_ordered", days=[d.day.isoformat() for d in self.last_ordered])
            except Exception as exc:  # logged; the next day tries again, a day is reordered whole or not at all
                errors.append(f"ordering: {exc}")
                log.warning("ordering_failed", error=str(exc))
            if run.archive_before is not None:
                log.info("archive_started", before=run.archive_before.isoformat(), out=str(self.out))
                try:
                    self.last_result = archive(engine, self.out, before=run.archive_before, today=run.now.date(),
                                               deadline=deadline)
                    log.info("archive_finished", before=run.archive_before.isoformat(),
                             days=[d.day.isoformat() for d in self.last_result])
                except Exception as exc:  # logged; the next day tries again, nothing was removed unverified
                    errors.append(f"archive: {exc}")
                    log.warning("archive_failed", before=run.archive_before.isoformat(), error=str(exc))
        finally:
            self.last_error = "; ".join(errors)
            engine.dispose()
