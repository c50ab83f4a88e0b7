"""Hostile market data through a real websocket on loopback: the program's own Connection,
BookKeepers, Portfolio and Hedger against the scripted exchange, one fresh desk per case, with a
balanced hedged book (1 BTC of call at exchange delta 1.0 against 60,000 USD short perpetual) and
hedging on. One bad frame of each kind the Hedger reads: no order reaches the exchange, the
reason is in ``delta hedging status``, and the next sane data lets it hedge again (a real move
then does reach the exchange)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import main
from messages.hedging import HedgeCode, HedgerControl, HedgerStatus
from messages.market import DataFault
from tests.support.connection_harness import Desk, connection_settings
from tests.support.scripted_server import ScriptedServer
from tests.support.waiting import wait_until

PERP = "BTC-PERPETUAL"
CALL = "BTC-1JAN00-60000-C"
INDEX = 60_000.0
HEDGE = -60_000.0  # USD: -1 BTC at 60,000
ACTORS = {"books-BTC-option", "books-BTC-future", "portfolio", "hedger"}


def now_ms(ahead_s: float = 0.0) -> int:
    return int((time.time() + ahead_s) * 1000)


class Market:
    """Pushes the exchange's side of one moment: the index, the perpetual's quote and ticker, the
    call's ticker."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server

    def index(self, price: float = INDEX, ahead_s: float = 0.0) -> None:
        self.server.push("deribit_price_index.btc_usd",
                         {"index_name": "btc_usd", "price": price, "timestamp": now_ms(ahead_s)})

    def quote(self, bid: float = INDEX - 0.5, ask: float = INDEX + 0.5, ahead_s: float = 0.0) -> None:
        self.server.push(f"quote.{PERP}", {"instrument_name": PERP, "timestamp": now_ms(ahead_s),
                                           "best_bid_price": bid, "best_bid_amount": 1000.0,
                                           "best_ask_price": ask, "best_ask_amount": 1000.0})

    def perp_ticker(self, bid: float = INDEX - 0.5, ask: float = INDEX + 0.5, mark: float = INDEX,
                    index: float = INDEX) -> None:
        self.server.push(f"ticker.{PERP}.100ms", {
            "instrument_name": PERP, "timestamp": now_ms(), "state": "open", "mark_price": mark,
            "index_price": index, "best_bid_price": bid, "best_bid_amount": 1000.0, "best_ask_price": ask,
            "best_ask_amount": 1000.0, "current_funding": 0.0, "funding_8h": 0.0,
            "stats": {"volume": None, "price_change": None, "low": None, "high": None}})

    def call_ticker(self, delta: float = 1.0, iv: float = 60.0, underlying: float = INDEX, index: float = INDEX,
                    ahead_s: float = 0.0, gamma: float = 0.0, vega: float = 0.0, mark: float = 0.5) -> None:
        self.server.push(f"ticker.{CALL}.100ms", {
            "instrument_name": CALL, "timestamp": now_ms(ahead_s), "state": "open", "mark_price": mark,
            "mark_iv": iv, "underlying_price": underlying, "underlying_index": "index_price", "index_price": index,
            "best_bid_price": 0.49, "best_bid_amount": 1.0, "best_ask_price": 0.51, "best_ask_amount": 1.0,
            "greeks": {"delta": delta, "gamma": gamma, "vega": vega, "theta": 0.0, "rho": 0.0},
            "stats": {"volume": None, "price_change": None, "low": None, "high": None}})

    def sane(self) -> None:
        self.index()
        self.quote()
        self.perp_ticker()
        self.call_ticker()


class Hedged:
    def __init__(self, server: ScriptedServer, desk: Desk) -> None:
        self.server = server
        self.desk = desk
        self.market = Market(server)

    def status(self) -> HedgerStatus:
        ref = self.desk.supervisor.refs()["hedger"]
        assert ref is not None
        [status] = ref.ask(HedgerControl(action="status", origin="test", currency="BTC"), timeout=5)
        return status

    def orders(self) -> list[Any]:
        return self.server.calls("private/buy") + self.server.calls("private/sell")

    def wait_code(self, code: HedgeCode, what: str, push: Callable[[], None] | None = None,
                  timeout: float = 10.0) -> HedgerStatus:
        def reached() -> HedgerStatus | None:
            if push is not None:
                push()
            status = self.status()
            return status if status.code is code else None

        return wait_until(reached, timeout, f"{what}; the hedger says {self.status()}")


@pytest.fixture
def hedged(tmp_path: Path) -> Iterator[Callable[[], Hedged]]:
    started: list[tuple[ScriptedServer, Desk]] = []

    def start() -> Hedged:
        server = ScriptedServer()
        server.positions = {"BTC": [
            {"instrument_name": CALL, "kind": "option", "direction": "buy", "size": 1.0, "average_price": 0.5,
             "delta": 1.0},
            {"instrument_name": PERP, "kind": "future", "direction": "sell", "size": HEDGE,
             "average_price": INDEX, "size_currency": HEDGE / INDEX},
        ]}
        url = server.start()
        settings = connection_settings(tmp_path, {"hedger.currencies": ["BTC"], "hedger.delta_source": "exchange",
                                                  "hedger.active_on_start": True, "hedger.order_type": "market"})
        specs = [s for s in main.actor_specs(settings, url=url) if s.name in ACTORS]
        desk = Desk.start(settings, url, extra_specs=specs)
        started.append((server, desk))
        running = Hedged(server, desk)
        running.wait_code(HedgeCode.WITHIN_BAND, "a balanced book, hedging on", push=running.market.sane,
                          timeout=20.0)
        assert running.orders() == []
        return running

    try:
        yield start
    finally:
        for server, desk in started:
            try:
                desk.stop()
            finally:
                server.stop()


def hostile_cases() -> dict[str, tuple[Callable[[Market], None], DataFault]]:
    return {
        "crossed quote": (lambda m: m.quote(80_000.0, 70_000.0), DataFault.CROSSED),
        "crossed ticker": (lambda m: m.perp_ticker(80_000.0, 70_000.0), DataFault.CROSSED),
        "quote crossed at the index": (lambda m: m.quote(INDEX + 10.0, INDEX - 10.0), DataFault.CROSSED),
        "quote locked at the index": (lambda m: m.quote(INDEX, INDEX), DataFault.LOCKED),
        "quote bid 1 ask 2": (lambda m: m.quote(1.0, 2.0), DataFault.OFF_INDEX),
        "quote at 1e300": (lambda m: m.quote(1e300, 1e300), DataFault.LOCKED),
        "quote 1e300 wide": (lambda m: m.quote(1e300, 2e300), DataFault.OFF_INDEX),
        "ticker mark outside the book": (lambda m: m.perp_ticker(mark=INDEX * 1.03), DataFault.MARK_OUTSIDE_BOOK),
        "ticker index 1e300": (lambda m: m.perp_ticker(index=1e300), DataFault.OFF_INDEX),
        "option delta 1e300": (lambda m: m.call_ticker(delta=1e300), DataFault.DELTA_OUT_OF_RANGE),
        "call delta -7": (lambda m: m.call_ticker(delta=-7.0), DataFault.DELTA_OUT_OF_RANGE),
        "option IV 1e6": (lambda m: m.call_ticker(iv=1e6), DataFault.IV_OUT_OF_RANGE),
        "option IV zero": (lambda m: m.call_ticker(iv=0.0), DataFault.IV_OUT_OF_RANGE),
        "option gamma negative": (lambda m: m.call_ticker(gamma=-0.001), DataFault.GREEK_OUT_OF_RANGE),
        "option vega 1e300": (lambda m: m.call_ticker(vega=1e300), DataFault.GREEK_OUT_OF_RANGE),
        "option mark negative": (lambda m: m.call_ticker(mark=-0.1), DataFault.NOT_POSITIVE),
        "option underlying 1e300": (lambda m: m.call_ticker(underlying=1e300), DataFault.OFF_INDEX),
        "quote an hour ahead": (lambda m: m.quote(ahead_s=3600.0), DataFault.FROM_THE_FUTURE),
        "option ticker an hour ahead": (lambda m: m.call_ticker(ahead_s=3600.0), DataFault.FROM_THE_FUTURE),
        "index 1e300": (lambda m: m.index(1e300), DataFault.OFF_INDEX),
    }


@pytest.mark.parametrize("case", sorted(hostile_cases()))
def test_one_hostile_frame_sends_nothing_says_why_and_hedging_resumes(hedged: Callable[[], Hedged],
                                                                     case: str) -> None:
    send, fault = hostile_cases()[case]
    running = hedged()
    send(running.market)
    status = running.wait_code(HedgeCode.IMPLAUSIBLE_DATA, f"the hedger to refuse the {case}")
    assert status.fault is fault and status.active, status
    time.sleep(0.3)
    assert running.orders() == [], case
    # Sane data again: it holds within the band, then hedges a real move (the call's delta halves).
    running.wait_code(HedgeCode.WITHIN_BAND, "sane data to be taken again", push=running.market.sane)
    running.market.call_ticker(delta=0.5)
    [order] = running.server.wait_for_call("private/buy", timeout=10.0)
    assert order.params["instrument_name"] == PERP and order.params["amount"] == pytest.approx(30_000.0)
    assert len(running.orders()) == 1


def test_non_finite_numbers_never_cross_the_decoder(hedged: Callable[[], Hedged]) -> None:
    # JSON has no NaN or infinity: Deribit cannot send them, and a frame that carries them is
    # refused whole by the codec (counted malformed), so the hedger never sees it.
    running = hedged()
    frame = json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": f"quote.{PERP}", "data": {"instrument_name": PERP, "timestamp": now_ms(),
                                            "best_bid_price": float("nan"), "best_ask_price": float("inf")}}})
    running.server.send_raw(frame)
    running.server.send_raw(frame.replace("NaN", "1e400").replace("Infinity", "-1e400"))
    running.desk.wait_log("malformed_frame")
    time.sleep(0.3)
    assert running.orders() == [] and running.status().code is HedgeCode.WITHIN_BAND


def test_a_hedge_instrument_listed_with_a_zero_tick_size_is_never_traded(tmp_path: Path) -> None:
    # The exchange lists the perpetual with tick_size 0: the instrument is refused where the lists
    # load, so the hedger says it is not listed and sends nothing; once it is listed sanely (an
    # instrument.state notification makes the list load again), hedging goes on.
    server = ScriptedServer()
    server.instruments["BTC"][0] = {**server.instruments["BTC"][0], "tick_size": 0.0}
    server.positions = {"BTC": [{"instrument_name": CALL, "kind": "option", "direction": "buy", "size": 1.0,
                                 "average_price": 0.5}]}  # unhedged: it would sell 60,000 at once
    url = server.start()
    settings = connection_settings(tmp_path, {"hedger.currencies": ["BTC"], "hedger.delta_source": "exchange",
                                              "hedger.active_on_start": True})
    desk = Desk.start(settings, url, extra_specs=[s for s in main.actor_specs(settings, url=url) if s.name in ACTORS])
    try:
        running = Hedged(server, desk)
        status = running.wait_code(HedgeCode.NOT_LISTED, "the perpetual refused", push=running.market.sane)
        assert PERP in status.last_reason
        assert desk.log_events("instrument_refused")[0]["instrument"] == PERP
        time.sleep(0.3)
        assert running.orders() == []
        server.instruments["BTC"][0] = {**server.instruments["BTC"][0], "tick_size": 0.5}
        server.push("instrument.state.future.BTC", {"instrument_name": PERP, "state": "started",
                                                    "timestamp": now_ms()})
        def sold() -> list[Any]:
            running.market.sane()  # its channels are subscribed now: the market reaches it
            return server.calls("private/sell")

        [order] = wait_until(sold, 15.0, "a hedge once the perpetual is listed sanely")
        assert order.params["instrument_name"] == PERP and order.params["amount"] == pytest.approx(60_000.0)
    finally:
        try:
            desk.stop()
        finally:
            server.stop()
