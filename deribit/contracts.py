"""Contract maths as Deribit defines it, per instrument identity: the one place that knows how a
fill moves a position and what a mark makes of it (pure; no clock, no state).

Three kinds of money, from the identity (``deribit.instruments.identity_of``), never the name:

- inverse futures and perpetuals (``BTC-PERPETUAL``): amount in USD, price in USD, PnL in the
  coin; the average is the USD-weighted harmonic mean ``size / sum(usd_i / price_i)`` and a
  position's PnL from price ``a`` to ``b`` is ``size * (1/a - 1/b)``; its delta is its size in
  coin at the mark, ``size / mark`` (Deribit's ``size_currency`` and ``delta``);
- inverse options (``BTC-24SEP21-40000-C``): amount in coin, price in coin, PnL in coin;
- linear instruments (``ETH_USDC-PERPETUAL``, ``SOL_USDC-...`` options): amount in coin, price
  and PnL in the quote currency (USDC); a linear future's delta is its size (coin).

Options of both kinds and linear futures share the arithmetic: amount-weighted average,
PnL ``size * (b - a)``.

Deribit's figures of a position (``private/get_positions``, ``user.changes``), checked on real
messages (see tests/unit/test_contracts.py for each source):

- ``total_profit_loss``: from the average price to the mark, ``pnl(size, average, mark)``; it
  does not include realized PnL (docs example: 185,160 USD BTC-PERPETUAL at 15,000, mark 17,391:
  1.69711368 BTC);
- ``floating_profit_loss``: the session's, since the last settlement (08:00 UTC): from the
  session price to the mark, where the session price is the settlement price for what was
  carried over and each fill's price for what the session added (same averaging rule); it
  restarts at each settlement (the same position at settlement 16,025.83: 0.906961435 BTC);
- ``realized_profit_loss``: the session's, what reductions made against the session price
  (Deribit's trade ``profit_loss`` of a closing fill: 10 USD sold at 17,391 against 16,025.83
  is 0.00004898 BTC) plus, for perpetuals, the session's ``realized_funding``, which only the
  exchange knows; fees are not in it (the same example: 0.012454598 = funding 0.01235663 +
  2 x 0.00004898, its fee 1.6e-7 left out; the docs' get_positions: -9e-9 with funding -1e-8);
  it moves into the balance at settlement and restarts at 0.

Reducing keeps both averages; a fill through zero closes all and opens the rest at its price.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from deribit.instruments import InstrumentIdentity

__all__ = [
    "Holding",
    "Marked",
    "Money",
    "delivery_value",
    "fill",
    "mark",
    "money_of",
    "option_pnl_usd",
    "pnl",
    "round_amount",
    "session_price_from",
    "settle",
    "usd",
    "value_usd",
]

#: Amounts are sums of contract multiples: rounding away float dust keeps them exact.
AMOUNT_DECIMALS = 8
#: How close Deribit's floating PnL must be to the one at its settlement price for that price to be
#: the session price: its PnL figures carry 9 decimals in the coin and about 6 in USDC.
COIN_ROUNDING = 2e-9
QUOTE_ROUNDING = 2e-6


class Money(enum.Enum):
    """How an instrument's amounts, prices and PnL relate (see the module doc)."""

    INVERSE_FUTURE = "inverse_future"  # amount USD, price USD, PnL coin
    INVERSE_OPTION = "inverse_option"  # amount coin, price coin, PnL coin
    LINEAR_FUTURE = "linear_future"  # amount coin, price quote, PnL quote
    LINEAR_OPTION = "linear_option"  # amount coin, price quote, PnL quote

    @property
    def harmonic(self) -> bool:
        return self is Money.INVERSE_FUTURE

    @property
    def is_future(self) -> bool:
        return self in (Money.INVERSE_FUTURE, Money.LINEAR_FUTURE)

    @property
    def pnl_in_coin(self) -> bool:
        return self in (Money.INVERSE_FUTURE, Money.INVERSE_OPTION)


def money_of(identity: InstrumentIdentity) -> Money | None:
    """The maths of an instrument; ``None`` for what the desk does not model (spot, combos)."""
    if identity.is_option:
        return Money.LINEAR_OPTION if identity.is_linear else Money.INVERSE_OPTION
    if identity.is_future:
        return Money.LINEAR_FUTURE if identity.is_linear else Money.INVERSE_FUTURE
    return None


def round_amount(x: float) -> float:
    return round(x, AMOUNT_DECIMALS) + 0.0


def pnl(money: Money, size: float, entry: float, exit_price: float) -> float:
    """PnL of ``size`` (signed, the instrument's amount unit) from ``entry`` to ``exit_price``, in
    the settlement currency."""
    if money.harmonic:
        return size * (1.0 / entry - 1.0 / exit_price)
    return size * (exit_price - entry)


def _average(money: Money, size: float, average: float, signed: float, price: float, new_size: float) -> float:
    """The average after adding ``signed`` at ``price`` to ``size`` at ``average`` (same side)."""
    if size == 0:
        return price
    if money.harmonic:
        return new_size / (size / average + signed / price)
    return (size * average + signed * price) / new_size


@dataclass(frozen=True, slots=True)
class Holding:
    """A position as the contract maths sees it: ``size`` signed (instrument's amount unit),
    ``average_price`` (Deribit's), ``session_price`` (the session's average: settlement price for
    what was carried over), ``realized`` (the session's realized PnL, settlement currency)."""

    size: float
    average_price: float
    session_price: float
    realized: float = 0.0


def fill(money: Money, holding: Holding | None, signed: float, price: float) -> Holding:
    """The holding after one fill of ``signed`` (positive buys) at ``price`` (size 0: flat, with
    what the session realized). A reduction realizes its PnL against the session price."""
    if holding is None:
        holding = Holding(0.0, 0.0, 0.0, 0.0)
    size, average, session, realized = holding.size, holding.average_price, holding.session_price, holding.realized
    if size == 0 or (size > 0) == (signed > 0):
        new_size = round_amount(size + signed)
        average = _average(money, size, average, signed, price, new_size)
        session = _average(money, size, session, signed, price, new_size)
    else:
        closing = math.copysign(min(abs(signed), abs(size)), size)
        realized += pnl(money, closing, session, price)
        new_size = round_amount(size - closing)
        rest = round_amount(signed + closing)
        if new_size == 0 and rest != 0:
            new_size, average, session = rest, price, price
    if new_size == 0:
        return Holding(0.0, 0.0, 0.0, realized)
    return Holding(new_size, average, session, realized)


def settle(money: Money, holding: Holding, price: float) -> tuple[Holding, float]:
    """A settlement at ``price`` (08:00 UTC, or a delivery at expiry): the session's PnL (realized
    plus floating at ``price``) is paid out and the session restarts at ``price``."""
    session_pnl = holding.realized + (pnl(money, holding.size, holding.session_price, price) if holding.size else 0.0)
    return Holding(holding.size, holding.average_price, price, 0.0), session_pnl


@dataclass(frozen=True, slots=True)
class Marked:
    """A holding's figures at a mark, in Deribit's names: ``floating_profit_loss`` (session),
    ``total_profit_loss`` (from the average), ``size_currency`` and ``delta`` (futures only: the
    size in coin; an option's delta comes from its greeks)."""

    floating_profit_loss: float
    total_profit_loss: float
    size_currency: float | None
    delta: float | None


def mark(money: Money, holding: Holding, mark_price: float) -> Marked:
    size = holding.size
    floating = pnl(money, size, holding.session_price, mark_price) if size else 0.0
    total = pnl(money, size, holding.average_price, mark_price) if size and holding.average_price else 0.0
    coin: float | None = None
    if money is Money.INVERSE_FUTURE:
        coin = size / mark_price
    elif money is Money.LINEAR_FUTURE:
        coin = size
    return Marked(floating, total, coin, coin)


def session_price_from(money: Money, size: float, floating: float | None, mark_price: float | None,
                       settlement_price: float | None, average_price: float) -> float:
    """The session price behind the exchange's floating PnL at ``mark_price``: the settlement
    price when that gives the figure (to its rounding: nothing changed since the settlement),
    else the price that gives it exactly (the session also holds fills), else (no figure, or no
    mark) the settlement price or the average."""
    settled = settlement_price if settlement_price is not None and settlement_price > 0 else None
    if floating is None or mark_price is None or mark_price <= 0 or size == 0:
        return settled if settled is not None else average_price
    rounding = COIN_ROUNDING if money.pnl_in_coin else QUOTE_ROUNDING
    if settled is not None and abs(pnl(money, size, settled, mark_price) - floating) <= rounding:
        return settled
    if money.harmonic:
        inverse = floating / size + 1.0 / mark_price
        derived = 1.0 / inverse if inverse > 0 else math.nan
    else:
        derived = mark_price - floating / size
    if math.isfinite(derived) and derived > 0:
        return derived
    return settled if settled is not None else average_price


def usd(money: Money, amount: float, index_price: float | None) -> float | None:
    """A PnL figure in USD: a coin amount at the index, a quote (USDC) amount as it is."""
    if not money.pnl_in_coin:
        return amount
    return amount * index_price if index_price is not None and index_price > 0 else None


def delivery_value(identity: InstrumentIdentity, delivery_price: float) -> float | None:
    """What one unit of an expiring instrument is worth at its delivery, in its own price unit:
    Deribit's ``delivery_price`` is the underlying's (the index's average before 08:00, USD), which
    is a future's price; an option pays its intrinsic value, in the coin for an inverse option
    (``intrinsic / delivery_price``), in USDC for a linear one. ``None`` for what has no such rule."""
    if identity.is_future:
        return delivery_price
    if not identity.is_option or identity.strike is None or identity.option_type is None or delivery_price <= 0:
        return None
    above = delivery_price - identity.strike
    intrinsic = max(above, 0.0) if identity.option_type == "call" else max(-above, 0.0)
    return intrinsic if identity.is_linear else intrinsic / delivery_price


def value_usd(money: Money, size: float, mark_price: float, index_price: float | None) -> float | None:
    """A position's value in USD at the mark: an inverse future's face (its size is USD), an
    inverse option's coin value at the index, a linear position's quote value (USDC as USD)."""
    if money is Money.INVERSE_FUTURE:
        return size
    if money is Money.INVERSE_OPTION:
        return size * mark_price * index_price if index_price is not None and index_price > 0 else None
    return size * mark_price


def option_pnl_usd(size: float, mark_price: float, index_price: float, average_price_usd: float) -> float:
    """Deribit's ``floating_profit_loss_usd`` of an inverse option: despite its name, from the
    average price in USD (``average_price_usd``, each fill at its time's index) to the mark in
    USD at the index, ``size * (mark * index - average_price_usd)`` (not the session's)."""
    return size * (mark_price * index_price - average_price_usd)
