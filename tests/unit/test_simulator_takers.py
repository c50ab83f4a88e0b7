"""The simulator's takers: a user's limit order resting at or inside the touch of an option book is
hit (the user is the maker) at the settings' rate, in part or in full; one behind the market
maker's touch, or on a future's book, is not."""

from __future__ import annotations

import dataclasses

from simulator.exchange import Exchange
from simulator.settings import SimAccount, SimSettings

START = 1_790_000_000.0
SETTINGS = SimSettings(chain="small", accounts=(SimAccount("alice", "a-secret", (("BTC", 50.0), ("ETH", 500.0),
                                                                                ("USDC", 1e6))),),
                       public_trades_per_s=0.0, updates_per_s=0.0, index_vol=0.0, jumps_per_year=0.0,
                       option_taker_hits_per_s=1.0)


def option(ex: Exchange) -> str:
    names = sorted(n for n, s in ex.instruments.items() if s.is_option and s.currency == "BTC" and not s.is_linear)
    for name in names[len(names) // 2:]:
        bid, _, ask, _ = ex.books[name].top()
        book = ex.books[name]
        if bid > 0 and ask > 0 and book.ticks_of(ask) - book.ticks_of(bid) >= 4:
            return name
    raise AssertionError("no two-sided option with a spread of 4 ticks")


def run(ex: Exchange, seconds: float, step: float = 0.1) -> None:
    t = ex.now_s
    for i in range(1, int(seconds / step) + 1):
        ex.step(t + i * step)


def test_a_post_only_order_at_the_mid_is_hit_within_seconds_as_maker_in_parts() -> None:
    ex = Exchange(5, SETTINGS, START)
    name = option(ex)
    book = ex.books[name]
    bid, _, ask, _ = book.top()
    mid = book.price_of((book.ticks_of(bid) + book.ticks_of(ask)) // 2)
    res = ex.place("alice", "sell", {"instrument_name": name, "amount": 5.0, "price": mid, "post_only": True,
                                     "label": "plan-1-1"})
    order = ex.orders[res["order"]["order_id"]]
    assert order.state == "open" and order.price == mid and res["trades"] == []
    run(ex, 60.0)
    trades = [t for t in ex.user_trades["alice"] if t["order_id"] == order.order_id]
    assert order.state == "filled" and order.filled_amount == 5.0
    assert len(trades) >= 2  # in parts: a hit takes a taker's size, not all that rests
    assert all(t["price"] == mid and t["liquidity"] == "M" and t["label"] == "plan-1-1" for t in trades)
    assert ex.accounts["alice"].positions[name].size == -5.0
    assert not book.is_crossed()


def test_an_order_behind_the_touch_and_a_futures_order_are_not_hit() -> None:
    ex = Exchange(5, SETTINGS, START)
    name = option(ex)
    book = ex.books[name]
    bid = book.top()[0]
    behind = ex.place("alice", "buy", {"instrument_name": name, "amount": 1.0,
                                       "price": book.price_of(book.ticks_of(bid) - 2), "post_only": True})
    perp = ex.books["BTC-PERPETUAL"]
    pbid = perp.top()[0]
    future = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 100,
                                       "price": perp.price_of(perp.ticks_of(pbid) + 1), "post_only": True})
    run(ex, 30.0)
    assert ex.orders[behind["order"]["order_id"]].filled_amount == 0.0
    assert ex.orders[future["order"]["order_id"]].filled_amount == 0.0


def test_no_takers_when_the_rate_is_zero() -> None:
    ex = Exchange(5, dataclasses.replace(SETTINGS, option_taker_hits_per_s=0.0), START)
    name = option(ex)
    book = ex.books[name]
    bid, _, ask, _ = book.top()
    mid = book.price_of((book.ticks_of(bid) + book.ticks_of(ask)) // 2)
    res = ex.place("alice", "buy", {"instrument_name": name, "amount": 1.0, "price": mid, "post_only": True})
    run(ex, 30.0)
    assert ex.orders[res["order"]["order_id"]].filled_amount == 0.0
