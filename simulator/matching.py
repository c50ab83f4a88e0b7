"""Order books on the tick grid and the matching engine.

A book holds the simulated market maker's liquidity and the users' resting orders, both keyed by
integer tick (so prices never drift off the grid). Every change marks the touched levels; ``flush``
turns them into Deribit's ``["new"|"change"|"delete", price, amount]`` entries and the next
``change_id``. An aggressive order walks the book (resting user orders first at each level, then
the market maker); when the market maker requotes through a resting user order, that order fills
at its own price as maker: the market moved through it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.listing import InstrumentSpec

AMOUNT_DECIMALS = 8


#: The median USD of the first level of a perpetual's book (the n-th holds n times it), by currency.
FUTURE_LEVEL_USD = {"BTC": 200_000.0, "ETH": 70_000.0}
#: A dated future's levels against its perpetual's, and a USDC linear perpetual's.
DATED_FUTURE_SHARE = 0.2
LINEAR_PERPETUAL_SHARE = 0.1


def clean(x: float) -> float:
    """Amounts are sums of grid multiples; round away the float dust so they stay exact."""
    return round(x, AMOUNT_DECIMALS) + 0.0


@dataclass(slots=True)
class Order:
    """A user's order with Deribit's order fields (``to_json`` gives the wire object)."""

    order_id: str
    account: str
    instrument: str
    direction: str  # buy or sell
    amount: float
    order_type: str  # limit, market, stop_limit, stop_market
    price: float | None  # limit price; None for market and stop-market
    creation_ms: int
    time_in_force: str = "good_til_cancelled"
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    label: str = ""
    trigger: str | None = None
    trigger_price: float | None = None
    max_show: float | None = None
    filled_amount: float = 0.0
    average_price: float = 0.0
    commission: float = 0.0
    state: str = "open"  # open, filled, cancelled, rejected, untriggered
    last_update_ms: int = 0
    cancel_reason: str | None = None
    triggered: bool | None = None
    replaced: bool = False
    # A market order's protection price (the price band's edge when it went to the book): Deribit
    # shows it as the ``price`` of a market order, and "market_price" only while one is untriggered.
    market_limit: float | None = None
    contract_size: float = 1.0  # the instrument's: ``contracts`` = amount / contract_size
    # Internal: the limit price in ticks (None while the order has no price).
    ticks: int | None = None

    @property
    def remaining(self) -> float:
        return clean(self.amount - self.filled_amount)

    @property
    def is_buy(self) -> bool:
        return self.direction == "buy"

    @property
    def is_open(self) -> bool:
        return self.state in ("open", "untriggered")

    def add_fill(self, price: float, amount: float, fee: float, now_ms: int) -> None:
        total = self.filled_amount + amount
        self.average_price = (self.average_price * self.filled_amount + price * amount) / total
        self.filled_amount = clean(total)
        self.commission = round(self.commission + fee, 10)
        self.last_update_ms = now_ms
        if self.remaining <= 0:
            self.state = "filled"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "web": False,
            "time_in_force": self.time_in_force,
            "replaced": self.replaced,
            "reduce_only": self.reduce_only,
            "price": self.price if self.price is not None else self.market_limit or "market_price",
            "post_only": self.post_only,
            "order_type": self.order_type,
            "order_state": self.state,
            "order_id": self.order_id,
            "max_show": self.max_show if self.max_show is not None else self.amount,
            "last_update_timestamp": self.last_update_ms or self.creation_ms,
            "label": self.label,
            "is_rebalance": False,
            "is_liquidation": False,
            "instrument_name": self.instrument,
            "filled_amount": self.filled_amount,
            "direction": self.direction,
            "creation_timestamp": self.creation_ms,
            "commission": self.commission,
            "average_price": round(self.average_price, 10),
            "api": True,
            "amount": self.amount,
            "contracts": clean(self.amount / self.contract_size),
            "mmp": False,
            "risk_reducing": False,
        }
        if self.post_only:
            d["reject_post_only"] = self.reject_post_only
        if self.trigger is not None:
            d["trigger"] = self.trigger
            d["trigger_price"] = self.trigger_price
            d["triggered"] = bool(self.triggered)
        if self.state == "cancelled":
            d["cancel_reason"] = self.cancel_reason or "user_request"
        return d


@dataclass(slots=True)
class Fill:
    """One execution: ``taker``/``maker`` None is the simulated market maker."""

    taker: Order | None
    maker: Order | None
    ticks: int
    amount: float


@dataclass(slots=True)
class QuoteProfile:
    """The market maker's ladder on one side: gaps between levels (ticks) and sizes."""

    gaps: list[int] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)


class Book:
    """One instrument's order book. Prices are integer ticks internally."""

    def __init__(self, spec: InstrumentSpec, rng: random.Random, levels: int, change_id: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.tick = spec.tick_size
        self.step = float(spec.min_trade_amount)
        self.rng = rng
        self.mm: tuple[dict[int, float], dict[int, float]] = ({}, {})  # bids, asks
        self.users: tuple[dict[int, list[Order]], dict[int, list[Order]]] = ({}, {})
        self.published: tuple[dict[int, float], dict[int, float]] = ({}, {})
        self.touched: tuple[set[int], set[int]] = (set(), set())
        self.change_id = change_id
        self.stops: list[Order] = []
        self.profiles = (self._profile(levels), self._profile(levels))
        self.last_price: float | None = None
        self.volume = 0.0
        self.high: float | None = None
        self.low: float | None = None
        self.open_interest = 0.0

    # --- market maker ladder -------------------------------------------------------------------

    def _size(self, level: int) -> float:
        """A level's size: coins for options, USD for futures (turned into coins for the linear
        ones when quoted, see :meth:`_amount`)."""
        if self.spec.is_option:
            # Median 9 coins a level with a fat upper tail, as the real capture's option tops
            # (BTC: median 9, upper quartile 95): a planner's leg of tens of coins finds its size.
            coins = math.exp(self.rng.gauss(math.log(9.0 if self.spec.currency == "BTC" else 90.0), 1.6))
            return max(self.step, round(coins / self.step) * self.step)
        # Deeper levels hold more, as on Deribit's futures books: BTC-PERPETUAL's top is some
        # 100,000 to 200,000 USD a side (a real ticker: 117,660 bid, 186,520 ask) and the five
        # levels hold about 3 million (median; a hedger's 100,000 USD market order walks a level or
        # two). Dated futures, ETH and the USDC perpetuals are thinner.
        base = FUTURE_LEVEL_USD.get(self.spec.currency, FUTURE_LEVEL_USD["ETH"])
        if not self.spec.is_perpetual:
            base *= DATED_FUTURE_SHARE
        if self.spec.is_linear:
            base *= LINEAR_PERPETUAL_SHARE
        usd = math.exp(self.rng.gauss(math.log(base * (1 + level)), 0.7))
        if self.spec.is_linear:
            return clean(max(usd, 1.0))
        return max(self.step, round(usd / self.step) * self.step)

    def _amount(self, size: float, fair: float) -> float:
        """What a profile's ``size`` shows at ``fair``: a linear future's USD in coins, on its step."""
        if self.spec.is_option or not self.spec.is_linear or not fair > 0:
            return size
        return clean(max(self.step, round(size / fair / self.step) * self.step))

    def _gap(self) -> int:
        if self.spec.is_option:
            return self.rng.choice((1, 1, 1, 2, 2, 3, 5, 10))
        return self.rng.choice((1, 1, 1, 2, 3, 5))

    def _profile(self, levels: int) -> QuoteProfile:
        gaps = [0] + [self._gap() for _ in range(max(levels, 1) - 1)]
        return QuoteProfile(gaps, [clean(self._size(i)) for i in range(max(levels, 1))])

    def _mutate(self, p: QuoteProfile) -> None:
        r = self.rng.random()
        i = self.rng.randrange(len(p.sizes))
        if r < 0.5:
            p.sizes[i] = clean(self._size(i))
        elif r < 0.6 and i > 0:
            p.gaps[i] = self._gap()

    def ticks_of(self, price: float) -> int:
        return round(price / self.tick)

    def price_of(self, ticks: int) -> float:
        return round(ticks * self.tick, 10) + 0.0

    def on_grid(self, price: float) -> bool:
        n = price / self.tick
        return abs(n - round(n)) <= 1e-7 * max(1.0, abs(n))

    def requote(self, fair: float, half_spread: float, mutate: bool = True) -> list[Fill]:
        """Move the market maker's ladder to ``fair``; fill resting user orders it crosses."""
        if mutate:
            self._mutate(self.profiles[0])
            self._mutate(self.profiles[1])
        top_bid = math.floor((fair - half_spread) / self.tick + 1e-9)
        top_ask = max(math.ceil((fair + half_spread) / self.tick - 1e-9), top_bid + 1, 1)
        fills = self._cross_users(top_bid, top_ask)
        for side, top, sign in ((0, top_bid, -1), (1, top_ask, 1)):
            want: dict[int, float] = {}
            t = top
            prof = self.profiles[side]
            for gap, size in zip(prof.gaps, prof.sizes, strict=True):
                t += sign * gap
                if t >= 1:
                    want[t] = self._amount(size, fair)
            cur = self.mm[side]
            if cur != want:
                touched = self.touched[side]
                touched.update(k for k in cur if cur[k] != want.get(k))
                touched.update(k for k in want if k not in cur)
                self.mm = (want, self.mm[1]) if side == 0 else (self.mm[0], want)
        return fills

    def _cross_users(self, top_bid: int, top_ask: int) -> list[Fill]:
        fills: list[Fill] = []
        asks = self.users[1]
        for t in sorted(k for k in asks if k <= top_bid):
            for o in asks.pop(t):
                fills.append(Fill(None, o, t, o.remaining))
            self.touched[1].add(t)
        bids = self.users[0]
        for t in sorted((k for k in bids if k >= top_ask), reverse=True):
            for o in bids.pop(t):
                fills.append(Fill(None, o, t, o.remaining))
            self.touched[0].add(t)
        return fills

    # --- levels --------------------------------------------------------------------------------

    def level(self, side: int, t: int) -> float:
        total = self.mm[side].get(t, 0.0)
        queue = self.users[side].get(t)
        if not queue:
            return total
        for o in queue:
            total += o.remaining
        return clean(total)

    def best(self, side: int) -> int | None:
        """Live best price in ticks (market maker and user orders, flushed or not)."""
        mm = self.mm[side]
        users = self.users[side]
        if side == 0:
            b = max(mm) if mm else None
            for k, v in users.items():
                if v and (b is None or k > b):
                    b = k
        else:
            b = min(mm) if mm else None
            for k, v in users.items():
                if v and (b is None or k < b):
                    b = k
        return b

    def sorted_levels(self, side: int) -> list[tuple[int, float]]:
        keys = set(self.mm[side]) | {k for k, v in self.users[side].items() if v}
        out = [(k, self.level(side, k)) for k in keys]
        out = [(k, a) for k, a in out if a > 0]
        out.sort(reverse=side == 0)
        return out

    def top(self) -> tuple[float, float, float, float]:
        """Published (best bid, bid amount, best ask, ask amount), zeros for an empty side like Deribit."""
        bids, asks = self.published
        bb = max(bids) if bids else None
        ba = min(asks) if asks else None
        return (
            self.price_of(bb) if bb is not None else 0.0,
            bids[bb] if bb is not None else 0.0,
            self.price_of(ba) if ba is not None else 0.0,
            asks[ba] if ba is not None else 0.0,
        )

    def flush(self, change_id: int) -> tuple[list[list[Any]], list[list[Any]]] | None:
        """Diff touched levels against the last published state; None if nothing changed."""
        out: tuple[list[list[Any]], list[list[Any]]] = ([], [])
        for side in (0, 1):
            touched = self.touched[side]
            if not touched:
                continue
            pub = self.published[side]
            entries = out[side]
            for t in sorted(touched, reverse=side == 0):
                now = self.level(side, t)
                old = pub.get(t)
                if now > 0:
                    if old is None:
                        entries.append(["new", self.price_of(t), now])
                    elif old != now:
                        entries.append(["change", self.price_of(t), now])
                    else:
                        continue
                    pub[t] = now
                elif old is not None:
                    entries.append(["delete", self.price_of(t), 0.0])
                    del pub[t]
            touched.clear()
        if not out[0] and not out[1]:
            return None
        self.change_id = change_id
        return out

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """Every published level as ``["new", price, amount]`` (a snapshot notification's body)."""
        return (
            [["new", self.price_of(t), a] for t, a in sorted(self.published[0].items(), reverse=True)],
            [["new", self.price_of(t), a] for t, a in sorted(self.published[1].items())],
        )

    def depth(self, n: int) -> tuple[list[list[float]], list[list[float]]]:
        return (
            [[self.price_of(t), a] for t, a in sorted(self.published[0].items(), reverse=True)[:n]],
            [[self.price_of(t), a] for t, a in sorted(self.published[1].items())[:n]],
        )

    # --- user orders ---------------------------------------------------------------------------

    def available(self, order: Order, limit: int | None) -> float:
        """Liquidity an aggressive order could take up to ``limit`` ticks (all if None)."""
        side = 1 if order.is_buy else 0
        total = 0.0
        for t, a in self.sorted_levels(side):
            if limit is not None and (t > limit if order.is_buy else t < limit):
                break
            total += a
        return clean(total)

    def would_cross(self, direction: str, ticks: int) -> bool:
        if direction == "buy":
            ba = self.best(1)
            return ba is not None and ticks >= ba
        bb = self.best(0)
        return bb is not None and ticks <= bb

    def match(self, order: Order, limit: int | None) -> list[Fill]:
        """Walk the opposite side up to ``limit`` ticks (None: a market order) for ``order``."""
        side = 1 if order.is_buy else 0
        fills: list[Fill] = []
        users = self.users[side]
        mm = self.mm[side]
        want = order.remaining
        while want > 0:
            best = self.best(side)
            if best is None or (limit is not None and (best > limit if order.is_buy else best < limit)):
                break
            queue = users.get(best, [])
            while queue and want > 0:
                maker = queue[0]
                take = min(want, maker.remaining)
                fills.append(Fill(order, maker, best, take))
                want = clean(want - take)
                if take >= maker.remaining:
                    queue.pop(0)
            if not queue:
                users.pop(best, None)
            if want > 0 and best in mm:
                take = min(want, mm[best])
                fills.append(Fill(order, None, best, take))
                want = clean(want - take)
                left = clean(mm[best] - take)
                if left > 0:
                    mm[best] = left
                else:
                    del mm[best]
            self.touched[side].add(best)
        return fills

    def users_at_touch(self, side: int) -> int | None:
        """The best level of ``side`` (0 bids, 1 asks) when user orders rest there (at or
        inside the market maker's touch), else None."""
        users = [k for k, v in self.users[side].items() if v]
        if not users:
            return None
        best_user = max(users) if side == 0 else min(users)
        mm = self.mm[side]
        if mm and (max(mm) > best_user if side == 0 else min(mm) < best_user):
            return None  # the market maker is ahead of every user order
        return best_user

    def hit_users(self, side: int, ticks: int, amount: float) -> list[Fill]:
        """A taker (not a user) takes up to ``amount`` from the user orders queued at ``ticks`` of
        ``side``, first come first filled (price-time priority)."""
        fills: list[Fill] = []
        queue = self.users[side].get(ticks, [])
        want = amount
        while queue and want > 0:
            maker = queue[0]
            take = min(want, maker.remaining)
            fills.append(Fill(None, maker, ticks, take))
            want = clean(want - take)
            if take >= maker.remaining:
                queue.pop(0)
        if not queue:
            self.users[side].pop(ticks, None)
        self.touched[side].add(ticks)
        return fills

    def rest(self, order: Order) -> None:
        assert order.ticks is not None
        side = 0 if order.is_buy else 1
        self.users[side].setdefault(order.ticks, []).append(order)
        self.touched[side].add(order.ticks)

    def remove(self, order: Order) -> bool:
        if order.ticks is None:
            return False
        side = 0 if order.is_buy else 1
        queue = self.users[side].get(order.ticks)
        if not queue or order not in queue:
            return False
        queue.remove(order)
        if not queue:
            del self.users[side][order.ticks]
        self.touched[side].add(order.ticks)
        return True

    def touch_order(self, order: Order) -> None:
        if order.ticks is not None:
            self.touched[0 if order.is_buy else 1].add(order.ticks)

    def record_trade(self, price: float, amount: float) -> None:
        self.last_price = price
        self.volume = clean(self.volume + amount)
        self.high = price if self.high is None else max(self.high, price)
        self.low = price if self.low is None else min(self.low, price)

    def is_crossed(self) -> bool:
        bb, ba = self.best(0), self.best(1)
        return bb is not None and ba is not None and bb >= ba
