"""The console's exposure commands: ``target``, ``confirm``, ``cancel plan`` and ``plan``.

``target vega 5000 BTC 30d`` asks the currency's option BookKeeper for live quotes of the options
near the tenor (and of the options held, to value the book): a ``ChainViewRequest`` with a
negative ``request_id`` of this console's own (the refresh's are positive), so its answer is the
planner's alone and leaves the chain shown alone. When the answer comes, the currency's greeks are
taken from :mod:`desk.risk`, :func:`desk.exposure.plan_exposure` plans, and the plan is printed:
nothing is sent. ``confirm`` publishes a :class:`~messages.exposure.WorkPlan` for the plan shown
while it is valid (not expired, the link up, the portfolio reconciled, no other plan being worked);
``cancel plan`` a :class:`~messages.exposure.CancelPlan`; ``plan`` shows the Assistant's latest
:class:`~messages.exposure.PlanStatus` with the greeks the fills reached (piped, while a plan is
worked, it then waits for the plan to end: a script's way to wait). With ``--paper`` nothing is
published.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import desk.risk as risk
from config.settings import Settings
from console.desk_state import DeskState
from console.grammar import PlanAction, SetTarget
from console.terminal import LineOutcome
from console.views import fmt
from deribit.instruments import currency_of
from desk.exposure import ExposureLimits, TargetRequest, candidate_names, plan_exposure
from messages.exposure import (
    CancelPlan,
    ExposurePlan,
    Greek,
    GreekFigures,
    PlanState,
    PlanStatus,
    WorkPlan,
)
from messages.state import ChainView, ChainViewRequest, OptionQuote

GREEK_UNITS = {Greek.DELTA: "coin", Greek.GAMMA: "USD/1%", Greek.VEGA: "USD/vol pt", Greek.THETA: "USD/day"}
_ORDER = (Greek.DELTA, Greek.GAMMA, Greek.VEGA, Greek.THETA)


def limits_of(settings: Settings) -> ExposureLimits:
    """The planner's limits from ``[exposure]`` (and the hedger's IV and index plausibility bounds)."""
    ex = settings.exposure
    return ExposureLimits(
        max_legs=ex.max_legs, max_leg_notional_usd=ex.max_leg_notional_usd, max_notional_usd=ex.max_notional_usd,
        max_premium_usd=ex.max_premium_usd, tolerance_pct=ex.tolerance_pct,
        bands=GreekFigures(delta=ex.delta_band, gamma=ex.gamma_band_usd, vega=ex.vega_band_usd,
                           theta=ex.theta_band_usd),
        tenor_window_pct=ex.tenor_window_pct, max_spread_pct=ex.max_spread_pct, max_quote_age_s=ex.max_quote_age_s,
        max_iv_pct=settings.hedger.max_iv_pct, max_index_deviation_pct=settings.hedger.max_index_deviation_pct,
        max_candidates=ex.max_candidates, valid_s=ex.plan_valid_s, time_limit_s=ex.solve_time_s,
        leg_penalty_usd=ex.leg_penalty_usd)


def describe_target(command: SetTarget) -> str:
    tenor = f" {command.tenor_days:g}d" if command.tenor_days is not None else ""
    hold = f" hold {','.join(g.value for g in command.holds)}" if command.holds else ""
    return f"target {command.greek.value} {command.amount:g} {command.currency}{tenor}{hold}"


def _clock(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%H:%M:%S UTC")


def _figures_row(label: str, figures: GreekFigures) -> str:
    return f"  {label:<8}" + "".join(f"{fmt(figures.of(g), 4 if g is Greek.DELTA else 2):>19}" for g in _ORDER)


def plan_text(plan: ExposurePlan, now: float) -> str:
    """The plan as printed: legs with prices, cost and greeks; greeks before and after."""
    unit = GREEK_UNITS[plan.greek]
    tenor = f" near {plan.tenor_days:g} days" if plan.tenor_days is not None else ""
    holding = f", holding {', '.join(g.value for g in plan.holds)}" if plan.holds else ""
    head = (f"plan {plan.plan_id}: {plan.currency} {plan.greek.value} {fmt(plan.before.of(plan.greek), 2)} -> "
            f"{fmt(plan.target, 2)} {unit} (within {fmt(plan.tolerance, 2)}){tenor}{holding}")
    if not plan.reachable:
        return f"{head}\n  no plan: {plan.reason}; nothing sent"
    if not plan.legs:
        return f"{head}\n  {plan.reason}"
    lines = [head, f"  {'leg':<4}{'option':<23}{'side':<5}{'amount':>8}{'bid':>9}{'ask':>9}{'mid':>9}"
                   f"{'cost USD':>10}{'delta':>8}{'gamma':>10}{'vega':>9}{'theta':>9}"]
    for leg in plan.legs:
        g = leg.greeks
        lines.append(f"  {leg.leg:<4}{leg.instrument_name:<23}{leg.side:<5}{fmt(leg.amount):>8}{fmt(leg.bid):>9}"
                     f"{fmt(leg.ask):>9}{fmt(leg.mid):>9}{fmt(leg.cost_usd, 2):>10}{fmt(g.delta, 3):>8}"
                     f"{fmt(g.gamma, 0):>10}{fmt(g.vega, 1):>9}{fmt(g.theta, 1):>9}")
    lines.append(f"  {'greeks':<8}" + "".join(f"{g.value + ' (' + GREEK_UNITS[g] + ')':>19}" for g in _ORDER))
    lines += [_figures_row("before", plan.before), _figures_row("after", plan.after)]
    paid = "paid" if plan.premium_usd >= 0 else "received"
    lines.append(f"  expected cost {fmt(plan.cost_usd, 2)} USD (half the spreads and the fees); premium "
                 f"{fmt(abs(plan.premium_usd), 2)} USD {paid} at the mids")
    lines.append("  delta is left to the hedger" + (f"; {plan.reason}" if plan.reason else ""))
    if now < plan.expires_at:
        lines.append(f"  nothing sent: confirm (or confirm {plan.plan_id}) before {_clock(plan.expires_at)} to have "
                     "it worked")
    return "\n".join(lines)


def reached(plan: ExposurePlan, status: PlanStatus) -> GreekFigures:
    """The greeks the fills reached: ``before`` plus each leg's greeks times its filled share."""
    out = {g: plan.before.of(g) for g in _ORDER}
    filled = {p.leg: p.filled for p in status.legs}
    for leg in plan.legs:
        share = min(max(filled.get(leg.leg, 0.0) / leg.amount, 0.0), 1.0) if leg.amount > 0 else 0.0
        for g in _ORDER:
            out[g] += share * leg.greeks.of(g)
    return GreekFigures(**{g.value: v for g, v in out.items()})


def status_text(status: PlanStatus, plan: ExposurePlan | None) -> str:
    """The plan being worked: its state, each leg's progress and the greeks the fills reached."""
    if status.plan_id == 0:
        return f"no plan is being worked{': ' + status.message if status.message else ''}"
    lines = [f"plan {status.plan_id} {status.currency}: {status.state.value}"
             f"{' (' + status.message + ')' if status.message else ''}"]
    for p in status.legs:
        price = f" at {fmt(p.price)}" if p.price is not None else ""
        average = f", average {fmt(p.average_price)}" if p.average_price is not None else ""
        lines.append(f"  leg {p.leg} {p.side} {p.instrument_name}: {fmt(p.filled)} of {fmt(p.amount)} filled"
                     f"{average}; {p.state.value}{price}{f', {p.reprices} reprices' if p.reprices else ''}")
    if plan is not None and plan.plan_id == status.plan_id:
        got = reached(plan, status)
        lines.append(f"  {plan.greek.value} reached {fmt(got.of(plan.greek), 2)} of the target "
                     f"{fmt(plan.target, 2)} {GREEK_UNITS[plan.greek]} (from {fmt(plan.before.of(plan.greek), 2)})")
        lines.append(f"  {'greeks':<8}" + "".join(f"{g.value:>19}" for g in _ORDER))
        lines += [_figures_row("before", plan.before), _figures_row("reached", got),
                  _figures_row("planned", plan.after)]
    return "\n".join(lines)


def current_greeks(state: DeskState, currency: str, quotes: tuple[OptionQuote, ...],
                   now: float) -> GreekFigures | str:
    """The currency's greeks now (:func:`desk.risk.currency_risk` over its portfolio and the live
    marks of the options held), or why they cannot be known."""
    portfolio = state.portfolios.get(currency)
    if portfolio is None or not portfolio.reconciled or portfolio.reconciling:
        return f"the {currency} portfolio is not reconciled yet"
    marks = {}
    for quote in quotes:
        mark = risk.mark_of(quote, state.instrument(quote.instrument_name))
        if mark is not None:
            marks[quote.instrument_name] = mark
    book = risk.currency_risk(portfolio, marks, state.index_price(currency), now)
    if book.missing:
        return f"{len(book.missing)} position(s) cannot be valued ({', '.join(book.missing[:3])})"
    total = book.total
    return GreekFigures(delta=total.delta, gamma=total.gamma_usd_1pct, vega=total.vega_usd, theta=total.theta_usd)


@dataclass
class PendingTarget:
    """A ``target`` line waiting for its candidates' live quotes."""

    command: SetTarget
    request_id: int
    names: tuple[str, ...]
    deadline: float  # the program's clock
    key: str


@dataclass
class ExposureWait:
    """A piped exposure line: ``target`` waits for its plan to be printed, ``confirm`` and
    ``cancel plan`` for the Assistant's answer, ``plan`` for the plan worked to end."""

    done: Callable[[], bool]
    what: str
    deadline: float  # monotonic

    def missing(self, _state: DeskState) -> list[str]:
        return [] if self.done() else [self.what]


class ExposureLines:
    """One console's exposure commands (see the module doc). ``key(what)`` makes request keys."""

    def __init__(self, settings: Settings, state: DeskState, *, origin: str, say: Callable[..., None],
                 publish: Callable[[object], None], log: Any, now: Callable[[], float],
                 key: Callable[[str], str], key_prefix: str, waits: dict[str, Any]) -> None:
        self.settings = settings
        self.state = state
        self.origin = origin
        self.say = say
        self.publish = publish
        self.log = log
        self.now = now
        self.key = key
        self.key_prefix = key_prefix
        self.waits = waits  # the LineRunner's: what piped lines wait for
        self.limits = limits_of(settings)
        self.pending: PendingTarget | None = None
        self.shown: ExposurePlan | None = None  # the last plan printed (confirm works it)
        self.plans: dict[int, ExposurePlan] = {}  # confirmed, by id
        self.answered: set[str] = set()  # request keys the Assistant answered
        self.printed: set[str] = set()  # target lines whose plan (or refusal) was printed
        self._requests = 0
        self._last_plan_id = 0
        self._said: dict[int, tuple[object, ...]] = {}

    # -- target ------------------------------------------------------------------------------------
    def target(self, command: SetTarget, wait: bool) -> LineOutcome:
        now = self.now()
        currency = command.currency
        if currency not in self.settings.currencies:
            listed = ", ".join(self.settings.currencies)
            return self._refuse(f"{currency} is not one of the desk's currencies ({listed})")
        options = self.state.options(currency)
        if not options:
            return self._refuse(f"no {currency} options listed yet: the instrument list comes after the connection")
        portfolio = self.state.portfolios.get(currency)
        if portfolio is None or not portfolio.reconciled:
            return self._refuse(f"the {currency} portfolio is not reconciled yet: its greeks are not known")
        names = candidate_names(options, now, command.tenor_days, self.state.index_price(currency), self.limits)
        if not names:
            near = f" within {self.limits.tenor_window_pct:g}% of {command.tenor_days:g} days" if (
                command.tenor_days is not None) else ""
            return self._refuse(f"no {currency} option expires{near} (at least a day out)")
        held = tuple(n for n in self.state.option_names() if currency_of(n) == currency and n not in names)
        self._requests += 1
        key = self.key("target")
        request_id = -self._requests
        self.pending = PendingTarget(command, request_id, names, now + self.settings.exposure.quotes_wait_s, key)
        self.shown = None  # a new target replaces the plan shown: confirm works only what it printed
        self.publish(ChainViewRequest(currency=currency, expiry_ms=None, names=names + held, request_id=request_id))
        self.log.info("console_target", target=describe_target(command), candidates=len(names))
        self.say(f"planning {describe_target(command)}: asking the {currency} option books for {len(names)} "
                 "candidates' live quotes (nothing is sent)")
        if not wait:
            return LineOutcome()
        self.printed.discard(key)
        return self._wait(key, lambda: key in self.printed, "the plan",
                          self.settings.exposure.quotes_wait_s + self.settings.exposure.solve_time_s * 6 + 2.0)

    def on_chain_view(self, view: ChainView) -> bool:
        """A keeper's answer: True when it is a ``target``'s (negative request ids; the pending one's
        is planned and printed now); any answer also times out a target that waited too long."""
        pending = self.pending
        if pending is not None and view.request_id == pending.request_id and view.currency == pending.command.currency:
            self.pending = None
            try:
                self._plan(pending, view)
            except Exception as exc:  # a failure is said and logged; the console (actor) goes on
                self.log.exception("console_plan_failed", target=describe_target(pending.command))
                self.say(f"no plan for {describe_target(pending.command)}: {type(exc).__name__}: {exc} (traceback "
                         "in the log); nothing sent", "bold red")
            return True
        self.due()
        return view.request_id < 0  # an earlier target's late answer: nobody's now

    def due(self) -> None:
        """A ``target`` whose live quotes did not come in time: said once."""
        pending = self.pending
        if pending is not None and self.now() > pending.deadline:
            self.pending = None
            self.printed.add(pending.key)
            self.say(f"no plan: the {pending.command.currency} option books did not answer within "
                     f"{self.settings.exposure.quotes_wait_s:g} s; nothing sent", "red")

    def _plan(self, pending: PendingTarget, view: ChainView) -> None:
        now = self.now()
        command = pending.command
        self.printed.add(pending.key)
        before = current_greeks(self.state, command.currency, view.options, now)
        if isinstance(before, str):
            self.say(f"no plan for {describe_target(command)}: {before}; nothing sent", "red")
            return
        wanted = set(pending.names)
        listing = self.state.instruments.get(command.currency, {})
        quotes = [q for q in view.options if q.instrument_name in wanted]
        self._last_plan_id = plan_id = max(self._last_plan_id + 1, int(now))
        request = TargetRequest(command.currency, command.greek, command.amount, command.tenor_days, command.holds)
        started = time.perf_counter()
        plan = plan_exposure(quotes, listing, before, request, self.limits, now, plan_id,
                             index_price=view.index_price or self.state.index_price(command.currency),
                             linear=view.price_currency.upper() == "USDC")
        self.log.info("console_plan", plan_id=plan_id, reachable=plan.reachable, legs=len(plan.legs),
                      cost_usd=plan.cost_usd, reason=plan.reason, candidates=len(quotes),
                      solve_ms=round((time.perf_counter() - started) * 1000, 1))
        self.shown = plan if plan.reachable and plan.legs else None
        self.say(plan_text(plan, now), "" if plan.reachable else "red")

    # -- confirm, cancel plan, plan ----------------------------------------------------------------
    def act(self, command: PlanAction, wait: bool) -> LineOutcome:
        match command.action:
            case "confirm":
                return self._confirm(wait, command.plan_id)
            case "cancel":
                return self._cancel(wait)
        self.say(self.show())
        return self._wait_for_plan_end() if wait else LineOutcome()

    def _wait_for_plan_end(self) -> LineOutcome:
        """A piped ``plan`` while a plan is worked waits for it to end (done, cancelled or stopped:
        the Assistant's status says so), at most ``console.plan_wait_s``: a script's way to wait."""
        working = self.state.plan_status
        if working is None or working.state is not PlanState.WORKING:
            return LineOutcome()
        seconds = self.settings.console.plan_wait_s
        self.say(f"waiting for plan {working.plan_id} to end (at most {seconds:g} s)")

        def ended() -> bool:
            status = self.state.plan_status
            return status is None or status.plan_id != working.plan_id or status.state is not PlanState.WORKING

        return self._wait(self.key("plan-end"), ended, f"plan {working.plan_id}'s end", seconds)

    def _confirm(self, wait: bool, plan_id: int | None = None) -> LineOutcome:
        plan, now = self.shown, self.now()
        if plan is None:
            return self._refuse("no plan to confirm: target prints one first")
        if plan_id is not None and plan_id != plan.plan_id:
            return self._refuse(f"plan {plan_id} is not the plan shown ({plan.plan_id}); nothing confirmed")
        refusal = self._confirm_refusal(plan, now)
        if refusal:
            return self._refuse(f"plan {plan.plan_id} not confirmed: {refusal}")
        key = self.key("plan")
        work = WorkPlan(plan=plan, origin=self.origin, request_key=key)
        if self.settings.paper:
            self.say(f"paper (not sent): work plan {plan.plan_id} ({len(plan.legs)} legs)", "magenta")
            return LineOutcome()
        self.shown = None  # confirmed once
        self.plans[plan.plan_id] = plan
        self.log.info("console_confirm_plan", plan_id=plan.plan_id, legs=len(plan.legs), request_key=key)
        self.publish(work)
        self.say(f"sent: plan {plan.plan_id} to the assistant ({len(plan.legs)} legs, labels "
                 f"plan-{plan.plan_id}-<leg>)")
        if not wait:
            return LineOutcome()
        return self._wait(key, lambda: key in self.answered, "the assistant's answer",
                          self.settings.console.order_wait_s)

    def _confirm_refusal(self, plan: ExposurePlan, now: float) -> str:
        if now >= plan.expires_at:
            return f"it expired at {_clock(plan.expires_at)}; target again for a fresh one"
        if not self.settings.can_trade and not self.settings.paper:
            return "trading is not allowed on mainnet without --live"
        if not self.state.link_up:
            return "the link to the exchange is down"
        portfolio = self.state.portfolios.get(plan.currency)
        if portfolio is None or not portfolio.reconciled or portfolio.reconciling:
            return f"the {plan.currency} portfolio is not reconciled"
        working = self.state.plan_status
        if working is not None and working.state is PlanState.WORKING and working.plan_id != plan.plan_id:
            return f"plan {working.plan_id} is still being worked: cancel plan first"
        vega = self.state.vega_hedgers.get(plan.currency)
        if vega is not None and vega.active:
            return (f"{plan.currency} vega hedging is active and would trade the plan's fills back to its target: "
                    "deactivate vega hedging first")
        return ""

    def _cancel(self, wait: bool) -> LineOutcome:
        dropped = self.shown
        self.shown = None
        if self.pending is not None:
            self.printed.add(self.pending.key)
            self.pending = None
        working = self.state.plan_status
        plan_id = working.plan_id if working is not None and working.state is PlanState.WORKING else 0
        if dropped is not None:
            self.say(f"plan {dropped.plan_id} dropped (it was not confirmed; nothing was sent for it)")
        key = self.key("cancel-plan")
        cancel = CancelPlan(origin=self.origin, request_key=key, plan_id=plan_id)
        if self.settings.paper:
            self.say(f"paper (not sent): cancel plan {plan_id or '(whichever is worked)'}", "magenta")
            return LineOutcome()
        self.publish(cancel)
        self.log.info("console_cancel_plan", plan_id=plan_id, request_key=key)
        self.say(f"sent: cancel plan {plan_id or '(whichever is worked)'} and its orders")
        if not wait:
            return LineOutcome()
        return self._wait(key, lambda: key in self.answered, "the assistant's answer",
                          self.settings.console.order_wait_s)

    def show(self) -> str:
        status = self.state.plan_status
        out = []
        if status is not None:
            out.append(status_text(status, self.plans.get(status.plan_id)))
        else:
            out.append("no plan is being worked")
        if self.shown is not None:
            out.append(plan_text(self.shown, self.now()))
        return "\n".join(out)

    def on_plan_status(self, status: PlanStatus) -> None:
        """The Assistant's news: printed when it answers this console or its plan's progress changes."""
        if status.request_key:
            self.answered.add(status.request_key)
        # Fills and the plan's state, not each reprice (a leg resting, amending, resting again).
        progress = (status.state, status.message, tuple((p.leg, p.filled) for p in status.legs))
        ours = bool(status.request_key) and status.request_key.startswith(self.key_prefix)
        if ours or self._said.get(status.plan_id) != progress:
            self._said[status.plan_id] = progress
            style = "" if status.state in (PlanState.WORKING, PlanState.DONE) else "yellow"
            self.say(status_text(status, self.plans.get(status.plan_id)), style)

    # -- helpers -----------------------------------------------------------------------------------
    def _refuse(self, why: str) -> LineOutcome:
        self.say(f"refused, nothing sent: {why}", "red")
        return LineOutcome(error=True)

    def _wait(self, key: str, done: Callable[[], bool], what: str, seconds: float) -> LineOutcome:
        self.waits[key] = ExposureWait(done, what, time.monotonic() + seconds)
        return LineOutcome(wait_key=key)
