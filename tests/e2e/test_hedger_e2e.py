"""End to end on the simulator: buy calls, switch hedging on, move the index; the Hedger keeps
the book inside its band through the Connection, the BookKeepers and the Portfolio.

The simulator's own index diffusion and jumps are off so that only the test moves the market;
the mismatch after each settle is computed from the simulator's state (its positions, its
tickers' deltas and its perpetual book), not from the Hedger's figures.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import pytest

from messages.commands import PlaceOrder
from messages.hedging import HedgerControl
from tests.support.desk import StartDesk
from tests.support.hedge_desk import BAND, CLIENT_ID, PERP, Desk, buy_calls_and_hedge, hedge_desk_factory
from tests.support.waiting import wait_until as wait_for

pytestmark = pytest.mark.usefixtures("isolated_cwd")  # the program's data/ goes to a temp dir


@pytest.fixture
def desk(sim_desk: StartDesk) -> Callable[..., Desk]:
    return hedge_desk_factory(sim_desk)


def test_hedges_moves_up_down_and_an_oscillation_at_the_band_edge(desk: Callable[..., Desk]) -> None:
    running = desk()
    buy_calls_and_hedge(running)
    status = running.settle()
    assert status.active and len(running.hedge_orders()) >= 1
    first = running.hedge_orders()[0]
    assert first.side == "sell" and first.type == "market" and first.label.startswith("hedge-")
    assert running.perp_size() < 0  # long calls, short perpetual
    running.assert_within_band()
    assert running.status().mismatch == pytest.approx(running.mismatch()[0], abs=2e-4)

    index = running.sim.index("BTC")
    for pct in (2.0, -3.0, 1.5):  # up, down, up again
        before = len(running.hedge_orders())
        running.sim.set_index("BTC", index * (1 + pct / 100))
        running.settle()
        assert len(running.hedge_orders()) > before, f"no hedge after a {pct}% move"
        side = running.hedge_orders()[-1].side
        assert side == ("sell" if pct > 0 else "buy")  # more delta from the calls: sell more
        running.assert_within_band()
        index = running.sim.index("BTC")

    # Find the band's edge by creeping up, then oscillate around it: one hedge at the first
    # crossing, and then nothing while the price swings by less than a band each way.
    base = running.sim.index("BTC")
    orders = len(running.hedge_orders())
    step = 0.0
    for _ in range(60):
        step += 0.0002
        running.sim.set_index("BTC", base * (1 + step))
        time.sleep(0.15)
        if len(running.hedge_orders()) > orders:
            break
    else:
        pytest.fail("creeping up never crossed the band")
    running.settle()
    edge = running.sim.index("BTC")
    crossed_at = len(running.hedge_orders())
    swing = 0.0002 * base
    for _ in range(8):
        for price in (edge - swing, edge + swing):
            running.sim.set_index("BTC", price)
            time.sleep(0.15)
    running.settle()
    running.assert_within_band()
    assert len(running.hedge_orders()) - crossed_at <= 1, [o.side for o in running.hedge_orders()[crossed_at:]]

    # Deactivated means no orders, whatever the market does.
    running.publish(HedgerControl(action="deactivate", origin="test", currency="BTC"))
    wait_for(lambda: not running.status().active, 5, "hedging off")
    orders, trades = len(running.hedge_orders()), len(running.hedge_trades())
    running.sim.set_index("BTC", edge * 1.03)
    time.sleep(1.5)
    assert len(running.hedge_orders()) == orders and len(running.hedge_trades()) == trades
    assert abs(running.mismatch()[0]) > BAND  # it would hedge if it were on
    # Switched on again, it catches up in one go.
    running.publish(HedgerControl(action="activate", origin="test", currency="BTC"))
    running.settle()
    assert len(running.hedge_orders()) == orders + 1
    running.assert_within_band()
    # Every hedge order reached the exchange once: one label per trade set, none repeated.
    labels = [o.label for o in running.hedge_orders()]
    assert len(labels) == len(set(labels))
    assert {t["label"] for t in running.hedge_trades()} <= set(labels)
    # And each is a row of the Recorder's orders_audit, answered.
    running.supervisor.stop()
    with sqlite3.connect(running.data_dir / "deribit.sqlite3") as db:
        rows = db.execute("select request_key, method, instrument, outcome from orders_audit "
                          "where origin = 'hedger'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(labels)
    assert {r[2] for r in rows} == {PERP}
    # Each one that executed says filled; the rest were taken by the exchange (sent).
    executed = {t["label"] for t in running.hedge_trades()}
    assert {r[0]: r[3] for r in rows} == {r[0]: "filled" if r[0] in executed else "sent" for r in rows}


def test_disconnect_with_a_hedge_in_flight_sends_no_duplicate(desk: Callable[..., Desk]) -> None:
    running = desk()
    buy_calls_and_hedge(running)
    running.settle()
    running.assert_within_band()
    orders, trades = len(running.hedge_orders()), len(running.hedge_trades())
    size_before = running.perp_size()

    # The exchange goes quiet (requests wait, answers and notifications with them), the market
    # moves, the hedger sends its order, and the link drops before any answer.
    running.sim.stall(1.5)
    running.sim.set_index("BTC", running.sim.index("BTC") * 1.02)
    wait_for(lambda: len(running.hedge_orders()) > orders, 5, "the hedge order")
    assert running.status().phase == "sent"
    time.sleep(0.2)  # the request reaches the exchange, which holds it until the stall ends
    running.sim.close_connections()
    wait_for(lambda: running.status().phase == "unknown", 5, "the order's fate to be unknown")

    running.settle(timeout_s=30)
    running.assert_within_band()
    # The order sent before the drop executed once on the exchange (when the stall ended); after
    # the reconnect the hedger learnt that from the exchange and did not send it again.
    new_orders = running.hedge_orders()[orders:]
    executed = {t["label"] for t in running.hedge_trades()[trades:]}
    assert len(executed) == 1, executed
    assert len(new_orders) == 1 or (len(new_orders) == 2 and new_orders[0].label not in executed), \
        "a second hedge order is only justified if the first never reached the exchange"
    assert new_orders[0].label in executed  # with the request on the exchange's side, the first ran
    assert running.perp_size() < size_before
    assert running.status().active


def test_limit_orders_at_the_touch_then_market(desk: Callable[..., Desk]) -> None:
    running = desk(**{"hedger.order_type": "limit", "hedger.reprice_after_s": 0.4, "hedger.max_reprices": 1})
    buy_calls_and_hedge(running)
    running.settle(timeout_s=20)
    running.assert_within_band()
    orders = running.hedge_orders()
    first = orders[0]
    assert first.type == "limit" and first.post_only and first.price is not None and first.side == "sell"
    # Whatever the limit orders did not fill was hedged at market in the end, once each.
    assert all(o.type in ("limit", "market") for o in orders)
    labels = [o.label for o in orders]
    assert len(labels) == len(set(labels))
    assert running.perp_size() < 0


def test_a_restarted_hedger_starts_off_and_asks_for_the_link_state(desk: Callable[..., Desk]) -> None:
    running = desk()
    buy_calls_and_hedge(running)
    running.settle()
    # What the supervisor does after a crash: a fresh Hedger under the same name.
    running.supervisor.refs()["hedger"].stop()
    running.supervisor._start_one("hedger")
    status = wait_for(lambda: running.status(), 5, "the new hedger")
    assert not status.active  # a crash switches hedging off until someone switches it on again
    orders = len(running.hedge_orders())
    running.sim.set_index("BTC", running.sim.index("BTC") * 1.02)
    time.sleep(1.0)
    assert len(running.hedge_orders()) == orders  # off means off, whatever the market does
    # It asked the Connection for the link's state on start, so once switched on it hedges at
    # once, without waiting for the next link event. The hedge position is not the new hedger's
    # (nor is a position it has not seen yet): it states its plan and waits for a confirmation of
    # it (a plan that changed before the confirmation is shown again: confirmed in turn).
    running.publish(HedgerControl(action="activate", origin="test", currency="BTC"))

    def confirmed() -> bool:
        status = running.status()
        if status.plan is not None:
            assert len(running.hedge_orders()) == orders  # nothing while a plan waits
            running.publish(HedgerControl(action="confirm", origin="test", currency="BTC",
                                          plan_id=status.plan.plan_id))
            time.sleep(0.2)
        return status.active

    wait_for(confirmed, 30, "hedging confirmed")
    message = running.status().message
    assert "confirmed): first order: sell" in message and "USD of it not made by the hedger" in message, message
    wait_for(lambda: len(running.hedge_orders()) > orders, 30, "a hedge after the restart")
    running.settle()
    assert len(running.hedge_orders()) == orders + 1, running.status()
    running.assert_within_band()


def test_a_ladder_filling_while_a_hedge_fills_leaves_hedging_on_and_within_band(desk: Callable[..., Desk]) -> None:
    # The trader's ladder of post-only bids rests on the hedge instrument (placed with the
    # console's override). The market falls through it: the ladder fills while the hedger's own
    # order fills, so the position moves by both at once. The hedger settles on its own trades,
    # stays on, and brings the book back within its band (the ladder's buys included).
    running = desk(**{"hedger.fill_wait_s": 3.0})
    buy_calls_and_hedge(running)
    running.settle()
    bids, _asks = running.sim.book(PERP)
    best = bids[0][0]
    for n in range(5):
        running.publish(PlaceOrder(instrument_name=PERP, side="buy", amount=200.0, type="limit",
                                   price=best - 0.5 * (n + 1), post_only=True, origin="test",
                                   request_key=f"ladder-{n}", label=f"manual_api_{900 + n}"))
    wait_for(lambda: len(running.sim.open_orders(CLIENT_ID, "BTC")) >= 5, 10, "the ladder resting")
    orders = len(running.hedge_orders())
    running.sim.set_index("BTC", running.sim.index("BTC") * 0.985)
    wait_for(lambda: not running.sim.open_orders(CLIENT_ID, "BTC"), 15, "the ladder filled")
    running.settle(timeout_s=30)
    status = running.status()
    assert status.active and "never showed" not in status.message, status
    assert len(running.hedge_orders()) > orders
    running.assert_within_band()
    ladder = [t for t in running.hedge_trades() if t["label"].startswith("manual_api_9")]
    assert sum(t["amount"] for t in ladder) == pytest.approx(1_000.0)
