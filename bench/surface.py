"""Surface of a full chain: ``python -m bench surface [--json] [--quotes N] [--expiries E] [--method M]``.

- ``median_ms``: one ``quant.build_surface`` call on a synthetic chain (quant.synthetic: 1,500
  Deribit-like quotes over 20 expiries from 1 day to 1 year on an arbitrage-free SSVI surface, quotes
  rounded to the 0.0005 BTC tick): implied vols of every bid, ask, mid and mark, the fit with its
  arbitrage checks, the grid, ATM/RR25/BF25 per tenor and the 30-day variance index. Goal 20 ms.
- ``max_abs_err`` (vol, decimals): grid vols against the generating surface, on chains quoted off
  known eSSVI surfaces with bid/ask noise (3 seeds); ``max_abs_err_inside`` only at grid points
  inside the data (tenor between the first and last expiry, k within the quoted strikes'
  range interpolated between the expiries around the tenor).
- ``max_minute_move`` (vol): a simulated hour, 60 minutes of a slowly moving eSSVI surface quoted with
  fresh noise each minute, each minute built with the previous minute's result (``previous``): the
  largest minute-to-minute move of any grid point inside the data; ``max_minute_move_free`` the same
  without ``previous``; ``max_true_minute_move`` what the generating surface itself moved.
Progress goes to stderr; the runner prints the result as the last line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from quant import ChainInputs, SurfaceResult, build_surface, implied_vol_with_reasons
from quant.coverage import inside_data, quoted_k_ranges
from quant.essvi import ESSVISurface
from quant.surface import MS_PER_YEAR
from quant.synthetic import essvi_chain, essvi_test_surface, expiries_ms, synthetic_chain

TARGET_MS = 20.0
NOW_MS = 1_626_993_723_000


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _inside(result: SurfaceResult, chain: ChainInputs, now_ms: float) -> np.ndarray:
    """Grid points inside the data, by the recorder's own rule (:func:`quant.coverage.inside_data`)
    over the quotes the fit used."""
    q = result.quotes
    exp = np.unique(chain.expiry_ms[q.fitted])
    k_min, k_max = quoted_k_ranges(chain.expiry_ms, q.log_moneyness, q.fitted, exp)
    return inside_data(result.tenor_days / 365.0, result.log_moneyness, (exp - now_ms) / MS_PER_YEAR, k_min, k_max)


def _errors(method: str, seeds: int) -> tuple[float, float]:
    worst = worst_in = 0.0
    expiry = expiries_ms(NOW_MS, 20)
    for seed in range(seeds):
        truth = essvi_test_surface((expiry - NOW_MS) / MS_PER_YEAR, atm_vol=(0.9 + 0.1 * seed, 0.7),
                                   rho=(-0.4 + 0.1 * seed, -0.1))
        chain = essvi_chain(truth, now_ms=NOW_MS, expiry_ms=expiry, seed=seed)
        result = build_surface(chain, NOW_MS, method=method)  # type: ignore[arg-type]
        want = truth.implied_vol(result.tenor_days[:, None] / 365.0, result.log_moneyness[None, :])
        err = np.abs(result.iv - want)
        worst = max(worst, float(err.max()))
        worst_in = max(worst_in, float(err[_inside(result, chain, NOW_MS)].max()))
    return worst, worst_in


def _hour(method: str, use_previous: bool, minutes: int = 60) -> tuple[float, float]:
    """Largest minute-to-minute move of a grid point inside the data, and of the truth there."""
    expiry = expiries_ms(NOW_MS, 20)
    base = essvi_test_surface((expiry - NOW_MS) / MS_PER_YEAR)
    rng = np.random.default_rng(7)
    level, skew = 1.0, 0.0
    prev_result: SurfaceResult | None = None
    prev_iv = prev_true = None
    worst = worst_true = 0.0
    for minute in range(minutes):
        now = NOW_MS + 60_000 * minute
        years = (expiry - now) / MS_PER_YEAR
        level *= 1.0 + 0.002 * rng.standard_normal()  # ATM vol drifts ~0.2% a minute
        skew = float(np.clip(skew + 0.003 * rng.standard_normal(), -0.1, 0.1))
        theta = base.theta * level**2 * years / base.years
        truth = ESSVISurface(years=years, theta=theta, rho=np.clip(base.rho + skew, -0.9, 0.9),
                             psi=base.psi * level)
        chain = essvi_chain(truth, now_ms=now, expiry_ms=expiry, seed=1000 + minute)
        result = build_surface(chain, now, method=method,  # type: ignore[arg-type]
                               previous=prev_result if use_previous else None)
        true_iv = truth.implied_vol(result.tenor_days[:, None] / 365.0, result.log_moneyness[None, :])
        inside = _inside(result, chain, now)
        if prev_iv is not None and prev_true is not None:
            worst = max(worst, float(np.abs(result.iv - prev_iv)[inside].max()))
            worst_true = max(worst_true, float(np.abs(true_iv - prev_true)[inside].max()))
        prev_result, prev_iv, prev_true = result, result.iv, true_iv
    return worst, worst_true


def run(args: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench surface")
    parser.add_argument("--quotes", type=int, default=1500)
    parser.add_argument("--expiries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="essvi", choices=("essvi", "svi", "linear"))
    parser.add_argument("--minutes", type=int, default=60)
    opts = parser.parse_args(args)

    chain, _, _ = synthetic_chain(now_ms=NOW_MS, n_expiries=opts.expiries, n_quotes=opts.quotes, seed=opts.seed)
    print(f"surface: {len(chain)} quotes, {opts.expiries} expiries, build_surface({opts.method}) x{opts.repeat}",
          file=sys.stderr)
    median = _median_ms(lambda: build_surface(chain, NOW_MS, method=opts.method), opts.repeat)

    # The implied-vol share of the work: the same four prices per quote, one solver call.
    years = (chain.expiry_ms - NOW_MS) / (365.0 * 86_400_000.0)
    f = chain.underlying_price
    prices = np.concatenate((chain.bid, chain.ask, 0.5 * (chain.bid + chain.ask), chain.mark)) * np.tile(f, 4)
    prices = np.where(prices > 0.0, prices, np.nan)
    args4 = (prices, np.tile(f, 4), np.tile(chain.strike, 4), np.tile(years, 4), np.tile(chain.is_call, 4))
    iv_ms = _median_ms(lambda: implied_vol_with_reasons(*args4), opts.repeat)

    result = build_surface(chain, NOW_MS, method=opts.method)
    rmse = np.array([e.rmse_vol_points for e in result.expiries])
    print("surface: errors against known eSSVI surfaces", file=sys.stderr)
    err, err_in = _errors(opts.method, 3)
    print(f"surface: a simulated hour ({opts.minutes} minutes), with and without the previous minute",
          file=sys.stderr)
    move, true_move = _hour(opts.method, True, opts.minutes)
    move_free, _ = _hour(opts.method, False, opts.minutes)
    return {
        "method": opts.method,
        "n_quotes": len(chain),
        "n_expiries": len(result.expiries),
        "median_ms": round(median, 3),
        "target_ms": TARGET_MS,
        "iv_median_ms": round(iv_ms, 3),
        "arbitrage_free": result.arbitrage_free,
        "max_rmse_vol_points": round(float(np.nanmax(rmse)), 4),
        "variance_index": round(float(result.variance_index.value), 4),
        "max_abs_err": round(err, 5),
        "max_abs_err_inside": round(err_in, 5),
        "max_minute_move": round(move, 5),
        "max_minute_move_free": round(move_free, 5),
        "max_true_minute_move": round(true_move, 5),
    }
