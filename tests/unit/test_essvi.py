"""The eSSVI surface: arbitrage-free by construction for any input, the fallback too, and stable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import build_surface, butterfly_g, svi_total_variance
from quant.essvi import (
    ESSVISurface,
    butterfly_params_ok,
    calendar_pair_ok,
    essvi_total_variance,
    fit_essvi,
    flat_slice,
    psi_bound,
)
from quant.surface import MS_PER_YEAR
from quant.synthetic import essvi_chain, essvi_test_surface, expiries_ms
from tests.support.fixtures_quant.deribit_tickers import load_tickers
from tests.support.surface_chains import raw_svi_chain, simulator_chains, violations

NOW_MS = 1_626_993_723_000
VOGT = (-0.041, 0.1331, 0.306, 0.3586, 0.4153)  # Gatheral-Jacquier example 3.1: butterfly arbitrage
UNREPAIRABLE = (0.002, 0.6, 0.0, 0.0, 0.05)  # issue 19: no arbitrage-free SVI near it; was linear


def _dense_check(surface: ESSVISurface) -> tuple[float, float, float]:
    """(min g, min calendar step, max wing slope) on k in [-6, 6] and maturities 1 h .. 3 y, by finite
    differences of the surface itself (not of the parameters)."""
    k = np.linspace(-6.0, 6.0, 2401)
    tau = np.unique(np.concatenate((np.geomspace(1 / 8760, 3.0, 90), surface.years)))
    w = surface.total_variance(tau[:, None], k[None, :])
    h = k[1] - k[0]
    w1 = (w[:, 2:] - w[:, :-2]) / (2 * h)
    w2 = (w[:, 2:] - 2 * w[:, 1:-1] + w[:, :-2]) / (h * h)
    km, wm = k[1:-1], w[:, 1:-1]
    g = (1 - km * w1 / (2 * wm)) ** 2 - w1**2 / 4 * (1 / wm + 0.25) + w2 / 2
    slope = (surface.psi * (1 + np.abs(surface.rho))).max() / 2
    return float(g.min()), float(np.diff(w, axis=0).min()), float(slope)


# --- the conditions ---------------------------------------------------------------------------------


@st.composite
def valid_nodes(draw: st.DrawFn) -> ESSVISurface:
    """Random nodes built to satisfy the conditions (psi at any fraction of its room, rho anywhere)."""
    n = draw(st.integers(1, 8))
    years = np.cumsum([draw(st.floats(0.5 / 365, 0.5)) for _ in range(n)])
    theta, rho, psi = [], [], []
    th = draw(st.floats(1e-5, 0.3)) * years[0] / years[0]
    r = draw(st.floats(-0.97, 0.97))
    p = draw(st.floats(0.0, 1.0)) * float(psi_bound(th, r))
    for i in range(n):
        if i:
            th = th * (1 + draw(st.floats(0.0, 2.0)))
            # New (p, q) at least the old ones, phi no larger, psi within the bound: draw, then shrink
            # towards the old shape (always feasible) until it holds.
            p_old, q_old = p * (1 + r), p * (1 - r)
            p_new = p_old + draw(st.floats(0.0, 1.0))
            q_new = q_old + draw(st.floats(0.0, 1.0))
            for s in np.linspace(1.0, 0.0, 41):
                pp, qq = p_old + s * (p_new - p_old), q_old + s * (q_new - q_old)
                cand_p = 0.5 * (pp + qq)
                cand_r = (pp - qq) / (pp + qq) if pp + qq > 0 else r
                if butterfly_params_ok(th, cand_r, cand_p) and calendar_pair_ok(theta[-1], rho[-1], psi[-1], th,
                                                                               cand_r, cand_p):
                    p, r = cand_p, cand_r
                    break
        theta.append(th)
        rho.append(r)
        psi.append(p)
    return ESSVISurface(years=years, theta=np.array(theta), rho=np.array(rho), psi=np.array(psi))


@settings(max_examples=150, deadline=None)
@given(valid_nodes())
def test_nodes_meeting_the_conditions_give_an_arbitrage_free_surface_everywhere(surface: ESSVISurface) -> None:
    report = surface.check()
    assert report.ok, report
    assert report.check_k_min <= -4.0 and report.check_k_max >= 4.0
    min_g, min_step, slope = _dense_check(surface)
    assert min_g >= -1e-6 and min_step >= -1e-12 and slope <= 2.0


def test_the_wing_condition_alone_lets_slices_cross() -> None:
    # Why phi must not rise: p and q non-decreasing, theta up, yet the later smile dips below.
    t0, r0, p0 = 0.9174, 0.0566, 0.9187
    t1, r1, p1 = 0.9900, -0.2500, 1.2943
    k = np.linspace(-3, 3, 601)
    assert p1 * (1 + r1) >= p0 * (1 + r0) - 1e-3 and p1 * (1 - r1) >= p0 * (1 - r0)
    assert (essvi_total_variance(t1, r1, p1, k) - essvi_total_variance(t0, r0, p0, k)).min() < -0.1
    assert not calendar_pair_ok(t0, r0, p0, t1, r1, p1)


# --- the fit, on anything ---------------------------------------------------------------------------


@st.composite
def hostile_chains(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Padded (k, w, weight) and years of 1-8 expiries: any number of quotes (0 to 30), any shape
    (random raw SVI, arbitrageable or not, noise up to 50%, total variance falling with maturity),
    any weights."""
    n_e = draw(st.integers(1, 8))
    width = 30
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    years = np.sort(rng.uniform(0.5 / 365, 2.0, n_e))
    k = np.zeros((n_e, width))
    w = np.zeros((n_e, width))
    om = np.zeros((n_e, width))
    for e in range(n_e):
        n = int(rng.integers(0, width + 1))
        a, b = rng.uniform(-0.05, 0.3), rng.uniform(0.0, 1.5)
        rho, m, sig = rng.uniform(-0.99, 0.99), rng.uniform(-0.5, 0.5), rng.uniform(0.001, 0.8)
        kk = np.sort(rng.uniform(-3.0, 3.0, n)) * rng.uniform(0.05, 1.0)
        ww = a + b * (rho * (kk - m) + np.sqrt((kk - m) ** 2 + sig**2))
        ww = np.abs(ww * (1 + rng.uniform(-0.5, 0.5, n) * rng.uniform(0, 1))) + 1e-6
        k[e, :n], w[e, :n], om[e, :n] = kk, ww, rng.uniform(0.0, 1.0, n) ** rng.uniform(0, 4)
    return k, w, om, years


@settings(max_examples=120, deadline=None)
@given(hostile_chains(), st.booleans())
def test_any_fit_is_arbitrage_free(chain: tuple[np.ndarray, ...], with_previous: bool) -> None:
    k, w, om, years = chain
    previous = None
    if with_previous:
        rng = np.random.default_rng(int(years.size))
        previous = np.column_stack((rng.uniform(1e-4, 0.5, years.size), rng.uniform(-0.9, 0.9, years.size),
                                    rng.uniform(0.01, 1.0, years.size)))
    fit = fit_essvi(k, w, om, years, previous=previous)
    s = fit.surface
    assert np.all(np.isfinite(s.theta)) and np.all(s.theta > 0) and np.all(s.psi >= 0)
    assert butterfly_params_ok(s.theta, s.rho, s.psi).all()
    assert calendar_pair_ok(s.theta[:-1], s.rho[:-1], s.psi[:-1], s.theta[1:], s.rho[1:], s.psi[1:]).all()
    report = s.check(k[om > 0])
    assert report.ok, report
    min_g, min_step, slope = _dense_check(s)
    assert min_g >= -1e-6 and min_step >= -1e-12 and slope <= 2.0
    # Every slice is a raw SVI smile: g(k) of those parameters (svi.py's own formula) on [-4, 4].
    assert min(butterfly_g(p, np.linspace(-4, 4, 801)).min() for p in s.raw_svi()) >= -1e-9


def test_fallback_is_a_flat_arbitrage_free_slice() -> None:
    th, r, p = flat_slice(0.04)
    assert (th, r) == (0.04, 0.0) and 0 < p <= psi_bound(0.04, 0.0)
    # Too few quotes everywhere: flat smiles on the running maximum of the ATM variances.
    k = np.array([[0.0, 0.1], [0.0, 0.0], [0.05, 0.0]])
    w = np.array([[0.02, 0.021], [0.01, 0.0], [0.05, 0.0]])
    om = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    fit = fit_essvi(k, w, om, np.array([0.05, 0.1, 0.2]))
    assert fit.fallback.all()
    assert np.all(np.diff(fit.surface.theta) >= 0) and np.all(fit.surface.rho == 0)
    assert fit.surface.check().ok


def test_fallbacks_past_the_last_fit_keep_theta_rising() -> None:
    # Found by hypothesis: two thin expiries after the last fitted one, the first with a high ATM
    # variance, the second with a low one; the second must not fall below the first.
    k = np.zeros((3, 11))
    w = np.zeros((3, 11))
    om = np.zeros((3, 11))
    k[0] = np.linspace(-1.7, 1.6, 11)
    w[0] = 0.9 + 0.3 * k[0] ** 2
    om[0] = 1.0
    k[1, 0], w[1, 0], om[1, 0] = 0.1, 3.7, 1.0
    k[2, 0], w[2, 0], om[2, 0] = -0.3, 0.5, 1.0
    fit = fit_essvi(k, w, om, np.array([0.5, 1.0, 1.5]))
    s = fit.surface
    assert fit.fallback.tolist() == [False, True, True]
    assert calendar_pair_ok(s.theta[:-1], s.rho[:-1], s.psi[:-1], s.theta[1:], s.rho[1:], s.psi[1:]).all()
    assert s.check().ok


def test_a_known_surface_is_recovered_from_exact_quotes() -> None:
    expiry = expiries_ms(NOW_MS, 12)
    truth = essvi_test_surface((expiry - NOW_MS) / MS_PER_YEAR)
    chain = essvi_chain(truth, now_ms=NOW_MS, expiry_ms=expiry, n_quotes=900, tick=1e-9, spread_fraction=1e-6,
                        noise=0.0)
    result = build_surface(chain, NOW_MS)
    assert result.method == "essvi" and result.arbitrage_free
    got = np.array([e.essvi for e in result.expiries])
    np.testing.assert_allclose(got[:, 0], truth.theta, rtol=1e-4)
    np.testing.assert_allclose(got[:, 1], truth.rho, atol=1e-3)
    np.testing.assert_allclose(got[:, 2], truth.psi, rtol=1e-3)
    want = truth.implied_vol(result.tenor_days[:, None] / 365.0, result.log_moneyness[None, :])
    assert np.max(np.abs(result.iv - want)) < 1e-4


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["essvi", "svi"]))
def test_random_chains_give_arbitrage_free_records(seed: int, method: str) -> None:
    # Random raw-SVI smiles per expiry (arbitrageable or not, unrelated across expiries), random
    # strikes, spreads and empty sides: whatever the quotes, the record is arbitrage-free.
    from quant import ChainInputs, black76_price

    rng = np.random.default_rng(seed)
    n_e = int(rng.integers(1, 10))
    expiry = np.sort(rng.choice(np.arange(1, 400), n_e, replace=False)) * 86_400_000 + NOW_MS
    cols = []
    for e in range(n_e):
        t = (expiry[e] - NOW_MS) / MS_PER_YEAR
        n = int(rng.integers(1, 40))
        k = np.sort(rng.uniform(-2.5, 1.5, n)) * min(1.0, np.sqrt(t) * 2)
        a, b = rng.uniform(0.0, 0.1) * t * 4, rng.uniform(0.01, 0.6) * np.sqrt(t)
        raw = np.array([a, b, rng.uniform(-0.9, 0.9), rng.uniform(-0.3, 0.3), rng.uniform(0.01, 0.5)])
        iv = np.sqrt(np.maximum(np.asarray(svi_total_variance(raw, k)), 1e-4 * t) / t)
        strikes = 30_000.0 * np.exp(k)
        for is_call in (True, False):
            mark = np.asarray(black76_price(30_000.0, strikes, t, iv, is_call)) / 30_000.0
            spread = mark * rng.uniform(0.0, 0.3, n) + 0.0005
            bid = np.where(rng.uniform(size=n) < 0.2, 0.0, mark - spread / 2)
            cols.append((np.full(n, expiry[e]), strikes, np.full(n, is_call), bid, mark + spread / 2, mark))
    exp_ms, strike, call, bid, ask, mark = (np.concatenate([c[i] for c in cols]) for i in range(6))
    chain = ChainInputs(expiry_ms=exp_ms.astype(np.int64), strike=strike, is_call=call, bid=bid, ask=ask, mark=mark,
                        underlying_price=np.full(strike.size, 30_000.0))
    result = build_surface(chain, NOW_MS, method=method)  # type: ignore[arg-type]
    assert result.arbitrage_free, result.notes
    assert violations(result, np.log(strike / 30_000.0)).total == 0


# --- the smiles, the simulator, the capture ------------------------------------------------


@pytest.mark.parametrize("method", ["essvi", "svi"])
@pytest.mark.parametrize(("raw", "years"), [(VOGT, 1.0), (UNREPAIRABLE, 28 / 365)], ids=["vogt", "unrepairable"])
def test_arbitrageable_smiles_give_an_arbitrage_free_record(raw: tuple[float, ...], years: float, method: str) -> None:
    chain = raw_svi_chain(raw, years, NOW_MS)
    k = np.linspace(-4, 4, 801)
    assert butterfly_g(np.array(raw), k).min() < 0  # the input has butterfly arbitrage
    result = build_surface(chain, NOW_MS, method=method)  # type: ignore[arg-type]
    assert result.arbitrage_free
    assert all(e.butterfly_ok and e.calendar_ok and e.method in ("essvi", "svi") for e in result.expiries)
    found = violations(result, np.log(chain.strike / chain.underlying_price))
    assert found.total == 0, found
    assert result.expiries[0].check_k_min <= -4.0 and result.expiries[0].check_k_max >= 4.0


@pytest.mark.parametrize("method", ["essvi", "svi"])
@pytest.mark.parametrize("currency", ["BTC", "ETH"])
def test_simulator_minutes_fit_with_zero_violations(currency: str, method: str) -> None:
    previous = None
    for now_ms, chain in simulator_chains(currency, minutes=3):
        result = build_surface(chain, now_ms, method=method, previous=previous)  # type: ignore[arg-type]
        assert result.arbitrage_free, result.notes
        found = violations(result, np.log(chain.strike / chain.underlying_price))
        assert found.total == 0, found
        assert found.k_min <= -4.0 and found.k_max >= 4.0
        previous = result


def test_capture_smiles_fit_with_zero_violations() -> None:
    t = load_tickers()
    from quant import ChainInputs

    for ts in np.unique(t.timestamp_ms)[:: max(1, len(np.unique(t.timestamp_ms)) // 20)]:
        sel = t.timestamp_ms <= ts
        chain = ChainInputs(expiry_ms=t.expiry_ms[sel].astype(np.int64), strike=t.strike[sel],
                            is_call=t.is_call[sel], bid=t.best_bid_price[sel], ask=t.best_ask_price[sel],
                            mark=t.mark_price[sel], underlying_price=t.underlying_price[sel])
        for method in ("essvi", "svi"):
            result = build_surface(chain, float(ts), method=method)  # type: ignore[arg-type]
            if not result.expiries:
                continue
            assert result.arbitrage_free
            assert violations(result, np.log(chain.strike / chain.underlying_price)).total == 0


def test_linear_is_kept_for_comparison_and_says_it_is_not_arbitrage_free() -> None:
    chain = raw_svi_chain(UNREPAIRABLE, 28 / 365, NOW_MS)
    result = build_surface(chain, NOW_MS, method="linear")
    assert not result.arbitrage_free
    assert any("not arbitrage-free" in n for n in result.notes)


# --- stability ---------------------------------------------------------------------------------------


def test_a_thin_expiry_is_held_by_its_previous_minute() -> None:
    expiry = expiries_ms(NOW_MS, 6)
    years = (expiry - NOW_MS) / MS_PER_YEAR
    truth = essvi_test_surface(years)
    n = 40
    k = np.stack([np.linspace(-3.5, 2.5, n) * np.sqrt(t) for t in truth.theta])
    w = truth.total_variance(years[:, None], k)
    om = np.ones_like(k)
    first = fit_essvi(k, w, om, years)
    previous = np.column_stack((first.surface.theta, first.surface.rho, first.surface.psi))
    # Next minute expiry 3 keeps 6 quotes, each off by up to 8% in total variance (stale prints).
    rng = np.random.default_rng(11)
    om2 = om.copy()
    om2[3] = 0.0
    om2[3, rng.choice(n, 6, replace=False)] = 1.0
    w2 = w.copy()
    w2[3] *= 1 + rng.uniform(-0.08, 0.08, n)
    free = fit_essvi(k, w2, om2, years, n_thin=0)
    held = fit_essvi(k, w2, om2, years, previous=previous)
    neighbours = fit_essvi(k, w2, om2, years)
    assert held.regularised[3] and neighbours.regularised[3] and not free.regularised.any()

    def move(fit: object) -> float:
        s = fit.surface  # type: ignore[attr-defined]
        return abs(s.rho[3] - first.surface.rho[3]) / 0.1 + abs(np.log(s.psi[3] / first.surface.psi[3])) / 0.15

    assert move(free) > 0.2  # the prints do move a free fit
    assert move(held) < 0.5 * move(free)
    # Without a previous minute the pull is towards the neighbours' interpolation (not the truth).
    assert move(neighbours) < 1.0
    for fit in (free, held, neighbours):
        assert fit.surface.check().ok


def test_build_surface_takes_the_previous_minute_by_result_or_by_expiry() -> None:
    expiry = expiries_ms(NOW_MS, 8)
    truth = essvi_test_surface((expiry - NOW_MS) / MS_PER_YEAR)
    chain = essvi_chain(truth, now_ms=NOW_MS, expiry_ms=expiry, n_quotes=640, noise=0.0)
    first = build_surface(chain, NOW_MS)
    thin = expiry[3]
    keep = (chain.expiry_ms != thin) | (np.arange(len(chain)) % 4 == 0)
    from quant import ChainInputs

    moved = ChainInputs(expiry_ms=chain.expiry_ms[keep], strike=chain.strike[keep], is_call=chain.is_call[keep],
                        bid=chain.bid[keep], ask=chain.ask[keep], mark=chain.mark[keep],
                        underlying_price=chain.underlying_price[keep])
    held = build_surface(moved, NOW_MS + 60_000, previous=first)
    assert held.arbitrage_free
    assert any("previous minute" in n for n in held.expiries[3].notes)
    by_ms = {e.expiry_ms: e.essvi for e in first.expiries if e.essvi is not None}
    again = build_surface(moved, NOW_MS + 60_000, previous=by_ms)
    assert again.expiries[3].essvi == held.expiries[3].essvi
    # ... or as the recorded raw-SVI parameters of the eSSVI fits (what SmileFit.parameters holds).
    raw = {e.expiry_ms: tuple(e.params.as_array()) for e in first.expiries if e.params is not None}
    recorded = build_surface(moved, NOW_MS + 60_000, previous=raw)
    np.testing.assert_allclose(recorded.expiries[3].essvi, held.expiries[3].essvi, rtol=1e-6, atol=1e-9)
    free = build_surface(moved, NOW_MS + 60_000)
    assert any("neighbours" in n for n in free.expiries[3].notes)
