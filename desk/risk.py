"""The book's risk per currency and per expiry bucket (pure; the Console, the planner and the
vega hedger call it).

Units (one place for them): delta in coin, plain Black-76 and premium-adjusted (delta minus the
option's value over the forward, in coin: Deribit's ``delta_total`` convention for coin-settled
options; a linear USDC option has no premium in coin); gamma as Deribit's (d delta / dF, coin per
USD) and as USD per 1% move (``gamma * F * 0.01 * F``: how much the delta's USD value moves for a
1% move of the underlying); vega in USD per vol point, also 30-day-equivalent (``vega *
sqrt(30 / days to expiry)``); theta in USD per day (Deribit's convention, :func:`quant.black76.black76_greeks`).
Options are valued with Black-76 at their mark IV and their own forward (the ticker's
``underlying_price``), T = (expiry - now) in 365-day years; futures carry delta only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from messages.market import Instrument
from messages.state import OptionQuote, PortfolioChanged

#: The tenor 30-day-equivalent vega is scaled to.
EQUIVALENT_DAYS = 30.0


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

    @property
    def difference(self) -> float | None:
        return None if self.exchange is None else self.ours - self.exchange


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


def mark_of(quote: OptionQuote, instrument: Instrument | None = None) -> OptionMark | None:
    """The option's mark from a live quote (None without a usable forward or mark IV)."""
    raise NotImplementedError


def option_exposure(mark: OptionMark, size: float, now: float) -> Exposure:
    """``size`` coins of the option at ``now``."""
    raise NotImplementedError


def currency_risk(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float | None,
                  now: float) -> CurrencyRisk:
    """The currency's risk from its positions and the options' marks."""
    raise NotImplementedError
