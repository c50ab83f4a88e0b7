"""The Console: the trader's keyboard. The actor keeps the desk's picture from the bus
(:class:`~console.desk_state.DeskState`), executes the lines a :class:`~console.terminal.Terminal`
thread reads from standard input, and publishes the orders, cancels and hedger controls that
:mod:`console.orders` makes of them; what a line means is :mod:`console.grammar`'s, how things
look :mod:`console.views`'.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from rich.console import Console as RichConsole
from rich.console import RenderableType
from rich.text import Text

from console.desk_state import DeskState, HedgerWait, ScriptWait, Stage, startup_stages
from console.grammar import (
    ORDER_COMMANDS,
    Cancel,
    ChangeInstrument,
    Command,
    Hedging,
    OrderCommand,
    Override,
    ParseError,
    Plot,
    Quit,
    ResetSizeMultiplier,
    SetContractType,
    SetHedgeStep,
    Show,
    ShowChain,
    Topic,
    parse_line,
)
from console.orders import OrderLimits, Refusal, Trading, describe_cancel, describe_order, label_number
from console.terminal import (
    Choices,
    Configure,
    EndOfInput,
    GetChoices,
    GetStartup,
    LineOutcome,
    RunLine,
    Say,
    Terminal,
    WaitDone,
    isatty,
    start_plot,
)
from console.views import (
    alert_lines,
    chain_tables,
    describe_answer,
    describe_connection,
    describe_fill,
    describe_hedger,
    topic_view,
)
from deribit.instruments import currency_of
from messages.account import UserTrade
from messages.commands import CommandFailed, CommandResult, ExchangeCommand, ReconcilePortfolio, RefreshInstruments
from messages.hedging import HedgerControl, HedgerStatus, SetHedgeBand
from messages.market import IndexPrice, Instrument, InstrumentsLoaded
from messages.state import ChainSnapshot, PortfolioChanged, TopOfBook
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import (
    ActorFailed,
    ConnectionState,
    ConnectionStatus,
    ConnectionStatusRequest,
    SafeShutdown,
    StopRequested,
)
from runtime.actor import Actor, ActorContext, handles

ORIGIN = "console"
#: Subscribed this long without a reconciled portfolio: ask for a reconcile (start-up only).
RECONCILE_AFTER_S = 5.0


class Console(Actor):
    def __init__(self, context: ActorContext, *, stdin: TextIO | None = None, out: RichConsole | None = None,
                 interactive: bool | None = None, terminal: bool = True) -> None:
        super().__init__(context)
        settings = context.settings
        self.cs = settings.console
        self.settings = settings
        self.desk = DeskState(settings.currencies)
        limits = OrderLimits(self.cs.max_notional_usd, self.cs.max_price_deviation_pct,
                             self.cs.max_option_price_deviation_pct, self.cs.max_ladder_orders)
        self.trading = Trading(limits, key_prefix=f"console-{int(context.clock.now() * 1000):x}-",
                               paper=settings.paper, trading_allowed=settings.can_trade, origin=ORIGIN)
        self.pending: dict[str, ExchangeCommand] = {}  # request key -> command sent, not answered yet
        self.waits: dict[str, ScriptWait | HedgerWait] = {}
        self.seen_trades: deque[str] = deque(maxlen=2000)
        self.hedger_said: dict[str, str] = {}
        self.started = False
        self.subscribed_at: float | None = None
        self.asked_reconcile = False
        self.stdin = sys.stdin if stdin is None else stdin
        self.interactive = isatty(self.stdin) if interactive is None else interactive
        self.out = out or RichConsole(markup=False, highlight=False, emoji=False,
                                      width=None if self.interactive else 120)
        self.with_terminal = terminal
        self.terminal: Terminal | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def on_start(self) -> None:
        if self.cs.instrument:
            self.trading.instrument = self.cs.instrument
        if self.cs.size_multiplier:
            error = self.trading.configure(None, self.cs.size_multiplier, [])
            if error is not None:  # the settings' range is the same: only a changed check gets here
                self.log.warning("console_size_multiplier_refused", error=error)
        if not self.with_terminal:
            return
        if self.stdin is None or self.stdin.closed:
            self.log.info("console_without_input", reason="standard input is closed")
            return
        restarted = Terminal.running_on(self.stdin) is not None
        self.terminal = Terminal.attach_or_start(self.actor_ref, self.stdin, self.out, self.interactive,
                                                 self.settings, self.log)
        if restarted:
            # What was published before is not sent again: the link's state comes on request,
            # and with it the instrument lists this actor lacks (see on_connection).
            self.log.info("console_restarted", reason="its terminal outlived the actor before it")
            self.publish(ConnectionStatusRequest(origin=ORIGIN))

    def on_stop(self) -> None:
        if self.terminal is not None:
            self.terminal.close()

    def say(self, message: RenderableType | str, style: str = "") -> None:
        self.out.print(Text(message, style=style) if isinstance(message, str) else message)

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
        for name in (self.trading.instrument, self.trading.option):
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
        ours = status.request_key.startswith(self.trading.key_prefix)
        changed = (before is None or (before.active, before.activation, before.message)
                   != (status.active, status.activation, status.message))
        text = describe_hedger(status, self.trading.instrument if ours else None)  # the note: once, to who asked
        # The hedger answers a control and also announces the change: print that once.
        if (ours or (changed and self.started)) and self.hedger_said.get(status.currency) != text:
            self.hedger_said[status.currency] = text
            self.say(text, "" if status.active or ours else "yellow")
        if status.alert and (before is None or before.alert != status.alert):
            for line in alert_lines([status]):
                self.say(line)
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
        if answer.origin != ORIGIN or not answer.request_key.startswith(self.trading.key_prefix):
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
        waiting = self.desk.unreconciled()
        if (waiting and not self.asked_reconcile and self.subscribed_at is not None
                and time.monotonic() - self.subscribed_at > RECONCILE_AFTER_S):
            self.asked_reconcile = True
            self.log.info("console_asks_reconcile", currencies=waiting)
            self.publish(ReconcilePortfolio(origin=ORIGIN, reason="console start-up", currencies=tuple(waiting)))
        return stages

    @handles(GetChoices)
    def on_get_choices(self, _request: GetChoices) -> Choices:
        trading = self.trading
        currency = currency_of(trading.instrument) if trading.instrument else None
        options = tuple(i.instrument_name for i in self.desk.options(currency)) if currency else ()
        default = self.desk.default_future(self.settings.currencies)
        hedged = tuple(s.instrument for s in self.desk.hedgers.values() if s.active)
        return Choices(tuple(self._futures()), options, trading.instrument, trading.size_multiplier,
                       default.instrument_name if default else None, hedged)

    def _futures(self) -> list[Instrument]:
        return [f for c in self.settings.currencies for f in self.desk.futures(c)]

    @handles(Configure)
    def on_configure(self, configure: Configure) -> str | None:
        """Set the instrument and/or multiplier; returns an error text, or None."""
        self.started = True
        if configure.restore:
            error = self.trading.restore(configure.instrument, configure.size_multiplier)
            self.log.info("console_restored", instrument=self.trading.instrument,
                          size_multiplier=self.trading.size_multiplier, error=error)
            return error
        error = self.trading.configure(configure.instrument, configure.size_multiplier, self._futures(),
                                       self.desk.default_future(self.settings.currencies))
        if error is not None:
            return error
        summary = self.trading.describe(self.desk)
        if summary is not None:
            self.say(summary, "bold")
            self.log.info("console_configured", instrument=self.trading.instrument,
                          size_multiplier=self.trading.size_multiplier)
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
        """One line, whatever happens in it: a failure is said and logged, and the console goes on
        (the terminal's next line, ``ca`` and ``quit`` included, runs as before)."""
        try:
            return self._run_line(request)
        except Exception as exc:
            line = request.text.strip()[:200]
            error = f"{type(exc).__name__}: {exc}"
            self.log.exception("console_line_failed", line=line, error=error)
            self.say(f"error while handling {line!r}: {error} (traceback in the log); the console goes on: "
                     "orders shows what is open, ca cancels everything", "bold red")
            return LineOutcome(error=True)

    def _run_line(self, request: RunLine) -> LineOutcome:
        command = parse_line(request.text)
        if command is None:
            return LineOutcome()
        self.log.info("console_line", line=request.text.strip()[:200], command=type(command).__name__)
        if isinstance(command, ParseError):
            self.say(f"not understood, nothing sent: {command}", "red")
            outcome = LineOutcome(error=True)
        else:
            outcome = self._execute(command, request)
        # A hedger's alert stays on screen, under each line's output, until acknowledged.
        if command not in (Show("status"), Show("hedging"), Hedging("acknowledge")):
            for line in alert_lines(self.desk.alerts()):
                self.say(line)
        return outcome

    def _execute(self, command: Command, request: RunLine) -> LineOutcome:
        trading = self.trading
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
                currency = currency_of(trading.instrument) if trading.instrument else self.settings.currencies[0]
                self.say(chain_tables(self.desk.chains.get((currency or "", "option")), expiry))
            case Plot(args=args):
                self.say(f"plotting: {' '.join(args) or '(no arguments)'}")
                start_plot(args, self.settings, self.out)
            case Hedging(action="acknowledge") if not self.desk.alerts():
                self.say("no hedger alert to acknowledge")
            case Hedging() | SetHedgeStep():
                return self._hedger(trading.hedger_message(command, self.desk, self._currency()), request.wait)
            case SetContractType(instrument_name=name):
                refusal = trading.choose_option(name, self.desk)
                if refusal is not None:
                    self.say(str(refusal), "red")
                    return LineOutcome(error=True)
                self.say(f"options: buyOption/sellOption trade {name}")
            case Cancel():
                return self._cancel(command, request.wait)
            case Override(order=order):
                return self._order(order, request.wait, override=True)
            case _ if isinstance(command, ORDER_COMMANDS):
                return self._order(command, request.wait)
        return LineOutcome()

    def _currency(self) -> str:
        return self.trading.currency(self.settings.currencies[0])

    def _show(self, topic: Topic, wait: bool) -> LineOutcome:
        trading = self.trading
        self.say(topic_view(topic, self.desk, trading.instrument, trading.option, trading.size_multiplier,
                            self._currency()))
        if topic == "hedging":  # the table, then the hedger's own answer
            return self._hedger(HedgerControl(action="status", origin=ORIGIN, request_key=trading.key("hedger"),
                                              currency=self._currency()), wait)
        return LineOutcome()

    def _hedger(self, message: HedgerControl | SetHedgeBand, wait: bool) -> LineOutcome:
        self.publish(message)
        what = message.action if isinstance(message, HedgerControl) else message.max_delta_mismatch
        self.say(f"sent to the hedger: {type(message).__name__} {what}")
        if not wait:
            return LineOutcome()
        self.waits[message.request_key] = HedgerWait(message.request_key, time.monotonic() + self.cs.hedger_wait_s)
        return LineOutcome(wait_key=message.request_key)

    def _order(self, command: OrderCommand, wait: bool, override: bool = False) -> LineOutcome:
        orders = self.trading.orders(command, self.desk, self.context.clock.now(), override)
        if override and not isinstance(orders, Refusal) and self.desk.hedged_by(orders[0].instrument_name):
            self.log.info("console_override", instrument=orders[0].instrument_name)
            self.say(f"override: sending on {orders[0].instrument_name} although the hedger owns it; it will hedge "
                     "the delta this order adds", "yellow")
        if isinstance(orders, Refusal):
            self.log.info("console_refused", reason=orders.reason)
            self.say(f"refused, nothing sent: {orders}", "red")
            return LineOutcome(error=True)
        script_wait = ScriptWait.for_orders(orders, self.desk, time.monotonic() + self.cs.order_wait_s)
        return self._send(orders, describe_order, script_wait, wait, each=True)

    def _cancel(self, command: Cancel, wait: bool) -> LineOutcome:
        cancels = self.trading.cancels(command, self.desk, self.pending.values(), self._currency())
        if isinstance(cancels, Refusal):
            self.say(f"nothing sent: {cancels}")
            return LineOutcome()
        # What the cancels must remove is read before they are sent: the portfolio changes after.
        script_wait = ScriptWait.for_cancels(cancels, self.desk, time.monotonic() + self.cs.order_wait_s)
        outcome = self._send(cancels, describe_cancel, script_wait, wait, each=False)
        if not self.settings.paper:
            self.say(f"sent: {command.scope} cancel ({len(cancels)} request{'s' if len(cancels) != 1 else ''})")
        return outcome

    def _send(self, commands: Sequence[Any], describe: Callable[[Any], str], script_wait: ScriptWait, wait: bool,
              each: bool) -> LineOutcome:
        """Publish ``commands`` (or, with --paper, only print them); a piped line waits for
        ``script_wait``. ``each``: say and log every command sent."""
        if self.settings.paper:
            for command in commands:
                self.say(f"paper (not sent): {describe(command)}", "magenta")
            return LineOutcome()
        for command in commands:
            self.pending[command.request_key] = command
            if each:
                self.log.info("console_order", request_key=command.request_key, order=describe(command))
                self.say(f"sent: {describe(command)}")
            self.publish(command)
        if not wait:
            return LineOutcome()
        self.waits[commands[0].request_key] = script_wait
        return LineOutcome(wait_key=commands[0].request_key)
