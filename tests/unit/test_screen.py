"""The full-screen console, headless: the Console actor on a fed bus, the terminal thread's screen
driven by prompt_toolkit's pipe input into a fixed 120x40 output; what each pane shows, the keys,
a typed line and its output, the chain's refresh after a new quote, quitting, and an actor restart
under the screen."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from rich.console import Console as RichConsole

from actors.console import Console
from console.chain_focus import ChainFocus
from console.desk_state import DeskState
from console.screen import KEYS_TEXT
from console.screen_frame import MessageLog, Renderer, pane_heights, render_frame
from console.terminal import GetStartup, Terminal
from desk.risk import AccountCheck, CurrencyRisk, Exposure, RiskBucket
from messages.account import Position
from messages.commands import PlaceOrder
from messages.hedging import HedgerStatus
from messages.market import IndexPrice, InstrumentsLoaded
from messages.state import ChainSnapshot, ChainView, ChainViewRequest, OptionQuote, TopOfBook
from messages.system import ConnectionState, ConnectionStatus, StopRequested
from runtime.actor import ActorContext
from runtime.clock import ShiftedClock
from tests.support.capture import instruments
from tests.support.market import NOW, PERP, open_order, portfolio
from tests.support.screen import KEYS, fixed_output, pane, screen_rows
from tests.support.settings import make_settings
from tests.support.waiting import wait_until

FIRST = 1627027200000  # 23JUL21, the capture's nearest expiry
SECOND = 1627113600000  # 24JUL21


def option_quote(strike: float, kind: str, bid: float, expiry_ms: int = FIRST, stale: bool = False) -> OptionQuote:
    name = f"BTC-{'23JUL21' if expiry_ms == FIRST else '24JUL21'}-{strike:g}-{kind[0].upper()}"
    return OptionQuote(instrument_name=name, expiry_ms=expiry_ms, strike=strike, option_type=kind,  # type: ignore[arg-type]
                       bid=bid, bid_amount=1.0, ask=bid + 0.001, ask_amount=2.0, mark_price=bid + 0.0005,
                       mark_iv=81.25, underlying_price=32050.0, index_price=32000.0, open_interest=10.0, delta=0.5,
                       gamma=None, vega=None, theta=None, age_s=0.1, stale=stale)


def chain(bid: float = 0.0123, expiry_ms: int = FIRST) -> ChainSnapshot:
    quotes = tuple(option_quote(k, t, bid, expiry_ms) for k in (30000.0, 32000.0, 34000.0) for t in ("call", "put"))
    return ChainSnapshot(currency="BTC", kind="option", at=NOW, index_price=32000.0, options=quotes)


def market_messages() -> list[Any]:
    hedger = HedgerStatus(currency="BTC", active=True, instrument="BTC-24SEP21", mode="options_vs_hedge",  # type: ignore[arg-type]
                          band=0.0025, at=NOW, options_delta=0.4321, hedge_delta=-0.4301, mismatch=0.002)
    long = Position(instrument_name=PERP, kind="future", direction="buy", size=200.0, average_price=31990.0,
                    mark_price=32010.0, delta=0.00625)
    return [
        InstrumentsLoaded(currency="BTC", instruments=instruments("BTC"), at=NOW),
        InstrumentsLoaded(currency="ETH", instruments=instruments("ETH"), at=NOW),
        ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, authenticated=True,
                         can_trade=True),
        TopOfBook(instrument_name=PERP, kind="future", bid=32000.0, bid_amount=1000.0, ask=32000.5,
                  ask_amount=2000.0, timestamp=int(NOW * 1000), at=NOW + 3600, mark_price=32000.2, index_price=32000.1),
        IndexPrice(index_name="btc_usd", price=32000.1, timestamp=int(NOW * 1000)),
        portfolio(positions=(long,), orders=(open_order("ORD-77", "console-ladder-1", "sell", 33000.0),)),
        hedger,
        chain(),
    ]


@dataclass
class Desk:
    """The Console actor on a list bus, its terminal thread's screen on a pipe and a 120x40 output."""

    published: list[Any]
    terminal: Terminal
    out: RichConsole
    context: ActorContext
    market: dict[str, float]
    console: list[Any]
    app: Any = None
    screen: Any = None

    def actor_ask(self, message: Any) -> Any:
        return self.terminal.ref.ask(message, timeout=10)

    def rows(self) -> list[str]:
        return screen_rows(self.app)

    def text(self) -> str:
        return "\n".join(self.rows())

    def shows(self, text: str, where: str | None = None) -> bool:
        rows = self.rows()
        if not rows:
            return False
        try:
            shown = pane(rows, where) if where else rows
        except StopIteration:
            return False
        return any(text in row for row in shown)

    def wait_for(self, text: str, where: str | None = None) -> None:
        self.wait(lambda: self.shows(text, where), f"{text!r} in {where}")

    def wait(self, condition: Any, what: str) -> None:
        try:
            wait_until(condition, timeout=10, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.text()}") from None

    def sent(self, kind: type) -> list[Any]:
        self.actor_ask(GetStartup())
        return [m for m in self.published if isinstance(m, kind)]


@pytest.fixture
def desk(tmp_path: Any) -> Iterator[Desk]:
    settings = make_settings({"console.instrument": PERP, "console.size_multiplier": 10.0},
                             currencies=["BTC", "ETH"], data_dir=str(tmp_path))
    published: list[Any] = []
    market = {"bid": 0.0123}  # what the BTC option keeper answers with; tests move it
    console: list[Any] = []
    clock = ShiftedClock(NOW + 3600 - time.time())

    def publish(message: Any) -> None:
        """The bus: kept, and the BTC option keeper's live answer to the console's requests."""
        published.append(message)
        if isinstance(message, ChainViewRequest) and message.currency == "BTC" and console:
            quotes = tuple(q for q in chain(bid=market["bid"]).options if q.expiry_ms == message.expiry_ms)
            console[0].tell(ChainView(currency="BTC", at=clock.now(), request_id=message.request_id,
                                      index_price=32000.0, options=quotes, expiries=(FIRST, SECOND)))

    out = RichConsole(file=io.StringIO(), width=120, markup=False, highlight=False, emoji=False, force_terminal=True)
    context = ActorContext(name="console", clock=clock, settings=settings, publish=publish)
    ref = Console.start(context, stdin=io.StringIO(), out=out, interactive=False, terminal=False)
    console.append(ref)
    terminal = Terminal(ref, io.StringIO(), out, interactive=True, settings=settings,
                        log=structlog.get_logger(actor="test"))
    assert terminal.screen is not None
    terminal.screen.full_screen = True  # what _screen_owns_terminal does on a real terminal
    for message in market_messages():
        ref.tell(message)
    terminal._configure(PERP, 10.0)
    d = Desk(published, terminal, out, context, market, console)
    with create_pipe_input() as pipe:
        failures: list[BaseException] = []
        d.pipe = pipe  # type: ignore[attr-defined]

        def run() -> None:
            try:
                terminal._until_quit(lambda: terminal.run_screen(InMemoryHistory(), input=pipe,
                                                                 output=fixed_output(120, 40)))
            except BaseException as exc:  # the test reports it
                failures.append(exc)

        thread = terminal.thread = threading.Thread(target=run, daemon=True)  # the terminal's thread
        thread.start()
        wait_until(lambda: terminal.app is not None and terminal.app.is_running, timeout=10)
        d.app = terminal.app
        d.thread = thread  # type: ignore[attr-defined]
        d.wait_for("POSITIONS")
        yield d
        terminal.close()
        thread.join(timeout=5)
        assert not failures, failures
    terminal.ref.stop()


def press(d: Desk, *keys: str) -> None:
    for key in keys:
        d.pipe.send_text(KEYS.get(key, key))  # type: ignore[attr-defined]


def test_every_pane_shows_the_desk(desk: Desk) -> None:
    desk.wait_for("index 32,000.10")
    header = desk.rows()[:3]
    assert "simulator" in header[0] and "subscribed" in header[0] and "trading allowed" in header[0], header
    assert any("hedger active" in row for row in header), header
    desk.wait_for(PERP, "POSITIONS")
    assert any("200" in row and "31,990" in row for row in pane(desk.rows(), "POSITIONS"))
    desk.wait_for("0.4321", "HEDGER")
    assert any("BTC" in row and "active" in row and "-0.4301" in row for row in pane(desk.rows(), "HEDGER"))
    desk.wait_for("ORD-77", "OPEN ORDERS")
    assert any("sell" in row and "33,000" in row for row in pane(desk.rows(), "OPEN ORDERS"))
    desk.wait_for("fwd 32,050")  # the keeper's first live answer
    title = next(row for row in desk.rows() if row.startswith(" CHAIN"))
    assert "BTC 23JUL21" in title and "fwd 32,050" in title, title
    chain_rows = pane(desk.rows(), "CHAIN")
    assert any("32,000" in row and "0.0123" in row for row in chain_rows), chain_rows
    assert "F5/F6 expiry" in desk.rows()[-2] and desk.rows()[-1].startswith("BTC-PERPETUAL x10>")


def test_keys_move_the_chain_between_expiries_and_currencies(desk: Desk) -> None:
    desk.wait_for("CHAIN BTC 23JUL21")
    press(desk, "f6")
    desk.wait_for("CHAIN BTC 24JUL21")
    assert desk.shows("no live BTC quotes for 24JUL21 yet", "CHAIN")
    press(desk, "f5")
    desk.wait_for("CHAIN BTC 23JUL21")
    press(desk, "f5")  # the nearest stays the nearest
    press(desk, "f7")
    desk.wait_for("CHAIN ETH")
    press(desk, "f7")
    desk.wait_for("CHAIN BTC 23JUL21")
    # F8: the other columns at 120 wide: mark IV, greeks, open interest and 24 h volume; F8 again: the book.
    press(desk, "f8")
    desk.wait(lambda: desk.shows("vol24h", "CHAIN") and desk.shows("gamma", "CHAIN") and not desk.shows("bsz", "CHAIN"),
              "the activity columns")
    assert any(">32,000<" in row and "81.2" in row for row in pane(desk.rows(), "CHAIN"))  # mark IV 81.25
    press(desk, "f8")
    desk.wait(lambda: desk.shows("bsz", "CHAIN"), "the book columns")
    assert desk.rows()[-1] == "BTC-PERPETUAL x10>"  # the keys typed nothing on the command line


def test_f9_shows_the_currencys_risk_in_the_chain_pane_and_back(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_risk(portfolio: Any, marks: Any, index_price: float | None, now: float) -> CurrencyRisk:
        """The book's futures' delta alone (desk/risk.py is tested on its own)."""
        delta = sum(p.size / 32000.0 for p in portfolio.positions if p.kind == "future")
        futures = Exposure(delta=delta, delta_pa=delta)
        return CurrencyRisk(currency=portfolio.currency, at=now, index_price=index_price,
                            buckets=(RiskBucket("PERPETUAL", None, futures, 1),), options=Exposure(), total=futures,
                            account=(AccountCheck("delta_total", delta, portfolio.delta_total),))

    monkeypatch.setattr("console.risk_view.currency_risk", fake_risk)
    desk.wait_for("CHAIN BTC 23JUL21")
    press(desk, "f9")
    desk.wait_for("RISK BTC  index 32,000  (delta in coin")
    desk.wait(lambda: desk.shows("gamma$/1%", "RISK")
              and desk.shows("exchange (difference ours - exchange): delta_total -", "RISK"), "the risk view")
    perpetual = next(row for row in pane(desk.rows(), "RISK") if row.startswith("PERPETUAL"))
    assert perpetual.split()[:4] == ["PERPETUAL", "1", "0.0063", "200.00"], perpetual  # 200 USD long at 32,000
    press(desk, "f9")
    desk.wait_for("CHAIN BTC 23JUL21")
    assert desk.rows()[-1] == "BTC-PERPETUAL x10>"  # the keys typed nothing on the command line


def test_a_typed_line_runs_and_its_output_is_in_the_messages(desk: Desk) -> None:
    press(desk, "a2", "enter")
    desk.wait_for("BTC-PERPETUAL x10> a2", "MESSAGES")
    desk.wait_for("sent: buy", "MESSAGES")
    [order] = desk.sent(PlaceOrder)
    assert (order.instrument_name, order.side, order.amount) == (PERP, "buy", 20.0)
    assert desk.terminal.screen is not None
    messages = desk.terminal.screen.messages
    lines = messages.lines()[0]
    press(desk, "help", "enter")  # a long output: its last lines are shown, PageUp scrolls back
    desk.wait(lambda: messages.lines()[0] > lines + 20, "help's output")
    desk.wait(lambda: desk.shows("acknowledge", "MESSAGES") or not desk.shows("> help", "MESSAGES"), "the newest")
    assert not desk.shows("> help", "MESSAGES")
    press(desk, "pageup")
    desk.wait_for("MESSAGES (scrolled back")
    press(desk, "end")
    desk.wait(lambda: not desk.shows("scrolled back"), "the newest messages")
    press(desk, "positi", "c-c", "show size multiplier", "enter")  # Ctrl-C cleared the half-typed word
    desk.wait_for("size multiplier: 10", "MESSAGES")
    assert not desk.shows("positisize")
    press(desk, "connec", "\t")  # Tab completes a command word
    desk.wait(lambda: desk.rows()[-1].endswith("> connection status"), "the completed word")
    press(desk, "enter")
    desk.wait_for("connection: subscribed to simulator", "MESSAGES")
    press(desk, "\x1b[A", "\x1b[A", "enter")  # Up twice: the line before last, from the history
    desk.wait(lambda: sum("> show size multiplier" in row for row in messages.lines()[1]) == 2,
              "the line recalled from the history run again")


def test_the_chain_shows_a_new_quote_at_the_next_refresh(desk: Desk) -> None:
    desk.wait_for("0.0123", "CHAIN")
    screen = desk.terminal.desk_screen
    assert screen is not None
    desk.market["bid"] = 0.0456  # the books moved: the keeper's next answer has it
    # The console asks 4 times a second and the screen draws 4 times a second: within a second.
    frames = screen.frames
    wait_until(lambda: screen.frames >= frames + 4, timeout=10)
    assert desk.shows("0.0456", "CHAIN"), desk.text()


def test_quit_and_ctrl_d_stop_the_program(desk: Desk) -> None:
    press(desk, "quit", "enter")
    desk.thread.join(timeout=10)  # type: ignore[attr-defined]
    assert not desk.thread.is_alive()  # type: ignore[attr-defined]
    assert desk.sent(StopRequested)


def test_ctrl_d_on_an_empty_line_quits(desk: Desk) -> None:
    press(desk, "c-d")
    desk.thread.join(timeout=10)  # type: ignore[attr-defined]
    assert not desk.thread.is_alive()  # type: ignore[attr-defined]
    assert [m.reason for m in desk.sent(StopRequested)] == ["quit"]


def test_the_screen_outlives_a_restart_of_its_actor(desk: Desk) -> None:
    desk.wait_for(PERP, "POSITIONS")
    desk.terminal.ref.stop()
    ref = Console.start(desk.context, stdin=io.StringIO(), out=desk.out, interactive=False, terminal=False)
    desk.terminal.attach(ref)
    desk.console[0] = ref  # the keeper answers the new actor
    for message in market_messages():
        ref.tell(message)
    press(desk, "show size multiplier", "enter")
    desk.wait_for("size multiplier: 10", "MESSAGES")  # told again by attach()
    desk.wait_for(PERP, "POSITIONS")


# -- pure parts ----------------------------------------------------------------------------------------------
def test_the_panes_fit_120x40() -> None:
    heights = pane_heights(40, currencies=2)
    assert sum(heights.values()) + 7 == 40  # five title bars, the footer, the command line
    assert heights["chain"] >= 10 and heights["messages"] >= 5 and heights["header"] == 3


def test_the_chain_pane_shows_live_quotes_only() -> None:
    desk = DeskState(["BTC"])
    for message in market_messages():
        if isinstance(message, InstrumentsLoaded) and message.currency == "BTC":
            desk.on_instruments(message)
        elif isinstance(message, ChainSnapshot):
            desk.on_chain(message)
    now = NOW + 3600
    renderer = Renderer()
    before = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now, renderer)
    assert "no live BTC quotes for 23JUL21 yet" in before.chain and "0.0123" not in before.chain  # never a minute old
    live = tuple(option_quote(k, t, 0.0789) for k in (30000.0, 32000.0, 34000.0) for t in ("call", "put"))
    desk.on_chain_view(ChainView(currency="BTC", at=now, request_id=1, index_price=32000.0, options=live))
    after = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now, renderer)
    assert "0.0789" in after.chain and "no live" not in after.chain
    later = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now + 5, renderer)
    assert "0.0789" not in later.chain  # its keeper stopped answering: no cell older than the limit


def test_the_focus_moves_over_listed_expiries() -> None:
    desk = DeskState(["BTC", "ETH"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=instruments("BTC"), at=NOW))
    desk.on_instruments(InstrumentsLoaded(currency="ETH", instruments=instruments("ETH"), at=NOW))
    now = NOW + 3600
    focus = ChainFocus(("BTC", "ETH"), strikes=11)
    assert focus.expiry(desk, now) == FIRST
    assert focus.next_expiry(desk, now) == SECOND and focus.expiry(desk, now) == SECOND
    assert focus.previous_expiry(desk, now) == FIRST
    assert focus.next_currency(desk) == "ETH" and focus.expiry(desk, now) == FIRST
    # Past its expiry the chosen one gives way to the nearest listed.
    assert ChainFocus(("BTC",), strikes=11, expiry_ms=FIRST).expiry(desk, FIRST / 1000 + 1) == SECOND


def test_messages_keep_whole_lines_from_any_writer() -> None:
    log = MessageLog(keep=3)
    log.write("one\ntw")
    assert log.lines() == (1, ("one",))
    log.write("o\nthree\nfour\n")
    assert log.lines() == (4, ("two", "three", "four"))


def test_log_records_and_prints_never_reach_the_terminal_under_the_screen(tmp_path: Any) -> None:
    settings = make_settings(currencies=["BTC"], data_dir=str(tmp_path))
    stream = io.StringIO()
    out = RichConsole(file=stream, width=80)
    terminal = Terminal(None, io.StringIO(), out, interactive=True, settings=settings,  # type: ignore[arg-type]
                        log=structlog.get_logger(actor="test"))
    on_terminal = io.StringIO()
    handler = logging.StreamHandler(on_terminal)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("test_screen")
    logger.addHandler(handler)
    terminal.log_handlers = [handler]
    try:
        with terminal._screen_owns_terminal():
            logger.error("raw record")
            print("a stray print")
            out.print("a console line")
        logger.error("after the screen")
    finally:
        logger.removeHandler(handler)
    assert on_terminal.getvalue() == "after the screen\n"
    assert terminal.screen is not None
    assert terminal.screen.messages.lines()[1] == ("a stray print", "a console line")
    assert stream.getvalue() == "" and handler.level == logging.WARNING


def test_a_hedger_that_switched_itself_off_is_an_alert() -> None:
    desk = DeskState(["BTC"])
    desk.on_hedger(HedgerStatus(currency="BTC", active=False, instrument=PERP, mode="options_vs_hedge",  # type: ignore[arg-type]
                                band=0.0025, at=NOW, alert="three rejected hedges in a row"))
    frame = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, NOW, Renderer())
    assert "ALERT hedger BTC switched itself off: three rejected hedges in a row" in frame.hedger
    assert "\x1b[1;" in frame.hedger.split("ALERT")[0][-20:]  # bold, in colour
    assert "hedger inactive ALERT" in frame.header


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("interactive", "plain", "full_screen"),
                         [(True, False, True), (True, True, False), (False, False, False)])
def test_plain_keeps_the_line_console_on_a_terminal(tmp_path: Any, interactive: bool, plain: bool,
                                                    full_screen: bool) -> None:
    import main

    args = main.build_parser().parse_args(main.normalise_argv(["--plain"] if plain else []))
    settings = make_settings(main.overrides_from_args(args), currencies=["BTC"], data_dir=str(tmp_path))
    assert settings.console.plain is plain
    terminal = Terminal(None, io.StringIO(), RichConsole(file=_Tty()), interactive=interactive,  # type: ignore[arg-type]
                        settings=settings, log=structlog.get_logger(actor="test"))
    assert terminal.full_screen is full_screen


def test_only_what_changed_is_rendered_and_redrawn() -> None:
    from prompt_toolkit.formatted_text.utils import fragment_list_to_text
    from prompt_toolkit.output import DummyOutput

    from console.screen import DeskScreen

    desk = DeskState(["BTC"])
    for message in market_messages():
        if isinstance(message, InstrumentsLoaded) and message.currency == "BTC":
            desk.on_instruments(message)
        elif not isinstance(message, InstrumentsLoaded | ConnectionStatus | TopOfBook | IndexPrice | HedgerStatus):
            getattr(desk, {"PortfolioChanged": "on_portfolio", "ChainSnapshot": "on_chain"}[type(message).__name__])(
                message)
    renderer = Renderer()
    now = NOW + 3600
    first = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now, renderer)
    again = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now, renderer)
    assert again.positions is first.positions and again.chain is first.chain  # not rendered again
    desk.on_portfolio(portfolio())
    changed = render_frame(desk, ChainFocus(("BTC",), strikes=11), "simulator", 120, 40, now, renderer)
    assert "(no positions)" in changed.positions and changed.chain is first.chain

    class Backend:
        def prompt(self) -> str:
            return "> "

    with create_pipe_input() as pipe:
        screen = DeskScreen(Backend(), MessageLog(), InMemoryHistory(), None, input=pipe,  # type: ignore[arg-type]
                            output=DummyOutput())
        redraws: list[None] = []
        screen.app.invalidate = lambda: redraws.append(None)  # type: ignore[method-assign]
        screen.apply(first)
        screen.apply(again)
        assert len(redraws) == 1  # the same texts: nothing redrawn
        screen.apply(changed)
        assert len(redraws) == 2 and "(no positions)" in fragment_list_to_text(screen.shown["positions"])


def test_open_orders_are_shown_on_120x40_with_two_currencies() -> None:
    # The orders pane had 3 lines there: its header and rule, then "... 2 more lines" and not
    # one order. It shows at least the first order, and says how many more.
    desk = DeskState(["BTC", "ETH"])
    desk.on_portfolio(portfolio(orders=(open_order("o1", "manual_api_1"), open_order("o2", "manual_api_2"))))
    frame = render_frame(desk, ChainFocus(("BTC", "ETH"), strikes=11), "simulator", 120, 40, NOW, Renderer())
    assert "manual_api_1" in frame.orders, frame.orders
    assert sum(pane_heights(40, currencies=2).values()) + 7 == 40


def test_the_footer_says_how_to_stop_within_120_columns() -> None:
    footer = " " + KEYS_TEXT  # as the screen draws it
    assert len(footer) <= 120 and "Ctrl-D/quit stop" in footer[:80], footer
