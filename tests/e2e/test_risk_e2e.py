"""The book's risk against the exchange's own account greeks, end to end on the simulator: the desk
buys and sells options and a perpetual, takes the exchange's account figures in (a reconcile), asks
its option BookKeeper for the live quotes of what it holds, and ``desk.risk.currency_risk`` on that
picture and those marks equals the account's options_delta, options_gamma, options_vega,
options_theta and delta_total (Deribit's Net Transaction Delta) within ``ACCOUNT_TOLERANCE``."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from actors.portfolio import GetPortfolio
from deribit.instruments import parse_instrument_name
from desk.risk import ACCOUNT_TOLERANCE, OptionMark, currency_risk, marks_of
from desk.scenarios import ScenarioSpec, Sticky, scenario_grid
from messages.commands import CommandFailed, CommandResult, PlaceOrder, ReconcilePortfolio
from messages.state import ChainView, ChainViewRequest, PortfolioChanged
from runtime.actor import Actor, ActorContext, handles
from runtime.supervisor import ActorSpec
from tests.support.desk import SimDesk, StartDesk
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")

WANTED = {"connection", "books-BTC-option", "books-BTC-future", "portfolio"}
PERP = "BTC-PERPETUAL"


class Tap(Actor):
    """Keeps command answers and chain views for the test."""

    def __init__(self, context: ActorContext, sink: list[Any], lock: threading.Lock) -> None:
        super().__init__(context)
        self.sink = sink
        self.lock = lock

    @handles(CommandResult, CommandFailed, ChainView)
    def on_message(self, message: object) -> None:
        with self.lock:
            self.sink.append(message)


def _view(sink: list[Any], lock: threading.Lock, request_id: int) -> ChainView | None:
    with lock:
        return next((m for m in sink if isinstance(m, ChainView) and m.request_id == request_id), None)


def _two_sided_options(desk: SimDesk) -> list[str]:
    soon = time.time() + 3600
    names = []
    for name in desk.sim.instruments("BTC"):
        if name.count("-") != 3 or "_" in name:
            continue
        expiry = parse_instrument_name(name).expiry_ms or 0
        if expiry / 1000 <= soon:
            continue
        bids, asks = desk.sim.book(name)
        if bids and asks:
            names.append(name)
    index = desk.sim.index("BTC")
    return sorted(names, key=lambda n: abs((parse_instrument_name(n).strike or 0.0) - index))


def test_risk_totals_equal_the_simulators_account_greeks(sim_desk: StartDesk) -> None:
    sink: list[Any] = []
    lock = threading.Lock()
    desk = sim_desk(currencies=["BTC"], seed=11, only=WANTED,
                    sim={"index_vol": 0.0, "jumps_per_year": 0.0, "updates_per_s": 2.0},
                    extra_specs=[ActorSpec("tap", lambda ctx: Tap.start(ctx, sink, lock))])

    def picture() -> PortfolioChanged:
        return desk.ask("portfolio", GetPortfolio())["BTC"]

    wait_until(lambda: picture().reconciled, 30, "the first reconciliation")
    keys = (f"risk-{n}" for n in itertools.count())

    def place(name: str, side: str, amount: float) -> None:
        key = next(keys)
        desk.publish(PlaceOrder(instrument_name=name, side=side, amount=amount, type="market",  # type: ignore[arg-type]
                                origin="tap", request_key=key))

        def answered() -> Any:
            with lock:
                return next((m for m in sink if isinstance(m, CommandResult | CommandFailed)
                             and m.request_key == key), None)
        answer = wait_until(answered, 15, f"the answer to {side} {amount} {name}")
        assert isinstance(answer, CommandResult), answer

    options = wait_until(lambda: _two_sided_options(desk)[:8] or None, 30, "two-sided options")
    # Calls and puts, both expiries if there are two, long and short.
    legs = [(options[0], "buy", 2.0), (options[1], "sell", 1.0), (options[2], "buy", 0.5), (options[-1], "sell", 1.5)]
    for name, side, amount in legs:
        place(name, side, amount)
    place(PERP, "sell", 3000.0)
    held = {name for name, _, _ in legs} | {PERP}

    # The exchange's own figures, taken in after every fill.
    asked_at = time.time()
    desk.publish(ReconcilePortfolio(origin="tap", reason="risk test", currencies=("BTC",)))

    def settled() -> PortfolioChanged | None:
        p = picture()
        names = {q.instrument_name for q in p.positions if q.size}
        done = (p.reconciled and not p.reconciling and p.reconciled_at is not None and p.reconciled_at >= asked_at - 1
                and names == held and p.options_vega is not None)
        return p if done else None

    book = wait_until(settled, 30, "a reconciled picture holding every leg")
    # The live quotes of what it holds, from its option BookKeeper (asked again until every one
    # has had its ticker).
    request_ids = itertools.count(100)

    def marked() -> tuple[ChainView, dict[str, OptionMark]] | None:
        rid = next(request_ids)
        desk.publish(ChainViewRequest(currency="BTC", expiry_ms=None, names=tuple(sorted(held - {PERP})),
                                      request_id=rid))
        chain = wait_until(lambda: _view(sink, lock, rid), 15, "the chain view")
        marks = marks_of(chain.options)
        return (chain, marks) if set(marks) == held - {PERP} else None

    chain, marks = wait_until(marked, 30, "a mark for every option held", interval=0.5)
    risk = currency_risk(book, marks, chain.index_price, chain.at)
    assert not risk.missing, risk.missing
    report = {c.name: (c.ours, c.exchange, c.difference, c.tolerance) for c in risk.account}
    for check in risk.account:
        assert check.exchange is not None, check
        assert check.agrees, (check.name, report)
    # The futures' delta is the perpetual's size in coin; the premium is taken off the options.
    assert risk.total.delta - risk.options.delta == pytest.approx(-3000.0 / desk.sim.ticker(PERP)["mark_price"],
                                                                  rel=1e-3)
    assert risk.total.delta_pa != risk.total.delta
    # Tolerances are what ACCOUNT_TOLERANCE says they are.
    for check in risk.account:
        absolute, _ = ACCOUNT_TOLERANCE[check.name]
        assert check.tolerance is not None and check.tolerance >= absolute
    # And the scenario grid on the same book: nothing left out, no move no PnL.
    grid = scenario_grid(book, marks, chain.index_price or 0.0, None,
                         ScenarioSpec((-10.0, 0.0, 10.0), (-5.0, 0.0, 5.0), 0.0, Sticky.STRIKE), chain.at)
    assert grid.pnl_usd[1][1] == 0.0 and not grid.missing
