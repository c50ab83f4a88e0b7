"""The Cboe VIX method: the white paper's worked example, the selection rules, a Deribit chain."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from quant import black76_price, chain_variance_index, interpolate_index, term_variance
from quant.variance_index import BOTH, CALL, MS_PER_YEAR, PUT
from tests.support.paths import QUANT_FIXTURES

QUOTES = QUANT_FIXTURES / "cboe_vix_white_paper_quotes.csv"
MINUTES_PER_YEAR = 525_600.0


def _quotes(term: str) -> tuple[np.ndarray, ...]:
    with QUOTES.open() as fh:
        rows = [r for r in csv.DictReader(line for line in fh if not line.startswith("#")) if r["term"] == term]
    cols = ("strike", "call_bid", "call_ask", "put_bid", "put_ask")
    return tuple(np.array([float(r[c]) for r in rows]) for c in cols)


def _white_paper_2014() -> tuple:
    # "Returning to the example": N_T1 = 854 + 510 + 34,560 = 35,924 and N_T2 = 854 + 900 + 44,640
    # = 46,394 minutes (T1 = 0.0683486, T2 = 0.0882686); R1 = 0.0305%, R2 = 0.0286%.
    near = term_variance(*_quotes("near"), 35_924 / MINUTES_PER_YEAR, 0.000305)
    nxt = term_variance(*_quotes("next"), 46_394 / MINUTES_PER_YEAR, 0.000286)
    return near, nxt, interpolate_index(near, nxt, 30.0)


def _dk(term, strike: float) -> float:
    return float(term.delta_k[term.strikes == strike][0])


def test_white_paper_step_1_forward_k0_and_strip() -> None:
    near, nxt, _ = _white_paper_2014()
    # Published: F1 = 1965 + e^(RT)(21.05 - 23.15) = 1962.89996, F2 = 1960 + e^(RT)(27.30 - 24.90) = 1962.40006.
    assert near.parity_strike == 1965.0 and nxt.parity_strike == 1960.0
    assert round(near.forward, 5) == 1962.89996
    assert round(nxt.forward, 5) == 1962.40006
    assert near.k0 == 1960.0 and nxt.k0 == 1960.0
    # "The price used for the 1960 strike in the near-term is (24.25 + 21.30)/2 = 22.775; and in the
    # next-term (27.30 + 24.90)/2 = 26.10."
    assert near.mid[near.kinds == BOTH][0] == pytest.approx(22.775, abs=1e-12)
    assert nxt.mid[nxt.kinds == BOTH][0] == pytest.approx(26.10, abs=1e-12)
    # The 1370 put is the lowest near-term strike (the 1350 and 1355 puts are not included despite
    # their bids), dK_1370 = 5; the 2225 call is not included despite its bid; dK of the next-term
    # 1325 put = (1350 - 1275)/2 = 37.5.
    assert near.strikes[0] == 1370.0 and _dk(near, 1370.0) == 5.0
    assert 1350.0 not in near.strikes and 1355.0 not in near.strikes
    assert 2225.0 not in near.strikes and near.strikes[-1] == 2125.0
    assert _dk(nxt, 1325.0) == 37.5
    assert (near.kinds[near.strikes < 1960.0] == PUT).all() and (near.kinds[near.strikes > 1960.0] == CALL).all()


def test_white_paper_steps_2_and_3_variances_and_index() -> None:
    near, nxt, index = _white_paper_2014()
    # Forward adjustments 1/T (F/K0 - 1)^2, each term's sigma^2 and the index, to the decimals of the
    # paper's example as transcribed in public replications of it (see the report: the PDF itself
    # was not available to check these against).
    assert round(near.forward_adjustment, 8) == 0.00003203
    assert round(nxt.forward_adjustment, 8) == 0.00001699
    assert round(near.variance, 8) == 0.01846292
    assert round(nxt.variance, 8) == 0.01882101
    assert round(index.value, 6) == 13.685821
    assert round(index.value, 2) == 13.69
    # 30-day weights: (46,394 - 43,200)/(46,394 - 35,924) on the near term.
    assert index.near_weight == pytest.approx((46_394 - 43_200) / (46_394 - 35_924), rel=1e-12)


def test_current_methodology_edition_of_the_same_example() -> None:
    # Cboe's later VIX methodology document reworks the same quotes with T1 = 34,484 and
    # T2 = 44,954 minutes and R1 = 0.031664%, R2 = 0.028797%, printing the strip sums to 1e-10.
    near = term_variance(*_quotes("near"), 34_484 / MINUTES_PER_YEAR, 0.00031664)
    nxt = term_variance(*_quotes("next"), 44_954 / MINUTES_PER_YEAR, 0.00028797)
    assert round(near.sum_contribution, 10) == 0.0006320516
    assert round(nxt.sum_contribution, 10) == 0.0008314016
    assert round(near.scaled_sum, 6) == 0.019267
    assert round(nxt.scaled_sum, 6) == 0.019441
    assert round(near.forward_adjustment, 8) == 0.00003337
    assert round(nxt.forward_adjustment, 8) == 0.00001753
    assert round(near.variance, 9) == 0.019233906
    assert round(nxt.variance, 9) == 0.019423884
    index = interpolate_index(near, nxt, 30.0)
    assert round(index.value / 100.0, 8) == 0.13927842
    assert round(index.value, 2) == 13.93
    # dK over the surviving strikes: the zero-bid 1405 and 1415 puts and 2120 call are skipped.
    assert (_dk(near, 1400.0), _dk(near, 1410.0), _dk(near, 1420.0), _dk(near, 2100.0)) == (7.5, 10.0, 7.5, 15.0)
    assert _dk(nxt, 1275.0) == 50.0
    assert 1405.0 not in near.strikes and 2120.0 not in near.strikes and 1300.0 not in nxt.strikes


def test_selection_walks_until_two_zero_bids_in_a_row() -> None:
    k = np.array([60.0, 70.0, 80.0, 85.0, 90.0, 95.0, 100.0, 105.0, 110.0, 115.0, 120.0, 130.0])
    put_bid = np.array([0.5, 0.0, 0.0, 0.2, 0.0, 0.8, 2.0, 4.0, 8.0, 12.0, 17.0, 27.0])
    put_ask = put_bid + 0.2
    call_bid = np.array([40.0, 30.0, 20.0, 15.0, 10.5, 6.0, 2.0, 0.3, 0.0, 0.1, 0.0, 0.0])
    call_ask = call_bid + 0.2
    term = term_variance(k, call_bid, call_ask, put_bid, put_ask, years=0.1)
    assert term.parity_strike == 100.0 and term.k0 == 100.0
    # Puts: 95 (bid), 90 skipped (one zero bid), 85 kept, then 80 and 70 are two zeros: stop before 60.
    # Calls: 105, 110 skipped, 115, then 120 and 130 are two zeros.
    np.testing.assert_array_equal(term.strikes, [85.0, 95.0, 100.0, 105.0, 115.0])
    np.testing.assert_array_equal(term.delta_k, [10.0, 7.5, 5.0, 7.5, 10.0])
    np.testing.assert_array_equal(term.kinds, [PUT, PUT, BOTH, CALL, CALL])
    expected = 2.0 / 0.1 * np.sum(term.delta_k / term.strikes**2 * term.mid) - (term.forward / 100.0 - 1.0) ** 2 / 0.1
    assert term.variance == pytest.approx(expected, rel=1e-14)


def test_failures_are_nan_with_a_reason() -> None:
    k = np.array([90.0, 100.0, 110.0])
    none = np.zeros(3)
    bid = np.array([1.0, 1.0, 1.0])
    assert "no time" in term_variance(k, bid, bid + 1, bid, bid + 1, years=0.0).note
    failed = term_variance(k, none, none, bid, bid + 1, years=0.1)
    assert np.isnan(failed.variance) and "both a call and a put" in failed.note
    near = term_variance(k, bid, bid + 1, bid, bid + 1, years=0.05)
    far = term_variance(k, bid, bid + 1, bid, bid + 1, years=0.07)
    assert np.isnan(interpolate_index(near, far, 30.0).value)  # 30 days is not between them


def _flat_vol_chain(vol: float, days: list[float], now_ms: int, forward: float = 40_000.0) -> dict:
    strikes = np.arange(1_000.0, 200_001.0, 500.0)
    rows = {"expiry_ms": [], "strike": [], "is_call": [], "bid": [], "ask": [], "underlying": []}
    for d in days:
        t = d / 365.0
        for is_call in (True, False):
            coin = np.asarray(black76_price(forward, strikes, t, vol, is_call)) / forward
            bid = np.where(coin > 1e-4, coin * 0.999, 0.0)
            rows["expiry_ms"].append(np.full(strikes.size, now_ms + d * 86_400_000.0))
            rows["strike"].append(strikes)
            rows["is_call"].append(np.full(strikes.size, is_call))
            rows["bid"].append(bid)
            rows["ask"].append(coin * 1.001)
            rows["underlying"].append(np.full(strikes.size, forward))
    return {key: np.concatenate(v) for key, v in rows.items()}


def test_deribit_chain_of_a_flat_smile_gives_back_its_vol() -> None:
    now = 1_626_993_723_000
    c = _flat_vol_chain(0.8, [7.0, 28.0, 35.0, 63.0], now)
    index = chain_variance_index(c["expiry_ms"], c["strike"], c["is_call"], c["bid"], c["ask"], c["underlying"], now)
    assert index.near.years == pytest.approx(28 / 365) and index.next.years == pytest.approx(35 / 365)
    # The discrete strip misses the far tails that the 1e-4 coin no-bid cut truncates: a hair low.
    assert index.value == pytest.approx(80.0, rel=2e-3)
    assert index.near.forward == pytest.approx(40_000.0, rel=1e-6)


def test_deribit_chain_without_a_bracketing_pair() -> None:
    now = 1_626_993_723_000
    c = _flat_vol_chain(0.8, [35.0, 63.0], now)
    index = chain_variance_index(c["expiry_ms"], c["strike"], c["is_call"], c["bid"], c["ask"], c["underlying"], now)
    assert np.isnan(index.value) and "brackets" in index.note
    assert index.near is None and MS_PER_YEAR == 365 * 86_400_000
