"""The surface builder: quote vols on the real capture, a known SSVI surface, the seed method."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from quant import (
    DEFAULT_GRID,
    SEED_GRID,
    SEED_MONEYNESS,
    ChainInputs,
    IVReason,
    SurfaceGrid,
    black76_price,
    build_surface,
    seed_filter,
    svi_total_variance,
)
from quant.synthetic import synthetic_chain
from tests.support.fixtures_quant.deribit_tickers import capture_path, load_tickers

NOW_MS = 1_626_993_723_000


def _capture_chain(rows: np.ndarray | None = None) -> ChainInputs:
    t = load_tickers()
    sel = np.arange(len(t)) if rows is None else rows
    return ChainInputs(
        expiry_ms=t.expiry_ms[sel].astype(np.int64),
        strike=t.strike[sel],
        is_call=t.is_call[sel],
        bid=t.best_bid_price[sel],
        ask=t.best_ask_price[sel],
        mark=t.mark_price[sel],
        underlying_price=t.underlying_price[sel],
        index_price=float(t.index_price[sel][-1]),
    )


def _capture_bid_ask_iv() -> tuple[np.ndarray, np.ndarray]:
    frames = (json.loads(line).get("frame") or "" for line in capture_path().open())
    data = [json.loads(f)["params"]["data"] for f in frames if '"channel":"ticker.' in f]
    return np.array([d["bid_iv"] for d in data]), np.array([d["ask_iv"] for d in data])


def test_quote_vols_match_deribits_on_the_capture() -> None:
    # Each ticker carries its own timestamp; the years of a quote are measured from it, so build
    # one surface per distinct timestamp and compare every quote with Deribit's vols.
    bid_iv, ask_iv = _capture_bid_ask_iv()
    t = load_tickers()
    mark = np.full(len(t), np.nan)
    bid = np.full(len(t), np.nan)
    ask = np.full(len(t), np.nan)
    for ts in np.unique(t.timestamp_ms):
        sel = np.nonzero(t.timestamp_ms == ts)[0]
        q = build_surface(_capture_chain(sel), float(ts)).quotes
        mark[sel], bid[sel], ask[sel] = q.mark_iv, q.bid_iv, q.ask_iv
    assert np.median(np.abs(mark * 100.0 - t.mark_iv)) <= 0.01
    has_bid = t.best_bid_price > 0
    has_ask = t.best_ask_price > 0
    assert np.median(np.abs(bid * 100.0 - bid_iv)[has_bid]) <= 0.01
    assert np.median(np.abs(ask * 100.0 - ask_iv)[has_ask]) <= 0.01
    assert np.isnan(bid[~has_bid]).all()


def test_capture_surface_reports_why_quotes_have_no_vol() -> None:
    t = load_tickers()
    latest = np.array([max(i for i, n in enumerate(t.name) if n == name) for name in sorted(set(t.name))])
    chain = _capture_chain(latest)
    result = build_surface(chain, datetime.fromtimestamp(NOW_MS / 1000.0, tz=UTC))
    q = result.quotes
    no_bid = ~(chain.bid > 0)
    assert (q.bid_reason[no_bid] == IVReason.NO_QUOTE).all()
    assert (q.mid_reason[no_bid] == IVReason.NO_QUOTE).all()
    assert np.isfinite(q.mark_iv).all()
    # Ten instruments over several expiries: too few quotes to fit, so every smile is the
    # arbitrage-free fallback (eSSVI slice from the neighbours, or flat), with a note.
    assert all(e.method == "essvi" and e.notes and e.butterfly_ok and e.calendar_ok for e in result.expiries)
    assert result.arbitrage_free
    assert result.iv.shape == (len(DEFAULT_GRID.tenor_days), len(DEFAULT_GRID.log_moneyness))
    assert np.isfinite(result.iv).all()


def test_seed_filter() -> None:
    strike = np.array([80.0, 80.0, 100.0, 100.0, 120.0, 120.0, 120.0])
    is_call = np.array([True, False, True, False, True, False, True])
    bid = np.array([21.0, 1.0, 5.0, 5.0, 1.0, 20.0, 0.0])
    ask = np.array([22.0, 1.2, 5.5, 5.5, 1.2, 21.0, np.nan])
    keep = seed_filter(strike, is_call, bid, ask, 100.0)
    # ITM call 80 dropped, OTM put 80 kept, ATM: call kept and put dropped, OTM call 120 kept, ITM
    # put 120 dropped, and a call with neither bid nor ask dropped.
    np.testing.assert_array_equal(keep, [False, True, True, False, True, False, False])


def _true_iv(params: np.ndarray, years: np.ndarray, tau: float, k: float) -> float:
    """The reference surface, scalar by scalar: total variance linear in time, flat vol outside."""
    w = [float(svi_total_variance(p, k)) for p in params]
    if tau <= years[0]:
        return math.sqrt(w[0] / years[0])
    if tau >= years[-1]:
        return math.sqrt(w[-1] / years[-1])
    i = int(np.searchsorted(years, tau))
    frac = (tau - years[i - 1]) / (years[i] - years[i - 1])
    return math.sqrt((w[i - 1] + frac * (w[i] - w[i - 1])) / tau)


def _true_delta_vol(params: np.ndarray, years: np.ndarray, tau: float, target: float) -> float:
    """Vol at the strike where the forward call delta is ``target``, by bisection on k."""
    lo, hi = -5.0, 5.0
    for _ in range(200):
        k = 0.5 * (lo + hi)
        vol = _true_iv(params, years, tau, k)
        d1 = (-k + 0.5 * vol * vol * tau) / (vol * math.sqrt(tau))
        if 0.5 * math.erfc(-d1 / math.sqrt(2.0)) > target:
            lo = k
        else:
            hi = k
    return _true_iv(params, years, tau, 0.5 * (lo + hi))


@pytest.fixture(scope="module")
def exact_chain() -> tuple[ChainInputs, np.ndarray, np.ndarray]:
    # Quotes a hair either side of the SSVI price: the fitted smiles must be the true ones.
    return synthetic_chain(now_ms=NOW_MS, tick=1e-9, spread_fraction=1e-6)


def test_svi_surface_of_an_ssvi_chain_is_the_true_surface(exact_chain) -> None:
    chain, years, params = exact_chain
    result = build_surface(chain, NOW_MS, method="svi")
    assert len(result.expiries) == 20
    # The first and last expiries take the eSSVI slice (it anchors the arbitrage-free extrapolation).
    assert [e.method for e in result.expiries] == ["essvi"] + ["svi"] * 18 + ["essvi"]
    assert all(e.butterfly_ok and e.calendar_ok for e in result.expiries) and result.arbitrage_free
    assert max(e.rmse_vol_points for e in result.expiries[1:-1]) < 0.01
    for e, fit in enumerate(result.expiries):
        assert fit.years == pytest.approx(years[e])
        if fit.method == "svi":
            assert np.allclose(fit.params.as_array(), params[e], atol=2e-4)
    truth = np.array([[_true_iv(params, years, d / 365.0, k) for k in result.log_moneyness] for d in result.tenor_days])
    inside = (result.tenor_days / 365.0 > years[1]) & (result.tenor_days / 365.0 < years[-2])
    assert np.max(np.abs(result.iv - truth)[inside]) < 1e-4
    assert np.max(np.abs(result.iv - truth)) < 5e-3  # eSSVI slices at the ends, eSSVI extrapolation
    atm = np.array([_true_iv(params, years, d / 365.0, 0.0) for d in result.tenor_days])
    np.testing.assert_allclose(result.atm_iv[inside], atm[inside], atol=1e-4)
    np.testing.assert_allclose(result.atm_iv, atm, atol=5e-3)
    for j, d in enumerate(result.tenor_days):
        call25 = _true_delta_vol(params, years, d / 365.0, 0.25)
        put25 = _true_delta_vol(params, years, d / 365.0, 0.75)  # put delta -0.25 = call delta 0.75
        tol = 2e-4 if inside[j] else 2e-3
        assert result.rr25[j] == pytest.approx(call25 - put25, abs=tol)
        assert result.bf25[j] == pytest.approx(0.5 * (call25 + put25) - atm[j], abs=tol)
    assert np.all(result.rr25 < 0)  # rho < 0: puts over calls
    assert result.quotes.fitted.sum() > 700  # the out-of-the-money half of 1,500 quotes
    # SSVI has no calendar arbitrage: total variance rises with the tenor at every moneyness.
    w = result.iv**2 * result.tenor_days[:, None]
    assert np.all(np.diff(w, axis=0) > 0)


def test_variance_index_of_the_ssvi_chain_is_close_to_its_30_day_vol(exact_chain) -> None:
    chain, years, params = exact_chain
    result = build_surface(chain, NOW_MS)
    vix = result.variance_index
    assert vix.near.years <= 30 / 365 < vix.next.years
    atm30 = _true_iv(params, years, 30 / 365, 0.0)
    # A model-free variance exceeds the ATM variance of a skewed, convex smile, by a few points.
    assert 100 * atm30 < vix.value < 100 * atm30 + 10


def test_seed_method_interpolates_vols_linearly_in_moneyness_then_maturity() -> None:
    chain, years, _ = synthetic_chain(now_ms=NOW_MS, tick=1e-9, spread_fraction=1e-6, n_expiries=6, n_quotes=300)
    # Tenors that hit expiries exactly, one between two expiries, and two outside the listed range.
    days = years * 365.0
    tenors = (days[0] / 2, days[1], 0.5 * (days[2] + days[3]), days[4], days[-1] * 2)
    result = build_surface(chain, NOW_MS, grid=SurfaceGrid.seed(tenor_days=tenors), method="linear")
    assert result.log_moneyness == pytest.approx(np.log(SEED_MONEYNESS))
    q = result.quotes
    quote_iv = np.where(np.isfinite(q.mid_iv), q.mid_iv, q.mark_iv)

    def expiry_smile(e: int) -> np.ndarray:
        sel = q.kept & (chain.expiry_ms == np.unique(chain.expiry_ms)[e])
        m = chain.strike[sel] / q.forward[sel]
        order = np.argsort(m)
        return np.interp(SEED_MONEYNESS, m[order], quote_iv[sel][order])

    np.testing.assert_allclose(result.iv[0], expiry_smile(0), rtol=1e-12)  # flat before the first
    np.testing.assert_allclose(result.iv[1], expiry_smile(1), rtol=1e-9)
    np.testing.assert_allclose(result.iv[2], 0.5 * (expiry_smile(2) + expiry_smile(3)), rtol=1e-9)
    np.testing.assert_allclose(result.iv[3], expiry_smile(4), rtol=1e-9)
    np.testing.assert_allclose(result.iv[4], expiry_smile(5), rtol=1e-12)  # flat after the last
    assert all(e.method == "linear" and e.params is None for e in result.expiries)
    assert SEED_GRID.log_moneyness == tuple(result.log_moneyness.tolist())


def test_calendar_arbitrage_is_reported_and_repaired() -> None:
    chain, years, params = synthetic_chain(now_ms=NOW_MS, tick=1e-9, spread_fraction=1e-6, n_expiries=4, n_quotes=240)
    # Reprice the third expiry with 60% of the second expiry's total variance at every moneyness.
    third = chain.expiry_ms == np.unique(chain.expiry_ms)[2]
    f = chain.underlying_price
    w_low = 0.6 * svi_total_variance(params[1], np.log(chain.strike / f))
    low = np.asarray(black76_price(f, chain.strike, years[2], np.sqrt(w_low / years[2]), chain.is_call)) / f
    mark = np.where(third, low, chain.mark)
    cheap = ChainInputs(
        expiry_ms=chain.expiry_ms,
        strike=chain.strike,
        is_call=chain.is_call,
        bid=mark * (1 - 1e-6),
        ask=mark * (1 + 1e-6),
        mark=mark,
        underlying_price=f,
    )
    tenors = (years[1] * 365.0, years[2] * 365.0, years[3] * 365.0)
    for method in ("essvi", "svi", "linear"):
        result = build_surface(cheap, NOW_MS, grid=SurfaceGrid(tenor_days=tenors), method=method)
        assert any("calendar" in note for note in result.expiries[2].notes)
        assert any("calendar" in note for note in result.notes)
        w = result.iv**2 * result.tenor_days[:, None]
        if method != "linear":
            # Arbitrage-free by construction: the recorded surface never decreases in maturity.
            assert all(e.calendar_ok for e in result.expiries) and result.arbitrage_free
            assert np.all(np.diff(w, axis=0) >= -1e-12)
        else:
            assert [e.calendar_ok for e in result.expiries] == [True, True, False, True]
            assert "kept (seed method)" in result.expiries[2].notes[-1]
            assert np.any(np.diff(w, axis=0) < 0)  # the seed's method keeps what the quotes say


def test_grid_points_and_bad_arguments(exact_chain) -> None:
    chain, _, _ = exact_chain
    result = build_surface(chain, NOW_MS)
    points = result.grid_points()
    assert len(points) == result.iv.size
    assert points[0] == (result.tenor_days[0], result.log_moneyness[0], result.iv[0, 0])
    with pytest.raises(ValueError):
        build_surface(chain, NOW_MS, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_surface(chain, datetime(2021, 7, 22))
    with pytest.raises(ValueError):
        ChainInputs(expiry_ms=[1], strike=[1.0, 2.0], is_call=[True], bid=[0], ask=[0], mark=[0], underlying_price=[1])


def test_expired_and_empty_chains() -> None:
    chain, _, _ = synthetic_chain(now_ms=NOW_MS, n_expiries=3, n_quotes=120)
    later = int(chain.expiry_ms.max()) + 1
    result = build_surface(chain, later)
    assert result.expiries == () and np.isnan(result.iv).all()
    assert "no usable quotes" in result.notes
    assert np.isnan(result.variance_index.value)
