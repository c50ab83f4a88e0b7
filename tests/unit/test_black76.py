"""Black-76 prices and greeks: Deribit's own figures as oracle, properties, reference agreement."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import Black76Greeks, black76_greeks, black76_price, usd_from_coin
from quant.black76 import normalised_black_otm, normalised_vega
from tests.support.fixtures_quant.deribit_tickers import load_tickers

# The accuracy domain of the issue: |ln(K/F)| <= 2.5, 1 hour to 3 years, 5% to 500% vol.
forwards = st.floats(1.0, 1e6)
log_moneyness = st.floats(-2.5, 2.5)
years = st.floats(1.0 / 8760.0, 3.0)
vols = st.floats(0.05, 5.0)


def _deribit_inputs() -> tuple[np.ndarray, ...]:
    t = load_tickers()
    return t.underlying_price, t.strike, t.years, t.mark_iv / 100.0, t.is_call


def test_fixture_has_tickers_of_both_kinds() -> None:
    t = load_tickers()
    assert len(t) == 89
    assert t.is_call.any() and (~t.is_call).any()
    assert (t.years > 0).all()


def test_price_at_mark_iv_gives_back_deribits_mark_price() -> None:
    t = load_tickers()
    price_coin = np.asarray(black76_price(*_deribit_inputs())) / t.underlying_price
    tolerance = np.maximum(1e-4, 5e-4 * t.mark_price)
    worst = np.abs(price_coin - t.mark_price) - tolerance
    assert (worst <= 0).all(), [t.name[i] for i in np.nonzero(worst > 0)[0]]


def test_delta_matches_deribits_ticker_delta() -> None:
    t = load_tickers()
    g = black76_greeks(*_deribit_inputs())
    assert np.max(np.abs(g.delta - t.delta)) <= 1e-5


def test_vega_and_theta_follow_deribits_units() -> None:
    # Deribit quotes vega per vol point and theta per calendar day, in USD; with a day or more
    # left its theta is the instantaneous rate (a one-day difference would be 3.5% larger at 7 days).
    t = load_tickers()
    g = black76_greeks(*_deribit_inputs())
    live = t.years >= 1.0 / 365.0
    assert live.sum() == 83
    for ours, theirs in ((g.vega, t.vega), (g.theta, t.theta)):
        assert np.all(np.abs(ours - theirs)[live] <= np.maximum(1e-3 * np.abs(theirs), 1e-4)[live])


def test_last_day_theta_is_minus_what_is_left_above_intrinsic() -> None:
    """Every ticker of the capture with less than a day left (ETH-23JUL21-2300-C, 0.39 days):
    Deribit's theta is minus the option's value above intrinsic, not the instantaneous rate. The
    remaining gap (up to 1.2%) is the ticker's own rounding (theta to 5 decimals, mark_iv to 0.01)
    and the forward moving by a few tenths of a USD between its greeks and its mark (delta 9e-5):
    the instantaneous rate is 20 times off."""
    t = load_tickers()
    f, k, years, vol, is_call = _deribit_inputs()
    last = t.years < 1.0 / 365.0
    assert last.sum() == 6
    g = black76_greeks(f, k, years, vol, is_call)
    intrinsic = np.maximum(np.where(is_call, f - k, k - f), 0.0)
    np.testing.assert_allclose(g.theta[last], (intrinsic - g.price)[last], rtol=1e-12)
    assert np.all(np.abs(g.theta - t.theta)[last] <= 0.02 * np.abs(t.theta)[last])
    instantaneous = -f * np.asarray(g.vega) * 100.0 * vol / (2.0 * years) / 365.0
    assert np.all(np.abs(instantaneous / t.theta)[last] > 15.0)


@settings(max_examples=150, deadline=None)
@given(forwards, log_moneyness, st.floats(1.0 / 8760.0, 0.999 / 365.0), vols, st.booleans())
def test_last_day_theta_takes_the_time_value(f: float, k: float, t: float, v: float, is_call: bool) -> None:
    strike = f * np.exp(k)
    g = black76_greeks(f, strike, t, v, is_call)
    intrinsic = max(f - strike, 0.0) if is_call else max(strike - f, 0.0)
    assert g.theta <= 0.0
    assert g.theta == pytest.approx(intrinsic - g.price, rel=1e-12, abs=1e-12 * f)


def test_usd_from_coin() -> None:
    assert usd_from_coin(0.05, 32000.0) == pytest.approx(1600.0)
    np.testing.assert_allclose(usd_from_coin([0.1, 0.2], [100.0, 200.0]), [10.0, 40.0])


@settings(max_examples=200, deadline=None)
@given(forwards, log_moneyness, years, vols)
def test_put_call_parity(f: float, k: float, t: float, v: float) -> None:
    strike = f * np.exp(k)
    call = black76_price(f, strike, t, v, True)
    put = black76_price(f, strike, t, v, False)
    assert call - put == pytest.approx(f - strike, abs=1e-12 * max(f, strike))


@settings(max_examples=200, deadline=None)
@given(forwards, log_moneyness, years, vols, st.booleans())
def test_price_bounds(f: float, k: float, t: float, v: float, is_call: bool) -> None:
    strike = f * np.exp(k)
    price = black76_price(f, strike, t, v, is_call)
    intrinsic = max(f - strike, 0.0) if is_call else max(strike - f, 0.0)
    upper = f if is_call else strike
    assert intrinsic - 1e-12 * upper <= price <= upper


def _central(fun, x: float, h: float) -> float:
    return (fun(x + h) - fun(x - h)) / (2.0 * h)


@settings(max_examples=150, deadline=None)
@given(forwards, st.floats(-1.5, 1.5), st.floats(1.0 / 365.0, 3.0), st.floats(0.1, 3.0), st.booleans())
def test_greeks_against_finite_differences(f: float, k: float, t: float, v: float, is_call: bool) -> None:
    strike = f * np.exp(k)
    g = black76_greeks(f, strike, t, v, is_call)

    def price(ff: float = f, tt: float = t, vv: float = v) -> float:
        return float(black76_price(ff, strike, tt, vv, is_call))

    # Central differences with steps on the scale of the smile's curvature (F vol sqrt(T)):
    # O(h^2) truncation plus O(eps F / h) round-off, hence the absolute slack.
    scale = f * v * np.sqrt(t)
    hf = 1e-4 * scale
    assert g.delta == pytest.approx(_central(lambda x: price(ff=x), f, hf), rel=1e-6, abs=1e-8)
    hg = 1e-3 * scale
    gamma_fd = (price(ff=f + hg) - 2.0 * price() + price(ff=f - hg)) / hg**2
    assert g.gamma == pytest.approx(gamma_fd, rel=1e-4, abs=1e-6 / scale)
    vega_fd = _central(lambda x: price(vv=x), v, 1e-5 * v) * 0.01
    assert g.vega == pytest.approx(vega_fd, rel=1e-6, abs=1e-9 * f)
    dt = 1e-5 * t
    theta_fd = -_central(lambda x: price(tt=x), t, dt) / 365.0
    assert g.theta == pytest.approx(theta_fd, rel=1e-5, abs=1e-9 * f)


@settings(max_examples=150, deadline=None)
@given(forwards, st.floats(-1.5, 1.5), st.floats(1.0 / 365.0, 3.0), st.floats(0.1, 3.0), st.booleans())
def test_premium_adjusted_delta_is_the_coin_value_sensitivity(
    f: float, k: float, t: float, v: float, is_call: bool
) -> None:
    # A coin-settled option is worth P/F coins; its delta in coin per unit of F move, times F, is
    # delta - P/F.
    strike = f * np.exp(k)
    g = black76_greeks(f, strike, t, v, is_call)

    def coin_value(ff: float) -> float:
        return float(black76_price(ff, strike, t, v, is_call)) / ff

    fd = f * _central(coin_value, f, 1e-4 * f * v * np.sqrt(t))
    assert g.delta_premium_adjusted == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert g.delta_premium_adjusted == pytest.approx(g.delta - g.price / f, rel=1e-15, abs=1e-15)


def test_arrays_broadcast_and_scalars_stay_scalars() -> None:
    scalar = black76_price(100.0, 100.0, 0.5, 0.5, True)
    assert np.ndim(scalar) == 0 and isinstance(float(scalar), float)
    grid = black76_price(100.0, np.array([[80.0], [100.0], [120.0]]), np.array([0.1, 1.0]), 0.6, True)
    assert grid.shape == (3, 2)
    assert np.all(np.diff(grid, axis=0) < 0)  # calls fall with the strike
    assert np.all(np.diff(grid, axis=1) > 0)  # and rise with time
    g = black76_greeks([100.0, 100.0], 100.0, 1.0, 0.5, [True, False])
    assert isinstance(g, Black76Greeks) and g.delta.shape == (2,)
    assert g.delta[0] - g.delta[1] == pytest.approx(1.0)


def test_expiry_zero_vol_and_bad_inputs() -> None:
    assert black76_price(120.0, 100.0, 0.0, 0.5, True) == 20.0
    assert black76_price(80.0, 100.0, -1.0, 0.5, False) == 20.0
    assert black76_price(120.0, 100.0, 1.0, 0.0, False) == 0.0
    g = black76_greeks([120.0, 80.0, 100.0], 100.0, 0.0, 0.5, True)
    np.testing.assert_array_equal(g.delta, [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(g.gamma, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(g.vega, [0.0, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bad = black76_price(
            [-1.0, 100.0, np.nan, 100.0], [100.0, 0.0, 100.0, 100.0], 1.0, [0.5, 0.5, 0.5, np.nan], True
        )
    assert np.isnan(bad).all()


def test_normalised_black_matches_lets_be_rational_in_every_region() -> None:
    lbr = pytest.importorskip("py_lets_be_rational.lets_be_rational")
    rng = np.random.default_rng(7)
    n = 4000
    x = -np.abs(rng.uniform(0.0, 30.0, n)) * rng.choice([1.0, 0.1, 1e-2, 1e-4], n)
    s = np.exp(rng.uniform(np.log(1e-5), np.log(20.0), n))
    ours = normalised_black_otm(x, s)
    ref = np.array([lbr.normalised_black_call(a, b) for a, b in zip(x, s, strict=True)])
    h = x / s
    regions = {
        "asymptotic": h < -10.0,
        "small t": (s < 0.42) & (h >= -10.0),
        "general": (s >= 0.42) & (h >= -10.0),
    }
    for name, mask in regions.items():
        live = mask & (ref > 1e-300)
        assert live.sum() > 50, name
        # 2e-14 relative: the small-t expansion inherits the conditioning of a = 1 + h Phi(h)/phi(h)
        # at h near -10 (prices below 1e-20 there); elsewhere agreement is a few ulp.
        rel = np.abs(ours[live] - ref[live]) / ref[live]
        assert rel.max() <= 2e-14, name
    vega_ref = np.array([lbr.normalised_vega(a, b) for a, b in zip(x, s, strict=True)])
    np.testing.assert_allclose(normalised_vega(x, s), vega_ref, rtol=1e-14, atol=0.0)
