"""sql/: engines, the schema, the minute writers and the audit writer on SQLite and PostgreSQL; the spool."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import Engine, func, select

from messages.commands import CancelAll, CancelOrder, CommandFailed, CommandResult, EditOrder, PlaceOrder
from sql.engine import DatabaseURLError, SchemaVersionError, create_schema, make_engine, mask_url
from sql.spool import Spool, SpoolError, SpoolRecord
from sql.tables import (
    SCHEMA_VERSION,
    option_quotes,
    orders_audit,
    schema_version,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.writers import audit_answer, audit_request, write_audit, write_surface_snapshot
from tests.support.sql import AT, count, private_schema, small_snapshot


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'sub' / 'desk.sqlite3'}")
        yield eng
        eng.dispose()
        return
    with private_schema(request.getfixturevalue("pg_url")) as url:
        eng = make_engine(url)
        yield eng
        eng.dispose()


# -- engines and schema -----------------------------------------------------------------------------------
def test_sqlite_engine_makes_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "desk.sqlite3"
    eng = make_engine(f"sqlite:///{path}", busy_timeout_s=1.5)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
    eng.dispose()
    assert path.exists()


@pytest.mark.parametrize("url, says", [
    ("mysql://u:pw@h/db", "unsupported database 'mysql'"),
    ("postgresql+asyncpg://u@h/db", "psycopg2"),
    ("not a url", "cannot be parsed"),
])
def test_unusable_urls_are_refused_with_what_is_expected(url: str, says: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        make_engine(url)
    assert says in str(info.value) and "sqlite:///" in str(info.value)
    assert "pw" not in str(info.value)


def test_mask_url_hides_the_password() -> None:
    assert mask_url("postgresql+psycopg2://desk:s3cret@db:5432/x") == "postgresql+psycopg2://desk:***@db:5432/x"


def test_create_schema_is_idempotent_and_records_the_version(engine: Engine) -> None:
    assert create_schema(engine) == SCHEMA_VERSION
    assert create_schema(engine) == SCHEMA_VERSION
    with engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalars().all() == [SCHEMA_VERSION]
    with engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=dt.datetime.now(dt.UTC)))
    with pytest.raises(SchemaVersionError, match="newer version of the program"):
        create_schema(engine)


# -- the minute writers -----------------------------------------------------------------------------------
def test_a_minute_lands_in_all_four_tables_once_however_often_it_is_written(engine: Engine) -> None:
    create_schema(engine)
    snap = small_snapshot()
    for _ in range(3):
        with engine.begin() as conn:
            counts = write_surface_snapshot(conn, snap)
    assert counts == {"option_quotes": len(snap.quotes), "surface_points": len(snap.points),
                      "surface_fits": len(snap.fits), "volatility_index": 1}
    assert count(engine, option_quotes) == len(snap.quotes)
    assert count(engine, surface_points) == len(snap.points)
    assert count(engine, surface_fits) == len(snap.fits)
    assert count(engine, volatility_index) == 1
    # Another currency and another minute are rows of their own.
    with engine.begin() as conn:
        write_surface_snapshot(conn, small_snapshot(currency="ETH"))
        write_surface_snapshot(conn, msgspec.structs.replace(snap, at=AT + 60))
    assert count(engine, volatility_index) == 3
    assert count(engine, option_quotes) == 2 * len(snap.quotes) + len(small_snapshot(currency="ETH").quotes)


def test_rows_hold_exactly_what_the_snapshot_says(engine: Engine) -> None:
    create_schema(engine)
    snap = small_snapshot()
    with engine.begin() as conn:
        write_surface_snapshot(conn, snap)
    minute = dt.datetime.fromtimestamp(AT, dt.UTC)
    with engine.connect() as conn:
        rows = {r.instrument: r for r in conn.execute(select(option_quotes))}
        points = {(r.tenor_days, r.log_moneyness): r for r in conn.execute(select(surface_points))}
        fits = list(conn.execute(select(surface_fits).order_by(surface_fits.c.expiry)))
        index = conn.execute(select(volatility_index)).one()
    for q in snap.quotes:
        r = rows[q.instrument_name]
        assert r.minute.replace(tzinfo=dt.UTC) == minute
        assert r.expiry.replace(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(q.expiry_ms / 1000, dt.UTC)
        assert r.currency == "BTC"
        for field in ("strike", "option_type", "underlying_price", "index_price", "bid", "bid_amount", "bid_iv",
                      "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv", "open_interest", "delta",
                      "gamma", "vega", "theta", "stale", "in_surface"):
            assert getattr(r, field) == getattr(q, field), field
    for p in snap.points:
        assert points[(p.tenor_days, p.log_moneyness)].iv == p.iv
        assert points[(p.tenor_days, p.log_moneyness)].method == snap.method
    assert [f.expiry_ms for f in snap.fits] == [int(r.expiry.replace(tzinfo=dt.UTC).timestamp() * 1000) for r in fits]
    for f, r in zip(snap.fits, fits, strict=True):
        params = json.loads(r.parameters)
        assert tuple(params.values()) == f.parameters and (not params or list(params) == ["a", "b", "rho", "m",
                                                                                            "sigma"])
        assert (r.method, r.rmse, r.n_quotes, r.butterfly_ok, r.calendar_ok) == (
            f.method, f.rmse, f.n_quotes, f.butterfly_ok, f.calendar_ok)
        assert r.notes == ("; ".join(f.notes) or None)
    assert (index.value, index.atm_iv_30d, index.rr25_30d, index.bf25_30d) == (
        snap.variance_index, snap.atm_iv_30d, snap.rr25_30d, snap.bf25_30d)


def test_postgres_stores_utc_instants(pg_url: str) -> None:
    with private_schema(pg_url) as url:
        eng = make_engine(url)
        create_schema(eng)
        with eng.begin() as conn:
            conn.exec_driver_sql("SET TIME ZONE 'America/New_York'")  # the session's zone must not matter
            write_surface_snapshot(conn, small_snapshot())
        with eng.connect() as conn:
            minute = conn.execute(select(func.min(option_quotes.c.minute))).scalar_one()
        eng.dispose()
    assert minute == dt.datetime.fromtimestamp(AT, dt.UTC)


# -- orders audit -----------------------------------------------------------------------------------------
def _audit_rows(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(conn.execute(select(orders_audit).order_by(orders_audit.c.id)))


def test_audit_correlates_requests_and_answers_in_either_order(engine: Engine) -> None:
    create_schema(engine)
    place = PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=100.0, price=30000.0, origin="hedger",
                       request_key="h-1")
    ok = CommandResult(request_key="h-1", origin="hedger", method="private/buy", result='{"order":{}}')
    cancel = CancelOrder(order_id="42", origin="console", request_key="c-7")
    refused = CommandFailed(request_key="c-7", origin="console", method="private/cancel", code=-1,
                            message="not connected")
    with engine.begin() as conn:
        write_audit(conn, audit_request(place, AT))
        write_audit(conn, audit_answer(ok, AT + 0.2))
        write_audit(conn, audit_answer(refused, AT + 1.0))  # the answer first
        write_audit(conn, audit_request(cancel, AT + 0.9))
        # Written again (a spool replayed after a crash): nothing changes.
        write_audit(conn, audit_request(place, AT))
        write_audit(conn, audit_answer(ok, AT + 0.2))
    rows = _audit_rows(engine)
    assert len(rows) == 2
    by_key = {r.request_key: r for r in rows}  # type: ignore[attr-defined]
    h = by_key["h-1"]
    assert (h.origin, h.method, h.instrument, h.outcome) == ("hedger", "private/buy", "BTC-PERPETUAL", "accepted")
    assert json.loads(h.request)["price"] == 30000.0 and json.loads(h.request)["message"] == "PlaceOrder"
    assert json.loads(h.answer)["message"] == "CommandResult"
    assert h.requested_at.replace(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(AT, dt.UTC)
    c = by_key["c-7"]
    assert (c.outcome, c.error_code, c.error_message) == ("refused", -1, "not connected")
    assert c.request is not None and c.requested_at is not None and c.answered_at is not None


def test_exchange_rejections_and_pending_requests(engine: Engine) -> None:
    create_schema(engine)
    edit = EditOrder(order_id="9", amount=20.0, price=31000.0, origin="console", request_key="c-1")
    rejected = CommandFailed(request_key="c-1", origin="console", method="private/edit", code=10009,
                             message="not_enough_funds", data='{"param":"amount"}')
    pending = CancelAll(origin="hedger", request_key="h-2", currency="BTC")
    with engine.begin() as conn:
        write_audit(conn, audit_request(edit, AT))
        write_audit(conn, audit_answer(rejected, AT + 1))
        write_audit(conn, audit_request(pending, AT + 2))
    rows = {r.request_key: r for r in _audit_rows(engine)}  # type: ignore[attr-defined]
    assert (rows["c-1"].outcome, rows["c-1"].error_code) == ("rejected", 10009)
    assert (rows["h-2"].outcome, rows["h-2"].answer, rows["h-2"].method) == ("pending", None,
                                                                             "private/cancel_all_by_currency")


# -- the spool --------------------------------------------------------------------------------------------
def test_spool_keeps_batches_in_order_across_restarts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first, second = small_snapshot(AT), small_snapshot(AT + 60)
    audit = audit_request(CancelOrder(order_id="1", origin="console/1", request_key="k"), AT)
    spool.append(SpoolRecord(snapshot=first))
    spool.append(SpoolRecord(audit=audit))
    spool.append(SpoolRecord(snapshot=second))
    assert (len(spool), spool.minutes) == (3, 2)
    # A crash mid-write leaves a temporary file: it was never acknowledged, and is cleared.
    (tmp_path / "spool" / ".000000000009-minute-BTC-1.msgpack.tmp").write_bytes(b"partial")
    again = Spool(tmp_path / "spool")
    assert (len(again), again.minutes) == (3, 2)
    assert not list((tmp_path / "spool").glob(".*.tmp"))
    path, record = again.peek()  # type: ignore[misc]
    assert record.snapshot == first
    again.remove(path)
    path, record = again.peek()  # type: ignore[misc]
    assert record.audit == audit and record.kind == "audit"
    again.remove(path)
    # New batches continue the sequence after a restart, behind the ones waiting.
    again.append(SpoolRecord(snapshot=first))
    names = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert names[0].startswith("000000000003-minute-BTC-") and names[1].startswith("000000000004-minute-BTC-")
    path, record = again.peek()  # type: ignore[misc]
    assert record.snapshot == second


def test_unreadable_spool_file_is_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.append(SpoolRecord(snapshot=small_snapshot()))
    path.write_bytes(b"\x00garbage")
    with pytest.raises(SpoolError, match="cannot be read"):
        spool.peek()
    moved = spool.reject(path, "garbage")
    assert moved.exists() and moved.with_suffix(".reason.txt").read_text().strip() == "garbage"
    assert len(spool) == 0 and spool.minutes == 0


def test_spool_files_are_private(tmp_path: Path) -> None:
    path = Spool(tmp_path).append(SpoolRecord(snapshot=small_snapshot()))
    assert os.stat(path).st_mode & 0o077 == 0
