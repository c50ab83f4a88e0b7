"""The steps that take a database of one schema version to the next without losing a row.

:func:`sql.engine.create_schema` first creates the tables a database lacks (a table new in a
version needs no step), then runs the steps from the database's recorded version up to
``SCHEMA_VERSION``, recording each version once its step is done. A step only adds (nullable
columns, with ``ALTER TABLE ... ADD COLUMN``, which keeps every row on PostgreSQL and SQLite) and
looks first at what is there, so it can run again: SQLite runs these statements outside the
transaction, and a start cut short between a step and its record completes it at the next start.

Version 5 moves rows: schema 4's ``option_quotes`` table becomes ``instruments``, ``chain_minutes``,
``expiry_minutes`` and ``option_minutes`` (:func:`_to_5`), one UTC day at a time with a log line per
day, and the old table is dropped only once the copies' row counts match it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from sqlalchemy import Connection, Double, Table, case, extract, func, inspect, literal, literal_column, select, text
from sqlalchemy.schema import CreateColumn

from sql.inserts import insert_ignoring_conflicts
from sql.option_rows import REAL_MAX, REAL_TINY
from sql.partitions import ensure_partitions
from sql.tables import (
    FLAG_IN_SURFACE,
    FLAG_SPAN,
    FLAG_STALE,
    SCHEMA_VERSION,
    chain_minutes,
    expiry_minutes,
    instruments,
    minute_coverage,
    option_minutes,
    option_quotes,
    orders_audit,
    schema_version,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.writers import legacy_audit_outcome


def add_columns(conn: Connection, table: Table, names: Iterable[str]) -> list[str]:
    """Add ``table``'s columns ``names`` where the database's table lacks them; returns those added."""
    present = {column["name"] for column in inspect(conn).get_columns(table.name)}
    added = []
    for name in names:
        if name in present:
            continue
        column = table.c[name]
        # Existing rows get NULL: a NOT NULL column would need a default, which no step has had.
        assert column.nullable and not column.primary_key, f"{table.name}.{name}: only nullable columns are added"
        spec = CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} ADD COLUMN {spec}")
        added.append(name)
    return added


def _to_2(conn: Connection) -> None:
    """Deribit's DVOL beside the variance index (the ``settlements`` table is new: created, no step)."""
    add_columns(conn, volatility_index, ("dvol", "dvol_at"))


def _to_3(conn: Connection) -> None:
    """The audit's outcomes: ``accepted`` becomes sent or filled (from the answer's order), a lost
    answer (-2) recorded ``refused`` becomes ``unknown``; the order id and filled amount are added."""
    add_columns(conn, orders_audit, ("order_id", "filled_amount", "resolved_at", "resolution"))
    table = orders_audit
    rows = conn.execute(select(table.c.id, table.c.outcome, table.c.method, table.c.error_code, table.c.answer)
                        .where(table.c.outcome.in_(("accepted", "refused")))).all()
    for row in rows:
        values = legacy_audit_outcome(row.outcome, row.method, row.error_code, row.answer)
        if values is not None:
            conn.execute(table.update().where(table.c.id == row.id).values(**values))


def _to_4(conn: Connection) -> None:
    """Honest minutes (the ``minute_coverage`` table is new: created, no step), which grid points are
    extrapolated, the butterfly check's range and DVOL minus the index. Old rows keep NULL in the
    first two (unknown: never computed); DVOL minus the index is the difference of two columns the
    row holds, so it is filled where both are there (and stays NULL where either is missing)."""
    add_columns(conn, surface_points, ("extrapolated",))
    add_columns(conn, surface_fits, ("check_k_min", "check_k_max"))
    add_columns(conn, volatility_index, ("dvol_minus_index",))
    t = volatility_index
    conn.execute(t.update().where(t.c.dvol.is_not(None), t.c.value.is_not(None), t.c.dvol_minus_index.is_(None))
                 .values(dvol_minus_index=t.c.dvol - t.c.value))


class MigrationCheckFailed(RuntimeError):
    """The copy of a migrated table does not hold what the table held: nothing is dropped (the
    transaction rolls back) and the text says which counts differ."""


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _partition(conn: Connection, table: Table) -> None:
    """PostgreSQL: ``table`` as a table partitioned by day (sql.partitions), its rows copied one UTC day
    a statement (a log line each) into it, the old table dropped once the counts match (else
    :class:`MigrationCheckFailed`). Nothing when it is partitioned already (or on SQLite)."""
    if conn.dialect.name != "postgresql":
        return
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table.name}).scalar()
    if kind != "r":
        return
    log = structlog.get_logger()
    old = f"{table.name}_v4"
    conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {old}")
    indexes = conn.execute(text("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                "WHERE i.indrelid = to_regclass(:t)"), {"t": old}).scalars().all()
    for index in indexes:  # their names are the new table's (a primary key's constraint follows its index)
        conn.exec_driver_sql(f"ALTER INDEX {index} RENAME TO {index[:56]}_v4")
    table.create(conn)
    first, last = conn.execute(text(f"SELECT min(minute), max(minute) FROM {old}")).one()
    total = int(conn.execute(text(f"SELECT count(*) FROM {old}")).scalar_one())
    columns = ", ".join(c.name for c in table.columns)
    started = time.monotonic()
    copied = 0
    day = _as_utc(first).date() if first is not None else None
    while day is not None and day <= _as_utc(last).date():
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        ensure_partitions(conn, [day], [table.name])
        rows = conn.execute(text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old} "
                                 "WHERE minute >= :start AND minute < :end ORDER BY minute"),
                            {"start": start, "end": start + dt.timedelta(days=1)}).rowcount
        copied += max(rows, 0)
        log.info("schema_migration_progress", table=table.name, day=day.isoformat(), rows=rows, copied=copied,
                 of=total, elapsed_s=round(time.monotonic() - started, 1))
        day += dt.timedelta(days=1)
    now = int(conn.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one())
    if now != total:
        raise MigrationCheckFailed(f"{old} not dropped: {table.name} holds {now} rows, expected {total}")
    conn.exec_driver_sql(f"DROP TABLE {old}")
    log.info("schema_migration_partitioned", table=table.name, rows=total,
             elapsed_s=round(time.monotonic() - started, 1))


def _to_5(conn: Connection) -> None:
    """Compact option rows: schema 4's ``option_quotes`` table into ``instruments`` (from its distinct
    options), ``chain_minutes`` and ``expiry_minutes`` (each currency's and expiry's minutes, with the
    index and underlying price most of their rows had) and ``option_minutes`` (the rows, with the
    underlying price as the difference from its expiry's, NaN for NULL on PostgreSQL). Greeks are
    not copied: the ``option_quotes`` view computes them (sql.views). One UTC day a statement, a log
    line each; the old table is dropped when the copies' counts match it, else
    :class:`MigrationCheckFailed` leaves it (the transaction rolls back on PostgreSQL). On PostgreSQL
    the other per-minute tables become partitioned by day the same way (:func:`_partition`)."""
    for table in (minute_coverage, surface_points, surface_fits, volatility_index):
        _partition(conn, table)
    if "option_quotes" not in inspect(conn).get_table_names():
        return  # a new database, or the step done before its version was recorded
    log = structlog.get_logger()
    postgres = conn.dialect.name == "postgresql"
    q = option_quotes.c
    # The copies can only hold a previous attempt's part (SQLite runs DDL outside the transaction).
    for table in (option_minutes, expiry_minutes, chain_minutes):
        conn.execute(table.delete())
    total = _count(conn, select(q.minute))
    first, last = conn.execute(select(func.min(q.minute), func.max(q.minute))).one()
    started = time.monotonic()
    log.info("schema_migration_copying", table="option_quotes", rows=total,
             note="one day a statement, in one transaction that holds the table until it ends; the Recorder "
                  "allows 120 s: run `python -m sql.migrate --db URL` first for tens of millions of rows")
    settlement = case((q.instrument.like("%USDC%"), literal("USDC")), else_=func.min(q.currency))
    conn.execute(insert_ignoring_conflicts(instruments, conn.dialect.name).from_select(
        ["name", "currency", "kind", "expiry", "strike", "option_type", "settlement_currency", "first_seen",
         "last_seen"],
        select(q.instrument, func.min(q.currency), literal("option"), func.min(q.expiry), func.min(q.strike),
               func.min(q.option_type), settlement, func.min(q.minute), func.max(q.minute))
        .where(q.instrument.is_not(None)).group_by(q.instrument)))

    def common(column: Any) -> Any:
        return func.mode().within_group(column) if postgres else func.max(column)

    years = (extract("epoch", q.expiry - q.minute) / 31_536_000.0 if postgres
             else (func.julianday(q.expiry) - func.julianday(q.minute)) / 365.0)
    nan = literal_column("CAST('NaN' AS double precision)", Double)

    def value(column: Any) -> Any:
        """A double as a real: missing (NaN on PostgreSQL, NULL on SQLite) for NULL and past float4's
        range, 0 below its normal range (sql.option_rows.as_real, the writer's rule)."""
        missing = nan if postgres else literal(None)
        return case((column.is_(None), missing), (func.abs(column) > REAL_MAX, missing),
                    (func.abs(column) < REAL_TINY, 0.0), else_=column)

    copied = 0
    day = _as_utc(first).date() if first is not None else None
    while day is not None and day <= _as_utc(last).date():
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = start + dt.timedelta(days=1)
        in_day = (q.minute >= start, q.minute < end)
        ensure_partitions(conn, [day], [chain_minutes.name, expiry_minutes.name, option_minutes.name])
        conn.execute(insert_ignoring_conflicts(chain_minutes, conn.dialect.name).from_select(
            ["minute", "currency", "index_price"],
            select(q.minute, q.currency, common(q.index_price)).where(*in_day).group_by(q.minute, q.currency)))
        conn.execute(insert_ignoring_conflicts(expiry_minutes, conn.dialect.name).from_select(
            ["minute", "currency", "expiry", "underlying_price", "years"],
            select(q.minute, q.currency, q.expiry, common(q.underlying_price), years).where(*in_day)
            .group_by(q.minute, q.currency, q.expiry)))
        i, e = instruments.c, expiry_minutes.c
        flags = (case((q.stale, FLAG_STALE), else_=0) + case((q.in_surface, FLAG_IN_SURFACE), else_=0))
        rows = conn.execute(option_minutes.insert().from_select(
            [c.name for c in option_minutes.columns],
            select(q.minute, i.id * FLAG_SPAN + flags, *(value(q[name]) for name in (
                "bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
                "open_interest")), value(q.underlying_price - e.underlying_price))
            .select_from(option_quotes.join(instruments, i.name == q.instrument)
                         .join(expiry_minutes, (e.minute == q.minute) & (e.currency == q.currency)
                               & (e.expiry == q.expiry)))
            .where(*in_day).order_by(q.minute, i.id))).rowcount
        copied += max(rows, 0)
        log.info("schema_migration_progress", table="option_quotes", day=day.isoformat(), rows=rows,
                 copied=copied, of=total, elapsed_s=round(time.monotonic() - started, 1))
        day += dt.timedelta(days=1)
    counts = {
        "option_minutes": (_count(conn, select(option_minutes.c.minute)), total),
        "chain_minutes": (_count(conn, select(chain_minutes.c.minute)),
                          _count(conn, select(q.minute, q.currency).distinct())),
        "expiry_minutes": (_count(conn, select(expiry_minutes.c.minute)),
                           _count(conn, select(q.minute, q.currency, q.expiry).distinct())),
        "instruments": (_count(conn, select(instruments.c.id).where(instruments.c.name.in_(
            select(q.instrument).distinct()))), _count(conn, select(q.instrument).distinct())),
    }
    wrong = {name: pair for name, pair in counts.items() if pair[0] != pair[1]}
    if wrong:
        raise MigrationCheckFailed("option_quotes not dropped: its copy does not match it ("
                                   + ", ".join(f"{n}: {a} rows, expected {b}" for n, (a, b) in wrong.items()) + ")")
    conn.exec_driver_sql("DROP TABLE option_quotes")
    log.info("schema_migration_copied", table="option_quotes", rows=total, counts={k: v[0] for k, v in counts.items()},
             elapsed_s=round(time.monotonic() - started, 1))


#: The step that takes a database of version N - 1 to N, by N.
STEPS: dict[int, Callable[[Connection], None]] = {2: _to_2, 3: _to_3, 4: _to_4, 5: _to_5}
assert sorted(STEPS) == list(range(2, SCHEMA_VERSION + 1)), "one step for each version after the first"


def migrate(conn: Connection, recorded: int) -> list[int]:
    """Take the database from version ``recorded`` to ``SCHEMA_VERSION``; returns the versions applied."""
    applied = []
    for version in range(recorded + 1, SCHEMA_VERSION + 1):
        STEPS[version](conn)
        conn.execute(insert_ignoring_conflicts(schema_version, conn.dialect.name),
                     [{"version": version, "applied_at": dt.datetime.now(dt.UTC)}])
        applied.append(version)
    if applied:
        structlog.get_logger().info("schema_migrated", from_version=recorded, to_version=SCHEMA_VERSION,
                                    dialect=conn.dialect.name)
    return applied
