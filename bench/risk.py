"""Book risk and scenarios: ``python -m bench risk [--json] [--positions N] [--repeat R]``.

A book of ``N`` positions (default 200: options over 8 expiries from 2 days to a year, calls and
puts from 0.6 to 1.6 of the forward, long and short, and one perpetual), each option marked on a
skewed raw-SVI smile that the surface snapshot carries as its fit.

- ``risk_ms``: one :func:`desk.risk.currency_risk` (per-expiry buckets, totals, account checks).
- ``scenario_41x9_ms``: one :func:`desk.scenarios.scenario_grid` of 41 spot moves (-20% to +20%)
  x 9 vol shifts (-20 to +20 points) after one day, sticky moneyness (``..._strike_ms``: sticky
  strike).
- ``reference_*_ms``: the same figures by a plain per-position Python loop with ``math.erf``
  (every cell repriced one option at a time), and ``*_speedup`` the ratio; ``reference_max_abs_diff_usd``
  the largest difference between the reference's sticky-strike grid and ours (a check, not a timing).

Times are medians over ``R`` repeats after a warm-up. Progress goes to stderr; the runner prints
the result as the last line.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import numpy as np

from desk.risk import OptionMark, currency_risk
from desk.scenarios import DEFAULT_SPOT_MOVES_PCT, DEFAULT_VOL_SHIFTS, ScenarioSpec, Sticky, scenario_grid
from messages.account import Position
from messages.state import PortfolioChanged
from messages.surface import SmileFit, SurfaceSnapshot
from quant.svi import svi_total_variance

NOW = 1_700_000_000.0
INDEX = 40_000.0
DAY_MS = 86_400_000
EXPIRY_DAYS = (2.0, 7.0, 14.0, 30.0, 60.0, 91.0, 182.0, 365.0)
MOVES = DEFAULT_SPOT_MOVES_PCT
SHIFTS = DEFAULT_VOL_SHIFTS


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def build_book(n_positions: int, seed: int = 7) -> tuple[PortfolioChanged, dict[str, OptionMark], SurfaceSnapshot]:
    rng = np.random.default_rng(seed)
    fits: list[SmileFit] = []
    marks: dict[str, OptionMark] = {}
    positions: list[Position] = []
    per_expiry = max((n_positions - 1 + len(EXPIRY_DAYS) - 1) // len(EXPIRY_DAYS), 1)
    for e, days in enumerate(EXPIRY_DAYS):
        years = days / 365.0
        expiry = int(NOW * 1000 + days * DAY_MS)
        forward = INDEX * (1.0 + 0.05 * years)
        atm = 0.55 + 0.1 * math.exp(-days / 30)
        params = (atm * atm * years * 0.8, 0.12 * math.sqrt(years), -0.4, 0.01, 0.2 * math.sqrt(years) + 0.02)
        fits.append(SmileFit(expiry_ms=expiry, years=years, forward=forward, method="svi", parameters=params,
                             rmse=0.1, n_quotes=per_expiry, butterfly_ok=True, calendar_ok=True, min_g=0.1,
                             wing_slope=0.1))
        strikes = np.round(np.linspace(0.6, 1.6, per_expiry) * forward / 500) * 500
        for i, k in enumerate(strikes):
            if len(positions) >= n_positions - 1:
                break
            call = k >= forward if i % 5 else k < forward
            name = f"BTC-E{e}-{k:.0f}-{'C' if call else 'P'}-{i}"
            w = float(svi_total_variance(np.array(params), math.log(k / forward)))
            iv = math.sqrt(w / years)
            marks[name] = OptionMark(instrument_name=name, expiry_ms=expiry, strike=float(k), is_call=bool(call),
                                     forward=forward, mark_iv=iv, index_price=INDEX)
            size = float(rng.choice([-1, 1]) * rng.integers(1, 50) / 10)
            positions.append(Position(instrument_name=name, kind="option", direction="buy" if size > 0 else "sell",
                                      size=size))
    positions.append(Position(instrument_name="BTC-PERPETUAL", kind="future", direction="sell", size=-250_000.0,
                              mark_price=INDEX, size_currency=-250_000.0 / INDEX))
    portfolio = PortfolioChanged(currency="BTC", at=NOW, positions=tuple(positions), open_orders=())
    surface = SurfaceSnapshot(currency="BTC", at=NOW, method="svi", index_price=INDEX, quotes=(), points=(),
                              fits=tuple(fits), tenors=(), variance_index=None, atm_iv_30d=None)
    return portfolio, marks, surface


# --- the reference: one position at a time, in plain Python ------------------------------------------------

def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _b76(f: float, k: float, t: float, v: float, call: bool) -> float:
    if t <= 0 or v <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    s = v * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    return f * _ncdf(d1) - k * _ncdf(d1 - s) if call else k * _ncdf(s - d1) - f * _ncdf(-d1)


def reference_risk(portfolio: PortfolioChanged, marks: dict[str, OptionMark]) -> tuple[float, ...]:
    delta = gamma = vega = theta = 0.0
    for p in portfolio.positions:
        if p.kind != "option":
            delta += p.size_currency or 0.0
            continue
        m = marks[p.instrument_name]
        t = (m.expiry_ms / 1000 - NOW) / (365 * 86400)
        s = m.mark_iv * math.sqrt(t)
        d1 = math.log(m.forward / m.strike) / s + 0.5 * s
        pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
        delta += p.size * (_ncdf(d1) if m.is_call else _ncdf(d1) - 1)
        gamma += p.size * pdf / (m.forward * s)
        vega += p.size * m.forward * pdf * math.sqrt(t) / 100
        theta += p.size * -m.forward * pdf * m.mark_iv / (2 * math.sqrt(t)) / 365
    return delta, gamma, vega, theta


def reference_grid(portfolio: PortfolioChanged, marks: dict[str, OptionMark], days: float) -> list[list[float]]:
    """Sticky strike, every cell and position repriced one at a time."""
    grid = [[0.0] * len(MOVES) for _ in SHIFTS]
    for p in portfolio.positions:
        if p.kind != "option":
            for j, move in enumerate(MOVES):
                for i in range(len(SHIFTS)):
                    grid[i][j] += (p.size_currency or 0.0) * move / 100 * INDEX
            continue
        m = marks[p.instrument_name]
        t = (m.expiry_ms / 1000 - NOW) / (365 * 86400)
        today = p.size * _b76(m.forward, m.strike, t, m.mark_iv, m.is_call) * INDEX / m.forward
        for i, shift in enumerate(SHIFTS):
            vol = max(m.mark_iv + shift / 100, 0.01)
            for j, move in enumerate(MOVES):
                f1 = m.forward * (1 + move / 100)
                grid[i][j] += p.size * _b76(f1, m.strike, t - days / 365, vol, m.is_call) * INDEX / m.forward - today
    return grid


def run(argv: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench risk")
    parser.add_argument("--positions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    portfolio, marks, surface = build_book(args.positions)
    print(f"book: {len(portfolio.positions)} positions over {len(EXPIRY_DAYS)} expiries", file=sys.stderr)
    moneyness = ScenarioSpec(MOVES, SHIFTS, 1.0, Sticky.MONEYNESS)
    strike = ScenarioSpec(MOVES, SHIFTS, 1.0, Sticky.STRIKE)
    risk = currency_risk(portfolio, marks, INDEX, NOW)
    assert not risk.missing, risk.missing
    risk_ms = _median_ms(lambda: currency_risk(portfolio, marks, INDEX, NOW), args.repeat)
    grid_ms = _median_ms(lambda: scenario_grid(portfolio, marks, INDEX, surface, moneyness, NOW), args.repeat)
    strike_ms = _median_ms(lambda: scenario_grid(portfolio, marks, INDEX, surface, strike, NOW), args.repeat)
    print("reference (plain Python loop)...", file=sys.stderr)
    ref_repeat = max(args.repeat // 10, 3)
    ref_risk_ms = _median_ms(lambda: reference_risk(portfolio, marks), ref_repeat)
    ref_grid_ms = _median_ms(lambda: reference_grid(portfolio, marks, 1.0), ref_repeat)
    ours = np.array(scenario_grid(portfolio, marks, INDEX, surface, strike, NOW).pnl_usd)
    ref = np.array(reference_grid(portfolio, marks, 1.0))
    ref_delta, ref_gamma, ref_vega, ref_theta = reference_risk(portfolio, marks)
    return {
        "positions": len(portfolio.positions),
        "grid": f"{len(MOVES)}x{len(SHIFTS)}",
        "risk_ms": round(risk_ms, 3),
        "scenario_41x9_ms": round(grid_ms, 3),
        "scenario_41x9_strike_ms": round(strike_ms, 3),
        "reference_risk_ms": round(ref_risk_ms, 3),
        "reference_scenario_41x9_ms": round(ref_grid_ms, 3),
        "scenario_speedup": round(ref_grid_ms / strike_ms, 1),
        "risk_speedup": round(ref_risk_ms / risk_ms, 2),
        "reference_max_abs_diff_usd": float(np.max(np.abs(ours - ref))),
        "reference_greeks_max_rel_diff": max(
            abs(a - b) / max(abs(b), 1e-12) for a, b in ((risk.total.delta, ref_delta), (risk.total.gamma, ref_gamma),
                                                         (risk.total.vega_usd, ref_vega),
                                                         (risk.total.theta_usd, ref_theta))),
        "book_value_usd": round(risk.options.value_usd, 2),
        "repeat": args.repeat,
    }
