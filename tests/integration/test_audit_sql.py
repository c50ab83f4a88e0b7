"""The orders audit on real SQLite and PostgreSQL: a text with NUL (or a lone surrogate) from an
exchange error is stored escaped and its batch goes in; a lost answer's row says unknown until its
resolution, which changes that row only; a resting order's later fill makes its row say filled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, select

from messages.account import OrderUpdate
from messages.commands import ANSWER_LOST, AuditOutcome, CommandFailed, CommandResult, OrderResolved, PlaceOrder
from sql.engine import create_schema, make_engine
from sql.store import MinuteStore, audit_record
from sql.tables import orders_audit
from sql.writers import audit_answer, audit_fill, audit_request, audit_resolution, unescape_text, write_audit
from tests.support.sql import AT


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    create_schema(eng)
    yield eng
    eng.dispose()


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.request_key: r for r in conn.execute(select(orders_audit))}


def place(key: str, label: str = "", **fields: Any) -> PlaceOrder:
    return PlaceOrder(instrument_name="BTC-PERPETUAL", side="sell", amount=10.0, price=30000.0, origin="hedger",
                      request_key=key, label=label or key, **fields)


def update(order_id: str, filled: float, state: str = "open") -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name="BTC-PERPETUAL", order_state=state, order_type="limit",
                       direction="sell", amount=10.0, filled_amount=filled)


NASTY = "rejected: bad\x00byte, half \ud83d, back\\slash"


def test_a_nul_text_is_stored_and_its_batch_is_not_refused(db_url: str, tmp_path: Path) -> None:
    store = MinuteStore(db_url, tmp_path / "spool")
    try:
        store.open()
        command = PlaceOrder(instrument_name="BTC-PERPETUAL\x00", side="sell", amount=1.0, price=1.0, origin="hedger",
                             request_key="h-\x00", label="odd\x00label\ud800")
        assert store.record(audit_record(audit_request(command, AT)))
        failed = CommandFailed(request_key="h-\x00", origin="hedger", method="private/sell", code=10001,
                               message=NASTY, data='{"reason": "\\u0000"}')
        assert store.record(audit_record(audit_answer(failed, AT + 1)))
        assert (store.backlog, store.rejected) == (0, 0)
    finally:
        store.close()
    eng = make_engine(db_url)
    try:
        (row,) = rows(eng).values()
    finally:
        eng.dispose()
    # One row, answered: never left pending.
    assert (unescape_text(row.request_key), row.outcome, row.error_code) == ("h-\x00", "rejected", 10001)
    assert unescape_text(row.error_message) == NASTY and "\x00" not in row.error_message
    assert unescape_text(row.instrument) == "BTC-PERPETUAL\x00"
    assert json.loads(row.answer)["message"] == NASTY  # the JSON keeps it as \u escapes
    assert json.loads(row.request)["label"] == "odd\x00label\ud800"


def test_a_lost_answer_is_unknown_until_resolved_and_only_that_row_changes(engine: Engine) -> None:
    lost = CommandFailed(request_key="h-1", origin="hedger", method="private/sell", code=ANSWER_LOST,
                         message="connection lost before the exchange answered")
    refused = CommandFailed(request_key="h-2", origin="hedger", method="private/sell", code=-1, message="down")
    with engine.begin() as conn:
        for key, answer in (("h-1", lost), ("h-2", refused)):
            write_audit(conn, audit_request(place(key), AT))
            write_audit(conn, audit_answer(answer, AT + 1))
    found = rows(engine)
    assert (found["h-1"].outcome, found["h-2"].outcome) == ("unknown", "refused")
    filled = update("ETH-77", 10.0, "filled")
    resolved = OrderResolved(request_key="h-1", origin="hedger", method="private/sell", outcome=AuditOutcome.FILLED,
                             message="order ETH-77 is filled", order=filled)
    not_unknown = OrderResolved(request_key="h-2", origin="hedger", method="private/sell",
                                outcome=AuditOutcome.FILLED, message="must not change a refused row")
    with engine.begin() as conn:
        write_audit(conn, audit_resolution(resolved, AT + 5))
        write_audit(conn, audit_resolution(not_unknown, AT + 5))
        write_audit(conn, audit_answer(lost, AT + 1))  # the spool written again after a crash...
        write_audit(conn, audit_resolution(resolved, AT + 5))  # ...and its resolution: the same row
    found = rows(engine)
    h1 = found["h-1"]
    assert (h1.outcome, h1.order_id, h1.filled_amount, h1.error_code) == ("filled", "ETH-77", 10.0, ANSWER_LOST)
    assert h1.resolved_at is not None and h1.resolution == "order ETH-77 is filled"
    assert (found["h-2"].outcome, found["h-2"].resolved_at) == ("refused", None)
    assert len(found) == 2


def test_a_resting_order_that_fills_later_says_filled(engine: Engine) -> None:
    resting = update("O-1", 0.0)
    answer = CommandResult(request_key="h-1", origin="hedger", method="private/sell", result="{}", order=resting)
    cancel_answer = CommandResult(request_key="c-1", origin="hedger", method="private/cancel", result="{}",
                                  order=update("O-1", 0.0, "cancelled"))
    with engine.begin() as conn:
        write_audit(conn, audit_request(place("h-1"), AT))
        write_audit(conn, audit_answer(answer, AT + 0.1))
        write_audit(conn, audit_answer(cancel_answer, AT + 0.2))
    assert rows(engine)["h-1"].outcome == "sent"
    with engine.begin() as conn:
        write_audit(conn, audit_fill(update("O-1", 4.0), AT + 1))
        write_audit(conn, audit_fill(update("O-1", 2.0), AT + 2))  # an older update: no step back
    found = rows(engine)
    assert (found["h-1"].outcome, found["h-1"].filled_amount) == ("filled", 4.0)
    assert found["c-1"].outcome == "sent"  # the cancel's row is not the order's placement


def test_an_answer_spooled_by_schema_version_2_is_written_in_todays_outcomes(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    answer = json.dumps({"message": "CommandResult", "order": {"order_id": "O-5", "filled_amount": 10.0}})
    legacy = [
        {"kind": "request", "origin": "hedger", "request_key": "h-5", "method": "private/sell", "at": AT,
         "payload": '{"message": "PlaceOrder"}', "outcome": "pending", "instrument": "BTC-PERPETUAL"},
        {"kind": "answer", "origin": "hedger", "request_key": "h-5", "method": "private/sell", "at": AT + 1,
         "payload": answer, "outcome": "accepted"},
        {"kind": "answer", "origin": "hedger", "request_key": "h-6", "method": "private/sell", "at": AT + 1,
         "payload": "{}", "outcome": "refused", "error_code": ANSWER_LOST, "error_message": "lost"},
    ]
    for number, audit in enumerate(legacy, 1):
        (spool / f"{number:012d}-audit-hedger.msgpack").write_bytes(msgspec.msgpack.encode({"audit": audit}))
    store = MinuteStore(db_url, spool)
    try:
        store.open()
        assert (store.backlog, store.rejected) == (0, 0)
    finally:
        store.close()
    eng = make_engine(db_url)
    try:
        found = rows(eng)
    finally:
        eng.dispose()
    assert (found["h-5"].outcome, found["h-5"].order_id, found["h-5"].filled_amount) == ("filled", "O-5", 10.0)
    assert found["h-6"].outcome == "unknown"
