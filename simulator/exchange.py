"""The simulated exchange: listing, market, books, accounts and orders, with no I/O.

``Exchange`` is driven by ``step(now_s)`` (the market moves, books requote, stops trigger,
instruments expire and are listed) and by the private-API calls (``place``, ``edit``,
``cancel``, ...). It answers with Deribit's result objects and appends events to ``events``:
the server (or the wire-log generator) drains them and turns them into notifications.

Events are tuples, first item the kind:
``("book", name, prev_change_id, change_id, bids, asks, ts_ms)``, ``("ticker", name)``,
``("index", currency)``, ``("trades", name, [trade])``, ``("state", spec, state, ts_ms)``,
``("order", client_id, spec, order_json)``, ``("user_trades", client_id, spec, [trade])``,
``("portfolio", client_id, currency)``, ``("changes", client_id, spec, orders, trades, positions)``
(``user.changes``: what one event did to one instrument, atomically), ``("ticker_closed", name,
ticker)`` (an expiring instrument's last ticker), ``("platform_state", price_index, locked)``.

At 08:00 UTC every position is settled at its mark (futures' session PnL into the balance, a
``settlement`` entry in the history) and expiring instruments are delivered at the index (their
last ticker says ``"state": "closed"``, ``"estimated_delivery_price": "expired"`` and the
``delivery_price``; a ``delivery`` entry).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from simulator import errors
from simulator.accounts import DAY_S, Account, Greeks, fee_for, intrinsic, last_settlement_s
from simulator.errors import RpcError, invalid_params
from simulator.listing import InstrumentSpec, build_listing, future_name
from simulator.market import MarketModel
from simulator.matching import Book, Fill, Order, clean
from simulator.settings import SimSettings

Event = tuple[Any, ...]
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel")
ORDER_TYPES = ("limit", "market", "stop_limit", "stop_market")
TRIGGERS = ("index_price", "mark_price", "last_price")
PORTFOLIO_EVERY_S = 5.0


class Exchange:
    """All exchange state; single-threaded (the server runs it on its event loop)."""

    def __init__(self, seed: int, settings: SimSettings, now_s: float) -> None:
        self.settings = settings
        self.seed = seed
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed + 1)
        self._taker_rng = random.Random(seed + 2)  # the takers that hit users' resting option orders
        self.now_s = now_s  # the exchange's clock: every fill and order state is stamped with it
        self._stepped_s = now_s  # where the market was last moved to
        self.market = MarketModel(seed, settings, now_s)
        self.instruments: dict[str, InstrumentSpec] = {}
        self.books: dict[str, Book] = {}
        self._refill: set[str] = set()  # futures books a user's order took the market maker's size from
        self.events: list[Event] = []
        self.accounts: dict[str, Account] = {}
        for acc in settings.accounts:
            bal = {c: acc.balance(c) for c in settings.account_currencies}
            self.accounts[acc.client_id] = Account(acc.client_id, acc.client_secret, bal, initial_balances=dict(bal))
        self.orders: dict[str, Order] = {}
        self.open_orders: dict[str, dict[str, Order]] = {cid: {} for cid in self.accounts}
        self.user_trades: dict[str, list[dict[str, Any]]] = {cid: [] for cid in self.accounts}
        self._change_id = 30_000_000_000 + self.rng.randrange(1_000_000)
        self._order_seq = 10_000_000 + self.rng.randrange(1_000_000)
        self._trade_seq = 200_000_000 + self.rng.randrange(1_000_000)
        self._inst_seq: dict[str, int] = {}
        self.settlement: dict[str, float] = {}
        self.last_price: dict[str, float] = {}
        self._iv_cache: dict[str, tuple[float, float]] = {}
        self._next_index_s = now_s
        self._next_portfolio_s = now_s + PORTFOLIO_EVERY_S
        self._listed_ms = int(now_s * 1000)
        self._next_settlement_s = last_settlement_s(now_s) + DAY_S
        self.locked_indices: set[str] = set()
        self._add_instruments(self._listing(now_s), False)

    # --- helpers -------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return int(self.now_s * 1000)

    def _listing(self, now_s: float) -> list[InstrumentSpec]:
        s = self.settings
        return build_listing(now_s, self._spots(), s.chain, s.currencies, s.linear)

    def _spots(self) -> dict[str, float]:
        return {c: self.market.index(c) for c in self.settings.currencies}

    def _next_change_id(self) -> int:
        # Deribit's change ids are shared across books: each book sees irregular increments.
        self._change_id += self.rng.randint(1, 40)
        return self._change_id

    def spec(self, name: Any) -> InstrumentSpec:
        spec = self.instruments.get(name) if isinstance(name, str) else None
        if spec is None:
            raise invalid_params("instrument_name", "instrument not found")
        return spec

    def account(self, client_id: str) -> Account:
        return self.accounts[client_id]

    def fair(self, spec: InstrumentSpec) -> float:
        if spec.is_option:
            return self.market.mark(spec.name)
        return self.market.future_price(spec)

    def mark_price(self, spec: InstrumentSpec) -> float:
        if spec.is_option:
            return self.market.mark(spec.name)
        return round(self.market.future_price(spec), 2)

    def index_price(self, currency: str) -> float:
        return round(self.market.index(currency), 2)

    def underlying(self, spec: InstrumentSpec) -> tuple[str, float]:
        """(underlying_index, underlying_price): the same-expiry future, else Deribit's synthetic."""
        assert spec.expiry is not None
        fut = future_name(spec.currency, spec.expiry)
        if spec.is_linear:
            fut = fut.replace(spec.currency, f"{spec.currency}_{spec.linear_currency}", 1)
        name = fut if fut in self.instruments else f"SYN.{fut}"
        return name, round(self.market.forward(spec.currency, spec.expiration_ms), 2)

    def marks(self, spec: InstrumentSpec) -> tuple[float, float, float, Greeks | None]:
        index = self.index_price(spec.currency)
        if spec.name not in self.instruments:
            mark = self.last_price.get(spec.name, 0.0)
            return mark, index, index, None
        if spec.is_option:
            q = self.market.quote(spec.name)
            return q.mark_price, index, q.underlying_price, Greeks(*q.exact)
        return self.mark_price(spec), index, index, None

    def _half_spread(self, spec: InstrumentSpec) -> float:
        if spec.is_option:
            vega_unit = self.market.quote(spec.name).vega_coin
            return max(self.settings.spread_vols * vega_unit, 0.5 * spec.tick_size)
        return 0.6 * spec.tick_size

    def price_band(self, spec: InstrumentSpec) -> tuple[float, float]:
        mark = self.mark_price(spec)
        tick = spec.tick_size
        if spec.is_option:
            unit = self.underlying(spec)[1] if spec.is_linear else 1.0
            band = 0.015 * unit + 0.3 * mark
            lo = max(tick, math.floor((mark - band) / tick) * tick)
            return round(lo, 8), round(math.ceil((mark + band) / tick) * tick, 8)
        return (
            round(math.floor(mark * 0.975 / tick) * tick, 2),
            round(math.ceil(mark * 1.025 / tick) * tick, 2),
        )

    # --- listing -------------------------------------------------------------------------------

    def _add_instruments(self, specs: list[InstrumentSpec], announce: bool) -> None:
        new = [s for s in specs if s.name not in self.instruments]
        for s in new:
            self.instruments[s.name] = s
        self.market.set_options([s for s in self.instruments.values() if s.is_option])
        for s in new:
            book = Book(s, self.rng, self.settings.book_levels, self._next_change_id())
            self.books[s.name] = book
            fair = self.fair(s)
            book.requote(fair, self._half_spread(s), mutate=False)
            book.flush(book.change_id)
            mark = self.mark_price(s)
            self.settlement[s.name] = mark
            bb, _, ba, _ = book.top()
            self.last_price[s.name] = round(bb if bb else ba, 10) if (bb or ba) else mark
            self._inst_seq[s.name] = 1
            if announce:
                self.events.append(("state", s, "created", self.now_ms))
                self.events.append(("state", s, "started", self.now_ms))

    def _expire(self, now_s: float) -> None:
        now_ms = int(now_s * 1000)
        expired = [s for s in self.instruments.values() if s.expiry is not None and s.expiration_ms <= now_ms]
        if not expired:
            return
        touched: set[tuple[str, str]] = set()
        for s in expired:
            delivery = self.index_price(s.currency)
            for o in list(self.orders.values()):
                if o.instrument == s.name and o.is_open:
                    self._close_order(o, "cancelled", "settlement")
            self.events.append(("state", s, "closed", now_ms))
            self.events.append(("ticker_closed", s.name, self.closing_ticker(s, delivery)))
            for acc in self.accounts.values():
                if s.name in acc.positions:
                    acc.deliver(s, delivery, now_ms)
                    touched.add((acc.client_id, s.settlement_currency))
            self.events.append(("state", s, "settled", now_ms))
            self.events.append(("state", s, "terminated", now_ms))
            del self.instruments[s.name]
            del self.books[s.name]
        for o in list(self.orders.values()):
            if o.is_open and o.time_in_force == "good_til_day":
                self._close_order(o, "cancelled", "good_til_day")
        self._add_instruments(self._listing(now_s), True)
        for cid, cur in sorted(touched):
            self.events.append(("portfolio", cid, cur))

    def closing_ticker(self, spec: InstrumentSpec, delivery: float) -> dict[str, Any]:
        """The last ticker of an expiring instrument: ``"state": "closed"``, the delivery price, and
        ``"estimated_delivery_price": "expired"``; an option's mark is its value at delivery and
        its greeks are zero (as in Deribit's closing option tickers)."""
        out = self.ticker(spec.name)
        value = intrinsic(spec, delivery) if spec.is_option else delivery
        out.update(
            {
                "state": "closed",
                "estimated_delivery_price": "expired",
                "delivery_price": delivery,
                "mark_price": round(value, 8),
                "index_price": delivery,
                "best_bid_price": 0.0,
                "best_bid_amount": 0.0,
                "best_ask_price": 0.0,
                "best_ask_amount": 0.0,
            }
        )
        if spec.is_option:
            out["greeks"] = {"vega": 0.0, "theta": 0.0, "rho": 0.0, "gamma": 0.0, "delta": 0.0}
            out["bid_iv"] = out["ask_iv"] = 0.0
        return out

    def _settle(self, at_s: float) -> None:
        """Deribit's daily 08:00 UTC settlement: every instrument's settlement price becomes its
        mark; every position's session PnL is settled (futures' into the balance)."""
        at_ms = int(at_s * 1000)
        touched: set[tuple[str, str]] = set()
        for name, spec in self.instruments.items():
            mark = self.mark_price(spec)
            self.settlement[name] = mark
            for acc in self.accounts.values():
                if name in acc.positions:
                    acc.settle_position(spec, mark, self.index_price(spec.currency), at_ms)
                    touched.add((acc.client_id, spec.settlement_currency))
        for cid, cur in sorted(touched):
            self.events.append(("portfolio", cid, cur))

    def settle_due(self, now_s: float) -> None:
        """Expire, deliver and settle at every 08:00 UTC up to ``now_s`` (expiring instruments
        are delivered, not settled)."""
        while now_s >= self._next_settlement_s:
            at = self._next_settlement_s
            self._next_settlement_s += DAY_S
            self._expire(at)
            self._settle(at)
        self._expire(now_s)

    def settlement_history(
        self, client_id: str, currency: str, kind: Any, count: Any, continuation: Any
    ) -> dict[str, Any]:
        if kind not in (None, "settlement", "delivery", "bankruptcy"):
            raise invalid_params("type", "must be settlement, delivery or bankruptcy")
        n = count if isinstance(count, int) and not isinstance(count, bool) else 20
        if not 1 <= n <= 1000:
            raise invalid_params("count", "must be between 1 and 1000")
        return self.accounts[client_id].settlement_history(currency, kind, n, continuation)

    # --- platform locks ------------------------------------------------------------------------

    def lock_index(self, price_index: str, locked: bool) -> None:
        """Lock or unlock trading on one price index (``btc_usd``); ``platform_state`` tells it."""
        if locked == (price_index in self.locked_indices):
            return
        if locked:
            self.locked_indices.add(price_index)
        else:
            self.locked_indices.discard(price_index)
        self.events.append(("platform_state", price_index, locked))

    def _check_unlocked(self, spec: InstrumentSpec) -> None:
        if spec.price_index in self.locked_indices:
            raise RpcError(errors.LOCKED_BY_ADMIN)

    # --- marks of a whole chain ----------------------------------------------------------------

    def option_marks(self, price_index: str) -> list[dict[str, Any]]:
        """``markprice.options.{index}``: every option of that index, mark and mark IV (a fraction)."""
        now = self.now_ms
        out = []
        for spec in self.instruments.values():
            if spec.is_option and spec.price_index == price_index:
                q = self.market.quote(spec.name)
                out.append(
                    {
                        "timestamp": now,
                        "mark_price": q.mark_price,
                        "iv": round(q.mark_iv / 100.0, 4),
                        "instrument_name": spec.name,
                    }
                )
        return out

    def instruments_json(self, currency: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Deribit lists by settlement currency: ``USDC`` gives the linear instruments."""
        return [
            s.to_json()
            for s in self.instruments.values()
            if s.settlement_currency == currency and (kind is None or s.kind == kind)
        ]

    # --- the market clock ----------------------------------------------------------------------

    def stamp(self, now_s: float) -> None:
        """A request is handled at ``now_s``: what it does is stamped with that time, as Deribit
        stamps fills and order states with the time of the engine that also gives answers their
        usIn (the market itself moves only in :meth:`step`)."""
        self.now_s = max(self.now_s, now_s)

    def step(self, now_s: float, requote: bool = True) -> None:
        """Advance to ``now_s``: move the market, requote a Poisson share of the books, emit events."""
        dt = max(now_s - self._stepped_s, 0.0)
        self._stepped_s = now_s
        self.now_s = max(self.now_s, now_s)
        self.market.advance(now_s)
        self.settle_due(now_s)
        if now_s >= self._next_index_s:
            self._next_index_s = now_s + 1.0 / max(self.settings.index_updates_per_s, 1e-9)
            for cur in self.settings.currencies:
                self.events.append(("index", cur))
                self.events.append(("vol_index", cur))
        self._check_stops()
        if requote and dt > 0:
            if self._refill:
                # The market maker refills a futures book a user's order took from at the next
                # market step (on Deribit its ladder is back within milliseconds).
                names, self._refill = sorted(self._refill), set()
                for name in names:
                    book = self.books.get(name)
                    if book is not None:
                        fills = book.requote(self.fair(book.spec), self._half_spread(book.spec), mutate=False)
                        if fills:
                            self._apply_fills(book.spec, book, fills)
                        self._flush(book, self.now_ms)
                        self.events.append(("ticker", name))
            self._requote_some(dt)
            self._public_trades(dt)
            self._taker_hits(dt)
        if now_s >= self._next_portfolio_s:
            self._next_portfolio_s = now_s + PORTFOLIO_EVERY_S
            for cid in self.accounts:
                for cur in self.settings.account_currencies:
                    self.events.append(("portfolio", cid, cur))

    def _requote_some(self, dt: float) -> None:
        names = list(self.books)
        p = min(self.settings.updates_per_s * dt, 1.0)
        chosen = [names[i] for i in np.flatnonzero(self.np_rng.random(len(names)) < p)]
        self.requote(chosen)

    def requote(self, names: list[str]) -> None:
        """Requote the named books now (book and ticker events; fills of crossed user orders)."""
        now_ms = self.now_ms
        opts: list[str] = []
        for name in names:
            book = self.books[name]
            spec = book.spec
            fills = book.requote(self.fair(spec), self._half_spread(spec))
            if fills:
                self._apply_fills(spec, book, fills)
            self._flush(book, now_ms)
            if spec.is_option:
                opts.append(name)
            self.events.append(("ticker", name))
        self._refresh_ivs(opts)

    def _flush(self, book: Book, now_ms: int) -> None:
        prev = book.change_id
        diff = book.flush(self._next_change_id())
        if diff is not None:
            self.events.append(("book", book.name, prev, book.change_id, diff[0], diff[1], now_ms))

    def _refresh_ivs(self, names: list[str]) -> None:
        if not names:
            return
        bids: list[float] = []
        asks: list[float] = []
        for n in names:
            bb, _, ba, _ = self.books[n].top()
            bids.append(bb)
            asks.append(ba)
        biv = self.market.implied_vols(names, bids)
        aiv = self.market.implied_vols(names, asks)
        for n, b, a in zip(names, biv, aiv, strict=True):
            self._iv_cache[n] = (b, a)

    def _public_trades(self, dt: float) -> None:
        rate = self.settings.public_trades_per_s
        if rate <= 0:
            return
        n = len(self.books)
        count = int(self.np_rng.poisson(rate * dt * n))
        names = list(self.books)
        for _ in range(count):
            book = self.books[names[self.rng.randrange(n)]]
            bb, _, ba, _ = book.top()
            buy = self.rng.random() < 0.5
            price = ba if buy else bb
            if price <= 0:
                continue
            amount = book.step * self.rng.randint(1, 10)
            trade = self._public_trade(book.spec, "buy" if buy else "sell", price, amount)
            self.events.append(("trades", book.name, [trade]))

    def _taker_hits(self, dt: float) -> None:
        """Takers hit user orders resting at the touch of option books (see
        ``SimSettings.option_taker_hits_per_s``): each such level is hit with probability
        ``1 - exp(-rate dt)`` for a taker's size (median 20 minimum amounts); the fills are the
        users' as makers."""
        rate = self.settings.option_taker_hits_per_s
        if rate <= 0:
            return
        books = {o.instrument for orders in self.open_orders.values() for o in orders.values()
                 if o.state == "open" and o.ticks is not None}
        p = 1.0 - math.exp(-rate * dt)
        for name in sorted(books):
            book = self.books.get(name)
            if book is None or not book.spec.is_option:
                continue
            for side in (0, 1):
                ticks = book.users_at_touch(side)
                if ticks is None or self._taker_rng.random() >= p:
                    continue
                # A taker's size: median 20 minimum amounts (2 BTC, 20 ETH), a lognormal spread.
                amount = book.step * max(1, round(math.exp(self._taker_rng.gauss(math.log(20.0), 1.0))))
                fills = book.hit_users(side, ticks, amount)
                if fills:
                    self._apply_fills(book.spec, book, fills)
                    self._flush(book, self.now_ms)
                    self.events.append(("ticker", name))

    def _tick_direction(self, name: str, price: float) -> int:
        last = self.last_price.get(name)
        return 0 if last is None or price > last else 2 if price < last else 1

    def _public_trade(self, spec: InstrumentSpec, direction: str, price: float, amount: float) -> dict[str, Any]:
        self._trade_seq += 1
        seq = self._inst_seq[spec.name] = self._inst_seq.get(spec.name, 0) + 1
        book = self.books[spec.name]
        trade: dict[str, Any] = {
            "trade_seq": seq,
            "trade_id": self._trade_id(spec),
            "timestamp": self.now_ms,
            "tick_direction": self._tick_direction(spec.name, price),
            "price": price,
            "mark_price": self.mark_price(spec),
            "instrument_name": spec.name,
            "index_price": self.index_price(spec.currency),
            "direction": direction,
            "amount": amount,
        }
        if spec.is_option:
            trade["iv"] = self.market.implied_vols([spec.name], [price])[0]
        book.record_trade(price, amount)
        self.last_price[spec.name] = price
        return trade

    def _trade_id(self, spec: InstrumentSpec) -> str:
        return f"{self._trade_seq}" if spec.currency == "BTC" else f"{spec.currency}-{self._trade_seq}"

    # --- market data answers -------------------------------------------------------------------

    def ticker(self, name: str) -> dict[str, Any]:
        spec = self.spec(name)
        book = self.books[name]
        bb, bba, ba, baa = book.top()
        index = self.index_price(spec.currency)
        lo, hi = self.price_band(spec)
        vol = book.volume  # traded amounts: coin for options and linear, USD for inverse futures
        stats: dict[str, Any] = {
            "volume": vol if vol else None,
            "price_change": 0.0 if vol else None,
            "low": book.low,
            "high": book.high,
        }
        if not spec.is_option:
            # Deribit's futures stats: volume in the coin and in USD.
            mark_now = self.mark_price(spec)
            coins = vol if spec.is_linear else (vol / mark_now if vol and mark_now else 0.0)
            stats["volume"] = round(coins, 8) if vol else None
            stats["volume_usd"] = round(coins * mark_now, 2) if vol else None
        if spec.is_option:
            q = self.market.quote(name)
            und_name, _ = self.underlying(spec)
            ivs = self._iv_cache.get(name)
            if ivs is None:
                self._refresh_ivs([name])
                ivs = self._iv_cache[name]
            return {
                "underlying_price": q.underlying_price,
                "underlying_index": und_name,
                "timestamp": self.now_ms,
                "stats": stats,
                "state": "open",
                "settlement_price": self.settlement.get(name, q.mark_price),
                "open_interest": book.open_interest,
                "min_price": lo,
                "max_price": hi,
                "mark_price": q.mark_price,
                "mark_iv": q.mark_iv,
                "last_price": self.last_price.get(name, q.mark_price),
                "interest_rate": 0.0,
                "instrument_name": name,
                "index_price": index,
                "greeks": {
                    "vega": q.vega,
                    "theta": q.theta,
                    "rho": q.rho,
                    "gamma": q.gamma,
                    "delta": q.delta,
                },
                "estimated_delivery_price": index,
                "bid_iv": ivs[0] if bb else 0.0,
                "best_bid_price": bb,
                "best_bid_amount": bba,
                "best_ask_price": ba,
                "best_ask_amount": baa,
                "ask_iv": ivs[1] if ba else 0.0,
            }
        mark = self.mark_price(spec)
        out: dict[str, Any] = {
            "timestamp": self.now_ms,
            "stats": stats,
            "state": "open",
            "settlement_price": self.settlement.get(name, mark),
            "open_interest": book.open_interest,
            "min_price": lo,
            "max_price": hi,
            "mark_price": mark,
            "last_price": self.last_price.get(name, mark),
            "instrument_name": name,
            "index_price": index,
            "estimated_delivery_price": index,
            "best_bid_price": bb,
            "best_bid_amount": bba,
            "best_ask_price": ba,
            "best_ask_amount": baa,
        }
        if spec.is_perpetual:
            funding = round((mark - index) / index / 3.0, 8)
            out.update({"interest_value": 0.0, "funding_8h": funding, "current_funding": funding})
        return out

    def quote(self, name: str) -> dict[str, Any]:
        bb, bba, ba, baa = self.books[name].top()
        return {
            "timestamp": self.now_ms,
            "instrument_name": name,
            "best_bid_price": bb,
            "best_bid_amount": bba,
            "best_ask_price": ba,
            "best_ask_amount": baa,
        }

    def order_book(self, name: str, depth: int) -> dict[str, Any]:
        out = self.ticker(name)
        bids, asks = self.books[name].depth(max(depth, 1))
        out["change_id"] = self.books[name].change_id
        out["bids"] = bids
        out["asks"] = asks
        return out

    def book_summary(self, currency: str, kind: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for spec in self.instruments.values():
            if spec.settlement_currency != currency or (kind is not None and spec.kind != kind):
                continue
            book = self.books[spec.name]
            bb, _, ba, _ = book.top()
            mark = self.mark_price(spec)
            d: dict[str, Any] = {
                "volume_usd": 0.0,
                "volume": book.volume,
                "quote_currency": spec.settlement_currency if spec.is_option else spec.linear_currency or "USD",
                "price_change": None,
                "open_interest": book.open_interest,
                "mid_price": round((bb + ba) / 2, 10) if bb and ba else None,
                "mark_price": mark,
                "low": book.low,
                "last": self.last_price.get(spec.name),
                "instrument_name": spec.name,
                "high": book.high,
                "estimated_delivery_price": self.index_price(spec.currency),
                "creation_timestamp": self.now_ms,
                "bid_price": bb if bb else None,
                "base_currency": spec.currency,
                "ask_price": ba if ba else None,
            }
            if spec.is_option:
                und_name, und = self.underlying(spec)
                d.update(
                    {
                        "underlying_price": und,
                        "underlying_index": und_name,
                        "interest_rate": 0.0,
                        "mark_iv": self.market.quote(spec.name).mark_iv,
                    }
                )
            else:
                d["volume_notional"] = 0.0
                if spec.is_perpetual:
                    funding = round((mark - self.index_price(spec.currency)) / mark / 3.0, 8)
                    d.update({"funding_8h": funding, "current_funding": funding})
            out.append(d)
        return out

    # --- orders --------------------------------------------------------------------------------

    def _new_order_id(self, spec: InstrumentSpec) -> str:
        self._order_seq += 1
        return f"{self._order_seq}" if spec.currency == "BTC" else f"{spec.currency}-{self._order_seq}"

    def _check_amount(self, spec: InstrumentSpec, params: dict[str, Any]) -> float:
        amount = params.get("amount")
        if amount is None and "contracts" in params:
            amount = params["contracts"] * spec.contract_size if isinstance(params["contracts"], int | float) else None
        if not isinstance(amount, int | float) or isinstance(amount, bool) or not math.isfinite(amount):
            raise invalid_params("amount", "must be a number")
        if amount <= 0:
            raise invalid_params("amount", "must be positive")
        step = float(spec.min_trade_amount)
        n = amount / step
        if abs(n - round(n)) > 1e-7 * max(1.0, n):
            raise invalid_params("amount", "must be a multiple of contract size")
        return clean(round(n) * step)

    def _check_price(self, spec: InstrumentSpec, book: Book, price: Any, param: str = "price") -> float:
        if not isinstance(price, int | float) or isinstance(price, bool) or not math.isfinite(price):
            raise invalid_params(param, "must be a number")
        if price <= 0:
            raise invalid_params(param, "must be positive")
        if not book.on_grid(price):
            raise invalid_params(param, "must conform to tick size")
        return book.price_of(book.ticks_of(price))

    def place(self, client_id: str, direction: str, params: dict[str, Any]) -> dict[str, Any]:
        """``private/buy`` / ``private/sell``: returns ``{"order": ..., "trades": [...]}``."""
        spec = self.spec(params.get("instrument_name"))
        self._check_unlocked(spec)
        book = self.books[spec.name]
        acc = self.accounts[client_id]
        amount = self._check_amount(spec, params)
        otype = params.get("type", "limit")
        if otype not in ORDER_TYPES:
            raise invalid_params("type", "must be one of " + ", ".join(ORDER_TYPES))
        tif = params.get("time_in_force", "good_til_cancelled")
        if tif not in TIME_IN_FORCE:
            raise invalid_params("time_in_force", "must be one of " + ", ".join(TIME_IN_FORCE))
        label = params.get("label", "") or ""
        if not isinstance(label, str) or len(label) > 64:
            raise invalid_params("label", "must be a string of at most 64 characters")
        price: float | None = None
        if otype in ("limit", "stop_limit"):
            if "price" not in params:
                raise invalid_params("price", "value is required")
            price = self._check_price(spec, book, params["price"])
            lo, hi = self.price_band(spec)
            if direction == "buy" and price > hi:
                raise RpcError(errors.PRICE_TOO_HIGH, {"param": "price", "reason": f"max price is {hi}"})
            if direction == "sell" and price < lo:
                raise RpcError(errors.PRICE_TOO_LOW, {"param": "price", "reason": f"min price is {lo}"})
        trigger = trigger_price = None
        if otype.startswith("stop"):
            trigger = params.get("trigger")
            if trigger not in TRIGGERS:
                raise invalid_params("trigger", "must be one of " + ", ".join(TRIGGERS))
            trigger_price = self._check_price(spec, book, params.get("trigger_price"), "trigger_price")
        post_only = bool(params.get("post_only", False))
        reduce_only = bool(params.get("reduce_only", False))
        order = Order(
            order_id=self._new_order_id(spec),
            account=client_id,
            instrument=spec.name,
            direction=direction,
            amount=amount,
            order_type=otype,
            price=price,
            creation_ms=self.now_ms,
            time_in_force=tif,
            post_only=post_only and otype in ("limit", "stop_limit"),
            reject_post_only=bool(params.get("reject_post_only", False)),
            reduce_only=reduce_only,
            label=label,
            trigger=trigger,
            trigger_price=trigger_price,
            max_show=params.get("max_show") if isinstance(params.get("max_show"), int | float) else None,
            last_update_ms=self.now_ms,
            contract_size=float(spec.contract_size),
        )
        if reduce_only:
            self._clip_reduce_only(acc, spec, order)
        if order.post_only and price is not None and not otype.startswith("stop"):
            self._post_only_price(book, order)
        self._check_funds(acc, spec, order)
        self.orders[order.order_id] = order
        self.open_orders[client_id][order.order_id] = order
        if otype.startswith("stop"):
            order.state = "untriggered"
            order.triggered = False
            book.stops.append(order)
            self._order_event(order)
            return {"order": order.to_json(), "trades": []}
        trades = self._execute(spec, book, order)
        return {"order": order.to_json(), "trades": trades}

    def _clip_reduce_only(self, acc: Account, spec: InstrumentSpec, order: Order) -> None:
        pos = acc.positions.get(spec.name)
        size = pos.size if pos else 0.0
        closable = abs(size) if size and (size > 0) != order.is_buy else 0.0
        if closable <= 0:
            raise RpcError(
                errors.INVALID_ARGUMENTS,
                {"param": "reduce_only", "reason": "order would increase the position"},
            )
        order.amount = min(order.amount, clean(closable))

    def _post_only_price(self, book: Book, order: Order) -> None:
        assert order.price is not None
        ticks = book.ticks_of(order.price)
        if not book.would_cross(order.direction, ticks):
            return
        if order.reject_post_only:
            raise RpcError(errors.POST_ONLY_REJECT, {"param": "post_only", "reason": "order would be filled"})
        # Deribit moves a crossing post-only order to one tick inside the spread.
        opp = book.best(1 if order.is_buy else 0)
        assert opp is not None
        ticks = opp - 1 if order.is_buy else opp + 1
        if ticks < 1:
            raise RpcError(errors.POST_ONLY_REJECT, {"param": "post_only", "reason": "no price inside the spread"})
        order.price = book.price_of(ticks)

    def _open_orders_margin(self, acc: Account, currency: str, skip: Order | None = None) -> float:
        total = 0.0
        for o in self.open_orders[acc.client_id].values():
            if o is skip or o.state != "open":
                continue
            spec = self.instruments.get(o.instrument)
            if spec is None or spec.settlement_currency != currency:
                continue
            total += self._order_margin(acc, spec, o.direction, o.remaining, o.price)
        return total

    def _order_margin(
        self, acc: Account, spec: InstrumentSpec, direction: str, amount: float, price: float | None
    ) -> float:
        mark, _, und, _ = self.marks(spec)
        p = price if price is not None else (mark if spec.is_option else self.mark_price(spec))
        return acc.order_margin(spec, direction, amount, p, mark, und)

    def _check_funds(self, acc: Account, spec: InstrumentSpec, order: Order, skip: Order | None = None) -> None:
        need = self._order_margin(acc, spec, order.direction, order.remaining, order.price)
        if spec.is_option and order.is_buy:
            need += fee_for(spec, order.price or self.mark_price(spec), order.remaining, False, self.marks(spec)[2])
        if need <= 0:
            return
        cur = spec.settlement_currency
        summary = acc.summary(cur, self.marks, self._open_orders_margin(acc, cur, skip))
        if summary["available_funds"] - need < 0:
            raise RpcError(errors.NOT_ENOUGH_FUNDS)

    def _execute(self, spec: InstrumentSpec, book: Book, order: Order) -> list[dict[str, Any]]:
        """Match an order that just became active; rest or cancel what is left."""
        if order.price is None:
            lo, hi = self.price_band(spec)
            order.market_limit = hi if order.is_buy else lo
        limit = order.ticks = book.ticks_of(order.price) if order.price is not None else None
        if order.time_in_force == "fill_or_kill" and book.available(order, limit) < order.remaining:
            self._close_order(order, "cancelled", "fill_or_kill")
            self._flush(book, self.now_ms)
            return []
        fills = book.match(order, limit)
        if not spec.is_option and any(f.maker is None for f in fills):
            self._refill.add(spec.name)
        trades = self._apply_fills(spec, book, fills)
        if order.state == "open":
            if limit is None or order.time_in_force in ("immediate_or_cancel", "fill_or_kill"):
                self._close_order(order, "cancelled", "immediate_or_cancel")
            else:
                book.rest(order)
                if not fills:
                    self._order_event(order)
        self._flush(book, self.now_ms)
        self.events.append(("ticker", spec.name))
        return [t for t in trades if t["order_id"] == order.order_id]

    def _apply_fills(self, spec: InstrumentSpec, book: Book, fills: list[Fill]) -> list[dict[str, Any]]:
        """Book every fill on both sides' orders and accounts; events for each user touched."""
        out: list[dict[str, Any]] = []
        now_ms = self.now_ms
        touched: dict[str, Order] = {}
        accounts: set[str] = set()
        public: list[dict[str, Any]] = []
        for f in fills:
            price = book.price_of(f.ticks)
            taker_dir = f.taker.direction if f.taker is not None else ("sell" if f.maker and f.maker.is_buy else "buy")
            for order, maker in ((f.taker, False), (f.maker, True)):
                if order is None:
                    continue
                fee = fee_for(spec, price, f.amount, maker, self.marks(spec)[2])
                order.add_fill(price, f.amount, fee, now_ms)
                acc = self.accounts[order.account]
                realized = acc.apply_fill(spec, order.direction, f.amount, price, fee)
                out.append(self._user_trade(spec, order, price, f.amount, fee, maker, realized))
                touched[order.order_id] = order
                accounts.add(order.account)
                if order.state == "filled":
                    self.open_orders[order.account].pop(order.order_id, None)
            public.append(self._public_trade(spec, taker_dir, price, f.amount))
            book.open_interest = clean(book.open_interest + f.amount)
        for order in touched.values():
            self._order_event(order, changes=False)
            book.touch_order(order)
        by_account: dict[str, list[dict[str, Any]]] = {}
        for t in out:
            by_account.setdefault(self.orders[t["order_id"]].account, []).append(t)
        for cid, trades in by_account.items():
            self.user_trades[cid].extend(trades)
            self.events.append(("user_trades", cid, spec, trades))
            orders = [o.to_json() for o in touched.values() if o.account == cid]
            self._changes(cid, spec, orders, trades)
        if public:
            self.events.append(("trades", spec.name, public))
        for cid in sorted(accounts):
            self.events.append(("portfolio", cid, spec.settlement_currency))
        return out

    def _changes(
        self, client_id: str, spec: InstrumentSpec, orders: list[dict[str, Any]], trades: list[dict[str, Any]]
    ) -> None:
        """``user.changes``: the orders and trades of one event and the account's position after
        it, in one notification (Deribit's atomic view; a closed position is sent with size 0)."""
        acc = self.accounts[client_id]
        pos = acc.positions.get(spec.name)
        positions = [self.position_json(client_id, pos)] if pos is not None else []
        self.events.append(("changes", client_id, spec, orders, trades, positions))

    def position_json(self, client_id: str, pos: Any) -> dict[str, Any]:
        return self.accounts[client_id].position_json(pos, self.marks, self.settlement.get(pos.spec.name))

    def _user_trade(
        self,
        spec: InstrumentSpec,
        order: Order,
        price: float,
        amount: float,
        fee: float,
        maker: bool,
        realized: float,
    ) -> dict[str, Any]:
        self._trade_seq += 1
        t: dict[str, Any] = {
            "trade_seq": self._inst_seq.get(spec.name, 0) + 1,
            "trade_id": self._trade_id(spec),
            "timestamp": self.now_ms,
            "tick_direction": self._tick_direction(spec.name, price),
            "state": order.state,
            "reduce_only": order.reduce_only,
            "price": price,
            "post_only": order.post_only,
            "order_type": order.order_type,
            "order_id": order.order_id,
            "matching_id": None,
            "mark_price": self.mark_price(spec),
            "liquidity": "M" if maker else "T",
            "instrument_name": spec.name,
            "index_price": self.index_price(spec.currency),
            "fee_currency": spec.settlement_currency,
            "fee": fee,
            "direction": order.direction,
            "amount": amount,
            "profit_loss": round(realized, 8),
            "api": True,
            "contracts": clean(amount / float(spec.contract_size)),
            "mmp": False,
            "risk_reducing": False,
            "self_trade": False,
        }
        if order.label:
            t["label"] = order.label
        if spec.is_option:
            t["iv"] = self.market.quote(spec.name).mark_iv
            t["underlying_price"] = self.underlying(spec)[1]
        return t

    def _order_event(self, order: Order, changes: bool = True) -> None:
        spec = self.instruments.get(order.instrument)
        if spec is not None:
            data = order.to_json()
            self.events.append(("order", order.account, spec, data))
            if changes:
                self._changes(order.account, spec, [data], [])

    def _close_order(self, order: Order, state: str, reason: str) -> None:
        order.state = state
        order.cancel_reason = reason
        order.last_update_ms = self.now_ms
        self.open_orders[order.account].pop(order.order_id, None)
        book = self.books.get(order.instrument)
        if book is not None:
            book.remove(order)
            if order in book.stops:
                book.stops.remove(order)
        self._order_event(order)

    def _check_stops(self) -> None:
        for book in self.books.values():
            if not book.stops:
                continue
            spec = book.spec
            for o in list(book.stops):
                ref = {
                    "index_price": self.index_price(spec.currency),
                    "mark_price": self.mark_price(spec),
                    "last_price": self.last_price.get(spec.name, self.mark_price(spec)),
                }[o.trigger or "last_price"]
                assert o.trigger_price is not None
                if (o.is_buy and ref >= o.trigger_price) or (not o.is_buy and ref <= o.trigger_price):
                    book.stops.remove(o)
                    o.triggered = True
                    o.state = "open"
                    o.last_update_ms = self.now_ms
                    self._execute(spec, book, o)

    def _own_order(self, client_id: str, order_id: Any) -> Order:
        if not isinstance(order_id, str):
            raise invalid_params("order_id", "must be a string")
        order = self.orders.get(order_id)
        if order is None:
            raise RpcError(errors.ORDER_NOT_FOUND)
        if order.account != client_id:
            raise RpcError(errors.NOT_OWNER_OF_ORDER)
        return order

    def edit(self, client_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """``private/edit``: new amount and/or price; the order keeps its id and may fill at once."""
        order = self._own_order(client_id, params.get("order_id"))
        if not order.is_open:
            raise RpcError(errors.NOT_OPEN_ORDER)
        spec = self.instruments[order.instrument]
        self._check_unlocked(spec)
        book = self.books[spec.name]
        amount = self._check_amount(spec, params)
        if amount < order.filled_amount:
            raise invalid_params("amount", "must not be below the filled amount")
        new_price = order.price
        if "price" in params and order.order_type in ("limit", "stop_limit"):
            new_price = self._check_price(spec, book, params["price"])
        if "trigger_price" in params and order.trigger is not None:
            order.trigger_price = self._check_price(spec, book, params["trigger_price"], "trigger_price")
        if "post_only" in params:
            order.post_only = bool(params["post_only"])
        if "reject_post_only" in params:
            order.reject_post_only = bool(params["reject_post_only"])
        trial = Order(
            order_id=order.order_id,
            account=client_id,
            instrument=spec.name,
            direction=order.direction,
            amount=amount,
            order_type=order.order_type,
            price=new_price,
            creation_ms=order.creation_ms,
            filled_amount=order.filled_amount,
            post_only=order.post_only,
            reject_post_only=order.reject_post_only,
        )
        if order.state == "open" and order.post_only and new_price is not None:
            book.remove(order)
            try:
                self._post_only_price(book, trial)
            except RpcError:
                book.rest(order)
                raise
            book.rest(order)
        self._check_funds(self.accounts[client_id], spec, trial, skip=order)
        order.amount = amount
        order.price = trial.price
        order.replaced = True
        order.last_update_ms = self.now_ms
        if order.state == "untriggered":
            self._order_event(order)
            return {"order": order.to_json(), "trades": []}
        book.remove(order)
        if order.remaining <= 0:
            order.state = "filled"
            self.open_orders[client_id].pop(order.order_id, None)
            self._order_event(order)
            self._flush(book, self.now_ms)
            return {"order": order.to_json(), "trades": []}
        trades = self._execute(spec, book, order)
        return {"order": order.to_json(), "trades": trades}

    def cancel(self, client_id: str, order_id: Any) -> dict[str, Any]:
        order = self._own_order(client_id, order_id)
        if not order.is_open:
            raise RpcError(errors.NOT_OPEN_ORDER)
        self._close_order(order, "cancelled", "user_request")
        book = self.books.get(order.instrument)
        if book is not None:
            self._flush(book, self.now_ms)
            self.events.append(("ticker", book.name))
        return order.to_json()

    def cancel_where(self, client_id: str, pred: Callable[[Order, InstrumentSpec], bool],
                     reason: str = "user_request") -> int:
        n = 0
        books: set[str] = set()
        for order in list(self.open_orders[client_id].values()):
            spec = self.instruments.get(order.instrument)
            if spec is not None and pred(order, spec):
                self._close_order(order, "cancelled", reason)
                books.add(spec.name)
                n += 1
        for name in sorted(books):
            self._flush(self.books[name], self.now_ms)
            self.events.append(("ticker", name))
        return n

    @staticmethod
    def type_filter(kind: Any, otype: Any) -> Callable[[Order, InstrumentSpec], bool]:
        def pred(o: Order, s: InstrumentSpec) -> bool:
            if kind not in (None, "any") and s.kind != kind:
                return False
            if otype in (None, "all"):
                return True
            if otype in ("stop_all", "trigger_all"):
                return o.trigger is not None
            return o.order_type == otype

        return pred

    def open_orders_json(self, client_id: str, currency: str, kind: Any = None, otype: Any = None) -> list[dict]:
        pred = self.type_filter(kind, otype)
        out = []
        for o in self.open_orders[client_id].values():
            spec = self.instruments.get(o.instrument)
            if spec is not None and spec.settlement_currency == currency and pred(o, spec):
                out.append(o.to_json())
        return out

    def _orders_of(self, client_id: str, currency: str) -> list[Order]:
        """The account's orders in ``currency``, open or closed, newest first (an expired
        instrument's by its name's currency)."""
        out = []
        for o in reversed(self.orders.values()):  # newest placed first among equal timestamps
            spec = self.instruments.get(o.instrument)
            settles = spec.settlement_currency if spec is not None else o.instrument.partition("-")[0]
            if o.account == client_id and settles == currency:
                out.append(o)
        return sorted(out, key=lambda o: -o.creation_ms)

    def orders_by_label_json(self, client_id: str, currency: str, label: str) -> list[dict[str, Any]]:
        """``private/get_order_state_by_label``: the account's orders of ``currency`` carrying
        ``label``, open and closed."""
        return [o.to_json() for o in self._orders_of(client_id, currency) if o.label == label]

    def order_history_json(self, client_id: str, currency: str, kind: Any = None, count: int = 20, offset: int = 0,
                           include_unfilled: bool = False) -> list[dict[str, Any]]:
        """``private/get_order_history_by_currency``: closed orders that executed (and those that did
        not, with ``include_unfilled``), newest first; open orders that partly executed too."""
        pred = self.type_filter(kind, None)
        out = []
        for o in self._orders_of(client_id, currency):
            spec = self.instruments.get(o.instrument)
            if spec is not None and not pred(o, spec):
                continue
            if o.filled_amount > 0 or (include_unfilled and not o.is_open):
                out.append(o.to_json())
        return out[offset:offset + count]

    def positions_json(self, client_id: str, currency: str, kind: Any = None) -> list[dict[str, Any]]:
        acc = self.accounts[client_id]
        out = []
        for pos in acc.positions.values():
            s = pos.spec
            if s.settlement_currency == currency and (kind in (None, "any") or s.kind == kind) and pos.size != 0:
                out.append(self.position_json(client_id, pos))
        return out

    def account_summary(self, client_id: str, currency: str, extended: bool = False) -> dict[str, Any]:
        """``private/get_account_summary``; ``extended`` adds the account's own fields (its id, name,
        type, settings), as Deribit does."""
        acc = self.accounts[client_id]
        rates: dict[str, tuple[float, float]] = {}
        for spec in self.instruments.values():
            if spec.settlement_currency == currency:
                group = "perpetual" if spec.is_perpetual else spec.kind
                rates.setdefault(group, (spec.maker_commission, spec.taker_commission))
        summary = acc.summary(currency, self.marks, self._open_orders_margin(acc, currency), rates)
        if extended:
            summary.update(acc.extended_fields())
        return summary

    def user_trades_json(
        self, client_id: str, currency: str, kind: Any = None, count: int = 10, newest_first: bool = True
    ) -> dict[str, Any]:
        trades = [
            t
            for t in self.user_trades[client_id]
            if t["fee_currency"] == currency and (kind in (None, "any") or (kind == "option") == ("iv" in t))
        ]
        if newest_first:
            trades = trades[::-1]
        return {"trades": trades[:count], "has_more": len(trades) > count}
