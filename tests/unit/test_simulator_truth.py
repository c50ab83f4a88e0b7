"""The desk's 30-day variance index on simulator minutes against the simulator's own truth: the
model's exact 30-day variance, integrated from its own smile (simulator.market.MarketModel.exact_variance).

The simulator imports nothing of the desk: the comparison lives here."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from desk.surface_snapshot import build_surface_snapshot
from messages.state import ChainSnapshot, OptionQuote
from simulator.exchange import Exchange
from simulator.market import strip_variance
from simulator.settings import SimSettings

NOW = datetime(2021, 7, 22, 22, 42, tzinfo=UTC).timestamp()


def desk_chain(ex: Exchange, currency: str, at: float) -> ChainSnapshot:
    """What a BookKeeper would snapshot of the simulator's (inverse) option books and tickers."""
    options = []
    for name, spec in ex.instruments.items():
        if not spec.is_option or spec.currency != currency or spec.is_linear:
            continue
        bid, bid_amount, ask, ask_amount = ex.books[name].top()
        q = ex.market.quote(name)
        options.append(OptionQuote(
            instrument_name=name, expiry_ms=spec.expiration_ms, strike=spec.strike,
            option_type=spec.option_type,  # type: ignore[arg-type]
            bid=bid or None, bid_amount=bid_amount, ask=ask or None, ask_amount=ask_amount, mark_price=q.mark_price,
            mark_iv=q.mark_iv, underlying_price=q.underlying_price, index_price=ex.index_price(currency),
            open_interest=None, delta=q.delta, gamma=q.gamma, vega=q.vega, theta=q.theta, age_s=0.0, stale=False))
    return ChainSnapshot(currency=currency, kind="option", at=at, index_price=ex.index_price(currency),
                         options=tuple(options))


def test_the_exact_strip_variance_gives_a_flat_smiles_vol_back() -> None:
    for vol in (0.1, 0.6, 2.0, 4.0):
        got = math.sqrt(strip_variance(30_000.0, 30 / 365, lambda k, v=vol: np.full_like(k, v)))
        assert got == pytest.approx(vol, abs=1e-10)


def test_the_variance_index_against_the_simulators_exact_30_day_variance() -> None:
    ex = Exchange(1, SimSettings(), NOW)
    errors: dict[str, list[float]] = {"BTC": [], "ETH": []}
    for i in range(1, 4):
        at = NOW + i * 37 * 60.0
        ex.step(at, requote=False)  # the market moves; then every book is quoted on this minute's model
        ex.requote([n for n, s in ex.instruments.items() if s.is_option])
        for currency in errors:
            snap = build_surface_snapshot(desk_chain(ex, currency, at))
            assert snap.complete and snap.variance_index is not None
            truth = 100.0 * math.sqrt(ex.market.exact_variance(currency))
            # The simulator's DVOL is the same truth, rounded (and on a discrete strip): 0.02 at most.
            assert ex.market.volatility_index(currency) == pytest.approx(truth, abs=0.02)
            errors[currency].append(snap.variance_index - truth)
    # Measured (seed 1): BTC -1.90 .. -2.01 vol points, ETH -2.54 .. -2.74. The error is the VIX
    # method's strike truncation, not the desk's arithmetic: the index integrates only the listed
    # strikes (BTC puts down to 0.62 F around 30 days) while the model's smile (curvature 0.06 x^2)
    # holds about 2.7 vol points of variance beyond them; the model's own integral truncated to the
    # listed ranges and interpolated between the 21- and 35-day expiries gives 62.4 where the desk
    # reads 63.2 and the full integral 65.1 (the time interpolation costs 0.04). Truncation can only
    # lose variance: the index must be below the truth, by less than 3.5 vol points.
    for currency, errs in errors.items():
        assert all(-3.5 < e < 0.0 for e in errs), (currency, errs)
