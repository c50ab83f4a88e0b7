"""Accounts, positions, fees and PnL with Deribit's contract maths.

Options are quoted and paid in their price unit (coin for inverse options, USDC for linear ones):
buying ``a`` options at ``p`` moves ``a * p`` out of the balance, so the option value sits in
equity as ``size * mark``. Inverse futures: ``size`` is USD, the average price is the USD-weighted
harmonic mean, and PnL in coin is ``size * (1 / avg - 1 / price)``. Linear (USDC) futures: ``size``
in coin, arithmetic average, PnL ``size * (price - avg)`` in USDC. Futures' session PnL reaches the
balance at the 08:00 UTC settlement (Deribit's daily settlement), against which
``floating_profit_loss`` then runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulator.listing import InstrumentSpec
from simulator.matching import clean

OPTION_FEE_CAP = 0.125  # option fees are capped at 12.5% of the premium
DAY_S = 86_400.0
SETTLEMENT_HOUR_S = 8 * 3600.0  # Deribit settles every position daily at 08:00 UTC


def last_settlement_s(now_s: float) -> float:
    """The latest 08:00 UTC at or before ``now_s`` (unix seconds)."""
    return (now_s - SETTLEMENT_HOUR_S) // DAY_S * DAY_S + SETTLEMENT_HOUR_S


def fee_for(spec: InstrumentSpec, price: float, amount: float, maker: bool, underlying: float = 0.0) -> float:
    """Fee of one fill in the settlement currency (negative is a rebate). Options pay a rate of
    the underlying (in coin for inverse options, the underlying's USDC value for linear ones),
    capped at 12.5% of the premium; futures a rate of the notional."""
    rate = spec.maker_commission if maker else spec.taker_commission
    if spec.is_option:
        unit = underlying if spec.is_linear else 1.0
        return round(min(rate * amount * unit, OPTION_FEE_CAP * price * amount), 8)
    if spec.is_linear:
        return round(rate * amount * price, 8)
    return round(rate * amount / price, 8)


@dataclass(slots=True)
class Position:
    """One instrument's position with Deribit's two bases.

    ``average_price`` is the basis of ``total_profit_loss``: the USD-weighted harmonic mean of the
    open fills for inverse futures (``coins`` = sum of usd / price), the arithmetic mean for options
    and linear futures. The session basis (``session_coins`` / ``session_average``) is what
    ``floating_profit_loss`` runs against: the last settlement price for the position carried over
    08:00 UTC, the fill price for this session's fills. ``session_rpl`` is realised against the
    session basis and goes into the balance at the next settlement; ``realized_pnl`` (against the
    average, over the position's life) is kept for checks.
    """

    spec: InstrumentSpec
    size: float = 0.0  # signed; USD for inverse futures, coin for options and linear futures
    average_price: float = 0.0
    coins: float = 0.0  # inverse futures: signed sum of usd / price of the open position
    session_coins: float = 0.0  # inverse futures: the same at the session basis
    session_average: float = 0.0  # options and linear futures: the session basis
    realized_pnl: float = 0.0
    session_rpl: float = 0.0

    @property
    def inverse_future(self) -> bool:
        return not self.spec.is_option and not self.spec.is_linear

    def apply(self, direction: str, amount: float, price: float) -> float:
        """Book one fill; returns the PnL it realised against the session basis (settlement currency)."""
        signed = amount if direction == "buy" else -amount
        realized = 0.0
        if self.size == 0 or (self.size > 0) == (signed > 0):
            self._open(signed, price)
        else:
            closing = min(abs(signed), abs(self.size))
            sign = 1.0 if self.size > 0 else -1.0
            share = closing / abs(self.size)
            if self.inverse_future:
                realized = self.session_coins * share - sign * closing / price
                self.realized_pnl += self.coins * share - sign * closing / price
                self.coins -= self.coins * share
                self.session_coins -= self.session_coins * share
            else:
                realized = sign * closing * (price - self.session_average)
                self.realized_pnl += sign * closing * (price - self.average_price)
            self.size = clean(self.size - sign * closing)
            rest = clean(abs(signed) - closing)
            if self.size == 0:
                self.average_price = self.session_average = 0.0
                self.coins = self.session_coins = 0.0
            if rest > 0:
                self._open(rest * (1.0 if signed > 0 else -1.0), price)
        self.session_rpl += realized
        return realized

    def _open(self, signed: float, price: float) -> None:
        new = clean(self.size + signed)
        if self.inverse_future:
            self.coins += signed / price
            self.session_coins += signed / price
            self.average_price = new / self.coins
        else:
            old, add = abs(self.size), abs(signed)
            self.average_price = (old * self.average_price + add * price) / abs(new)
            self.session_average = (old * self.session_average + add * price) / abs(new)
        self.size = new

    def total_pnl(self, mark: float) -> float:
        """``total_profit_loss``: against the average price."""
        if self.size == 0:
            return 0.0
        if self.inverse_future:
            return self.coins - self.size / mark
        return self.size * (mark - self.average_price)

    def floating_pnl(self, mark: float) -> float:
        """``floating_profit_loss``: since the last settlement (against the session basis)."""
        if self.size == 0:
            return 0.0
        if self.inverse_future:
            return self.session_coins - self.size / mark
        return self.size * (mark - self.session_average)

    def settle(self, price: float) -> float:
        """08:00 UTC: the session's PnL at ``price``; the session basis becomes ``price``."""
        session = self.session_rpl + self.floating_pnl(price)
        self.session_rpl = 0.0
        if self.inverse_future:
            self.session_coins = self.size / price
        else:
            self.session_average = price if self.size else 0.0
        return session


@dataclass(slots=True)
class Greeks:
    delta: float = 0.0
    gamma: float = 0.0
    vega: float = 0.0
    theta: float = 0.0


# (mark price, index price, underlying price, greeks or None) of an instrument.
MarkFn = Callable[[InstrumentSpec], tuple[float, float, float, Greeks | None]]

# ``limits`` of get_account_summary in Deribit's current shape (the example answer of
# private/get_account_summary, as quoted in ccxt's coinbaseinternational.ts: the default tier).
ACCOUNT_LIMITS: dict[str, Any] = {
    "limits_per_currency": False,
    "non_matching_engine": {"burst": 1500, "rate": 1000},
    "matching_engine": {
        "cancel_all": {"burst": 250, "rate": 200},
        "guaranteed_quotes": {"burst": 2, "rate": 2},
        "max_quotes": {"burst": 10, "rate": 10},
        "quotes": {"burst": 500, "rate": 500},
        "spot": {"burst": 250, "rate": 200},
        "trading": {"total": {"burst": 250, "rate": 200}},
    },
}


# (kind, settlement period) -> (maker, taker) of an account's instruments, for its ``fees``.
FeeRates = dict[str, tuple[float, float]]


def fee_schedule(index: str, rates: FeeRates | None) -> dict[str, Any]:
    """``fees`` of get_account_summary in Deribit's shape (per index: future, option and perpetual,
    each a block-trade factor and the default maker/taker rates, ``fixed``)."""
    out: dict[str, Any] = {}
    for group, (maker, taker) in (rates or {}).items():
        out[group] = {"block_trade": 1.0, "default": {"maker": maker, "taker": taker, "type": "fixed"}}
    return {index: out}


def intrinsic(spec: InstrumentSpec, underlying: float) -> float:
    """An option's value at expiry in its price unit: coin for inverse options, USDC for linear."""
    k = spec.strike
    usd = max(underlying - k, 0.0) if spec.option_type == "call" else max(k - underlying, 0.0)
    return usd if spec.is_linear else usd / underlying


@dataclass(slots=True)
class Account:
    client_id: str
    secret: str
    balances: dict[str, float]
    positions: dict[str, Position] = field(default_factory=dict)
    fees: dict[str, float] = field(default_factory=dict)
    initial_balances: dict[str, float] = field(default_factory=dict)
    # private/get_settlement_history_by_currency entries, oldest first, per settlement currency.
    settlements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def extended_fields(self) -> dict[str, Any]:
        """What ``get_account_summary`` adds with ``extended=true`` (the fields of Deribit's example
        answers: the account's id, name and type, and its trading settings)."""
        return {
            "id": 10_000 + sum(map(ord, self.client_id)),
            "username": self.client_id,
            "email": f"{self.client_id}@simulator.invalid",
            "system_name": self.client_id,
            "type": "main",
            "creation_timestamp": 1_600_000_000_000,
            "referrer_id": None,
            "login_enabled": False,
            "security_keys_enabled": False,
            "mmp_enabled": False,
            "interuser_transfers_enabled": False,
            "self_trading_reject_mode": "reject_taker",
            "self_trading_extended_to_subaccounts": False,
            "block_rfq_self_match_prevention": False,
        }

    def position(self, spec: InstrumentSpec) -> Position:
        pos = self.positions.get(spec.name)
        if pos is None:
            pos = self.positions[spec.name] = Position(spec)
        return pos

    def _credit(self, currency: str, amount: float) -> None:
        self.balances[currency] = round(self.balances.get(currency, 0.0) + amount, 10)

    def apply_fill(self, spec: InstrumentSpec, direction: str, amount: float, price: float, fee: float) -> float:
        """Position, premium and fee of one fill; returns the PnL it realised (session basis).

        Options move their premium through the balance at once; futures' PnL (realised and
        floating) reaches the balance at the 08:00 UTC settlement, as on Deribit."""
        cur = spec.settlement_currency
        realized = self.position(spec).apply(direction, amount, price)
        if spec.is_option:
            self._credit(cur, -amount * price if direction == "buy" else amount * price)
        self._credit(cur, -fee)
        self.fees[cur] = round(self.fees.get(cur, 0.0) + fee, 10)
        return realized

    def _record(
        self,
        kind: str,
        spec: InstrumentSpec,
        pos: Position,
        price: float,
        index: float,
        profit_loss: float,
        session: float,
        now_ms: int,
    ) -> None:
        entry: dict[str, Any] = {
            "type": kind,
            "timestamp": now_ms,
            "session_profit_loss": round(session, 8),
            "profit_loss": round(profit_loss, 8),
            "position": pos.size,
            "mark_price": price,
            "instrument_name": spec.name,
            "index_price": index,
        }
        if spec.is_perpetual:
            entry["funding"] = 0.0
        self.settlements.setdefault(spec.settlement_currency, []).append(entry)

    def settle_position(self, spec: InstrumentSpec, mark: float, index: float, now_ms: int) -> float:
        """The daily settlement of one position at ``mark``: futures' session PnL into the balance
        (options' premium is already there); a ``settlement`` entry. Returns the coin moved."""
        pos = self.positions.get(spec.name)
        if pos is None or (pos.size == 0 and pos.session_rpl == 0):
            return 0.0
        floating = pos.floating_pnl(mark)
        session = pos.settle(mark)
        moved = 0.0 if spec.is_option else session
        self._credit(spec.settlement_currency, moved)
        self._record("settlement", spec, pos, mark, index, floating, session, now_ms)
        if pos.size == 0:
            del self.positions[spec.name]
        return moved

    def deliver(self, spec: InstrumentSpec, delivery: float, now_ms: int) -> float:
        """Expiry: the position is delivered (cash) at the delivery price; a ``delivery`` entry.
        Returns what moved into the balance."""
        pos = self.positions.pop(spec.name, None)
        if pos is None or (pos.size == 0 and pos.session_rpl == 0):
            return 0.0
        price = intrinsic(spec, delivery) if spec.is_option else delivery
        floating = pos.floating_pnl(price)
        session = pos.session_rpl + floating
        # An option pays its value at expiry; a future its session PnL.
        moved = pos.size * price if spec.is_option else session
        self._credit(spec.settlement_currency, moved)
        self._record("delivery", spec, pos, price, delivery, floating, session, now_ms)
        return moved

    def settlement_history(self, currency: str, kind: Any, count: int, continuation: Any) -> dict[str, Any]:
        """``private/get_settlement_history_by_currency``: newest first, ``count`` a page; the
        continuation token is the position of the next page (None at the end)."""
        entries = [e for e in reversed(self.settlements.get(currency, [])) if kind in (None, e["type"])]
        start = int(continuation) if isinstance(continuation, str) and continuation.isdigit() else 0
        page = entries[start : start + count]
        more = start + count < len(entries)
        return {"settlements": page, "continuation": str(start + count) if more else None}

    # --- margins and summaries ----------------------------------------------------------------

    @staticmethod
    def option_short_margin(spec: InstrumentSpec, mark: float, underlying: float, maintenance: bool) -> float:
        """Deribit's standard margin for one short option, in the option's price unit."""
        k = spec.strike
        otm = max(k - underlying, 0.0) if spec.option_type == "call" else max(underlying - k, 0.0)
        unit = underlying if spec.is_linear else 1.0
        if maintenance:
            return 0.075 * unit + mark
        return max(0.15 - otm / underlying, 0.1) * unit + mark

    @staticmethod
    def future_notional(spec: InstrumentSpec, size: float, price: float) -> float:
        """A futures position's value in its settlement currency."""
        return abs(size) * price if spec.is_linear else abs(size) / price

    def order_margin(
        self,
        spec: InstrumentSpec,
        direction: str,
        amount: float,
        price: float,
        mark: float,
        underlying: float,
    ) -> float:
        """Initial margin an order would need, in the settlement currency, for the part that opens exposure."""
        pos = self.positions.get(spec.name)
        size = pos.size if pos else 0.0
        closing = min(amount, abs(size)) if size and (size > 0) != (direction == "buy") else 0.0
        opening = max(amount - closing, 0.0)
        if spec.is_option:
            if direction == "buy":
                return amount * price
            return opening * self.option_short_margin(spec, mark, underlying, False)
        return self.future_notional(spec, opening, price) * 0.02

    def summary(
        self, currency: str, marks: MarkFn, open_orders_margin: float, fee_rates: FeeRates | None = None
    ) -> dict[str, Any]:
        """``private/get_account_summary`` and ``user.portfolio`` body for ``currency``.

        Deribit's identity (checked on the docs' example answer): equity = balance + options value
        + futures session PnL (realised and floating); the session figures run since 08:00 UTC.

        Greeks as Deribit defines them (its API reference, and the docs' example answers: there
        delta_total 31.602958 = delta_total_map 31.594357699 - options_value -0.0086, and
        projected_delta_total 32.613978 = delta_total_map - options_delta): ``options_delta``,
        ``_gamma``, ``_vega``, ``_theta`` are the sums of size x the tickers' greeks (plain Black-76;
        vega USD per vol point, theta USD per day); ``delta_total`` is the Net Transaction Delta,
        options' delta less their mark value in coin (a coin-settled option's premium is itself a
        coin exposure; none for USDC-settled ones) plus the futures' size in coin;
        ``delta_total_map`` the raw deltas (no premium taken off); ``projected_delta_total`` the
        delta_total without the positions of the nearest expiry held."""
        balance = self.balances.get(currency, 0.0)
        opt_value = opt_upl = fut_upl = opt_rpl = fut_rpl = 0.0
        im = mm = 0.0
        g = Greeks()
        fut_delta = 0.0
        # Per expiry held (ms): the Net Transaction Delta of its positions, for projected_delta_total.
        ntd_by_expiry: dict[int, float] = {}
        premium = 0.0  # the coin-settled options' mark value (coin)
        index_names: set[str] = set()
        for pos in self.positions.values():
            spec = pos.spec
            if spec.settlement_currency != currency:
                continue
            index_names.add(spec.price_index)
            if spec.is_option:
                opt_rpl += pos.session_rpl
            else:
                fut_rpl += pos.session_rpl
            if pos.size == 0:
                continue
            mark, _index, und, greeks = marks(spec)
            if spec.is_option:
                opt_value += pos.size * mark
                opt_upl += pos.floating_pnl(mark)
                if pos.size < 0:
                    im += -pos.size * self.option_short_margin(spec, mark, und, False)
                    mm += -pos.size * self.option_short_margin(spec, mark, und, True)
                if greeks is not None:
                    g.delta += pos.size * greeks.delta
                    g.gamma += pos.size * greeks.gamma
                    g.vega += pos.size * greeks.vega
                    g.theta += pos.size * greeks.theta
                coin_premium = 0.0 if spec.is_linear else pos.size * mark
                premium += coin_premium
                ntd = (pos.size * greeks.delta if greeks is not None else 0.0) - coin_premium
                ntd_by_expiry[spec.expiration_ms] = ntd_by_expiry.get(spec.expiration_ms, 0.0) + ntd
            else:
                fut_upl += pos.floating_pnl(mark)
                notional = self.future_notional(spec, pos.size, mark)
                im += notional * 0.02
                mm += notional * 0.01
                coin = pos.size if spec.is_linear else pos.size / mark
                fut_delta += coin
                if spec.expiry is not None:
                    ntd_by_expiry[spec.expiration_ms] = ntd_by_expiry.get(spec.expiration_ms, 0.0) + coin
                else:
                    ntd_by_expiry[0] = ntd_by_expiry.get(0, 0.0) + coin  # the perpetual never expires
        equity = balance + opt_value + fut_upl + fut_rpl
        im_total = im + open_orders_margin
        # The maps are keyed by the account's index: the coin's (btc_usd), or for USDC its first.
        default = "btc_usdc" if currency == "USDC" else currency.lower() + "_usd"
        idx = sorted(index_names)[0] if index_names else default
        # Net Transaction Delta: options' delta less their value in coin (inverse only), plus futures.
        delta_total = round(g.delta - premium + fut_delta, 6)
        raw_delta = round(g.delta + fut_delta, 6)
        nearest = min((e for e in ntd_by_expiry if e), default=None)
        projected = round(sum(v for e, v in ntd_by_expiry.items() if e != nearest), 6)
        r = lambda x: round(x, 8) + 0.0  # noqa: E731
        return {
            "currency": currency,
            "balance": r(balance),
            "equity": r(equity),
            "margin_balance": r(equity),
            "available_funds": r(equity - im_total),
            "available_withdrawal_funds": r(max(min(balance, equity - im_total), 0.0)),
            "initial_margin": r(im_total),
            "maintenance_margin": r(mm),
            "projected_initial_margin": r(im_total),
            "projected_maintenance_margin": r(mm),
            "session_rpl": r(opt_rpl + fut_rpl),
            "session_upl": r(opt_upl + fut_upl),
            "total_pl": r(opt_rpl + fut_rpl + opt_upl + fut_upl),
            "futures_pl": r(fut_rpl + fut_upl),
            "futures_session_rpl": r(fut_rpl),
            "futures_session_upl": r(fut_upl),
            "options_pl": r(opt_rpl + opt_upl),
            "options_session_rpl": r(opt_rpl),
            "options_session_upl": r(opt_upl),
            "options_value": r(opt_value),
            "options_delta": round(g.delta, 4),
            "options_gamma": round(g.gamma, 5),
            "options_vega": round(g.vega, 4),
            "options_theta": round(g.theta, 4),
            "options_gamma_map": {idx: round(g.gamma, 5)} if g.gamma else {},
            "options_vega_map": {idx: round(g.vega, 4)} if g.vega else {},
            "options_theta_map": {idx: round(g.theta, 4)} if g.theta else {},
            "delta_total": delta_total,
            # Deribit keys these two by the account's index even at zero (its ETH example answer).
            "delta_total_map": {idx: raw_delta},
            "projected_delta_total": projected,
            "fee_balance": 0.0,
            "spot_reserve": 0.0,
            "additional_reserve": 0.0,
            "fees": fee_schedule(idx, fee_rates),
            "estimated_liquidation_ratio": r(mm / equity) if equity > 0 else 0.0,
            "estimated_liquidation_ratio_map": {idx: r(mm / equity) if equity > 0 else 0.0},
            "margin_model": "segregated_sm",
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
            "limits": ACCOUNT_LIMITS,
        }

    def position_json(self, pos: Position, marks: MarkFn, settlement: float | None = None) -> dict[str, Any]:
        """One entry of get_positions / user.changes, Deribit's definitions:
        ``floating_profit_loss`` since the last settlement, ``total_profit_loss`` against the average
        price, ``realized_profit_loss`` this session's realised PnL (settlement currency)."""
        spec = pos.spec
        mark, index, und, greeks = marks(spec)
        floating = pos.floating_pnl(mark)
        d: dict[str, Any] = {
            "instrument_name": spec.name,
            "kind": spec.kind,
            "direction": "buy" if pos.size > 0 else "sell" if pos.size < 0 else "zero",
            "size": pos.size,
            "average_price": round(pos.average_price, 8),
            "mark_price": mark,
            "index_price": index,
            "settlement_price": settlement if settlement is not None else mark,
            "floating_profit_loss": round(floating, 8),
            "realized_profit_loss": round(pos.session_rpl, 8),
            "total_profit_loss": round(pos.total_pnl(mark), 8),
            "open_orders_margin": 0.0,
        }
        if spec.is_option:
            im = -pos.size * self.option_short_margin(spec, mark, und, False) if pos.size < 0 else 0.0
            mm = -pos.size * self.option_short_margin(spec, mark, und, True) if pos.size < 0 else 0.0
            g = greeks or Greeks()
            usd = 1.0 if spec.is_linear else und
            d.update(
                {
                    "average_price_usd": round(pos.average_price * usd, 2),
                    "floating_profit_loss_usd": round(floating * usd, 2),
                    "delta": round(pos.size * g.delta, 6),
                    "gamma": round(pos.size * g.gamma, 6),
                    "vega": round(pos.size * g.vega, 6),
                    "theta": round(pos.size * g.theta, 6),
                    "initial_margin": round(im, 8),
                    "maintenance_margin": round(mm, 8),
                }
            )
        else:
            notional = self.future_notional(spec, pos.size, mark) if mark else 0.0
            coin = pos.size if spec.is_linear else (pos.size / mark if mark else 0.0)
            d.update(
                {
                    "size_currency": round(coin, 8),
                    "delta": round(coin, 8),
                    "initial_margin": round(notional * 0.02, 8),
                    "maintenance_margin": round(notional * 0.01, 8),
                    "leverage": 50,
                    "estimated_liquidation_price": None,
                    "interest_value": 0.0,
                }
            )
            if spec.is_perpetual:
                d["realized_funding"] = 0.0  # the simulator charges no funding
        return d
