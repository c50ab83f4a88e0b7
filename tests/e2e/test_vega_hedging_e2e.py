"""End to end on the simulator: a short out-of-the-money call, vega hedging and delta hedging on,
the simulator's implied vols scripted along a path (``Simulator.set_vol_level``). After each step
has settled the currency's vega, computed from the simulator's own state (its positions and its
tickers' vegas, not the hedger's figures), is within the band; the number of vega orders stays
bounded; and delta stays within the delta hedger's band.

The simulator's index diffusion and jumps are off (``hedge_desk_factory``): only the test moves
the market.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from actors.portfolio import GetPortfolio
from deribit.instruments import parse_instrument_name
from messages.commands import CommandFailed, CommandResult, PlaceOrder
from messages.exposure import VegaHedgeCode, VegaHedgerControl, VegaHedgerStatus
from messages.hedging import HedgeActivation, HedgerControl
from tests.support.desk import StartDesk
from tests.support.hedge_desk import CLIENT_ID, Desk, hedge_desk_factory
from tests.support.waiting import wait_until as wait_for

pytestmark = pytest.mark.usefixtures("isolated_cwd")

BAND = 8.0  # USD per vol point (one 0.1 coin of a ten-day at-the-money BTC option is about 4)
SHORT = 2.0  # coins of the out-of-the-money call sold (the simulator's perpetual book takes its delta hedge)
PATH = (1.35, 1.7, 1.2, 0.8, 0.6, 1.0)  # the simulator's vol level, step by step (1.0: its base)


@pytest.fixture
def desk(sim_desk: StartDesk) -> Callable[..., Desk]:
    return hedge_desk_factory(sim_desk)


def vega_status(desk: Desk) -> VegaHedgerStatus:
    [status] = desk.ask("hedger", VegaHedgerControl(action="status", origin="test", currency="BTC"))
    return status


def vega_orders(desk: Desk) -> list[PlaceOrder]:
    return [m for m in list(desk.tapped) if isinstance(m, PlaceOrder) and m.origin == "vega-hedger"]


def sim_vega(desk: Desk) -> tuple[float, dict[str, float]]:
    """The currency's option vega (USD per vol point) from the simulator's positions and tickers,
    and the option positions it is made of."""
    sizes = {p["instrument_name"]: p["size"] for p in desk.sim.positions(CLIENT_ID, "BTC")
             if p["kind"] == "option" and p["size"]}
    return sum(size * desk.sim.ticker(name)["greeks"]["vega"] for name, size in sizes.items()), sizes


def settle_vega(desk: Desk, timeout_s: float = 20.0) -> VegaHedgerStatus:
    """Wait until the vega hedger has nothing in flight, sent nothing for a while, and the
    Portfolio shows the option positions the exchange holds."""
    time.sleep(0.3)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    orders = len(vega_orders(desk))
    while time.monotonic() < deadline:
        status = vega_status(desk)
        now_orders = len(vega_orders(desk))
        shown = {p.instrument_name: p.size for p in desk.ask("portfolio", GetPortfolio())["BTC"].positions
                 if p.kind == "option" and p.size}
        if not status.in_flight and now_orders == orders and shown == sim_vega(desk)[1]:
            quiet += 1
            if quiet >= 5:
                return status
        else:
            quiet = 0
        orders = now_orders
        time.sleep(0.1)
    raise AssertionError(f"the vega hedger did not settle within {timeout_s} s: {vega_status(desk)}")


def sell_otm_call(desk: Desk) -> str:
    """Sell SHORT coins of the weekly call nearest 8% above the index (its vega moves with the vol)."""
    calls = [parse_instrument_name(n) for n in desk.sim.instruments("BTC") if n.endswith("-C")]
    weekly = max(c.expiry_ms or 0 for c in calls)
    index = desk.sim.index("BTC")
    call = min((c for c in calls if c.expiry_ms == weekly), key=lambda c: abs((c.strike or 0) - 1.08 * index)).name
    wait_for(lambda: desk.ask("portfolio", GetPortfolio())["BTC"].reconciled, 20, "a reconciled portfolio")
    desk.publish(PlaceOrder(instrument_name=call, side="sell", amount=SHORT, type="market", origin="test",
                            request_key="sell-call", label="test-sell"))
    answer = wait_for(lambda: [m for m in desk.tapped if isinstance(m, CommandResult | CommandFailed)
                               and m.request_key == "sell-call"], 10, "the option order's answer")[0]
    assert isinstance(answer, CommandResult), answer
    wait_for(lambda: any(p.instrument_name == call for p in desk.ask("portfolio", GetPortfolio())["BTC"].positions),
             10, "the option position in the portfolio")
    return call


def activate_delta_hedging(desk: Desk) -> None:
    [status] = desk.ask("hedger", HedgerControl(action="activate", origin="test", currency="BTC"))
    if status.activation is HedgeActivation.AWAITING_CONFIRMATION:
        assert status.plan is not None
        desk.ask("hedger", HedgerControl(action="confirm", origin="test", currency="BTC", plan_id=status.plan.plan_id))
    wait_for(lambda: desk.status().active, 5, "delta hedging on")


def test_vega_hedging_holds_the_band_along_a_scripted_vol_path(desk: Callable[..., Desk]) -> None:
    running = desk(**{"hedger.vega_band_usd": BAND, "hedger.vega_tenor_days": 10.0, "hedger.vega_min_days": 2.0,
                      "hedger.vega_max_order_coins": 50.0, "hedger.vega_max_orders_per_minute": 30})
    call = sell_otm_call(running)
    running.sim.set_vol_level("BTC", 1.0)  # fresh tickers for everything, at the base level
    before, _ = sim_vega(running)
    assert before < -4 * BAND  # short vega, far outside the band
    assert vega_orders(running) == [] and not vega_status(running).active  # off until switched on

    activate_delta_hedging(running)
    [status] = running.ask("hedger", VegaHedgerControl(action="activate", origin="test", currency="BTC"))
    assert status.active
    status = settle_vega(running)
    running.settle()
    hedge = status.option
    assert hedge and hedge != call and hedge.startswith("BTC-")
    first = vega_orders(running)
    assert first and {o.instrument_name for o in first} == {hedge} and {o.side for o in first} == {"buy"}
    assert all(o.type == "limit" and o.time_in_force == "immediate_or_cancel" and o.label.startswith("vega-")
               for o in first)

    def check(step: str) -> float:
        vega, sizes = sim_vega(running)
        per_coin = running.sim.ticker(hedge)["greeks"]["vega"]
        # Within the band, or within half a minimum trade (0.1 coin) of the hedge option beyond it.
        assert abs(vega) <= BAND + 0.05 * per_coin, (step, vega, sizes, vega_status(running))
        running.assert_within_band()  # the delta hedger hedged the hedge option's delta too
        return vega

    check("activation")
    pushes: list[float] = []
    counts = [len(vega_orders(running))]
    for level in PATH:
        _, sizes = sim_vega(running)  # the positions before the step (the hedger may trade at once)
        running.sim.set_vol_level("BTC", level)
        pushed = sum(size * running.sim.ticker(name)["greeks"]["vega"] for name, size in sizes.items())
        pushes.append(pushed)
        settle_vega(running)
        running.settle()
        check(f"vol level {level}")
        counts.append(len(vega_orders(running)))

    steps = [b - a for a, b in itertools.pairwise(counts)]
    # The path pushed the vega out of the band at some steps (the vega the step alone made, before
    # any hedge), and each of those was hedged back by an order of its own.
    out = [abs(p) > BAND for p in pushes]
    assert sum(out) >= 3, pushes
    assert all(s >= 1 for s, o in zip(steps, out, strict=True) if o), (steps, pushes)
    # Bounded: a few orders a step at most (an IOC at the touch may fill only the top level).
    assert all(s <= 3 for s in steps), (steps, pushes)
    assert counts[-1] <= counts[0] + 3 * len(PATH)
    final = vega_status(running)
    assert final.active and final.alert == "" and final.code in (VegaHedgeCode.WITHIN_BAND,
                                                                 VegaHedgeCode.BELOW_MIN_AMOUNT)
    assert final.orders_today == counts[-1]

    # Off means no orders, whatever the vol does.
    running.ask("hedger", VegaHedgerControl(action="deactivate", origin="test", currency="BTC"))
    orders = len(vega_orders(running))
    running.sim.set_vol_level("BTC", 1.8)
    time.sleep(1.0)
    assert len(vega_orders(running)) == orders and not vega_status(running).active
