"""The exposure planner: ``python -m bench exposure [--json] [--expiries N] [--strikes N] [--runs N]``.

A BTC chain near 30 days (by default 3 expiries, 21 to 35 days, x 25 strikes x call and put: 150
candidates) with a smile, spreads of 1 to 6% of the price (at least a tick) and displayed sizes of
0.5 to 50 coins; minimum trade amount 0.1, Deribit's commissions. Timed per plan, best of
``--runs``: ``desk.exposure.plan_exposure`` (screening, Black-76 greeks, the milp) for vega +5,000
and -3,000 USD per vol point, vega +5,000 holding gamma, gamma +50,000 USD per 1% holding vega,
and vega +500,000 (not reachable: the time the relaxed re-solves take to say why).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from desk.exposure import ExposureLimits, TargetRequest, plan_exposure
from messages.exposure import ExposurePlan, Greek, GreekFigures
from messages.market import Instrument
from messages.state import OptionQuote
from quant.black76 import black76_greeks

NOW = 1_800_000_000.0
FORWARD = 100_000.0
CASES: dict[str, TargetRequest] = {
    "vega_plus_5000": TargetRequest("BTC", Greek.VEGA, 5_000.0, 30.0),
    "vega_minus_3000": TargetRequest("BTC", Greek.VEGA, -3_000.0, 30.0),
    "vega_5000_hold_gamma": TargetRequest("BTC", Greek.VEGA, 5_000.0, 30.0, (Greek.GAMMA,)),
    "gamma_50000_hold_vega": TargetRequest("BTC", Greek.GAMMA, 50_000.0, 30.0, (Greek.VEGA,)),
    "vega_500000_unreachable": TargetRequest("BTC", Greek.VEGA, 500_000.0, 30.0),
}


def chain(n_expiries: int, n_strikes: int, seed: int = 20) -> tuple[list[OptionQuote], dict[str, Instrument]]:
    rng = np.random.default_rng(seed)
    quotes: list[OptionQuote] = []
    listing: dict[str, Instrument] = {}
    for e in range(n_expiries):
        days = 21.0 + 14.0 * e / max(n_expiries - 1, 1)
        expiry = int((NOW + days * 86_400) * 1000)
        for k in range(n_strikes):
            strike = round(FORWARD * math.exp(-0.35 + 0.7 * k / max(n_strikes - 1, 1)), -3)
            iv = 55.0 + 40.0 * math.log(strike / FORWARD) ** 2 - 5.0 * math.log(strike / FORWARD)
            for call in (True, False):
                name = f"BTC-E{e}-{int(strike)}-{'C' if call else 'P'}"
                g = black76_greeks(FORWARD, strike, days / 365.0, iv / 100.0, call)
                price = max(float(g.price) / FORWARD, 0.0001)
                half = max(price * float(rng.uniform(0.005, 0.03)), 0.00005)
                bid, ask = round(max(price - half, 0.0001), 4), round(price + half, 4) + 0.0001
                quotes.append(OptionQuote(
                    instrument_name=name, expiry_ms=expiry, strike=strike, option_type="call" if call else "put",
                    bid=bid, bid_amount=float(rng.choice([0.5, 2.0, 5.0, 10.0, 25.0, 50.0])), ask=ask,
                    ask_amount=float(rng.choice([0.5, 2.0, 5.0, 10.0, 25.0, 50.0])), mark_price=price, mark_iv=iv,
                    underlying_price=FORWARD, index_price=FORWARD, open_interest=100.0, delta=float(g.delta),
                    gamma=None, vega=None, theta=None, age_s=float(rng.uniform(0.0, 5.0)), stale=False))
                listing[name] = Instrument(
                    instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC", tick_size=0.0001,
                    contract_size=1.0, min_trade_amount=0.1, expiration_timestamp=expiry, creation_timestamp=0,
                    maker_commission=0.0003, taker_commission=0.0003, strike=strike,
                    option_type="call" if call else "put")
    return quotes, listing


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench exposure")
    parser.add_argument("--expiries", type=int, default=3)
    parser.add_argument("--strikes", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    quotes, listing = chain(args.expiries, args.strikes)
    before = GreekFigures(delta=0.5, gamma=2_000.0, vega=150.0, theta=-120.0)
    limits = ExposureLimits()
    out: dict[str, Any] = {"candidates": len(quotes)}
    for name, request in CASES.items():
        best = math.inf
        plan: ExposurePlan | None = None
        for _ in range(args.runs):
            started = time.perf_counter()
            plan = plan_exposure(quotes, listing, before, request, limits, NOW, 1, index_price=FORWARD)
            best = min(best, time.perf_counter() - started)
        assert plan is not None
        out[f"{name}_ms"] = round(best * 1000, 1)
        out[f"{name}_legs"] = len(plan.legs)
        out[f"{name}_cost_usd"] = round(plan.cost_usd, 2)
        out[f"{name}_after"] = round(plan.after.of(request.greek), 1)
        if not plan.reachable:
            out[f"{name}_reason"] = plan.reason.partition(":")[0]
    return out
