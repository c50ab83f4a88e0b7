"""The Console: the trader's keyboard. It keeps the desk's picture (``console.desk_state.DeskState``), runs the
lines a ``console.terminal.Terminal`` thread reads from standard input, and publishes the orders, cancels and
hedger controls ``console.orders`` makes of them (a line's meaning: ``console.grammar``; looks: ``console.views``).

Option data is live: at ``console.refresh_hz`` an :class:`~runtime.alarm.Alarm` has the actor ask each option
BookKeeper (``ChainViewRequest``) for the focused chain (:mod:`console.chain_focus`), the traded option and the
option positions; the answers (``ChainView``) are what ``price``, ``chain`` and the option order checks read.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, TextIO

import msgspec
import pykka
from rich.console import Console as RichConsole
from rich.console import RenderableType
from rich.text import Text

from console.chain_focus import ChainFocus, chain_due, live_requests
from console.desk_state import DeskState, Stage, startup_stages
from console.lines import LineRunner
from console.orders import OrderLimits, Trading
from console.screen_frame import FocusMove, Renderer, ScreenFrame, render_frame
from console.terminal import (
    Choices,
    Configure,
    GetChoices,
    GetLink,
    GetScreenFrame,
    GetStartup,
    LineOutcome,
    Link,
    MoveChainFocus,
    RunLine,
    Say,
    StopProgram,
    Terminal,
    WaitDone,
    isatty,
)
from console.views import (
    alert_lines,
    database_state,
    describe_answer,
    describe_connection,
    describe_fill,
    describe_hedger,
)
from deribit.instruments import currency_of
from messages.account import UserTrade
from messages.commands import CommandFailed, CommandResult, ReconcilePortfolio, RefreshInstruments
from messages.exposure import PlanStatus, VegaHedgerStatus
from messages.hedging import HedgerStatus
from messages.market import IndexPrice, Instrument, InstrumentsLoaded, PlatformState, VolatilityIndex
from messages.state import ChainSnapshot, ChainView, PortfolioChanged, TopOfBook
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
from runtime.alarm import Alarm

ORIGIN = "console"
#: Subscribed this long without a reconciled portfolio: ask for a reconcile (start-up only).
RECONCILE_AFTER_S = 5.0


class _Refresh(msgspec.Struct, frozen=True):
    """The refresh alarm rang: ask the option books for the live view (in the actor's thread)."""


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
        self.focus = ChainFocus(tuple(settings.currencies), self.cs.chain_strikes)
        self.renderer = Renderer()  # the full screen's panes, each rendered again only when its input changed
        self.lines = LineRunner(settings, self.desk, self.trading, origin=ORIGIN, say=self.say, publish=self.publish,
                                log=self.log, now=context.clock.now, out=self.out, focus=self.focus)
        self._refresh_s = 1.0 / self.cs.refresh_hz
        self._refresh_due = 0.0
        self._requests = 0
        self._alarm: Alarm | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def on_start(self) -> None:
        self._refresh_due = time.monotonic()
        self._alarm = Alarm(self._ring, name=f"{self.context.name}-refresh")
        self._alarm.set(self._refresh_due)
        if self.cs.instrument:
            self.trading.instrument = self.cs.instrument
            self.focus.follow(currency_of(self.cs.instrument))
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
        if self._alarm is not None:
            self._alarm.close()
        if self.terminal is not None:
            self.terminal.close()

    def on_failure(self, *args: Any) -> None:
        # The terminal outlives a failed actor (its successor takes it over); the alarm does not.
        if self._alarm is not None:
            self._alarm.close()
        super().on_failure(*args)

    # -- the live option data -----------------------------------------------------------------------
    def _ring(self) -> None:
        """In the alarm's thread: the work is the actor's, in its own thread."""
        try:
            self.actor_ref.tell(_Refresh())
        except pykka.ActorDeadError:
            pass

    @handles(_Refresh)
    def on_refresh(self, _tick: _Refresh) -> None:
        self._print_due_chain()
        self._refresh_now()
        # The next one a period after the last, not after this one ran late (no burst to catch up).
        self._refresh_due = max(self._refresh_due + self._refresh_s, time.monotonic())
        if self._alarm is not None:
            self._alarm.set(self._refresh_due)

    def _refresh_now(self) -> None:
        """Ask the option keepers for what is shown live (also at once after a focus move)."""
        self._requests += 1
        for request in live_requests(self.desk, self.focus, self.trading.option, self.context.clock.now(),
                                     self._requests):
            self.publish(request)

    @handles(ChainView)
    def on_chain_view(self, view: ChainView) -> None:
        self.lines.on_chain_view(view)  # the desk's picture, or a target line's candidates
        self._print_due_chain()

    def _print_due_chain(self) -> None:
        """A ``chain`` line waiting for its live answer prints once it came (or waited enough)."""
        chain = chain_due(self.desk, self.focus, self.context.clock.now())
        if chain is not None:
            self.say(chain)

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

    @handles(IndexPrice, VolatilityIndex, PortfolioChanged, ChainSnapshot, SurfaceSnapshot)
    def on_picture(self, message: IndexPrice | VolatilityIndex | PortfolioChanged | ChainSnapshot | SurfaceSnapshot
                   ) -> None:
        self.desk.take(message)

    @handles(PlatformState)
    def on_platform_state(self, state: PlatformState) -> None:
        if self.desk.on_platform_state(state):
            if state.locked:
                self.say(f"ALERT: Deribit locked trading on {state.price_index}: orders on it are refused and "
                         "the hedger holds until it is unlocked", "bold red")
            else:
                self.say(f"Deribit unlocked trading on {state.price_index}", "green")

    @handles(RecorderStatus)
    def on_recorder(self, status: RecorderStatus) -> None:
        before = self.desk.recorder
        self.desk.on_recorder(status)
        state = database_state(status)
        if before is not None and database_state(before) != state:
            self.say(f"recorder: database {'reachable again' if state == 'reachable' else state}"
                     f"{': ' + status.last_error if status.last_error and not status.reachable else ''}",
                     "green" if state == "reachable" else "bold red")

    @handles(HedgerStatus, VegaHedgerStatus)
    def on_hedger(self, status: HedgerStatus | VegaHedgerStatus) -> None:
        if isinstance(status, VegaHedgerStatus):  # the vega hedger's: the line runner says it
            return self.lines.on_vega_hedger(status, self.started)
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
        self.lines.on_hedger(status)

    @handles(PlanStatus)
    def on_plan_status(self, status: PlanStatus) -> None:
        self.lines.on_plan_status(status)

    @handles(UserTrade)
    def on_fill(self, trade: UserTrade) -> None:
        """One line per fill (its price and fee), whether it came in an order's answer or after."""
        if trade.trade_id in self.seen_trades:
            return
        self.seen_trades.append(trade.trade_id)
        self.say(describe_fill(trade, self.desk.instrument(trade.instrument_name)),
                 "green" if trade.direction == "buy" else "red")

    @handles(CommandResult, CommandFailed)
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        if answer.origin != ORIGIN or not answer.request_key.startswith(self.trading.key_prefix):
            return
        # The fills the answer carries first, then what became of the order (no price of its own).
        for trade in answer.trades if isinstance(answer, CommandResult) else ():
            self.on_fill(trade)
        order = answer.order if isinstance(answer, CommandResult) else None
        instrument = self.desk.instrument(order.instrument_name) if order is not None else None
        said = describe_answer(answer, instrument)
        self.say(said, "red" if isinstance(answer, CommandFailed) else "")
        if isinstance(answer, CommandFailed) and self.terminal is not None:
            self.terminal.note_failure(said[:120])  # a piped session that had one ends with status 1
        self.lines.on_answer(answer)

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
        if self.trading.instrument:
            self.focus.follow(currency_of(self.trading.instrument))
        summary = self.trading.describe(self.desk)
        if summary is not None:
            self.say(summary, "bold")
            self.log.info("console_configured", instrument=self.trading.instrument,
                          size_multiplier=self.trading.size_multiplier)
        return None

    @handles(WaitDone)
    def on_wait_done(self, request: WaitDone) -> bool:
        return self.lines.wait_done(request.key)

    @handles(GetLink)
    def on_get_link(self, _request: GetLink) -> Link:
        return Link(self.desk.connection, self.desk.link_up)

    @handles(StopProgram)
    def on_stop_program(self, request: StopProgram) -> None:
        self.log.info("console_stops_the_program", reason=request.reason, status=int(request.status))
        self.publish(StopRequested(reason=request.reason, origin=ORIGIN, status=request.status))

    @handles(Say)
    def on_say(self, message: Say) -> None:
        self.say(message.text, message.style)

    # -- the full screen ---------------------------------------------------------------------------------
    @handles(GetScreenFrame)
    def on_screen_frame(self, request: GetScreenFrame) -> ScreenFrame:
        # What the console says goes to the messages pane, as wide as the screen.
        if self.out.width != request.width:
            self.out.width = request.width
        return render_frame(self.desk, self.focus, self.settings.venue, request.width, request.height,
                            self.context.clock.now(), self.renderer)

    @handles(MoveChainFocus)
    def on_move_focus(self, request: MoveChainFocus) -> None:
        now = self.context.clock.now()
        match request.move:
            case FocusMove.NEXT_EXPIRY:
                self.focus.next_expiry(self.desk, now)
            case FocusMove.PREVIOUS_EXPIRY:
                self.focus.previous_expiry(self.desk, now)
            case FocusMove.NEXT_CURRENCY:
                self.focus.next_currency(self.desk)
            case FocusMove.OTHER_COLUMNS | FocusMove.RISK:
                self.focus.toggle_view(risk=request.move is FocusMove.RISK)
        self._refresh_now()

    # -- executing a line -------------------------------------------------------------------------------
    @handles(RunLine)
    def on_line(self, request: RunLine) -> LineOutcome:
        return self.lines.run(request)
