"""The simulated market: index paths, futures basis, a moving smile per expiry, option marks and greeks.

Deribit's conventions (checked against the real capture): option prices are in coin, the USD
Black-76 value with F = ``underlying_price`` divided by F; ``mark_iv`` is in vol points rounded to
0.01 and ``mark_price`` is Black-76 at that rounded vol; greeks are USD figures: plain Black-76
delta, gamma per USD, vega per vol point, theta per 365-day day, rho per 1% (K T N(d2) / 100).
In the last day before expiry Deribit's theta is minus the option's remaining time value (its
Black-76 value at ``mark_iv`` less intrinsic, in USD): what it loses by expiry, not the
instantaneous rate (the capture's ETH-23JUL21-2300-C at 0.39 days: -0.00146 both ways, the rate
being -0.032). Linear (USDC) options are priced in USDC: the USD value itself.
Everything is seeded: the same seed and the same sequence of ``advance`` times give the same path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.listing import InstrumentSpec
from simulator.settings import SimSettings

YEAR_S = 365.0 * 86400.0
_SQRT2 = math.sqrt(2.0)
_erf = np.frompyfunc(math.erf, 1, 1)
#: Deribit's DVOL tenor, and the variance index's.
DVOL_DAYS = 30.0
# Base ATM vol per currency; the short end trades a premium over it.
BASE_VOL = {"BTC": 0.55, "ETH": 0.70}


def ncdf(x: np.ndarray) -> np.ndarray:
    # np.frompyfunc gives an object array for an array and a bare float for a scalar: asarray covers both.
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(x, dtype=float) / _SQRT2), dtype=float))


def npdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black76_usd(f: np.ndarray, k: np.ndarray, t: np.ndarray, sigma: np.ndarray, call: np.ndarray) -> np.ndarray:
    """Undiscounted Black-76 value in USD (r = 0, as Deribit's ``interest_rate`` is 0)."""
    sd = np.maximum(sigma * np.sqrt(t), 1e-12)
    d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    c = f * ncdf(d1) - k * ncdf(d2)
    p = c - f + k
    return np.where(call, c, p)


def deribit_theta(f: np.ndarray, k: np.ndarray, t: np.ndarray, sigma: np.ndarray, call: np.ndarray) -> np.ndarray:
    """Deribit's ticker theta in USD per day: the Black-76 rate (r = 0, 365-day years), but in the
    last day before expiry minus the option's remaining time value (Black-76 value less intrinsic),
    which is what it loses by expiry."""
    sqrt_t = np.sqrt(t)
    sd = np.maximum(sigma * sqrt_t, 1e-12)
    d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
    rate = -f * npdf(d1) * sigma / (2.0 * np.maximum(sqrt_t, 1e-12)) / 365.0
    intrinsic = np.where(call, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    value = np.maximum(black76_usd(f, k, t, sigma, call), intrinsic)
    return np.asarray(np.where(t * 365.0 < 1.0, -(value - intrinsic), rate))


def implied_vol_coin(
    price: np.ndarray, f: np.ndarray, k: np.ndarray, t: np.ndarray, call: np.ndarray, guess: np.ndarray
) -> np.ndarray:
    """Vectorised implied vol (as a fraction) of coin prices; 0 where the price is below intrinsic.

    Newton from the mark vol with a bisection fallback bracket, so it converges for wings too.
    """
    target = price * f
    intrinsic = np.where(call, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    valid = (price > 0) & (target > intrinsic + 1e-12)
    lo = np.full_like(target, 1e-3)
    hi = np.full_like(target, 8.0)
    s = np.clip(guess, 0.02, 7.9)
    sqrt_t = np.sqrt(t)
    for _ in range(50):
        v = black76_usd(f, k, t, s, call)
        diff = v - target
        done = np.abs(diff) <= 1e-10 * f
        if bool(np.all(done | ~valid)):
            break
        hi = np.where(diff > 0, s, hi)
        lo = np.where(diff <= 0, s, lo)
        sd = np.maximum(s * sqrt_t, 1e-12)
        d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
        vega = f * npdf(d1) * sqrt_t
        newton = s - diff / np.maximum(vega, 1e-300)
        step = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        s = np.where(done, s, step)
    return np.where(valid, s, 0.0)


@dataclass(slots=True)
class CurrencyState:
    index: float
    basis: float
    vol_level: float  # multiplies the base ATM term structure
    skew: float  # slope of vol in standardised moneyness
    smile: float  # curvature


@dataclass(slots=True)
class OptionQuote:
    """Mark figures of one option at the last ``advance``, rounded as Deribit publishes them."""

    mark_price: float
    mark_iv: float
    underlying_price: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float
    vega_coin: float  # value of one vol point in the option's price unit, for the quoting spread
    # The greeks before the tickers' rounding to 5 decimals (delta, gamma, vega, theta): what an
    # account's sums are made of (a BTC option's gamma, about 2e-5, would lose a quarter of itself).
    exact: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


class MarketModel:
    """Index, futures and the option chain of every currency, advanced on an injected clock."""

    def __init__(self, seed: int, settings: SimSettings, now_s: float) -> None:
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.now_s = now_s
        self.state: dict[str, CurrencyState] = {}
        for cur in settings.currencies:
            self.state[cur] = CurrencyState(settings.spot_of(cur), settings.basis, 1.0, -0.03, 0.06)
        # Per-expiry basis noise keeps the futures curve from being perfectly smooth.
        self._expiry_basis: dict[tuple[str, int], float] = {}
        self.options: list[InstrumentSpec] = []
        self.option_index: dict[str, int] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._groups: list[tuple[str, int, np.ndarray]] = []
        self._cols: tuple[list[float], ...] = ()

    # --- listing ---------------------------------------------------------------------------------

    def set_options(self, options: list[InstrumentSpec]) -> None:
        self.options = list(options)
        self.option_index = {o.name: i for i, o in enumerate(self.options)}
        n = len(self.options)
        self._arrays = {
            "k": np.array([o.strike for o in self.options], dtype=float).reshape(n),
            "call": np.array([o.option_type == "call" for o in self.options], dtype=bool).reshape(n),
            "exp": np.array([o.expiration_ms / 1000.0 for o in self.options], dtype=float).reshape(n),
            "linear": np.array([o.is_linear for o in self.options], dtype=bool).reshape(n),
        }
        groups: dict[tuple[str, int], list[int]] = {}
        for i, o in enumerate(self.options):
            groups.setdefault((o.currency, o.expiration_ms), []).append(i)
        self._groups = [(cur, e, np.array(ix, dtype=int)) for (cur, e), ix in groups.items()]
        # Marks are published to 8 decimals for BTC options and 6 for ETH, never below one unit.
        self._arrays["floor"] = np.array(
            [1e-4 if o.is_linear else 1e-8 if o.currency == "BTC" else 1e-6 for o in self.options]
        )
        self.reprice()

    # --- index and forwards ----------------------------------------------------------------------

    def index(self, currency: str) -> float:
        return self.state[currency].index

    def set_index(self, currency: str, price: float) -> None:
        self.state[currency].index = float(price)
        self.reprice()

    def shift_index(self, currency: str, pct: float) -> None:
        self.set_index(currency, self.state[currency].index * (1.0 + pct / 100.0))

    def set_vol_level(self, currency: str, level: float) -> None:
        """Put the level of the currency's implied vols (the factor on its base ATM term
        structure, 1.0 at start) at ``level`` now; it mean-reverts from there as before."""
        self.state[currency].vol_level = float(level)
        self.reprice()

    def vol_level(self, currency: str) -> float:
        return self.state[currency].vol_level

    def advance(self, now_s: float) -> None:
        """Move every process from the last time to ``now_s`` and reprice the chain."""
        dt = (now_s - self.now_s) / YEAR_S
        self.now_s = now_s
        if dt <= 0:
            self.reprice()
            return
        s = self.settings
        for st in self.state.values():
            z = self.rng.standard_normal()
            ret = -0.5 * s.index_vol**2 * dt + s.index_vol * math.sqrt(dt) * z
            jumps = self.rng.poisson(s.jumps_per_year * dt)
            if jumps:
                ret += float(self.rng.normal(0.0, s.jump_size, jumps).sum())
            st.index *= math.exp(ret)
            # Ornstein-Uhlenbeck moves of the smile parameters (mean reversion over ~days).
            k = min(dt * 50.0, 1.0)
            st.vol_level += k * (1.0 - st.vol_level) + 0.6 * math.sqrt(dt) * self.rng.standard_normal()
            st.vol_level = min(max(st.vol_level, 0.4), 2.5)
            st.skew += k * (-0.03 - st.skew) + 0.3 * math.sqrt(dt) * self.rng.standard_normal()
            st.skew = min(max(st.skew, -0.25), 0.25)
            st.basis += k * (s.basis - st.basis) + 0.2 * math.sqrt(dt) * self.rng.standard_normal()
            # A vol spike goes with a jump down, as in crypto sell-offs.
            if jumps and ret < 0:
                st.vol_level = min(st.vol_level * (1.0 - 2.0 * ret), 2.5)
        self.reprice()

    def years_to(self, expiration_ms: int) -> float:
        return max(expiration_ms / 1000.0 - self.now_s, 0.0) / YEAR_S

    def forward(self, currency: str, expiration_ms: int) -> float:
        st = self.state[currency]
        t = self.years_to(expiration_ms)
        key = (currency, expiration_ms)
        noise = self._expiry_basis.get(key)
        if noise is None:
            noise = float(self.rng.normal(0.0, 0.01))
            self._expiry_basis[key] = noise
        return st.index * math.exp((st.basis + noise) * t)

    def perpetual(self, currency: str) -> float:
        st = self.state[currency]
        return st.index * (1.0 + 0.0001 * math.tanh(st.basis * 10.0))

    def future_price(self, spec: InstrumentSpec) -> float:
        if spec.expiry is None:
            return self.perpetual(spec.currency)
        return self.forward(spec.currency, spec.expiration_ms)

    def atm_vol(self, currency: str, t: np.ndarray) -> np.ndarray:
        base = BASE_VOL.get(currency, 0.7) * self.state[currency].vol_level
        return base * (1.0 + 0.25 * np.exp(-t / 0.05))

    # --- the option chain ------------------------------------------------------------------------

    def reprice(self) -> None:
        """Recompute every option's mark, vol and greeks (vectorised over the whole chain)."""
        if not self.options:
            self._cols = ()
            return
        a = self._arrays
        t = np.maximum((a["exp"] - self.now_s) / YEAR_S, 1.0 / YEAR_S)
        n = len(self.options)
        f = np.empty(n)
        sigma = np.empty(n)
        for cur, e, ix in self._groups:
            st = self.state[cur]
            fwd = self.forward(cur, e)
            f[ix] = fwd
            atm = self.atm_vol(cur, t[ix])
            x = np.clip(np.log(a["k"][ix] / fwd) / (atm * np.sqrt(t[ix])), -4.0, 4.0)
            sigma[ix] = np.clip(atm * (1.0 + st.skew * x + st.smile * x * x), 0.1, 4.0)
        # Deribit publishes mark_iv to 0.01 and the mark at that vol.
        iv = np.round(sigma * 100.0, 2)
        s = iv / 100.0
        k = a["k"]
        call = a["call"]
        sqrt_t = np.sqrt(t)
        sd = s * sqrt_t
        d1 = (np.log(f / k) + 0.5 * sd * sd) / sd
        d2 = d1 - sd
        nd1 = ncdf(d1)
        nd2 = ncdf(d2)
        pdf = npdf(d1)
        usd = np.where(call, f * nd1 - k * nd2, k * (1.0 - nd2) - f * (1.0 - nd1))
        coin = np.maximum(usd / f, 1e-8)
        delta = np.where(call, nd1, nd1 - 1.0)
        gamma = pdf / (f * sd)
        vega = f * pdf * sqrt_t / 100.0
        theta = deribit_theta(f, k, t, s, call)
        rho = np.where(call, k * t * nd2, -k * t * (1.0 - nd2)) / 100.0
        self._arrays["t"] = t
        self._arrays["f"] = f
        self._arrays["iv"] = iv
        floor = self._arrays["floor"]
        linear = a["linear"]
        mark = np.where(
            linear,
            np.maximum(np.round(usd, 4), floor),
            np.maximum(np.where(floor < 1e-7, np.round(coin, 8), np.round(coin, 6)), floor),
        )
        self._cols = (
            mark.tolist(),
            iv.tolist(),
            np.round(f, 2).tolist(),
            np.round(delta, 5).tolist(),
            np.round(gamma, 5).tolist(),
            np.round(vega, 5).tolist(),
            np.round(theta, 5).tolist(),
            np.round(rho, 5).tolist(),
            np.where(linear, vega, vega / f).tolist(),
            delta.tolist(),
            gamma.tolist(),
            vega.tolist(),
            theta.tolist(),
        )

    def smile(self, currency: str, t: float, fwd: float) -> Callable[[np.ndarray], np.ndarray]:
        """The model's implied vol (fraction) as a function of strike at ``t`` years (before the
        0.01 rounding of mark_iv): the same smile every option of that expiry is marked on."""
        st = self.state[currency]
        atm = float(self.atm_vol(currency, np.array([t]))[0])

        def sigma(k: np.ndarray) -> np.ndarray:
            x = np.clip(np.log(k / fwd) / (atm * math.sqrt(t)), -4.0, 4.0)
            return np.asarray(np.clip(atm * (1.0 + st.skew * x + st.smile * x * x), 0.1, 4.0))

        return sigma

    def volatility_index(self, currency: str) -> float:
        """DVOL of ``currency`` in vol points (2 decimals), from the simulator's own smile.

        Deribit's DVOL is a 30-day variance-swap implied vol (the VIX method on its option chain,
        interpolated between the expiries around 30 days). The model's smile is defined at every
        maturity, so the strip is taken at exactly 30 days on the 30-day forward: no interpolation
        between listed expiries is needed."""
        t = DVOL_DAYS / 365.0
        st = self.state[currency]
        fwd = st.index * math.exp(st.basis * t)
        return round(100.0 * variance_swap_vol(fwd, t, self.smile(currency, t, fwd)), 2)

    def exact_variance(self, currency: str, days: float = DVOL_DAYS) -> float:
        """The model's own ``days``-day variance (annualised, a fraction squared: 0.36 = 60 vol
        points): the fair strike of a variance swap on the model's forward at that maturity, from the
        model's own smile there (unrounded, :func:`strip_variance`). The truth a 30-day variance
        index computed from this market's quotes is measured against."""
        t = days / 365.0
        st = self.state[currency]
        fwd = st.index * math.exp(st.basis * t)
        return strip_variance(fwd, t, self.smile(currency, t, fwd))

    def quote(self, name: str) -> OptionQuote:
        """Mark figures of one option at the last ``advance``."""
        i = self.option_index[name]
        c = self._cols
        return OptionQuote(c[0][i], c[1][i], c[2][i], c[3][i], c[4][i], c[5][i], c[6][i], c[7][i], c[8][i],
                           (c[9][i], c[10][i], c[11][i], c[12][i]))

    def mark(self, name: str) -> float:
        return self._cols[0][self.option_index[name]]

    def implied_vols(self, names: list[str], prices: list[float]) -> list[float]:
        """Implied vols in vol points (2 decimals) of coin prices for the named options; 0 for none."""
        if not names:
            return []
        idx = np.array([self.option_index[n] for n in names], dtype=int)
        a = self._arrays
        px = np.asarray(prices, dtype=float)
        iv = implied_vol_coin(
            np.where(a["linear"][idx], px / a["f"][idx], px),
            a["f"][idx],
            a["k"][idx],
            a["t"][idx],
            a["call"][idx],
            a["iv"][idx] / 100.0,
        )
        return np.round(iv * 100.0, 2).tolist()



def variance_swap_vol(f: float, t: float, sigma_of: Callable[[np.ndarray], np.ndarray]) -> float:
    """Vol (fraction) of a ``t``-year variance swap on a forward ``f`` whose smile is ``sigma_of(K)``.

    The VIX / DVOL formula on a strip of out-of-the-money options:
    ``sigma^2 = 2/T sum dK/K^2 Q(K) - 1/T (F/K0 - 1)^2`` with K0 the strike just below F; the
    strip is dense (from 1% to 10x the forward), so truncation and discreteness are negligible.
    """
    k = f * np.exp(np.linspace(math.log(0.01), math.log(10.0), 4001))
    sig = sigma_of(k)
    call = k >= f
    q = black76_usd(np.full_like(k, f), k, np.full_like(k, t), sig, call)
    dk = np.gradient(k)
    k0 = k[k <= f][-1]
    var = 2.0 / t * float(np.sum(dk / (k * k) * q)) - (f / k0 - 1.0) ** 2 / t
    return math.sqrt(max(var, 0.0))


def strip_variance(f: float, t: float, sigma_of: Callable[[np.ndarray], np.ndarray]) -> float:
    """Exact variance-swap variance (annualised, fraction squared) of a ``t``-year maturity with
    forward ``f`` and smile ``sigma_of(K)``: ``2/T * integral of Q(K)/K^2 dK`` over every strike,
    Q the out-of-the-money option (puts below F, calls above; at K = F both are equal, so the VIX
    formula's K0 correction term is zero). Integrated in u = ln(K/F) over |u| <= 12 (Q/K is below
    1e-15 of F there for any vol the model allows: 4.0 at most) with Simpson's rule on each side of
    u = 0, where Q has its kink: on a flat smile from 10% to 400% it gives the vol back to 1e-10."""
    half = 12_000  # intervals per side (even: Simpson)
    u = np.linspace(-12.0, 12.0, 2 * half + 1)
    k = f * np.exp(u)
    q = black76_usd(np.full_like(k, f), k, np.full_like(k, t), sigma_of(k), k >= f)
    integrand = q / k  # Q(K)/K^2 dK = Q(K)/K du
    weights = np.ones(half + 1)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    du = float(u[1] - u[0])
    integral = du / 3.0 * (float(weights @ integrand[:half + 1]) + float(weights @ integrand[half:]))
    return 2.0 / t * integral
