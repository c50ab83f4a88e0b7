"""Fills as log events: every fill of our orders, a resting order's included, is one ``fill`` line
in the JSON log with what a trader reconciles against (instrument, side, amount, price, fee, ids)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from messages.account import UserTrade
from messages.commands import PlaceOrder
from tests.support.desk import StartDesk
from tests.support.settings import SIM_CLIENT_ID
from tests.support.waiting import wait_until


def _log_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in (tmp_path / "logs").glob("*.jsonl") for line in f.read_text().splitlines()]


def test_a_resting_orders_fill_is_one_fill_event_in_the_json_log(sim_desk: StartDesk, tmp_path: Path) -> None:
    desk = sim_desk(currencies=["BTC"], sim={"index_vol": 0.0}, only={"connection", "portfolio"})
    # Reconciled once subscribed: the private channels (user.trades) are confirmed.
    wait_until(lambda: any(e["event"] == "portfolio_reconciled" and e["reason"] == "subscribed"
                           for e in _log_lines(tmp_path)), 20, "the portfolio reconciled once subscribed")
    bid = desk.sim.book("BTC-PERPETUAL")[0][0][0]
    price = bid - 50.0  # resting well below the bid: only a move of the market fills it
    desk.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=100.0, price=price,
                            post_only=True, origin="test", request_key="test-1", label="resting_1"))
    wait_until(lambda: bool(desk.sim.open_orders(SIM_CLIENT_ID, "BTC")), 10, "the order resting")
    assert not [e for e in _log_lines(tmp_path) if e["event"] == "fill"]
    desk.sim.shift_index("BTC", -3.0)  # the market moves through the order: a maker fill
    wait_until(lambda: any(e["event"] == "fill" for e in _log_lines(tmp_path)), 10, "the fill logged")
    # The same trade again (as after a resubscribe) is not a second fill.
    first = next(e for e in _log_lines(tmp_path) if e["event"] == "fill")
    desk.publish(UserTrade(trade_id=first["trade_id"], order_id=first["order_id"], instrument_name="BTC-PERPETUAL",
                           timestamp=0, direction="buy", price=first["price"], amount=first["amount"], fee=0.0,
                           fee_currency="BTC", label="resting_1"))
    desk.supervisor.drain()
    fills = [e for e in _log_lines(tmp_path) if e["event"] == "fill"]
    assert len(fills) == 1, fills
    fill = fills[0]
    assert fill["actor"] == "portfolio" and fill["level"] == "info"
    assert (fill["instrument"], fill["side"], fill["amount"], fill["price"]) == ("BTC-PERPETUAL", "buy", 100.0, price)
    assert fill["label"] == "resting_1" and fill["liquidity"] == "M"
    assert fill["fee_currency"] == "BTC" and isinstance(fill["fee"], float)
    assert fill["order_id"] and fill["trade_id"] and fill["run_id"] and fill["pid"]
