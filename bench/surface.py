"""Surface of a full chain: ``python -m bench surface [--json] [--quotes N] [--expiries E]``.

The chain is synthetic (quant.synthetic: 1,500 Deribit-like quotes over 20 expiries from 1 day to
1 year, on an arbitrage-free SSVI surface, quotes rounded to the 0.0005 BTC tick). Timed: one
``quant.build_surface`` call, i.e. implied vols of every bid, ask, mid and mark, the per-expiry SVI
fits with their arbitrage checks, the constant-maturity grid, ATM/RR25/BF25 per tenor and the
30-day variance index. Progress goes to stderr; the runner prints the result as the last line.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from quant import build_surface, implied_vol_with_reasons
from quant.synthetic import synthetic_chain

TARGET_MS = 50.0


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def run(args: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench surface")
    parser.add_argument("--quotes", type=int, default=1500)
    parser.add_argument("--expiries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)

    now_ms = 1_626_993_723_000
    chain, _, _ = synthetic_chain(now_ms=now_ms, n_expiries=opts.expiries, n_quotes=opts.quotes, seed=opts.seed)
    print(f"surface: {len(chain)} quotes, {opts.expiries} expiries, build_surface x{opts.repeat}", file=sys.stderr)
    median = _median_ms(lambda: build_surface(chain, now_ms), opts.repeat)

    # The implied-vol share of the work: the same four prices per quote, one solver call.
    years = (chain.expiry_ms - now_ms) / (365.0 * 86_400_000.0)
    f = chain.underlying_price
    prices = np.concatenate((chain.bid, chain.ask, 0.5 * (chain.bid + chain.ask), chain.mark)) * np.tile(f, 4)
    prices = np.where(prices > 0.0, prices, np.nan)
    args4 = (prices, np.tile(f, 4), np.tile(chain.strike, 4), np.tile(years, 4), np.tile(chain.is_call, 4))
    iv_ms = _median_ms(lambda: implied_vol_with_reasons(*args4), opts.repeat)

    result = build_surface(chain, now_ms)
    rmse = np.array([e.rmse_vol_points for e in result.expiries])
    return {
        "n_quotes": len(chain),
        "n_expiries": len(result.expiries),
        "median_ms": round(median, 3),
        "target_ms": TARGET_MS,
        "iv_median_ms": round(iv_ms, 3),
        "svi_expiries": sum(e.method == "svi" for e in result.expiries),
        "max_rmse_vol_points": round(float(np.nanmax(rmse)), 4),
        "variance_index": round(float(result.variance_index.value), 4),
    }
