"""Implied-vol solver against py_vollib_vectorized: ``python -m bench iv [--json] [--n N] [--seed S]``.

Inputs: ``n`` random European options over the accuracy domain of quant.implied_vol, i.e.
|ln(K/F)| <= 2.5 uniform, time to expiry 1 hour to 3 years and volatility 5% to 500% both
log-uniform, calls and puts at random, forward 1e3 to 1e5 log-uniform, Black-76 prices; draws whose
time value is below 1e-12 x forward are redrawn (their volatility is not defined to double
precision). Our solver and the reference solve the same prices in the same run.

The reference is ``py_vollib_vectorized.vectorized_implied_volatility_black``. Its numba code does
not compile under any numba release that runs on Python 3.11 ("cannot type infer runaway
recursion"), so it runs in a subprocess with ``NUMBA_DISABLE_JIT=1``, i.e. as plain Python.
Progress goes to stderr; the runner prints the result dict as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from quant import black76_price, implied_vol

REFERENCE = "py_vollib_vectorized.vectorized_implied_volatility_black"

_REFERENCE_SCRIPT = """
import json, sys, time
import numpy as np
from py_vollib_vectorized import vectorized_implied_volatility_black

data = np.load(sys.argv[1])
repeat = int(sys.argv[3])
flag = np.where(data["is_call"], "c", "p")
args = (data["price"], data["forward"], data["strike"], 0.0, data["years"], flag)
vectorized_implied_volatility_black(*args, on_error="ignore", return_as="numpy")  # warm-up
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    vol = vectorized_implied_volatility_black(*args, on_error="ignore", return_as="numpy")
    times.append(time.perf_counter() - t0)
np.save(sys.argv[2], np.asarray(vol, dtype=np.float64).ravel())
print(json.dumps({"times": times}))
"""


def make_inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` well-posed options over the solver's accuracy domain (see the module docstring)."""
    rng = np.random.default_rng(seed)
    chunks: list[dict[str, np.ndarray]] = []
    have = 0
    while have < n:
        m = 4 * n
        forward = np.exp(rng.uniform(np.log(1e3), np.log(1e5), m))
        strike = forward * np.exp(rng.uniform(-2.5, 2.5, m))
        years = np.exp(rng.uniform(np.log(1.0 / (365.0 * 24.0)), np.log(3.0), m))
        vol = np.exp(rng.uniform(np.log(0.05), np.log(5.0), m))
        is_call = rng.random(m) < 0.5
        price = np.asarray(black76_price(forward, strike, years, vol, is_call))
        intrinsic = np.maximum(np.where(is_call, forward - strike, strike - forward), 0.0)
        keep = (price - intrinsic) >= 1e-12 * forward
        chunks.append(
            {
                "price": price[keep],
                "forward": forward[keep],
                "strike": strike[keep],
                "years": years[keep],
                "vol": vol[keep],
                "is_call": is_call[keep],
            }
        )
        have += int(keep.sum())
    return {key: np.concatenate([c[key] for c in chunks])[:n] for key in chunks[0]}


def _time_ours(data: dict[str, np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    args = (data["price"], data["forward"], data["strike"], data["years"], data["is_call"])
    vol = np.asarray(implied_vol(*args))  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        vol = np.asarray(implied_vol(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3, vol


def _time_reference(data: dict[str, np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        output = Path(tmp) / "vol.npy"
        np.savez(inputs, allow_pickle=False, **data)
        env = dict(os.environ, NUMBA_DISABLE_JIT="1")
        done = subprocess.run(
            [sys.executable, "-c", _REFERENCE_SCRIPT, str(inputs), str(output), str(repeat)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"reference run failed:\n{done.stderr[-2000:]}")
        times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
        return float(np.median(times)) * 1e3, np.load(output)


def run(args: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench iv")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20210722)
    parser.add_argument("--repeat", type=int, default=200, help="timed runs of our solver")
    parser.add_argument("--reference-repeat", type=int, default=15, help="timed runs of the reference")
    opts = parser.parse_args(args)

    data = make_inputs(opts.n, opts.seed)
    print(f"iv: {opts.n} options, timing quant.implied_vol x{opts.repeat}", file=sys.stderr)
    ours_ms, ours = _time_ours(data, opts.repeat)
    print(f"iv: timing {REFERENCE} x{opts.reference_repeat} (NUMBA_DISABLE_JIT=1)", file=sys.stderr)
    ref_ms, ref = _time_reference(data, opts.reference_repeat)
    err = np.abs(ours - ref)
    otm = np.where(data["is_call"], data["strike"] >= data["forward"], data["strike"] <= data["forward"])
    return {
        "n": int(opts.n),
        "median_ms": round(ours_ms, 4),
        "reference": f"{REFERENCE} (NUMBA_DISABLE_JIT=1, subprocess)",
        "reference_median_ms": round(ref_ms, 3),
        "speedup": round(ref_ms / ours_ms, 2),
        "max_abs_err": float(np.max(err)),
        # Out of the money the price pins the vol; deep in the money a 1e-16 relative price
        # error moves it by far more, for both solvers alike, so only OTM draws are compared here.
        "max_abs_err_vs_true_vol_otm": float(np.max(np.abs(ours - data["vol"])[otm])),
        "nan_ours": int(np.isnan(ours).sum()),
        "nan_reference": int(np.isnan(ref).sum()),
        "seed": int(opts.seed),
    }
