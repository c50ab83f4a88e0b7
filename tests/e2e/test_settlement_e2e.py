"""Positions and PnL across the 08:00 UTC settlement and an expiry, end to end on the simulator
with both clocks a few seconds before 08:00.

The desk holds an option that expires at 08:00 and a perpetual. At every reconcile its picture
holds the exchange's own figures (Deribit's definitions: floating since the last settlement, total
against the average price); between reconciles its own figures move with the marks and land on
the exchange's at the next one (no jump); the settlement restarts the perpetual's floating PnL at
the settlement price while its total stays against the average; the expired option leaves with its
delivery (the closing ticker's delivery price, intrinsic value in coin).
"""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from typing import Any

import pytest
from rich.console import Console as RichConsole

from actors.portfolio import GetPortfolio
from console.desk_state import DeskState
from console.numbers import coin_text
from console.tables import position_lines, positions_table
from messages.account import ExchangeState, Position
from messages.commands import CommandResult, PlaceOrder, ReconcilePortfolio
from messages.market import Ticker
from messages.state import PortfolioChanged
from runtime.actor import Actor, ActorContext, handles
from runtime.supervisor import ActorSpec
from tests.support.desk import SimDesk, StartDesk
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")

PERP = "BTC-PERPETUAL"
#: Seconds of simulated time before 08:00 UTC at the start: long enough to log in, trade and reconcile.
LEAD_S = 25.0


class Tap(Actor):
    """Keeps the pictures, the exchange's snapshots and the closing tickers, in arrival order."""

    def __init__(self, context: ActorContext, sink: list[Any], lock: threading.Lock) -> None:
        super().__init__(context)
        self.sink = sink
        self.lock = lock

    @handles(PortfolioChanged, ExchangeState, CommandResult)
    def on_message(self, message: object) -> None:
        with self.lock:
            self.sink.append(message)

    @handles(Ticker)
    def on_ticker(self, ticker: Ticker) -> None:
        if ticker.state == "closed":
            with self.lock:
                self.sink.append(ticker)


def _offset_to_just_before_0800() -> float:
    now = dt.datetime.now(dt.UTC)
    eight = now.replace(hour=8, minute=0, second=0, microsecond=0)
    return eight.timestamp() - LEAD_S - now.timestamp()


def _held(desk: SimDesk, name: str) -> Position | None:
    picture: PortfolioChanged = desk.ask("portfolio", GetPortfolio())["BTC"]
    return next((p for p in picture.positions if p.instrument_name == name), None)


def _exchange_position(state: ExchangeState, name: str) -> Position:
    return next(p for p in state.positions if p.instrument_name == name)


def test_pnl_is_the_exchanges_across_the_settlement_and_the_expired_option_leaves_with_its_delivery(
        sim_desk: StartDesk) -> None:
    sink: list[Any] = []
    lock = threading.Lock()
    offset = _offset_to_just_before_0800()
    # A signed login carries the real time, which the simulator on its shifted clock would refuse.
    desk = sim_desk({"deribit.settlement_history_delay_s": 2.0, "portfolio.mark_publish_s": 0.0,
                     "deribit.auth_method": "client_credentials"},
                    currencies=["BTC"], seed=11,
                    only={"connection", "portfolio", "books-BTC-option", "books-BTC-future"},
                    sim={"updates_per_s": 5.0, "index_vol": 2.0, "jumps_per_year": 0.0},
                    extra_specs=[ActorSpec("tap", lambda ctx: Tap.start(ctx, sink, lock))],
                    clock_offset_s=offset)
    eight = dt.datetime.fromtimestamp(time.time() + offset, dt.UTC).replace(hour=8, minute=0, second=0).timestamp()
    assert eight > time.time() + offset, "the test starts before 08:00 on the shifted clock"
    day = dt.datetime.fromtimestamp(eight, dt.UTC).strftime("%-d%b%y").upper()
    index = desk.sim.index("BTC")
    daily = min((n for n in desk.sim.instruments("BTC") if n.count("-") == 3 and n.split("-")[1] == day
                 and n.endswith("-C")), key=lambda n: abs(float(n.split("-")[2]) - index))
    wait_until(lambda: desk.ask("portfolio", GetPortfolio()).get("BTC") is not None
               and desk.ask("portfolio", GetPortfolio())["BTC"].reconciled, 20, "the first reconcile")
    for key, name, amount in (("e2e-option", daily, 1.0), ("e2e-perp", PERP, 50_000.0)):
        desk.publish(PlaceOrder(instrument_name=name, side="buy", amount=amount, type="market", origin="test",
                                request_key=key, label=key))
    wait_until(lambda: _held(desk, daily) is not None and _held(desk, PERP) is not None, 10, "both fills")
    time.sleep(1.0)  # the marks move the desk's own figures

    def reconcile_and_compare(reason: str) -> tuple[ExchangeState, PortfolioChanged, PortfolioChanged]:
        with lock:
            start = len(sink)
        desk.publish(ReconcilePortfolio(origin="test", reason=reason, currencies=("BTC",)))

        def taken() -> tuple[ExchangeState, PortfolioChanged, PortfolioChanged] | None:
            with lock:
                seen = sink[start:]
            states = [i for i, m in enumerate(seen) if isinstance(m, ExchangeState) and m.reason == reason]
            if not states:
                return None
            before = [m for m in seen[:states[0]] if isinstance(m, PortfolioChanged) and m.currency == "BTC"]
            after = [m for m in seen[states[0]:] if isinstance(m, PortfolioChanged) and m.currency == "BTC"
                     and m.reconciled_at == seen[states[0]].at]
            if not after:
                return None
            with lock:
                earlier = [m for m in sink[:start] if isinstance(m, PortfolioChanged) and m.currency == "BTC"]
            return seen[states[0]], (before or earlier)[-1], after[0]
        state, desk_before, desk_after = wait_until(taken, 10, f"the reconcile {reason!r}")
        perp = _exchange_position(state, PERP)
        ours = next(p for p in desk_after.positions if p.instrument_name == PERP)
        # At the reconcile the picture holds the exchange's own figures ...
        assert ours.floating_profit_loss == pytest.approx(perp.floating_profit_loss, abs=1e-12)
        assert ours.total_profit_loss == pytest.approx(perp.total_profit_loss, abs=1e-12)
        # ... and the desk's own, a tick earlier, were already those but for the mark's move since: an
        # inverse future's PnL at mark m is size * (1/p - 1/m), so the two differ by exactly
        # size * (1/m_desk - 1/m_exchange) (the exchange sends its figures to 8 decimals).
        mine = next(p for p in desk_before.positions if p.instrument_name == PERP)
        assert perp.floating_profit_loss is not None and perp.total_profit_loss is not None
        assert mine.floating_profit_loss is not None and mine.total_profit_loss is not None
        assert mine.mark_price is not None and perp.mark_price is not None
        moved = perp.size * (1.0 / mine.mark_price - 1.0 / perp.mark_price)
        assert mine.floating_profit_loss + moved == pytest.approx(perp.floating_profit_loss, abs=2e-8), (reason, mine)
        assert mine.total_profit_loss + moved == pytest.approx(perp.total_profit_loss, abs=2e-8), (reason, mine)
        return state, desk_before, desk_after

    before_eight, _, _ = reconcile_and_compare("before 08:00")
    assert _exchange_position(before_eight, daily).size == 1.0

    # 08:00: the option closes and is delivered; the perpetual settles.
    wait_until(lambda: time.time() + offset > eight + 1.0, LEAD_S + 5, "08:00 on the shifted clock")
    closing: Ticker = wait_until(lambda: next((m for m in list(sink) if isinstance(m, Ticker)
                                               and m.instrument_name == daily), None), 15, "the closing ticker")
    assert closing.estimated_delivery_price == "expired" and closing.delivery_price is not None
    picture: PortfolioChanged = wait_until(
        lambda: desk.ask("portfolio", GetPortfolio())["BTC"] if _held(desk, daily) is None else None,
        15, "the expired option leaves")
    [delivery] = [d for d in picture.deliveries if d.instrument_name == daily]
    strike = float(daily.split("-")[2])
    assert delivery.index_price == pytest.approx(closing.delivery_price)
    assert delivery.mark_price == pytest.approx(max(closing.delivery_price - strike, 0.0) / closing.delivery_price)
    assert delivery.position == 1.0

    after_eight, _, desk_after = reconcile_and_compare("after 08:00")
    perp = _exchange_position(after_eight, PERP)
    assert perp.settlement_price is not None
    assert daily not in {p.instrument_name for p in after_eight.positions}
    # The session restarted at the settlement price: floating and total part.
    assert perp.floating_profit_loss != pytest.approx(perp.total_profit_loss, abs=1e-9)
    expected_floating = perp.size * (1.0 / perp.settlement_price - 1.0 / perp.mark_price)
    assert perp.floating_profit_loss == pytest.approx(expected_floating, abs=1e-8)  # sent to 8 decimals

    # The console's PnL columns show those figures (to 4 decimals of the coin, beside USD).
    shown = DeskState(["BTC"])
    shown.on_portfolio(desk_after)
    out = io.StringIO()
    RichConsole(file=out, width=220).print(positions_table(shown, time.time()))
    ours = next(p for p in desk_after.positions if p.instrument_name == PERP)
    [line] = [line for line in position_lines(shown) if line.position.instrument_name == PERP]
    assert (line.floating, line.total) == (ours.floating_profit_loss, ours.total_profit_loss)
    text = out.getvalue()
    assert coin_text(ours.floating_profit_loss, 4) in text and coin_text(ours.total_profit_loss, 4) in text
