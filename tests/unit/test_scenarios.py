"""Scenario grids (desk.scenarios): against an independent repricing written here (Black-76 with
math.erf, raw SVI by its formula), the risk module's greeks as small-move limits, and hostile specs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desk.risk import OptionMark, currency_risk
from desk.scenarios import MIN_VOL, ScenarioSpec, Sticky, scenario_grid
from messages.account import Position
from messages.market import Instrument
from messages.state import PortfolioChanged
from messages.surface import SmileFit, SurfaceSnapshot

NOW = 1_700_000_000.0
DAY_MS = 86_400_000
INDEX = 40_000.0


def _n(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def b76(f: float, k: float, t: float, v: float, call: bool) -> float:
    if t <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    s = v * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    return f * _n(d1) - k * _n(d1 - s) if call else k * _n(s - d1) - f * _n(-d1)


def svi_vol(params: tuple[float, ...], years: float, k: float) -> float:
    a, b, rho, m, sigma = params
    return math.sqrt(max(a + b * (rho * (k - m) + math.sqrt((k - m) ** 2 + sigma**2)), 0.0) / years)


def _mark(name: str, days: float, k: float, call: bool, f: float = 40_200.0, iv: float = 0.6,
          linear: bool = False) -> OptionMark:
    return OptionMark(instrument_name=name, expiry_ms=int(NOW * 1000 + days * DAY_MS), strike=k, is_call=call,
                      forward=f, mark_iv=iv, mark_price=None, index_price=INDEX, linear=linear)


def _portfolio(*positions: tuple[str, float], futures: tuple[Position, ...] = ()) -> PortfolioChanged:
    return PortfolioChanged(currency="BTC", at=NOW, open_orders=(), positions=tuple(
        Position(instrument_name=n, kind="option", direction="buy" if s > 0 else "sell", size=s) for n, s in positions
    ) + futures)


SKEW = (0.004, 0.08, -0.5, 0.02, 0.15)  # a + b sigma sqrt(1 - rho^2) > 0: a smile with a put skew


def _fit(expiry_ms: int, params: tuple[float, ...] = SKEW, years: float = 30 / 365, method: str = "svi") -> SmileFit:
    return SmileFit(expiry_ms=expiry_ms, years=years, forward=40_200.0, method=method, parameters=params, rmse=0.1,
                    n_quotes=20, butterfly_ok=True, calendar_ok=True, min_g=0.1, wing_slope=0.1)


def _surface(*fits: SmileFit) -> SurfaceSnapshot:
    return SurfaceSnapshot(currency="BTC", at=NOW, method="svi", index_price=INDEX, quotes=(), points=(), fits=fits,
                           tenors=(), variance_index=None, atm_iv_30d=None)


MOVES = (-20.0, -10.0, -1.0, 0.0, 1.0, 10.0, 20.0)
SHIFTS = (-20.0, -5.0, 0.0, 5.0, 20.0)


def _book() -> tuple[PortfolioChanged, dict[str, OptionMark]]:
    marks = {m.instrument_name: m for m in (
        _mark("BTC-A-36000-P", 30, 36_000, False), _mark("BTC-A-44000-C", 30, 44_000, True, iv=0.58),
        _mark("BTC-B-40000-C", 90, 40_000, True, f=40_600.0, iv=0.65),
        _mark("BTC-C-30000-P", 3, 30_000, False, iv=1.1))}
    return _portfolio(("BTC-A-36000-P", -3.0), ("BTC-A-44000-C", 2.0), ("BTC-B-40000-C", 1.5),
                      ("BTC-C-30000-P", 4.0)), marks


@pytest.mark.parametrize("sticky", list(Sticky))
def test_no_move_no_shift_no_time_is_no_pnl(sticky: Sticky) -> None:
    portfolio, marks = _book()
    expiries = {m.expiry_ms for m in marks.values()}
    grid = scenario_grid(portfolio, marks, INDEX, _surface(*(_fit(e) for e in expiries)),
                         ScenarioSpec(MOVES, SHIFTS, 0.0, sticky), NOW)
    assert grid.pnl_usd[SHIFTS.index(0.0)][MOVES.index(0.0)] == 0.0
    assert len(grid.pnl_usd) == len(SHIFTS) and all(len(row) == len(MOVES) for row in grid.pnl_usd)
    assert not grid.missing and not grid.notes


@pytest.mark.parametrize("days", [0.0, 1.0, 7.5])
@pytest.mark.parametrize("call", [True, False])
def test_one_option_sticky_strike_equals_an_independent_repricing(days: float, call: bool) -> None:
    m = _mark("BTC-A-41000-X", 30, 41_000, call)
    size = -2.0
    grid = scenario_grid(_portfolio((m.instrument_name, size)), {m.instrument_name: m}, INDEX, None,
                         ScenarioSpec(MOVES, SHIFTS, days, Sticky.STRIKE), NOW)
    t = 30 / 365
    today = size * b76(m.forward, m.strike, t, m.mark_iv, call) / m.forward * INDEX
    assert grid.value_usd == pytest.approx(today, rel=1e-12)
    for i, shift in enumerate(SHIFTS):
        for j, move in enumerate(MOVES):
            f1 = m.forward * (1 + move / 100)
            vol = max(m.mark_iv + shift / 100, MIN_VOL)
            later = size * b76(f1, m.strike, t - days / 365, vol, call) / f1 * INDEX * (1 + move / 100)
            assert grid.pnl_usd[i][j] == pytest.approx(later - today, rel=1e-9, abs=1e-8), (shift, move)


def test_one_option_sticky_moneyness_reads_the_smile_at_the_new_moneyness() -> None:
    m = _mark("BTC-A-38000-P", 30, 38_000, False)
    surface = _surface(_fit(m.expiry_ms))
    grid = scenario_grid(_portfolio((m.instrument_name, 1.0)), {m.instrument_name: m}, INDEX, surface,
                         ScenarioSpec(MOVES, SHIFTS, 1.0, Sticky.MONEYNESS), NOW)
    t, fit_years = 30 / 365, 30 / 365
    k0 = math.log(m.strike / m.forward)
    today = b76(m.forward, m.strike, t, m.mark_iv, False) / m.forward * INDEX
    for i, shift in enumerate(SHIFTS):
        for j, move in enumerate(MOVES):
            f1 = m.forward * (1 + move / 100)
            k1 = math.log(m.strike / f1)
            vol = m.mark_iv + svi_vol(SKEW, fit_years, k1) - svi_vol(SKEW, fit_years, k0) + shift / 100
            later = b76(f1, m.strike, t - 1 / 365, max(vol, MIN_VOL), False) / f1 * INDEX * (1 + move / 100)
            assert grid.pnl_usd[i][j] == pytest.approx(later - today, rel=1e-9, abs=1e-8), (shift, move)


def test_sticky_strike_and_moneyness_differ_as_the_skew_says() -> None:
    """On a put skew (rho < 0, vol falling as k = ln(K/F) rises) a fall moves a fixed strike to a
    higher k, so under sticky moneyness its vol falls and a long put gains less than sticky strike
    says (and more on a rise); a flat smile gives the same grid either way; at no move they agree."""
    m = _mark("BTC-A-38000-P", 30, 38_000, False)
    book = _portfolio((m.instrument_name, 1.0))
    spec = ScenarioSpec(MOVES, SHIFTS, 0.0, Sticky.STRIKE)
    surface = _surface(_fit(m.expiry_ms))
    strike = np.array(scenario_grid(book, {m.instrument_name: m}, INDEX, surface, spec, NOW).pnl_usd)
    moneyness = np.array(scenario_grid(book, {m.instrument_name: m}, INDEX, _surface(_fit(m.expiry_ms)),
                                       ScenarioSpec(MOVES, SHIFTS, 0.0, Sticky.MONEYNESS), NOW).pnl_usd)
    zero = MOVES.index(0.0)
    np.testing.assert_array_equal(strike[:, zero], moneyness[:, zero])
    down = MOVES.index(-10.0)
    up = MOVES.index(10.0)
    assert np.all(moneyness[:, down] < strike[:, down])
    assert np.all(moneyness[:, up] > strike[:, up])
    flat = _surface(_fit(m.expiry_ms, params=(0.6**2 * 30 / 365, 0.0, 0.0, 0.0, 0.1)))
    flat_grid = np.array(scenario_grid(book, {m.instrument_name: m}, INDEX, flat,
                                       ScenarioSpec(MOVES, SHIFTS, 0.0, Sticky.MONEYNESS), NOW).pnl_usd)
    np.testing.assert_allclose(flat_grid, strike, rtol=1e-12, atol=1e-9)


def test_an_expiry_without_a_fit_falls_back_to_sticky_strike_and_says_so() -> None:
    portfolio, marks = _book()
    by_expiry = sorted({m.expiry_ms for m in marks.values()})
    fits = (_fit(by_expiry[0]), _fit(by_expiry[1], method="linear", params=()),
            _fit(by_expiry[2], params=(math.nan, 0.1, 0.0, 0.0, 0.1)))
    spec = ScenarioSpec(MOVES, SHIFTS, 0.0, Sticky.MONEYNESS)
    grid = scenario_grid(portfolio, marks, INDEX, _surface(*fits), spec, NOW)
    assert len(grid.notes) == 2 and all(n.endswith(": no SVI fit, sticky strike") for n in grid.notes)
    none = scenario_grid(portfolio, marks, INDEX, None, spec, NOW)
    assert len(none.notes) == 3
    strike = scenario_grid(portfolio, marks, INDEX, None, ScenarioSpec(MOVES, SHIFTS, 0.0, Sticky.STRIKE), NOW)
    assert none.pnl_usd == strike.pnl_usd


def test_small_moves_give_back_the_risk_greeks() -> None:
    """Central differences of the grid in spot, vol and time are the risk module's delta (USD: the
    coin delta at the index), vega and theta (USD at the index over the forward)."""
    portfolio, marks = _book()
    portfolio = PortfolioChanged(currency="BTC", at=NOW, open_orders=(), positions=portfolio.positions[:3])
    risk = currency_risk(portfolio, marks, INDEX, NOW)
    e = 0.01  # percent
    grid = scenario_grid(portfolio, marks, INDEX, None, ScenarioSpec((-e, e), (-0.01, 0.0, 0.01), 0.0,
                                                                     Sticky.STRIKE), NOW).pnl_usd
    delta_usd = (grid[1][1] - grid[1][0]) / (2 * e / 100)
    # USD value of a coin amount at the moved index: d/dm [size * price(F(1+m)) / F * I] = size * delta * I.
    assert delta_usd == pytest.approx(risk.total.delta * INDEX, rel=1e-6)
    vega_usd = (grid[2][0] + grid[2][1] - grid[0][0] - grid[0][1]) / 2 / 0.02
    vega_at_index = sum(currency_risk(PortfolioChanged(currency="BTC", at=NOW, open_orders=(), positions=(p,)),
                                      marks, INDEX, NOW).total.vega_usd * INDEX / marks[p.instrument_name].forward
                        for p in portfolio.positions)
    assert vega_usd == pytest.approx(vega_at_index, rel=1e-4)
    step = 1e-3
    theta = scenario_grid(portfolio, marks, INDEX, None, ScenarioSpec((0.0,), (0.0,), step, Sticky.STRIKE), NOW)
    theta_at_index = sum(currency_risk(PortfolioChanged(currency="BTC", at=NOW, open_orders=(), positions=(p,)),
                                       marks, INDEX, NOW).total.theta_usd * INDEX / marks[p.instrument_name].forward
                         for p in portfolio.positions)
    assert theta.pnl_usd[0][0] / step == pytest.approx(theta_at_index, rel=1e-3)


def test_the_step_to_the_next_expiry_and_past_it_the_intrinsic_value() -> None:
    portfolio, marks = _book()
    grid = scenario_grid(portfolio, marks, INDEX, None, ScenarioSpec((-10.0, 0.0, 10.0), (0.0,), None, Sticky.STRIKE),
                         NOW)
    assert grid.days == pytest.approx(3.0)
    # Stepping 40 days: every 30-day and 3-day option pays its intrinsic value at the moved forward.
    m = marks["BTC-A-44000-C"]
    one = scenario_grid(_portfolio(("BTC-A-44000-C", 2.0)), marks, INDEX, None,
                        ScenarioSpec((-10.0, 0.0, 10.0), (0.0,), 40.0, Sticky.STRIKE), NOW)
    today = 2.0 * b76(m.forward, m.strike, 30 / 365, m.mark_iv, True) / m.forward * INDEX
    for j, move in enumerate((-10.0, 0.0, 10.0)):
        f1 = m.forward * (1 + move / 100)
        assert one.pnl_usd[0][j] == pytest.approx(2.0 * max(f1 - m.strike, 0.0) / f1 * INDEX * (1 + move / 100) - today)


def _instrument(name: str, linear: bool) -> Instrument:
    return Instrument(instrument_name=name, kind="future", base_currency="BTC",
                      quote_currency="USDC" if linear else "USD", settlement_period="perpetual", tick_size=0.5,
                      contract_size=0.001 if linear else 10.0, min_trade_amount=0.001 if linear else 10.0,
                      expiration_timestamp=32_503_708_800_000, creation_timestamp=0,
                      settlement_currency="USDC" if linear else "BTC",
                      instrument_type="linear" if linear else "reversed")


def test_futures_move_by_their_contract_maths() -> None:
    f0 = 40_100.0
    inverse = Position(instrument_name="BTC-PERPETUAL", kind="future", direction="sell", size=-20_000.0,
                       mark_price=f0, size_currency=-20_000.0 / f0)
    linear = Position(instrument_name="BTC_USDC-PERPETUAL", kind="future", direction="buy", size=0.3, mark_price=f0,
                      size_currency=0.3)
    instruments = {i.instrument_name: i for i in (_instrument("BTC-PERPETUAL", False),
                                                  _instrument("BTC_USDC-PERPETUAL", True))}
    spec = ScenarioSpec(MOVES, (0.0, 10.0), 1.0, Sticky.STRIKE)
    grid = scenario_grid(_portfolio(futures=(inverse, linear)), {}, INDEX, None, spec, NOW, instruments)
    for j, move in enumerate(MOVES):
        f1 = f0 * (1 + move / 100)
        expected = -20_000.0 * (1 / f0 - 1 / f1) * INDEX * (1 + move / 100) + 0.3 * (f1 - f0)
        assert grid.pnl_usd[0][j] == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert grid.pnl_usd[1][j] == grid.pnl_usd[0][j]  # vol does not move a future
    # Without metadata: the coin delta at the index.
    bare = scenario_grid(_portfolio(futures=(inverse,)), {}, INDEX, None, spec, NOW)
    assert bare.pnl_usd[0] == pytest.approx(tuple(-20_000.0 / f0 * m / 100 * INDEX for m in MOVES))


@pytest.mark.parametrize("spec,index", [
    (ScenarioSpec((-100.0,), (0.0,)), INDEX), (ScenarioSpec((math.nan,), (0.0,)), INDEX),
    (ScenarioSpec((0.0,), (math.inf,)), INDEX), (ScenarioSpec((0.0,), (0.0,), -1.0), INDEX),
    (ScenarioSpec((0.0,), (0.0,), math.nan), INDEX), (ScenarioSpec((), (0.0,)), INDEX),
    (ScenarioSpec((0.0,), (0.0,)), math.nan), (ScenarioSpec((0.0,), (0.0,)), 0.0), (ScenarioSpec((0.0,), (0.0,)), -1.0),
])
def test_hostile_specs_are_refused(spec: ScenarioSpec, index: float) -> None:
    portfolio, marks = _book()
    with pytest.raises(ValueError):
        scenario_grid(portfolio, marks, index, None, spec, NOW)


def test_hostile_marks_are_left_out_and_named() -> None:
    portfolio, marks = _book()
    marks = {**marks, "BTC-A-36000-P": _mark("BTC-A-36000-P", 30, 36_000, False, iv=math.nan),
             "BTC-C-30000-P": _mark("BTC-C-30000-P", 3, 30_000, False, f=-1.0)}
    grid = scenario_grid(portfolio, marks, INDEX, None, ScenarioSpec(MOVES, SHIFTS), NOW)
    assert [m.split(":")[0] for m in grid.missing] == ["BTC-A-36000-P", "BTC-C-30000-P"]
    assert all(math.isfinite(x) for row in grid.pnl_usd for x in row)


rows = st.lists(st.tuples(st.sampled_from([0.5, 3.0, 30.0, 180.0]), st.floats(0.5, 2.0), st.booleans(),
                          st.floats(0.2, 2.0), st.floats(-10.0, 10.0).filter(lambda s: abs(s) > 1e-3)),
                min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(rows=rows, moves=st.lists(st.floats(-60.0, 60.0), min_size=1, max_size=5),
       shifts=st.lists(st.floats(-50.0, 50.0), min_size=1, max_size=4), days=st.floats(0.0, 10.0))
def test_random_books_are_finite_and_agree_at_no_move(rows: list[tuple[float, float, bool, float, float]],
                                                       moves: list[float], shifts: list[float], days: float) -> None:
    marks: dict[str, OptionMark] = {}
    positions: list[tuple[str, float]] = []
    for i, (d, mny, call, iv, size) in enumerate(rows):
        name = f"BTC-R{i}-{mny * 40_000:.0f}-{'C' if call else 'P'}"
        marks[name] = _mark(name, d, mny * 40_000, call, iv=iv)
        positions.append((name, size))
    book = _portfolio(*positions)
    surface = _surface(*(_fit(m.expiry_ms, years=max((m.expiry_ms / 1000 - NOW) / 86400 / 365, 1e-3))
                         for m in marks.values()))
    kw: dict[str, Any] = {"spot_moves_pct": (0.0, *moves), "vol_shifts": tuple(shifts), "days": days}
    a = np.array(scenario_grid(book, marks, INDEX, surface, ScenarioSpec(**kw, sticky=Sticky.STRIKE), NOW).pnl_usd)
    b = np.array(scenario_grid(book, marks, INDEX, surface, ScenarioSpec(**kw, sticky=Sticky.MONEYNESS), NOW).pnl_usd)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
