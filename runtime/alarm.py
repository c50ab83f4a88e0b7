"""One thread that calls back when the earliest of an actor's deadlines is due.

``threading.Timer`` starts a new thread for every deadline, and ``Thread.start`` waits until that
thread runs: from a hot handler that is a thread switch on the path to the order. An
:class:`Alarm` keeps one thread for the actor's life; :meth:`Alarm.set` only stores the deadline
and wakes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Alarm:
    """Calls ``ring()`` (in the alarm's own thread) once the deadline set last is reached.

    Deadlines are ``time.monotonic()`` seconds; a later :meth:`set` replaces the deadline
    (earlier or later), :meth:`clear` removes it, :meth:`close` ends the thread."""

    def __init__(self, ring: Callable[[], None], name: str = "alarm") -> None:
        self._ring = ring
        self._due: float | None = None
        self._closed = False
        self._changed = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def due(self) -> float | None:
        return self._due

    def set(self, due: float) -> None:
        with self._changed:
            self._due = due
            self._changed.notify()

    def clear(self) -> None:
        with self._changed:
            self._due = None
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _run(self) -> None:
        changed = self._changed
        while True:
            with changed:
                while not self._closed:
                    due = self._due
                    if due is None:
                        changed.wait()
                        continue
                    delay = due - time.monotonic()
                    if delay <= 0:
                        self._due = None
                        break
                    changed.wait(delay)
                if self._closed:
                    return
            self._ring()  # outside the lock: it may set the next deadline


class ClockAlarm:
    """An :class:`Alarm` armed in the program's clock time for the earliest of an actor's deadlines:
    :meth:`arm` sets it unless a deadline at or before ``due`` is already set; the actor calls
    :meth:`rang` when it handles the wake-up (then anything due is looked at and armed again)."""

    def __init__(self, ring: Callable[[], None], name: str = "alarm") -> None:
        self._alarm = Alarm(ring, name)
        self.due: float | None = None  # clock time of the deadline set

    def arm(self, due: float, now: float) -> None:
        if self.due is not None and self.due <= due:
            return
        self.due = due
        self._alarm.set(time.monotonic() + max(0.0, due - now))

    def rang(self) -> None:
        self.due = None

    def close(self) -> None:
        self._alarm.close()
