"""The Console: the trader's keyboard. A thin shell over :mod:`console.grammar` (what a
line means, which orders it stands for) and :mod:`console.views` (the desk's picture,
start-up progress, script waits, tables).

The actor keeps the picture from the bus and executes commands; a :class:`Terminal` thread owns
standard input. On a terminal it runs a prompt_toolkit prompt (history in ``data/``, completion
of commands and instrument names, lines from other actors printed above the prompt, Ctrl-C
clears the line, Ctrl-D or ``quit`` stops the program). With piped input it runs the lines in
order, each order line waiting for the exchange's answer and for its fills to reach the
portfolio; end of input after some lines stops the program, no input at all (``/dev/null``)
leaves it running without a console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import pykka
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from rich.console import Console as RichConsole
from rich.console import RenderableType
from rich.text import Text

from console.grammar import (
    COMPLETION_WORDS,
    HELP,
    ORDER_COMMANDS,
    Cancel,
    ChangeInstrument,
    Hedging,
    OptionOrder,
    OrderLimits,
    ParseError,
    Plot,
    Quit,
    Refusal,
    ResetSizeMultiplier,
    SetContractType,
    SetHedgeStep,
    Show,
    ShowChain,
    TradingContext,
    cancels_for,
    describe_order,
    label_number,
    next_label_number,
    orders_for,
    parse_line,
    parse_size_multiplier,
    pick_future,
)
from console.views import (
    DeskState,
    HedgerWait,
    ScriptWait,
    Stage,
    chain_tables,
    describe_answer,
    describe_connection,
    describe_fill,
    describe_hedger,
    funds_table,
    hedger_table,
    orders_table,
    positions_table,
    price_view,
    reference_mark,
    startup_stages,
    startup_text,
    status_view,
    surface_view,
)
from deribit.instruments import currency_of
from messages.account import UserTrade
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
)
from messages.hedging import HedgerControl, HedgerStatus, SetHedgeBand
from messages.market import IndexPrice, InstrumentsLoaded
from messages.state import ChainSnapshot, PortfolioChanged, TopOfBook
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import ActorFailed, ConnectionState, ConnectionStatus, SafeShutdown, StopRequested
from runtime.actor import Actor, ActorContext, handles

ORIGIN = "console"
#: A chain snapshot older than this cannot vouch for an option's mark (they come each minute).
OPTION_QUOTE_MAX_AGE_S = 150.0
#: Subscribed this long without a reconciled portfolio: ask for a reconcile (start-up only).
RECONCILE_AFTER_S = 5.0
_REPO = Path(__file__).resolve().parent.parent


# -- what the terminal asks of its actor (private to this module) ------------------------------------
@dataclass(frozen=True)
class RunLine:
    """Execute one typed line; ``wait``: piped input, so register what the line must wait for."""

    text: str
    wait: bool = False


@dataclass(frozen=True)
class LineOutcome:
    wait_key: str | None = None
    follow_up: Literal["instrument", "multiplier"] | None = None
    quit: bool = False
    error: bool = False


@dataclass(frozen=True)
class Configure:
    """The instrument and size multiplier chosen at start-up (either may stay as it is)."""

    instrument: str | None = None
    size_multiplier: float | None = None


@dataclass(frozen=True)
class GetStartup:
    """Answered with the start-up stages."""


@dataclass(frozen=True)
class GetChoices:
    """Answered with :class:`Choices`: what the prompts offer."""


@dataclass(frozen=True)
class Choices:
    futures: tuple[Any, ...]
    options: tuple[str, ...]
    instrument: str | None
    size_multiplier: float | None


@dataclass(frozen=True)
class WaitDone:
    """Answered with True once the piped line ``key`` has all it waited for (or timed out)."""

    key: str


@dataclass(frozen=True)
class EndOfInput:
    """Piped input ended after some lines: stop the program."""


@dataclass(frozen=True)
class Say:
    """Print a line from the terminal thread through the actor's output (keeps ordering)."""

    text: str
    style: str = ""


class Console(Actor):
    def __init__(self, context: ActorContext, *, stdin: TextIO | None = None, out: RichConsole | None = None,
                 interactive: bool | None = None, terminal: bool = True) -> None:
        super().__init__(context)
        settings = context.settings
        self.cs = settings.console
        self.settings = settings
        self.desk = DeskState(settings.currencies)
        self.limits = OrderLimits(self.cs.max_notional_usd, self.cs.max_price_deviation_pct,
                                  self.cs.max_option_price_deviation_pct, self.cs.max_ladder_orders)
        self.instrument: str | None = None
        self.size_multiplier: float | None = None
        self.option: str | None = None
        self.key_prefix = f"console-{int(context.clock.now() * 1000):x}-"
        self.key_counter = 0
        self.last_label = 0
        self.pending: dict[str, Any] = {}  # request key -> command sent, not answered yet
        self.waits: dict[str, ScriptWait | HedgerWait] = {}
        self.seen_trades: deque[str] = deque(maxlen=2000)
        self.hedger_said: dict[str, str] = {}
        self.started = False
        self.subscribed_at: float | None = None
        self.asked_reconcile = False
        self.stdin = sys.stdin if stdin is None else stdin
        self.interactive = _isatty(self.stdin) if interactive is None else interactive
        self.out = out or RichConsole(markup=False, highlight=False, emoji=False,
                                      width=None if self.interactive else 120)
        self.with_terminal = terminal
        self.terminal: Terminal | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def on_start(self) -> None:
        if self.cs.instrument:
            self.instrument = self.cs.instrument
        if self.cs.size_multiplier:
            self.size_multiplier = self.cs.size_multiplier
        if not self.with_terminal:
            return
        if self.stdin is None or self.stdin.closed:
            self.log.info("console_without_input", reason="standard input is closed")
            return
        self.terminal = Terminal.attach_or_start(self.actor_ref, self.stdin, self.out, self.interactive,
                                                 self.settings, self.log)

    def on_stop(self) -> None:
        if self.terminal is not None:
            self.terminal.close()

    def say(self, message: RenderableType | str, style: str = "") -> None:
        self.out.print(Text(message, style=style) if isinstance(message, str) else message)

    def _key(self, what: str) -> str:
        self.key_counter += 1
        return f"{self.key_prefix}{what}-{self.key_counter}"

    # -- the picture ------------------------------------------------------------------------------
    @handles(ConnectionStatus)
    def on_connection(self, status: ConnectionStatus) -> None:
        before = self.desk.connection
        self.desk.on_connection(status)
        if status.state is ConnectionState.SUBSCRIBED:
            self.subscribed_at = time.monotonic()
            # Subscriptions follow the instrument lists: a list we do not have was published
            # before this actor joined the bus. Ask for it again rather than trade blind.
            missing = tuple(c for c in self.settings.currencies if c not in self.desk.instruments)
            if missing:
                self.log.info("console_asks_instruments", currencies=list(missing))
                self.publish(RefreshInstruments(origin=ORIGIN, reason="console joined late", currencies=missing))
        if self.started and (before is None or before.state is not status.state) and status.state in (
                ConnectionState.DISCONNECTED, ConnectionState.SUBSCRIBED):
            self.say(describe_connection(status), "bold red" if not status.can_trade else "green")

    @handles(InstrumentsLoaded)
    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        self.desk.on_instruments(loaded)
        for name in (self.instrument, self.option):
            if name and currency_of(name) == loaded.currency and self.desk.instrument(name) is None and self.started:
                self.say(f"{name} is no longer listed: orders on it are refused; choose again", "bold red")

    @handles(TopOfBook)
    def on_top(self, top: TopOfBook) -> None:
        self.desk.tops[top.instrument_name] = top

    @handles(IndexPrice)
    def on_index(self, index: IndexPrice) -> None:
        self.desk.on_index(index)

    @handles(PortfolioChanged)
    def on_portfolio(self, portfolio: PortfolioChanged) -> None:
        self.desk.on_portfolio(portfolio)

    @handles(ChainSnapshot)
    def on_chain(self, chain: ChainSnapshot) -> None:
        self.desk.on_chain(chain)

    @handles(SurfaceSnapshot)
    def on_surface(self, surface: SurfaceSnapshot) -> None:
        self.desk.on_surface(surface)

    @handles(RecorderStatus)
    def on_recorder(self, status: RecorderStatus) -> None:
        before = self.desk.recorder
        self.desk.on_recorder(status)
        if before is not None and before.reachable != status.reachable:
            self.say(f"recorder: database {'reachable again' if status.reachable else 'UNREACHABLE'}"
                     f"{': ' + status.last_error if status.last_error and not status.reachable else ''}",
                     "green" if status.reachable else "bold red")

    @handles(HedgerStatus)
    def on_hedger(self, status: HedgerStatus) -> None:
        before = self.desk.hedgers.get(status.currency)
        self.desk.on_hedger(status)
        ours = status.request_key.startswith(self.key_prefix)
        changed = before is None or before.active != status.active or before.message != status.message
        text = describe_hedger(status)
        # The hedger answers a control and also announces the change: print that once.
        if (ours or (changed and self.started)) and self.hedger_said.get(status.currency) != text:
            self.hedger_said[status.currency] = text
            self.say(text, "" if status.active or ours else "yellow")
        for wait in self.waits.values():
            if isinstance(wait, HedgerWait):
                wait.on_status(status)

    @handles(UserTrade)
    def on_fill(self, trade: UserTrade) -> None:
        if trade.trade_id in self.seen_trades:
            return
        self.seen_trades.append(trade.trade_id)
        self.say(describe_fill(trade), "cyan" if label_number(trade.label) is not None else "")

    @handles(CommandResult, CommandFailed)
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        if answer.origin != ORIGIN or not answer.request_key.startswith(self.key_prefix):
            return
        self.pending.pop(answer.request_key, None)
        self.say(describe_answer(answer), "red" if isinstance(answer, CommandFailed) else "")
        for wait in self.waits.values():
            if isinstance(wait, ScriptWait):
                wait.on_answer(answer)

    @handles(ActorFailed)
    def on_actor_failed(self, event: ActorFailed) -> None:
        self.say(f"actor {event.actor} failed ({event.error}); the supervisor restarts it", "bold red")

    @handles(SafeShutdown)
    def on_safe_shutdown(self, event: SafeShutdown) -> None:
        self.say(f"SAFE SHUTDOWN: {event.reason}", "bold red")

    # -- the terminal's questions -----------------------------------------------------------------------
    @handles(GetStartup)
    def on_get_startup(self, _request: GetStartup) -> tuple[Stage, ...]:
        stages = startup_stages(self.desk)
        # A reconciled portfolio published before this actor joined the bus is not sent again
        # until something changes: once subscribed for a while without one, ask for a reconcile.
        waiting = [c for c in self.settings.currencies
                   if not (c in self.desk.portfolios and self.desk.portfolios[c].reconciled)]
        if (waiting and not self.asked_reconcile and self.subscribed_at is not None
                and time.monotonic() - self.subscribed_at > RECONCILE_AFTER_S):
            self.asked_reconcile = True
            self.log.info("console_asks_reconcile", currencies=waiting)
            self.publish(ReconcilePortfolio(origin=ORIGIN, reason="console start-up", currencies=tuple(waiting)))
        return stages

    @handles(GetChoices)
    def on_get_choices(self, _request: GetChoices) -> Choices:
        currency = currency_of(self.instrument) if self.instrument else None
        options = tuple(i.instrument_name for i in self.desk.options(currency)) if currency else ()
        futures = tuple(f for c in self.settings.currencies for f in self.desk.futures(c))
        return Choices(futures, options, self.instrument, self.size_multiplier)

    @handles(Configure)
    def on_configure(self, configure: Configure) -> str | None:
        """Set the instrument and/or multiplier; returns an error text, or None."""
        self.started = True
        if configure.instrument is not None:
            futures = [f for c in self.settings.currencies for f in self.desk.futures(c)]
            chosen = pick_future(configure.instrument, futures)
            if isinstance(chosen, ParseError):
                return str(chosen)
            if chosen.instrument_name != self.instrument:
                self.option = None
            self.instrument = chosen.instrument_name
        if configure.size_multiplier is not None:
            value = parse_size_multiplier(str(configure.size_multiplier))
            if isinstance(value, ParseError):
                return str(value)
            self.size_multiplier = value
        if self.instrument and self.size_multiplier:
            inst = self.desk.instrument(self.instrument)
            unit = "USD" if inst is not None and inst.kind == "future" else "coins"
            self.say(f"trading {self.instrument}, size multiplier {self.size_multiplier:g} "
                     f"(a1 = {self.size_multiplier:g} {unit})"
                     f"{'; PAPER: orders are printed, not sent' if self.settings.paper else ''}", "bold")
            self.log.info("console_configured", instrument=self.instrument, size_multiplier=self.size_multiplier)
        return None

    @handles(WaitDone)
    def on_wait_done(self, request: WaitDone) -> bool:
        wait = self.waits.get(request.key)
        if wait is None:
            return True
        missing = wait.missing(self.desk)
        if not missing:
            del self.waits[request.key]
            return True
        if time.monotonic() > wait.deadline:
            del self.waits[request.key]
            self.say(f"still waiting for {', '.join(missing)}; going on with the next line", "yellow")
            self.log.warning("console_wait_timeout", missing=missing)
            return True
        return False

    @handles(EndOfInput)
    def on_end_of_input(self, _event: EndOfInput) -> None:
        self.log.info("console_end_of_input")
        self.publish(StopRequested(reason="end of console input", origin=ORIGIN))

    @handles(Say)
    def on_say(self, message: Say) -> None:
        self.say(message.text, message.style)

    # -- executing a line -------------------------------------------------------------------------------
    @handles(RunLine)
    def on_line(self, request: RunLine) -> LineOutcome:
        command = parse_line(request.text)
        if command is None:
            return LineOutcome()
        self.log.info("console_line", line=request.text.strip()[:200], command=type(command).__name__)
        if isinstance(command, ParseError):
            self.say(f"not understood, nothing sent: {command}", "red")
            return LineOutcome(error=True)
        match command:
            case Quit():
                self.say("stopping")
                self.publish(StopRequested(reason="quit", origin=ORIGIN))
                return LineOutcome(quit=True)
            case ChangeInstrument():
                return LineOutcome(follow_up="instrument")
            case ResetSizeMultiplier():
                return LineOutcome(follow_up="multiplier")
            case Show(topic=topic):
                return self._show(topic, request.wait)
            case ShowChain(expiry=expiry):
                currency = currency_of(self.instrument) if self.instrument else self.settings.currencies[0]
                self.say(chain_tables(self.desk.chains.get((currency or "", "option")), expiry))
            case Plot(args=args):
                self._plot(args)
            case Hedging(action=action):
                return self._hedger(HedgerControl(action=action, origin=ORIGIN, request_key=self._key("hedger"),
                                                  currency=self._currency()), request.wait)
            case SetHedgeStep(max_delta_mismatch=band):
                return self._hedger(SetHedgeBand(max_delta_mismatch=band, origin=ORIGIN,
                                                 request_key=self._key("band"), currency=self._currency()),
                                    request.wait)
            case SetContractType(instrument_name=name):
                return self._set_contract(name)
            case Cancel():
                return self._cancel(command, request.wait)
            case _ if isinstance(command, ORDER_COMMANDS):
                return self._order(command, request.wait)
        return LineOutcome()

    def _currency(self) -> str:
        return (currency_of(self.instrument) if self.instrument else None) or self.settings.currencies[0]

    def _show(self, topic: str, wait: bool) -> LineOutcome:
        desk = self.desk
        match topic:
            case "help":
                self.say(HELP)
            case "price":
                self.say(price_view(desk, self.instrument, self.option))
            case "funds":
                self.say(funds_table(desk.portfolios.values()))
            case "orders":
                self.say(orders_table(desk.open_orders()))
            case "positions":
                self.say(positions_table(desk.positions()))
            case "connection":
                self.say(describe_connection(desk.connection))
            case "size_multiplier":
                self.say(f"size multiplier: {self.size_multiplier:g}" if self.size_multiplier
                         else "no size multiplier chosen yet")
            case "status":
                self.say(status_view(desk, self.instrument))
            case "surface":
                currency = self._currency()
                self.say(surface_view(desk.surfaces.get(currency), currency))
            case "hedging":
                self.say(hedger_table(desk.hedgers.values()))
                return self._hedger(HedgerControl(action="status", origin=ORIGIN, request_key=self._key("hedger"),
                                                  currency=self._currency()), wait)
        return LineOutcome()

    def _hedger(self, message: HedgerControl | SetHedgeBand, wait: bool) -> LineOutcome:
        self.publish(message)
        self.say(f"sent to the hedger: {type(message).__name__} "
                 f"{getattr(message, 'action', '') or getattr(message, 'max_delta_mismatch', '')}")
        if not wait:
            return LineOutcome()
        self.waits[message.request_key] = HedgerWait(message.request_key, time.monotonic() + self.cs.hedger_wait_s)
        return LineOutcome(wait_key=message.request_key)

    def _set_contract(self, name: str) -> LineOutcome:
        if self.instrument and currency_of(name) != currency_of(self.instrument):
            self.say(f"{name} is not an option on {currency_of(self.instrument)} (the chosen {self.instrument})",
                     "red")
            return LineOutcome(error=True)
        if self.desk.instrument(name) is None:
            self.say(f"{name} is not listed; options of the chain: chain [EXPIRY]", "red")
            return LineOutcome(error=True)
        self.option = name
        self.say(f"options: buyOption/sellOption trade {name}")
        return LineOutcome()

    def _trading_context(self, command: Any) -> TradingContext | Refusal:
        link_up = self.desk.connection is not None and self.desk.connection.state in (
            ConnectionState.CONNECTED, ConnectionState.AUTHENTICATED, ConnectionState.SUBSCRIBED)
        common = {"limits": self.limits, "connected": self.desk.can_trade or (self.settings.paper and link_up),
                  "trading_allowed": self.settings.can_trade, "paper": self.settings.paper, "origin": ORIGIN,
                  "request_key_prefix": self.key_prefix}
        if isinstance(command, OptionOrder):
            if self.option is None:
                return Refusal("no option chosen", "setContractType:NAME first, e.g. setContractType:"
                                                   "BTC-24SEP21-40000-C")
            inst = self.desk.instrument(self.option)
            if inst is None:
                return Refusal(f"{self.option} is not listed any more", "choose another with setContractType")
            chain = self.desk.chains.get((inst.base_currency, "option"))
            quote = self.desk.option_quote(self.option)
            if chain is None or quote is None:
                return Refusal(f"no quote for {self.option} yet", "the option chain comes at each full minute")
            old = self.context.clock.now() - chain.at > OPTION_QUOTE_MAX_AGE_S
            return TradingContext(instrument=inst, size_multiplier=1.0, bid=quote.bid, ask=quote.ask,
                                  mark=quote.mark_price, index_price=self.desk.index_price(inst.base_currency),
                                  stale=quote.stale or old, **common)
        if self.instrument is None or self.size_multiplier is None:
            return Refusal("no instrument or size multiplier chosen", "type change instrument")
        inst = self.desk.instrument(self.instrument)
        if inst is None:
            return Refusal(f"{self.instrument} is not listed (any more)", "type change instrument")
        top = self.desk.tops.get(self.instrument)
        if top is None:
            return Refusal(f"no book for {self.instrument} yet", "wait until its book is synced (status)")
        return TradingContext(instrument=inst, size_multiplier=self.size_multiplier, bid=top.bid, ask=top.ask,
                              mark=reference_mark(top, self.cs.max_price_deviation_pct),
                              index_price=self.desk.index_price(inst.base_currency), stale=top.stale, **common)

    def _order(self, command: Any, wait: bool) -> LineOutcome:
        ctx = self._trading_context(command)
        if isinstance(ctx, Refusal):
            return self._refused(ctx)
        first = next_label_number(self.desk.open_orders(), self.last_label)
        orders = orders_for(command, ctx, first)
        if isinstance(orders, Refusal):
            return self._refused(orders)
        self.last_label = first + len(orders) - 1
        if self.settings.paper:
            for order in orders:
                self.say(f"paper (not sent): {describe_order(order)}", "magenta")
            return LineOutcome()
        for order in orders:
            self.pending[order.request_key] = order
            self.log.info("console_order", request_key=order.request_key, order=describe_order(order))
            self.say(f"sent: {describe_order(order)}")
            self.publish(order)
        if not wait:
            return LineOutcome()
        key = orders[0].request_key
        baseline = {name: self.desk.position_size(name) for name in {o.instrument_name for o in orders}}
        self.waits[key] = ScriptWait({o.request_key for o in orders}, time.monotonic() + self.cs.order_wait_s,
                                     baseline=baseline)
        return LineOutcome(wait_key=key)

    def _cancel(self, command: Cancel, wait: bool) -> LineOutcome:
        pending_labels = [o.label for o in self.pending.values() if isinstance(o, PlaceOrder)]
        cancels = cancels_for(command, self.desk.open_orders(), pending_labels, origin=ORIGIN,
                              request_key=self._key(f"cancel-{command.scope}"), currency=self._currency())
        if isinstance(cancels, Refusal):
            self.say(f"nothing sent: {cancels}")
            return LineOutcome()
        gone: set[str] = set()
        open_orders = self.desk.open_orders()
        for cancel in cancels:
            if isinstance(cancel, CancelOrder):
                gone.add(cancel.order_id)
            elif isinstance(cancel, CancelByLabel):
                gone |= {o.order_id for o in open_orders if o.label == cancel.label}
            elif isinstance(cancel, CancelAll):
                gone |= {o.order_id for o in open_orders}
        if self.settings.paper:
            for cancel in cancels:
                self.say(f"paper (not sent): {type(cancel).__name__} {getattr(cancel, 'order_id', '')}"
                         f"{getattr(cancel, 'label', '')}", "magenta")
            return LineOutcome()
        for cancel in cancels:
            self.pending[cancel.request_key] = cancel
            self.publish(cancel)
        self.say(f"sent: {command.scope} cancel ({len(cancels)} request{'s' if len(cancels) != 1 else ''})")
        if not wait:
            return LineOutcome()
        key = cancels[0].request_key
        self.waits[key] = ScriptWait({c.request_key for c in cancels}, time.monotonic() + self.cs.order_wait_s,
                                     gone=gone)
        return LineOutcome(wait_key=key)

    def _refused(self, refusal: Refusal) -> LineOutcome:
        self.log.info("console_refused", reason=refusal.reason)
        self.say(f"refused, nothing sent: {refusal}", "red")
        return LineOutcome(error=True)

    def _plot(self, args: tuple[str, ...]) -> None:
        """Run ``main.py plot ARGS`` (the plot command itself) in the background; print its output."""
        env = {**os.environ, "DESK__DATA_DIR": self.settings.data_dir}
        if self.settings.database.url:
            env["DATABASE_URL"] = self.settings.database.url
        command = [sys.executable, str(_REPO / "main.py"), "plot", *args]
        out = self.out

        def run() -> None:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                                      stdin=subprocess.DEVNULL, check=False)
                text = (done.stdout + done.stderr).strip() or f"plot finished (status {done.returncode})"
            except (OSError, subprocess.TimeoutExpired) as exc:
                text = f"plot failed: {exc}"
            out.print(Text(text))

        self.say(f"plotting: {' '.join(args) or '(no arguments)'}")
        threading.Thread(target=run, name="console-plot", daemon=True).start()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and not stream.closed and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class CommandCompleter(Completer):
    """Tab completion: the command words; option names after ``setContractType:``; expiries after
    ``chain``; future names while the instrument is asked for. ``source`` has ``choices`` (what
    the actor last said the prompts offer) and ``asking_instrument``."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor.lstrip()
        choices: Choices = self.source.choices
        candidates: list[str] = list(COMPLETION_WORDS)
        if text.lower().startswith("setcontracttype:"):
            prefix, rest = text[:16], text[16:].upper()
            candidates = [prefix + n for n in choices.options if n.startswith(rest)]
        elif text.lower().startswith("chain "):
            expiries = dict.fromkeys(n.split("-")[1] for n in choices.options)
            candidates = [f"chain {e}" for e in expiries]
        elif self.source.asking_instrument:
            candidates = [f.instrument_name for f in choices.futures]
        for word in candidates:
            if word.lower().startswith(text.lower()) and word != text:
                yield Completion(word, start_position=-len(text))


# -- the terminal ---------------------------------------------------------------------------------------
class Terminal:
    """Standard input's thread. It outlives a restart of its actor (re-attached by the new one,
    which is told the instrument and multiplier again), so no typed line is lost."""

    _running: dict[int, Terminal] = {}
    _lock = threading.Lock()

    def __init__(self, ref: pykka.ActorRef, stdin: TextIO, out: RichConsole, interactive: bool, settings: Any,
                 log: Any) -> None:
        self.ref = ref
        self.stdin = stdin
        self.out = out
        self.interactive = interactive
        self.settings = settings
        self.cs = settings.console
        self.log = log
        self.stopped = threading.Event()
        self.attached = threading.Event()
        self.attached.set()
        self.instrument: str | None = None
        self.size_multiplier: float | None = None
        self.app: Any = None
        self.asking_instrument = False  # the completer offers futures while the instrument is asked
        self.choices = Choices((), (), None, None)
        self.thread = threading.Thread(target=self._main, name="console-terminal", daemon=True)

    @classmethod
    def attach_or_start(cls, ref: pykka.ActorRef, stdin: TextIO, out: RichConsole, interactive: bool,
                        settings: Any, log: Any) -> Terminal:
        with cls._lock:
            running = cls._running.get(id(stdin))
            if running is not None and running.thread.is_alive() and not running.stopped.is_set():
                running.attach(ref)
                return running
            terminal = cls(ref, stdin, out, interactive, settings, log)
            cls._running[id(stdin)] = terminal
        terminal.thread.start()
        return terminal

    def attach(self, ref: pykka.ActorRef) -> None:
        self.ref = ref
        if self.instrument or self.size_multiplier:
            ref.tell(Configure(self.instrument, self.size_multiplier))
        self.attached.set()

    def close(self) -> None:
        self.stopped.set()
        with Terminal._lock:
            if Terminal._running.get(id(self.stdin)) is self:
                del Terminal._running[id(self.stdin)]
        app = self.app
        if app is not None and app.is_running and app.loop is not None:
            with contextlib.suppress(RuntimeError):
                app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()) if app.is_running else None)
        if threading.current_thread() is not self.thread and self.interactive:
            # Give prompt_toolkit the moment it needs to put the terminal back in cooked mode.
            self.thread.join(timeout=1.0)

    # -- asking the actor, across its restarts ----------------------------------------------------------
    def ask(self, message: Any, timeout: float = 30.0) -> Any:
        while not self.stopped.is_set():
            ref = self.ref
            try:
                return ref.ask(message, timeout=timeout)
            except pykka.ActorDeadError:
                if self.ref is not ref:
                    continue
                self.attached.clear()
                # attach() sets the ref before the event: a new ref seen here was attached
                # between the two checks, and one attached after them sets the event again.
                if self.ref is ref and not self.attached.wait(timeout=15.0):
                    raise
        raise pykka.ActorDeadError("console stopped")

    def say(self, text: str, style: str = "") -> None:
        self.out.print(Text(text, style=style))

    def _main(self) -> None:
        try:
            if self.interactive:
                self._run_interactive()
            else:
                self._run_script()
        except pykka.ActorDeadError:
            pass
        except Exception as exc:  # the terminal must never die silently
            self.log.exception("console_terminal_failed", error=str(exc))
            with contextlib.suppress(Exception):
                self.say(f"console failed: {exc}; see the log", "bold red")

    # -- start-up ----------------------------------------------------------------------------------------
    def _wait_for_startup(self, show: Any) -> tuple[Stage, ...]:
        """Poll the start-up stages until all are done or the timeout passes; ``show`` renders them."""
        deadline = time.monotonic() + self.cs.startup_timeout_s
        stages: tuple[Stage, ...] = ()
        while not self.stopped.is_set():
            stages = self.ask(GetStartup())
            show(stages)
            if all(s.done for s in stages):
                break
            if time.monotonic() > deadline:
                self.say(f"start-up incomplete after {self.cs.startup_timeout_s:g} s: {startup_text(stages)}; "
                         "orders are refused until the data is there", "yellow")
                self.log.warning("console_startup_incomplete", stages=startup_text(stages))
                break
            time.sleep(0.2)
        return stages

    def _configure(self, instrument: str | None, multiplier: float | None) -> str | None:
        error = self.ask(Configure(instrument, multiplier))
        if error is None:
            self.instrument = instrument or self.instrument
            self.size_multiplier = multiplier or self.size_multiplier
        return error

    # -- piped input ---------------------------------------------------------------------------------------
    def _read(self) -> str | None:
        try:
            line = self.stdin.readline()
        except (OSError, ValueError):
            return None
        return line if line else None

    def _run_script(self) -> None:
        seen: set[str] = set()

        def show(stages: tuple[Stage, ...]) -> None:
            for stage in stages:  # in order: a stage is told once those before it are
                if not stage.done:
                    return
                if stage.name.split(" (")[0] not in seen:
                    seen.add(stage.name.split(" (")[0])
                    self.ask(Say(f"start-up: {stage.name}{' (' + stage.detail + ')' if stage.detail else ''}"))

        self._wait_for_startup(show)
        if self.stopped.is_set():
            return
        lines_read = 0
        choices = self.ask(GetChoices())
        if not self.cs.instrument or not self.cs.size_multiplier:
            self.ask(Say("futures: " + ", ".join(f"{n + 1} {f.instrument_name}"
                                                  for n, f in enumerate(choices.futures))))
        instrument = self.cs.instrument or None
        if instrument is None:
            line = self._read()
            if line is None:
                self.log.info("console_no_input", reason="standard input is empty; running without a console")
                return
            lines_read += 1
            instrument = line.strip()
        multiplier: float | None = self.cs.size_multiplier or None
        if multiplier is None:
            line = self._read()
            if line is None:
                self._end(lines_read)
                return
            lines_read += 1
            parsed = parse_size_multiplier(line)
            if isinstance(parsed, ParseError):
                self.ask(Say(f"console: {parsed}; stopping", "bold red"))
                self.ask(EndOfInput())
                return
            multiplier = parsed
        error = self._configure(instrument, multiplier)
        if error is not None:
            self.ask(Say(f"console: {error}; stopping", "bold red"))
            self.ask(EndOfInput())
            return
        while not self.stopped.is_set():
            line = self._read()
            if line is None:
                self._end(lines_read)
                return
            lines_read += 1
            if not line.strip():
                continue
            self.ask(Say(f"> {line.rstrip()}", "bold"))
            outcome: LineOutcome = self.ask(RunLine(line, wait=True))
            if outcome.wait_key is not None:
                while not self.stopped.is_set() and not self.ask(WaitDone(outcome.wait_key)):
                    time.sleep(0.02)
            if outcome.quit:
                return
            if outcome.follow_up == "instrument":
                answer = self._read()
                if answer is None:
                    self._end(lines_read)
                    return
                error = self._configure(answer.strip(), None)
                if error is not None:
                    self.ask(Say(f"console: {error}", "red"))
            elif outcome.follow_up == "multiplier":
                answer = self._read()
                if answer is None:
                    self._end(lines_read)
                    return
                parsed = parse_size_multiplier(answer)
                if isinstance(parsed, ParseError):
                    self.ask(Say(f"console: {parsed}", "red"))
                else:
                    self._configure(None, parsed)

    def _end(self, lines_read: int) -> None:
        if lines_read:
            self.ask(EndOfInput())
        else:
            self.log.info("console_no_input", reason="standard input is empty; running without a console")

    # -- a terminal ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _quiet_logs(self) -> Iterator[None]:
        """While the prompt owns the terminal, log lines on it are warnings only, printed above
        the prompt (through the patched stderr); the JSON log file keeps everything."""
        handlers = [h for h in logging.getLogger().handlers
                    if type(h) is logging.StreamHandler and _isatty(getattr(h, "stream", None))]
        saved = [(h, h.level, h.stream) for h in handlers]
        for handler in handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
        try:
            yield
        finally:
            for handler, level, stream in saved:
                handler.setLevel(level)
                handler.setStream(stream)

    def _run_interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.patch_stdout import patch_stdout
        from rich.progress import BarColumn, Progress, TextColumn

        history_path = Path(self.settings.data_dir) / self.cs.history_file
        try:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history: Any = FileHistory(str(history_path))
        except OSError as exc:
            self.log.warning("console_history_unavailable", path=str(history_path), error=str(exc))
            history = InMemoryHistory()
        session: Any = PromptSession(history=history, completer=CommandCompleter(self), complete_while_typing=False)
        with self._quiet_logs():
            progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                TextColumn("{task.fields[detail]}", markup=False), console=self.out,
                                transient=False)
            tasks: dict[str, Any] = {}

            def show(stages: tuple[Stage, ...]) -> None:
                for stage in stages:
                    key = stage.name.split(" (")[0]
                    if key not in tasks:
                        tasks[key] = progress.add_task(stage.name, total=stage.total, detail=stage.detail)
                    progress.update(tasks[key], description=("done    " if stage.done else "waiting ") + stage.name,
                                    completed=stage.total if stage.done else stage.completed, total=stage.total,
                                    detail=stage.detail)

            self.say("starting: connecting to the exchange (Ctrl-C stops the program)", "bold")
            with progress:
                self._wait_for_startup(show)
            with patch_stdout(raw=True):
                for handler in logging.getLogger().handlers:
                    if type(handler) is logging.StreamHandler and _isatty(getattr(handler, "stream", None)):
                        handler.setStream(sys.stderr)
                self._prompt_loop(session)

    def _prompt(self, session: Any, message: str) -> str:
        """One prompt; Ctrl-C clears the line and asks again, Ctrl-D raises EOFError."""
        while True:
            try:
                self.app = session.app
                return session.prompt(message, handle_sigint=False)
            except KeyboardInterrupt:
                continue
            finally:
                self.app = None

    def _choose(self, session: Any, what: Literal["instrument", "multiplier"]) -> bool:
        """Ask for the instrument or the multiplier until valid; False when the user quit."""
        while not self.stopped.is_set():
            self.choices = self.ask(GetChoices())
            if what == "instrument":
                futures = self.choices.futures
                self.say("futures: " + "  ".join(f"{n + 1} {f.instrument_name}" for n, f in enumerate(futures)))
                self.asking_instrument = True
                try:
                    answer = self._prompt(session, "instrument (number or name, Tab completes): ")
                finally:
                    self.asking_instrument = False
                error = self._configure(answer.strip(), None)
            else:
                answer = self._prompt(session, "size multiplier: ")
                parsed = parse_size_multiplier(answer)
                error = str(parsed) if isinstance(parsed, ParseError) else self._configure(None, parsed)
            if error is None:
                return True
            self.say(error, "red")
        return False

    def _prompt_loop(self, session: Any) -> None:
        try:
            if self.cs.instrument and self._configure(self.cs.instrument, None) is None:
                pass
            elif self.cs.instrument:
                self.say(f"--instrument {self.cs.instrument}: not a listed future; choose one", "red")
                if not self._choose(session, "instrument"):
                    return
            elif not self._choose(session, "instrument"):
                return
            if self.cs.size_multiplier:
                self._configure(None, self.cs.size_multiplier)
            elif not self._choose(session, "multiplier"):
                return
            while not self.stopped.is_set():
                self.choices = self.ask(GetChoices())
                prompt = f"{self.choices.instrument} x{self.choices.size_multiplier:g}> "
                text = self._prompt(session, prompt)
                outcome: LineOutcome = self.ask(RunLine(text))
                if outcome.quit:
                    return
                if outcome.follow_up is not None and not self._choose(session, outcome.follow_up):
                    return
        except EOFError:
            if not self.stopped.is_set():
                self.ask(RunLine("quit"))
