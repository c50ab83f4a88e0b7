"""Raw SVI: the density factor g(k), recovery of arbitrage-free smiles, repair of arbitrage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quant import SVIParams, black76_price, butterfly_g, fit_svi, fit_svi_slices, svi_total_variance
from quant.svi import wing_slope
from quant.synthetic import ssvi_raw_params

# Axel Vogt's raw SVI smile (Gatheral and Jacquier 2014, example 3.1): butterfly arbitrage near k = 0.9.
VOGT = np.array([-0.0410, 0.1331, 0.3060, 0.3586, 0.4153])  # a, b, rho, m, sigma; T = 1


def test_g_is_the_density_of_log_moneyness() -> None:
    # Breeden-Litzenberger: d2C/dK2 = p(K); Gatheral-Jacquier: the density of k = ln(K/F) is
    # g(k)/sqrt(2 pi w) exp(-d2^2/2), d2 = -k/sqrt(w) - sqrt(w)/2, so p(K) = that / K (F = 1).
    params = np.array([0.02, 0.15, -0.4, 0.05, 0.25])
    k = np.linspace(-0.8, 0.8, 33)
    strikes = np.exp(k)

    def call(kk: np.ndarray) -> np.ndarray:
        w = svi_total_variance(params, np.log(kk))
        return np.asarray(black76_price(1.0, kk, 1.0, np.sqrt(w), True))

    h = 1e-4
    density_fd = (call(strikes + h) - 2.0 * call(strikes) + call(strikes - h)) / h**2
    w = svi_total_variance(params, k)
    d2 = -k / np.sqrt(w) - 0.5 * np.sqrt(w)
    density = butterfly_g(params, k) / np.sqrt(2.0 * np.pi * w) * np.exp(-0.5 * d2 * d2) / strikes
    np.testing.assert_allclose(density, density_fd, rtol=1e-5, atol=1e-7)


def test_vogts_smile_has_butterfly_arbitrage() -> None:
    k = np.linspace(-1.5, 1.5, 601)
    g = butterfly_g(VOGT, k)
    assert g.min() < -0.03
    assert 0.7 < k[np.argmin(g)] < 1.1
    assert (butterfly_g(np.array([0.04, 0.0, 0.0, 0.0, 0.1]), k) == 1.0).all()  # flat smile: g = 1


def _arbitrage_free(params: np.ndarray) -> bool:
    k = np.linspace(-3.0, 3.0, 1201)
    return bool(butterfly_g(params, k).min() > 1e-6 and wing_slope(params) < 2.0)


svi_params = st.tuples(
    st.floats(0.0, 0.05),  # a
    st.floats(0.02, 0.6),  # b
    st.floats(-0.8, 0.6),  # rho
    st.floats(-0.2, 0.2),  # m
    st.floats(0.05, 0.6),  # sigma
)


@settings(max_examples=40, deadline=None)
@given(svi_params, st.floats(0.02, 2.0), st.integers(10, 60), st.integers(0, 2**32 - 1))
def test_fit_recovers_an_arbitrage_free_smile(raw: tuple[float, ...], years: float, n: int, seed: int) -> None:
    params = np.array(raw)
    assume(_arbitrage_free(params))
    rng = np.random.default_rng(seed)
    # Quotes across the smile, as a chain has them (a one-sided sample leaves the smile unidentified).
    k = np.linspace(-0.8, 0.6, n) + rng.uniform(-0.3, 0.3, n) * 1.4 / n
    iv = np.sqrt(svi_total_variance(params, k) / years)
    fitted, rmse, ok = fit_svi(k, iv, years, weight=rng.uniform(0.5, 2.0, n))
    assert ok
    model = fitted.implied_vol(k, years)
    assert np.max(np.abs(model - iv)) <= 1e-7
    assert rmse <= 1e-5
    # The smile, not only the quotes: within the quoted range the fit is the true curve.
    dense = np.linspace(k[0], k[-1], 200)
    assert np.max(np.abs(fitted.implied_vol(dense, years) - np.sqrt(svi_total_variance(params, dense) / years))) <= 1e-6


def test_batched_fits_of_an_ssvi_surface_recover_every_slice() -> None:
    years = np.geomspace(2.0 / 365.0, 1.0, 20)
    theta = (0.9 - 0.15 * np.log1p(years)) ** 2 * years
    truth = ssvi_raw_params(theta, rho=-0.3, eta=1.0, gamma=0.45)
    rng = np.random.default_rng(4)
    n = 70
    k = np.sort(rng.uniform(-1.0, 0.8, (20, n)), axis=1) * np.sqrt(theta)[:, None] * 3.0
    w = svi_total_variance(truth, k)
    weight = np.ones_like(k)
    weight[:, -10:] = 0.0  # padding: ignored
    k[:, -10:] = 99.0
    fits = fit_svi_slices(k, w, weight, years)
    assert fits.butterfly_ok.all() and not fits.repaired.any()
    used = weight > 0
    model = svi_total_variance(fits.params, np.where(used, k, 0.0))
    err = np.abs(np.sqrt(model / years[:, None]) - np.sqrt(np.where(used, w, model) / years[:, None]))
    assert err[used].max() <= 1e-8
    assert fits.rmse_vol_points.max() <= 1e-6
    np.testing.assert_allclose(fits.params[:, 2], truth[:, 2], atol=1e-5)  # rho


def test_noisy_smile_is_fitted_within_its_noise_and_rmse_is_in_vol_points() -> None:
    params = np.array([0.01, 0.2, -0.3, 0.0, 0.3])
    years = 0.25
    rng = np.random.default_rng(9)
    k = np.linspace(-0.7, 0.5, 40)
    truth = np.sqrt(svi_total_variance(params, k) / years)
    noisy = truth + rng.normal(0.0, 0.002, k.size)  # 0.2 vol points of noise
    fitted, rmse, ok = fit_svi(k, noisy, years)
    model = fitted.implied_vol(k, years)
    assert ok
    assert rmse == pytest.approx(100.0 * np.sqrt(np.mean((model - noisy) ** 2)), rel=1e-9)
    assert 0.1 < rmse < 0.3
    assert np.max(np.abs(model - truth)) < 0.002


def test_a_smile_with_butterfly_arbitrage_is_repaired() -> None:
    k = np.linspace(-0.9, 1.4, 60)
    w = svi_total_variance(VOGT, k)
    fits = fit_svi_slices(k[None, :], w[None, :], np.ones((1, k.size)), np.array([1.0]))
    # The best fit is Vogt's own smile, arbitrage and all: the repaired fit is free of it and
    # still close to the quotes.
    assert fits.repaired[0] and fits.butterfly_ok[0]
    assert fits.min_g[0] >= 0.0
    assert butterfly_g(fits.params[0], np.linspace(-1.5, 1.5, 301)).min() >= 0.0
    assert 0.0 < fits.rmse_vol_points[0] < 2.0


def test_too_few_quotes_give_no_fit() -> None:
    fits = fit_svi_slices(
        np.array([[-0.1, 0.0, 0.1, 0.0]]), np.array([[0.05, 0.04, 0.05, 0.0]]), np.array([[1, 1, 1, 0]]), [0.5]
    )
    assert np.isnan(fits.params).all() and not fits.butterfly_ok[0]


def test_params_round_trip() -> None:
    p = SVIParams(a=0.01, b=0.2, rho=-0.3, m=0.05, sigma=0.2)
    assert SVIParams.from_array(p.as_array()) == p
    assert p.total_variance(0.05) == pytest.approx(0.01 + 0.2 * 0.2)
    assert p.implied_vol(np.array([0.05]), 0.25)[0] == pytest.approx(np.sqrt(0.05 / 0.25))
