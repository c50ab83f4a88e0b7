"""The console's numbers: one way each, to the instrument's tick."""

from __future__ import annotations

import math

import pytest

from console.numbers import amount_text, coin_text, decimals_of, greek_text, iv_text, price_text, usd_text


@pytest.mark.parametrize(("step", "decimals"), [(0.0005, 4), (0.5, 1), (2.5, 1), (10.0, 0), (1.0, 0),
                                                (0.0001, 4), (1e-8, 8), (None, 8), (0.0, 8), (-1.0, 8),
                                                (math.nan, 8), (0.01, 2)])
def test_decimals_of_a_step(step: float | None, decimals: int) -> None:
    assert decimals_of(step) == decimals


def test_prices_follow_the_tick() -> None:
    # The uneven figures: 59,926.33137 and 0.03974563.
    assert price_text(59926.33137, 0.5) == "59,926.3"
    assert price_text(59926.33137, 2.5) == "59,926.3"
    assert price_text(0.03974563, 0.0005) == "0.0397"
    assert price_text(0.04, 0.0001) == "0.0400"
    assert price_text(3020.375, 0.05) == "3,020.38"


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_missing_and_not_finite_values_are_a_dash(bad: float | None) -> None:
    for text in (price_text(bad, 0.5), amount_text(bad, 10), usd_text(bad), coin_text(bad), iv_text(bad),
                 greek_text(bad)):
        assert text == "-"


def test_usd_coin_iv_and_greeks() -> None:
    assert usd_text(12345.678) == "12,346"
    assert usd_text(-12.345) == "-12.35"
    assert usd_text(5.0, signed=True) == "+5.00"
    assert coin_text(-2.8235e-7) == "0.000000"
    assert coin_text(-0.0012345, digits=4) == "-0.0012"
    assert iv_text(65.345) == "65.3"
    assert greek_text(-0.00001) == "0.0000"
    assert amount_text(10_000, 10) == "10,000"
    assert amount_text(0.1, 0.1) == "0.1"
