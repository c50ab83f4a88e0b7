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

from bench.snapshot import synthetic_chain_snapshot
from desk.surface_snapshot import build_surface_snapshot
from messages.account import Settlement, SettlementHistory
from messages.commands import CancelAll, CancelOrder, CommandFailed, CommandResult, EditOrder, PlaceOrder
from quant.black76 import black76_greeks
from sql.engine import DatabaseURLError, SchemaVersionError, create_schema, make_engine, mask_url
from sql.queries import IndexMinute, read_minute_coverage, read_settlements, read_volatility_index
from sql.spool import Spool, SpoolError, SpoolRecord
from sql.tables import (
    SCHEMA_VERSION,
    minute_coverage,
    option_quotes,
    orders_audit,
    schema_version,
    settlements,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.writers import (
    DvolReading,
    audit_answer,
    audit_request,
    write_audit,
    write_settlements,
    write_surface_snapshot,
)
from tests.support.recorder_messages import DOCS_SETTLEMENTS, docs_settlements
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
    assert counts == {"option_quotes": len(snap.quotes), "minute_coverage": 1, "surface_points": len(snap.points),
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
        for field in ("strike", "option_type", "underlying_price", "stale", "in_surface"):
            assert getattr(r, field) == getattr(q, field), field
        # Stored as real (float4) since version 5: the 7 significant digits a Deribit figure has.
        for field in ("bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
                      "open_interest"):
            stored, sent = getattr(r, field), getattr(q, field)
            assert (stored is None) == (sent is None) and (sent is None or stored == pytest.approx(sent, rel=1e-6)), \
                field
        assert r.index_price == snap.index_price  # the chain's index at the minute
        # Greeks: Black-76 at the recorded mark vol (Deribit's own rounds it to 0.01 vol points, so the
        # ticker's figures agree to that rounding); what quant.black76 computes, to 1e-9.
        years = (q.expiry_ms / 1000 - AT) / (365 * 86_400)
        greeks = black76_greeks(r.underlying_price, r.strike, years, r.mark_iv / 100, q.option_type == "call")
        for field in ("delta", "gamma", "vega", "theta"):
            assert getattr(r, field) == pytest.approx(float(getattr(greeks, field)), rel=1e-9, abs=1e-9), field
        assert r.delta == pytest.approx(q.delta, abs=1e-4)
    for p in snap.points:
        assert points[(p.tenor_days, p.log_moneyness)].iv == p.iv
        assert points[(p.tenor_days, p.log_moneyness)].method == snap.method
        assert points[(p.tenor_days, p.log_moneyness)].extrapolated == p.extrapolated is not None
    assert {p.extrapolated for p in snap.points} == {True, False}
    assert [f.expiry_ms for f in snap.fits] == [int(r.expiry.replace(tzinfo=dt.UTC).timestamp() * 1000) for r in fits]
    for f, r in zip(snap.fits, fits, strict=True):
        params = json.loads(r.parameters)
        assert tuple(params.values()) == f.parameters and (not params or list(params) == ["a", "b", "rho", "m",
                                                                                            "sigma"])
        assert (r.method, r.rmse, r.n_quotes, r.butterfly_ok, r.calendar_ok) == (
            f.method, f.rmse, f.n_quotes, f.butterfly_ok, f.calendar_ok)
        assert r.notes == ("; ".join(f.notes) or None)
        assert (r.check_k_min, r.check_k_max) == (f.check_k_min, f.check_k_max)
    assert (index.value, index.atm_iv_30d, index.rr25_30d, index.bf25_30d) == (
        snap.variance_index, snap.atm_iv_30d, snap.rr25_30d, snap.bf25_30d)
    assert (index.dvol, index.dvol_at, index.dvol_minus_index) == (None, None, None)  # no DVOL given: missing
    with engine.connect() as conn:
        coverage = conn.execute(select(minute_coverage)).one()
    assert (coverage.currency, coverage.coverage, coverage.complete, coverage.listed, coverage.usable) == (
        "BTC", snap.coverage, True, snap.listed, snap.usable)


def test_the_dvol_is_stored_and_read_beside_the_variance_index(engine: Engine) -> None:
    create_schema(engine)
    snap = small_snapshot()
    reading = DvolReading(value=57.31, timestamp=int(AT * 1000) - 1_234)
    with engine.begin() as conn:
        write_surface_snapshot(conn, snap, reading)
        write_surface_snapshot(conn, msgspec.structs.replace(snap, at=AT + 60))  # no current DVOL then
        write_surface_snapshot(conn, small_snapshot(currency="ETH"), DvolReading(value=70.0, timestamp=int(AT * 1000)))
    minute = dt.datetime.fromtimestamp(AT, dt.UTC)
    later = minute + dt.timedelta(minutes=1)
    btc = read_volatility_index(engine, "BTC")
    assert snap.variance_index is not None
    assert btc == [
        IndexMinute(minute, "BTC", snap.variance_index, snap.atm_iv_30d, snap.rr25_30d, snap.bf25_30d, 57.31,
                    dt.datetime.fromtimestamp(reading.timestamp / 1000, dt.UTC), btc[0].dvol_minus_index),
        IndexMinute(later, "BTC", snap.variance_index, snap.atm_iv_30d, snap.rr25_30d, snap.bf25_30d, None, None),
    ]
    assert btc[0].dvol_at is not None and btc[0].dvol_at.tzinfo is not None
    assert read_volatility_index(engine, "BTC", start=later) == btc[1:]
    assert read_volatility_index(engine, "BTC", end=minute) == btc[:1]
    assert [r.dvol for r in read_volatility_index(engine, "ETH")] == [70.0]
    # DVOL minus our index, recorded beside them; NULL where the DVOL was missing.
    with engine.connect() as conn:
        t = volatility_index
        differences = conn.execute(select(t.c.dvol_minus_index).where(t.c.currency == "BTC")
                                   .order_by(t.c.minute)).scalars().all()
    assert snap.variance_index is not None
    assert differences[0] == pytest.approx(57.31 - snap.variance_index, abs=1e-12) and differences[1] is None
    assert [r.dvol_minus_index for r in btc] == differences


def test_an_incomplete_minute_stores_its_quotes_marked_and_no_surface_fits_or_index(engine: Engine) -> None:
    create_schema(engine)
    snap = small_snapshot()
    incomplete = build_surface_snapshot(synthetic_chain_snapshot(at=AT, n_quotes=120, n_expiries=4),
                                        min_coverage=0.99)
    assert not incomplete.complete and incomplete.quotes
    with engine.begin() as conn:
        write_surface_snapshot(conn, incomplete, DvolReading(value=50.0, timestamp=int(AT * 1000)))
        write_surface_snapshot(conn, msgspec.structs.replace(snap, at=AT + 60))
    assert count(engine, option_quotes) == len(incomplete.quotes) + len(snap.quotes)
    assert count(engine, surface_points) == len(snap.points) and count(engine, surface_fits) == len(snap.fits)
    assert [r.minute.timestamp() for r in read_volatility_index(engine, "BTC")] == [AT + 60]
    with engine.connect() as conn:
        rows = conn.execute(select(minute_coverage).order_by(minute_coverage.c.minute)).all()
    assert [(r.complete, r.listed, r.usable) for r in rows] == [(False, 120, incomplete.usable),
                                                                (True, 120, snap.usable)]
    assert rows[0].coverage == pytest.approx(incomplete.usable / 120)
    read = read_minute_coverage(engine, "BTC")
    assert [(r.minute.timestamp(), r.complete) for r in read] == [(AT, False), (AT + 60, True)]
    assert read_minute_coverage(engine, "ETH") == []


def test_a_settlement_history_fetched_again_and_again_adds_each_entry_once(engine: Engine) -> None:
    create_schema(engine)
    first, second = docs_settlements()
    bankruptcy = Settlement(type="bankruptcy", timestamp=1550475692526, session_bankruptcy=0.25, funded=0.1)
    history = SettlementHistory(currency="BTC", settlements=(first, bankruptcy), at=AT)
    for i in range(3):
        with engine.begin() as conn:
            assert write_settlements(conn, msgspec.structs.replace(history, at=AT + i)) == 2
    assert count(engine, settlements) == 2
    with engine.begin() as conn:  # after the next settlement: the new entry first, the old ones again
        write_settlements(conn, SettlementHistory(currency="BTC", settlements=(second, first, bankruptcy),
                                                  at=AT + 86_400))
        write_settlements(conn, SettlementHistory(currency="ETH", settlements=(first,), at=AT))
    assert count(engine, settlements) == 4
    assert count(engine, settlements, currency="BTC") == 3
    rows = read_settlements(engine, "BTC")
    assert [(r.instrument, r.type) for r in rows] == [("BTC-15FEB19-4000-P", "delivery"), ("", "bankruptcy"),
                                                      ("ETH-22FEB19", "settlement")]
    raw = {e["instrument_name"]: e for e in msgspec.json.decode(DOCS_SETTLEMENTS)}
    for row in rows[::2]:
        source = raw[row.instrument]
        assert row.settled_at == dt.datetime.fromtimestamp(source["timestamp"] / 1000, dt.UTC)
        assert (row.position, row.mark_price, row.index_price, row.profit_loss, row.session_profit_loss,
                row.funding) == (source["position"], source["mark_price"], source["index_price"],
                                 source["profit_loss"], source["session_profit_loss"], None)
    # recorded_at is when the entry first arrived: later fetches change nothing.
    recorded = {r.instrument: r.recorded_at for r in rows}
    assert recorded["ETH-22FEB19"] == recorded[""] == dt.datetime.fromtimestamp(AT, dt.UTC)
    assert recorded["BTC-15FEB19-4000-P"] == dt.datetime.fromtimestamp(AT + 86_400, dt.UTC)
    start = dt.datetime.fromtimestamp(1550475692.526, dt.UTC)
    assert [r.currency for r in read_settlements(engine, start=start)] == ["BTC", "BTC", "ETH"]
    assert read_settlements(engine, end=start - dt.timedelta(seconds=1)) == rows[:1]


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
    assert (h.origin, h.method, h.instrument, h.outcome) == ("hedger", "private/buy", "BTC-PERPETUAL", "sent")
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


def test_settlements_are_spooled_in_order_with_the_minutes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    history = SettlementHistory(currency="BTC", settlements=docs_settlements(), at=AT)
    reading = DvolReading(value=50.0, timestamp=int(AT * 1000))
    spool.append(SpoolRecord(snapshot=small_snapshot(AT), dvol=reading))
    spool.append(SpoolRecord(settlements=history))
    again = Spool(tmp_path / "spool")
    assert (len(again), again.minutes) == (2, 1)
    path, record = again.peek()  # type: ignore[misc]
    assert record.dvol == reading and record.kind == "minute"
    again.remove(path)
    path, record = again.peek()  # type: ignore[misc]
    assert record.settlements == history and record.kind == "settlements"
    assert path.name.startswith("000000000002-settlements-BTC")
    again.remove(path)
    assert (len(again), again.minutes) == (0, 0)


def test_a_spool_file_of_the_version_before_reads_back(tmp_path: Path) -> None:
    class SpoolRecordV1(msgspec.Struct, frozen=True, kw_only=True):  # the spool's record before DVOL
        snapshot: object = None
        audit: object = None

    snap = small_snapshot()
    (tmp_path / f"000000000001-minute-BTC-{int(AT)}.msgpack").write_bytes(
        msgspec.msgpack.encode(SpoolRecordV1(snapshot=snap)))
    _path, record = Spool(tmp_path).peek()  # type: ignore[misc]
    assert (record.snapshot, record.dvol, record.settlements) == (snap, None, None)


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
