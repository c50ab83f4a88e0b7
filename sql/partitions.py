"""Day partitions of the per-minute tables on PostgreSQL (:data:`sql.tables.PARTITIONED`).

One partition per table and UTC day, named ``<table>_pYYYYMMDD`` and holding ``[day 00:00, next day
00:00)`` UTC, made beside the table and attached (readers are not blocked); the indexes declared on
the table (sql.tables) are created on each partition by PostgreSQL itself. Partitions are made
ahead by the Recorder (:class:`PartitionsAhead`: at start and at the first minute of each new UTC
day, today's and the next ``days_ahead`` days'), and the writer
makes the one a minute needs if it is missing (:func:`ensure_partitions` before it writes), so a row
never finds no partition: there is no default partition (a default partition holding rows would
make every later partition's creation scan it, and refuse when it holds rows of that day).

SQLite has no partitions: every function here does nothing there.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import structlog
from sqlalchemy import Connection, text

from sql.tables import PARTITIONED

UTC = dt.UTC
#: PostgreSQL advisory lock held while partitions are created: two writers never race to create one.
PARTITION_LOCK = 0x70617274  # "part"
_PARTITION = re.compile(r"_p\d{8}$")


def utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, UTC).date()


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def is_partition(name: str) -> bool:
    """Whether a table name is one of :func:`partition_name`'s."""
    return bool(_PARTITION.search(name)) and name.rsplit("_p", 1)[0] in PARTITIONED


def days_from(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range(count)]


def _bound(day: dt.date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


def missing_partitions(conn: Connection, days: Iterable[dt.date],
                       tables: Iterable[str] = PARTITIONED) -> list[tuple[str, dt.date]]:
    """The (table, day) partitions that do not exist yet (in the session's schema)."""
    wanted = [(table, day) for day in sorted(set(days)) for table in tables]
    if not wanted:
        return []
    names = [partition_name(table, day) for table, day in wanted]
    found = conn.execute(text("SELECT n FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NULL"),
                         {"names": names}).scalars().all()
    absent = set(found)
    return [(table, day) for (table, day), name in zip(wanted, names, strict=True) if name in absent]


def ensure_partitions(conn: Connection, days: Iterable[dt.date], tables: Iterable[str] = PARTITIONED) -> list[str]:
    """Create the partitions of ``tables`` (all the partitioned ones by default) for ``days`` that are
    missing, in the caller's transaction; returns the names created. A no-op on SQLite and when all
    exist (one catalog query)."""
    if conn.dialect.name != "postgresql":
        return []
    days = list(days)
    tables = list(tables)
    if not missing_partitions(conn, days, tables):
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK})
    created = []
    for table, day in missing_partitions(conn, days, tables):  # again: another writer may have made them meanwhile
        name = partition_name(table, day)
        # Made beside the table and then attached: ATTACH PARTITION takes a SHARE UPDATE EXCLUSIVE lock on
        # the table (readers go on), CREATE TABLE ... PARTITION OF an ACCESS EXCLUSIVE one. Its indexes
        # are made as it is attached (the table's own); it is empty, so the range check is instant.
        conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{_bound(day)}') TO ('{_bound(day + dt.timedelta(days=1))}')")
        created.append(name)
    if created:
        structlog.get_logger().info("partitions_created", partitions=created)
    return created


def existing_partitions(conn: Connection, table: str) -> list[str]:
    """The partitions of ``table`` (in the session's schema), by name."""
    if conn.dialect.name != "postgresql":
        return []
    rows = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:table) ORDER BY c.relname"), {"table": table})
    return list(rows.scalars())


class PartitionsAhead:
    """When the Recorder should make partitions ahead: at the first call, then at the first call of
    each new UTC day (``now`` in unix seconds); :meth:`done` once they were made (a database that did
    not answer is asked again at the next call)."""

    def __init__(self, days_ahead: int) -> None:
        self.days_ahead = days_ahead
        self._done_for: dt.date | None = None

    def due(self, now: float) -> list[dt.date]:
        """The days to make sure of now (today and the next ``days_ahead``), or [] when done today."""
        today = utc_day(now)
        if self._done_for == today:
            return []
        return days_from(today, self.days_ahead + 1)

    def done(self, now: float) -> None:
        self._done_for = utc_day(now)
