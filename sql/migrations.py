"""The steps that take a database of one schema version to the next without losing a row.

:func:`sql.engine.create_schema` first creates the tables a database lacks (a table new in a
version needs no step), then runs the steps from the database's recorded version up to
``SCHEMA_VERSION``, recording each version once its step is done. A step only adds (nullable
columns, with ``ALTER TABLE ... ADD COLUMN``, which keeps every row on PostgreSQL and SQLite) and
looks first at what is there, so it can run again: SQLite runs these statements outside the
transaction, and a start cut short between a step and its record completes it at the next start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

import structlog
from sqlalchemy import Connection, Table, inspect, select
from sqlalchemy.schema import CreateColumn

from sql.tables import SCHEMA_VERSION, orders_audit, schema_version, surface_fits, surface_points, volatility_index
from sql.writers import insert_ignoring_conflicts, legacy_audit_outcome


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


#: The step that takes a database of version N - 1 to N, by N.
STEPS: dict[int, Callable[[Connection], None]] = {2: _to_2, 3: _to_3, 4: _to_4}
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
