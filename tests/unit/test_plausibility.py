"""The data rules (desk.plausibility) and the index level every leg is valued at (desk.index_level)."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desk.index_level import IndexLevel
from desk.plausibility import (
    PlausibilityLimits,
    _option_fault_found,
    _top_fault_found,
    option_ticker_fault,
    timestamp_fault,
    top_fault,
)
from messages.market import DataFault, Greeks, Ticker
from tests.support import capture

LIMITS = PlausibilityLimits()
PERP = "BTC-PERPETUAL"
CALL = "BTC-29DEC23-40000-C"
NOW = 1_700_000_000.0


def option(**changes: object) -> Ticker:
    base = Ticker(instrument_name=CALL, timestamp=int(NOW * 1000), state="open", mark_price=0.05, mark_iv=60.0,
                  underlying_price=40_100.0, index_price=40_000.0,
                  greeks=Greeks(delta=0.5, gamma=0.00005, vega=50.0, theta=-20.0, rho=1.0))
    greeks = {k: changes.pop(k) for k in ("delta", "gamma", "vega", "theta") if k in changes}
    if greeks:
        assert base.greeks is not None
        changes["greeks"] = msgspec.structs.replace(base.greeks, **greeks)
    return msgspec.structs.replace(base, **changes)


@pytest.mark.parametrize(
    ("bid", "ask", "mark", "fault"),
    [
        (40_000.0, 40_000.5, 40_000.2, None),
        (None, 40_000.5, None, None),  # an empty side is not a fault
        (80_000.0, 70_000.0, None, DataFault.CROSSED),
        (40_000.0, 40_000.0, None, DataFault.LOCKED),
        (1.0, 2.0, None, DataFault.OFF_INDEX),
        (1e300, 1e300, None, DataFault.LOCKED),
        (1e300, 2e300, None, DataFault.OFF_INDEX),
        (math.nan, 40_000.5, None, DataFault.NOT_FINITE),
        (40_000.0, math.inf, None, DataFault.NOT_FINITE),
        (-5.0, 40_000.5, None, DataFault.NOT_POSITIVE),
        (0.0 or None, 40_000.5, -1.0, DataFault.NOT_POSITIVE),
        (40_000.0, 40_000.5, 41_000.0, DataFault.MARK_OUTSIDE_BOOK),
        (40_000.0, 40_000.5, 39_000.0, DataFault.MARK_OUTSIDE_BOOK),
        (40_000.0, 40_000.5, 40_200.0, None),  # within 1% outside the book: the mark's own basis
    ],
)
def test_a_futures_top_of_book(bid: float | None, ask: float | None, mark: float | None,
                               fault: DataFault | None) -> None:
    found = top_fault(PERP, bid, ask, mark, 40_000.0, LIMITS)
    assert (found.fault if found else None) == fault
    if found is not None:
        assert str(found).startswith(PERP)


def test_deribits_own_perpetual_ticker_passes() -> None:
    # docs.deribit.com, incremental_ticker.BTC-PERPETUAL example: the mark is a little above the ask.
    ticker = Ticker(instrument_name=PERP, timestamp=1623060194301, state="open", mark_price=36446.51,
                    index_price=36441.64, best_bid_price=36442.5, best_ask_price=36443.0, settlement_price=36169.49)
    assert top_fault(PERP, ticker.best_bid_price, ticker.best_ask_price, ticker.mark_price, ticker.index_price,
                     LIMITS) is None


def test_without_an_index_only_the_book_itself_is_checked() -> None:
    assert top_fault(PERP, 1.0, 2.0, None, None, LIMITS) is None
    assert top_fault(PERP, 2.0, 1.0, None, None, LIMITS) is not None


@pytest.mark.parametrize(
    ("changes", "fault"),
    [
        ({}, None),
        ({"delta": 1e300}, DataFault.DELTA_OUT_OF_RANGE),
        ({"delta": -7.0}, DataFault.DELTA_OUT_OF_RANGE),
        ({"delta": 1.0000001}, None),  # rounding
        ({"delta": math.nan}, DataFault.NOT_FINITE),
        ({"gamma": -0.001}, DataFault.GREEK_OUT_OF_RANGE),
        ({"vega": -1.0}, DataFault.GREEK_OUT_OF_RANGE),
        ({"gamma": 1.0}, DataFault.GREEK_OUT_OF_RANGE),  # gamma x forward 40,100
        ({"vega": 1e9}, DataFault.GREEK_OUT_OF_RANGE),
        ({"mark_iv": 0.0}, DataFault.IV_OUT_OF_RANGE),
        ({"mark_iv": -5.0}, DataFault.IV_OUT_OF_RANGE),
        ({"mark_iv": 1e6}, DataFault.IV_OUT_OF_RANGE),
        ({"mark_iv": math.nan}, DataFault.NOT_FINITE),
        ({"mark_price": math.inf}, DataFault.NOT_FINITE),
        ({"mark_price": -0.01}, DataFault.NOT_POSITIVE),
        ({"underlying_price": 1e300}, DataFault.OFF_INDEX),
        ({"underlying_price": 0.0}, DataFault.NOT_POSITIVE),
        ({"index_price": math.nan}, DataFault.NOT_FINITE),
    ],
)
def test_an_option_ticker(changes: dict[str, object], fault: DataFault | None) -> None:
    found = option_ticker_fault(option(**changes), True, LIMITS)
    assert (found.fault if found else None) == fault


def test_a_put_delta_is_between_minus_one_and_zero() -> None:
    assert option_ticker_fault(option(delta=-0.4), False, LIMITS) is None
    found = option_ticker_fault(option(delta=0.4), False, LIMITS)
    assert found is not None and found.fault is DataFault.DELTA_OUT_OF_RANGE and "put" in found.detail


def test_the_real_capture_passes() -> None:
    # Every option ticker of the real Deribit capture is plausible (no false alarms on real data).
    checked = 0
    for ticker in capture.tickers():
        if ticker.greeks is None:
            continue
        is_call = ticker.instrument_name.endswith("-C")
        assert option_ticker_fault(ticker, is_call, LIMITS) is None, ticker.instrument_name
        checked += 1
    assert checked > 20


def test_a_timestamp_from_the_future() -> None:
    assert timestamp_fault(PERP, int((NOW + 4.9) * 1000), NOW, LIMITS) is None
    found = timestamp_fault(PERP, int((NOW + 3600) * 1000), NOW, LIMITS)
    assert found is not None and found.fault is DataFault.FROM_THE_FUTURE and "3600.0 s ahead" in found.detail


# -- the index level --------------------------------------------------------------------------------
def test_the_level_is_the_newest_observation_within_the_band() -> None:
    level = IndexLevel("BTC", LIMITS, stale_after_s=10.0)
    assert level.observe(40_000.0, 1_000, NOW, "btc_usd") is None
    assert level.observe(40_100.0, 900, NOW, "btc_usd") is None and level.price == 40_000.0  # older: kept
    assert level.observe(40_200.0, 1_100, NOW, "btc_usd") is None and level.price == 40_200.0
    bad = level.observe(1e300, 1_200, NOW, "btc_usd")
    assert bad is not None and bad.fault is DataFault.OFF_INDEX and level.price == 40_200.0
    assert level.observe(math.nan, 1_300, NOW, "btc_usd") is not None and level.price == 40_200.0


def test_a_real_jump_is_taken_once_the_level_is_stale() -> None:
    level = IndexLevel("BTC", LIMITS, stale_after_s=10.0)
    level.observe(40_000.0, 1_000, NOW, "btc_usd")
    assert level.observe(30_000.0, 2_000, NOW + 1, "btc_usd") is not None  # -25% at once: refused
    assert level.observe(30_000.0, 12_000, NOW + 10.5, "btc_usd") is None and level.price == 30_000.0


def test_the_hedge_instrument_is_valued_at_its_basis_times_the_level() -> None:
    level = IndexLevel("BTC", LIMITS, stale_after_s=10.0)
    level.observe(40_000.0, 1_000, NOW, "btc_usd")
    assert level.underlying is not None and level.underlying.hedge_price() is None  # no basis yet
    level.set_basis(40_040.0, 40_000.0)  # the perpetual's mid 0.1% over the index, one moment
    level.observe(40_400.0, 1_100, NOW, "btc_usd")  # the index moves 1%: the hedge leg with it
    underlying = level.underlying
    assert underlying is not None and underlying.hedge_price() == pytest.approx(40_400.0 * 1.001)


# -- the quick tests never accept what the full rules refuse ------------------------------------------
prices = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(30_000.0, 50_000.0), st.sampled_from([0.0, -1.0, 1e300, 40_000.0]))


@settings(max_examples=3000)
@given(bid=prices, ask=prices, mark=prices, index=st.one_of(st.none(), st.floats(30_000.0, 50_000.0), prices))
def test_the_quick_top_of_book_test_agrees_with_the_rules(bid: float | None, ask: float | None,
                                                          mark: float | None, index: float | None) -> None:
    if top_fault(PERP, bid, ask, mark, index, LIMITS) is None:
        assert _top_fault_found(PERP, bid, ask, mark, index, LIMITS) is None


@settings(max_examples=3000)
@given(mark=prices, forward=prices, index=prices, iv=st.one_of(st.none(), st.floats(), st.floats(1.0, 200.0)),
       delta=st.one_of(st.floats(), st.floats(-1.0, 1.0)), gamma=st.one_of(st.floats(), st.floats(0.0, 0.01)),
       vega=st.one_of(st.floats(), st.floats(0.0, 500.0)), is_call=st.booleans())
def test_the_quick_option_test_agrees_with_the_rules(mark: float | None, forward: float | None, index: float | None,
                                                     iv: float | None, delta: float, gamma: float, vega: float,
                                                     is_call: bool) -> None:
    ticker = Ticker(instrument_name=CALL, timestamp=0, state="open", mark_price=0.05 if mark is None else mark,
                    underlying_price=forward, index_price=index, mark_iv=iv,
                    greeks=Greeks(delta=delta, gamma=gamma, vega=vega, theta=-1.0))
    if option_ticker_fault(ticker, is_call, LIMITS) is None:
        assert _option_fault_found(ticker, is_call, LIMITS) is None
