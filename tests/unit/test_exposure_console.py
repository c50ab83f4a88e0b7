"""The console's exposure commands: the grammar of ``target``, ``confirm``, ``cancel plan`` and
``plan``, and the glue (console/exposure_lines.py) driven through a LineRunner: a target asks the
option books for its candidates' live quotes, plans when they come and prints the plan, sending
nothing; confirm hands the plan shown to the Assistant only while it is valid; cancel plan and plan.

The book's current greeks are desk.risk's (written beside this work): replaced here by a stub
that states them, so that these tests check the console's part alone.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import pytest
import structlog
from rich.console import Console as RichConsole

import desk.risk as risk
from console.desk_state import DeskState
from console.grammar import PlanAction, SetTarget, parse_line
from console.lines import LineRunner
from console.orders import Trading
from console.terminal import RunLine
from desk.book_family import BookFamily
from messages.account import Position
from messages.exposure import (
    CancelPlan,
    ExposurePlan,
    Greek,
    LegProgress,
    LegState,
    PlanState,
    PlanStatus,
    VegaHedgerStatus,
    WorkPlan,
)
from messages.market import BookSnapshot, Greeks, Instrument, InstrumentsLoaded, Ticker
from messages.state import ChainView, ChainViewRequest, OptionQuote, PortfolioChanged
from messages.system import ConnectionState, ConnectionStatus
from quant.black76 import black76_greeks
from tests.support.market import LIMITS
from tests.support.settings import make_settings

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
FORWARD = 100_000.0
DAYS = (7.0, 28.0, 35.0, 91.0)
LABEL = {7.0: "22JAN27", 28.0: "12FEB27", 35.0: "19FEB27", 91.0: "16APR27"}  # NOW + DAYS at 08:00 UTC
STRIKES = (80_000.0, 90_000.0, 100_000.0, 110_000.0, 120_000.0)


# -- grammar --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "command"), [
    ("target vega 5000 BTC 30d", SetTarget(Greek.VEGA, 5000.0, "BTC", 30.0)),
    ("target vega 5000 btc", SetTarget(Greek.VEGA, 5000.0, "BTC")),
    ("TARGET Gamma -20000.5 ETH 7d", SetTarget(Greek.GAMMA, -20000.5, "ETH", 7.0)),
    ("target theta +150 BTC hold gamma", SetTarget(Greek.THETA, 150.0, "BTC", None, (Greek.GAMMA,))),
    ("target vega 5000 BTC 30d hold gamma,theta", SetTarget(Greek.VEGA, 5000.0, "BTC", 30.0,
                                                             (Greek.GAMMA, Greek.THETA))),
    ("target vega 5000 BTC 30d hold gamma, theta,gamma", SetTarget(Greek.VEGA, 5000.0, "BTC", 30.0,
                                                                    (Greek.GAMMA, Greek.THETA))),
    ("target delta 0 BTC", SetTarget(Greek.DELTA, 0.0, "BTC")),
    ("confirm", PlanAction("confirm")),
    ("confirm 1800000000", PlanAction("confirm", 1800000000)),
    ("Cancel Plan", PlanAction("cancel")),
    ("plan", PlanAction("show")),
])
def test_exposure_lines_parse(line: str, command: object) -> None:
    assert parse_line(line) == command


@pytest.mark.parametrize(("line", "says"), [
    ("target", "target needs a greek, an amount and a currency"),
    ("target vega 5000", "target needs a greek, an amount and a currency"),
    ("target rho 5000 BTC", "target needs a greek (delta, gamma, vega or theta), got 'rho'"),
    ("target vega 5e3 BTC", "got '5e3'"),
    ("target vega 1,000 BTC", "no thousands separators"),
    ("target vega -x BTC", "got '-x'"),
    ("target vega nan BTC", "got 'nan'"),
    ("target vega inf BTC", "got 'inf'"),
    ("target vega 5000 B-TC", "target's currency needs a currency"),
    ("target vega 5000 BTC 30", "target's tenor needs a number of days"),
    ("target vega 5000 BTC 0d", "target's tenor needs a number of days"),
    ("target vega 5000 BTC 30d 60d", "only hold GREEKS may follow"),
    ("target vega 5000 BTC 30d hold", "hold needs the greeks to hold"),
    ("target vega 5000 BTC 30d hold gama", "hold needs greeks (delta, gamma, vega or theta) separated by commas"),
    ("target vega 5000 BTC hold vega", "target cannot hold vega, the greek it changes"),
    ("confirmc", "last letter is c"),
    ("confirm plan 7", "confirm needs nothing or the number of the plan shown"),
    ("confirm -7", "confirm needs nothing or the number of the plan shown"),
    ("plans", "unknown command"),
])
def test_garbage_exposure_lines_are_parse_errors_that_say_why(line: str, says: str) -> None:
    parsed = parse_line(line)
    assert parsed is not None and not isinstance(parsed, (SetTarget, PlanAction)), parsed
    assert says in str(parsed)


# -- the glue -------------------------------------------------------------------------------------
def _instrument(name: str, expiry: int, strike: float, call: bool) -> Instrument:
    return Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC", tick_size=0.0001,
                      contract_size=1.0, min_trade_amount=0.1, expiration_timestamp=expiry, creation_timestamp=0,
                      maker_commission=0.0003, taker_commission=0.0003, strike=strike,
                      option_type="call" if call else "put")


def listing() -> tuple[Instrument, ...]:
    out = []
    for days in DAYS:
        expiry = int((NOW + days * 86_400) * 1000)
        for strike in STRIKES:
            for call in (True, False):
                out.append(_instrument(f"BTC-{LABEL[days]}-{int(strike)}-{'C' if call else 'P'}", expiry, strike, call))
    return tuple(out)


def live_quote(inst: Instrument, now: float, size: float = 30.0) -> OptionQuote:
    days = (inst.expiration_timestamp / 1000 - now) / 86_400
    assert inst.strike is not None
    g = black76_greeks(FORWARD, inst.strike, days / 365, 0.6, inst.option_type == "call")
    price = max(float(g.price) / FORWARD, 0.0005)
    return OptionQuote(instrument_name=inst.instrument_name, expiry_ms=inst.expiration_timestamp, strike=inst.strike,
                       option_type=inst.option_type or "call", bid=round(price * 0.99, 4), bid_amount=size,
                       ask=round(price * 1.01, 4) + 0.0001, ask_amount=size, mark_price=price, mark_iv=60.0,
                       underlying_price=FORWARD, index_price=FORWARD, open_interest=None, delta=float(g.delta),
                       gamma=None, vega=None, theta=None, age_s=0.5, stale=False)


class Rig:
    def __init__(self, *, paper: bool = False, reconciled: bool = True, positions: tuple[Position, ...] = (),
                 values: dict[str, Any] | None = None) -> None:
        self.clock = [NOW]
        self.said: list[Any] = []
        self.published: list[Any] = []
        self.settings = make_settings(values or {}, currencies=["BTC"], paper=paper)
        self.desk = DeskState(["BTC"])
        self.desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=listing(), at=NOW))
        self.desk.on_connection(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW,
                                                 authenticated=True, can_trade=True))
        self.portfolio(reconciled, positions)
        self.desk.index["BTC"] = FORWARD
        self.runner = LineRunner(self.settings, self.desk, Trading(LIMITS, key_prefix="k-", paper=paper,
                                                                   trading_allowed=True),
                                 origin="console", say=lambda message, style="": self.said.append(message),
                                 publish=self.published.append, log=structlog.get_logger(), now=lambda: self.clock[0],
                                 out=RichConsole(file=io.StringIO()))

    def portfolio(self, reconciled: bool, positions: tuple[Position, ...] = ()) -> None:
        self.desk.on_portfolio(PortfolioChanged(currency="BTC", at=self.clock[0], positions=positions, open_orders=(),
                                                reconciled=reconciled))

    def run(self, line: str, wait: bool = False) -> Any:
        return self.runner.run(RunLine(line, wait=wait))

    def text(self) -> str:
        return "\n".join(str(s) for s in self.said)

    def answer(self, request: ChainViewRequest, mutate: Any = None) -> ChainView:
        """The keeper's answer to ``request`` (every option it names, live)."""
        by_name = {i.instrument_name: i for i in listing()}
        quotes = tuple(live_quote(by_name[n], self.clock[0]) for n in request.names)
        if mutate is not None:
            quotes = tuple(mutate(q) for q in quotes)
        return ChainView(currency="BTC", at=self.clock[0], request_id=request.request_id, index_price=FORWARD,
                         options=quotes, expiries=tuple(sorted({i.expiration_timestamp for i in listing()})),
                         books=40, synced=40)

    def requests(self) -> list[ChainViewRequest]:
        return [m for m in self.published if isinstance(m, ChainViewRequest)]


@pytest.fixture(autouse=True)
def stated_risk(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """desk.risk states the book's greeks (vega 100 USD, gamma 50, theta -20, delta 0.1) and
    records what it was asked with."""
    asked: list[Any] = []

    def mark_of(quote: OptionQuote, instrument: Instrument | None = None) -> risk.OptionMark | None:
        return risk.OptionMark(instrument_name=quote.instrument_name, expiry_ms=quote.expiry_ms, strike=quote.strike,
                               is_call=quote.option_type == "call", forward=quote.underlying_price or 0.0,
                               mark_iv=(quote.mark_iv or 0.0) / 100, mark_price=quote.mark_price)

    def currency_risk(portfolio: PortfolioChanged, marks: Any, index: float | None, now: float) -> risk.CurrencyRisk:
        asked.append((portfolio, dict(marks), index, now))
        total = risk.Exposure(delta=0.1, gamma_usd_1pct=50.0, vega_usd=100.0, theta_usd=-20.0)
        missing = tuple(p.instrument_name for p in portfolio.positions if p.kind == "option"
                        and p.instrument_name not in marks)
        return risk.CurrencyRisk(currency="BTC", at=now, index_price=index, buckets=(), options=total, total=total,
                                 missing=missing)

    monkeypatch.setattr(risk, "mark_of", mark_of)
    monkeypatch.setattr(risk, "currency_risk", currency_risk)
    return asked


def planned(rig: Rig, line: str = "target vega 5000 BTC 30d") -> ExposurePlan:
    rig.run(line)
    request = rig.requests()[-1]
    rig.runner.on_chain_view(rig.answer(request))
    plan = rig.runner.exposure.shown
    assert plan is not None, rig.text()
    return plan


def test_target_asks_for_the_candidates_plans_and_prints_sending_nothing(stated_risk: list[Any]) -> None:
    rig = Rig()
    outcome = rig.run("target vega 5000 BTC 30d", wait=True)
    assert not outcome.error and outcome.wait_key is not None
    [request] = rig.published
    assert isinstance(request, ChainViewRequest) and request.currency == "BTC" and request.expiry_ms is None
    assert request.request_id < 0  # never one of the refresh's
    # Only the expiries near 30 days (28 and 35 of 7, 28, 35, 91), every strike and type.
    assert set(request.names) == {i.instrument_name for i in listing() if "-12FEB27-" in i.instrument_name
                                  or "-19FEB27-" in i.instrument_name}
    assert "planning target vega 5000 BTC 30d" in rig.text() and "nothing is sent" in rig.text()
    assert not rig.runner.wait_done(outcome.wait_key)
    rig.runner.on_chain_view(rig.answer(request))
    assert rig.runner.wait_done(outcome.wait_key)
    assert "BTC" not in rig.desk.views  # the planner's answer is not the chain's picture
    plan = rig.runner.exposure.shown
    assert plan is not None and plan.reachable and plan.legs
    assert plan.before.vega == 100.0 and abs(plan.after.vega - 5000.0) <= plan.tolerance
    assert all("-12FEB27-" in leg.instrument_name or "-19FEB27-" in leg.instrument_name for leg in plan.legs)
    text = rig.text()
    for word in ("plan", "before", "after", "expected cost", f"confirm {plan.plan_id}) before",
                 plan.legs[0].instrument_name):
        assert word in text
    assert rig.published == [request]  # nothing but the question
    assert stated_risk and stated_risk[-1][3] == NOW


def test_confirm_hands_the_plan_shown_to_the_assistant_once() -> None:
    rig = Rig()
    plan = planned(rig)
    rig.published.clear()
    outcome = rig.run(f"confirm {plan.plan_id}", wait=True)
    assert not outcome.error and outcome.wait_key is not None
    [work] = rig.published
    assert isinstance(work, WorkPlan) and work.plan == plan and work.origin == "console" and work.request_key
    assert not rig.runner.wait_done(outcome.wait_key)
    rig.runner.on_plan_status(PlanStatus(plan_id=plan.plan_id, currency="BTC", state=PlanState.WORKING, at=NOW + 1,
                                         request_key=work.request_key))
    assert rig.runner.wait_done(outcome.wait_key)
    rig.published.clear()
    assert rig.run("confirm").error and rig.published == []
    assert "no plan to confirm" in rig.text()


@pytest.mark.parametrize("spoil", ["expired", "link down", "unreconciled", "another plan", "new target",
                                   "other number"])
def test_confirm_refuses_a_plan_that_is_no_longer_valid(spoil: str) -> None:
    rig = Rig()
    plan = planned(rig)
    if spoil == "expired":
        rig.clock[0] = plan.expires_at
    elif spoil == "link down":
        rig.desk.on_connection(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="simulator", at=NOW))
    elif spoil == "unreconciled":
        rig.portfolio(False)
    elif spoil == "another plan":
        rig.runner.on_plan_status(PlanStatus(plan_id=3, currency="BTC", state=PlanState.WORKING, at=NOW))
    elif spoil == "new target":
        rig.run("target vega 6000 BTC 30d")  # its answer has not come: the plan shown was replaced
    rig.published.clear()
    assert rig.run(f"confirm {plan.plan_id + 1}" if spoil == "other number" else "confirm").error
    assert rig.published == []
    assert any(why in rig.text() for why in ("not confirmed", "no plan to confirm", "is not the plan shown"))


def test_confirm_is_refused_while_the_currency_s_vega_hedger_is_active() -> None:
    """The vega hedger keeps the currency's vega at its target: a plan's fills would be traded back.
    Vega hedging must be deactivated first; an inactive (or another currency's) hedger is no bar."""
    rig = Rig()
    planned(rig)
    rig.desk.on_vega_hedger(VegaHedgerStatus(currency="BTC", active=True, band_usd=500.0, tenor_days=30.0, at=NOW))
    rig.published.clear()
    assert rig.run("confirm").error and rig.published == []
    assert ("not confirmed: BTC vega hedging is active and would trade the plan's fills back to its target: "
            "deactivate vega hedging first") in rig.text()
    rig.desk.on_vega_hedger(VegaHedgerStatus(currency="ETH", active=True, band_usd=500.0, tenor_days=30.0, at=NOW))
    rig.desk.on_vega_hedger(VegaHedgerStatus(currency="BTC", active=False, band_usd=500.0, tenor_days=30.0, at=NOW))
    assert not rig.run("confirm").error
    assert [type(m) for m in rig.published] == [WorkPlan]


def test_paper_sends_nothing() -> None:
    rig = Rig(paper=True)
    planned(rig)
    rig.published.clear()
    assert not rig.run("confirm").error
    assert not rig.run("cancel plan").error
    assert rig.published == []
    assert "paper (not sent): work plan" in rig.text() and "paper (not sent): cancel plan" in rig.text()


def test_cancel_plan_names_the_plan_being_worked_and_drops_one_shown() -> None:
    rig = Rig()
    planned(rig)
    rig.published.clear()
    assert not rig.run("cancel plan").error
    [cancel] = rig.published
    assert isinstance(cancel, CancelPlan) and cancel.plan_id == 0
    assert "dropped" in rig.text() and rig.runner.exposure.shown is None
    rig.runner.on_plan_status(PlanStatus(plan_id=12, currency="BTC", state=PlanState.WORKING, at=NOW + 1))
    rig.published.clear()
    outcome = rig.run("cancel plan", wait=True)
    [cancel] = rig.published
    assert isinstance(cancel, CancelPlan) and cancel.plan_id == 12 and outcome.wait_key is not None
    rig.runner.on_plan_status(PlanStatus(plan_id=12, currency="BTC", state=PlanState.CANCELLED, at=NOW + 2,
                                         request_key=cancel.request_key))
    assert rig.runner.wait_done(outcome.wait_key)


def test_plan_shows_progress_and_the_greeks_reached() -> None:
    rig = Rig()
    plan = planned(rig)
    rig.run("confirm")
    leg = plan.legs[0]
    half = leg.amount / 2
    rig.said.clear()
    rig.runner.on_plan_status(PlanStatus(plan_id=plan.plan_id, currency="BTC", state=PlanState.WORKING, at=NOW + 5,
                                         legs=(LegProgress(leg=1, instrument_name=leg.instrument_name, side=leg.side,
                                                           amount=leg.amount, filled=half, state=LegState.RESTING,
                                                           price=leg.bid),)))
    assert rig.said  # progress is printed as it comes, a reprice alone is not
    rig.said.clear()
    rig.runner.on_plan_status(PlanStatus(plan_id=plan.plan_id, currency="BTC", state=PlanState.WORKING, at=NOW + 6,
                                         legs=(LegProgress(leg=1, instrument_name=leg.instrument_name, side=leg.side,
                                                           amount=leg.amount, filled=half, state=LegState.AMENDING,
                                                           price=leg.bid, reprices=1),)))
    assert rig.said == []
    rig.run("plan")
    text = rig.text()
    assert f"plan {plan.plan_id} BTC: working" in text and f"{leg.instrument_name}" in text and "reached" in text
    reached_vega = plan.before.vega + leg.greeks.vega / 2
    assert f"{reached_vega:,.2f}" in text


def test_target_refuses_what_it_cannot_plan_for() -> None:
    rig = Rig(reconciled=False)
    assert rig.run("target vega 5000 BTC 30d").error and "not reconciled" in rig.text()
    rig = Rig()
    assert rig.run("target vega 5000 ETH 30d").error and "not one of the desk's currencies" in rig.text()
    assert rig.run("target vega 5000 BTC 300d").error and "no BTC option expires within" in rig.text()
    assert rig.requests() == []


def test_positions_that_cannot_be_valued_give_no_plan() -> None:
    held = Position(instrument_name="BTC-22JAN27-100000-C", kind="option", direction="buy", size=1.0)
    rig = Rig(positions=(held,))
    rig.run("target vega 5000 BTC 30d")
    request = rig.requests()[-1]
    assert "BTC-22JAN27-100000-C" in request.names  # asked for, to value the book
    rig.runner.on_chain_view(rig.answer(request, mutate=lambda q: q))
    assert rig.runner.exposure.shown is not None
    rig.said.clear()
    rig.run("target vega 5000 BTC 30d")
    request = rig.requests()[-1]
    view = rig.answer(request)
    unheld = tuple(q for q in view.options if q.instrument_name != held.instrument_name)
    rig.runner.on_chain_view(ChainView(currency="BTC", at=view.at, request_id=view.request_id, index_price=FORWARD,
                                       options=unheld))
    assert rig.runner.exposure.shown is None and "cannot be valued" in rig.text()


def test_hostile_quotes_never_become_legs() -> None:
    rig = Rig()
    rig.run("target vega 5000 BTC 30d")
    request = rig.requests()[-1]

    def spoil(q: OptionQuote) -> OptionQuote:
        # Every call's book is garbage in one way or another; only the puts are fit to plan with.
        if q.option_type == "put":
            return q
        faults = [dict(bid=math.nan), dict(ask=math.inf), dict(bid=q.ask, ask=q.bid), dict(stale=True),
                  dict(mark_iv=1e6), dict(bid=0.0), dict(age_s=1e9), dict(underlying_price=-1.0)]
        return q.__class__(**{**{f: getattr(q, f) for f in q.__struct_fields__},
                              **faults[int(q.strike) // 10_000 % len(faults)]})

    rig.runner.on_chain_view(rig.answer(request, mutate=spoil))
    plan = rig.runner.exposure.shown
    assert plan is not None and plan.legs and all(leg.instrument_name.endswith("-P") for leg in plan.legs)


def test_a_target_whose_answer_never_comes_says_so() -> None:
    rig = Rig()
    outcome = rig.run("target vega 5000 BTC 30d", wait=True)
    rig.clock[0] = NOW + rig.settings.exposure.quotes_wait_s + 0.1
    assert outcome.wait_key is not None and rig.runner.wait_done(outcome.wait_key)
    assert "did not answer" in rig.text() and rig.runner.exposure.shown is None


def test_an_unreachable_target_says_why() -> None:
    rig = Rig()
    rig.run("target vega 500000 BTC 30d")
    rig.runner.on_chain_view(rig.answer(rig.requests()[-1]))
    assert rig.runner.exposure.shown is None
    assert "no plan:" in rig.text() and "nothing sent" in rig.text()
    assert rig.run("confirm").error


def test_a_failure_while_planning_is_said_and_the_console_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    rig.run("target vega 5000 BTC 30d")

    def broken(*_args: Any) -> Any:
        raise RuntimeError("risk is broken")

    monkeypatch.setattr(risk, "currency_risk", broken)
    rig.runner.on_chain_view(rig.answer(rig.requests()[-1]))  # raises nothing
    assert "RuntimeError: risk is broken" in rig.text() and rig.runner.exposure.shown is None
    assert rig.run("confirm").error


def test_the_option_keeper_answers_the_planners_request_and_the_chain_shown_is_untouched() -> None:
    """The real keeper's family (desk.book_family) answers the target's question: every candidate,
    whatever its expiry, with the request's own id; the plan comes from those quotes."""
    rig = Rig()
    family = BookFamily("BTC", "option", publish_top=False)
    family.listed(listing(), NOW)
    for n, inst in enumerate(listing()):
        q = live_quote(inst, NOW)
        family.on_snapshot(BookSnapshot(instrument_name=inst.instrument_name, timestamp=int(NOW * 1000),
                                        change_id=n + 1, bids=(("new", q.bid, q.bid_amount),),
                                        asks=(("new", q.ask, q.ask_amount),)), NOW)
        family.on_ticker(Ticker(instrument_name=inst.instrument_name, timestamp=int(NOW * 1000), state="open",
                                mark_price=q.mark_price or 0.0, index_price=FORWARD, underlying_price=FORWARD,
                                mark_iv=q.mark_iv, greeks=Greeks(delta=q.delta or 0.0, gamma=0.0, vega=0.0,
                                                                 theta=0.0)), NOW)
    rig.run("target vega -2000 BTC 30d")
    request = rig.requests()[-1]
    view = family.chain_view(request, NOW + 0.1)
    assert view.request_id == request.request_id and {q.instrument_name for q in view.options} == set(request.names)
    rig.clock[0] = NOW + 0.1
    rig.runner.on_chain_view(view)
    plan = rig.runner.exposure.shown
    assert plan is not None and plan.legs and all(leg.side == "sell" for leg in plan.legs)
    assert abs(plan.after.vega + 2000.0) <= plan.tolerance
    assert "BTC" not in rig.desk.views and not rig.desk.live_options


def test_a_piped_plan_line_waits_for_the_plan_worked_to_end() -> None:
    """``plan`` in a script waits while a plan is worked (a script's way to wait for its fills),
    until the Assistant says it ended or ``console.plan_wait_s`` passed; with none worked it waits
    for nothing, and on a terminal it never waits."""
    rig = Rig()
    assert rig.run("plan", wait=True).wait_key is None  # nothing worked: nothing to wait for
    plan = planned(rig)
    rig.run("confirm")
    leg = plan.legs[0]

    def status(state: PlanState, filled: float, at: float) -> PlanStatus:
        return PlanStatus(plan_id=plan.plan_id, currency="BTC", state=state, at=at,
                          legs=(LegProgress(leg=1, instrument_name=leg.instrument_name, side=leg.side,
                                            amount=leg.amount, filled=filled, state=LegState.RESTING,
                                            price=leg.bid),))

    rig.runner.on_plan_status(status(PlanState.WORKING, 0.0, NOW + 1))
    assert rig.run("plan").wait_key is None  # a terminal's plan line shows and returns
    outcome = rig.run("plan", wait=True)
    assert outcome.wait_key is not None and not outcome.error
    assert f"waiting for plan {plan.plan_id} to end (at most 600 s)" in rig.text()
    assert not rig.runner.wait_done(outcome.wait_key)
    rig.runner.on_plan_status(status(PlanState.WORKING, leg.amount / 2, NOW + 2))  # progress: still working
    assert not rig.runner.wait_done(outcome.wait_key)
    rig.runner.on_plan_status(status(PlanState.DONE, leg.amount, NOW + 3))
    assert rig.runner.wait_done(outcome.wait_key)
    assert "still waiting" not in rig.text()
    assert rig.run("plan", wait=True).wait_key is None  # the plan ended: nothing to wait for


def test_a_piped_plan_line_stops_waiting_after_plan_wait_s() -> None:
    rig = Rig(values={"console.plan_wait_s": 30.0})
    plan = planned(rig)
    rig.run("confirm")
    rig.runner.on_plan_status(PlanStatus(plan_id=plan.plan_id, currency="BTC", state=PlanState.WORKING, at=NOW + 1))
    outcome = rig.run("plan", wait=True)
    assert outcome.wait_key is not None and not rig.runner.wait_done(outcome.wait_key)
    wait = rig.runner.waits[outcome.wait_key]
    assert 0 < wait.deadline - time.monotonic() <= 30.0
    wait.deadline = time.monotonic() - 1.0  # as if plan_wait_s had passed
    assert rig.runner.wait_done(outcome.wait_key)
    assert f"still waiting for plan {plan.plan_id}'s end; going on with the next line" in rig.text()
