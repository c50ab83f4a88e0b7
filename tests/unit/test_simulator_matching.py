"""Matching engine and accounts of the simulator: properties (hypothesis) and Deribit's rejections."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.errors import (
    INVALID_PARAMS,
    NOT_ENOUGH_FUNDS,
    NOT_OPEN_ORDER,
    NOT_OWNER_OF_ORDER,
    ORDER_NOT_FOUND,
    POST_ONLY_REJECT,
    RpcError,
)
from simulator.exchange import Exchange
from simulator.settings import SimAccount, SimSettings

START = 1_790_000_000.0  # 2026-09-21 14:13 UTC, a Monday
SETTINGS = SimSettings(
    chain="small",
    accounts=(
        SimAccount("alice", "a-secret", (("BTC", 50.0), ("ETH", 500.0), ("USDC", 1e6))),
        SimAccount("bob", "b-secret", (("BTC", 50.0), ("ETH", 500.0), ("USDC", 1e6))),
    ),
    public_trades_per_s=0.0,
)


def new_exchange(seed: int = 3) -> Exchange:
    return Exchange(seed, SETTINGS, START)


def traded(ex: Exchange) -> list[str]:
    """The inverse and the USDC perpetual, a dated future, two options of each kind and a USDC
    option: the names the properties trade."""
    opts = sorted(n for n, s in ex.instruments.items() if s.is_option and s.currency == "BTC" and not s.is_linear)
    futs = sorted(n for n, s in ex.instruments.items() if not s.is_option and s.currency == "BTC")
    linear = sorted(n for n, s in ex.instruments.items() if s.is_option and s.is_linear)
    return futs + opts[len(opts) // 2 - 2 : len(opts) // 2 + 2] + linear[len(linear) // 2 : len(linear) // 2 + 1]


op = st.one_of(
    st.tuples(
        st.just("order"),
        st.sampled_from(["alice", "bob"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(0, 5),  # instrument index
        st.sampled_from(["limit", "limit", "market", "ioc", "fok", "post_only"]),
        st.integers(1, 30),  # amount in steps
        st.integers(-4, 4),  # price offset in ticks from the touch
    ),
    st.tuples(st.just("move"), st.sampled_from([-3.0, -1.0, -0.2, 0.2, 1.0, 3.0])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("edit"), st.integers(0, 50), st.integers(-3, 3), st.integers(1, 30)),
)


def check_invariants(ex: Exchange) -> None:
    for book in ex.books.values():
        bids, asks = book.published
        assert all(a > 0 for a in bids.values()) and all(a > 0 for a in asks.values())
        assert all(a > 0 for side in book.mm for a in side.values())
        for side in book.users:
            for queue in side.values():
                assert all(o.remaining > 0 and o.state == "open" for o in queue)
        assert not book.is_crossed(), book.name
        if bids and asks:
            assert max(bids) < min(asks), book.name
    for order in ex.orders.values():
        assert 0 <= order.filled_amount <= order.amount + 1e-9
        assert abs(order.filled_amount + order.remaining - order.amount) < 1e-9
    for cid, acc in ex.accounts.items():
        trades = ex.user_trades[cid]
        by_order: dict[str, float] = {}
        for t in trades:
            by_order[t["order_id"]] = by_order.get(t["order_id"], 0.0) + t["amount"]
        for oid, amount in by_order.items():
            assert abs(ex.orders[oid].filled_amount - amount) < 1e-9
        for name, pos in acc.positions.items():
            fills = [t for t in trades if t["instrument_name"] == name]
            signed = sum(t["amount"] if t["direction"] == "buy" else -t["amount"] for t in fills)
            assert abs(pos.size - signed) < 1e-9, name
            # Total PnL at any mark equals the sum over fills: inverse maths for inverse futures,
            # linear for options and USDC futures; with no settlement yet, the session's realised
            # and floating PnL add up to the same.
            for m in (pos.average_price or 1.0, 1.37 * (pos.average_price or 1.0)):
                want = 0.0
                for t in fills:
                    s = t["amount"] if t["direction"] == "buy" else -t["amount"]
                    linear = pos.spec.is_option or pos.spec.is_linear
                    want += s * (m - t["price"]) if linear else s * (1 / t["price"] - 1 / m)
                got = pos.realized_pnl + pos.total_pnl(m)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name
                assert pos.session_rpl + pos.floating_pnl(m) == pytest.approx(want, rel=1e-9, abs=1e-9), name
        # Options pay their premium at once; futures' PnL waits for the 08:00 settlement.
        for cur in ("BTC", "ETH", "USDC"):
            flows = 0.0
            for t in trades:
                spec = ex.instruments.get(t["instrument_name"])
                if spec is None or spec.settlement_currency != cur:
                    continue
                s = t["amount"] if t["direction"] == "buy" else -t["amount"]
                flows += -s * t["price"] if spec.is_option else 0.0
                flows -= t["fee"]
            assert acc.balances[cur] == pytest.approx(acc.initial_balances[cur] + flows, abs=1e-7)


def run_op(ex: Exchange, names: list[str], o: tuple) -> None:
    kind = o[0]
    if kind == "move":
        ex.market.shift_index("BTC", o[1])
        ex.requote(list(ex.books))
        return
    live = [x for x in ex.orders.values() if x.is_open]
    if kind == "cancel":
        if live:
            target = live[o[1] % len(live)]
            ex.cancel(target.account, target.order_id)
        return
    if kind == "edit":
        if live:
            target = live[o[1] % len(live)]
            book = ex.books[target.instrument]
            ticks = book.ticks_of(target.price or book.tick) + o[2]
            if ticks < 1:
                return
            amount = book.step * o[3]
            try:
                ex.edit(
                    target.account,
                    {"order_id": target.order_id, "amount": amount, "price": book.price_of(ticks)},
                )
            except RpcError as e:
                assert e.code in (NOT_ENOUGH_FUNDS, INVALID_PARAMS, POST_ONLY_REJECT, 10007, 10005)
        return
    _, who, direction, idx, otype, steps, off = o
    name = names[idx % len(names)]
    book = ex.books[name]
    bb, _, ba, _ = book.top()
    touch = ba if direction == "buy" else bb
    if touch <= 0:
        touch = book.price_of(max(book.ticks_of(ex.mark_price(book.spec)), 1))
    ticks = max(book.ticks_of(touch) + off, 1)
    params: dict = {"instrument_name": name, "amount": book.step * steps}
    if otype == "market":
        params["type"] = "market"
    else:
        params.update(type="limit", price=book.price_of(ticks))
        if otype == "ioc":
            params["time_in_force"] = "immediate_or_cancel"
        elif otype == "fok":
            params["time_in_force"] = "fill_or_kill"
        elif otype == "post_only":
            params["post_only"] = True
    opposite = 1 if direction == "buy" else 0
    before = sum(book.level(opposite, t) for t, _ in book.sorted_levels(opposite))
    try:
        res = ex.place(who, direction, params)
    except RpcError as e:
        assert e.code in (NOT_ENOUGH_FUNDS, 10007, 10005, POST_ONLY_REJECT)
        return
    after = sum(book.level(opposite, t) for t, _ in book.sorted_levels(opposite))
    filled = res["order"]["filled_amount"]
    # What the order took is exactly what left the other side of the book.
    assert before - after == pytest.approx(filled, abs=1e-9)
    assert sum(t["amount"] for t in res["trades"]) == pytest.approx(filled, abs=1e-9)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=25), seed=st.integers(0, 3))
def test_matching_properties(ops: list[tuple], seed: int) -> None:
    ex = new_exchange(seed)
    names = traded(ex)
    for o in ops:
        run_op(ex, names, o)
        check_invariants(ex)


@settings(max_examples=40, deadline=None)
@given(
    p1=st.integers(20_000, 120_000),
    p2=st.integers(20_000, 120_000),
    amount=st.integers(1, 500),
)
def test_inverse_round_trip_pnl(p1: int, p2: int, amount: int) -> None:
    """Buying USD a at p1 and selling at p2 realises a (1/p1 - 1/p2) coin, less fees."""
    ex = new_exchange()
    acc = ex.accounts["alice"]
    spec = ex.instruments["BTC-PERPETUAL"]
    usd = amount * 10.0
    acc.apply_fill(spec, "buy", usd, float(p1), 0.0)
    realized = acc.apply_fill(spec, "sell", usd, float(p2), 0.0)
    assert realized == pytest.approx(usd * (1 / p1 - 1 / p2), rel=1e-12)
    assert acc.positions[spec.name].size == 0
    # The realised PnL reaches the balance at the daily settlement, with a settlement entry.
    assert acc.balances["BTC"] == 50.0
    acc.settle_position(spec, 30_000.0, 30_000.0, 0)
    assert acc.balances["BTC"] == pytest.approx(50.0 + usd * (1 / p1 - 1 / p2), abs=1e-9)
    entries = acc.settlements.get("BTC", [])
    assert sum(e["session_profit_loss"] for e in entries) == pytest.approx(usd * (1 / p1 - 1 / p2), abs=1e-8)


def test_aggressive_order_walks_the_book() -> None:
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    asks = book.sorted_levels(1)
    total = asks[0][1] + asks[1][1]
    amount = total + book.step  # needs the third level
    res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": amount, "type": "market"})
    prices = [t["price"] for t in res["trades"]]
    assert prices == sorted(prices) and len(set(prices)) == 3
    assert res["order"]["order_state"] == "filled"
    assert all(t["liquidity"] == "T" for t in res["trades"])
    assert book.best(1) is not None and book.best(1) >= asks[2][0]


def test_futures_books_are_deep_refill_after_a_take_and_follow_the_seed() -> None:
    """BTC-PERPETUAL holds millions of USD within its five levels (Deribit's does, a few ticks
    deep), ETH's less; a hedger's 100,000 USD market orders, one per market step, all fill near the
    touch (the book the last one took from is refilled at the next step); same seed, same book."""
    depth = []
    for seed in range(1, 8):
        ex = new_exchange(seed)
        for name in ("BTC-PERPETUAL", "ETH-PERPETUAL"):
            bids, asks = ex.books[name].depth(5)
            depth.append((name, sum(a for _, a in bids), sum(a for _, a in asks)))
    btc = sorted(x for name, *sides in depth if name == "BTC-PERPETUAL" for x in sides)
    eth = sorted(x for name, *sides in depth if name == "ETH-PERPETUAL" for x in sides)
    assert btc[0] >= 1_000_000 and btc[len(btc) // 2] >= 2_000_000, btc
    assert eth[len(eth) // 2] < btc[len(btc) // 2]
    assert new_exchange(5).books["BTC-PERPETUAL"].depth(5) == new_exchange(5).books["BTC-PERPETUAL"].depth(5)
    assert new_exchange(5).books["BTC-PERPETUAL"].depth(5) != new_exchange(6).books["BTC-PERPETUAL"].depth(5)

    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    now = START
    for _ in range(10):
        best = book.best(1)
        assert best is not None
        res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 100_000, "type": "market"})
        assert res["order"]["order_state"] == "filled"
        assert max(book.ticks_of(t["price"]) for t in res["trades"]) - best <= 10
        now += 0.1
        ex.step(now)
        # Refilled: the market maker's ladder is its whole profile again.
        assert [a for _, a in book.sorted_levels(1)] == book.profiles[1].sizes


def test_resting_order_fills_when_market_moves_through_it() -> None:
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    bid = book.top()[0]
    price = book.price_of(book.ticks_of(bid) - 20)
    res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 100, "price": price})
    assert res["order"]["order_state"] == "open"
    ex.market.shift_index("BTC", -2.0)
    ex.requote(["BTC-PERPETUAL"])
    order = ex.orders[res["order"]["order_id"]]
    assert order.state == "filled" and order.average_price == price
    trade = ex.user_trades["alice"][-1]
    assert trade["liquidity"] == "M" and trade["price"] == price
    assert ex.accounts["alice"].positions["BTC-PERPETUAL"].size == 100
    assert not book.is_crossed()


def test_post_only_crossing_is_repriced_or_rejected() -> None:
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    ask = book.top()[2]
    res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": ask, "post_only": True})
    assert res["order"]["price"] == book.price_of(book.ticks_of(ask) - 1)
    assert res["order"]["order_state"] == "open" and res["trades"] == []
    with pytest.raises(RpcError) as e:
        ex.place(
            "alice",
            "buy",
            {
                "instrument_name": "BTC-PERPETUAL",
                "amount": 10,
                "price": ask,
                "post_only": True,
                "reject_post_only": True,
            },
        )
    assert e.value.code == POST_ONLY_REJECT == 11054


def test_fill_or_kill_and_ioc() -> None:
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    ask, ask_amount = book.top()[2:]
    fok = ex.place(
        "alice",
        "buy",
        {
            "instrument_name": "BTC-PERPETUAL",
            "amount": ask_amount + 10,
            "price": ask,
            "time_in_force": "fill_or_kill",
        },
    )
    assert fok["order"]["order_state"] == "cancelled" and fok["order"]["filled_amount"] == 0
    ioc = ex.place(
        "alice",
        "buy",
        {
            "instrument_name": "BTC-PERPETUAL",
            "amount": ask_amount + 10,
            "price": ask,
            "time_in_force": "immediate_or_cancel",
        },
    )
    assert ioc["order"]["order_state"] == "cancelled" and ioc["order"]["filled_amount"] == ask_amount


@pytest.mark.parametrize(
    ("params", "code", "reason"),
    [
        (
            {"instrument_name": "BTC-1JAN99-1-C", "amount": 1, "price": 0.1},
            INVALID_PARAMS,
            "instrument not found",
        ),
        (
            {"instrument_name": "BTC-PERPETUAL", "amount": 15, "price": 60000.0},
            INVALID_PARAMS,
            "must be a multiple of contract size",
        ),
        (
            {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 60000.3},
            INVALID_PARAMS,
            "must conform to tick size",
        ),
        (
            {"instrument_name": "BTC-PERPETUAL", "amount": 1_000_000_000, "type": "market"},
            NOT_ENOUGH_FUNDS,
            None,
        ),
    ],
)
def test_deribit_rejections(params: dict, code: int, reason: str | None) -> None:
    ex = new_exchange()
    with pytest.raises(RpcError) as e:
        ex.place("alice", "buy", params)
    assert e.value.code == code
    if reason:
        assert e.value.to_json() == {
            "message": "Invalid params",
            "code": -32602,
            "data": {"reason": reason, "param": e.value.data["param"]},
        }
        assert e.value.data["reason"] == reason


def test_option_amount_step_and_funds() -> None:
    ex = new_exchange()
    opt = next(n for n, s in ex.instruments.items() if s.is_option and s.currency == "BTC")
    with pytest.raises(RpcError) as e:
        ex.place("alice", "buy", {"instrument_name": opt, "amount": 0.15, "type": "market"})
    assert e.value.data == {"reason": "must be a multiple of contract size", "param": "amount"}
    poor = Exchange(1, dataclasses.replace(SETTINGS, accounts=(SimAccount("alice", "x", (("BTC", 0.0001),)),)), START)
    ask = poor.books[opt].top()[2]
    with pytest.raises(RpcError) as e:
        poor.place("alice", "buy", {"instrument_name": opt, "amount": 10.0, "price": ask})
    assert e.value.code == NOT_ENOUGH_FUNDS == 10009 and e.value.message == "not_enough_funds"


def test_cancel_edit_and_ownership() -> None:
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    bid = book.top()[0]
    price = book.price_of(book.ticks_of(bid) - 10)
    res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "price": price, "label": "hedge"})
    oid = res["order"]["order_id"]
    with pytest.raises(RpcError) as e:
        ex.cancel("bob", oid)
    assert e.value.code == NOT_OWNER_OF_ORDER
    edited = ex.edit("alice", {"order_id": oid, "amount": 30, "price": book.price_of(book.ticks_of(bid) - 5)})
    assert edited["order"]["amount"] == 30 and edited["order"]["replaced"] is True
    assert book.level(0, book.ticks_of(bid) - 5) >= 30
    assert ex.cancel_where("alice", lambda o, s: o.label == "hedge") == 1
    with pytest.raises(RpcError) as e:
        ex.cancel("alice", oid)
    assert e.value.code == NOT_OPEN_ORDER
    with pytest.raises(RpcError) as e:
        ex.cancel("alice", "nope")
    assert e.value.code == ORDER_NOT_FOUND
    assert book.level(0, book.ticks_of(bid) - 5) == book.mm[0].get(book.ticks_of(bid) - 5, 0.0)


def test_stop_market_triggers_on_index() -> None:
    ex = new_exchange()
    idx = ex.index_price("BTC")
    trigger = float(round(idx * 0.99 * 2) / 2)
    res = ex.place(
        "alice",
        "sell",
        {
            "instrument_name": "BTC-PERPETUAL",
            "amount": 50,
            "type": "stop_market",
            "trigger": "index_price",
            "trigger_price": trigger,
        },
    )
    assert res["order"]["order_state"] == "untriggered"
    ex.step(START + 0.1, requote=False)
    assert ex.orders[res["order"]["order_id"]].state == "untriggered"
    ex.market.shift_index("BTC", -3.0)
    ex.step(START + 0.2, requote=False)
    order = ex.orders[res["order"]["order_id"]]
    assert order.state == "filled" and order.triggered
    assert ex.accounts["alice"].positions["BTC-PERPETUAL"].size == -50


def test_reduce_only_is_clipped_to_the_position() -> None:
    ex = new_exchange()
    ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 30, "type": "market"})
    res = ex.place(
        "alice",
        "sell",
        {"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "market", "reduce_only": True},
    )
    assert res["order"]["amount"] == 30
    assert ex.accounts["alice"].positions["BTC-PERPETUAL"].size == 0
    with pytest.raises(RpcError):
        ex.place(
            "alice",
            "sell",
            {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market", "reduce_only": True},
        )


def test_expiry_settles_and_lists() -> None:
    ex = new_exchange()
    first = min(s.expiration_ms for s in ex.instruments.values() if s.expiry is not None)
    opt = next(n for n, s in ex.instruments.items() if s.is_option and s.expiration_ms == first and s.currency == "BTC")
    ex.place("alice", "buy", {"instrument_name": opt, "amount": 1.0, "type": "market"})
    bal = ex.accounts["alice"].balances["BTC"]
    ex.step(first / 1000 + 1, requote=False)
    assert opt not in ex.instruments
    states = [(e[1].name, e[2]) for e in ex.events if e[0] == "state"]
    assert (opt, "terminated") in states
    assert any(s == "created" for _, s in states)
    assert opt not in ex.accounts["alice"].positions
    assert ex.accounts["alice"].balances["BTC"] >= bal
    assert all(s.expiration_ms > first for s in ex.instruments.values())


def test_orders_by_label_and_the_order_history_list_open_and_closed_orders() -> None:
    """``private/get_order_state_by_label`` lists the account's orders of that label, open and closed;
    ``private/get_order_history_by_currency`` the closed or executed ones (unfilled ones on request),
    newest first (as Deribit documents both)."""
    ex = new_exchange()
    book = ex.books["BTC-PERPETUAL"]
    bid = book.top()[0]
    far = book.price_of(book.ticks_of(bid) - 10)
    filled = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "type": "market",
                                       "label": "hedge-1"})["order"]
    resting = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "price": far,
                                        "label": "hedge-2"})["order"]
    cancelled = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "price": far,
                                          "label": "hedge-2"})["order"]
    ex.cancel("alice", cancelled["order_id"])
    ex.place("bob", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "price": far, "label": "hedge-2"})
    by_label = ex.orders_by_label_json("alice", "BTC", "hedge-2")
    assert {o["order_id"]: o["order_state"] for o in by_label} == {resting["order_id"]: "open",
                                                                   cancelled["order_id"]: "cancelled"}
    assert [o["order_state"] for o in ex.orders_by_label_json("alice", "BTC", "hedge-1")] == ["filled"]
    assert ex.orders_by_label_json("alice", "ETH", "hedge-1") == []
    assert [o["order_id"] for o in ex.order_history_json("alice", "BTC")] == [filled["order_id"]]
    unfilled = ex.order_history_json("alice", "BTC", include_unfilled=True)
    assert [o["order_id"] for o in unfilled] == [cancelled["order_id"], filled["order_id"]]
    assert ex.order_history_json("alice", "BTC", include_unfilled=True, count=1, offset=1) == unfilled[1:]
