"""The Console actor on a fed bus (no exchange): what it publishes for each line, what piped lines
wait for, what it prints, and the piped terminal's start, end and no-input behaviour."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pykka
import pytest
import structlog
from rich.console import Console as RichConsole

from actors.console import Console
from config.settings import Settings
from console.desk_state import DeskState, ScriptWait, startup_stages
from console.grammar import HelpOn, Plot, Quit, Show, parse_line
from console.lines import plot_request
from console.orders import reference_mark
from console.terminal import Configure, GetStartup, RunLine, Terminal, WaitDone
from console.views import surface_view
from messages.account import OrderUpdate, UserTrade
from messages.commands import (
    CancelAll,
    CommandFailed,
    CommandResult,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
)
from messages.exposure import SetVegaBand, VegaHedgeCode, VegaHedgerControl, VegaHedgerStatus
from messages.hedging import HedgeActivation, HedgeCode, HedgePlan, HedgerControl, HedgerStatus, SetHedgeBand
from messages.market import InstrumentsLoaded, PlatformState, VolatilityIndex
from messages.state import ChainSnapshot, ChainView, ChainViewRequest, TopOfBook
from messages.surface import SurfaceSnapshot, TenorFigures
from messages.system import ConnectionState, ConnectionStatus, ConnectionStatusRequest, ExitStatus, StopRequested
from runtime.actor import ActorContext, handles
from runtime.clock import ShiftedClock, WallClock
from runtime.logs import setup_logging
from tests.support.market import NOW, PERP, btc, open_order, portfolio, position, quote
from tests.support.settings import make_settings
from tests.support.waiting import wait_until


def settings(tmp_path: Any, paper: bool = False, **console: Any) -> Settings:
    """BTC on the perpetual, size multiplier 10, files in ``tmp_path``; ``console`` are ``[console]`` keys."""
    return make_settings({"console.instrument": PERP, "console.size_multiplier": 10.0,
                          **{f"console.{k}": v for k, v in console.items()}},
                         currencies=["BTC"], data_dir=str(tmp_path), paper=paper)


class Harness:
    """A Console actor whose bus is a list, with its output in a string."""

    def __init__(self, tmp_path: Any, stdin: Any = None, terminal: bool = False, paper: bool = False,
                 clock: Any = None, **console: Any) -> None:
        s = settings(tmp_path, paper, **console)
        self.published: list[Any] = []
        self.buffer = io.StringIO()
        out = RichConsole(file=self.buffer, width=160, markup=False, highlight=False, emoji=False)
        self.clock = clock or WallClock()
        context = ActorContext(name="console", clock=self.clock, settings=s, publish=self.published.append)
        self.ref = Console.start(context, stdin=stdin, out=out, interactive=False, terminal=terminal)

    def tell(self, *messages: Any) -> None:
        for message in messages:
            self.ref.tell(message)

    def run(self, line: str, wait: bool = False) -> Any:
        return self.ref.ask(RunLine(line, wait=wait), timeout=10)

    def sent(self, kind: type) -> list[Any]:
        self.ref.ask(GetStartup(), timeout=10)  # a barrier: everything before it was handled
        return [m for m in self.published if isinstance(m, kind)]

    def output(self) -> str:
        self.ref.ask(GetStartup(), timeout=10)
        return self.buffer.getvalue()

    def feed_market(self, bid: float = 59990.0, ask: float = 60000.0, stale: bool = False) -> None:
        self.tell(
            InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW),
            ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, authenticated=True,
                             can_trade=True),
            *[TopOfBook(instrument_name=i.instrument_name, kind="future", bid=bid, bid_amount=1000.0, ask=ask,
                        ask_amount=2000.0, timestamp=0, at=NOW, stale=stale, mark_price=(bid + ask) / 2,
                        index_price=59950.0) for i in btc() if i.kind == "future"],
            portfolio(),
            # The option keeper's count: every option book synced.
            ChainView(currency="BTC", at=self.clock.now(), request_id=0, index_price=59950.0,
                      books=sum(1 for i in btc() if i.kind == "option"),
                      synced=sum(1 for i in btc() if i.kind == "option")),
        )


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def test_startup_stages_follow_the_bus(tmp_path: Any) -> None:
    desk = DeskState(["BTC"])
    assert [s.done for s in startup_stages(desk)] == [False] * 5
    desk.on_connection(ConnectionStatus(state=ConnectionState.AUTHENTICATED, venue="x", at=NOW))
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    stages = startup_stages(desk)
    assert [s.done for s in stages] == [True, True, False, False, False]
    # The 8 futures and the 390 options: until their keeper counts them, every option book is unsynced.
    assert stages[3].name == "books synced (0 of 398)"
    desk.on_connection(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="x", at=NOW, can_trade=True))
    for i in btc():
        if i.kind == "future":
            desk.on_top(TopOfBook(instrument_name=i.instrument_name, kind="future", bid=1.0, bid_amount=1, ask=2.0,
                                  ask_amount=1, timestamp=0, at=NOW, stale=i.instrument_name == PERP))
    assert startup_stages(desk)[3].name == "books synced (7 of 398)"
    desk.on_chain_view(ChainView(currency="BTC", at=NOW, request_id=1, index_price=None, books=390, synced=388))
    stages = startup_stages(desk)
    assert (stages[3].name, stages[3].completed, stages[3].total) == ("books synced (395 of 398)", 395, 398)
    desk.on_top(TopOfBook(instrument_name=PERP, kind="future", bid=1.0, bid_amount=1, ask=2.0, ask_amount=1,
                          timestamp=0, at=NOW))
    desk.on_portfolio(portfolio())
    assert not startup_stages(desk)[3].done  # two option books still syncing
    desk.on_chain_view(ChainView(currency="BTC", at=NOW + 0.25, request_id=2, index_price=None, books=390,
                                 synced=390))
    assert startup_stages(desk)[3].name == "books synced (398 of 398)"
    assert all(s.done for s in startup_stages(desk))
    desk.on_connection(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="x", at=NOW))
    assert not startup_stages(desk)[2].done


def test_an_order_line_publishes_exactly_its_orders(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.run("a2")
    h.run("as1 1000")
    orders = h.sent(PlaceOrder)
    assert [(o.side, o.amount, o.type, o.price, o.post_only, o.time_in_force, o.label) for o in orders] == [
        ("buy", 20.0, "limit", 60060.0, False, "immediate_or_cancel", "manual_api_1"),
        ("buy", 10.0, "limit", 1000.0, True, "good_til_cancelled", "manual_api_2"),
    ]
    assert all(o.origin == "console" for o in orders)
    assert "sent: buy 20 BTC-PERPETUAL limit 60,060.0 IOC [manual_api_1]" in h.output()


def test_labels_continue_after_the_highest_open_one(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(portfolio(orders=(open_order("o1", "manual_api_41"), open_order("o2", "web"))))
    h.run("as1 1000")
    assert h.sent(PlaceOrder)[0].label == "manual_api_42"


def test_nothing_is_sent_for_a_bad_line_stale_data_or_a_lost_link(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    assert h.run("a200c").error
    assert h.run("a2 5 6").error
    h.feed_market(stale=True)
    assert h.run("a2").error
    h.feed_market()
    h.tell(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="simulator", at=NOW))
    assert h.run("a2").error
    assert h.sent(PlaceOrder) == []
    text = h.output()
    assert "not understood, nothing sent: last letter is c" in text
    assert "a ladder needs a count" in text
    assert "stale" in text and "not connected" in text


def test_paper_mode_prints_orders_and_sends_none(tmp_path: Any) -> None:
    h = Harness(tmp_path, paper=True)
    h.feed_market()
    h.run("a2")
    h.run("ca")
    assert h.sent(PlaceOrder) == [] and h.sent(CancelAll) == []
    assert "paper (not sent): buy 20 BTC-PERPETUAL limit 60,060.0 IOC [manual_api_1]" in h.output()


def test_the_reference_mark() -> None:
    top = TopOfBook(instrument_name=PERP, kind="future", bid=59990.0, bid_amount=1, ask=60010.0, ask_amount=1,
                    timestamp=0, at=NOW, mark_price=60003.0)
    assert reference_mark(top, 3.0) == 60003.0
    no_ticker = msgspec.structs.replace(top, mark_price=None)
    assert reference_mark(no_ticker, 3.0) == 60000.0
    assert reference_mark(no_ticker, 0.01) is None  # a spread of 0.033% is wider than 0.01%
    assert reference_mark(msgspec.structs.replace(no_ticker, ask=None), 3.0) is None


def test_a_piped_order_waits_for_its_answer_and_for_the_portfolio(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(portfolio(positions=(position(30.0),)))
    outcome = h.run("a2", wait=True)
    assert outcome.wait_key is not None
    order = h.sent(PlaceOrder)[0]
    assert h.ref.ask(WaitDone(outcome.wait_key)) is False
    filled = OrderUpdate(order_id="42", instrument_name=PERP, order_state="filled", order_type="limit",
                         direction="buy", amount=20.0, price=60060.0, filled_amount=20.0, average_price=60000.0,
                         label=order.label, time_in_force="immediate_or_cancel")
    trade = UserTrade(trade_id="t1", order_id="42", instrument_name=PERP, timestamp=0, direction="buy",
                      price=60000.0, amount=20.0, fee=0.0, fee_currency="BTC", label=order.label)
    h.tell(CommandResult(request_key=order.request_key, origin="console", method="private/buy", result="{}",
                         order=filled, trades=(trade,)))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is False  # the portfolio still shows 30
    h.tell(trade, portfolio(positions=(position(50.0),)))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    text = h.output()
    # One line per fill (the answer carried it; the same fill published after is not said again),
    # and the order's own line says what became of it, without the limit price.
    assert [line for line in text.splitlines() if "filled" in line] == [
        "filled: buy 20 BTC-PERPETUAL @ 60,000.0 [manual_api_1], fee 0.00000000 BTC",
        "order manual_api_1: buy 20 BTC-PERPETUAL: filled 20 of 20 (id 42)"]
    assert [line for line in text.splitlines() if "60,060" in line] == [
        "sent: buy 20 BTC-PERPETUAL limit 60,060.0 IOC [manual_api_1]"]


def test_a_piped_line_gives_up_after_its_timeout(tmp_path: Any) -> None:
    h = Harness(tmp_path, order_wait_s=0.2)
    h.feed_market()
    outcome = h.run("as1 1000", wait=True)
    time.sleep(0.3)
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    assert "still waiting for answer to console-" in h.output()


def test_a_refused_order_ends_the_wait_and_says_why(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    outcome = h.run("as1 1000", wait=True)
    order = h.sent(PlaceOrder)[0]
    h.tell(CommandFailed(request_key=order.request_key, origin="console", method="private/buy", code=10009,
                         message="not_enough_funds"))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    assert "rejected by the exchange (10009): not_enough_funds" in h.output()


def test_cancel_all_waits_until_the_orders_are_gone(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(portfolio(orders=(open_order("o1", "manual_api_1"), open_order("o2", "other"))))
    outcome = h.run("ca", wait=True)
    cancel = h.sent(CancelAll)[0]
    assert cancel == CancelAll(origin="console", request_key=cancel.request_key)
    h.tell(CommandResult(request_key=cancel.request_key, origin="console", method="private/cancel_all",
                         result="2"))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is False
    h.tell(portfolio())
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    assert "cancelled 2 orders" in h.output()


def test_hedging_commands_go_to_the_hedger(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    outcome = h.run("activate delta hedging", wait=True)
    h.run("setHedgeDeltaStep:0.01")
    control = h.sent(HedgerControl)[0]
    assert (control.action, control.currency, control.origin) == ("activate", "BTC", "console")
    assert h.sent(SetHedgeBand)[0].max_delta_mismatch == 0.01
    assert h.ref.ask(WaitDone(outcome.wait_key)) is False
    h.tell(HedgerStatus(currency="BTC", active=True, instrument=PERP, mode="options_vs_hedge", band=0.0025, at=NOW,
                        options_delta=0.1, hedge_delta=-0.1, mismatch=0.0, request_key=control.request_key))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    h.run("status")
    text = h.output()
    assert "hedger BTC: active on BTC-PERPETUAL" in text
    assert re.search(r"│ BTC\s*│ active\s*│ BTC-PERPETUAL\s*│\s*0.0025 │", text)  # the status table


def test_vega_hedging_commands_go_to_the_hedger_and_its_status_is_shown(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    refused = h.run("setVegaTenor:30")  # the band is not known yet: nothing sent
    assert refused.error and h.sent(SetVegaBand) == []
    outcome = h.run("activate vega hedging", wait=True)
    [control] = h.sent(VegaHedgerControl)
    assert (control.action, control.currency, control.origin) == ("activate", "BTC", "console")
    assert h.ref.ask(WaitDone(outcome.wait_key)) is False
    h.tell(VegaHedgerStatus(currency="BTC", active=True, band_usd=2000.0, tenor_days=30.0, at=NOW, vega=-1234.5,
                            option="BTC-26DEC26-60000-C", code=VegaHedgeCode.WITHIN_BAND, orders_today=2,
                            request_key=control.request_key))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    assert "vega hedger BTC: active, band 2,000 around 0 USD/vol pt, tenor 30 d, option BTC-26DEC26-60000-C" \
        in h.output()
    h.run("setVegaBand:1500,7")
    h.run("setVegaTenor:14")  # the band it last said
    h.run("vega hedging status")
    h.run("deactivate vega hedging")
    [first, second] = h.sent(SetVegaBand)
    assert (first.band_usd, first.tenor_days, second.band_usd, second.tenor_days) == (1500.0, 7.0, 2000.0, 14.0)
    assert [c.action for c in h.sent(VegaHedgerControl)] == ["activate", "status", "deactivate"]
    h.tell(VegaHedgerStatus(currency="BTC", active=False, band_usd=2000.0, tenor_days=30.0, at=NOW,
                            code=VegaHedgeCode.SWITCHED_OFF, alert="3 vega hedge orders failed in a row"))
    h.run("status")
    text = h.output()
    assert "ALERT vega hedger BTC switched itself off: 3 vega hedge orders failed in a row" in text
    assert "vega hedger BTC: inactive" in text  # the line in the hedger panel


def hedger_status(**fields: Any) -> HedgerStatus:
    values: dict[str, Any] = {"currency": "BTC", "active": False, "instrument": PERP, "mode": "options_vs_hedge",
                              "band": 0.0025, "at": NOW, **fields}
    return HedgerStatus(**values)


def test_a_confirmation_names_the_plan_shown_and_the_activation_says_the_console_trades_the_hedge(
        tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    outcome = h.run("activate delta hedging", wait=True)
    [control] = h.sent(HedgerControl)
    plan = HedgePlan(plan_id=4, at=NOW, expires_at=NOW + 60, instrument=PERP, code=HedgeCode.TRADE, reason="r",
                     side="sell", amount=3000.0, order_type="market", hedge_position=3000.0)
    h.tell(hedger_status(activation=HedgeActivation.AWAITING_CONFIRMATION, plan=plan, request_key=control.request_key,
                         message="plan 4: first order: sell 3,000 USD of BTC-PERPETUAL (market); NOT on yet"))
    assert h.ref.ask(WaitDone(outcome.wait_key)) is True
    assert "hedger BTC: awaiting confirmation on BTC-PERPETUAL" in h.output()
    assert "NOTE: the console trades BTC-PERPETUAL, the hedger's instrument" in h.output()
    h.run("activate delta hedging confirm")
    confirm = h.sent(HedgerControl)[-1]
    assert (confirm.action, confirm.plan_id, confirm.currency) == ("confirm", 4, "BTC")


def test_an_order_on_the_active_hedgers_instrument_needs_the_override_word(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(hedger_status(active=True, activation=HedgeActivation.ACTIVE))
    assert h.run("a2", wait=True).error
    assert h.sent(PlaceOrder) == []
    assert "refused, nothing sent: the BTC delta hedger owns BTC-PERPETUAL" in h.output()
    assert "or the same line ending with override" in h.output()
    h.run("a2 override")
    [order] = h.sent(PlaceOrder)
    assert (order.instrument_name, order.side, order.amount) == (PERP, "buy", 20.0)
    assert "override: sending on BTC-PERPETUAL although the hedger owns it" in h.output()
    h.run("ca")  # cancels are never refused
    assert len(h.sent(CancelAll)) == 1


def test_the_hedgers_alert_stays_on_screen_until_acknowledged(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.run("ack")
    assert "no hedger alert to acknowledge" in h.output() and h.sent(HedgerControl) == []
    alert = "the portfolio never showed the fill of hedge-7; hedging switched off"
    h.tell(hedger_status(alert=alert, message=alert))
    line = f"ALERT hedger BTC switched itself off: {alert} (type ack to acknowledge)"
    assert h.output().count(line) == 1  # said when it came
    h.run("price")
    h.run("orders")
    assert h.output().count(line) == 3  # and again under each line's output
    h.run("status")
    assert h.output().count(line) == 4  # in the status view, once
    h.run("ack")
    [ack] = h.sent(HedgerControl)
    assert (ack.action, ack.currency) == ("acknowledge", "")  # every hedger's
    h.tell(hedger_status(message="alert acknowledged by console; hedging is off", request_key=ack.request_key))
    h.run("price")
    assert h.output().count(line) == 4


def test_information_tables(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(portfolio(positions=(position(20.0),), orders=(open_order("o9", "manual_api_3"),)))
    for line in ("positions", "orders", "funds", "price", "connection status", "show size multiplier", "help"):
        h.run(line)
    text = h.output()
    assert re.search(r"BTC-PERPETUAL\s+long\s+20\s+60,000.0 ", text)
    assert "manual_api_3" in text and "o9" in text and "post-only" in text
    assert "9.500000" in text  # available funds
    assert "59,990" in text and "60,000" in text
    assert "connection: subscribed to simulator, logged in, trading allowed" in text
    assert "size multiplier: 10" in text
    assert "a100 16000 18000 10" in text


def test_cancel_shortcuts_on_the_actor(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.run("cb")
    assert "nothing sent: no open manual buy orders to cancel" in h.output()
    h.tell(portfolio(orders=(open_order("o1", "manual_api_1"), open_order("o2", "manual_api_2", "sell", 90000.0))))
    h.run("cs")
    h.run("cc")
    sent = [m for m in h.published if type(m).__name__ in ("CancelOrder", "CancelByLabel")]
    assert [(type(m).__name__, getattr(m, "order_id", getattr(m, "label", ""))) for m in sent] == [
        ("CancelOrder", "o2"), ("CancelByLabel", "manual_api_2")]


def test_surface_view(tmp_path: Any) -> None:  # the chain's tables: tests/unit/test_tables.py
    surface = SurfaceSnapshot(currency="BTC", at=NOW, method="svi", index_price=31900.0, quotes=(), points=(),
                              fits=(), tenors=(TenorFigures(tenor_days=7, atm_iv=80.1, rr25=-3.2, bf25=1.1),
                                               TenorFigures(tenor_days=30, atm_iv=78.0, rr25=-2.0, bf25=0.9)),
                              variance_index=79.5, atm_iv_30d=78.0, rr25_30d=-2.0, bf25_30d=0.9)
    out = io.StringIO()
    RichConsole(file=out, width=160).print(surface_view(surface, "BTC"))
    text = out.getvalue()
    assert "80.10" in text and "-3.20" in text and "variance index 79.50" in text
    assert "DVOL (Deribit) not received yet" in text
    out = io.StringIO()
    dvol = VolatilityIndex(index_name="btc_usd", volatility=81.37, timestamp=int(NOW * 1000))
    RichConsole(file=out, width=200).print(surface_view(surface, "BTC", dvol))
    assert "variance index 79.50; DVOL (Deribit) 81.37 at" in out.getvalue()
    assert "INCOMPLETE" not in out.getvalue()


def test_surface_view_says_when_a_minute_is_incomplete() -> None:
    incomplete = SurfaceSnapshot(currency="BTC", at=NOW, method="svi", index_price=31900.0, quotes=(), points=(),
                                 fits=(), tenors=(), variance_index=None, atm_iv_30d=None, surface_ok=False,
                                 coverage=0.0, complete=False, listed=604, usable=0)
    out = io.StringIO()
    RichConsole(file=out, width=200).print(surface_view(incomplete, "BTC"))
    text = " ".join(out.getvalue().split())
    assert "INCOMPLETE minute: 0 of 604 listed options two-sided with a ticker (coverage 0.00)" in text
    assert "no surface" in text


def test_dvol_and_a_platform_lock_on_the_actor(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    h.tell(VolatilityIndex(index_name="btc_usd", volatility=55.5, timestamp=int(time.time() * 1000)))
    h.tell(PlatformState(price_index="btc_usd", locked=True))
    h.tell(PlatformState(price_index="btc_usd", locked=True))  # said once
    assert h.output().count("ALERT: Deribit locked trading on btc_usd") == 1
    h.run("status")
    assert "Deribit has locked trading on btc_usd: no new orders there" in h.output()
    h.run("surface")
    assert "DVOL (Deribit) 55.50" in h.output()
    h.tell(PlatformState(price_index="btc_usd", locked=False))
    assert "Deribit unlocked trading on btc_usd" in h.output()


def test_option_orders_use_the_chosen_contract(tmp_path: Any) -> None:
    # An hour before the put's expiry (24SEP21 08:00 UTC): an expired option is never traded.
    h = Harness(tmp_path, clock=ShiftedClock(1632470400.0 - 3600 - time.time()))
    h.feed_market()
    assert h.run("buyOption:0.05,1").error
    h.run("setContractType:BTC-24SEP21-40000-P")
    assert h.run("buyOption:0.05,1").error
    assert "no live quote for BTC-24SEP21-40000-P yet" in h.output()
    put = msgspec.structs.replace(quote(40000, "put", 0.28, 0.29), instrument_name="BTC-24SEP21-40000-P")
    h.tell(ChainSnapshot(currency="BTC", kind="option", at=h.clock.now(), index_price=31900.0, options=(put,)))
    assert h.run("buyOption:0.2812,1.25").error  # a minute's snapshot does not price an order
    # The console asks the BTC option keeper for the chosen option.
    asked = wait_until(lambda: [r for r in h.sent(ChainViewRequest) if r.names], 5, "a request naming the option")
    assert (asked[-1].currency, asked[-1].names) == ("BTC", ("BTC-24SEP21-40000-P",))
    h.tell(ChainView(currency="BTC", at=h.clock.now(), request_id=asked[-1].request_id, index_price=31900.0,
                     options=(put,)))
    h.run("buyOption:0.2812,1.25")
    order = h.sent(PlaceOrder)[0]
    assert (order.instrument_name, order.side, order.amount, order.price, order.type, order.post_only) == (
        "BTC-24SEP21-40000-P", "buy", 1.2, 0.281, "limit", False)


# -- the piped terminal ----------------------------------------------------------------------------------
def pipe_with(lines: str) -> Any:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r")
    writer = os.fdopen(write_fd, "w")
    writer.write(lines)
    writer.flush()
    return reader, writer


def test_piped_lines_run_in_order_and_end_of_input_stops(tmp_path: Any) -> None:
    reader, writer = pipe_with("positions\nbogus line\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    text = h.output()
    assert text.index("> positions") < text.index("> bogus line") < text.index("not understood, nothing sent")
    assert "start-up: portfolio reconciled" in text
    assert "trading BTC-PERPETUAL, size multiplier 10 (a1 = 10 USD)" in text
    stop = next(m for m in h.published if isinstance(m, StopRequested))
    assert stop.origin == "console" and "end of console input" in stop.reason


def test_no_input_at_all_keeps_the_program_running(tmp_path: Any) -> None:
    reader, writer = pipe_with("")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    time.sleep(0.5)
    assert not any(isinstance(m, StopRequested) for m in h.published)
    assert h.ref.is_alive()


def test_instrument_and_multiplier_read_from_the_pipe_when_not_given(tmp_path: Any) -> None:
    reader, writer = pipe_with("btc-perpetual\n5\nshow size multiplier\nquit\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0, instrument="", size_multiplier=0.0)
    h.feed_market()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    text = h.output()
    assert "futures: 1 BTC-PERPETUAL" in text
    assert "size multiplier: 5" in text
    assert next(m for m in h.published if isinstance(m, StopRequested)).reason == "quit"


def test_an_unlisted_instrument_in_a_script_stops_with_a_reason(tmp_path: Any) -> None:
    reader, writer = pipe_with("a2\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0, instrument="BTC-1JAN30")
    h.feed_market()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    # What was given, what is listed; exit status 2 (a bad argument), not a session that ran.
    assert "--instrument BTC-1JAN30: not a listed future of BTC; listed: BTC-PERPETUAL" in h.output()
    assert [m.status for m in h.published if isinstance(m, StopRequested)] == [ExitStatus.USAGE]
    assert h.sent(PlaceOrder) == []


class Boom:
    """Makes the test console raise, as a bug would."""


def crash_test_market() -> tuple[Any, ...]:
    return (ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, authenticated=True,
                             can_trade=True),
            InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW),
            TopOfBook(instrument_name=PERP, kind="future", bid=59990.0, bid_amount=1, ask=60000.0, ask_amount=1,
                      timestamp=0, at=NOW, mark_price=59995.0),
            portfolio())


class CrashingConsole(Console):
    """A console that raises on :class:`Boom`. It takes the market in ``on_start``, before its
    terminal can send it a line: a line typed while the actor before it was dead comes at once,
    and told from the test after ``start`` the market could come after that line."""

    def on_start(self) -> None:
        for message in crash_test_market():
            self.on_receive(message)
        super().on_start()

    @handles(Boom)
    def on_boom(self, _message: Boom) -> None:
        raise RuntimeError("boom")


class FreshConsole(Console):
    """A console that starts with no market at all, as a restarted one does: what was published
    before it joined the bus is not sent again."""


def test_a_restarted_console_keeps_its_terminal(tmp_path: Any) -> None:
    """The terminal thread outlives its actor: the restarted actor re-attaches it, is told the
    instrument and multiplier again, and the next piped line runs on it."""
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    s = settings(tmp_path, startup_timeout_s=1.0, order_wait_s=0.5)
    published: list[Any] = []
    buffer = io.StringIO()
    out = RichConsole(file=buffer, width=160, markup=False, highlight=False, emoji=False)

    def start() -> pykka.ActorRef:
        context = ActorContext(name="console", clock=WallClock(), settings=s, publish=published.append)
        return CrashingConsole.start(context, stdin=reader, out=out, interactive=False)

    first = start()
    wait_until(lambda: "trading BTC-PERPETUAL" in buffer.getvalue())
    first.tell(Boom())
    wait_until(lambda: not first.is_alive())
    writer.write("as1 1000\n")
    writer.flush()
    second = start()
    wait_until(lambda: any(isinstance(m, PlaceOrder) for m in published))
    order = next(m for m in published if isinstance(m, PlaceOrder))
    assert (order.amount, order.price, order.label) == (10.0, 1000.0, "manual_api_1")
    assert [t.name for t in threading.enumerate()].count("console-terminal") == 1
    writer.close()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in published))
    second.stop()


def test_a_restarted_console_is_configured_with_what_was_chosen_at_the_prompt(tmp_path: Any) -> None:
    """The terminal tells a restarted actor the instrument (by name, though it was chosen by its
    number) and the multiplier chosen at start-up; the actor, which has no market yet, asks for
    the link's state, then for the instrument lists, and trades once they are back."""
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    s = settings(tmp_path, startup_timeout_s=1.0, order_wait_s=0.5, instrument="", size_multiplier=0.0)
    published: list[Any] = []
    buffer = io.StringIO()
    out = RichConsole(file=buffer, width=160, markup=False, highlight=False, emoji=False)
    context = ActorContext(name="console", clock=WallClock(), settings=s, publish=published.append)

    first = CrashingConsole.start(context, stdin=reader, out=out, interactive=False)
    listing = wait_until(lambda: re.search(r"futures: .*\b(\d+) BTC-PERPETUAL\b", buffer.getvalue()))
    writer.write(f"{listing[1]}\n20\n")  # the perpetual by its number in the list
    writer.flush()
    wait_until(lambda: "trading BTC-PERPETUAL, size multiplier 20" in buffer.getvalue())
    terminal = Terminal.running_on(reader)
    assert terminal is not None
    wait_until(lambda: (terminal.instrument, terminal.size_multiplier) == (PERP, 20.0))  # what it will tell again
    assert not any(isinstance(m, ConnectionStatusRequest) for m in published)
    first.tell(Boom())
    wait_until(lambda: not first.is_alive())
    asked = len([m for m in published if isinstance(m, RefreshInstruments)])

    second = FreshConsole.start(context, stdin=reader, out=out, interactive=False)
    wait_until(lambda: [m.origin for m in published if isinstance(m, ConnectionStatusRequest)] == ["console"])
    second.tell(crash_test_market()[0])  # the link's answer: subscribed
    wait_until(lambda: len([m for m in published if isinstance(m, RefreshInstruments)]) == asked + 1)
    for message in crash_test_market()[1:]:  # the lists it asked for, and the market
        second.tell(message)
    writer.write("as1 1000\n")
    writer.flush()
    wait_until(lambda: any(isinstance(m, PlaceOrder) for m in published))
    order = next(m for m in published if isinstance(m, PlaceOrder))
    assert (order.instrument_name, order.amount, order.price) == (PERP, 20.0, 1000.0)
    writer.close()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in published))
    second.stop()


def test_what_was_published_before_the_console_joined_is_asked_for_again(tmp_path: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actors.console.RECONCILE_AFTER_S", 0.0)
    h = Harness(tmp_path)
    h.tell(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, authenticated=True,
                            can_trade=True))
    refresh = h.sent(RefreshInstruments)
    assert [(r.origin, r.currencies) for r in refresh] == [("console", ("BTC",))]
    h.ref.ask(GetStartup())
    h.ref.ask(GetStartup())
    assert [(r.origin, r.currencies) for r in h.sent(ReconcilePortfolio)] == [("console", ("BTC",))]
    # With the lists and a reconciled portfolio in hand it asks for nothing.
    h2 = Harness(tmp_path)
    h2.feed_market()
    h2.tell(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, can_trade=True))
    h2.ref.ask(GetStartup())
    assert h2.sent(RefreshInstruments) == [] and h2.sent(ReconcilePortfolio) == []


def test_plot_in_the_console_takes_the_chosen_currency_and_names_its_file(tmp_path: Any) -> None:
    """``plot`` alone (it asked for the command line's --what, --currency and --out): the chosen
    future's currency, a smile, a file under the data directory whose name it prints."""
    h = Harness(tmp_path)
    h.run("plot")
    match = re.search(r"plotting the BTC smile of the last recorded minute into (\S+\.png)", h.output())
    assert match is not None, h.output()
    out = Path(match[1])
    assert out.parent == tmp_path / "plots" and re.fullmatch(r"BTC-smile-\d{8}-\d{6}\.png", out.name), out
    # main.py plot ran with every flag it needs: it answers about the (empty) database, not the flags.
    wait_until(lambda: "cannot plot" in h.buffer.getvalue(), timeout=60)
    assert "does not exist" in h.output() and "usage:" not in h.output()
    assert h.run("plot eth").error
    assert "plot takes one of the desk's currencies (BTC), got ETH" in h.output()


def test_the_plot_request_of_each_kind() -> None:
    at = dt.datetime(2026, 12, 7, 6, 50, 1, tzinfo=dt.UTC).timestamp()
    out, args = plot_request(Plot("smile", "26DEC26"), "ETH", "data", at)
    assert out == Path("data/plots/ETH-smile-26DEC26-20261207-065001.png")
    assert args == ("--what", "smile", "--currency", "ETH", "--out", str(out), "--expiry", "26DEC26")
    out, args = plot_request(Plot("heatmap"), "BTC", "/d", at)
    assert out == Path("/d/plots/BTC-heatmap-20261207-065001.png") and args[:4] == ("--what", "surface",
                                                                                      "--currency", "BTC")


def test_completion_of_commands_and_instrument_names() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from console.terminal import Choices, CommandCompleter

    futures = tuple(i for i in btc() if i.kind == "future")
    options = tuple(i.instrument_name for i in btc() if i.kind == "option")

    class Source:
        choices = Choices(futures, options, PERP, 10.0)
        asking_instrument = False

    def complete(text: str) -> list[str]:
        return [c.text for c in CommandCompleter(Source).get_completions(Document(text), CompleteEvent())]

    assert complete("act") == ["activate delta hedging", "activate delta hedging confirm", "activate vega hedging"]
    assert set(complete("c")) >= {"ca", "cc", "cb", "cs", "cstops", "connection status", "change instrument"}
    assert sorted(complete("setContractType:BTC-24SEP21-40000-")) == ["setContractType:BTC-24SEP21-40000-C",
                                                              "setContractType:BTC-24SEP21-40000-P"]
    assert "chain 24SEP21" in complete("chain 2")
    Source.asking_instrument = True
    assert complete("BTC-P") == [PERP]


# -- one bad line never ends the console --------------------------------------------------------------------
def test_a_failure_while_handling_a_line_is_said_and_the_console_goes_on(tmp_path: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_args: Any) -> Any:
        raise ValueError("cannot round nan")

    monkeypatch.setattr("console.orders.orders_for", failing)  # a bug in what an order line becomes
    h = Harness(tmp_path)
    h.feed_market()
    with structlog.testing.capture_logs() as logs:
        outcome = h.run("a2")
        h.output()
    assert outcome.error and not outcome.quit
    assert "error while handling 'a2': ValueError: cannot round nan (traceback in the log)" in h.output()
    [failed] = [e for e in logs if e["event"] == "console_line_failed"]
    assert failed["line"] == "a2" and failed["error"] == "ValueError: cannot round nan" and failed["exc_info"]
    assert h.run("ca").wait_key is None and len(h.sent(CancelAll)) == 1  # the next lines run as ever
    assert h.run("quit").quit
    assert [m.reason for m in h.published if isinstance(m, StopRequested)] == ["quit"]
    assert h.ref.is_alive() and h.sent(PlaceOrder) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e9, 0.0, -1.0])
def test_a_size_multiplier_out_of_range_is_refused_and_the_old_one_kept(tmp_path: Any, value: float) -> None:
    h = Harness(tmp_path)
    h.feed_market()
    error = h.ref.ask(Configure(None, value), timeout=10)
    assert error is not None and "size multiplier" in error and "at most 100,000" in error
    h.run("show size multiplier")
    assert "size multiplier: 10" in h.output()
    h.run("a2")
    assert [o.amount for o in h.sent(PlaceOrder)] == [20.0]


def test_a_failure_while_a_piped_line_waits_is_said_and_the_script_goes_on(tmp_path: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_self: ScriptWait, _state: Any) -> list[str]:
        raise RuntimeError("broken wait")

    monkeypatch.setattr(ScriptWait, "missing", broken)
    reader, writer = pipe_with("as1 1000\npositions\nquit\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    text = h.output()
    assert "error while handling 'as1 1000': RuntimeError: broken wait; see the log" in text
    assert text.index("> as1 1000") < text.index("> positions") < text.index("> quit")
    assert [m.reason for m in h.published if isinstance(m, StopRequested)] == ["quit"]


# -- the faults of issue 18 that need the actor (the others: test_console_faults.py) ---------------------
def test_the_console_says_each_fill_once_then_the_order(tmp_path: Any) -> None:
    """Two fills of one order: a line each (price to the tick, fee), then the order's line without
    its limit; the same fills published again from user.trades are not said twice."""
    h = Harness(tmp_path)
    h.feed_market()
    h.run("a2")
    order = h.sent(PlaceOrder)[0]

    def fill(trade_id: str, price: float, amount: float, fee: float) -> UserTrade:
        return UserTrade(trade_id=trade_id, order_id="42", instrument_name=PERP, timestamp=0, direction="buy",
                         price=price, amount=amount, fee=fee, fee_currency="BTC", label=order.label, liquidity="T")

    first, second = fill("t1", 59999.5, 5.0, 0.00000017), fill("t2", 60000.0, 15.0, 0.0000005)
    filled = OrderUpdate(order_id="42", instrument_name=PERP, order_state="filled", order_type="limit",
                         direction="buy", amount=20.0, price=60060.0, filled_amount=20.0, average_price=59999.875,
                         label=order.label, time_in_force="immediate_or_cancel")
    h.tell(CommandResult(request_key=order.request_key, origin="console", method="private/buy", result="{}",
                         order=filled, trades=(first, second)))
    h.tell(first, second)  # the same fills from user.trades
    lines = [line for line in h.output().splitlines() if not line.startswith("sent: ")]
    assert lines == [
        "filled: buy 5 BTC-PERPETUAL @ 59,999.5 [manual_api_1], fee 0.00000017 BTC, taker",
        "filled: buy 15 BTC-PERPETUAL @ 60,000.0 [manual_api_1], fee 0.00000050 BTC, taker",
        "order manual_api_1: buy 20 BTC-PERPETUAL: filled 20 of 20 (id 42)",
    ]


class TerminalText(io.StringIO):
    """A stderr that says it is a terminal (as it is when a script is piped in by hand)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[TerminalText]:
    err = TerminalText()
    monkeypatch.setattr(sys, "stderr", err)
    setup_logging(None, "info", console=True)
    try:
        yield err
    finally:
        setup_logging(None, "warning", console=False)
        logging.getLogger().setLevel(logging.WARNING)


def test_a_piped_line_is_echoed_once_when_stderr_is_a_terminal(tmp_path: Any,
                                                               stderr_on_a_terminal: TerminalText) -> None:
    reader, writer = pipe_with("connection status\nshow size multiplier\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    screen = h.output() + stderr_on_a_terminal.getvalue()
    assert screen.count("connection status") == 1, screen  # "> connection status", not the log's record too
    assert screen.count("show size multiplier") == 1, screen
    assert "> connection status" in screen and "connection: subscribed to simulator" in screen


def test_exit_question_mark_and_help_of_one_command(tmp_path: Any) -> None:
    assert parse_line("exit") == Quit() and parse_line("EXIT") == Quit()
    assert parse_line("?") == Show("help")
    assert parse_line("help chain") == HelpOn(("chain [CURRENCY] [EXPIRY]",))
    h = Harness(tmp_path)
    h.feed_market()
    h.run("?")
    h.run("help chain")
    text = h.output()
    assert "Trading (a buys, d sells" in text
    chain_help = text.split("chain [CURRENCY] [EXPIRY]  (information)")[1]
    assert "the live option chain of one currency and expiry" in chain_help
    example = re.search(r"example: chain (\w+)", chain_help)
    assert example is not None and any(f"-{example[1]}-" in i.instrument_name for i in btc()), chain_help
    assert not h.run("help nothing").quit and "help knows no command 'nothing'" in h.output()
    assert h.run("exit").quit


def test_the_console_holds_a_typo_back_and_sends_it_on_override(tmp_path: Any) -> None:
    h = Harness(tmp_path)
    h.feed_market()  # bid 59990, ask 60000
    assert h.run("as1 60100").error
    assert h.sent(PlaceOrder) == []
    assert "held back: looks like a typo: a post-only buy at 60,100.0 is at or above the ask 60,000.0" in h.output()
    assert not h.run("as1 60100 override").error
    assert [(o.price, o.post_only) for o in h.sent(PlaceOrder)] == [(60100.0, True)]
    assert "override: sending as typed although a post-only buy at 60,100.0 is at or above the ask" in h.output()


# -- exit statuses of a piped session ----------------------------------------------------------------------
def stops(h: Harness) -> list[tuple[str, ExitStatus]]:
    wait_until(lambda: any(isinstance(m, StopRequested) for m in h.published))
    h.output()  # a barrier
    return [(m.reason, m.status) for m in h.published if isinstance(m, StopRequested)]


@pytest.mark.parametrize(("lines", "status"), [
    ("positions\nquit\n", ExitStatus.OK),
    ("positions\n", ExitStatus.OK),
    ("positions\nbogus line\nquit\n", ExitStatus.FAILED),
    ("a2c\npositions\n", ExitStatus.FAILED),
])
def test_a_piped_session_ends_with_status_1_when_a_line_was_refused(tmp_path: Any, lines: str,
                                                                     status: ExitStatus) -> None:
    reader, writer = pipe_with(lines)
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    [(_reason, got)] = stops(h)  # one stop: a piped quit is the terminal's, with the session's status
    assert got is status
    assert ("exit status 1" in h.output()) == (status is ExitStatus.FAILED)


def test_a_piped_session_with_an_order_the_exchange_rejected_ends_with_status_1(tmp_path: Any) -> None:
    reader, writer = pipe_with("a2\npositions\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0)
    h.feed_market()
    wait_until(lambda: any(isinstance(m, PlaceOrder) for m in h.published))
    order = next(m for m in h.published if isinstance(m, PlaceOrder))
    h.tell(CommandFailed(request_key=order.request_key, origin="console", method="private/buy", code=10009,
                         message="not_enough_funds"))
    assert stops(h) == [("end of console input", ExitStatus.FAILED)]
    assert "rejected by the exchange (10009)" in h.output()


@pytest.mark.parametrize("word", ["quit", "exit"])
@pytest.mark.parametrize("question", ["instrument", "multiplier"])
def test_quit_at_a_piped_question_stops_cleanly(tmp_path: Any, word: str, question: str) -> None:
    reader, writer = pipe_with(f"{word}\n" if question == "instrument" else f"BTC-PERPETUAL\n{word}\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=5.0, instrument="", size_multiplier=0.0)
    h.feed_market()
    assert stops(h) == [("quit", ExitStatus.OK)]
    assert "not a listed future" not in h.output() and "not a plain decimal" not in h.output()


def test_an_unreachable_venue_is_said_once_and_stops_with_status_1_after_the_startup_timeout(tmp_path: Any) -> None:
    reader, writer = pipe_with("BTC-PERPETUAL\n10\npositions\n")
    writer.close()
    h = Harness(tmp_path, stdin=reader, terminal=True, startup_timeout_s=1.5)
    for attempt in range(1, 6):
        h.tell(ConnectionStatus(state=ConnectionState.CONNECTING, venue="simulator", at=NOW, attempt=attempt),
               ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="simulator", at=NOW, attempt=attempt,
                                detail="cannot connect to ws://127.0.0.1:1/ws/api/v2: [Errno 111] Connection "
                                       "refused; retrying in 0.1 s"))
    [(reason, status)] = stops(h)
    text = h.output()
    assert status is ExitStatus.FAILED and "not reachable within the start-up timeout (1.5 s" in reason
    assert text.count("cannot reach the simulator venue") == 1 and "Connection refused" in text
    assert "Check the network, the URL" in text and "> positions" not in text


def test_status_shows_the_run_id_of_the_json_log(tmp_path: Any) -> None:
    import os

    from runtime.logs import run_id

    h = Harness(tmp_path)
    h.feed_market()
    h.run("status")
    assert f"run {run_id()} (pid {os.getpid()})" in h.output()
