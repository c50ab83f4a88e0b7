"""Implied volatility: Deribit's mark_iv, vollib's Let's-Be-Rational, round trips, reasons."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import IVReason, black76_price, implied_vol, implied_vol_with_reasons
from quant.implied_vol import normalised_implied_vol
from tests.support.fixtures_quant.deribit_tickers import load_tickers

HOUR = 1.0 / (365.0 * 24.0)


def _domain_sample(n: int, seed: int) -> dict[str, np.ndarray]:
    """Options over the accuracy domain, time value at least 1e-12 x forward."""
    rng = np.random.default_rng(seed)
    m = 6 * n
    f = np.exp(rng.uniform(np.log(1e2), np.log(1e5), m))
    k = f * np.exp(rng.uniform(-2.5, 2.5, m))
    t = np.exp(rng.uniform(np.log(HOUR), np.log(3.0), m))
    v = np.exp(rng.uniform(np.log(0.05), np.log(5.0), m))
    c = rng.random(m) < 0.5
    # Corners of the domain, every combination.
    grid = np.array(np.meshgrid([-2.5, -0.1, 0.0, 0.1, 2.5], [HOUR, 3.0], [0.05, 5.0], [0.0, 1.0])).reshape(4, -1)
    f = np.concatenate((f, np.full(grid.shape[1], 3e4)))
    k = np.concatenate((k, 3e4 * np.exp(grid[0])))
    t = np.concatenate((t, grid[1]))
    v = np.concatenate((v, grid[2]))
    c = np.concatenate((c, grid[3] > 0.5))
    p = np.asarray(black76_price(f, k, t, v, c))
    intrinsic = np.maximum(np.where(c, f - k, k - f), 0.0)
    keep = (p - intrinsic) >= 1e-12 * f
    keep[:m][np.cumsum(keep[:m]) > n] = False
    return {
        "price": p[keep],
        "forward": f[keep],
        "strike": k[keep],
        "years": t[keep],
        "vol": v[keep],
        "is_call": c[keep],
    }


def test_deribit_mark_iv_from_mark_price() -> None:
    t = load_tickers()
    price = t.mark_price * t.underlying_price
    vol, reason = implied_vol_with_reasons(price, t.underlying_price, t.strike, t.years, t.is_call)
    assert (reason == IVReason.OK).all()
    # mark_iv is rounded to 0.01 vol points; deep in- or out-of-the-money the price pins the vol
    # only loosely, hence the median.
    assert np.median(np.abs(vol * 100.0 - t.mark_iv)) <= 0.01


def test_agrees_with_vollib_lets_be_rational_to_1e9() -> None:
    reference = pytest.importorskip("vollib.black.implied_volatility")
    d = _domain_sample(1500, seed=11)
    ours = implied_vol(d["price"], d["forward"], d["strike"], d["years"], d["is_call"])
    ref = np.array(
        [
            float(reference.implied_volatility(p, f, k, 0.0, t, "c" if c else "p"))
            for p, f, k, t, c in zip(d["price"], d["forward"], d["strike"], d["years"], d["is_call"], strict=True)
        ]
    )
    assert len(ref) > 1500
    assert np.max(np.abs(ours - ref)) <= 1e-9


def test_out_of_the_money_vol_is_recovered() -> None:
    d = _domain_sample(3000, seed=12)
    otm = np.where(d["is_call"], d["strike"] >= d["forward"], d["strike"] <= d["forward"])
    vol = implied_vol(d["price"], d["forward"], d["strike"], d["years"], d["is_call"])
    assert np.max(np.abs(vol - d["vol"])[otm]) <= 1e-9


@settings(max_examples=300, deadline=None)
@given(
    st.floats(1.0, 1e6),
    st.floats(-2.5, 2.5),
    st.floats(HOUR, 3.0),
    st.floats(0.05, 5.0),
    st.booleans(),
)
def test_price_of_implied_vol_is_the_price(f: float, x: float, t: float, v: float, is_call: bool) -> None:
    k = f * np.exp(x)
    p = float(black76_price(f, k, t, v, is_call))
    intrinsic = max(f - k, 0.0) if is_call else max(k - f, 0.0)
    if p - intrinsic < 1e-12 * f:
        return  # no vol to double precision: the accuracy domain excludes these
    vol, reason = implied_vol(p, f, k, t, is_call, return_reason=True)
    assert reason == IVReason.OK
    again = float(black76_price(f, k, t, vol, is_call))
    assert again == pytest.approx(p, rel=0.0, abs=1e-12 * (p - intrinsic) + 8e-16 * max(f, k))


def test_reasons() -> None:
    f, k = 100.0, 100.0
    cases = [
        ((8.0, f, k, 0.5, True), IVReason.OK),
        ((8.0, f, 80.0, 0.5, False), IVReason.OK),
        ((8.0, f, k, 0.0, True), IVReason.NO_TIME),
        ((8.0, f, k, -1.0, True), IVReason.NO_TIME),
        ((0.0, f, 120.0, 0.5, True), IVReason.BELOW_INTRINSIC),
        ((19.0, f, 80.0, 0.5, True), IVReason.BELOW_INTRINSIC),
        ((20.0, f, 80.0, 0.5, True), IVReason.BELOW_INTRINSIC),
        ((100.0, f, 80.0, 0.5, True), IVReason.ABOVE_MAXIMUM),
        ((80.0, f, 80.0, 0.5, False), IVReason.ABOVE_MAXIMUM),
        ((-1.0, f, k, 0.5, True), IVReason.BAD_INPUT),
        ((np.nan, f, k, 0.5, True), IVReason.BAD_INPUT),
        ((8.0, np.inf, k, 0.5, True), IVReason.BAD_INPUT),
        ((8.0, 0.0, k, 0.5, True), IVReason.BAD_INPUT),
        ((8.0, f, -5.0, 0.5, True), IVReason.BAD_INPUT),
        ((8.0, f, k, np.nan, True), IVReason.BAD_INPUT),
    ]
    args = [np.array([c[0][i] for c in cases]) for i in range(5)]
    vol, reason = implied_vol_with_reasons(*args)
    np.testing.assert_array_equal(reason, [int(c[1]) for c in cases])
    assert np.isfinite(vol[reason == IVReason.OK]).all()
    assert np.isnan(vol[reason != IVReason.OK]).all()
    assert IVReason(int(reason[2])).name == "NO_TIME"


def test_shapes_and_scalars() -> None:
    vol = implied_vol(8.0, 100.0, 100.0, 0.5, True)
    assert np.ndim(vol) == 0
    assert float(vol) == pytest.approx(0.2841, abs=1e-4)
    prices = np.array([[5.0, 8.0], [10.0, 12.0]])
    vol, reason = implied_vol(prices, 100.0, 100.0, np.array([0.25, 0.5]), True, return_reason=True)
    assert vol.shape == (2, 2) and reason.shape == (2, 2) and reason.dtype == np.int8
    np.testing.assert_allclose(black76_price(100.0, 100.0, np.array([0.25, 0.5]), vol, True), prices, rtol=1e-13)
    assert implied_vol(np.array([]), 100.0, 100.0, 0.5, True).shape == (0,)


def test_extreme_inputs_give_a_vol_or_a_reason_and_no_warning() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    f = np.exp(rng.uniform(-5, 15, n))
    k = f * np.exp(rng.uniform(-40.0, 40.0, n))
    t = np.exp(rng.uniform(np.log(1e-9), np.log(50.0), n))
    c = rng.random(n) < 0.5
    upper = np.where(c, f, k)
    p = upper * np.exp(rng.uniform(np.log(1e-300), 0.0, n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol, reason = implied_vol_with_reasons(p, f, k, t, c)
    ok = reason == IVReason.OK
    assert ok.sum() > n // 4
    # Random prices under the upper bound: the only failures are prices under intrinsic value.
    assert set(np.unique(reason[~ok])) == {IVReason.BELOW_INTRINSIC}
    assert (np.isfinite(vol[ok]) & (vol[ok] >= 0.0)).all()
    # Wherever the time value is a sane fraction of the price the round trip holds.
    intrinsic = np.maximum(np.where(c, f - k, k - f), 0.0)
    sane = ok & (p - intrinsic > 1e-10 * f) & (vol * np.sqrt(t) < 30.0)
    again = np.asarray(black76_price(f, k, t, vol, c))
    np.testing.assert_allclose(again[sane], p[sane], rtol=1e-10)


def test_normalised_solver_matches_lets_be_rational_beyond_the_domain() -> None:
    lbr = pytest.importorskip("py_lets_be_rational.lets_be_rational")
    rng = np.random.default_rng(5)
    n = 1500
    x = -np.abs(rng.uniform(0.0, 12.0, n)) * rng.choice([1.0, 1e-2, 1e-6], n)
    x[:5] = 0.0
    frac = np.exp(rng.uniform(np.log(1e-200), np.log(0.999999), n))
    beta = frac * np.exp(0.5 * x)
    ours = normalised_implied_vol(beta, x)
    ref = np.array(
        [
            lbr.normalised_implied_volatility_from_a_transformed_rational_guess(b, xx, 1.0)
            for b, xx in zip(beta, x, strict=True)
        ]
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=0.0)


# Every hostile value of each input, with the reason it must give (issue 19: T = +inf gave vol 0
# with OK; a price of 1e-323 gave 14.85 with OK).
_F, _K, _T, _P = 100.0, 110.0, 0.5, 3.0
HOSTILE = [
    # price
    ((np.nan, _F, _K, _T, True), IVReason.BAD_INPUT),
    ((np.inf, _F, _K, _T, True), IVReason.BAD_INPUT),
    ((-np.inf, _F, _K, _T, True), IVReason.BAD_INPUT),
    ((-1.0, _F, _K, _T, True), IVReason.BAD_INPUT),
    ((-5e-324, _F, _K, _T, True), IVReason.BAD_INPUT),
    ((0.0, _F, _K, _T, True), IVReason.BELOW_INTRINSIC),
    ((-0.0, _F, _K, _T, True), IVReason.BELOW_INTRINSIC),
    ((5e-324, _F, _K, _T, True), IVReason.BELOW_INTRINSIC),  # the smallest subnormal
    ((1e-323, _F, 1000.0, 1 / 365, True), IVReason.BELOW_INTRINSIC),  # the issue's: 14.85 with OK before
    ((1e-323, _F, _F, _T, True), IVReason.BELOW_INTRINSIC),  # at the money: vol 0 with OK before
    ((1e-310, _F, _K, _T, True), IVReason.BELOW_INTRINSIC),  # subnormal once normalised by sqrt(F K)
    ((_P, _F, _K, _T, True), IVReason.OK),
    # time
    ((_P, _F, _K, np.inf, True), IVReason.BAD_INPUT),  # vol 0 with OK before
    ((_P, _F, _K, -np.inf, True), IVReason.BAD_INPUT),
    ((_P, _F, _K, np.nan, True), IVReason.BAD_INPUT),
    ((_P, _F, _K, 0.0, True), IVReason.NO_TIME),
    ((_P, _F, _K, -0.0, True), IVReason.NO_TIME),
    ((_P, _F, _K, -1.0, True), IVReason.NO_TIME),
    ((_P, _F, _K, -5e-324, True), IVReason.NO_TIME),
    # forward
    ((_P, 0.0, _K, _T, True), IVReason.BAD_INPUT),
    ((_P, -_F, _K, _T, True), IVReason.BAD_INPUT),
    ((_P, np.inf, _K, _T, True), IVReason.BAD_INPUT),
    ((_P, -np.inf, _K, _T, True), IVReason.BAD_INPUT),
    ((_P, np.nan, _K, _T, True), IVReason.BAD_INPUT),
    # strike
    ((_P, _F, 0.0, _T, False), IVReason.BAD_INPUT),
    ((_P, _F, -_K, _T, False), IVReason.BAD_INPUT),
    ((_P, _F, np.inf, _T, False), IVReason.BAD_INPUT),
    ((_P, _F, -np.inf, _T, False), IVReason.BAD_INPUT),
    ((_P, _F, np.nan, _T, False), IVReason.BAD_INPUT),
]


@pytest.mark.parametrize(("args", "expected"), HOSTILE, ids=[f"{a}" for a, _ in HOSTILE])
def test_every_hostile_input_gives_its_reason_and_no_vol(args: tuple[float, float, float, float, bool],
                                                         expected: IVReason) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol, reason = implied_vol_with_reasons(*args)
    assert IVReason(int(reason)) is expected
    if expected is IVReason.OK:
        assert np.isfinite(vol) and vol > 0.0
    else:
        assert np.isnan(vol)


def test_hostile_inputs_in_one_array_give_the_same_reasons_as_one_by_one() -> None:
    args = [np.array([c[0][i] for c in HOSTILE]) for i in range(5)]
    vol, reason = implied_vol_with_reasons(*args)
    np.testing.assert_array_equal(reason, [int(c[1]) for c in HOSTILE])
    assert np.isnan(vol[reason != IVReason.OK]).all() and (vol[reason == IVReason.OK] > 0.0).all()
