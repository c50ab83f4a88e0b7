"""The Recorder's logic: write each batch in its own transaction, spool what the database cannot
take, and write the spool back in order once it answers again. No threads, no actor: the Recorder
calls :meth:`MinuteStore.record` for each batch and :meth:`MinuteStore.catch_up` on its timer.

A batch is one currency-minute (all its rows in ``option_quotes``, ``surface_points``,
``surface_fits`` and ``volatility_index``, with Deribit's DVOL at the minute: one transaction), one
order-audit entry, or the new entries of one settlement history (``settlements``).

- Database answering, nothing spooled: the batch is written at once.
- A write fails for want of the database (connection refused or lost, SQLite file locked past the
  busy timeout, ...): the batch is appended to the spool; the database is tried again after a
  backoff (``retry_initial_s`` doubling to ``retry_max_s``, real time), and while anything is
  spooled every new batch is spooled behind it so the order holds.
- A batch the database refuses for what it holds (it never will take it) is moved to
  ``<spool>/rejected/`` with the reason beside it, so one bad batch cannot stop the others.
- Every driver call has a deadline (``write_deadline_s``, :mod:`sql.deadline`): past it the
  connections are aborted, the batch is spooled and the health says ``HUNG`` (a write that took
  more than half of it: ``SLOW``). A write abandoned at its deadline may still commit when the
  server runs again; the spooled copy then adds nothing (inserts ignore conflicts).
- ``stopping`` (set from any thread when the program stops) cuts a write in flight short
  (:data:`~sql.deadline.STOP_GRACE_S`); :meth:`MinuteStore.flush` then does not wait on a hung
  database at all and spools what is in memory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from messages.account import SettlementHistory
from messages.surface import DatabaseHealth, RecorderStatus, SurfaceSnapshot
from runtime.throttle import Backoff
from sql.deadline import DeadlineExceeded, call_with_deadline, classify
from sql.engine import SchemaVersionError, abort_connections, create_schema, make_engine, mask_url, track_connections
from sql.partitions import PartitionsAhead, ensure_partitions
from sql.spool import Spool, SpoolError, SpoolRecord
from sql.writers import DvolReading, OrderAuditEvent, write_audit, write_settlements, write_surface_snapshot


class DatabaseUnavailable(Exception):
    """The database could not be reached or used right now; the batch waits in the spool."""


class _Refused(Exception):
    """The database will never take this batch."""


#: Days of partitions made ahead beyond today (settings: recorder.partition_days_ahead).
DEFAULT_PARTITION_DAYS_AHEAD = 3
#: Creating or migrating the schema may take longer than a minute's write; still not for ever.
SCHEMA_DEADLINE_S = 120.0
#: What a stop spends writing the backlog to a database that answers, however many times it
#: flushes (the Recorder does on Shutdown and again as it stops); the rest stays spooled.
STOP_FLUSH_BUDGET_S = 1.0


_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout, SchemaVersionError, DeadlineExceeded)
#: The drivers' own errors of the moment (a driver call made outside SQLAlchemy, as COPY is, raises them
#: unwrapped): a lost connection, a lock or statement timeout, a deadlock, a full disk, the server shutting
#: down; never a batch the database will refuse for ever.
_DRIVER_OUTAGES = (psycopg2.OperationalError, psycopg2.InterfaceError, sqlite3.OperationalError)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGES + _DRIVER_OUTAGES):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


#: PostgreSQL's codes for its own deadlines: statement_timeout (query_canceled), lock_timeout.
_PG_TIMEOUT_CODES = ("57014", "55P03")


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadline that passed: ours, the server's, or SQLite's busy timeout."""
    if isinstance(exc, DeadlineExceeded):
        return True
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "pgcode", None) in _PG_TIMEOUT_CODES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class MinuteStore:
    def __init__(
        self,
        url: str,
        spool_dir: str | Path,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        busy_timeout_s: float = 2.0,
        connect_timeout_s: float = 3.0,
        write_deadline_s: float = 5.0,
        stopping: threading.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        engine: Engine | None = None,
        partition_days_ahead: int = DEFAULT_PARTITION_DAYS_AHEAD,
    ) -> None:
        self.url = url
        # SQLite's busy wait cannot be interrupted: it ends before the write's deadline.
        self.engine = engine or make_engine(url, busy_timeout_s=min(busy_timeout_s, write_deadline_s * 0.8),
                                            connect_timeout_s=connect_timeout_s, statement_timeout_s=write_deadline_s)
        self._connections = track_connections(self.engine)
        self.write_deadline_s = write_deadline_s
        self.stopping = stopping or threading.Event()
        self.database = f"{self.engine.dialect.name} {mask_url(url)}"
        self.spool = Spool(spool_dir)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._backoff = Backoff(retry_initial_s, retry_max_s, jitter=False)
        self._monotonic = monotonic
        self.log = structlog.get_logger(actor="recorder")
        # Batches the spool itself could not take (disk full): kept here, behind the spool.
        self._unspooled: deque[SpoolRecord] = deque()
        self.schema_ready = False
        self.reachable: bool | None = None  # None: not tried yet
        self.health = DatabaseHealth.UNKNOWN
        self._flush_until: float | None = None  # set by the first flush: the stop's budget
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.last_written_minute: float | None = None
        self.written_minutes = 0
        self.written_batches = 0
        self.rejected = 0
        self.partitions = PartitionsAhead(partition_days_ahead)
        self._opened_at: float | None = None

    # -- what the Recorder calls -------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        return len(self.spool) + len(self._unspooled)

    @property
    def backlog_minutes(self) -> int:
        return self.spool.minutes + sum(1 for r in self._unspooled if r.snapshot is not None)

    def due(self) -> bool:
        """Whether trying the database now is allowed by the backoff."""
        return self._monotonic() >= self.retry_at

    def open(self, now: float | None = None) -> None:
        """Create the schema if the database answers (and on PostgreSQL the day partitions due at
        ``now``, unix seconds: :meth:`make_partitions`), then write back what a previous run spooled."""
        self._opened_at = now
        if self._try(self._ensure_schema):
            self.catch_up()

    def record(self, record: SpoolRecord) -> bool:
        """Write one batch now, or spool it. True when it was committed."""
        if not self.backlog and self.due():
            try:
                self._write(record)
                return True
            except DatabaseUnavailable:
                pass
            except _Refused as exc:
                self._keep(record)
                self._reject_head(str(exc))
                return False
        self._keep(record)
        if self.due():
            self.catch_up()
        return False

    def catch_up(self, budget_s: float = 2.0) -> int:
        """Write spooled batches, oldest first, while the database takes them and for at most
        ``budget_s`` (the Recorder stays responsive with a long backlog). Returns batches written."""
        written = 0
        deadline = self._monotonic() + budget_s
        while self.backlog and self.due() and self._monotonic() < deadline:
            head = self._head()
            if head is None:
                continue  # an unreadable file was moved aside
            path, record = head
            try:
                self._write(record)
            except DatabaseUnavailable:
                break
            except _Refused as exc:
                self._reject_head(str(exc))
                continue
            if path is not None:
                self.spool.remove(path)
            else:
                self._unspooled.popleft()
            written += 1
        if written:
            self.log.info("spool_written", batches=written, backlog=self.backlog, backlog_minutes=self.backlog_minutes)
        return written

    def flush(self) -> int:
        """On a stop: write what the database takes now (ignoring the backoff, for at most
        :data:`STOP_FLUSH_BUDGET_S`; nothing when it is hung); the rest stays spooled for the next
        start."""
        written = 0
        if self._flush_until is None:
            self._flush_until = self._monotonic() + STOP_FLUSH_BUDGET_S
        budget = self._flush_until - self._monotonic()
        if self.health is not DatabaseHealth.HUNG and budget > 0:
            self.retry_at = 0.0
            written = self.catch_up(budget_s=budget)
        if self._unspooled:
            self._spool_memory()
        if self.backlog:
            self.log.warning("spool_left_for_next_start", backlog=self.backlog, backlog_minutes=self.backlog_minutes,
                             spool=str(self.spool.directory))
        return written

    def make_partitions(self, now: float) -> list[str]:
        """On PostgreSQL, make sure today's and the next days' partitions exist (once per UTC day of
        ``now``; :class:`sql.partitions.PartitionsAhead`); returns those created. A database that
        does not answer is asked again at the next call (the writer makes a missing one anyway)."""
        days = self.partitions.due(now)
        if not days or self.engine.dialect.name != "postgresql":
            return []

        def ensure() -> list[str]:
            with self.engine.begin() as conn:
                return ensure_partitions(conn, days)

        try:
            self._ensure_schema()
            created, _ = self._guarded(ensure, self.write_deadline_s)
        except Exception as exc:
            if not _is_outage(exc) and not isinstance(exc, DBAPIError):
                raise
            self.log.warning("partitions_not_made", error=_short(exc), days=[d.isoformat() for d in days])
            return []
        self.partitions.done(now)
        return list(created)

    def status(self, at: float) -> RecorderStatus:
        return RecorderStatus(at=at, database=self.database, reachable=bool(self.reachable),
                              backlog_minutes=self.backlog_minutes, backlog_batches=self.backlog,
                              last_written_minute=self.last_written_minute, written_minutes=self.written_minutes,
                              last_error=self.last_error, health=self.health)

    def close(self) -> None:
        self.engine.dispose()

    # -- inside ----------------------------------------------------------------------------------------
    def _ensure_schema(self) -> float:
        """Create the schema if not done yet, with the partitions due at the time :meth:`open` was
        given (in the same call: nothing of the start reaches the database after it said it answers);
        returns the seconds it took."""
        if self.schema_ready:
            return 0.0
        at = self._opened_at
        days = self.partitions.due(at) if at is not None and self.engine.dialect.name == "postgresql" else []

        def create() -> None:
            create_schema(self.engine)
            if days:
                with self.engine.begin() as conn:
                    ensure_partitions(conn, days)

        _, elapsed = self._guarded(create, max(SCHEMA_DEADLINE_S, self.write_deadline_s))
        self.schema_ready = True
        if at is not None and days:
            self.partitions.done(at)
        return elapsed

    def _guarded(self, call: Callable[[], Any], deadline_s: float) -> tuple[Any, float]:
        """``call()`` (a driver call) within ``deadline_s`` of real time (the injected clock paces
        only the backoff): (its result, seconds it took)."""
        return call_with_deadline(call, deadline_s, abort=lambda: abort_connections(self.engine, self._connections),
                                  stopping=self.stopping)

    def _try(self, action: Callable[[], Any]) -> bool:
        try:
            action()
        except Exception as exc:
            if _is_outage(exc):
                self._unreachable(exc)
                return False
            raise
        self._reachable(0.0)
        return True

    def _write(self, record: SpoolRecord) -> None:
        """One transaction; :class:`DatabaseUnavailable` or :class:`_Refused` when it failed."""
        elapsed = 0.0
        for attempt in (1, 2):
            try:
                self._ensure_schema()
                _, elapsed = self._guarded(lambda: self._transaction(record), self.write_deadline_s)
                break
            except Exception as exc:
                if _is_outage(exc):
                    self._unreachable(exc)
                    raise DatabaseUnavailable(_short(exc)) from exc
                if isinstance(exc, ProgrammingError) and attempt == 1:
                    # Tables dropped under us: create them again and retry once.
                    self.schema_ready = False
                    continue
                self.log.error("batch_refused", error=_short(exc), traceback=traceback.format_exc())
                raise _Refused(_short(exc)) from exc
        self._reachable(elapsed)
        self.written_batches += 1
        if record.snapshot is not None:
            self._written(record.snapshot)

    def _transaction(self, record: SpoolRecord) -> None:
        """The driver work of one batch (in the deadline's thread: it touches no state of ours)."""
        with self.engine.begin() as conn:
            if record.snapshot is not None:
                write_surface_snapshot(conn, record.snapshot, record.dvol)
            elif record.audit is not None:
                write_audit(conn, record.audit)
            elif record.settlements is not None:
                write_settlements(conn, record.settlements)

    def _written(self, snapshot: SurfaceSnapshot) -> None:
        self.written_minutes += 1
        if self.last_written_minute is None or snapshot.at > self.last_written_minute:
            self.last_written_minute = snapshot.at

    def _reachable(self, elapsed_s: float) -> None:
        if self.reachable is not True:
            self.log.info("database_reachable", database=self.database, backlog=self.backlog)
        health = classify(elapsed_s, self.write_deadline_s)
        if health is not self.health and DatabaseHealth.SLOW in (health, self.health):
            self.log.warning("database_slow" if health is DatabaseHealth.SLOW else "database_no_longer_slow",
                             database=self.database, write_s=round(elapsed_s, 3), deadline_s=self.write_deadline_s)
        self.health = health
        self.reachable = True
        self.failures = 0
        self._backoff.reset()
        self.retry_at = 0.0

    def _unreachable(self, exc: BaseException) -> None:
        self.failures += 1
        delay = self._backoff.next_delay()
        self.retry_at = self._monotonic() + delay
        self.last_error = _short(exc)
        health = DatabaseHealth.HUNG if _timed_out(exc) else DatabaseHealth.UNREACHABLE
        if self.reachable is not False or health is not self.health:
            self.log.warning("database_hung" if health is DatabaseHealth.HUNG else "database_unreachable",
                             database=self.database, error=self.last_error, retry_in_s=delay, backlog=self.backlog)
        else:
            self.log.info("database_still_unreachable", error=self.last_error, retry_in_s=delay,
                          backlog=self.backlog, failures=self.failures, health=health.value)
        self.health = health
        self.reachable = False

    def _keep(self, record: SpoolRecord) -> None:
        """Spool a batch durably; if even that fails, keep it in memory behind the spool."""
        if self._unspooled:
            self._unspooled.append(record)
            self._spool_memory()
            return
        try:
            self.spool.append(record)
        except OSError as exc:
            self.log.error("spool_failed", error=str(exc), spool=str(self.spool.directory))
            self._unspooled.append(record)

    def _spool_memory(self) -> None:
        while self._unspooled:
            try:
                self.spool.append(self._unspooled[0])
            except OSError as exc:
                self.log.error("spool_failed", error=str(exc), spool=str(self.spool.directory),
                               in_memory=len(self._unspooled))
                return
            self._unspooled.popleft()

    def _head(self) -> tuple[Path | None, SpoolRecord] | None:
        if len(self.spool):
            try:
                return self.spool.peek()
            except SpoolError as exc:
                self._reject_head(str(exc))
                return None
        return None, self._unspooled[0]

    def _reject_head(self, reason: str) -> None:
        self.rejected += 1
        path = self.spool.oldest()
        if path is not None:
            target = self.spool.reject(path, reason)
            self.log.error("batch_rejected", reason=reason, moved_to=str(target))
        elif self._unspooled:
            record = self._unspooled.popleft()
            self.log.error("batch_rejected", reason=reason, batch=record.kind, note="not spooled: disk refused it")


def snapshot_record(snapshot: SurfaceSnapshot, dvol: DvolReading | None = None) -> SpoolRecord:
    return SpoolRecord(snapshot=snapshot, dvol=dvol)


def audit_record(event: OrderAuditEvent) -> SpoolRecord:
    return SpoolRecord(audit=event)


def settlements_record(history: SettlementHistory) -> SpoolRecord:
    return SpoolRecord(settlements=history)
