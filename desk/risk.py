"""The book's risk per currency and per expiry bucket (pure; the Console, the planner and the
vega hedger call it).

Units (one place for them): delta in coin, plain Black-76 and premium-adjusted (delta minus the
option's value over the forward, in coin: Deribit's ``delta_total`` convention for coin-settled
options; a linear USDC option has no premium in coin); gamma as Deribit's (d delta / dF, coin per
USD) and as USD per 1% move (``gamma * F * 0.01 * F``: how much the delta's USD value moves for a
1% move of the underlying); vega in USD per vol point, also 30-day-equivalent (``vega *
sqrt(30 / days to expiry)``); theta in USD per day (Deribit's convention, :func:`quant.black76.black76_greeks`).
Options are valued with Black-76 at their mark IV and their own forward (the ticker's
``underlying_price``), T = (expiry - now) in 365-day years; futures carry delta only (their size in
coin: the exchange's ``size_currency``, else the contract maths of their identity). ``value_usd``
is the options' value in coin (the exchange's mark price where the mark has one, else the model's)
at the index; the premium taken off the delta is that same mark price.

Checked against Deribit (tests/unit/test_risk.py): on every option ticker of the real 2021-07-22
capture one coin's delta is the ticker's within 1e-5, gamma within the ticker's 5-decimal rounding
(so gamma is per USD), vega within 0.1% (USD per vol point) and theta (USD per day) within 0.1%, 2% in
the last day; Deribit's documented account answers satisfy ``delta_total = options_delta -
options_value + futures`` (the Net Transaction Delta; ``options_delta`` is the plain delta), which
is our ``total.delta_pa``. The exchange's account figures are sums over positions of size x those
greeks; :data:`ACCOUNT_TOLERANCE` says how far ours may be from them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from deribit import contracts
from deribit.instruments import (
    InstrumentIdentity,
    InstrumentNameError,
    expiry_of,
    format_expiry,
    identity_of,
)
from desk.plausibility import PlausibilityLimits
from messages.account import Position
from messages.market import Instrument
from messages.state import OptionQuote, PortfolioChanged
from quant.black76 import DAYS_PER_YEAR, black76_greeks

#: The tenor 30-day-equivalent vega is scaled to.
EQUIVALENT_DAYS = 30.0
#: The highest mark IV (a fraction) an option is valued at: the plausibility gate's bound (1000%).
MAX_IV = PlausibilityLimits().max_iv_pct / 100.0
MS_PER_YEAR = DAYS_PER_YEAR * 86_400_000.0

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class OptionMark:
    """What one option is valued from: its contract, its forward (USD), its mark IV (a fraction,
    0.65 for 65%) and mark price (coin; USDC when ``linear``)."""

    instrument_name: str
    expiry_ms: int
    strike: float
    is_call: bool
    forward: float
    mark_iv: float
    mark_price: float | None = None
    index_price: float | None = None
    linear: bool = False


@dataclass(frozen=True, slots=True)
class Exposure:
    """Greeks of a position or of a sum of them, in the module's units. ``value_usd`` is the
    options' mark value (futures: 0)."""

    delta: float = 0.0
    delta_pa: float = 0.0
    gamma: float = 0.0
    gamma_usd_1pct: float = 0.0
    vega_usd: float = 0.0
    vega_30d_usd: float = 0.0
    theta_usd: float = 0.0
    value_usd: float = 0.0

    def __add__(self, other: Exposure) -> Exposure:
        return Exposure(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[float, ...]:
        return (self.delta, self.delta_pa, self.gamma, self.gamma_usd_1pct, self.vega_usd, self.vega_30d_usd,
                self.theta_usd, self.value_usd)


@dataclass(frozen=True, slots=True)
class RiskBucket:
    """One expiry's positions (``expiry_ms`` None: the perpetual and anything without expiry)."""

    label: str  # 27DEC26, or PERPETUAL
    expiry_ms: int | None
    exposure: Exposure
    positions: int


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """One of the exchange's account figures beside ours (``exchange`` None: not sent)."""

    name: str  # options_delta, delta_total, options_gamma, options_vega, options_theta
    ours: float
    exchange: float | None
    #: How far apart the two may be and still agree (:data:`ACCOUNT_TOLERANCE`); None: not said.
    tolerance: float | None = None

    @property
    def difference(self) -> float | None:
        return None if self.exchange is None else self.ours - self.exchange

    @property
    def agrees(self) -> bool | None:
        """Within ``tolerance`` of the exchange's figure (None: nothing to compare)."""
        diff = self.difference
        if diff is None or self.tolerance is None:
            return None
        return abs(diff) <= self.tolerance


@dataclass(frozen=True, slots=True)
class CurrencyRisk:
    """One currency's book at ``now``: per expiry bucket and in total (options alone and with the
    futures), the exchange's account figures beside ours, and the positions that could not be
    valued (``missing``: no usable mark, named with why; they are left out of every figure)."""

    currency: str
    at: float
    index_price: float | None
    buckets: tuple[RiskBucket, ...]
    options: Exposure
    total: Exposure
    account: tuple[AccountCheck, ...] = ()
    missing: tuple[str, ...] = ()
    #: How many of the buckets' positions are options (a dated future shares its expiry's bucket).
    option_positions: int | None = None


#: The agreement bound of each account figure: ``absolute + relative * gross``, where ``gross`` is
#: the sum of the positions' absolute contributions to it. The relative part covers the inputs'
#: rounding (Deribit's ``mark_iv`` to 0.01 vol point, its ticker greeks to 5 decimals: on the real
#: capture Black-76 at ``mark_iv`` gives the tickers' delta within 1e-5 and vega and theta within
#: 0.1%), the absolute part the account figure's own rounding (Deribit sends 4 to 5 decimals; the
#: simulator rounds options_delta, vega and theta to 4, gamma to 5) and, for the deltas, the
#: mark price's rounding to its tick.
ACCOUNT_TOLERANCE: dict[str, tuple[float, float]] = {
    "options_delta": (2e-4, 1e-4),
    "delta_total": (2e-4, 1e-4),
    "options_gamma": (2e-5, 1e-3),
    "options_vega": (2e-4, 2e-3),
    "options_theta": (2e-4, 2e-3),
}


def mark_problem(mark: OptionMark, now: float) -> str | None:
    """Why ``mark`` cannot value its option at ``now`` (None: it can). Refused: a forward, strike,
    mark IV, mark price or index that is not a finite number in its range (IV in (0, MAX_IV]), and
    an option at or past its expiry."""
    f, k, iv = mark.forward, mark.strike, mark.mark_iv
    if not (isinstance(f, float | int) and math.isfinite(f) and f > 0):
        return f"forward {f!r} is not a positive number"
    if not (isinstance(k, float | int) and math.isfinite(k) and k > 0):
        return f"strike {k!r} is not a positive number"
    if not (isinstance(iv, float | int) and math.isfinite(iv) and 0 < iv <= MAX_IV):
        return f"mark IV {iv!r} is outside (0, {MAX_IV:g}]"
    if mark.mark_price is not None and not (math.isfinite(mark.mark_price) and mark.mark_price >= 0):
        return f"mark price {mark.mark_price!r} is not a price"
    if mark.index_price is not None and not (math.isfinite(mark.index_price) and mark.index_price > 0):
        return f"index price {mark.index_price!r} is not a positive number"
    if mark.expiry_ms <= now * 1000.0:
        return "expired"
    return None


def mark_of(quote: OptionQuote, instrument: Instrument | None = None) -> OptionMark | None:
    """The option's mark from a live quote (None without a usable forward or mark IV; a stale quote
    keeps its mark: the mark is the exchange's ticker, not the book). ``mark_iv`` turns from
    percent into a fraction. Linear (USDC-settled) from the instrument's metadata; without it the
    option is taken as inverse (coin-settled)."""
    f, iv = quote.underlying_price, quote.mark_iv
    if f is None or iv is None or not (math.isfinite(f) and f > 0 and math.isfinite(iv) and iv > 0):
        return None
    linear = identity_of(instrument).is_linear if instrument is not None else False
    return OptionMark(instrument_name=quote.instrument_name, expiry_ms=quote.expiry_ms, strike=quote.strike,
                      is_call=quote.option_type == "call", forward=f, mark_iv=iv / 100.0,
                      mark_price=quote.mark_price, index_price=quote.index_price, linear=linear)


def marks_of(quotes: Iterable[OptionQuote], instruments: Mapping[str, Instrument] | None = None
             ) -> dict[str, OptionMark]:
    """The usable marks of a chain's quotes (a ``ChainView``'s or ``ChainSnapshot``'s options), by
    name; ``instruments`` tells linear options from inverse ones."""
    out: dict[str, OptionMark] = {}
    for quote in quotes:
        mark = mark_of(quote, instruments.get(quote.instrument_name) if instruments else None)
        if mark is not None:
            out[quote.instrument_name] = mark
    return out


@dataclass(frozen=True, slots=True)
class OptionArrays:
    """Options as arrays, one entry per position (what the vectorised risk and scenarios run on)."""

    names: tuple[str, ...]
    expiry_ms: NDArray[np.int64]
    strike: FloatArray
    is_call: NDArray[np.bool_]
    forward: FloatArray
    iv: FloatArray
    size: FloatArray
    mark_price: FloatArray  # the exchange's, NaN where not given
    index: FloatArray  # what coin amounts are valued at (USD)
    linear: NDArray[np.bool_]

    @classmethod
    def of(cls, marks: Sequence[OptionMark], sizes: Sequence[float], index_price: float | None = None) -> OptionArrays:
        """``index_price`` (finite, positive) values every coin amount; otherwise each mark's own
        index, else its forward."""
        def idx(m: OptionMark) -> float:
            if index_price is not None and math.isfinite(index_price) and index_price > 0:
                return index_price
            return m.index_price if m.index_price is not None else m.forward
        return cls(
            names=tuple(m.instrument_name for m in marks),
            expiry_ms=np.array([m.expiry_ms for m in marks], dtype=np.int64),
            strike=np.array([m.strike for m in marks], dtype=np.float64),
            is_call=np.array([m.is_call for m in marks], dtype=bool),
            forward=np.array([m.forward for m in marks], dtype=np.float64),
            iv=np.array([m.mark_iv for m in marks], dtype=np.float64),
            size=np.array(sizes, dtype=np.float64),
            mark_price=np.array([np.nan if m.mark_price is None else m.mark_price for m in marks], dtype=np.float64),
            index=np.array([idx(m) for m in marks], dtype=np.float64),
            linear=np.array([m.linear for m in marks], dtype=bool),
        )

    def years(self, now: float) -> FloatArray:
        return np.asarray((self.expiry_ms - now * 1000.0) / MS_PER_YEAR, dtype=np.float64)


def exposures(options: OptionArrays, now: float) -> FloatArray:
    """One row per option, the columns of :meth:`Exposure.astuple` (the module's units)."""
    years = options.years(now)
    g = black76_greeks(options.forward, options.strike, years, options.iv, options.is_call)
    f, size, linear = options.forward, options.size, options.linear
    price = np.asarray(g.price, dtype=np.float64)
    # The option's price in its own unit (coin, or USDC when linear): the exchange's mark where
    # sent (Deribit subtracts its mark price), else the model's at the mark IV.
    model = np.where(linear, price, price / f)
    unit_price = np.where(np.isfinite(options.mark_price), options.mark_price, model)
    delta = size * np.asarray(g.delta)
    delta_pa = delta - np.where(linear, 0.0, size * unit_price)
    gamma = size * np.asarray(g.gamma)
    vega = size * np.asarray(g.vega)
    days = np.maximum(years * DAYS_PER_YEAR, 1e-12)
    out = np.empty((size.size, 8), dtype=np.float64)
    out[:, 0] = delta
    out[:, 1] = delta_pa
    out[:, 2] = gamma
    out[:, 3] = gamma * f * f * 0.01
    out[:, 4] = vega
    out[:, 5] = vega * np.sqrt(EQUIVALENT_DAYS / days)
    out[:, 6] = size * np.asarray(g.theta)
    out[:, 7] = size * np.where(linear, unit_price, unit_price * options.index)
    return out


def per_coin_exposures(forward: FloatArray, strike: FloatArray, expiry_ms: NDArray[np.int64], iv: FloatArray,
                       is_call: NDArray[np.bool_], linear: NDArray[np.bool_] | bool, now: float) -> FloatArray:
    """One coin of each option at Black-76's price (no exchange mark; valued at its own forward): the
    rows of :func:`exposures`, in the module's units (``iv`` a fraction). What the exposure planner
    weighs its candidates with, so that the units are this module's alone."""
    forward = np.asarray(forward, dtype=np.float64)
    n = forward.size
    options = OptionArrays(
        names=("",) * n, expiry_ms=np.asarray(expiry_ms, dtype=np.int64), strike=np.asarray(strike, dtype=np.float64),
        is_call=np.asarray(is_call, dtype=bool), forward=forward, iv=np.asarray(iv, dtype=np.float64),
        size=np.ones(n), mark_price=np.full(n, np.nan), index=forward.copy(),
        linear=np.broadcast_to(np.asarray(linear, dtype=bool), (n,)))
    return exposures(options, now)


def option_exposure(mark: OptionMark, size: float, now: float) -> Exposure:
    """``size`` coins of the option at ``now``. Raises ``ValueError`` for a mark that cannot value
    it (:func:`mark_problem`) or a size that is not a finite number."""
    problem = mark_problem(mark, now)
    if problem is None and not math.isfinite(size):
        problem = f"size {size!r} is not a number"
    if problem is not None:
        raise ValueError(f"{mark.instrument_name}: {problem}")
    row = exposures(OptionArrays.of([mark], [size]), now)[0]
    return Exposure(*(float(x) for x in row))


@dataclass(frozen=True, slots=True)
class FutureLeg:
    """A future or perpetual position as risk and scenarios see it: its delta in coin, its maths
    (None: no metadata; then only the delta is known) and its expiry (None: perpetual)."""

    instrument_name: str
    size: float
    delta: float
    mark_price: float
    money: contracts.Money | None
    expiry_ms: int | None


def _identity(name: str, instruments: Mapping[str, Instrument] | None) -> InstrumentIdentity | None:
    instrument = instruments.get(name) if instruments else None
    return identity_of(instrument) if instrument is not None else None


def future_leg(position: Position, instruments: Mapping[str, Instrument] | None = None) -> FutureLeg | str:
    """The future's leg, or why it cannot be had. Its delta is the exchange's ``size_currency``
    where sent (kept current by the Portfolio at each mark), else the contract maths of its identity
    (:func:`deribit.contracts.mark`: an inverse future's ``size / mark``, a linear one's size)."""
    name = position.instrument_name
    identity = _identity(name, instruments)
    money = contracts.money_of(identity) if identity is not None else None
    try:
        expiry = expiry_of(name, identity)
    except InstrumentNameError:
        return "not an instrument name this desk reads"
    mark = position.mark_price
    mark_ok = mark is not None and math.isfinite(mark) and mark > 0
    if not math.isfinite(position.size):
        return f"size {position.size!r} is not a number"
    coin = position.size_currency
    if coin is None or not math.isfinite(coin):
        if money is None or not money.is_future:
            return "no size in coin and no instrument metadata to compute it"
        if not mark_ok:
            return f"mark price {mark!r} is not a price"
        price = float(mark)  # type: ignore[arg-type]
        coin = contracts.mark(money, contracts.Holding(position.size, price, price), price).delta
        if coin is None:
            return "no delta from the contract maths"
    return FutureLeg(name, position.size, float(coin), float(mark) if mark_ok else math.nan,  # type: ignore[arg-type]
                     money, expiry)


@dataclass(frozen=True, slots=True)
class BookLegs:
    """A portfolio split into what can be valued: options (with their marks), futures, and the
    positions left out with why."""

    options: OptionArrays
    marks: tuple[OptionMark, ...]
    futures: tuple[FutureLeg, ...]
    missing: tuple[str, ...]


def _usable(marks: Sequence[OptionMark], sizes: Sequence[float], now: float) -> NDArray[np.bool_]:
    """Which marks :func:`mark_problem` would pass, with finite sizes, in one array pass (the
    reasons are asked of :func:`mark_problem` only for those that fail)."""
    try:
        f = np.array([m.forward for m in marks], dtype=np.float64)
        k = np.array([m.strike for m in marks], dtype=np.float64)
        iv = np.array([m.mark_iv for m in marks], dtype=np.float64)
        price = np.array([0.0 if m.mark_price is None else m.mark_price for m in marks], dtype=np.float64)
        index = np.array([1.0 if m.index_price is None else m.index_price for m in marks], dtype=np.float64)
        expiry = np.array([m.expiry_ms for m in marks], dtype=np.float64)
        size = np.array(sizes, dtype=np.float64)
    except (TypeError, ValueError):  # something that is no number at all: one at a time
        return np.array([mark_problem(m, now) is None and isinstance(z, float | int) and math.isfinite(z)
                         for m, z in zip(marks, sizes, strict=True)], dtype=bool)
    with np.errstate(invalid="ignore"):
        ok = ((f > 0) & (f < np.inf) & (k > 0) & (k < np.inf) & (iv > 0) & (iv <= MAX_IV)
              & (price >= 0) & (price < np.inf) & (index > 0) & (index < np.inf) & (expiry > now * 1000.0)
              & np.isfinite(size))
    return np.asarray(ok, dtype=bool)


def book_legs(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float | None,
              now: float, instruments: Mapping[str, Instrument] | None = None) -> BookLegs:
    """The portfolio's positions split into valued options, futures and the ones left out (named
    with why, in the portfolio's order)."""
    candidates: list[OptionMark] = []
    sizes: list[float] = []
    at: list[int] = []
    futures: list[FutureLeg] = []
    missing: list[tuple[int, str]] = []
    for i, position in enumerate(portfolio.positions):
        name = position.instrument_name
        if position.size == 0:
            continue
        if position.kind == "option":
            mark = marks.get(name)
            if mark is None:
                missing.append((i, f"{name}: no mark"))
            else:
                candidates.append(mark)
                sizes.append(position.size)
                at.append(i)
        elif position.kind == "future":
            leg = future_leg(position, instruments)
            if isinstance(leg, str):
                missing.append((i, f"{name}: {leg}"))
            else:
                futures.append(leg)
        else:
            missing.append((i, f"{name}: kind {position.kind!r} is not modelled"))
    ok = _usable(candidates, sizes, now)
    for j in np.nonzero(~ok)[0]:
        mark = candidates[j]
        problem = mark_problem(mark, now) or f"size {sizes[j]!r} is not a number"
        missing.append((at[j], f"{mark.instrument_name}: {problem}"))
    held = [m for m, good in zip(candidates, ok, strict=True) if good]
    held_sizes = [z for z, good in zip(sizes, ok, strict=True) if good]
    return BookLegs(OptionArrays.of(held, held_sizes, index_price), tuple(held), tuple(futures),
                    tuple(text for _, text in sorted(missing)))


def expiry_label(expiry_ms: int | None) -> str:
    if expiry_ms is None:
        return "PERPETUAL"
    return format_expiry(dt.datetime.fromtimestamp(expiry_ms / 1000.0, tz=dt.UTC).date())


def _gross(options: OptionArrays, rows: FloatArray, futures: Sequence[FutureLeg]) -> dict[str, float]:
    a = np.abs(rows)
    fut = sum(abs(f.delta) for f in futures)
    return {"options_delta": float(a[:, 0].sum()),
            "delta_total": float(a[:, 0].sum() + np.abs(rows[:, 0] - rows[:, 1]).sum() + fut),
            "options_gamma": float(a[:, 2].sum()), "options_vega": float(a[:, 4].sum()),
            "options_theta": float(a[:, 6].sum())}


def currency_risk(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float | None,
                  now: float, instruments: Mapping[str, Instrument] | None = None) -> CurrencyRisk:
    """The currency's risk from its positions and the options' marks. ``instruments`` (optional)
    gives the futures' identity where the positions lack ``size_currency``. A non-finite or
    non-positive ``index_price`` counts as none (each option's own index, else its forward, then
    values its coin amounts)."""
    if index_price is not None and not (math.isfinite(index_price) and index_price > 0):
        index_price = None
    legs = book_legs(portfolio, marks, index_price, now, instruments)
    rows = exposures(legs.options, now)
    # Futures: delta (and the same as premium-adjusted delta), nothing else.
    fut_rows = np.zeros((len(legs.futures), 8), dtype=np.float64)
    fut_rows[:, 0] = fut_rows[:, 1] = [f.delta for f in legs.futures]
    expiries = [int(e) for e in legs.options.expiry_ms] + [
        f.expiry_ms if f.expiry_ms is not None else -1 for f in legs.futures]
    all_rows = np.vstack((rows, fut_rows))
    # A row left NaN by anything that slipped through the gates is refused, never summed.
    bad: NDArray[np.bool_] = np.asarray(~np.isfinite(all_rows).all(axis=1), dtype=bool)
    missing = list(legs.missing)
    names = list(legs.options.names) + [f.instrument_name for f in legs.futures]
    missing += [f"{names[j]}: its greeks are not finite" for j in np.nonzero(bad)[0]]
    keep = ~bad
    n_opt = rows.shape[0]
    is_option = np.arange(all_rows.shape[0]) < n_opt
    key = np.array(expiries, dtype=np.int64)
    buckets: list[RiskBucket] = []
    if keep.any():
        uniq, inverse = np.unique(key[keep], return_inverse=True)
        sums = np.zeros((uniq.size, 8), dtype=np.float64)
        np.add.at(sums, inverse, all_rows[keep])
        counts = np.bincount(inverse, minlength=uniq.size)
        order = [i for i in range(uniq.size) if uniq[i] >= 0] + [i for i in range(uniq.size) if uniq[i] < 0]
        for i in order:
            expiry = int(uniq[i]) if uniq[i] >= 0 else None
            exposure = Exposure(*(float(x) for x in sums[i]))
            buckets.append(RiskBucket(expiry_label(expiry), expiry, exposure, int(counts[i])))
    opt_sum = all_rows[keep & is_option].sum(axis=0)
    tot_sum = all_rows[keep].sum(axis=0)
    options = Exposure(*(float(x) for x in opt_sum))
    total = Exposure(*(float(x) for x in tot_sum))
    ok_futures = [f for f, b in zip(legs.futures, bad[n_opt:], strict=True) if not b]
    gross = _gross(legs.options, rows[~bad[:n_opt]], ok_futures)
    ours = {"options_delta": options.delta, "delta_total": total.delta_pa, "options_gamma": options.gamma,
            "options_vega": options.vega_usd, "options_theta": options.theta_usd}
    account = tuple(
        AccountCheck(name, ours[name], getattr(portfolio, name),
                     ACCOUNT_TOLERANCE[name][0] + ACCOUNT_TOLERANCE[name][1] * gross[name])
        for name in ("options_delta", "delta_total", "options_gamma", "options_vega", "options_theta"))
    return CurrencyRisk(currency=portfolio.currency, at=now, index_price=index_price, buckets=tuple(buckets),
                        options=options, total=total, account=account, missing=tuple(missing),
                        option_positions=int((keep & is_option).sum()))
