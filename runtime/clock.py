"""Clocks: every actor reads time from an injected clock, never from ``time.time`` directly.

Live runs use :class:`WallClock`; replays use :class:`ReplayClock`, which the replay driver moves
to each frame's timestamp so that timers and minute ticks land at the same points every replay.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds (UTC)."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()


class ShiftedClock:
    """The wall clock moved by ``offset_s`` (a test runs the desk and the simulator at another
    time of day, e.g. a few seconds before the 08:00 UTC settlement)."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s


class ReplayClock:
    """Time as written in a wire log. Never moves backwards: a log whose timestamps jitter
    backwards by a few microseconds (the capture has some) keeps the latest time seen."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> float:
        with self._lock:
            if t > self._now:
                self._now = t
            return self._now
