"""Contract maths (deribit.contracts) against the figures Deribit itself sent, and its laws.

Real positions (tests/support/contracts.py names each source): Deribit's docs example of
``user.changes`` and of ``private/get_positions`` (via nautilus_trader's test data), issue 16's
BTC-PERPETUAL, four inverse option positions from public client code."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deribit import contracts
from deribit.contracts import Holding, Money
from messages.account import Position
from tests.support.contracts import (
    DOCS_USER_CHANGES,
    ISSUE_16_PERPETUAL,
    NAUTILUS_GET_POSITIONS,
    OPTION_POSITIONS,
    identity,
    inverse_option,
    inverse_perpetual,
    linear_option,
    linear_perpetual,
)

#: Deribit's PnL figures in coin carry 9 decimals (rounded from rounded parts: within 2 units).
COIN_DECIMAL = 2e-9


def at_settlement(position: Position) -> Holding:
    assert position.settlement_price is not None
    return Holding(position.size, position.average_price, position.settlement_price,
                   position.realized_profit_loss or 0.0)


def test_identities_give_the_maths() -> None:
    assert contracts.money_of(identity(inverse_perpetual())) is Money.INVERSE_FUTURE
    assert contracts.money_of(identity(linear_perpetual())) is Money.LINEAR_FUTURE
    expiry = dt.date(2021, 9, 24)
    assert contracts.money_of(identity(inverse_option("BTC-24SEP21-40000-C", expiry, 40_000.0))) is Money.INVERSE_OPTION
    assert contracts.money_of(identity(linear_option("SOL_USDC-24SEP21-0d5-C", expiry, 0.5))) is Money.LINEAR_OPTION


@pytest.mark.parametrize("position", [DOCS_USER_CHANGES, NAUTILUS_GET_POSITIONS, ISSUE_16_PERPETUAL],
                         ids=["docs-user.changes", "docs-get_positions", "issue-16"])
def test_inverse_perpetual_figures_are_deribits(position: Position) -> None:
    """Floating from the settlement price, total from the average, delta the size in coin."""
    assert position.mark_price is not None
    marked = contracts.mark(Money.INVERSE_FUTURE, at_settlement(position), position.mark_price)
    assert marked.floating_profit_loss == pytest.approx(position.floating_profit_loss, abs=COIN_DECIMAL)
    # The issue quotes its total to 4 significant digits.
    total_rounding = 5e-9 if position is ISSUE_16_PERPETUAL else COIN_DECIMAL
    assert marked.total_profit_loss == pytest.approx(position.total_profit_loss, abs=total_rounding)
    if position.size_currency is not None:
        assert marked.size_currency == pytest.approx(position.size_currency, abs=COIN_DECIMAL)
        assert marked.delta == pytest.approx(position.delta, abs=COIN_DECIMAL)


def test_the_issue_16_perpetual_against_the_old_desk() -> None:
    """The desk took floating from the average: -1.079e-5 where Deribit says -2.82e-7."""
    position = ISSUE_16_PERPETUAL
    assert position.mark_price is not None
    marked = contracts.mark(Money.INVERSE_FUTURE, at_settlement(position), position.mark_price)
    old_floating = position.size * (1 / position.average_price - 1 / position.mark_price)
    assert abs(old_floating - (position.floating_profit_loss or 0.0)) > 1e-5
    assert abs(marked.floating_profit_loss - (position.floating_profit_loss or 0.0)) < COIN_DECIMAL


def test_a_reduction_realizes_against_the_settlement_price() -> None:
    """The docs' user.changes: the 10 USD sold at 17,391 out of a position carried over from the
    16,025.83 settlement has profit_loss 0.00004898 BTC (not against the 15,000 average)."""
    before = Holding(DOCS_USER_CHANGES.size + 10.0, 15_000.0, 16_025.83)
    after = contracts.fill(Money.INVERSE_FUTURE, before, -10.0, 17_391.0)
    assert after.size == DOCS_USER_CHANGES.size and after.average_price == 15_000.0
    assert after.realized == pytest.approx(0.00004898, abs=5e-9)  # a trade's profit_loss has 8 decimals
    assert after.session_price == 16_025.83


@pytest.mark.parametrize("position", OPTION_POSITIONS, ids=[p.instrument_name for p in OPTION_POSITIONS])
def test_inverse_option_figures_are_deribits(position: Position) -> None:
    """Options too: floating from the settlement price, total from the average (coin), and the
    USD figure from the average in USD to the mark at the index."""
    assert position.mark_price is not None and position.index_price is not None
    marked = contracts.mark(Money.INVERSE_OPTION, at_settlement(position), position.mark_price)
    # The marks and settlement prices in these answers are rounded to 6 decimals, the PnL figures
    # are not: half a unit each.
    mark_rounding = abs(position.size) * 1e-6 + COIN_DECIMAL
    assert marked.floating_profit_loss == pytest.approx(position.floating_profit_loss, abs=mark_rounding)
    assert marked.total_profit_loss == pytest.approx(position.total_profit_loss, abs=mark_rounding)
    assert marked.delta is None  # an option's delta comes from its greeks
    assert position.average_price_usd is not None and position.floating_profit_loss_usd is not None
    usd = contracts.option_pnl_usd(position.size, position.mark_price, position.index_price,
                                   position.average_price_usd)
    # The exchange values the mark at the underlying, the index here: within a few cents.
    assert usd == pytest.approx(position.floating_profit_loss_usd, abs=abs(position.size) * 0.5 + 0.01)


def test_a_linear_perpetual_is_arithmetic_in_coin() -> None:
    """Issue 16: two buys of 0.001 ETH_USDC-PERPETUAL at 2,973.55 and 3,067.2 average 3,020.375
    with delta 0.002 ETH (the desk's inverse maths gave 3,019.65 and 6.7e-7)."""
    money = contracts.money_of(identity(linear_perpetual()))
    assert money is Money.LINEAR_FUTURE
    held = contracts.fill(money, contracts.fill(money, None, 0.001, 2973.55), 0.001, 3067.2)
    assert held.size == 0.002 and held.average_price == pytest.approx(3020.375, rel=1e-12)
    marked = contracts.mark(money, held, 3100.0)
    assert marked.delta == marked.size_currency == 0.002
    assert marked.total_profit_loss == pytest.approx(0.002 * (3100.0 - 3020.375))  # USDC
    assert contracts.usd(money, marked.total_profit_loss, 3100.0) == marked.total_profit_loss
    old = contracts.fill(Money.INVERSE_FUTURE, contracts.fill(Money.INVERSE_FUTURE, None, 0.001, 2973.55), 0.001,
                         3067.2)
    assert old.average_price == pytest.approx(3019.65, abs=0.01)


def test_usd_figures() -> None:
    """PnL in the coin counts at the index, in USDC as it is; values: an inverse future's face,
    an option's price times size (times the index when priced in the coin)."""
    assert contracts.usd(Money.INVERSE_FUTURE, 0.5, 40_000.0) == 20_000.0
    assert contracts.usd(Money.INVERSE_OPTION, 0.5, None) is None
    assert contracts.usd(Money.LINEAR_OPTION, 12.5, 40_000.0) == 12.5
    assert contracts.value_usd(Money.INVERSE_FUTURE, -400.0, 39_000.0, 40_000.0) == -400.0
    assert contracts.value_usd(Money.INVERSE_OPTION, 2.0, 0.05, 40_000.0) == pytest.approx(4_000.0)
    assert contracts.value_usd(Money.LINEAR_FUTURE, 0.002, 3_000.0, 3_001.0) == pytest.approx(6.0)


def test_delivery_values() -> None:
    """Deribit's delivery price is the underlying's: a future delivers at it, an option pays its
    intrinsic value (in the coin for inverse options, in USDC for linear ones)."""
    expiry = dt.date(2021, 6, 25)
    assert contracts.delivery_value(identity(inverse_perpetual()), 31_000.0) == 31_000.0
    put = identity(inverse_option("BTC-25JUN21-28000-P", expiry, 28_000.0, "put"))
    assert contracts.delivery_value(put, 24_000.0) == pytest.approx(4_000.0 / 24_000.0)
    assert contracts.delivery_value(put, 30_000.0) == 0.0
    call = identity(linear_option("SOL_USDC-25JUN21-0d5-C", expiry, 0.5, "call"))
    assert contracts.delivery_value(call, 0.62) == pytest.approx(0.12)


def test_session_price_from_the_exchange_figures() -> None:
    """The settlement price when it gives the exchange's floating (to its rounding), else the
    price that gives it exactly (fills this session moved it)."""
    position = ISSUE_16_PERPETUAL
    price = contracts.session_price_from(Money.INVERSE_FUTURE, position.size, position.floating_profit_loss,
                                         position.mark_price, position.settlement_price, position.average_price)
    assert price == position.settlement_price
    moved = contracts.session_price_from(Money.INVERSE_FUTURE, 40.0, -1e-6, 109_266.97, 109_351.31, 112_585.87)
    assert contracts.pnl(Money.INVERSE_FUTURE, 40.0, moved, 109_266.97) == pytest.approx(-1e-6, rel=1e-9)
    assert contracts.session_price_from(Money.LINEAR_FUTURE, 2.0, None, 3000.0, 0.0, 2900.0) == 2900.0
    assert contracts.session_price_from(Money.LINEAR_FUTURE, 2.0, 10.0, 3000.0, 0.0, 2900.0) == 2995.0


# -- laws ------------------------------------------------------------------------------------------
MONEYS = st.sampled_from(list(Money))
PRICES = st.floats(0.5, 200_000.0)


def unit(money: Money) -> float:
    """A contract: 10 USD (inverse futures), 0.1 coin otherwise."""
    return 10.0 if money is Money.INVERSE_FUTURE else 0.1


LEGS = st.lists(st.tuples(st.integers(-20, 20).filter(bool), st.floats(100.0, 100_000.0)), min_size=1, max_size=12)


def run(money: Money, legs: list[tuple[int, float]], holding: Holding | None = None) -> Holding:
    for contracts_signed, price in legs:
        holding = contracts.fill(money, holding, contracts.round_amount(contracts_signed * unit(money)), price)
    assert holding is not None
    return holding


def same(a: Holding, b: Holding) -> None:
    assert a.size == b.size
    for x, y in ((a.average_price, b.average_price), (a.session_price, b.session_price)):
        assert x == pytest.approx(y, rel=1e-9)
    assert a.realized == pytest.approx(b.realized, rel=1e-9, abs=1e-9 * max(1.0, abs(a.realized)))


@settings(max_examples=200, deadline=None)
@given(MONEYS, LEGS, st.integers(0, 11), st.integers(1, 19))
def test_splitting_a_fill_changes_nothing(money: Money, legs: list[tuple[int, float]], which: int, part: int) -> None:
    which %= len(legs)
    n, price = legs[which]
    if abs(n) < 2:
        return
    first = math.copysign(min(part, abs(n) - 1), n)
    split = [*legs[:which], (int(first), price), (int(n - first), price), *legs[which + 1:]]
    same(run(money, legs), run(money, split))


@settings(max_examples=200, deadline=None)
@given(MONEYS, LEGS)
def test_a_round_trip_realizes_the_sum_of_its_legs(money: Money, legs: list[tuple[int, float]]) -> None:
    """From flat to flat, whatever the path (flips included), the realized PnL is what the legs
    paid and got: coin per leg ``usd / price`` for inverse futures, ``amount * price`` otherwise."""
    total = sum(n for n, _ in legs)
    closed = [*legs, (-total, 1234.5)] if total else legs
    held = run(money, closed)
    assert held.size == 0
    if money is Money.INVERSE_FUTURE:
        legs_value = sum(n * unit(money) / p for n, p in closed)
    else:
        legs_value = -sum(n * unit(money) * p for n, p in closed)
    scale = sum(abs(n) * unit(money) * (1 / p if money is Money.INVERSE_FUTURE else p) for n, p in closed)
    assert held.realized == pytest.approx(legs_value, abs=1e-9 * scale)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6).filter(lambda x: abs(x) > 1), PRICES, PRICES)
def test_inverse_pnl_is_linear_pnl_of_the_coins_bought(size: float, entry: float, exit_price: float) -> None:
    """An inverse position of ``size`` USD is ``size / entry`` coins bought at ``entry``: its coin
    PnL at ``exit_price`` in USD is the linear PnL of those coins."""
    inverse = contracts.pnl(Money.INVERSE_FUTURE, size, entry, exit_price)
    linear = contracts.pnl(Money.LINEAR_FUTURE, size / entry, entry, exit_price)
    assert inverse * exit_price == pytest.approx(linear, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(MONEYS, LEGS, PRICES, PRICES)
def test_a_settlement_moves_pnl_from_floating_to_paid(money: Money, legs: list[tuple[int, float]], settle_at: float,
                                                     mark_price: float) -> None:
    """What the settlement paid plus the new session's floating is what the old session would
    have shown: nothing is lost or counted twice across 08:00; total is untouched."""
    held = run(money, legs)
    if held.size == 0:
        return
    after, paid = contracts.settle(money, held, settle_at)
    before = held.realized + contracts.mark(money, held, mark_price).floating_profit_loss
    now = contracts.mark(money, after, mark_price)
    scale = abs(held.size) * (1 / min(settle_at, mark_price, held.session_price) if money.harmonic
                              else max(settle_at, mark_price, held.session_price))
    assert paid + now.floating_profit_loss == pytest.approx(before, abs=1e-9 * scale)
    assert now.total_profit_loss == contracts.mark(money, held, mark_price).total_profit_loss
    assert after.realized == 0.0 and contracts.mark(money, after, settle_at).floating_profit_loss == 0.0


@settings(max_examples=200, deadline=None)
@given(MONEYS, LEGS, PRICES)
def test_the_session_price_behind_a_floating_figure_gives_it_back(money: Money, legs: list[tuple[int, float]],
                                                                  mark_price: float) -> None:
    held = run(money, legs)
    if held.size == 0:
        return
    floating = contracts.mark(money, held, mark_price).floating_profit_loss
    price = contracts.session_price_from(money, held.size, floating, mark_price, None, held.average_price)
    again = contracts.pnl(money, held.size, price, mark_price)
    scale = abs(held.size) * (1 / min(mark_price, held.session_price) if money.harmonic else mark_price)
    assert again == pytest.approx(floating, abs=1e-9 * scale)
