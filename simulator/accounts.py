"""Accounts, positions, fees and PnL with Deribit's contract maths.

Options are quoted and paid in coin: buying ``a`` options at ``p`` moves ``a * p`` coin out of the
balance, so the option value sits in equity as ``size * mark``. Futures are inverse: ``size`` is
USD, the average price is the USD-weighted harmonic mean, and PnL in coin is
``size * (1 / avg - 1 / price)``. Realised futures PnL goes to the balance at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulator.listing import InstrumentSpec
from simulator.matching import clean

OPTION_FEE_CAP = 0.125  # option fees are capped at 12.5% of the premium


def fee_for(spec: InstrumentSpec, price: float, amount: float, maker: bool) -> float:
    """Fee in coin of one fill (negative is a rebate)."""
    rate = spec.maker_commission if maker else spec.taker_commission
    if spec.is_option:
        return round(min(rate * amount, OPTION_FEE_CAP * price * amount), 8)
    return round(rate * amount / price, 8)


@dataclass(slots=True)
class Position:
    spec: InstrumentSpec
    size: float = 0.0  # coins for options, USD for futures; signed
    average_price: float = 0.0
    coins: float = 0.0  # futures: sum of usd / price of the open position (signed)
    realized_pnl: float = 0.0  # coin
    session_rpl: float = 0.0

    def apply(self, direction: str, amount: float, price: float) -> float:
        """Book one fill; returns the realised PnL in coin (futures; options realise in equity)."""
        signed = amount if direction == "buy" else -amount
        realized = 0.0
        if self.size == 0 or (self.size > 0) == (signed > 0):
            self._open(signed, price)
        else:
            closing = min(abs(signed), abs(self.size))
            sign = 1.0 if self.size > 0 else -1.0
            if self.spec.is_option:
                realized = sign * closing * (price - self.average_price)
            else:
                realized = sign * closing * (1.0 / self.average_price - 1.0 / price)
                self.coins -= self.coins * closing / abs(self.size)
            self.size = clean(self.size - sign * closing)
            rest = clean(abs(signed) - closing)
            if self.size == 0:
                self.average_price = 0.0
                self.coins = 0.0
            if rest > 0:
                self._open(rest * (1.0 if signed > 0 else -1.0), price)
        self.realized_pnl += realized
        self.session_rpl += realized
        return realized

    def _open(self, signed: float, price: float) -> None:
        new = clean(self.size + signed)
        if self.spec.is_option:
            self.average_price = (abs(self.size) * self.average_price + abs(signed) * price) / abs(new)
        else:
            self.coins += signed / price
            self.average_price = new / self.coins
        self.size = new

    def floating_pnl(self, mark: float) -> float:
        if self.size == 0:
            return 0.0
        if self.spec.is_option:
            return self.size * (mark - self.average_price)
        return self.size * (1.0 / self.average_price - 1.0 / mark)


@dataclass(slots=True)
class Greeks:
    delta: float = 0.0
    gamma: float = 0.0
    vega: float = 0.0
    theta: float = 0.0


# (mark price, index price, underlying price, greeks or None) of an instrument.
MarkFn = Callable[[InstrumentSpec], tuple[float, float, float, Greeks | None]]


@dataclass(slots=True)
class Account:
    client_id: str
    secret: str
    balances: dict[str, float]
    positions: dict[str, Position] = field(default_factory=dict)
    fees: dict[str, float] = field(default_factory=dict)
    initial_balances: dict[str, float] = field(default_factory=dict)

    def position(self, spec: InstrumentSpec) -> Position:
        pos = self.positions.get(spec.name)
        if pos is None:
            pos = self.positions[spec.name] = Position(spec)
        return pos

    def apply_fill(self, spec: InstrumentSpec, direction: str, amount: float, price: float, fee: float) -> float:
        """Position, premium and fee of one fill; returns realised PnL (coin)."""
        cur = spec.currency
        realized = self.position(spec).apply(direction, amount, price)
        bal = self.balances.get(cur, 0.0)
        if spec.is_option:
            bal += -amount * price if direction == "buy" else amount * price
        else:
            bal += realized
        self.balances[cur] = round(bal - fee, 10)
        self.fees[cur] = round(self.fees.get(cur, 0.0) + fee, 10)
        return realized

    def settle(self, spec: InstrumentSpec, delivery: float) -> float:
        """Cash-settle an expiring position at the delivery (index) price; returns the coin moved."""
        pos = self.positions.pop(spec.name, None)
        if pos is None or pos.size == 0:
            return 0.0
        if spec.is_option:
            k = spec.strike
            intrinsic = max(delivery - k, 0.0) if spec.option_type == "call" else max(k - delivery, 0.0)
            value = pos.size * intrinsic / delivery
        else:
            value = pos.floating_pnl(delivery)
        self.balances[spec.currency] = round(self.balances.get(spec.currency, 0.0) + value, 10)
        return value

    # --- margins and summaries ----------------------------------------------------------------

    @staticmethod
    def option_short_margin(spec: InstrumentSpec, mark: float, underlying: float, maintenance: bool) -> float:
        """Deribit's standard margin for one short option, in coin."""
        k = spec.strike
        otm = max(k - underlying, 0.0) if spec.option_type == "call" else max(underlying - k, 0.0)
        if maintenance:
            return 0.075 + mark
        return max(0.15 - otm / underlying, 0.1) + mark

    def order_margin(
        self,
        spec: InstrumentSpec,
        direction: str,
        amount: float,
        price: float,
        mark: float,
        underlying: float,
    ) -> float:
        """Initial margin an order would need, in coin, for the part that opens exposure."""
        pos = self.positions.get(spec.name)
        size = pos.size if pos else 0.0
        closing = min(amount, abs(size)) if size and (size > 0) != (direction == "buy") else 0.0
        opening = max(amount - closing, 0.0)
        if spec.is_option:
            if direction == "buy":
                return amount * price
            return opening * self.option_short_margin(spec, mark, underlying, False)
        return opening / price * 0.02

    def summary(self, currency: str, marks: MarkFn, open_orders_margin: float) -> dict[str, Any]:
        """``private/get_account_summary`` and ``user.portfolio`` body for ``currency``."""
        balance = self.balances.get(currency, 0.0)
        opt_value = opt_upl = fut_upl = opt_rpl = fut_rpl = 0.0
        im = mm = 0.0
        g = Greeks()
        fut_delta = 0.0
        for pos in self.positions.values():
            spec = pos.spec
            if spec.currency != currency:
                continue
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
            else:
                fut_upl += pos.floating_pnl(mark)
                notional = abs(pos.size) / mark
                im += notional * 0.02
                mm += notional * 0.01
                fut_delta += pos.size / mark
        equity = balance + opt_value + fut_upl
        im_total = im + open_orders_margin
        idx = currency.lower() + "_usd"
        delta_total = round(g.delta + fut_delta, 6)
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
            "delta_total_map": {idx: delta_total} if delta_total else {},
            "projected_delta_total": delta_total,
            "fee_balance": 0.0,
            "estimated_liquidation_ratio": r(mm / equity) if equity > 0 else 0.0,
            "estimated_liquidation_ratio_map": {idx: r(mm / equity)} if equity > 0 and mm else {},
            "margin_model": "segregated_sm",
            "portfolio_margining_enabled": False,
            "cross_collateral_enabled": False,
        }

    def position_json(self, pos: Position, marks: MarkFn) -> dict[str, Any]:
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
            "settlement_price": mark,
            "floating_profit_loss": round(floating, 8),
            "realized_profit_loss": round(pos.realized_pnl, 8),
            "total_profit_loss": round(floating + pos.realized_pnl, 8),
            "open_orders_margin": 0.0,
        }
        if spec.is_option:
            im = -pos.size * self.option_short_margin(spec, mark, und, False) if pos.size < 0 else 0.0
            mm = -pos.size * self.option_short_margin(spec, mark, und, True) if pos.size < 0 else 0.0
            g = greeks or Greeks()
            d.update(
                {
                    "average_price_usd": round(pos.average_price * und, 2),
                    "floating_profit_loss_usd": round(floating * und, 2),
                    "realized_profit_loss": round(pos.realized_pnl, 8),
                    "delta": round(pos.size * g.delta, 6),
                    "gamma": round(pos.size * g.gamma, 6),
                    "vega": round(pos.size * g.vega, 6),
                    "theta": round(pos.size * g.theta, 6),
                    "initial_margin": round(im, 8),
                    "maintenance_margin": round(mm, 8),
                }
            )
        else:
            notional = abs(pos.size) / mark if mark else 0.0
            d.update(
                {
                    "size_currency": round(pos.size / mark, 8) if mark else 0.0,
                    "delta": round(pos.size / mark, 8) if mark else 0.0,
                    "initial_margin": round(notional * 0.02, 8),
                    "maintenance_margin": round(notional * 0.01, 8),
                    "leverage": 50,
                    "estimated_liquidation_price": None,
                    "interest_value": 0.0,
                }
            )
        return d
