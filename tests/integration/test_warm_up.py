"""An idle link's warm-up (``deribit.warm_up_ms``): the path from a frame to an order is run again
without its effects, in the link thread, and nothing is sent, numbered, changed or logged."""

from __future__ import annotations

import importlib
import pkgutil
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actors
from actors.connection import Connection
from actors.hedger import Hedger
from deribit.transport import WebsocketTransport
from desk.hedging import CurrencyHedger
from messages.commands import PlaceOrder
from messages.market import Quote, Ticker
from messages.system import ConnectionState, WarmUp
from runtime.actor import Actor, ActorContext, handles
from runtime.supervisor import ActorSpec
from tests.support.connection_harness import Desk, connection_settings
from tests.support.hedge_rig import Rig, option_ticker
from tests.support.scripted_server import ScriptedServer

CALL = "BTC-1JAN00-60000-C"


class GetWarmUps(msgspec.Struct, frozen=True):
    """Ask the WarmUpProbe what it saw."""


class WarmUpProbe(Actor):
    """Counts warm-ups and names the threads they ran in; each takes ``sleep_s``."""

    sleep_s = 0.0

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.threads: set[str] = set()
        self.count = 0

    @handles(WarmUp, immediate=True)
    def on_warm_up(self, _warm_up: WarmUp) -> None:
        self.count += 1
        self.threads.add(threading.current_thread().name)
        if self.sleep_s:
            time.sleep(self.sleep_s)

    @handles(GetWarmUps)
    def on_ask(self, _ask: GetWarmUps) -> tuple[int, set[str]]:
        return self.count, set(self.threads)


class WarmUpFails(WebsocketTransport):
    """A real websocket whose warm-up raises (a bug in it must not cost the link)."""

    def warm_up(self, frame: bytes | str) -> None:
        raise RuntimeError("a bug in the warm-up")


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def start_desk(tmp_path: Path, url: str, values: Mapping[str, Any] | None = None, /, *,
               transport: type[WebsocketTransport] = WebsocketTransport, hedger: bool = False) -> Desk:
    """The Connection on ``transport`` with the probes (and the Hedger); ``values`` are dotted settings keys."""
    return Desk.start(connection_settings(tmp_path, values), url, transport=transport, extra_specs=[
        ActorSpec("warm_up_probe", lambda ctx: WarmUpProbe.start(ctx)),
        *([ActorSpec("hedger", lambda ctx: Hedger.start(ctx))] if hedger else []),
    ])


def warm_ups(desk: Desk) -> tuple[int, set[str]]:
    ref = desk.supervisor.refs()["warm_up_probe"]
    assert ref is not None
    return ref.ask(GetWarmUps(), timeout=10)


def test_an_idle_link_warms_the_path_up_in_its_own_thread_and_sends_nothing(
        tmp_path: Path, server: ScriptedServer) -> None:
    desk = start_desk(tmp_path, server.url, {"deribit.warm_up_ms": 1.0})
    try:
        desk.wait_state(ConnectionState.SUBSCRIBED)
        # Market data to decode again: a ticker, a quote and a book change.
        server.push(f"ticker.{CALL}.100ms", server.ticker(CALL))
        server.push("quote.BTC-PERPETUAL", {"instrument_name": "BTC-PERPETUAL", "timestamp": 1,
                                            "best_bid_price": 60000.0, "best_bid_amount": 10.0,
                                            "best_ask_price": 60000.5, "best_ask_amount": 10.0})
        desk.wait_seen(Ticker)
        desk.wait_seen(Quote)
        before = len(server.calls())
        seen = {name: desk.counts().get(name, 0) for name in ("Ticker", "Quote", "BookChange", "BookSnapshot")}
        count, threads = desk.wait_until(lambda: (w := warm_ups(desk))[0] >= 50 and w, 10, "50 warm-ups")
        assert threads == {"connection-link"}, threads
        desk.wait_until(lambda: warm_ups(desk)[0] >= count + 50, 10, "50 more warm-ups")
        assert len(server.calls()) == before, [c.method for c in server.calls()[before:]]
        # The frames decoded again are not published again (they would look fresh to the Hedger).
        assert {name: desk.counts().get(name, 0) for name in seen} == seen
        assert not desk.log_events("warm_up_failed")

        # A real order afterwards takes the next request id: the warm-ups numbered nothing.
        desk.publish(PlaceOrder(instrument_name=CALL, side="buy", amount=0.1, price=0.05, origin="test",
                                request_key="o-1"))
        desk.wait_answer("o-1")
        ids = [c.id for c in server.calls() if c.id is not None]
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids
        assert [c.method for c in server.calls()[before:]] == ["private/buy"]
    finally:
        desk.stop()


def test_no_warm_ups_when_off(tmp_path: Path, server: ScriptedServer) -> None:
    desk = start_desk(tmp_path, server.url, {"deribit.warm_up_ms": 0.0})
    try:
        desk.wait_state(ConnectionState.SUBSCRIBED)
        time.sleep(0.3)
        assert warm_ups(desk) == (0, set())
    finally:
        desk.stop()


def test_a_failing_warm_up_is_logged_and_switched_off_and_the_link_goes_on(
        tmp_path: Path, server: ScriptedServer) -> None:
    desk = start_desk(tmp_path, server.url, {"deribit.warm_up_ms": 1.0}, transport=WarmUpFails)
    try:
        desk.wait_state(ConnectionState.SUBSCRIBED)
        failed = desk.wait_log("warm_up_failed")
        assert failed["level"] == "error" and "a bug in the warm-up" in failed["error"]
        assert "trading is not affected" in failed["detail"]
        time.sleep(0.1)
        count, _threads = warm_ups(desk)
        time.sleep(0.2)
        assert warm_ups(desk)[0] == count, "warm-ups go on after a failure"
        assert len(desk.log_events("warm_up_failed")) == 1
        server.push("ticker.BTC-PERPETUAL.100ms", server.ticker("BTC-PERPETUAL", mark_price=61000.0))
        desk.wait_seen(Ticker, lambda t: t.mark_price == 61000.0)
        assert [s.state for s in desk.statuses()].count(ConnectionState.DISCONNECTED) == 0
    finally:
        desk.stop()


def test_warm_ups_take_at_most_a_twentieth_of_the_idle_time(
        tmp_path: Path, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each takes 2 ms (as a decision over a few hundred options would): one every 40 ms at most,
    # not every millisecond.
    monkeypatch.setattr(WarmUpProbe, "sleep_s", 0.002)
    desk = start_desk(tmp_path, server.url, {"deribit.warm_up_ms": 1.0})
    try:
        desk.wait_state(ConnectionState.SUBSCRIBED)
        desk.wait_until(lambda: warm_ups(desk)[0] >= 1, 10, "a warm-up")
        first = warm_ups(desk)[0]
        time.sleep(1.0)
        assert 5 <= warm_ups(desk)[0] - first <= 1.0 / 0.040 + 3
    finally:
        desk.stop()


def test_a_failing_warm_up_in_the_hedger_is_logged_once_and_does_not_fail_it(
        tmp_path: Path, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_self: CurrencyHedger, _now: float) -> None:
        raise ZeroDivisionError("a bug in the hedger's warm-up")

    monkeypatch.setattr(CurrencyHedger, "warm_up", broken)
    desk = start_desk(tmp_path, server.url, {"deribit.warm_up_ms": 1.0}, hedger=True)
    try:
        desk.wait_state(ConnectionState.SUBSCRIBED)
        failed = desk.wait_log("warm_up_failed")
        assert failed["actor"] == "hedger" and failed["level"] == "error"
        assert "ZeroDivisionError: a bug in the hedger's warm-up" in failed["error"] and failed["traceback"]
        count = warm_ups(desk)[0]
        desk.wait_until(lambda: warm_ups(desk)[0] >= count + 50, 10, "the link's warm-ups going on")
        assert len(desk.log_events("warm_up_failed")) == 1
        assert "ActorFailed" not in desk.counts()
        assert desk.supervisor.refs()["hedger"] is not None
    finally:
        desk.stop()


def test_the_hedgers_warm_up_changes_publishes_and_numbers_nothing() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, hedge_size=-20_000.0, delta=0.5)  # balanced: nothing sent
    assert rig.sent() == []
    # The portfolio is being reconciled, the delta moves: the decision would trade, the gate holds it back.
    rig.portfolio(reconciled=False)
    rig.h.on_ticker(option_ticker(0.6), rig.now)
    assert rig.h.current_decision(rig.now).trade
    out, events = len(rig.out), len(rig.log.events)
    state = {name: repr(value) for name, value in vars(rig.h).items()}
    for _ in range(3):
        rig.h.warm_up(rig.now)
    assert {name: repr(value) for name, value in vars(rig.h).items()} == state
    assert len(rig.out) == out and len(rig.log.events) == events
    # Reconciled, the order it decides is the first one numbered.
    rig.portfolio(reconciled=True)
    rig.tick()
    rig.h.on_ticker(option_ticker(0.6), rig.now)
    [command] = rig.sent()
    assert command.label == "hedge-1" and command.side == "sell" and command.amount == 4000.0


def _program_actors() -> set[type[Actor]]:
    for module in pkgutil.iter_modules(actors.__path__):
        importlib.import_module(f"actors.{module.name}")
    found: set[type[Actor]] = set()
    pending = list(Actor.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__.startswith("actors."):
            found.add(cls)
    return found


def test_every_actor_that_takes_warm_up_takes_it_immediately() -> None:
    # Published every few milliseconds while the link is idle: a queued handler would fill its inbox.
    program = _program_actors()
    assert {Connection, Hedger} <= program
    takers = {cls for cls in program if cls._handler_of(WarmUp) is not None}
    assert takers == {Hedger}
    assert all(cls.handles_immediately(WarmUp) for cls in takers)
