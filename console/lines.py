"""What a console line does: the lines a :class:`~console.terminal.Terminal` reads, run against
the desk's picture (:class:`~console.desk_state.DeskState`) and one console's trading context
(:class:`~console.orders.Trading`). A :class:`LineRunner` says what happens and publishes the
orders, cancels and hedger controls a line becomes through the callables it is given (the
Console actor's), keeps the commands sent and not yet answered, and what a piped line waits for.
A failure while running one line is said and logged; the next line runs as before.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console as RichConsole
from rich.console import RenderableType

from config.settings import Settings
from console.chain_focus import LIVE_ANSWER_WAIT_S, ChainFocus, focus_is_live, focused_chain, live_requests
from console.desk_state import ChainWait, DeskState, HedgerWait, ScriptWait
from console.exposure_lines import ExposureLines, ExposureWait
from console.grammar import (
    ORDER_COMMANDS,
    Cancel,
    ChangeInstrument,
    Command,
    Hedging,
    HelpOn,
    OrderCommand,
    Override,
    ParseError,
    PlanAction,
    Plot,
    Quit,
    ResetSizeMultiplier,
    Scenario,
    SetContractType,
    SetHedgeStep,
    SetTarget,
    SetVegaHedge,
    Show,
    ShowChain,
    ShowRisk,
    Topic,
    VegaHedging,
    parse_line,
)
from console.orders import Refusal, Trading, describe_cancel, describe_order, typo_warning
from console.risk_view import (
    LiveMarksWait,
    positions_of,
    risk_view,
    scenario_file,
    scenario_of,
    scenario_paths,
    scenario_spec,
    scenario_summary,
    scenario_table,
)
from console.terminal import LineOutcome, RunLine, start_plot
from console.views import alert_lines, describe_vega_hedger, help_view, topic_view
from messages.commands import CommandFailed, CommandResult, ExchangeCommand, PlaceOrder
from messages.exposure import PlanStatus, SetVegaBand, VegaHedgerControl, VegaHedgerStatus
from messages.hedging import HedgerControl, HedgerStatus, SetHedgeBand
from messages.state import ChainView
from messages.system import StopRequested
from runtime.logs import run_id
from sql.scenario_plot import write_scenario_file

#: Where the console's plots go, under the data directory.
PLOTS_DIR = "plots"
#: The command line's word for each kind of plot the console reads (``main.py plot --what``).
_PLOT_WHAT = {"smile": "smile", "term": "term", "heatmap": "surface"}


def plot_request(plot: Plot, currency: str, data_dir: str, now: float) -> tuple[Path, tuple[str, ...]]:
    """The PNG a console ``plot`` writes (``DATA_DIR/plots/CURRENCY-WHAT[-EXPIRY]-YYYYMMDD-HHMMSS.png``,
    in UTC) and the arguments of ``main.py plot`` that draw it."""
    stamp = dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = "-".join([currency, plot.what, *([plot.expiry] if plot.expiry else []), stamp])
    out = Path(data_dir) / PLOTS_DIR / f"{name}.png"
    args = ("--what", _PLOT_WHAT[plot.what], "--currency", currency, "--out", str(out),
            *(("--expiry", plot.expiry) if plot.expiry else ()))
    return out, args


class Printer(Protocol):
    """Where a line's text goes (the Console's screen), with a rich style."""

    def __call__(self, message: RenderableType | str, style: str = "") -> None: ...


class LineRunner:
    """Runs one console's lines (see the module doc). ``say(text_or_renderable, style)`` prints;
    ``publish`` puts a message on the bus; ``now`` is the program's clock."""

    def __init__(self, settings: Settings, desk: DeskState, trading: Trading, *, origin: str,
                 say: Printer, publish: Callable[[object], None],
                 log: Any, now: Callable[[], float], out: RichConsole, focus: ChainFocus | None = None) -> None:
        self.settings = settings
        self.cs = settings.console
        self.desk = desk
        self.trading = trading
        self.origin = origin
        self.say = say
        self.publish = publish
        self.log = log
        self.now = now
        self.out = out
        self.pending: dict[str, ExchangeCommand] = {}  # request key -> command sent, not answered yet
        self.waits: dict[str, ScriptWait | HedgerWait | ChainWait | LiveMarksWait | ExposureWait] = {}
        self.focus = focus or ChainFocus(tuple(settings.currencies), settings.console.chain_strikes)
        self._vega_said: dict[str, str] = {}  # the last vega hedger line said, by currency
        self.exposure = ExposureLines(settings, desk, origin=origin, say=say, publish=publish, log=log, now=now,
                                      key=trading.key, key_prefix=trading.key_prefix, waits=self.waits)

    # -- what comes back ---------------------------------------------------------------------------------
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        self.pending.pop(answer.request_key, None)
        for wait in self.waits.values():
            if isinstance(wait, ScriptWait):
                wait.on_answer(answer)

    def on_hedger(self, status: HedgerStatus) -> None:
        for wait in self.waits.values():
            if isinstance(wait, HedgerWait):
                wait.on_status(status)

    def on_vega_hedger(self, status: VegaHedgerStatus, started: bool) -> None:
        """A vega hedger's status: kept; said when it answers this console, or (once started) when it
        changed; its alert said once, in red."""
        before = self.desk.vega_hedgers.get(status.currency)
        self.desk.on_vega_hedger(status)
        ours = status.request_key.startswith(self.trading.key_prefix)
        changed = before is None or (before.active, before.message) != (status.active, status.message)
        text = describe_vega_hedger(status)
        asked = ours and "-vega-status-" in status.request_key  # a status asked for is said even unchanged
        if asked or ((ours or (changed and started)) and self._vega_said.get(status.currency) != text):
            self._vega_said[status.currency] = text
            self.say(text, "" if status.active or ours else "yellow")
        if status.alert and (before is None or before.alert != status.alert):
            self.say(f"ALERT vega hedger {status.currency} switched itself off: {status.alert}", "bold white on red")
        for wait in self.waits.values():
            if isinstance(wait, HedgerWait):
                wait.on_status(status)
    def on_chain_view(self, view: ChainView) -> None:
        """A keeper's live answer: a ``target`` line's is the planner's alone, any other the desk's picture."""
        if not self.exposure.on_chain_view(view):
            self.desk.on_chain_view(view)

    def on_plan_status(self, status: PlanStatus) -> None:
        self.desk.on_plan_status(status)
        self.exposure.on_plan_status(status)

    def wait_done(self, key: str) -> bool:
        """Whether what the piped line ``key`` waits for happened (or waited too long: said)."""
        wait = self.waits.get(key)
        if wait is None:
            return True
        self.exposure.due()
        missing = wait.missing(self.desk)
        if not missing:
            del self.waits[key]
            if isinstance(wait, LiveMarksWait):
                wait.finish()
            return True
        if time.monotonic() > wait.deadline:
            del self.waits[key]
            self.say(f"still waiting for {', '.join(missing)}; going on with the next line", "yellow")
            self.log.warning("console_wait_timeout", missing=missing)
            if isinstance(wait, LiveMarksWait):
                wait.finish()
            return True
        return False

    # -- a line ------------------------------------------------------------------------------------------
    def run(self, request: RunLine) -> LineOutcome:
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
                if not request.wait:  # a piped session is stopped by its terminal, with its exit status
                    self.publish(StopRequested(reason="quit", origin=self.origin))
                return LineOutcome(quit=True)
            case ChangeInstrument():
                return LineOutcome(follow_up="instrument")
            case ResetSizeMultiplier():
                return LineOutcome(follow_up="multiplier")
            case Show(topic="help"):
                self.say(help_view(self.desk, self._currency(), None, self.now()))
            case Show(topic=topic):
                return self._show(topic, request.wait)
            case ShowChain(expiry=expiry, currency=currency):
                return self._chain(currency, expiry, request.wait)
            case Plot(what="scenario"):
                return self._scenario(command.scenario or Scenario(), request.wait, plot=True)
            case Plot():
                return self._plot(command)
            case ShowRisk(currency=currency):
                return self._risk(currency, request.wait)
            case Scenario():
                return self._scenario(command, request.wait)
            case HelpOn(typed=typed):
                self.say(help_view(self.desk, self._currency(), typed, self.now()))
            case Hedging(action="acknowledge") if not self.desk.alerts():
                self.say("no hedger alert to acknowledge")
            case Hedging() | SetHedgeStep():
                return self._hedger(trading.hedger_message(command, self.desk, self._currency()), request.wait)
            case VegaHedging() | SetVegaHedge():
                return self._vega(command, request.wait)
            case SetContractType(instrument_name=name):
                refusal = trading.choose_option(name, self.desk)
                if refusal is not None:
                    self.say(f"{refusal}; no option is chosen now", "red")
                    return LineOutcome(error=True)
                self.say(f"options: buyOption/sellOption trade {name}")
            case Cancel():
                return self._cancel(command, request.wait)
            case SetTarget():
                return self.exposure.target(command, request.wait)
            case PlanAction():
                return self.exposure.act(command, request.wait)
            case Override(order=order):
                return self._order(order, request.wait, override=True)
            case _ if isinstance(command, ORDER_COMMANDS):
                return self._order(command, request.wait)
        return LineOutcome()

    def _chain(self, currency: str | None, expiry: str | None, wait: bool) -> LineOutcome:
        """``chain [CURRENCY] [EXPIRY]``: focus there and print it, live. A focus just moved has
        no live answer yet: it is asked for now and printed when it comes (the Console's
        ``chain_due``); a piped line waits for that."""
        now = self.now()
        error = self.focus.choose(currency, expiry, self.desk, now)
        if error is not None:
            self.say(f"chain: {error}", "red")
            return LineOutcome(error=True)
        if focus_is_live(self.desk, self.focus, now):
            self.focus.pending_until = None
            self.say(focused_chain(self.desk, self.focus, now))
            return LineOutcome()
        self.focus.pending_until = now + LIVE_ANSWER_WAIT_S
        for ask in live_requests(self.desk, self.focus, self.trading.option, now, 0):
            self.publish(ask)
        if not wait:
            return LineOutcome()
        key = self.trading.key("chain")
        self.waits[key] = ChainWait(lambda: self.focus.pending_until is None,
                                    time.monotonic() + LIVE_ANSWER_WAIT_S + 2.0)
        return LineOutcome(wait_key=key)

    def _currency(self) -> str:
        return self.trading.currency(self.settings.currencies[0])

    def _plot(self, plot: Plot) -> LineOutcome:
        currency = plot.currency or self._currency()
        if currency not in self.settings.currencies:
            self.say(f"not understood, nothing plotted: plot takes one of the desk's currencies "
                     f"({', '.join(self.settings.currencies)}), got {currency}", "red")
            return LineOutcome(error=True)
        out, args = plot_request(plot, currency, self.settings.data_dir, self.now())
        what = f"{plot.what}{' of ' + plot.expiry if plot.expiry else ''}"
        self.say(f"plotting the {currency} {what} of the last recorded minute into {out} (in the background)")
        start_plot(args, self.settings, self.out)
        return LineOutcome()

    # -- risk and scenarios (console/risk_view.py) ---------------------------------------------------
    def _desk_currency(self, currency: str | None, what: str) -> str | None:
        """``currency`` (None: the chosen instrument's) if it is one of the desk's; else says so."""
        chosen = currency or self._currency()
        if chosen in self.settings.currencies:
            return chosen
        self.say(f"{what}: {chosen} is not one of the desk's currencies ({', '.join(self.settings.currencies)})",
                 "red")
        return None

    def _after_live_marks(self, currencies: tuple[str, ...], wait: bool, show: Callable[[], None]) -> LineOutcome:
        """``show`` now, or, for a piped line while a held option has no live quote yet, once
        they came (the console asks for them at every refresh) or it waited long enough."""
        waiting = LiveMarksWait(currencies, self.now, time.monotonic() + LIVE_ANSWER_WAIT_S + 2.0, show)
        if not wait or not waiting.missing(self.desk):
            show()
            return LineOutcome()
        key = self.trading.key("risk")
        self.waits[key] = waiting
        return LineOutcome(wait_key=key)

    def _risk(self, currency: str | None, wait: bool) -> LineOutcome:
        if currency is not None and self._desk_currency(currency, "risk") is None:
            return LineOutcome(error=True)
        currencies = (currency,) if currency else tuple(self.settings.currencies)
        return self._after_live_marks(currencies, wait, lambda: self.say(risk_view(self.desk, currencies,
                                                                                   self.now())))

    def _scenario(self, command: Scenario, wait: bool, plot: bool = False) -> LineOutcome:
        """``scenario``: the grid printed; ``plot scenario``: also written as a file that ``main.py
        plot --what scenario`` draws in the background."""
        currency = self._desk_currency(command.currency, "scenario")
        if currency is None:
            return LineOutcome(error=True)
        spec = scenario_spec(command, self.settings.risk)
        portfolio = self.desk.portfolios.get(currency)
        if portfolio is None or not any(p.size for p in portfolio.positions):
            self.say(f"scenario: no {currency} positions, nothing to reprice", "yellow")
            return LineOutcome()

        def show() -> None:
            now = self.now()
            grid = scenario_of(self.desk, currency, spec, now)
            if isinstance(grid, str):
                self.say(f"scenario: {grid}", "yellow")
                return
            index = self.desk.index_price(currency)
            if not plot:
                self.say(scenario_table(grid, index, currency in self.desk.surfaces))
            else:
                grid_file, out = scenario_paths(currency, Path(self.settings.data_dir) / PLOTS_DIR, now)
                write_scenario_file(scenario_file(grid, index, positions_of(self.desk, currency)), grid_file)
                self.say(f"{scenario_summary(grid)}; plotting it into {out} (in the background)")
                start_plot(("--what", "scenario", "--grid", str(grid_file), "--out", str(out)), self.settings,
                           self.out)

        return self._after_live_marks((currency,), wait, show)

    def _describe_order(self, order: PlaceOrder) -> str:
        return describe_order(order, self.desk.instrument(order.instrument_name))

    def _show(self, topic: Topic, wait: bool) -> LineOutcome:
        trading = self.trading
        self.say(topic_view(topic, self.desk, trading.instrument, trading.option, trading.size_multiplier,
                            self._currency(), self.now()))
        if topic == "status":  # which run's lines in the JSON log are this desk's
            self.say(f"run {run_id()} (pid {os.getpid()})")
        if topic == "hedging":  # the table, then the hedger's own answer
            return self._hedger(HedgerControl(action="status", origin=self.origin, request_key=trading.key("hedger"),
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

    def _vega(self, command: VegaHedging | SetVegaHedge, wait: bool) -> LineOutcome:
        """A vega hedging line to the vega hedger of the chosen currency (``setVegaTenor`` keeps the
        band it last said)."""
        currency = self._currency()
        key = self.trading.key("vega-status" if command == VegaHedging("status") else "vega")
        message: VegaHedgerControl | SetVegaBand
        what: str
        if isinstance(command, VegaHedging):
            message = VegaHedgerControl(action=command.action, origin=self.origin, request_key=key, currency=currency)
            what = command.action
        else:
            band = command.band_usd
            if band is None:
                shown = self.desk.vega_hedgers.get(currency)
                if shown is None:
                    self.say(f"no status from the {currency} vega hedger yet: setVegaBand:BAND,TENOR sets both; "
                             "nothing sent", "red")
                    return LineOutcome(error=True)
                band = shown.band_usd
            message = SetVegaBand(band_usd=band, tenor_days=command.tenor_days, origin=self.origin, request_key=key,
                                  currency=currency)
            what = f"band {band:,.0f} USD/vol pt" + (f", tenor {command.tenor_days:g} d" if command.tenor_days else "")
        self.publish(message)
        self.say(f"sent to the {currency} vega hedger: {what}")
        if not wait:
            return LineOutcome()
        self.waits[key] = HedgerWait(key, time.monotonic() + self.cs.hedger_wait_s)
        return LineOutcome(wait_key=key)

    def _order(self, command: OrderCommand, wait: bool, override: bool = False) -> LineOutcome:
        orders = self.trading.orders(command, self.desk, self.now(), override)
        if override and not isinstance(orders, Refusal) and self.desk.hedged_by(orders[0].instrument_name):
            self.log.info("console_override", instrument=orders[0].instrument_name)
            self.say(f"override: sending on {orders[0].instrument_name} although the hedger owns it; it will hedge "
                     "the delta this order adds", "yellow")
        if override and not isinstance(orders, Refusal):
            self._say_typo_override(command, orders)
        if isinstance(orders, Refusal):
            self.log.info("console_refused", reason=orders.reason, held=orders.held)
            self.say(f"held back: {orders}" if orders.held else f"refused, nothing sent: {orders}",
                     "yellow" if orders.held else "red")
            return LineOutcome(error=True)
        script_wait = ScriptWait.for_orders(orders, self.desk, time.monotonic() + self.cs.order_wait_s)
        return self._send(orders, self._describe_order, script_wait, wait, each=True)

    def _say_typo_override(self, command: OrderCommand, orders: tuple[PlaceOrder, ...]) -> None:
        """An order sent with override that would have been held back as a typo: said and logged."""
        ctx = self.trading.context(command, self.desk, self.now())
        if isinstance(ctx, Refusal):
            return
        warning = typo_warning(command, [(o.side, o.price) for o in orders if o.post_only], ctx)
        if warning is not None:
            self.log.info("console_override_typo", warning=warning)
            self.say(f"override: sending as typed although {warning}", "yellow")

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
