"""Finished days' option rows put in the order that serves both of a trader's questions (PostgreSQL).

A day partition of ``option_minutes`` is written minute by minute: a whole chain at one minute lies in
a dozen pages, but one instrument's 1,440 minutes of the day lie on 1,440 pages, one row on each, so
"this option over the last month" reads 43,200 pages. Once the day is over, :func:`order_day` rewrites
its partition in blocks of :data:`BLOCK_MINUTES` minutes, each block by instrument and then by minute:
an instrument's day is then 96 runs of 15 rows (about 110 pages in a day of the full chain, not
1,440), and a chain at one minute is still found by the BRIN index of the minute (its block's pages,
about 190 for the full chain of both currencies). The indexes are the table's own; nothing a reader
asks changes, only how many pages it reads.

The rewrite is one transaction and safe to kill at any point: the day's partition is locked against
writers (``SHARE``: readers go on; a late minute of that day waits, or is spooled by the Recorder and
written after), its rows copied in order into a new table beside it, the table's indexes built there
and a check of the day's range added (so that attaching it scans nothing), then, under a short lock
of the table (``lock_timeout``), the old partition is detached and dropped and the new one attached in
its place under its name, with :data:`ORDERED` as its comment: a day is ordered once. A row written to
the day later goes at its end (correct, only out of order). SQLite keeps the simple layout: nothing to
do there.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine, text

from sql.partitions import existing_partitions, partition_name
from sql.tables import FLAG_SPAN

TABLE = "option_minutes"
#: Minutes of a block: an instrument's day is 1,440 / BLOCK_MINUTES runs, a chain at a minute reads its
#: block's pages. Measured on a day of the full chain written every minute (1.7 M rows): an instrument's
#: day reads 1,440 pages in minute order, 158 at 10 minutes, 110 at 15, 64 at 30; a chain at a minute
#: (through option_quotes, medians on a shared 2-core machine) 14.1, 14.3 and 16.6 ms.
BLOCK_MINUTES = 15
#: The comment of an ordered day's partition.
ORDERED = f"ordered: {BLOCK_MINUTES}-minute blocks, by instrument, by minute"
#: A day is ordered once it has been over this long: its last minutes are written by then.
GRACE = dt.timedelta(minutes=15)
#: How long the swap waits for the table's readers and writers before it gives up and is tried again
#: (:data:`LOCK_TRIES` times): below PostgreSQL's deadlock_timeout (1 s), so that a late writer of the
#: day waiting on the day's lock is never the one aborted.
LOCK_TIMEOUT_MS = 500
LOCK_TRIES = 4
_STAGED = "_ordering"


@dataclass(frozen=True)
class OrderedDay:
    day: dt.date
    rows: int
    seconds: float  # the whole rewrite
    lock_ms: float  # the table locked for the swap


class OrderingError(Exception):
    """A day could not be ordered (the table stayed busy, or the database refused); it is as it was, and
    is tried again at the next daily run."""


def is_ordered(conn: Connection, partition: str) -> bool:
    comment = conn.execute(text("SELECT obj_description(to_regclass(:n), 'pg_class')"), {"n": partition}).scalar()
    return comment == ORDERED


def days_to_order(engine: Engine, now: dt.datetime) -> list[dt.date]:
    """The days whose ``option_minutes`` partition holds rows, was over :data:`GRACE` before ``now`` and
    is not ordered yet, oldest first. [] on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    finished_before = (now - GRACE).date()  # days before it ended GRACE ago or more
    days = []
    with engine.connect() as conn:
        for name in existing_partitions(conn, TABLE):
            day = dt.datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
            if day < finished_before and not is_ordered(conn, name) and \
                    conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {name})")).scalar():
                days.append(day)
    return days


def _bounds(day: dt.date) -> tuple[str, str]:
    return f"{day.isoformat()} 00:00:00+00", f"{(day + dt.timedelta(days=1)).isoformat()} 00:00:00+00"


def _parent_indexes(conn: Connection) -> list[tuple[int, str]]:
    """The table's indexes: (oid, definition)."""
    rows = conn.execute(text("SELECT indexrelid::bigint, pg_get_indexdef(indexrelid) FROM pg_index "
                             "WHERE indrelid = to_regclass(:t) ORDER BY indexrelid"), {"t": TABLE}).all()
    return [(int(oid), str(definition)) for oid, definition in rows]


def _partition_indexes(conn: Connection, partition: str) -> dict[int, str]:
    """A partition's indexes by the table index each is attached to: {parent index oid: name}."""
    rows = conn.execute(text(
        "SELECT i.inhparent::bigint, c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "JOIN pg_inherits i ON i.inhrelid = x.indexrelid WHERE x.indrelid = to_regclass(:p)"), {"p": partition}).all()
    return {int(parent): str(name) for parent, name in rows}


def _copy_ordered(conn: Connection, day: dt.date, name: str, staged: str) -> int:
    """The day's rows into ``staged`` in block order, with the table's indexes and the day's range check;
    returns the rows copied."""
    low, high = _bounds(day)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staged}")
    conn.exec_driver_sql(f"CREATE TABLE {staged} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    block_s = BLOCK_MINUTES * 60
    copied = conn.exec_driver_sql(
        f"INSERT INTO {staged} SELECT * FROM {name} "
        f"ORDER BY floor(extract(epoch FROM minute) / {block_s}), instrument_ref / {FLAG_SPAN}, minute").rowcount
    for oid, definition in _parent_indexes(conn):
        # "CREATE INDEX ix ON ONLY schema.option_minutes USING ..." made on the staged table, under a
        # name of its own (renamed to the old partition's once that is gone)
        head = re.match(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ", definition)
        if head is None:
            raise OrderingError(f"cannot read the index definition {definition!r}")
        conn.exec_driver_sql(f"CREATE {head.group(1) or ''}INDEX {staged}_{oid} ON {staged} {definition[head.end():]}")
    conn.exec_driver_sql(f"ALTER TABLE {staged} ADD CONSTRAINT {staged}_day "
                         f"CHECK (minute IS NOT NULL AND minute >= '{low}' AND minute < '{high}')")
    return int(copied)


def _swap(conn: Connection, day: dt.date, name: str, staged: str) -> None:
    """The old partition out, the ordered one in under its name (the caller's transaction)."""
    low, high = _bounds(day)
    old_indexes = _partition_indexes(conn, name)
    conn.exec_driver_sql(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
    conn.exec_driver_sql(f"ALTER TABLE {TABLE} ATTACH PARTITION {staged} FOR VALUES FROM ('{low}') TO ('{high}')")
    conn.exec_driver_sql(f"DROP TABLE {name}")
    conn.exec_driver_sql(f"ALTER TABLE {staged} RENAME TO {name}")
    conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {staged}_day")
    for parent, index in _partition_indexes(conn, name).items():
        if parent in old_indexes:
            conn.exec_driver_sql(f"ALTER INDEX {index} RENAME TO {old_indexes[parent]}")
    conn.exec_driver_sql(f"COMMENT ON TABLE {name} IS '{ORDERED}'")


def order_day(engine: Engine, day: dt.date) -> OrderedDay | None:
    """Rewrite ``day``'s ``option_minutes`` partition in block order (see the module); None when there
    is nothing to do (SQLite, no such partition, already ordered). :class:`OrderingError` when the table
    stayed busy :data:`LOCK_TRIES` times or the database refused: nothing changed."""
    if engine.dialect.name != "postgresql":
        return None
    name = partition_name(TABLE, day)
    staged = f"{name}{_STAGED}"
    for attempt in range(1, LOCK_TRIES + 1):
        t0 = time.perf_counter()
        try:
            with engine.connect() as conn, conn.begin():
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is None or is_ordered(conn, name):
                    return None
                conn.exec_driver_sql(f"LOCK TABLE {name} IN SHARE MODE")  # late writers of the day wait
                rows = _copy_ordered(conn, day, name, staged)
                t1 = time.perf_counter()
                _swap(conn, day, name, staged)
            done = OrderedDay(day, rows, time.perf_counter() - t0, (time.perf_counter() - t1) * 1000)
            break
        except OrderingError:
            raise
        except Exception as exc:
            code = getattr(getattr(exc, "orig", None), "pgcode", None)
            if code in ("55P03", "40P01") and attempt < LOCK_TRIES:  # lock_timeout, deadlock: busy, again
                time.sleep(0.5 * attempt)
                continue
            raise OrderingError(f"{day}: cannot order the day's option rows: "
                                f"{str(getattr(exc, 'orig', exc)).strip()}; the day is unchanged") from None
    try:  # outside the transaction: the visibility map and the statistics (else autovacuum's, later)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"VACUUM (ANALYZE) {name}")
    except Exception as exc:
        structlog.get_logger().warning("day_ordered_not_vacuumed", day=day.isoformat(),
                                       error=str(getattr(exc, "orig", exc)).strip())
    structlog.get_logger().info("day_ordered", day=day.isoformat(), rows=done.rows, seconds=round(done.seconds, 2),
                                lock_ms=round(done.lock_ms, 1))
    return done


def order_finished_days(engine: Engine, now: dt.datetime, *, deadline: float | None = None,
                        after: dt.date | None = None) -> list[OrderedDay]:
    """Order every finished day not ordered yet (:func:`days_to_order`), oldest first; days before
    ``after`` are left (about to be archived); ``deadline`` (time.monotonic): no day is started past it."""
    done = []
    for day in days_to_order(engine, now):
        if after is not None and day < after:
            continue
        if deadline is not None and time.monotonic() > deadline:
            break
        ordered = order_day(engine, day)
        if ordered is not None:
            done.append(ordered)
    return done
