"""End to end on the simulator: the BookKeepers' books and the Portfolio equal the exchange's.

The whole program's wiring (``main.actor_specs``) runs against the in-process simulator on the
wall clock; the simulator drops book notifications at random (and closes the link mid-run), and
at a quiescent moment (the simulator's market stalled) every local book must equal the
simulator's own. Orders placed, filled and cancelled must leave the Portfolio equal to the
simulator's positions and open orders.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors.bookkeeper import GetBookStats
from actors.portfolio import GetPortfolio, GetReconcileReport
from messages.commands import CancelOrder, CommandFailed, CommandResult, PlaceOrder, ReconcilePortfolio
from runtime.actor import Actor, handles
from tests.support.desk import OPTION_KEEPERS, SimDesk, StartDesk, books_all_fresh, compare_books
from tests.support.settings import SIM_CLIENT_ID as CLIENT_ID
from tests.support.waiting import wait_until as wait_for

pytestmark = pytest.mark.usefixtures("isolated_cwd")  # the program's data/ goes to a temp dir



class Desk(SimDesk):
    """The desk on the simulator, with the BookKeepers' freshness."""

    def __init__(self, running: SimDesk) -> None:
        super().__init__(running.sim, running.supervisor, running.settings, running.data_dir)

    def stats(self, name: str) -> dict[str, Any]:
        return self.ask(name, GetBookStats())

    def all_fresh(self) -> bool:
        return books_all_fresh(self)


@pytest.fixture
def desk(sim_desk: StartDesk) -> Callable[..., Desk]:
    def start(updates_per_s: float = 5.0, extra_specs: tuple[Any, ...] = (), **overrides: Any) -> Desk:
        return Desk(sim_desk(overrides, seed=3, sim={"updates_per_s": updates_per_s}, extra_specs=extra_specs))

    return start


def run_with_drops(desk: Desk, drops: int, reconnect: bool) -> None:
    sim = desk.sim
    wait_for(desk.all_fresh, 30, "every book's first snapshot")
    sim.drop_book_notifications(0, probability=0.3)
    reconnected = not reconnect
    deadline = time.monotonic() + 120
    while True:
        dropped = len(sim.dropped_book_notifications())
        if dropped >= drops:
            break
        assert time.monotonic() < deadline, f"only {dropped} book notifications dropped in 120 s"
        if not reconnected and dropped >= drops // 2:
            assert sim.close_connections() == 1
            reconnected = True
        time.sleep(0.1)
    sim.drop_book_notifications(0, probability=0.0)
    dropped_books = sim.dropped_book_notifications()
    assert len(dropped_books) >= drops
    # Keep the market moving so that the last drop of every book is followed by a change that
    # reveals it; then every book must come back fresh.
    time.sleep(3.0)
    wait_for(desk.all_fresh, 60, "every stale book to be resynced")
    sim.stall(6.0)
    time.sleep(0.5)  # what was on the wire when the market stopped
    desk.supervisor.drain()
    assert compare_books(desk) == 44  # 40 options with L2 books and 4 futures
    # Every dropped notification lies inside a stale episode of its instrument that ended with a
    # snapshot: the episode starts at or before the lost change and its snapshot is past it.
    episodes: dict[str, list[Any]] = {}
    resubscribes = gaps = 0
    for keeper in OPTION_KEEPERS:
        stats = desk.stats(keeper)
        resubscribes += stats["stats"].resubscribes
        gaps += stats["stats"].gaps
        for episode in stats["episodes"]:
            episodes.setdefault(episode.instrument_name, []).append(episode)
    undetected = [
        (name, prev, change_id)
        for name, prev, change_id in dropped_books
        if not any(e.from_change_id <= prev and e.to_change_id >= change_id for e in episodes.get(name, ()))
    ]
    assert not undetected, f"{len(undetected)} of {len(dropped_books)} drops not detected: {undetected[:5]}"
    assert 0 < gaps <= len(dropped_books)
    assert resubscribes >= gaps  # one request per gap episode (retries add to it)
    if reconnect:
        assert any(e.reason == "reconnect" for named in episodes.values() for e in named)


# Fast books and resubscriptions, so that a thousand drops take seconds, not minutes.
FAST = {"updates_per_s": 10.0, "deribit.subscribe_requests_per_s": 10.0}


def test_a_thousand_dropped_book_notifications_are_all_detected_and_repaired(desk: Callable[..., Desk]) -> None:
    run_with_drops(desk(**FAST), drops=1000, reconnect=False)


def test_dropped_notifications_and_a_reconnect_mid_run(desk: Callable[..., Desk]) -> None:
    run_with_drops(desk(**FAST), drops=1000, reconnect=True)


class Trader(Actor):
    """A test actor that sends order commands and collects their answers."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.answers: dict[str, Any] = {}

    @handles(CommandResult, CommandFailed)
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        if answer.origin == self.context.name:
            self.answers[answer.request_key] = answer

    @handles(str)
    def on_request(self, key: str) -> Any:
        return self.answers.get(key)


def send(desk: Desk, command: Any) -> Any:
    """Publish ``command`` (as the trader) and wait for its answer."""
    trader = desk.supervisor.refs()["trader"]
    desk.supervisor.bus.publish(command)
    answer = wait_for(lambda: trader.ask(command.request_key, timeout=5), 10, f"the answer to {command}")
    assert isinstance(answer, CommandResult), answer
    return answer


def test_orders_placed_filled_and_cancelled_leave_the_portfolio_equal_to_the_exchange(
    desk: Callable[..., Desk],
) -> None:
    from runtime.supervisor import ActorSpec

    running = desk(updates_per_s=1.0, extra_specs=(ActorSpec("trader", lambda ctx: Trader.start(ctx)),))
    sim = running.sim
    wait_for(lambda: all(s.reconciled for s in running.ask("portfolio", GetPortfolio()).values()), 30,
             "the first reconciliation")
    keys = (f"k{n}" for n in itertools.count())
    options = sorted(n for n in sim.instruments("BTC") if n.count("-") == 3)
    option = options[len(options) // 2]
    bids, _ = sim.book(option)
    _, future_asks = sim.book("BTC-PERPETUAL")

    def place(name: str, side: str, amount: float, price: float | None = None, order_type: str = "",
              **kw: Any) -> Any:
        order_type = order_type or ("limit" if price is not None else "market")
        return send(running, PlaceOrder(instrument_name=name, side=side, amount=amount, price=price,  # type: ignore[arg-type]
                                        type=order_type, origin="trader", request_key=next(keys), **kw))

    # Fills: market orders on both sides of an option and the perpetual.
    place(option, "buy", 1.0)
    place(option, "buy", 0.5)
    place(option, "sell", 0.3)
    place("BTC-PERPETUAL", "sell", 100.0)
    place("BTC-PERPETUAL", "buy", 30.0)
    place(options[0], "buy", 0.2)
    # Resting orders: one cancelled, two left open, and a stop that stays untriggered.
    low_bid = max(bids[-1][0] - 0.001, 0.0005) if bids else 0.0005
    rest = place(option, "buy", 0.4, price=low_bid)
    place(option, "buy", 0.1, price=low_bid)
    place("BTC-PERPETUAL", "sell", 50.0, price=future_asks[-1][0] + 500.0)
    place("BTC-PERPETUAL", "buy", 20.0, order_type="stop_market", trigger="mark_price",
          trigger_price=float(round(future_asks[0][0] * 1.2)))
    send(running, CancelOrder(order_id=rest.order.order_id, origin="trader", request_key=next(keys)))

    def portfolio_matches() -> bool:
        running.supervisor.drain()
        ours = running.ask("portfolio", GetPortfolio())["BTC"]
        positions = {p.instrument_name: (p.size, round(p.average_price, 8)) for p in ours.positions}
        theirs = {p["instrument_name"]: (p["size"], p["average_price"]) for p in sim.positions(CLIENT_ID, "BTC")}
        orders = {o.order_id: (o.order_state, o.amount, o.filled_amount, o.price) for o in ours.open_orders}
        open_orders = {o["order_id"]: (o["order_state"], o["amount"], o["filled_amount"], o["price"])
                       for o in sim.open_orders(CLIENT_ID, "BTC")}
        return positions == theirs and orders == open_orders

    wait_for(portfolio_matches, 15, "the portfolio to equal the simulator's positions and open orders")
    ours = running.ask("portfolio", GetPortfolio())["BTC"]
    assert len(ours.positions) == 3 and len(ours.open_orders) == 3
    assert {o.order_state for o in ours.open_orders} == {"open", "untriggered"}
    # A reconcile now finds nothing to correct: notifications alone built the exchange's picture.
    before = running.ask("portfolio", GetReconcileReport())
    running.supervisor.bus.publish(ReconcilePortfolio(origin="test", reason="check", currencies=("BTC",)))
    wait_for(lambda: running.ask("portfolio", GetReconcileReport())["count"] > before["count"], 10,
             "the reconciliation")
    after = running.ask("portfolio", GetReconcileReport())
    assert after["differences"] == before["differences"], after["differences"][len(before["differences"]):]
