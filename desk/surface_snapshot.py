"""A BookKeeper's :class:`ChainSnapshot` into the minute's :class:`SurfaceSnapshot`: the SurfaceBuilder's
logic, pure (the actor only calls :func:`build_surface_snapshot` and publishes). It lives beside the
writers because what it produces is exactly the rows of the minute tables.

The seed program's filters:

- an option with neither a bid nor an ask is dropped (not recorded, counted in ``n_unquoted``);
- the in-the-money side is left out of the surface (:func:`quant.seed_filter`: puts below the
  forward, calls at or above it are used); both sides are recorded with their vols;
- a stale book (a gap or crossed book the BookKeeper has not resynchronised yet) is recorded with
  its vols and ``stale`` set, and left out of the surface and the variance index.

Honest minutes: a minute's *coverage* is the share of the chain's listed options with a two-sided
book and a ticker (bid, ask and mark present, book not stale). Below ``min_coverage`` (the setting
``surface.min_coverage``), or with no such option at all, the minute is *incomplete*: its quotes
are recorded with their vols (and marked incomplete) but no surface, fit or index is built from
them, so the first minute after a start (books in, tickers not yet) is never recorded as good
data. A complete minute whose fit has no expiry to fit is recorded with ``surface_ok`` false.

Each grid point says whether it lies inside the data or is extrapolated (:mod:`quant.coverage`).

A linear (USDC-settled) family's option prices are in USDC: its vols are solved from the price
over the forward (the coin price Black-76 takes); its quotes keep the exchange's USDC prices, and
the snapshot names their unit (``price_currency``).

Everything numeric is one :func:`quant.build_surface` call on flat arrays (bid, ask, mid and mark
vols of every quote at once, the smile fits, the grid, ATM/RR25/BF25 and the variance index); the
few stale quotes get their vols from one more vectorized solver call.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from deribit.instruments import LINEAR_SETTLEMENT, family_of
from messages.state import ChainSnapshot, OptionQuote
from messages.surface import QuoteIV, SmileFit, SurfacePoint, SurfaceSnapshot, TenorFigures
from quant import ChainInputs, SurfaceGrid, SurfaceResult, build_surface, implied_vol_with_reasons
from quant.coverage import inside_data, quoted_k_ranges
from quant.surface import DEFAULT_GRID, MS_PER_YEAR

FloatArray = NDArray[np.float64]
INDEX_TENOR_DAYS = 30.0
#: The coverage below which a minute is incomplete, for callers without settings (the desk's own is
#: ``surface.min_coverage`` in config/default.toml).
DEFAULT_MIN_COVERAGE = 0.5
log = structlog.get_logger(actor="surface_builder")


def _floats(values: list[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _percent(values: FloatArray) -> list[float | None]:
    """Decimal vols to percent, NaN to None (messages and tables hold no NaN)."""
    out = np.round(values * 100.0, 10).astype(object)
    out[~np.isfinite(values)] = None
    return out.tolist()


def _opt(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _solve(prices: FloatArray, forward: FloatArray, strike: FloatArray, years: FloatArray,
           is_call: NDArray[np.bool_]) -> FloatArray:
    """Vols of coin prices (NaN where empty or not solvable)."""
    with np.errstate(invalid="ignore"):
        usd = np.where(prices > 0.0, prices, np.nan) * forward
    vols, _ = implied_vol_with_reasons(usd, forward, strike, years, is_call)
    return np.asarray(vols, dtype=np.float64)


def price_currency_of(chain: ChainSnapshot) -> str:
    """What the chain's option prices are in, always named: the chain's ``price_currency``, else
    (a producer that predates it) its family's (the coin, or USDC for a linear family)."""
    if chain.price_currency:
        return chain.price_currency
    try:
        return family_of(chain.currency).option_price_currency
    except ValueError:  # not a family name (a test's or a tool's chain): its prices are in its coin
        return chain.currency


def quoted_in_usdc(chain: ChainSnapshot) -> bool:
    """Whether the chain's option prices are in USDC (a linear family), not in the coin."""
    return price_currency_of(chain) == LINEAR_SETTLEMENT


def usable_for_surface(option: OptionQuote) -> bool:
    """A two-sided book and a ticker: bid, ask and mark present and the book not stale."""
    return (option.bid is not None and option.bid > 0.0 and option.ask is not None and option.ask > 0.0
            and option.mark_price is not None and not option.stale)


def chain_coverage(chain: ChainSnapshot) -> tuple[int, int, float]:
    """(listed, usable, coverage) of the chain: coverage = usable / listed, 0 when nothing is listed."""
    listed = len(chain.options)
    usable = sum(1 for o in chain.options if usable_for_surface(o))
    return listed, usable, usable / listed if listed else 0.0


def build_surface_snapshot(
    chain: ChainSnapshot,
    *,
    grid: SurfaceGrid = DEFAULT_GRID,
    method: str = "essvi",
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    previous: Mapping[int, tuple[float, ...]] | None = None,
) -> SurfaceSnapshot:
    """Quotes with implied vols, the surface and its figures for one currency at ``chain.at``; an
    incomplete minute (coverage below ``min_coverage``, or nothing usable) has its quotes only;
    ``previous``: the last complete minute's eSSVI slices (raw SVI by expiry_ms), to hold thin expiries."""
    listed, usable, coverage = chain_coverage(chain)
    complete = usable > 0 and coverage >= min_coverage
    coverage_fields: dict[str, Any] = {"coverage": coverage, "complete": complete, "listed": listed,
                                       "usable": usable}
    options: list[OptionQuote] = [
        o for o in chain.options if (o.bid is not None and o.bid > 0.0) or (o.ask is not None and o.ask > 0.0)
    ]
    n_unquoted = len(chain.options) - len(options)
    now_ms = chain.at * 1000.0
    expiry_ms = np.array([o.expiry_ms for o in options], dtype=np.int64)
    strike = np.array([o.strike for o in options], dtype=np.float64)
    is_call = np.array([o.option_type == "call" for o in options], dtype=bool)
    forward = _floats([o.underlying_price for o in options])
    # Every vol is solved from a price in coin (Black-76 with F = underlying_price): a linear
    # family's USDC prices are divided by the forward first. The rows keep the exchange's prices.
    with np.errstate(divide="ignore", invalid="ignore"):
        to_coin = 1.0 / forward if quoted_in_usdc(chain) else np.ones(len(options))
    bid = _floats([o.bid for o in options]) * to_coin
    ask = _floats([o.ask for o in options]) * to_coin
    mark = _floats([o.mark_price for o in options]) * to_coin
    stale = np.array([o.stale for o in options], dtype=bool)
    # Stale books take no part in the surface: their sides are hidden from the fit.
    fit_bid = np.where(stale, np.nan, bid)
    fit_ask = np.where(stale, np.nan, ask)
    inputs = ChainInputs(expiry_ms=expiry_ms, strike=strike, is_call=is_call, bid=fit_bid, ask=fit_ask,
                         mark=mark, underlying_price=forward,
                         index_price=np.nan if chain.index_price is None else chain.index_price)
    result: SurfaceResult | None = None
    notes: tuple[str, ...] = ()
    if not complete:
        notes = (f"incomplete minute: {usable} of {listed} listed options two-sided with a ticker "
                 f"(coverage {coverage:.2f}, minimum {min_coverage:.2f}): quotes only, no surface",)
    else:
        try:
            result = build_surface(inputs, now_ms, grid=grid, method=method,  # type: ignore[arg-type]
                                   variance_index_days=INDEX_TENOR_DAYS, previous=previous)
        except Exception as exc:  # the quotes still get recorded; the failure is logged with its traceback
            log.error("surface_failed", currency=chain.currency, at=chain.at, error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
            notes = (f"surface failed: {type(exc).__name__}: {exc}",)

    years = (expiry_ms.astype(np.float64) - now_ms) / MS_PER_YEAR
    if result is not None:
        q = result.quotes
        bid_iv, ask_iv, mid_iv, mark_iv = q.bid_iv.copy(), q.ask_iv.copy(), q.mid_iv.copy(), q.mark_iv
        in_surface = q.kept
        unsolved = stale  # their sides were hidden from build_surface
    else:
        bid_iv, ask_iv, mid_iv = (np.full(len(options), np.nan) for _ in range(3))
        mark_iv = _solve(mark, forward, strike, years, is_call)
        in_surface = np.zeros(len(options), dtype=bool)
        unsolved = np.ones(len(options), dtype=bool)
    if unsolved.any():
        s = np.nonzero(unsolved)[0]
        with np.errstate(invalid="ignore"):
            two_sided = (bid[s] > 0.0) & (ask[s] > 0.0) & (ask[s] >= bid[s])
        mid = np.where(two_sided, 0.5 * (bid[s] + ask[s]), np.nan)
        vols = _solve(np.concatenate((bid[s], ask[s], mid)), np.tile(forward[s], 3), np.tile(strike[s], 3),
                      np.tile(years[s], 3), np.tile(is_call[s], 3))
        bid_iv[s], ask_iv[s], mid_iv[s] = np.split(vols, 3)

    quotes = _quote_rows(options, bid_iv, ask_iv, mid_iv, mark_iv, stale, in_surface)
    if result is None:
        return SurfaceSnapshot(currency=chain.currency, at=chain.at, method=method, index_price=chain.index_price,
                               quotes=quotes, points=(), fits=(), tenors=(), variance_index=None, atm_iv_30d=None,
                               n_unquoted=n_unquoted, n_stale=int(stale.sum()), surface_ok=False, notes=notes,
                               price_currency=price_currency_of(chain), **coverage_fields)
    return _with_surface(chain, result, quotes, n_unquoted, int(stale.sum()), coverage_fields,
                         inside_grid(result, expiry_ms))


def _quote_rows(options: list[OptionQuote], bid_iv: FloatArray, ask_iv: FloatArray, mid_iv: FloatArray,
                mark_iv: FloatArray, stale: NDArray[np.bool_], in_surface: NDArray[np.bool_]) -> tuple[QuoteIV, ...]:
    columns: list[list[Any]] = [_percent(bid_iv), _percent(ask_iv), _percent(mid_iv), _percent(mark_iv),
                                stale.tolist(), in_surface.tolist()]
    rows = []
    for o, b_iv, a_iv, m_iv, our_mark_iv, is_stale, used in zip(options, *columns, strict=True):
        rows.append(QuoteIV(
            instrument_name=o.instrument_name, expiry_ms=o.expiry_ms, strike=o.strike, option_type=o.option_type,
            underlying_price=o.underlying_price, index_price=o.index_price,
            bid=o.bid, bid_amount=o.bid_amount, bid_iv=b_iv, ask=o.ask, ask_amount=o.ask_amount, ask_iv=a_iv,
            mid_iv=m_iv, mark_price=o.mark_price,
            # Deribit's own mark vol is the reference; ours (same Black-76) only where it sent none.
            mark_iv=o.mark_iv if o.mark_iv is not None else our_mark_iv,
            open_interest=o.open_interest, delta=o.delta, gamma=o.gamma, vega=o.vega, theta=o.theta,
            stale=is_stale, in_surface=used,
        ))
    return tuple(rows)


def inside_grid(result: SurfaceResult, quote_expiry_ms: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(tenors, k) booleans: which grid nodes lie inside the data (:mod:`quant.coverage`); the
    data are the quotes the surface kept that carry a vol (``quote_expiry_ms``: the quotes' expiries,
    in the surface's input order), per fitted expiry."""
    q = result.quotes
    with_vol = q.kept & (np.isfinite(q.bid_iv) | np.isfinite(q.ask_iv) | np.isfinite(q.mid_iv))
    expiry_ms = np.array([e.expiry_ms for e in result.expiries], dtype=np.int64)
    k_min, k_max = quoted_k_ranges(quote_expiry_ms, q.log_moneyness, with_vol, expiry_ms)
    return inside_data(result.tenor_days / 365.0, result.log_moneyness,
                       [e.years for e in result.expiries], k_min, k_max)


def _with_surface(chain: ChainSnapshot, result: SurfaceResult, quotes: tuple[QuoteIV, ...], n_unquoted: int,
                  n_stale: int, coverage_fields: dict[str, Any], inside_nodes: NDArray[np.bool_]) -> SurfaceSnapshot:
    inside = inside_nodes.ravel().tolist()
    points = tuple(
        SurfacePoint(tenor_days=t, log_moneyness=k, iv=None if not np.isfinite(v) else round(v * 100.0, 10),
                     extrapolated=not is_inside)
        for (t, k, v), is_inside in zip(result.grid_points(), inside, strict=True)
    )
    fits = tuple(
        SmileFit(
            expiry_ms=e.expiry_ms, years=e.years, forward=_opt(e.forward), method=e.method,
            parameters=tuple(float(x) for x in e.params.as_array()) if e.params is not None else (),
            rmse=_opt(e.rmse_vol_points), n_quotes=e.n_quotes, butterfly_ok=e.butterfly_ok,
            calendar_ok=e.calendar_ok, min_g=_opt(e.min_g), wing_slope=_opt(e.wing_slope), notes=e.notes,
            check_k_min=_opt(e.check_k_min),
            check_k_max=_opt(e.check_k_max),
        )
        for e in result.expiries
    )
    atm, rr25, bf25 = _percent(result.atm_iv), _percent(result.rr25), _percent(result.bf25)
    tenors = tuple(
        TenorFigures(tenor_days=float(t), atm_iv=a, rr25=r, bf25=b)
        for t, a, r, b in zip(result.tenor_days.tolist(), atm, rr25, bf25, strict=True)
    )
    at_index = [f for f in tenors if f.tenor_days == INDEX_TENOR_DAYS]
    figures = at_index[0] if at_index else TenorFigures(tenor_days=INDEX_TENOR_DAYS, atm_iv=None, rr25=None,
                                                        bf25=None)
    return SurfaceSnapshot(
        currency=chain.currency, at=chain.at, method=result.method, index_price=chain.index_price, quotes=quotes,
        points=points, fits=fits, tenors=tenors, variance_index=_opt(result.variance_index.value),
        atm_iv_30d=figures.atm_iv, rr25_30d=figures.rr25, bf25_30d=figures.bf25, n_unquoted=n_unquoted,
        n_stale=n_stale, surface_ok=bool(result.expiries), notes=result.notes,
        price_currency=price_currency_of(chain), **coverage_fields,
    )
