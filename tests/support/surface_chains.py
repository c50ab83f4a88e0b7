"""Option chains for the surface's arbitrage tests, and an independent arbitrage check of a result.

- :func:`raw_svi_chain`: calls and puts quoted off a raw-SVI smile (e.g. Vogt's arbitrageable one).
- :func:`simulator_chains`: the simulator's BTC or ETH option chain, minute after minute.
- :func:`violations`: counts butterfly, calendar and Lee violations of a :class:`SurfaceResult`
  with code the surface does not use for its own checks (raw-SVI g(k) of each recorded slice, finite
  differences of the surface between and beyond the expiries).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from quant import ChainInputs, SurfaceResult, black76_price, butterfly_g, svi_total_variance
from quant.essvi import ESSVISurface

NOW_S = 1_626_993_720.0  # 2021-07-22 22:42 UTC, the capture's evening


def raw_svi_chain(params: tuple[float, ...], years: float, now_ms: int, *, k_lo: float = -1.5, k_hi: float = 1.5,
                  n: int = 41, forward: float = 32_000.0, spread: float = 0.01) -> ChainInputs:
    """One expiry, calls and puts at ``n`` strikes F e^k, k in [k_lo, k_hi], quoted +-spread/2 around the
    Black-76 price of the raw-SVI smile ``params`` (coin prices)."""
    k = np.linspace(k_lo, k_hi, n)
    strikes = forward * np.exp(k)
    iv = np.sqrt(np.maximum(svi_total_variance(np.array(params), k), 1e-8) / years)
    expiry = np.full(2 * n, now_ms + round(years * 365.0 * 86_400_000), dtype=np.int64)
    rows = []
    for is_call in (True, False):
        rows.append(np.asarray(black76_price(forward, strikes, years, iv, is_call)) / forward)
    mark = np.concatenate(rows)
    return ChainInputs(
        expiry_ms=expiry, strike=np.tile(strikes, 2), is_call=np.repeat([True, False], n),
        bid=mark * (1 - spread / 2), ask=mark * (1 + spread / 2), mark=mark,
        underlying_price=np.full(2 * n, forward), index_price=forward,
    )


def simulator_chains(currency: str, minutes: int, seed: int = 1) -> Iterator[tuple[int, ChainInputs]]:
    """(now_ms, chain) of the simulator's inverse options of ``currency``, one a minute; each side
    half a vol point (at least a tick) from the mark."""
    from simulator.listing import build_listing
    from simulator.market import MarketModel
    from simulator.settings import SimSettings

    listing = build_listing(NOW_S, {"BTC": 32200.0, "ETH": 2006.0})
    model = MarketModel(seed, SimSettings(), NOW_S)
    model.set_options([s for s in listing if s.kind == "option"])
    opts = [s for s in listing if s.kind == "option" and s.currency == currency and not s.is_linear]
    tick = 0.0005  # Deribit's option tick, BTC and ETH alike
    for minute in range(minutes):
        now_s = NOW_S + 60.0 * minute
        model.advance(now_s)
        quotes = [model.quote(o.name) for o in opts]
        mark = np.array([q.mark_price for q in quotes])
        half = np.maximum(tick, 0.5 * np.array([q.vega_coin for q in quotes]))
        bid = mark - half
        yield int(now_s * 1000), ChainInputs(
            expiry_ms=np.array([o.expiration_ms for o in opts], dtype=np.int64),
            strike=np.array([o.strike for o in opts]),
            is_call=np.array([o.option_type == "call" for o in opts]),
            bid=np.where(bid >= tick, bid, 0.0), ask=mark + half, mark=mark,
            underlying_price=np.array([q.underlying_price for q in quotes]),
        )


@dataclass(frozen=True)
class Violations:
    butterfly: int  # check points with g < 0 (slices and smiles between / beyond expiries)
    calendar: int  # (tenor, k) points where total variance falls with maturity
    lee: int  # smiles with a wing slope above 2
    k_min: float
    k_max: float

    @property
    def total(self) -> int:
        return self.butterfly + self.calendar + self.lee


def violations(result: SurfaceResult, k_listed: np.ndarray | None = None) -> Violations:
    """Independent arbitrage count of an arbitrage-free method's result (``essvi`` or ``svi``).

    Each recorded slice (its raw-SVI parameters) on k in [-4, 4] and every listed k; for eSSVI
    results also the surface at 120 maturities from 1 hour to 3 years (between and beyond the
    expiries), by finite differences in k, and calendar at every (maturity, k).
    """
    k = np.linspace(-4.0, 4.0, 1601)
    if k_listed is not None:
        kl = np.asarray(k_listed)[np.isfinite(k_listed)]
        k = np.unique(np.concatenate((k, np.linspace(min(kl.min(), -4.0), max(kl.max(), 4.0), 1601))))
    bfly = cal = lee = 0
    for fit in result.expiries:
        assert fit.params is not None
        p = fit.params.as_array()
        bfly += int((butterfly_g(p, k) < -1e-9).sum())
        lee += int(p[1] * (1.0 + abs(p[2])) > 2.0 + 1e-9)
        assert fit.check_k_min <= min(-4.0, float(k.min())) + 1e-9
        assert fit.check_k_max >= max(4.0, float(k.max())) - 1e-9
    # The recorded grid: calendar across its tenors.
    w_grid = result.iv**2 * (result.tenor_days[:, None] / 365.0)
    cal += int((np.diff(w_grid, axis=0) < -1e-12).sum())
    essvi = [f.essvi for f in result.expiries]
    if essvi and all(e is not None for e in essvi):
        th, r, ps = (np.array([e[i] for e in essvi]) for i in range(3))  # type: ignore[index]
        surf = ESSVISurface(years=np.array([f.years for f in result.expiries]), theta=th, rho=r, psi=ps)
        tau = np.unique(np.concatenate((np.geomspace(1 / 8760, 3.0, 120), surf.years)))
        kd = np.linspace(k.min(), k.max(), 4001)
        w = surf.total_variance(tau[:, None], kd[None, :])
        cal += int((np.diff(w, axis=0) < -1e-12).sum())
        h = kd[1] - kd[0]
        w1 = (w[:, 2:] - w[:, :-2]) / (2 * h)
        w2 = (w[:, 2:] - 2 * w[:, 1:-1] + w[:, :-2]) / (h * h)
        km, wm = kd[1:-1], w[:, 1:-1]
        g = (1 - km * w1 / (2 * wm)) ** 2 - w1**2 / 4 * (1 / wm + 0.25) + w2 / 2
        bfly += int((g < -1e-6).sum())  # finite differences: a little slack for truncation error
        lee += int((np.abs(w1[:, [0, -1]]) > 2.0).sum())
    return Violations(butterfly=bfly, calendar=cal, lee=lee, k_min=float(k.min()), k_max=float(k.max()))
