"""The Connection (an actor in a Supervisor) against the simulator over a real loopback websocket
(issue 4): the full chain subscribed, orders placed, edited and cancelled through the bus, fills,
positions after a reconcile, and portfolio notifications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from messages.account import ExchangeState, OrderUpdate, PortfolioUpdate, UserTrade
from messages.commands import CancelOrder, CommandResult, EditOrder, PlaceOrder, ReconcilePortfolio
from messages.market import BookChange, BookSnapshot, IndexPrice, InstrumentsLoaded, Quote, Ticker
from messages.system import ConnectionState
from runtime.logs import setup_logging
from simulator import SimSettings, Simulator
from tests.support.connection_harness import Desk, connection_settings

CLIENT_ID, CLIENT_SECRET = "e2e", "e2e-simulator-secret"
MARKET_DATA = (BookSnapshot, BookChange, Ticker, Quote, IndexPrice)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=7, settings=SimSettings.for_account(
        CLIENT_ID, CLIENT_SECRET, {"BTC": 10.0, "ETH": 100.0}, chain="full", updates_per_s=0.2))
    simulator.start_in_thread()
    yield simulator
    simulator.stop()


def result(desk: Desk, key: str) -> CommandResult:
    answer = desk.wait_answer(key, timeout=10)
    assert isinstance(answer, CommandResult), answer
    return answer


def test_full_chain_orders_fills_positions_and_portfolio(tmp_path: Path, sim: Simulator) -> None:
    settings = connection_settings(tmp_path, {"deribit.client_id": CLIENT_ID, "deribit.client_secret": CLIENT_SECRET,
                                              "deribit.subscribe_requests_per_s": 2.0}, currencies=["BTC", "ETH"])
    assert settings.deribit.subscribe_batch_size == 200  # the program's defaults for batching
    desk = Desk.start(settings, sim.url, keep=lambda m: not isinstance(m, MARKET_DATA))
    try:
        _run(desk, sim)
    finally:
        desk.stop()
        setup_logging(None, "warning", console=False)


def _run(desk: Desk, sim: Simulator) -> None:
    subscribed = desk.wait_state(ConnectionState.SUBSCRIBED, timeout=60)
    assert subscribed.authenticated and subscribed.can_trade
    loaded = {m.currency: m for m in desk.seen(InstrumentsLoaded)}
    expected_channels = 1  # platform_state
    for currency in ("BTC", "ETH"):
        names = {i.instrument_name for i in loaded[currency].instruments}
        assert names == set(sim.instruments(currency))
        assert sum(i.kind == "option" for i in loaded[currency].instruments) > 500
        # book or quote, and ticker; index, DVOL, two states; orders, trades, changes, portfolio
        expected_channels += 2 * len(names) + 8
    assert subscribed.detail == f"{expected_channels} of {expected_channels} channels"
    options = sum(i.kind == "option" for m in loaded.values() for i in m.instruments)
    desk.wait_until(lambda: desk.counts().get("BookSnapshot", 0) >= options, 30, "a snapshot of every option book")

    # A resting order far below the bid: placed, edited, cancelled.
    btc = {i.instrument_name: i for i in loaded["BTC"].instruments}
    option = next(name for name in sorted(btc) if btc[name].kind == "option" and len(sim.book(name)[0]) >= 3)
    tick = btc[option].tick_size
    bids, _asks = sim.book(option)
    low = round(max(tick, bids[-1][0] - 2 * tick), 4)
    desk.publish(PlaceOrder(instrument_name=option, side="buy", amount=0.1, price=low, origin="e2e",
                            request_key="rest-1", label="e2e-rest"))
    placed = result(desk, "rest-1").order
    assert placed is not None and placed.order_state == "open" and placed.price == low
    assert [o["order_id"] for o in sim.open_orders(CLIENT_ID, "BTC")] == [placed.order_id]
    lower = round(max(tick, low - tick), 4)
    desk.publish(EditOrder(order_id=placed.order_id, amount=0.2, price=lower, origin="e2e", request_key="edit-1"))
    edited = result(desk, "edit-1").order
    assert edited is not None and edited.amount == 0.2 and edited.price == lower
    assert sim.open_orders(CLIENT_ID, "BTC")[0]["amount"] == 0.2
    desk.publish(CancelOrder(order_id=placed.order_id, origin="e2e", request_key="cancel-1"))
    cancelled = result(desk, "cancel-1").order
    assert cancelled is not None and cancelled.order_state == "cancelled"
    assert sim.open_orders(CLIENT_ID, "BTC") == []
    updates = desk.wait_seen(OrderUpdate, lambda o: o.order_id == placed.order_id, count=3)
    assert [u.order_state for u in updates][-1] == "cancelled"

    # Marketable orders: fills on the perpetual and on the option.
    desk.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=100, type="market",
                            origin="e2e", request_key="take-1"))
    taken = result(desk, "take-1")
    assert taken.order is not None and taken.order.order_state == "filled" and taken.trades
    _bids, asks = sim.book(option)
    desk.publish(PlaceOrder(instrument_name=option, side="buy", amount=0.1, price=asks[0][0], origin="e2e",
                            request_key="take-2"))
    assert result(desk, "take-2").trades
    fills = desk.wait_seen(UserTrade, count=2)
    assert {f.instrument_name for f in fills} == {"BTC-PERPETUAL", option}
    assert sum(f.amount for f in fills if f.instrument_name == "BTC-PERPETUAL") == 100
    portfolio = desk.wait_seen(PortfolioUpdate, lambda p: p.currency == "BTC")
    assert portfolio[-1].equity > 0

    # The exchange's truth after a reconcile.
    desk.publish(ReconcilePortfolio(origin="e2e", reason="after fills", currencies=("BTC",)))
    (state,) = desk.wait_seen(ExchangeState, lambda s: s.reason == "after fills")
    positions = {p.instrument_name: p for p in state.positions}
    assert positions["BTC-PERPETUAL"].size == 100 and positions["BTC-PERPETUAL"].direction == "buy"
    assert positions[option].size == pytest.approx(0.1) and positions[option].kind == "option"
    truth = {p["instrument_name"]: p["size"] for p in sim.positions(CLIENT_ID, "BTC")}
    assert {name: p.size for name, p in positions.items()} == pytest.approx(truth)
    assert state.open_orders == () and state.summary is not None and state.summary.currency == "BTC"
    assert desk.connection().is_alive()
