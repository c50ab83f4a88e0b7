"""A deadline around a database driver call: the Recorder never waits on a hung database.

Server-side timeouts (PostgreSQL's ``statement_timeout`` and ``lock_timeout``, SQLite's busy
timeout) end a slow statement, but not a server that stopped answering: psycopg2 then blocks in
``recv`` with no end (a SIGSTOPped server's kernel still acknowledges every packet, so neither TCP
keepalives nor ``tcp_user_timeout`` notice). So the call runs in a daemon thread of its own and the
caller waits for it at most ``deadline_s``. Past it, ``abort`` is called (the store shuts the
sockets of its connections down, which ends the blocked ``recv``; for SQLite it interrupts the
statement) and :class:`DeadlineExceeded` is raised; the thread is abandoned (a daemon thread never
holds the program's exit).

A stop (``stopping`` set, from any thread) shortens the wait: a call in flight, or one started
while stopping, gets at most ``stop_grace_s`` more, so a stop never waits on a hung write.

:func:`classify` is the pure part: from how long a call took against its deadline, whether the
database is answering, slow or hung (:class:`~messages.surface.DatabaseHealth`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from messages.surface import DatabaseHealth

T = TypeVar("T")

#: A write that took more than this share of its deadline says the database is slow.
SLOW_SHARE = 0.5
#: While stopping, a write in flight (or started then) gets at most this much more time.
STOP_GRACE_S = 0.5
#: How often the waiting thread looks at the stop signal.
_POLL_S = 0.05


class DeadlineExceeded(Exception):
    """The call did not return within its deadline (the database is hung, or the program stops)."""

    def __init__(self, elapsed_s: float, deadline_s: float, stopping: bool) -> None:
        why = "the program is stopping" if stopping else "the database is hung or too slow"
        super().__init__(f"no answer from the database within {elapsed_s:.1f} s (deadline {deadline_s:g} s; {why})")
        self.elapsed_s = elapsed_s
        self.stopping = stopping


def classify(elapsed_s: float, deadline_s: float) -> DatabaseHealth:
    """The database's health from one call that returned after ``elapsed_s``."""
    if elapsed_s >= deadline_s:
        return DatabaseHealth.HUNG
    return DatabaseHealth.SLOW if elapsed_s > SLOW_SHARE * deadline_s else DatabaseHealth.OK


class _Outcome(Generic[T]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def call_with_deadline(
    function: Callable[[], T],
    deadline_s: float,
    *,
    abort: Callable[[], None] = lambda: None,
    stopping: threading.Event | None = None,
    stop_grace_s: float = STOP_GRACE_S,
    monotonic: Callable[[], float] = time.monotonic,
    name: str = "db-write",
) -> tuple[T, float]:
    """``function()`` run in a thread of its own; (its result, seconds it took). What it raises is
    raised here; :class:`DeadlineExceeded` (after calling ``abort``) when it took too long."""
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = function()
        except BaseException as exc:  # handed to the caller's thread
            outcome.error = exc
        finally:
            outcome.done.set()

    started = monotonic()
    end = started + deadline_s
    stop_seen = False
    threading.Thread(target=run, name=name, daemon=True).start()
    while not outcome.done.wait(min(_POLL_S, max(0.0, end - monotonic()))):
        now = monotonic()
        if not stop_seen and stopping is not None and stopping.is_set():
            stop_seen = True
            end = min(end, now + stop_grace_s)
        if now >= end:
            if outcome.done.is_set():
                break
            abort()
            raise DeadlineExceeded(now - started, deadline_s, stop_seen)
    elapsed = monotonic() - started
    if outcome.error is not None:
        raise outcome.error
    return outcome.value, elapsed  # type: ignore[return-value]
