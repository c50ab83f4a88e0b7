"""Minute ticks and the daily rollover, computed from time alone (pure, no threads).

The supervisor feeds :meth:`Schedule.advance` with the clock's time; it returns every event whose
instant lies in (last, now], in time order, each exactly once, however far time jumped.
"""

from __future__ import annotations

import datetime as dt
import math

from messages.system import DailyRollover, MinuteTick

DAY = 86_400


def parse_hhmm(text: str) -> int:
    """'08:00' -> seconds after midnight UTC; a clear error for anything else."""
    try:
        hours, minutes = text.split(":")
        h, m = int(hours), int(minutes)
    except ValueError:
        raise ValueError(f"expected a UTC time of day as HH:MM, got {text!r}") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"expected a UTC time of day as HH:MM, got {text!r}")
    return h * 3600 + m * 60


class Schedule:
    def __init__(self, start: float, rollover_utc: str = "08:00") -> None:
        self._rollover_offset = parse_hhmm(rollover_utc)
        # Events at exactly `start` count as already past: a program started at 10:00:00 does
        # not emit the 10:00 tick for a minute it did not watch.
        self._last = start

    @property
    def last(self) -> float:
        return self._last

    def next_event_time(self) -> float:
        """The instant of the next event after the last time seen (for a live timer)."""
        return (math.floor(self._last / 60) + 1) * 60.0

    def advance(self, now: float) -> list[MinuteTick | DailyRollover]:
        if now <= self._last:
            return []
        events: list[MinuteTick | DailyRollover] = []
        first = math.floor(self._last / 60) + 1
        last = math.floor(now / 60)
        for minute in range(first, last + 1):
            at = minute * 60
            events.append(MinuteTick(at=float(at)))
            # Rollover instants are whole minutes, so checking each minute boundary finds all.
            if at % DAY == self._rollover_offset:
                day = dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()
                events.append(DailyRollover(at=float(at), day=day))
        self._last = now
        return events
