"""Reconciliation never goes back in time, end to end on the simulator.

- The race of the issue, driven deterministically: the exchange's answers are delayed, a reconcile
  goes out, then a fill on the hedge instrument happens and is applied before the (older) snapshot
  arrives. The picture must keep the fill, and the hedger must hedge it exactly once.
- A disconnect storm: thirty-odd forced disconnects, each right after the hedger sent an order,
  with the answers delayed so the link drops while orders are in flight. After every storm, once
  quiet, the desk's positions equal the exchange's and no move was hedged twice (no order against
  the direction its move called for, no more volume than the move needed). And the audit trail
  holds: every order the simulator executed has its ``orders_audit`` row saying filled (the answers
  lost in the storm recorded unknown, then resolved from the exchange's orders), none refused.
"""

from __future__ import annotations

import collections
import itertools
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors.portfolio import GetPortfolio, GetReconcileReport
from messages.commands import ANSWER_LOST, CommandFailed, CommandResult, OrderResolved, PlaceOrder, ReconcilePortfolio
from messages.hedging import HedgeCode, HedgerControl
from runtime.actor import Actor, ActorContext, handles
from runtime.supervisor import ActorSpec
from tests.support.desk import StartDesk
from tests.support.hedge_desk import PERP, WANTED, Desk, buy_calls_and_hedge
from tests.support.settings import SIM_CLIENT_ID
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")


class Storm(Actor):
    """Taps order commands and answers; while ``armed``, cuts every connection right after the
    hedger sends an order (from its own thread: the order may or may not have reached the exchange)."""

    def __init__(self, context: ActorContext, sink: list[object], cut: Callable[[], None],
                 armed: threading.Event) -> None:
        super().__init__(context)
        self.sink = sink
        self.cut = cut
        self.armed = armed

    @handles(PlaceOrder, CommandResult, CommandFailed, OrderResolved)
    def on_message(self, message: object) -> None:
        self.sink.append(message)
        if isinstance(message, PlaceOrder) and message.origin == "hedger" and self.armed.is_set():
            self.armed.clear()
            self.cut()


def start(sim_desk: StartDesk, armed: threading.Event, **overrides: Any) -> Desk:
    tapped: list[object] = []
    holder: list[Desk] = []

    def cut() -> None:
        holder[0].sim.close_connections()

    running = sim_desk({"hedger.currencies": ["BTC"], "hedger.max_orders_per_minute": 200,
                        "hedger.max_daily_volume_usd": 1e9, "hedger.fill_wait_s": 3.0,
                        "deribit.reconnect_max_s": 1.0, **overrides},
                       currencies=["BTC"], seed=5, only=WANTED,
                       sim={"updates_per_s": 2.0, "index_vol": 0.0, "jumps_per_year": 0.0},
                       extra_specs=[ActorSpec("tap", lambda ctx: Storm.start(ctx, tapped, cut, armed))])
    desk = Desk(running, tapped)
    holder.append(desk)
    return desk


def confirm_plans(desk: Desk) -> None:
    """Confirm whatever plan the hedger shows until it is on."""
    def on() -> bool:
        status = desk.status()
        if status.plan is not None and not status.active:
            desk.publish(HedgerControl(action="confirm", origin="test", currency="BTC", plan_id=status.plan.plan_id))
        return status.active

    wait_until(on, 30, "hedging on")


def positions_agree(desk: Desk) -> dict[str, tuple[float, float]]:
    """Instruments whose size differs between the desk's picture and the simulator's (empty: none)."""
    ours = {p.instrument_name: p.size for p in desk.ask("portfolio", GetPortfolio())["BTC"].positions}
    theirs = {p["instrument_name"]: p["size"] for p in desk.sim.positions(SIM_CLIENT_ID, "BTC") if p["size"]}
    return {n: (ours.get(n, 0.0), theirs.get(n, 0.0)) for n in ours.keys() | theirs.keys()
            if abs(ours.get(n, 0.0) - theirs.get(n, 0.0)) > 1e-9}


def test_an_older_snapshot_never_overwrites_a_newer_fill(sim_desk: StartDesk) -> None:
    running = start(sim_desk, threading.Event())
    buy_calls_and_hedge(running)
    confirm_plans(running)
    running.settle()
    running.assert_within_band()
    before = running.perp_size()
    orders = len(running.hedge_orders())
    running.publish(HedgerControl(action="deactivate", origin="test", currency="BTC"))
    wait_until(lambda: not running.status().active, 5, "hedging off while the race is run")
    # Answers now take half a second. A reconcile goes out first (the exchange takes its snapshot at
    # once), then 10,000 USD of the perpetual is bought: the fill is notified at once, and applied,
    # before the snapshot's answer, which does not hold it.
    running.sim.delay_answers(0.5)
    report = running.ask("portfolio", GetReconcileReport())
    reconciles, differences = report["count"], len(report["differences"])
    running.publish(ReconcilePortfolio(origin="test", reason="race", currencies=("BTC",)))
    time.sleep(0.1)
    running.publish(PlaceOrder(instrument_name=PERP, side="buy", amount=10_000.0, type="market", origin="test",
                               request_key="race-buy", label="race-buy"))
    wait_until(lambda: running.ask("portfolio", GetReconcileReport())["count"] > reconciles, 10,
               "the delayed snapshot")
    # The snapshot was taken in as of when it was taken: the fill is still there.
    assert running.perp_size() == pytest.approx(before + 10_000.0)
    assert positions_agree(running) == {}
    assert running.ask("portfolio", GetReconcileReport())["differences"][differences:] == [], \
        "the older snapshot was taken for the truth"
    running.sim.delay_answers(0.0)
    # The hedger treats the perpetual as its hedge: switched on, it sells the 10,000 back, once.
    running.publish(HedgerControl(action="activate", origin="test", currency="BTC"))
    confirm_plans(running)
    running.settle(timeout_s=20)
    new = running.hedge_orders()[orders:]
    # Once, and about the 10,000: the option's delta may drift by a contract (10 USD) meanwhile; a
    # second hedge of the fill would sell 20,000.
    assert [o.side for o in new] == ["sell"], new
    assert new[0].amount == pytest.approx(10_000.0, abs=50.0), new
    running.assert_within_band()
    assert running.perp_size() == pytest.approx(before, abs=50.0)
    assert positions_agree(running) == {}


def test_a_disconnect_storm_with_hedges_in_flight_hedges_each_move_once(sim_desk: StartDesk) -> None:
    armed = threading.Event()
    running = start(sim_desk, armed)
    buy_calls_and_hedge(running, amount=3.0)
    confirm_plans(running)
    running.settle(timeout_s=20)
    running.assert_within_band()
    running.sim.delay_answers(0.15)  # the link drops while answers are on their way
    rng = random.Random(15)
    cuts = 0
    for move in range(34):
        orders, trades, size = len(running.hedge_orders()), len(running.hedge_trades()), running.perp_size()
        armed.set()
        pct = rng.choice((-1, 1)) * rng.uniform(0.6, 1.5)
        running.sim.shift_index("BTC", pct)
        wait_until(lambda: not armed.is_set(), 10,
                   f"move {move} ({pct:+.2f}%): a hedge order and the cut after it; {running.status()}")
        cuts += 1
        # Quiet means back on the link, reconciled, nothing in flight, the book within its band.
        wait_until(lambda: running.status().code is HedgeCode.WITHIN_BAND, 40,
                   f"move {move}: the hedger back within its band; {running.status()}")
        running.settle(timeout_s=40)
        # Quiet: the desk's positions are the exchange's, and the book is hedged.
        assert positions_agree(running) == {}, f"move {move}"
        running.assert_within_band()
        # No duplicate hedge: the first order goes the way the move called for, and what went the
        # other way is a small part of it (after the move the option's fresh ticker, its IV moved
        # along the smile, may call for a small correction; a move hedged twice is undone in full).
        new = running.hedge_orders()[orders:]
        wanted = "sell" if pct > 0 else "buy"  # long calls: more delta on the way up
        described = (move, pct, [(o.side, o.amount, o.label) for o in new])
        assert new and new[0].side == wanted, described
        fills = running.hedge_trades()[trades:]
        along = sum(t["amount"] for t in fills if t["direction"] == wanted)
        against = sum(t["amount"] for t in fills if t["direction"] != wanted)
        assert against <= 0.25 * along, (*described, along, against)
        assert along - against == pytest.approx(abs(running.perp_size() - size))
        # ...and no order against the one before it within 50 ms (the flicker of one move seen twice).
        labels = [o.label for o in new]
        stamps = [int(label.removeprefix("hedge-")) for label in labels]
        for (a, b), (ta, tb) in zip(itertools.pairwise(new), itertools.pairwise(stamps), strict=True):
            assert a.side == b.side or tb - ta > 50, described
    assert cuts >= 30
    assert running.status().active
    assert_audit_holds(running)


def assert_audit_holds(running: Desk) -> None:
    """Every order the simulator executed has an audit row saying filled; none refused; every lost
    answer that can be asked about was resolved."""
    tapped = list(running.tapped)
    lost = {(m.origin, m.request_key) for m in tapped if isinstance(m, CommandFailed) and m.code == ANSWER_LOST
            and m.method in ("private/buy", "private/sell", "private/edit", "private/cancel")}
    wait_until(lambda: lost <= {(m.origin, m.request_key) for m in running.tapped if isinstance(m, OrderResolved)},
               30, "every lost answer resolved")
    exchange = running.sim.server.exchange
    executed = running.sim.call(lambda: {o.label: o.filled_amount for o in exchange.orders.values()
                                         if o.account == SIM_CLIENT_ID and o.filled_amount > 0})
    running.supervisor.stop()  # the Recorder writes what it holds
    with sqlite3.connect(running.data_dir / "deribit.sqlite3") as db:
        rows = db.execute("select origin, request_key, method, outcome, error_code, resolved_at, filled_amount "
                          "from orders_audit").fetchall()
    places = {r[1]: r for r in rows if r[2] in ("private/buy", "private/sell")}
    unknowns = [r for r in rows if r[4] == ANSWER_LOST]
    resolved = [r for r in unknowns if r[5] is not None]
    print(f"audit: {len(places)} orders placed, {len(executed)} executed, {len(unknowns)} answers lost "
          f"({sum(1 for r in unknowns if r[1] in executed)} of them executed), {len(resolved)} resolved; "
          f"outcomes {sorted(collections.Counter(r[3] for r in rows).items())}")
    assert executed and unknowns, "the storm lost no answer: it tested nothing"
    # Every hedge order the exchange executed has its row, saying filled, with what was filled.
    hedges = {label: amount for label, amount in executed.items() if label.startswith("hedge-")}
    assert len(hedges) >= 30
    assert {label: places[label][3] if label in places else None for label in hedges} == dict.fromkeys(
        hedges, "filled")
    assert all(places[label][6] == pytest.approx(amount) for label, amount in hedges.items())
    assert [r for r in rows if r[3] == "refused" and r[1] in executed] == []
    # Every lost answer that can be asked about was resolved, and its row says how.
    askable = ("private/buy", "private/sell", "private/edit", "private/cancel")
    assert [r for r in unknowns if r[2] in askable and (r[3] == "unknown" or r[5] is None)] == []
