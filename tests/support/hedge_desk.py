"""The desk on the simulator for the hedger's end-to-end tests: the program's Connection,
BookKeepers, Portfolio, Hedger and Recorder for BTC, a tap on order commands and their answers, and
what the tests look at (the hedger's status, its orders and trades, the mismatch computed from the
simulator's own state, waiting for everything to settle).

The simulator's own index diffusion and jumps are off so that only the test moves the market.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.portfolio import GetPortfolio
from deribit.instruments import parse_instrument_name
from messages.commands import CommandFailed, CommandResult, PlaceOrder
from messages.hedging import HedgerControl, HedgerStatus
from runtime.actor import Actor, ActorContext, handles
from runtime.supervisor import ActorSpec
from tests.support.desk import SimDesk, StartDesk
from tests.support.settings import SIM_CLIENT_ID as CLIENT_ID
from tests.support.waiting import wait_until as wait_for

PERP = "BTC-PERPETUAL"
BAND = 0.0025
WANTED = {"connection", "books-BTC-option", "books-BTC-future", "portfolio", "hedger", "recorder"}


class Tap(Actor):
    """Collects order commands and their answers from the bus."""

    def __init__(self, context: ActorContext, sink: list[object]) -> None:
        super().__init__(context)
        self.sink = sink

    @handles(PlaceOrder, CommandResult, CommandFailed)
    def on_message(self, message: object) -> None:
        self.sink.append(message)


class Desk(SimDesk):
    """The desk on the simulator, with what the hedger tests look at."""

    def __init__(self, running: SimDesk, tapped: list[object]) -> None:
        super().__init__(running.sim, running.supervisor, running.settings, running.data_dir)
        self.tapped = tapped

    def status(self) -> HedgerStatus:
        [status] = self.ask("hedger", HedgerControl(action="status", origin="test", currency="BTC"))
        return status

    def hedge_orders(self) -> list[PlaceOrder]:
        return [m for m in list(self.tapped) if isinstance(m, PlaceOrder) and m.origin == "hedger"]

    def hedge_trades(self) -> list[dict[str, Any]]:
        exchange = self.sim.server.exchange
        return self.sim.call(lambda: [t for t in exchange.user_trades[CLIENT_ID]
                                      if t["instrument_name"] == PERP])

    def perp_size(self) -> float:
        return next((p["size"] for p in self.sim.positions(CLIENT_ID, "BTC") if p["instrument_name"] == PERP), 0.0)

    def mismatch(self) -> tuple[float, float]:
        """(options delta + perpetual delta, one contract) in BTC, from the simulator's state."""
        bids, asks = self.sim.book(PERP)
        mid = 0.5 * (bids[0][0] + asks[0][0])
        total = 0.0
        for position in self.sim.positions(CLIENT_ID, "BTC"):
            if position["kind"] == "option":
                total += position["size"] * self.sim.ticker(position["instrument_name"])["greeks"]["delta"]
            elif position["instrument_name"] == PERP:
                total += position["size"] / mid
        return total, 10.0 / mid

    def settle(self, timeout_s: float = 15.0) -> HedgerStatus:
        """Wait until the hedger has nothing in flight, sent nothing for a while, and the
        Portfolio shows what the exchange holds."""
        time.sleep(0.3)  # let the move's tickers reach the hedger
        deadline = time.monotonic() + timeout_s
        quiet = 0
        orders = len(self.hedge_orders())
        while time.monotonic() < deadline:
            status = self.status()
            now_orders = len(self.hedge_orders())
            portfolio = self.ask("portfolio", GetPortfolio())["BTC"]
            shown = next((p.size for p in portfolio.positions if p.instrument_name == PERP), 0.0)
            if status.phase == "idle" and now_orders == orders and shown == self.perp_size():
                quiet += 1
                if quiet >= 4:
                    return status
            else:
                quiet = 0
            orders = now_orders
            time.sleep(0.1)
        raise AssertionError(f"the hedger did not settle within {timeout_s} s: {self.status()}; "
                             f"portfolio shows {shown} USD of {PERP}, the exchange {self.perp_size()}")

    def assert_within_band(self) -> float:
        mismatch, contract = self.mismatch()
        assert abs(mismatch) <= BAND + contract, (mismatch, BAND, contract, self.status())
        return mismatch


def hedge_desk_factory(sim_desk: StartDesk) -> Callable[..., Desk]:
    """Starts hedge desks (the ``sim_desk`` fixture stops them): BTC only, hedging off until a
    test switches it on, at most 60 hedge orders a minute; ``overrides`` are dotted settings."""

    def start(**overrides: Any) -> Desk:
        tapped: list[object] = []
        running = sim_desk({"hedger.currencies": ["BTC"], "hedger.max_orders_per_minute": 60, **overrides},
                           currencies=["BTC"], seed=5, only=WANTED,
                           sim={"updates_per_s": 2.0, "index_vol": 0.0, "jumps_per_year": 0.0},
                           extra_specs=[ActorSpec("tap", lambda ctx: Tap.start(ctx, tapped))])
        return Desk(running, tapped)

    return start


def buy_calls_and_hedge(desk: Desk, amount: float = 1.0) -> str:
    """Buy ``amount`` BTC of the later expiry's at-the-money call, then switch hedging on."""
    calls = [parse_instrument_name(n) for n in desk.sim.instruments("BTC") if n.endswith("-C")]
    last_expiry = max(c.expiry_ms or 0 for c in calls)
    index = desk.sim.index("BTC")
    call = min((c for c in calls if c.expiry_ms == last_expiry), key=lambda c: abs((c.strike or 0) - index)).name
    wait_for(lambda: desk.ask("portfolio", GetPortfolio())["BTC"].reconciled, 20, "a reconciled portfolio")
    desk.publish(PlaceOrder(instrument_name=call, side="buy", amount=amount, type="market", origin="test",
                            request_key="buy-calls", label="test-buy"))
    answer = wait_for(lambda: [m for m in desk.tapped if isinstance(m, CommandResult | CommandFailed)
                               and m.request_key == "buy-calls"], 10, "the option order's answer")[0]
    assert isinstance(answer, CommandResult), answer
    wait_for(lambda: any(p.instrument_name == call for p in desk.ask("portfolio", GetPortfolio())["BTC"].positions),
             10, "the option position in the portfolio")
    assert desk.status().active is False and desk.hedge_orders() == []  # off until switched on
    desk.sim.set_index("BTC", index)  # fresh tickers for everything
    desk.publish(HedgerControl(action="activate", origin="test", currency="BTC"))
    return call
