"""What the SurfaceBuilder publishes each minute, and the Recorder's status.

One :class:`SurfaceSnapshot` per currency and minute: every quoted option with its implied vols
(the rows of ``option_quotes``), the constant-maturity grid (``surface_points``), the per-expiry
smile fits (``surface_fits``), the per-tenor ATM / 25-delta figures and the 30-day variance index
(``volatility_index``). Volatilities are in percent (vol points, as Deribit quotes ``mark_iv``);
``None`` where there is no number (an empty side, a price below intrinsic, an expiry not fitted).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from messages.base import Message


class QuoteIV(Message, frozen=True, kw_only=True):
    """One option at the minute: top of book, ticker figures and implied vols (percent).

    ``bid_iv``, ``ask_iv`` and ``mid_iv`` are Black-76 vols of the book's prices with
    F = ``underlying_price``; ``mark_iv`` is Deribit's own (ours from ``mark_price`` when the
    ticker had none). ``stale``: the book was not known to be the exchange's. ``in_surface``: kept by the seed's
    filter (out of the money, a bid or an ask, not expired) and not stale: the quotes the surface
    is built from."""

    instrument_name: str
    expiry_ms: int
    strike: float
    option_type: Literal["call", "put"]
    underlying_price: float | None
    index_price: float | None
    bid: float | None
    bid_amount: float
    bid_iv: float | None
    ask: float | None
    ask_amount: float
    ask_iv: float | None
    mid_iv: float | None
    mark_price: float | None
    mark_iv: float | None
    open_interest: float | None
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None
    stale: bool
    in_surface: bool


class SurfacePoint(Message, frozen=True, kw_only=True):
    """One node of the constant-maturity grid: vol (percent) at a tenor and ln(K/F).

    ``extrapolated``: the node lies outside the data (a tenor before the first or after the last
    fitted expiry, or a k outside the quoted strikes' range interpolated in time between the
    neighbouring expiries: :mod:`quant.coverage`); ``None`` only from producers that predate it
    (unknown)."""

    tenor_days: float
    log_moneyness: float
    iv: float | None
    extrapolated: bool | None = None


class SmileFit(Message, frozen=True, kw_only=True):
    """One expiry's smile. ``method`` is what was used ("svi", or "linear" by request or as the
    fallback); ``parameters`` the raw-SVI (a, b, rho, m, sigma) in total variance when SVI, else
    empty; ``rmse`` the SVI fit's error in vol points. ``butterfly_ok`` / ``calendar_ok`` are the
    arbitrage checks; ``notes`` say what was found and done. ``check_k_min`` / ``check_k_max``: the
    ln(K/F) range the butterfly check covered (``None``: not said by the producer)."""

    expiry_ms: int
    years: float
    forward: float | None
    method: str
    parameters: tuple[float, ...]
    rmse: float | None
    n_quotes: int
    butterfly_ok: bool
    calendar_ok: bool
    min_g: float | None
    wing_slope: float | None
    notes: tuple[str, ...] = ()
    check_k_min: float | None = None
    check_k_max: float | None = None


class TenorFigures(Message, frozen=True, kw_only=True):
    """At one constant maturity: ATM vol, 25-delta risk reversal and butterfly (vol points)."""

    tenor_days: float
    atm_iv: float | None
    rr25: float | None
    bf25: float | None


class SurfaceSnapshot(Message, frozen=True, kw_only=True):
    """One currency's options at one minute tick ``at`` (unix seconds, a multiple of 60): the
    quotes with IVs, the surface and its derived figures.

    ``variance_index`` is the 30-day index (Cboe VIX method, percent) and ``atm_iv_30d`` the ATM
    vol at 30 days beside it. ``n_unquoted`` options had neither bid nor ask and are not in
    ``quotes``; ``surface_ok`` is false when the fit failed or there was nothing to fit, and only
    the quotes are usable.

    Coverage: ``listed`` options in the chain, ``usable`` of them with a two-sided book and a
    ticker (bid, ask and mark present, book not stale), ``coverage`` = usable / listed. A minute
    below the desk's ``surface.min_coverage`` (or with nothing usable) is not ``complete``: its
    quotes are recorded, marked so, and it has no surface, fits or index. ``coverage`` is None
    from producers that predate it (nothing known)."""

    currency: str
    at: float
    method: str
    index_price: float | None
    quotes: tuple[QuoteIV, ...]
    points: tuple[SurfacePoint, ...]
    fits: tuple[SmileFit, ...]
    tenors: tuple[TenorFigures, ...]
    variance_index: float | None
    atm_iv_30d: float | None
    rr25_30d: float | None = None
    bf25_30d: float | None = None
    n_unquoted: int = 0
    n_stale: int = 0
    surface_ok: bool = True
    notes: tuple[str, ...] = ()
    #: What the quotes' prices are in (the chain's): the coin, or USDC in a linear family (their vols
    #: are solved from the price over the forward, in coin); empty from older producers: the coin.
    price_currency: str = ""
    coverage: float | None = None
    complete: bool = True
    listed: int = 0
    usable: int = 0


class DatabaseHealth(StrEnum):
    """How the Recorder's database answered its last write."""

    UNKNOWN = "unknown"  # not tried yet
    OK = "ok"
    SLOW = "slow"  # answered, but took more than half the write deadline
    HUNG = "hung"  # no answer within the write deadline: the batch went to the spool
    UNREACHABLE = "unreachable"  # refused, lost or locked: the batch went to the spool


class RecorderStatus(Message, frozen=True, kw_only=True):
    """The Recorder's state, published each minute and whenever reachability, health or the
    backlog changes. ``backlog_minutes`` counts currency-minutes waiting in the spool
    (``backlog_batches`` also counts order-audit entries); ``last_written_minute`` is the latest
    minute committed (unix seconds) or ``None``; ``last_error`` the database's last error text;
    ``health`` how its last write went (``reachable`` is False when hung or unreachable)."""

    at: float
    database: str
    reachable: bool
    backlog_minutes: int
    backlog_batches: int
    last_written_minute: float | None
    written_minutes: int
    last_error: str = ""
    health: DatabaseHealth = DatabaseHealth.UNKNOWN
