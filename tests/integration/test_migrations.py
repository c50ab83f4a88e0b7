"""A database of schema version 1 holding version 1's rows is taken forward to the present version on
SQLite and PostgreSQL: no row lost or changed, the result the same as a database created new, and the
Recorder writing on at once (what a version-1 run left in its spool too)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, inspect, select

from messages.account import SettlementHistory
from messages.surface import SurfaceSnapshot
from sql.engine import create_schema, make_engine
from sql.migrations import add_columns
from sql.partitions import is_partition
from sql.queries import read_settlements, read_volatility_index
from sql.store import MinuteStore, settlements_record, snapshot_record
from sql.tables import (
    SCHEMA_VERSION,
    metadata,
    minute_coverage,
    option_quotes,
    orders_audit,
    schema_version,
    settlements,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.writers import DvolReading, minute_rows
from tests.support import schema_v1, schema_v3
from tests.support.recorder_messages import docs_settlements
from tests.support.sql import AT, count, option_row_kept, private_schema, small_snapshot

V1_TABLES = ("option_quotes", "surface_points", "surface_fits", "volatility_index", "orders_audit", "schema_version")



def v1_database(engine: Engine, snapshots: list[SurfaceSnapshot]) -> None:
    """What version 1 of the program left: its tables, its version row, minutes and audit entries."""
    with engine.begin() as conn:
        schema_v1.metadata.create_all(conn)
        conn.execute(schema_v1.schema_version.insert().values(version=1, applied_at=dt.datetime.fromtimestamp(
            AT - 86_400, dt.UTC)))
        for snap in snapshots:
            for part in minute_rows(snap):
                if part.table.name not in schema_v1.metadata.tables:
                    continue  # a table of a later version (minute_coverage)
                table = schema_v1.metadata.tables[part.table.name]
                rows = [{k: v for k, v in zip(part.columns, row, strict=True) if k in table.c} for row in part.rows]
                if rows:
                    conn.execute(table.insert(), rows)
        conn.execute(schema_v1.orders_audit.insert(), V1_AUDIT)


def _v1_audit(key: str, method: str, outcome: str, *, answer: str | None = None,
              code: int | None = None) -> dict[str, Any]:
    at = dt.datetime.fromtimestamp(AT, dt.UTC)
    return {"origin": "hedger", "request_key": key, "method": method, "instrument": "BTC-PERPETUAL",
            "requested_at": at, "request": '{"message": "PlaceOrder"}', "answered_at": at if answer or code else None,
            "answer": answer, "outcome": outcome, "error_code": code, "error_message": "lost" if code else None}


_FILLED = '{"message": "CommandResult", "order": {"order_id": "ETH-9", "filled_amount": 10.0}}'
#: Version 1's outcomes as it wrote them, and what version 3 makes of each.
V1_AUDIT = [
    _v1_audit("h-1", "private/buy", "accepted", answer='{"message": "CommandResult", "order": null}'),
    _v1_audit("h-2", "private/buy", "accepted", answer=_FILLED),
    _v1_audit("h-3", "private/sell", "refused", code=-2),  # sent, answer lost: never "refused"
    _v1_audit("h-4", "private/sell", "refused", code=-1),
    _v1_audit("h-5", "private/cancel", "accepted", answer=_FILLED),  # a cancel is sent, never filled
    _v1_audit("c-1", "private/cancel", "pending"),
]
V3_OUTCOMES = {"h-1": "sent", "h-2": "filled", "h-3": "unknown", "h-4": "refused", "h-5": "sent", "c-1": "pending"}


def contents(engine: Engine, names: tuple[str, ...] = V1_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the version-1 tables, in version 1's columns but the audit's outcome (version 3
    names outcomes anew), sorted. The option quotes in what version 5 keeps of them
    (:func:`tests.support.sql.option_row_kept`)."""
    found = {}
    with engine.connect() as conn:
        for name in names:
            table = schema_v1.metadata.tables[name]
            columns = [c for c in table.c if (name, c.name) != ("orders_audit", "outcome")]
            rows = [tuple(r) for r in conn.execute(select(*columns))]
            if name == "option_quotes":
                rows = [option_row_kept([c.name for c in columns], row) for row in rows]
            found[name] = sorted(rows, key=repr)
    return found


def outcomes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(orders_audit.c.request_key, orders_audit.c.outcome))
        return {key: outcome for key, outcome in rows}


def shape(engine: Engine) -> dict[str, Any]:
    """Each table's columns (name, type, nullable), primary key and unique constraints, as the database has them."""
    found = {}
    with engine.connect() as conn:
        inspector = inspect(conn)
        for name in sorted(inspector.get_table_names()):
            if is_partition(name):
                continue  # a day's partition of a version-5 table (made for the day's rows)
            columns = [(c["name"], type(c["type"]).__name__, c["nullable"]) for c in inspector.get_columns(name)]
            uniques = sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(name))
            found[name] = (columns, inspector.get_pk_constraint(name)["constrained_columns"], uniques)
    return found


@pytest.fixture(scope="module")
def snapshots() -> list[SurfaceSnapshot]:
    base = small_snapshot()
    return [msgspec.structs.replace(base, at=AT + 60 * i) for i in range(2)] + [small_snapshot(currency="ETH")]


def test_a_version_1_database_is_taken_forward_without_losing_a_row(db_url: str,
                                                                    snapshots: list[SurfaceSnapshot]) -> None:
    engine = make_engine(db_url)
    try:
        v1_database(engine, snapshots)
        before = contents(engine)
        assert sum(len(rows) for rows in before.values()) > 3 * len(snapshots[0].quotes)
        # A reader of the desk's database (main.py plot) reads a version-1 database as it is: no DVOL.
        assert [r.dvol for r in read_volatility_index(engine, "BTC")] == [None, None]

        assert outcomes(engine) == {row["request_key"]: row["outcome"] for row in V1_AUDIT}
        assert create_schema(engine) == SCHEMA_VERSION == 5
        assert contents(engine, V1_TABLES[:-1]) == {k: v for k, v in before.items() if k != "schema_version"}
        assert outcomes(engine) == V3_OUTCOMES
        with engine.connect() as conn:
            assert conn.execute(select(schema_version.c.version).order_by(schema_version.c.version)
                                ).scalars().all() == [1, 2, 3, 4, 5]
            filled = conn.execute(select(orders_audit).where(orders_audit.c.request_key == "h-2")).one()
        assert (filled.order_id, filled.filled_amount) == ("ETH-9", 10.0)
        rows = read_volatility_index(engine, "BTC")
        assert [(r.minute.timestamp(), r.variance_index, r.dvol, r.dvol_at) for r in rows] == [
            (s.at, s.variance_index, None, None) for s in snapshots[:2]]
        assert count(engine, settlements) == 0

        assert create_schema(engine) == SCHEMA_VERSION  # again: nothing to do
        assert contents(engine, V1_TABLES[:-1]) == {k: v for k, v in before.items() if k != "schema_version"}
        assert outcomes(engine) == V3_OUTCOMES
    finally:
        engine.dispose()


@pytest.fixture
def fresh_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second database on the same kind of server as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    with private_schema(db_url.split("?")[0]) as pg:
        yield pg


def test_a_migrated_database_is_the_one_this_version_creates(db_url: str, fresh_url: str,
                                                             snapshots: list[SurfaceSnapshot]) -> None:
    old, new = make_engine(db_url), make_engine(fresh_url)
    try:
        v1_database(old, snapshots)
        create_schema(old)
        create_schema(new)
        assert shape(old) == shape(new)
        assert set(shape(new)) == set(metadata.tables)
    finally:
        old.dispose()
        new.dispose()


def test_a_step_cut_short_is_completed_at_the_next_start(db_url: str, snapshots: list[SurfaceSnapshot]) -> None:
    engine = make_engine(db_url)
    try:
        v1_database(engine, snapshots[:1])
        with engine.begin() as conn:  # the column went in, the program stopped before recording version 2
            assert add_columns(conn, volatility_index, ("dvol",)) == ["dvol"]
        assert create_schema(engine) == SCHEMA_VERSION
        with engine.connect() as conn:
            columns = [c["name"] for c in inspect(conn).get_columns("volatility_index")]
        assert columns[-3:] == ["dvol", "dvol_at", "dvol_minus_index"] and len(columns) == len(set(columns))
        assert len(read_volatility_index(engine, "BTC")) == 1
    finally:
        engine.dispose()


def test_the_recorder_takes_a_version_1_database_and_spool_forward_and_writes_on(
        db_url: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    engine = make_engine(db_url)
    v1_database(engine, snapshots[:1])
    before = contents(engine)

    class SpoolRecordV1(msgspec.Struct, frozen=True, kw_only=True):  # version 1's spool record
        snapshot: SurfaceSnapshot | None = None
        audit: object = None

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"000000000001-minute-BTC-{int(snapshots[1].at)}.msgpack").write_bytes(
        msgspec.msgpack.encode(SpoolRecordV1(snapshot=snapshots[1])))
    store = MinuteStore(db_url, spool)
    try:
        store.open()  # migrates, then writes what version 1 left in the spool
        assert store.backlog == 0 and store.reachable
        reading = DvolReading(value=48.2, timestamp=int(snapshots[2].at * 1000) - 500)
        assert store.record(snapshot_record(snapshots[2], reading))
        history = SettlementHistory(currency="BTC", settlements=docs_settlements(), at=AT)
        assert store.record(settlements_record(history))
        assert store.record(settlements_record(history))
    finally:
        store.close()
    after = contents(engine)
    for name, rows in before.items():
        if name != "schema_version":
            assert set(rows) <= set(after[name]), name
    assert [r.minute.timestamp() for r in read_volatility_index(engine, "BTC")] == [s.at for s in snapshots[:2]]
    assert [r.dvol for r in read_volatility_index(engine, "ETH")] == [48.2]
    assert len(read_settlements(engine)) == 2
    engine.dispose()


def test_two_programs_starting_at_once_on_a_version_1_postgres_database(
        pg_url: str, snapshots: list[SurfaceSnapshot]) -> None:
    with private_schema(pg_url) as url:
        engines = [make_engine(url) for _ in range(3)]
        try:
            v1_database(engines[0], snapshots[:1])
            results: list[object] = []
            barrier = threading.Barrier(len(engines))

            def start(engine: Engine) -> None:
                barrier.wait()
                try:
                    results.append(create_schema(engine))
                except Exception as exc:
                    results.append(exc)

            threads = [threading.Thread(target=start, args=(e,)) for e in engines]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert results == [SCHEMA_VERSION] * len(engines)
            with engines[0].connect() as conn:
                assert conn.execute(select(schema_version.c.version).order_by(schema_version.c.version)
                                    ).scalars().all() == list(range(1, SCHEMA_VERSION + 1))
        finally:
            for e in engines:
                e.dispose()


# -- version 3 to 4: honest minutes, extrapolated points, the check range, DVOL minus the index -----------
V3_MINUTE_TABLES = ("option_quotes", "surface_points", "surface_fits", "volatility_index")


def v3_database(engine: Engine, snapshots: list[SurfaceSnapshot], dvols: list[DvolReading | None]) -> None:
    """What version 3 of the program left: its tables (its own definitions), its version rows and
    minutes with the DVOL beside the index (version 3 wrote no difference, no coverage, no flags)."""
    with engine.begin() as conn:
        schema_v3.metadata.create_all(conn)
        conn.execute(schema_v3.schema_version.insert(), [
            {"version": v, "applied_at": dt.datetime.fromtimestamp(AT - 86_400, dt.UTC)} for v in (1, 2, 3)])
        for snap, dvol in zip(snapshots, dvols, strict=True):
            for part in minute_rows(snap, dvol):
                if part.table.name not in schema_v3.metadata.tables:
                    continue
                table = schema_v3.metadata.tables[part.table.name]
                rows = [{k: v for k, v in zip(part.columns, row, strict=True) if k in table.c} for row in part.rows]
                if rows:
                    conn.execute(table.insert(), rows)


def v3_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    with engine.connect() as conn:
        for name in V3_MINUTE_TABLES:
            columns = list(schema_v3.metadata.tables[name].c)
            rows = [tuple(r) for r in conn.execute(select(*columns))]
            if name == "option_quotes":
                rows = [option_row_kept([c.name for c in columns], row) for row in rows]
            found[name] = sorted(rows, key=repr)
    return found


def test_a_version_3_database_is_taken_to_4_keeping_every_row_and_marking_the_new_columns_unknown(
        db_url: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    engine = make_engine(db_url)
    dvols = [DvolReading(value=61.25, timestamp=int(snapshots[0].at * 1000) - 1_000), None,
             DvolReading(value=70.5, timestamp=int(snapshots[2].at * 1000) - 2_000)]
    try:
        v3_database(engine, snapshots, dvols)
        before = v3_contents(engine)
        assert all(before[name] for name in V3_MINUTE_TABLES)
        assert create_schema(engine) == SCHEMA_VERSION == 5
        assert v3_contents(engine) == before  # no row lost or changed in version 3's columns
        with engine.connect() as conn:
            assert conn.execute(select(schema_version.c.version).order_by(schema_version.c.version)
                                ).scalars().all() == [1, 2, 3, 4, 5]
            # What version 3 never computed is unknown (NULL), not made up.
            assert set(conn.execute(select(surface_points.c.extrapolated)).scalars()) == {None}
            assert set(conn.execute(select(surface_fits.c.check_k_min, surface_fits.c.check_k_max))) == {
                (None, None)}
            assert count(engine, minute_coverage) == 0
            # DVOL minus the index is the difference of the row's own columns, NULL where either is missing.
            index = conn.execute(select(volatility_index.c.currency, volatility_index.c.value,
                                        volatility_index.c.dvol, volatility_index.c.dvol_minus_index)
                                 .order_by(volatility_index.c.minute, volatility_index.c.currency)).all()
        assert len(index) == 3
        for _, value, dvol, difference in index:
            if dvol is None or value is None:
                assert difference is None
            else:
                assert difference == pytest.approx(dvol - value, abs=1e-12)
        assert sum(1 for row in index if row.dvol_minus_index is not None) == 2
        assert create_schema(engine) == SCHEMA_VERSION  # again: nothing to do
        assert v3_contents(engine) == before
    finally:
        engine.dispose()

    # The Recorder writes on at once: a spooled version-3 minute (no coverage: no minute_coverage
    # row), then an incomplete minute (its quotes and coverage only) and a complete one.
    later = [msgspec.structs.replace(snapshots[0], at=AT + 600 + 60 * i) for i in range(3)]
    incomplete = msgspec.structs.replace(later[1], complete=False, coverage=0.1, listed=120, usable=12,
                                         surface_ok=False, points=(), fits=(), tenors=(), variance_index=None)
    old_spooled = msgspec.structs.replace(later[0], coverage=None)
    spool = tmp_path / "spool"
    store = MinuteStore(db_url, spool)
    try:
        store.open()
        for snap in (old_spooled, incomplete, later[2]):
            assert store.record(snapshot_record(snap, DvolReading(value=66.0, timestamp=int(snap.at * 1000))))
    finally:
        store.close()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            coverage = conn.execute(select(minute_coverage.c.minute, minute_coverage.c.complete,
                                           minute_coverage.c.usable).order_by(minute_coverage.c.minute)).all()
        assert [(m.timestamp() if m.tzinfo else m.replace(tzinfo=dt.UTC).timestamp(), c, u)
                for m, c, u in coverage] == [(incomplete.at, False, 12), (later[2].at, True, later[2].usable)]
        when = dt.datetime.fromtimestamp(incomplete.at, dt.UTC)
        assert count(engine, option_quotes, minute=when) == len(incomplete.quotes) > 0
        assert count(engine, surface_points, minute=when) == count(engine, volatility_index, minute=when) == 0
        assert [r.dvol for r in read_volatility_index(engine, "BTC")][-2:] == [66.0, 66.0]
    finally:
        engine.dispose()
