"""Live option data for the console: a book family's ChainView (expiry, names, counts, the ticker's
IVs and volume), the option keeper answering over the bus, the focused chain (ChainFocus, its
strike window, the requests each refresh), ``chain [CURRENCY] [EXPIRY]``, and option orders priced
on the live quote, hostile values refused."""

from __future__ import annotations

import io
import math
import re
from typing import Any

import pytest
import structlog
from rich.console import Console as RichConsole

from actors.bookkeeper import BookKeeper, GetBookStats
from console.chain_focus import ChainFocus, chain_due, expiry_ms_of, focused_chain, live_requests
from console.desk_state import DeskState
from console.grammar import OptionOrder, ParseError, ShowChain, parse_line
from console.lines import LineRunner
from console.orders import Refusal, Trading
from console.terminal import RunLine
from console.views import price_view
from desk.book_family import BookFamily
from messages.account import Position
from messages.market import BookChange, BookSnapshot, Greeks, Instrument, InstrumentsLoaded, Ticker, TickerStats
from messages.state import ChainView, ChainViewRequest
from messages.system import ConnectionState, ConnectionStatus
from runtime.actor import ActorContext
from runtime.bus import Bus
from runtime.clock import ReplayClock
from tests.support import capture
from tests.support.market import LIMITS, NOW, PERP, btc, btc_futures, portfolio
from tests.support.settings import make_settings

CALL = "BTC-24SEP21-40000-C"
PUT = "BTC-24SEP21-30000-P"
OTHER_EXPIRY = "BTC-31DEC21-50000-C"
SEP = 1_632_470_400_000  # 24 Sep 2021 08:00 UTC
EXPIRIES = (1627027200000, 1627113600000, 1627632000000, 1628236800000, 1628841600000, 1630051200000, SEP,
            1640937600000, 1648195200000, 1656057600000)  # of the capture's BTC options


def snap(name: str, change_id: int, bid: float = 0.01, ask: float = 0.02) -> BookSnapshot:
    return BookSnapshot(instrument_name=name, timestamp=change_id, change_id=change_id,
                        bids=(("new", bid, 1.0),), asks=(("new", ask, 2.0),))


def ticker(name: str, mark: float = 0.015) -> Ticker:
    return Ticker(instrument_name=name, timestamp=1, state="open", mark_price=mark, mark_iv=71.5,
                  bid_iv=70.1, ask_iv=72.9, underlying_price=32_500.0, index_price=32_400.0, open_interest=12.0,
                  stats=TickerStats(volume=42.5), greeks=Greeks(delta=0.2, gamma=0.0001, vega=30.0, theta=-20.0))


def family_of_three() -> BookFamily:
    family = BookFamily("BTC", "option")
    for i, name in enumerate((OTHER_EXPIRY, CALL, PUT)):
        family.on_snapshot(snap(name, i + 1), NOW)
        family.on_ticker(ticker(name), NOW)
    return family


# -- the keeper's answer --------------------------------------------------------------------------------
def test_a_chain_view_holds_the_expiry_asked_the_names_asked_and_the_counts() -> None:
    family = family_of_three()
    view = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP, request_id=7), NOW + 1)
    assert [q.instrument_name for q in view.options] == [PUT, CALL]  # the expiry's, by strike
    assert (view.currency, view.at, view.request_id, view.expiries) == ("BTC", NOW + 1, 7, (SEP, 1640937600000))
    assert (view.books, view.synced, view.price_currency) == (3, 3, "BTC")
    call = view.options[1]
    assert (call.bid, call.ask, call.mark_price, call.mark_iv, call.delta) == (0.01, 0.02, 0.015, 71.5, 0.2)
    assert (call.bid_iv, call.ask_iv, call.volume_24h) == (70.1, 72.9, 42.5)
    # Names: this family's, once each, merged in order; other families' and unknown names ignored.
    named = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP, names=(
        OTHER_EXPIRY, CALL, OTHER_EXPIRY, "ETH-24SEP21-2000-C", "BTC-24SEP21-99000-C")), NOW + 1)
    assert [q.instrument_name for q in named.options] == [PUT, CALL, OTHER_EXPIRY]
    only_names = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None, names=(CALL,)), NOW + 1)
    assert [q.instrument_name for q in only_names.options] == [CALL]
    counts = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None), NOW + 1)
    assert counts.options == () and (counts.books, counts.synced) == (3, 3)
    # A gap makes a book stale: counted, and the quote says so.
    family.on_change(BookChange(instrument_name=PUT, timestamp=9, change_id=9, prev_change_id=8), NOW + 2)
    view = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP), NOW + 2)
    assert (view.books, view.synced) == (3, 2) and [q.stale for q in view.options] == [True, False]
    # The minute's snapshot carries the ticker's IVs and volume too.
    snapshot = family.chain_snapshot(NOW + 60, NOW + 60)
    assert [q.instrument_name for q in snapshot.options] == [PUT, CALL, OTHER_EXPIRY]
    assert (snapshot.options[1].bid_iv, snapshot.options[1].ask_iv, snapshot.options[1].volume_24h) == (
        70.1, 72.9, 42.5)


def test_the_expiry_index_follows_instruments_that_come_and_go() -> None:
    family = family_of_three()
    assert [q.instrument_name for q in family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP),
                                                          NOW).options] == [PUT, CALL]
    new = "BTC-24SEP21-35000-C"
    family.on_snapshot(snap(new, 5), NOW)
    family.instrument_state(PUT, "closed", NOW)
    view = family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP), NOW)
    assert [q.instrument_name for q in view.options] == [new, CALL] and view.books == 3
    family.drop_expired(SEP / 1000)
    assert family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP), NOW).options == ()
    assert family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None), NOW).expiries == (1640937600000,)


class Published:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.messages.append(message)


def test_only_the_currency_s_option_keeper_answers_a_chain_view_request() -> None:
    bus = Bus()
    published = {key: Published() for key in (("BTC", "option"), ("BTC", "future"), ("ETH", "option"))}
    refs = []
    try:
        for (currency, kind), out in published.items():
            context = ActorContext(name=f"books-{currency}-{kind}", clock=ReplayClock(NOW), settings=make_settings({}),
                                   publish=out)
            ref = BookKeeper.start(context, currency=currency, kind=kind)  # type: ignore[arg-type]
            refs.append(ref)
            bus.register(context.name, ref, BookKeeper.subscriptions())
        bus.publish(snap(CALL, 1))
        bus.publish(ChainViewRequest(currency="BTC", expiry_ms=SEP, names=(PERP,), request_id=3))
        for ref in refs:
            ref.ask(GetBookStats(), timeout=5)  # a barrier: the request was handled
    finally:
        for ref in refs:
            ref.stop()
    views = {key: [m for m in out.messages if isinstance(m, ChainView)] for key, out in published.items()}
    [view] = views[("BTC", "option")]
    assert (view.request_id, [q.instrument_name for q in view.options], view.books, view.synced) == (3, [CALL], 1, 1)
    assert views[("BTC", "future")] == [] and views[("ETH", "option")] == []


# -- the focused chain ----------------------------------------------------------------------------------
def both_currencies() -> DeskState:
    desk = DeskState(["BTC", "ETH"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    desk.on_instruments(InstrumentsLoaded(currency="ETH", instruments=capture.instruments("ETH"), at=NOW))
    return desk


def test_the_focus_moves_between_expiries_and_currencies() -> None:
    desk = both_currencies()
    focus = ChainFocus(("BTC", "ETH"), strikes=11)
    assert (focus.currency, focus.expiry(desk, NOW)) == ("BTC", EXPIRIES[0])  # the nearest at first
    assert focus.previous_expiry(desk, NOW) == EXPIRIES[0]  # stays at the first
    assert [focus.next_expiry(desk, NOW) for _ in range(10)] == [*EXPIRIES[1:], EXPIRIES[-1]]
    assert focus.previous_expiry(desk, NOW) == EXPIRIES[-2]
    # An expiry that passed gives way to the next one listed.
    focus.expiry_ms = EXPIRIES[0]
    assert focus.expiry(desk, EXPIRIES[0] / 1000) == EXPIRIES[1]
    assert focus.next_currency(desk) == "ETH" and focus.expiry_ms is None and focus.expiry(desk, NOW) == EXPIRIES[0]
    assert focus.next_currency(desk) == "BTC"
    # chain ETH 24SEP21, chain 31DEC21 (the same currency), chain BTC (its nearest).
    assert focus.choose("ETH", "24SEP21", desk, NOW) is None
    assert (focus.currency, focus.expiry(desk, NOW)) == ("ETH", SEP)
    assert focus.choose(None, "31DEC21", desk, NOW) is None
    assert (focus.currency, focus.expiry(desk, NOW)) == ("ETH", 1640937600000)
    assert focus.choose("BTC", None, desk, NOW) is None
    assert (focus.currency, focus.expiry(desk, NOW)) == ("BTC", EXPIRIES[0])
    # What is not listed is refused, the focus unchanged.
    assert focus.choose("SOL", None, desk, NOW) == "SOL is not one of the desk's currencies (BTC, ETH)"
    error = focus.choose("ETH", "25SEP21", desk, NOW)
    assert error is not None and error.startswith("no ETH options expire on 25SEP21; listed: 23JUL21, 24JUL21")
    assert (focus.currency, focus.expiry_ms) == ("BTC", None)
    assert "no BTC options listed yet" in (ChainFocus(("BTC",), 5).choose(None, None, DeskState(["BTC"]), NOW) or "")
    # Chosen by the trader: the traded future's currency no longer moves it.
    focus.follow("ETH")
    assert focus.currency == "BTC"
    fresh = ChainFocus(("BTC", "ETH"), strikes=11)
    fresh.follow("ETH")
    assert fresh.currency == "ETH"
    assert expiry_ms_of("24SEP21") == SEP


def chain_strikes(text: str) -> list[str]:
    """The strike column of a rendered chain (the ATM one as ``>32,000<``)."""
    return [m.group(1) for line in text.splitlines()
            if (m := re.search(r"\s(>?\d{1,3}(?:,\d{3})+<?)\s", line)) and "fwd" not in line]


def test_the_strike_window_centres_on_the_forward() -> None:
    family = BookFamily("BTC", "option")
    names = [i.instrument_name for i in btc() if i.kind == "option" and i.expiration_timestamp == SEP]
    for n, name in enumerate(names):
        family.on_snapshot(snap(name, n + 1), NOW)
        family.on_ticker(ticker(name), NOW)
    desk = both_currencies()
    desk.on_chain_view(family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP), NOW))
    focus = ChainFocus(("BTC", "ETH"), strikes=2)
    assert focus.choose(None, "24SEP21", desk, NOW) is None
    out = io.StringIO()
    RichConsole(file=out, width=160).print(focused_chain(desk, focus, NOW))
    text = out.getvalue()
    assert "fwd 32,500.00" in text  # the tickers' underlying price
    assert chain_strikes(text) == ["30,000", ">32,000<", "34,000", "36,000"]


def test_each_refresh_asks_each_option_family_once_and_nothing_before_the_lists() -> None:
    focus = ChainFocus(("BTC", "ETH"), strikes=11)
    assert live_requests(DeskState(["BTC", "ETH"]), focus, CALL, NOW, 1) == ()
    desk = both_currencies()
    option_position = Position(instrument_name=PUT, kind="option", direction="sell", size=-2.0, average_price=0.01,
                               mark_price=0.01)
    desk.on_portfolio(portfolio(positions=(option_position,)))
    requests = live_requests(desk, focus, CALL, NOW, 5)
    assert requests == (
        ChainViewRequest(currency="BTC", expiry_ms=EXPIRIES[0], names=(CALL, PUT), request_id=5),
        ChainViewRequest(currency="ETH", expiry_ms=None, names=(), request_id=5),
    )


def test_chain_shows_the_focused_expiry_s_window_only() -> None:
    desk = both_currencies()
    focus = ChainFocus(("BTC", "ETH"), strikes=2)
    assert focus.choose(None, "24SEP21", desk, NOW) is None
    family = BookFamily("BTC", "option")
    for n, i in enumerate(btc()):
        if i.kind == "option":
            family.on_snapshot(snap(i.instrument_name, n + 1), NOW)
            family.on_ticker(ticker(i.instrument_name), NOW)
    out = io.StringIO()
    RichConsole(file=out, width=160).print(focused_chain(desk, focus, NOW))
    assert "no live BTC quotes for 24SEP21 yet" in out.getvalue()  # never the minute's snapshot
    desk.on_chain_view(family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=SEP), NOW))
    out = io.StringIO()
    RichConsole(file=out, width=160).print(focused_chain(desk, focus, NOW + 1))
    text = out.getvalue()
    assert "BTC 24SEP21" in text and "31DEC21" not in text
    assert chain_strikes(text) == ["30,000", ">32,000<", "34,000", "36,000"]


def test_a_chain_line_that_moves_the_focus_asks_at_once_and_prints_when_the_answer_comes() -> None:
    desk = both_currencies()
    said: list[Any] = []
    published: list[Any] = []
    clock = [NOW]
    settings = make_settings({}, currencies=["BTC", "ETH"])
    runner = LineRunner(settings, desk, Trading(LIMITS, key_prefix="k-", paper=False, trading_allowed=True),
                        origin="console", say=lambda message, style="": said.append(message),
                        publish=published.append, log=structlog.get_logger(), now=lambda: clock[0],
                        out=RichConsole(file=io.StringIO()))
    outcome = runner.run(RunLine("chain ETH 24SEP21", wait=True))
    assert outcome.wait_key is not None and not outcome.error and said == []
    assert published == [ChainViewRequest(currency="BTC", expiry_ms=None, request_id=0),
                         ChainViewRequest(currency="ETH", expiry_ms=SEP, request_id=0)]
    assert not runner.wait_done(outcome.wait_key)  # a piped line waits for the chain
    assert chain_due(desk, runner.focus, NOW + 0.1) is None  # nothing in yet
    eth = BookFamily("ETH", "option")
    for n, i in enumerate(capture.instruments("ETH")):
        if i.kind == "option" and i.expiration_timestamp == SEP:
            eth.on_snapshot(snap(i.instrument_name, n + 1), NOW)
    desk.on_chain_view(eth.chain_view(published[1], NOW + 0.2))
    shown = chain_due(desk, runner.focus, NOW + 0.2)
    out = io.StringIO()
    RichConsole(file=out, width=160).print(shown)
    assert "ETH 24SEP21" in out.getvalue() and runner.wait_done(outcome.wait_key)
    # Focused and live: printed at once. A focus whose answer never comes prints what there is, once.
    said.clear()
    clock[0] = NOW + 0.3
    assert runner.run(RunLine("chain", wait=True)).wait_key is None and len(said) == 1
    assert runner.run(RunLine("chain BTC", wait=True)).wait_key is not None
    assert chain_due(desk, runner.focus, NOW + 0.8) is None
    late = chain_due(desk, runner.focus, NOW + 1.3)  # LIVE_ANSWER_WAIT_S after the line
    assert late is not None
    out = io.StringIO()
    RichConsole(file=out, width=160).print(late)
    assert "no live BTC quotes for 23JUL21 yet" in out.getvalue()
    assert chain_due(desk, runner.focus, NOW + 1.4) is None


@pytest.mark.parametrize(("line", "command"), [
    ("chain", ShowChain()), ("chain 24sep21", ShowChain("24SEP21")), ("chain eth", ShowChain(None, "ETH")),
    ("chain ETH 26DEC26", ShowChain("26DEC26", "ETH")), ("chain sol_usdc 26dec26", ShowChain("26DEC26", "SOL_USDC")),
])
def test_chain_takes_a_currency_and_an_expiry(line: str, command: ShowChain) -> None:
    assert parse_line(line) == command


@pytest.mark.parametrize(("line", "error"), [
    ("chain 26DEC26 ETH", "the currency comes before the expiry"), ("chain ETH 26DEC26 x", "at most a currency"),
    ("chain ETH 32DEC26", "bad expiry"), ("chain E-TH", "is not a currency"),
])
def test_chain_refuses_what_it_cannot_read(line: str, error: str) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, ParseError) and error in str(parsed)


# -- trading on the live quote --------------------------------------------------------------------------
def trading_desk() -> tuple[DeskState, Trading]:
    desk = DeskState(["BTC"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    desk.on_connection(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, can_trade=True))
    desk.on_portfolio(portfolio())
    trading = Trading(LIMITS, key_prefix="k-", paper=False, trading_allowed=True)
    assert trading.configure(PERP, 10.0, btc_futures()) is None
    assert trading.choose_option(CALL, desk) is None
    return desk, trading


def listed(name: str) -> Instrument:
    return next(i for i in btc() if i.instrument_name == name)


@pytest.mark.parametrize(("hostile", "refusal"), [
    ("nan mark", "not a price"), ("zero mark", "not a price"), ("negative mark", "not a price"),
    ("infinite mark", "not a price"), ("crossed book", "stale"), ("gap", "stale"), ("no snapshot", "stale"),
    ("no ticker", "no mark price"),
])
def test_an_option_order_from_hostile_live_data_is_refused(hostile: str, refusal: str) -> None:
    family = BookFamily("BTC", "option")
    desk, trading = trading_desk()
    mark = {"nan mark": math.nan, "zero mark": 0.0, "negative mark": -0.01, "infinite mark": math.inf}.get(hostile,
                                                                                                         0.015)
    if hostile != "no snapshot":
        family.on_snapshot(snap(CALL, 1), NOW)
    if hostile != "no ticker":
        family.on_ticker(ticker(CALL, mark), NOW)
    if hostile == "crossed book":
        family.on_change(BookChange(instrument_name=CALL, timestamp=2, change_id=2, prev_change_id=1,
                                    bids=(("new", 0.03, 1.0),)), NOW)
    if hostile == "gap":
        family.on_change(BookChange(instrument_name=CALL, timestamp=5, change_id=5, prev_change_id=4), NOW)
    desk.on_chain_view(family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None, names=(CALL,)), NOW))
    refused = trading.orders(OptionOrder("buy", 0.015, 1.0), desk, NOW + 0.5)
    assert isinstance(refused, Refusal) and refusal in str(refused), str(refused)


def test_an_option_order_is_accepted_on_a_fresh_live_quote_before_any_minute() -> None:
    family = BookFamily("BTC", "option")
    desk, trading = trading_desk()
    line = OptionOrder("sell", 0.0398, 1.0)
    refused = trading.orders(line, desk, NOW)
    assert isinstance(refused, Refusal) and str(refused).startswith(f"no live quote for {CALL} yet. wait a second")
    family.on_snapshot(snap(CALL, 1), NOW)
    family.on_ticker(ticker(CALL, 0.03974563), NOW)
    desk.on_chain_view(family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None, names=(CALL,)), NOW))
    orders = trading.orders(line, desk, NOW + 0.25)
    assert isinstance(orders, tuple) and [(o.instrument_name, o.side, o.price) for o in orders] == [
        (CALL, "sell", 0.04)]
    assert desk.chains == {}  # no minute snapshot came
    # price shows the live mark, as the ticker has it.
    out = io.StringIO()
    RichConsole(file=out, width=160).print(price_view(desk, PERP, CALL, NOW + 0.25))
    assert "0.0397" in out.getvalue() and "live" in out.getvalue()
    # Dropped from the list: its live quote goes with it, and a late answer does not bring it back.
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=tuple(
        i for i in btc() if i.instrument_name != CALL), at=NOW))
    assert desk.option_quote(CALL, NOW + 0.5) is None and CALL not in desk.live_options
    desk.on_chain_view(family.chain_view(ChainViewRequest(currency="BTC", expiry_ms=None, names=(CALL,)), NOW + 1))
    assert desk.option_quote(CALL, NOW + 1) is None


def test_the_console_s_live_lookup_is_fresh_or_nothing_and_never_goes_back_in_time() -> None:
    family = family_of_three()
    desk = DeskState(["BTC"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    request = ChainViewRequest(currency="BTC", expiry_ms=SEP)
    early = family.chain_view(request, NOW)
    family.on_ticker(ticker(CALL, 0.02), NOW + 1)
    late = family.chain_view(request, NOW + 1)
    desk.on_chain_view(late)
    desk.on_chain_view(early)  # arrives after the newer one: dropped
    quote = desk.option_quote(CALL, NOW + 1.5)
    assert quote is not None and quote.mark_price == 0.02
    assert desk.option_quote(CALL, NOW + 3.5) is None  # the keeper stopped answering: no live quote
    assert desk.option_quote(CALL, NOW) is None  # an answer from the future of the clock is no quote either
    assert desk.option_quote(OTHER_EXPIRY, NOW + 1.5) is None  # never asked for

