"""Plots from the database (matplotlib, Agg; no display needed): ``python main.py plot ...``.

- ``smile``: one panel per expiry (or the one ``--expiry``): implied vol against strike (log scale),
  a second x axis in Black-76 delta (puts below the forward, calls above), the forward and the ATM
  strike as labelled vertical lines, bid, ask and mark IVs of the out-of-the-money quotes as points,
  the fitted smile as a line, dashed and lighter outside the quoted strikes (extrapolation);
- ``surface``: the constant-maturity grid as a heatmap, tenor against log-moneyness, each cell's
  vol written in it; the colour scale runs over the 2nd to 98th percentile of the points inside the
  data (one extrapolated short-dated wing does not set it); extrapolated cells are hatched;
- ``term``: the grid's ATM term line, each fitted expiry's ATM vol at its own maturity, and the
  30-day variance index and Deribit's DVOL as points at 30 days.

Each reads one minute: the latest recorded for the currency, or the latest at or before ``--at``.
A minute that is incomplete (``minute_coverage.complete`` false) or has no surface is refused,
naming the nearest complete minute.

Databases before schema 4 (no ``surface_points.extrapolated``, ``surface_fits.check_k_min/max``,
``minute_coverage``) are read too: :class:`Schema` says what the database has (one inspection per
engine). A grid point without an ``extrapolated`` flag (an old row, NULL) is classed from the
minute's own data: inside when its tenor lies between the first and last fitted expiry and its
ln(K/F) within the quoted strikes' range interpolated linearly in time between the neighbouring
expiries (the rule of quant/coverage.py); a minute without quotes to derive it from draws every
point as data.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FixedLocator, NullLocator
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from quant.black76 import black76_greeks
from quant.coverage import inside_data
from sql.engine import mask_url
from sql.queries import as_utc, read_volatility_index
from sql.tables import minute_coverage, option_quotes, surface_fits, surface_points

WHAT = ("smile", "surface", "term")
DEFAULT_SIZE = (1200, 800)
DPI = 100
#: The heatmap's colour scale: these percentiles of the grid points inside the data.
COLOUR_PERCENTILES = (2.0, 98.0)
#: The delta axis's ticks: put deltas below the forward, call deltas above.
PUT_DELTAS = (-0.05, -0.10, -0.25)
CALL_DELTAS = (0.25, 0.10, 0.05)
DELTA_PRIORITY = ("25P", "25C", "10P", "10C", "5P", "5C")
#: Delta ticks closer than this share of the axis width to the previous one are left out.
MIN_TICK_GAP = 0.05
EXTRAPOLATED_HATCH = "///"
#: The term chart leaves out expiries closer than this (days).
SHORTEST_TERM_DAYS = 0.5

class PlotError(Exception):
    """Nothing to plot, or a bad request; the text says what and what to do."""


@dataclass(frozen=True)
class Schema:
    """What of schema 4 the database has (read once per engine)."""

    extrapolated: bool  # surface_points.extrapolated
    check_range: bool  # surface_fits.check_k_min / check_k_max
    coverage: bool  # the minute_coverage table

    @classmethod
    def of(cls, engine: Engine) -> Schema:
        with engine.connect() as conn:
            inspector = inspect(conn)
            tables = set(inspector.get_table_names())
            points = {c["name"] for c in inspector.get_columns("surface_points")} \
                if "surface_points" in tables else set()
            fits = {c["name"] for c in inspector.get_columns("surface_fits")} if "surface_fits" in tables else set()
        return cls(extrapolated="extrapolated" in points, check_range={"check_k_min", "check_k_max"} <= fits,
                   coverage="minute_coverage" in tables)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``2021-07-22T22:43``, ``...Z``, ``...+00:00``; without an offset: UTC) or unix seconds."""
    try:
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    except ValueError:
        pass
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PlotError(f"--at {text!r}: expected an ISO time such as 2021-07-22T22:43 (UTC) or unix seconds") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise PlotError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800") from None
    if not (200 <= width <= 10_000 and 200 <= height <= 10_000):
        raise PlotError(f"--size {text!r}: width and height must be between 200 and 10000 pixels")
    return width, height


def _rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query))


def _scalar(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def _when(minute: dt.datetime) -> str:
    return f"{minute:%Y-%m-%d %H:%M} UTC"


# -- which minute ------------------------------------------------------------------------------------

def _complete_minutes(schema: Schema, currency: str) -> Any:
    """The minutes of ``currency`` with a surface (a finite grid point), less those marked incomplete."""
    query = select(surface_points.c.minute).where(surface_points.c.currency == currency,
                                                   surface_points.c.iv.is_not(None))
    if schema.coverage:
        mc = minute_coverage
        query = query.where(surface_points.c.minute.not_in(
            select(mc.c.minute).where(mc.c.currency == currency, mc.c.complete.is_(False))))
    return query.subquery()


def _nearest_complete(engine: Engine, schema: Schema, currency: str, minute: dt.datetime) -> dt.datetime | None:
    good = _complete_minutes(schema, currency)
    before = _scalar(engine, select(func.max(good.c.minute)).where(good.c.minute <= minute))
    after = _scalar(engine, select(func.min(good.c.minute)).where(good.c.minute >= minute))
    found = [as_utc(m) for m in (before, after) if m is not None]
    return min(found, key=lambda m: abs((m - minute).total_seconds())) if found else None


def _nearest_text(engine: Engine, schema: Schema, currency: str, minute: dt.datetime) -> str:
    nearest = _nearest_complete(engine, schema, currency, minute)
    if nearest is None:
        return f"no complete minute of {currency} is recorded"
    return f"nearest complete minute: {_when(nearest)} (--at {nearest:%Y-%m-%dT%H:%M})"


def resolve_minute(engine: Engine, schema: Schema, currency: str, at: dt.datetime | None) -> dt.datetime:
    """The latest minute of ``currency`` recorded at or before ``at`` (any time when None), if it is
    complete; else :class:`PlotError` naming the nearest complete minute."""
    # The latest of each table's own latest (each a backward scan of its minute-first key; a UNION of
    # every minute would read the whole history).
    recorded: list[tuple[ColumnElement[Any], ColumnElement[Any]]] = [
        (surface_points.c.minute, surface_points.c.currency), (option_quotes.c.minute, option_quotes.c.currency)]
    if schema.coverage:
        recorded.append((minute_coverage.c.minute, minute_coverage.c.currency))
    latest = []
    for minute_column, currency_column in recorded:
        query = select(func.max(minute_column)).where(currency_column == currency)
        if at is not None:
            query = query.where(minute_column <= at)
        value = _scalar(engine, query)
        if value is not None:
            latest.append(as_utc(value))
    if not latest:
        when = f" at or before {at.isoformat()}" if at is not None else ""
        nearest = ("; " + _nearest_text(engine, schema, currency, at)) if at is not None else ""
        raise PlotError(f"no surface of {currency} recorded{when} in {mask_url(str(engine.url))}{nearest}; "
                        "run the desk (or replay a wire log) with this database first")
    minute = max(latest)
    why = ""
    if schema.coverage:
        mc = minute_coverage
        coverage = _rows(engine, select(mc.c.complete, mc.c.coverage, mc.c.listed, mc.c.usable)
                         .where(mc.c.minute == minute, mc.c.currency == currency))
        if coverage and coverage[0].complete is False:
            row = coverage[0]
            share = f"coverage {100 * row.coverage:.0f}%" if row.coverage is not None else "coverage unknown"
            counts = f", {row.usable} of {row.listed} options usable" if row.listed is not None else ""
            why = f"is incomplete ({share}{counts}; its quotes are stored, no surface)"
    if not why:
        finite = _scalar(engine, select(func.count()).select_from(surface_points).where(
            surface_points.c.minute == minute, surface_points.c.currency == currency,
            surface_points.c.iv.is_not(None)))
        if not finite:
            why = "has no surface (no usable quotes were fitted)"
    if why:
        raise PlotError(f"the {currency} minute {_when(minute)} {why}; "
                        f"{_nearest_text(engine, schema, currency, minute)}")
    return minute


# -- the minute's data -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    """One expiry's recorded smile."""

    expiry: dt.datetime
    method: str
    years: float
    forward: float | None
    parameters: dict[str, float]
    rmse: float | None
    butterfly_ok: bool
    check_k: tuple[float, float] | None


@dataclass(frozen=True)
class Quotes:
    """One expiry's out-of-the-money quotes (those the surface was fitted to), by strike."""

    strike: np.ndarray
    is_call: np.ndarray
    underlying: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    mid: np.ndarray
    mark: np.ndarray


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _read_fits(engine: Engine, schema: Schema, currency: str, minute: dt.datetime) -> dict[dt.datetime, Fit]:
    ranges: dict[dt.datetime, tuple[float, float]] = {}
    if schema.check_range:
        r = surface_fits
        for row in _rows(engine, select(r.c.expiry, r.c.check_k_min, r.c.check_k_max)
                         .where(r.c.minute == minute, r.c.currency == currency)):
            if row.check_k_min is not None and row.check_k_max is not None:
                ranges[as_utc(row.expiry)] = (row.check_k_min, row.check_k_max)
    fits = {}
    f = surface_fits.c  # the columns of every schema (a database of schema 3 lacks the check range)
    for row in _rows(engine, select(f.expiry, f.method, f.years, f.forward, f.parameters, f.rmse, f.butterfly_ok)
                     .where(f.minute == minute, f.currency == currency)):
        expiry = as_utc(row.expiry)
        fits[expiry] = Fit(expiry, row.method, row.years, row.forward, json.loads(row.parameters or "{}"), row.rmse,
                           bool(row.butterfly_ok), ranges.get(expiry))
    return fits


def _read_quotes(engine: Engine, currency: str, minute: dt.datetime) -> dict[dt.datetime, Quotes]:
    q = option_quotes.c
    rows = _rows(engine, select(q.expiry, q.strike, q.option_type, q.underlying_price, q.bid_iv, q.ask_iv, q.mid_iv,
                                q.mark_iv)
                 .where(q.minute == minute, q.currency == currency, q.in_surface.is_(True))
                 .order_by(q.expiry, q.strike))
    by_expiry: dict[dt.datetime, list[Any]] = {}
    for row in rows:
        by_expiry.setdefault(as_utc(row.expiry), []).append(row)
    return {e: Quotes(strike=_floats([r.strike for r in g]),
                      is_call=np.array([str(r.option_type).lower().startswith("c") for r in g]),
                      underlying=_floats([r.underlying_price for r in g]), bid=_floats([r.bid_iv for r in g]),
                      ask=_floats([r.ask_iv for r in g]), mid=_floats([r.mid_iv for r in g]),
                      mark=_floats([r.mark_iv for r in g]))
            for e, g in by_expiry.items()}


def _forward(fit: Fit | None, quotes: Quotes | None) -> float | None:
    if fit is not None and fit.forward:
        return fit.forward
    if quotes is not None and np.isfinite(quotes.underlying).any():
        return float(np.nanmedian(quotes.underlying))
    return None


def _quoted_k(quotes: Quotes, forward: float) -> np.ndarray:
    return np.log(quotes.strike / forward)


def fit_iv(fit: Fit | None, k: np.ndarray, quotes: Quotes | None, forward: float) -> np.ndarray:
    """The fitted smile in vol % at log-moneyness ``k``: the raw-SVI slice when the fit has its
    parameters (svi and essvi record them), else the seed's linear smile through the quotes' mid (or
    mark) vols, flat past the last quote."""
    p = fit.parameters if fit is not None else {}
    if fit is not None and fit.years > 0 and {"a", "b", "rho", "m", "sigma"} <= p.keys():
        w = p["a"] + p["b"] * (p["rho"] * (k - p["m"]) + np.sqrt((k - p["m"]) ** 2 + p["sigma"] ** 2))
        return np.asarray(100.0 * np.sqrt(np.maximum(w, 0.0) / fit.years))
    if quotes is None:
        return np.full_like(k, np.nan)
    vol = np.where(np.isfinite(quotes.mid), quotes.mid, quotes.mark)
    qk = _quoted_k(quotes, forward)
    ok = np.isfinite(vol) & np.isfinite(qk)
    if not ok.any():
        return np.full_like(k, np.nan)
    order = np.argsort(qk[ok])
    return np.asarray(np.interp(k, qk[ok][order], vol[ok][order]))


@dataclass(frozen=True)
class Grid:
    tenors: np.ndarray  # days
    ks: np.ndarray  # ln(K/F)
    iv: np.ndarray  # [tenor, k], vol %, NaN where missing
    extrapolated: np.ndarray  # [tenor, k] bool
    flag_source: str  # "recorded", "derived from the quotes' range", "unknown (drawn as data)"
    method: str


def _derived_extrapolated(tenors: np.ndarray, ks: np.ndarray, fits: dict[dt.datetime, Fit],
                          quotes: dict[dt.datetime, Quotes]) -> np.ndarray | None:
    """Outside the data: before the first or after the last fitted expiry, or k outside the quoted
    strikes' range interpolated linearly in time between the neighbouring expiries. None when the
    minute has no quotes to tell."""
    years, lo, hi = [], [], []
    for expiry, fit in sorted(fits.items()):
        q = quotes.get(expiry)
        forward = _forward(fit, q)
        if q is None or forward is None or fit.years <= 0:
            continue
        qk = _quoted_k(q, forward)
        qk = qk[np.isfinite(qk)]
        if qk.size:
            years.append(fit.years)
            lo.append(float(qk.min()))
            hi.append(float(qk.max()))
    if not years:
        return None
    return np.asarray(~inside_data(tenors / 365.0, ks, years, lo, hi))


def read_grid(engine: Engine, schema: Schema, currency: str, minute: dt.datetime) -> Grid:
    sp = surface_points.c
    points = _rows(engine, select(sp.tenor_days, sp.log_moneyness, sp.iv, sp.method)
                   .where(sp.minute == minute, sp.currency == currency))
    tenors = np.array(sorted({p.tenor_days for p in points}), dtype=float)
    ks = np.array(sorted({p.log_moneyness for p in points}), dtype=float)
    t_index = {t: i for i, t in enumerate(tenors)}
    k_index = {k: j for j, k in enumerate(ks)}
    iv = np.full((tenors.size, ks.size), np.nan)
    for p in points:
        if p.iv is not None:
            iv[t_index[p.tenor_days], k_index[p.log_moneyness]] = p.iv
    flags = np.full(iv.shape, -1, dtype=int)  # -1 unknown, 0 data, 1 extrapolated
    if schema.extrapolated:
        f = surface_points.c
        for row in _rows(engine, select(f.tenor_days, f.log_moneyness, f.extrapolated)
                         .where(f.minute == minute, f.currency == currency)):
            if row.extrapolated is not None:
                flags[t_index[row.tenor_days], k_index[row.log_moneyness]] = int(bool(row.extrapolated))
    source = "recorded"
    if (flags < 0).any():
        some_recorded = bool((flags >= 0).any())
        derived = _derived_extrapolated(tenors, ks, _read_fits(engine, schema, currency, minute),
                                        _read_quotes(engine, currency, minute))
        if derived is None:
            flags[flags < 0] = 0
            source = "recorded where flagged, else unknown (drawn as data)" if some_recorded \
                else "unknown (drawn as data)"
        else:
            flags = np.where(flags < 0, derived.astype(int), flags)
            source = ("recorded where flagged, else derived from the quoted strikes' range" if some_recorded
                      else "derived from the quoted strikes' range")
    return Grid(tenors, ks, iv, flags == 1, source, points[0].method if points else "")


def robust_limits(iv: np.ndarray, extrapolated: np.ndarray) -> tuple[float, float]:
    """The colour scale: COLOUR_PERCENTILES of the finite points inside the data (of every finite
    point when fewer than three are inside)."""
    inside = iv[np.isfinite(iv) & ~extrapolated]
    values = inside if inside.size >= 3 else iv[np.isfinite(iv)]
    lo, hi = np.percentile(values, COLOUR_PERCENTILES)
    if hi - lo < 0.5:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


# -- smile -------------------------------------------------------------------------------------------

def _strike_ticks(strikes: np.ndarray, n: int) -> list[float]:
    """About ``n`` of the listed strikes, evenly spread on the log axis."""
    finite = np.unique(strikes[np.isfinite(strikes)])
    if finite.size <= n:
        return [float(s) for s in finite]
    targets = np.exp(np.linspace(np.log(finite[0]), np.log(finite[-1]), n))
    return sorted({float(finite[np.argmin(np.abs(np.log(finite) - np.log(t)))]) for t in targets})


def _delta_ticks(forward: float, years: float, strikes: np.ndarray, vols: np.ndarray) -> list[tuple[float, str]]:
    """Strikes where the Black-76 delta at the fit's vol is each of PUT_DELTAS (below the forward) and
    CALL_DELTAS (above), with their labels."""
    ticks: list[tuple[float, str]] = []
    ok = np.isfinite(vols) & (vols > 0)
    if years <= 0 or not ok.any():
        return ticks
    for side, targets in ((strikes < forward, PUT_DELTAS), (strikes >= forward, CALL_DELTAS)):
        use = side & ok
        if use.sum() < 2:
            continue
        k, v = strikes[use], vols[use] / 100.0
        delta = np.asarray(black76_greeks(forward, k, years, v, bool(targets[0] > 0)).delta)
        order = np.argsort(delta)
        for target in targets:
            if delta.min() <= target <= delta.max():
                strike = float(np.interp(target, delta[order], k[order]))
                ticks.append((strike, f"{abs(target) * 100:.0f}{'C' if target > 0 else 'P'}"))
    return ticks


def _spread(ticks: list[tuple[float, str]], lo: float, hi: float, gap: float) -> list[tuple[float, str]]:
    """The ticks (strike, label) inside [lo, hi] at least ``gap`` of the log axis's width apart, the
    25-deltas first, then the 10s, then the 5s (a crowded axis keeps the ones a trader reads first)."""
    width = math.log(hi / lo)
    kept: list[tuple[float, str]] = []
    for strike, label in sorted(ticks, key=lambda t: DELTA_PRIORITY.index(t[1]) if t[1] in DELTA_PRIORITY else 99):
        if lo <= strike <= hi and all(abs(math.log(strike / s)) >= gap * width for s, _ in kept):
            kept.append((strike, label))
    return sorted(kept)


def _smile_panel(ax: Axes, fit: Fit | None, quotes: Quotes, minute: dt.datetime, expiry: dt.datetime,
                 *, single: bool, currency: str) -> None:
    forward = _forward(fit, quotes)
    years = fit.years if fit is not None else (expiry - minute).total_seconds() / (365 * 86_400)
    small = 6 if not single else 9
    ax.scatter(quotes.strike, quotes.bid, marker="^", s=14 if single else 8, color="tab:blue", label="bid IV", zorder=3)
    ax.scatter(quotes.strike, quotes.ask, marker="v", s=14 if single else 8, color="tab:red", label="ask IV", zorder=3)
    ax.scatter(quotes.strike, quotes.mark, marker="o", s=12 if single else 6, facecolors="none",
               edgecolors="black", linewidths=0.7, label="mark IV", zorder=3)
    method = fit.method if fit is not None else "no fit"
    if forward is not None:
        qk = _quoted_k(quotes, forward)
        qk = qk[np.isfinite(qk)]
        lo, hi = (float(qk.min()), float(qk.max())) if qk.size else (-0.1, 0.1)
        pad = max(0.2 * (hi - lo), 0.05)
        k_all = np.linspace(lo - pad, hi + pad, 400)
        vol = fit_iv(fit, k_all, quotes, forward)
        strikes = forward * np.exp(k_all)
        inside = (k_all >= lo) & (k_all <= hi)
        ax.plot(np.where(inside, strikes, np.nan), np.where(inside, vol, np.nan), color="black", lw=1.3,
                label=f"fit ({method})")
        for part in (k_all <= lo, k_all >= hi):
            ax.plot(strikes[part], vol[part], color="0.55", lw=1.1, ls="--",
                    label="fit, extrapolated (outside quoted strikes)" if part[0] else None)
        listed = np.unique(quotes.strike[np.isfinite(quotes.strike)])
        atm = float(listed[np.argmin(np.abs(listed - forward))]) if listed.size else forward
        # The forward and the ATM strike are often a few hundred apart: the ATM line is drawn over the
        # forward's (wider, paler), dash-dotted, so both show.
        ax.axvline(forward, color="tab:green", lw=2.2, alpha=0.6, zorder=1, label=f"forward {forward:,.0f}")
        ax.axvline(atm, color="tab:purple", lw=1.1, ls="-.", zorder=2, label=f"ATM strike {atm:,.0f}")
        if single:
            # x in data, y in axes units: the labels sit at the bottom of the lines
            x_data = ax.get_xaxis_transform()
            ax.text(forward, 0.01, f" F {forward:,.0f}", transform=x_data, color="tab:green", fontsize=8,
                    ha="right" if atm >= forward else "left", va="bottom")
            ax.text(atm, 0.01, f" ATM {atm:,.0f} ", transform=x_data, color="tab:purple", fontsize=8,
                    ha="left" if atm >= forward else "right", va="bottom")
        ax.set_xscale("log")
        ax.set_xlim(strikes[0], strikes[-1])
        ticks = _strike_ticks(quotes.strike, 7 if single else 4)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:,.0f}" for t in ticks], fontsize=small, rotation=0 if single else 30)
        # Robust y range: the fit inside the data and the bid/mark vols; a 1000% ask of a
        # minutes-to-expiry wing does not squash the smile.
        seen = np.concatenate([vol[inside], quotes.bid, quotes.mark, quotes.mid])
        seen = seen[np.isfinite(seen)]
        if seen.size:
            top = max(float(np.nanmax(vol[inside])) if inside.any() else 0.0, float(np.percentile(seen, 95)))
            bottom = float(seen.min())
            margin = 0.08 * (top - bottom) + 1.0
            ax.set_ylim(max(bottom - margin, 0.0), top + 2 * margin)
        secondary = ax.secondary_xaxis("top")
        delta = _spread(_delta_ticks(forward, years, strikes, vol), strikes[0], strikes[-1],
                        MIN_TICK_GAP if single else 2 * MIN_TICK_GAP)
        secondary.xaxis.set_major_locator(FixedLocator([s for s, _ in delta]))
        secondary.xaxis.set_minor_locator(NullLocator())
        secondary.set_xticklabels([label for _, label in delta], fontsize=small)
        secondary.set_xlabel("delta (puts below forward, calls above)" if single else "delta", fontsize=small)
    days = (expiry - minute).total_seconds() / 86_400
    rmse = f", rmse {fit.rmse:.2f}" if fit is not None and fit.rmse is not None else ""
    checked = (f", butterfly checked on k in [{fit.check_k[0]:.1f}, {fit.check_k[1]:.1f}]"
               if single and fit is not None and fit.check_k is not None else "")
    expiry_text = f"{expiry:%d%b%y}".upper()
    if single:
        ax.set_title(f"{currency} {expiry_text} ({days:.1f} d) smile at {_when(minute)}, "
                     f"method {method}{rmse}{checked}", fontsize=10)
        ax.set_xlabel("strike (log scale)")
        ax.set_ylabel("implied vol (%)")
    else:
        ax.set_title(f"{expiry_text} ({days:.1f} d, {method}{rmse})", fontsize=8)
        ax.set_xlabel("strike", fontsize=small, labelpad=1)
    ax.tick_params(labelsize=small)
    ax.grid(True, alpha=0.25)


def draw_smile(engine: Engine, schema: Schema, fig: Figure, currency: str, minute: dt.datetime,
               expiry_date: dt.date | None = None) -> None:
    quotes = _read_quotes(engine, currency, minute)
    fits = _read_fits(engine, schema, currency, minute)
    if not quotes:
        raise PlotError(f"no out-of-the-money quotes of {currency} at {minute.isoformat()}")
    if expiry_date is not None:
        known = ", ".join(f"{e:%d%b%y}".upper().lstrip("0") for e in sorted(quotes))
        quotes = {e: q for e, q in quotes.items() if e.date() == expiry_date}
        if not quotes:
            raise PlotError(f"no {currency} quotes of the expiry {f'{expiry_date:%d%b%y}'.upper()} at "
                            f"{minute.isoformat()}; "
                            f"expiries then: {known}")
    n = len(quotes)
    single = n == 1
    cols = 1 if single else math.ceil(math.sqrt(n * 1.5))
    rows = math.ceil(n / cols)
    for i, (expiry, group) in enumerate(sorted(quotes.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        _smile_panel(ax, fits.get(expiry), group, minute, expiry, single=single, currency=currency)
        if single:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if not single:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        keep = [(h, lab) for h, lab in zip(handles, labels, strict=True)
                if not lab.startswith(("forward", "ATM", "fit ("))]
        keep += [(Line2D([], [], color="black"), "fit"),
                 (Line2D([], [], color="tab:green", lw=2.2, alpha=0.6), "forward"),
                 (Line2D([], [], color="tab:purple", ls="-."), "ATM strike")]
        fig.legend([h for h, _ in keep], [lab for _, lab in keep], loc="upper right", fontsize=7, ncols=4)
        fig.suptitle(f"{currency} smiles at {_when(minute)}: implied vol (%) against strike, delta on top",
                     fontsize=11, x=0.02, ha="left")
        fig.subplots_adjust(hspace=0.85, wspace=0.3, left=0.05, right=0.98, bottom=0.07, top=0.86)
    else:
        fig.subplots_adjust(left=0.07, right=0.75, bottom=0.09, top=0.86)


# -- surface -----------------------------------------------------------------------------------------

def _ordinal(value: float) -> str:
    n = round(value)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def draw_surface(engine: Engine, schema: Schema, fig: Figure, currency: str, minute: dt.datetime) -> None:
    grid = read_grid(engine, schema, currency, minute)
    if not np.isfinite(grid.iv).any():
        raise PlotError(f"the {currency} surface at {minute.isoformat()} has no finite point")
    vmin, vmax = robust_limits(grid.iv, grid.extrapolated)
    ax = fig.add_subplot(1, 1, 1)
    nt, nk = grid.iv.shape
    mesh = ax.pcolormesh(np.arange(nk + 1) - 0.5, np.arange(nt + 1) - 0.5, np.ma.masked_invalid(grid.iv),
                         cmap="viridis", vmin=vmin, vmax=vmax, shading="flat")
    cmap, norm = mesh.cmap, mesh.norm
    # Cell text: sized to the cell, dark on light colours and light on dark.
    width_px = fig.get_figwidth() * fig.dpi * 0.78 / max(nk, 1)
    size = float(np.clip(width_px / 4.2 * 72 / fig.dpi, 4.0, 9.0))
    for i in range(nt):
        for j in range(nk):
            value = grid.iv[i, j]
            if not np.isfinite(value):
                continue
            r, g, b, _ = cmap(norm(value))
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
            ink = (0.0, 0.0, 0.0) if light else (1.0, 1.0, 1.0)
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=size, color=ink, gid="cell-value")
            if grid.extrapolated[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch=EXTRAPOLATED_HATCH,
                                       edgecolor=(*ink, 0.45), lw=0, gid="extrapolated"))
    step = max(1, math.ceil(nk / 11))
    ax.set_xticks(range(0, nk, step), [f"{k:+.2f}".replace("+0.00", "0") for k in grid.ks[::step]])
    ax.set_yticks(range(nt), [f"{t:g}" for t in grid.tenors])
    ax.set_xlabel("log-moneyness ln(K/F)")
    ax.set_ylabel("tenor (days)")
    bar = fig.colorbar(mesh, ax=ax, extend="both", pad=0.02)
    bar.set_label("implied vol (%)")
    n_out = int(grid.extrapolated[np.isfinite(grid.iv)].sum())
    ax.legend(handles=[Patch(facecolor="0.6", edgecolor="white", hatch=EXTRAPOLATED_HATCH,
                             label=f"extrapolated ({n_out} cells; outside the quoted strikes or expiries)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, frameon=False)
    ax.set_title(f"{currency} constant-maturity surface ({grid.method}) at {_when(minute)}\n"
                 f"colours: {_ordinal(COLOUR_PERCENTILES[0])} to {_ordinal(COLOUR_PERCENTILES[1])} percentile "
                 f"of the points inside the data ({vmin:.0f}-{vmax:.0f}%); extrapolation {grid.flag_source}",
                 fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.14, top=0.9)


# -- term --------------------------------------------------------------------------------------------

def draw_term(engine: Engine, schema: Schema, fig: Figure, currency: str, minute: dt.datetime) -> None:
    grid = read_grid(engine, schema, currency, minute)
    atm_col = np.nonzero(np.isclose(grid.ks, 0.0))[0]
    if not atm_col.size:
        raise PlotError("the grid has no ln(K/F) = 0 column for the ATM term structure")
    atm = grid.iv[:, atm_col[0]]
    out = grid.extrapolated[:, atm_col[0]]
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(grid.tenors, atm, color="tab:blue", lw=1.2, zorder=2)
    ax.scatter(grid.tenors[~out], atm[~out], marker="o", color="tab:blue", zorder=3,
               label=f"ATM vol, constant maturity ({grid.method})")
    if out.any():
        ax.scatter(grid.tenors[out], atm[out], marker="o", facecolors="white", edgecolors="tab:blue", zorder=3,
                   label="ATM vol, constant maturity, extrapolated")
    quotes = _read_quotes(engine, currency, minute)
    fit_days, fit_atm = [], []
    for expiry, fit in sorted(_read_fits(engine, schema, currency, minute).items()):
        forward = _forward(fit, quotes.get(expiry))
        if fit.years <= 0 or forward is None:
            continue
        value = float(fit_iv(fit, np.array([0.0]), quotes.get(expiry), forward)[0])
        if np.isfinite(value):
            fit_days.append(fit.years * 365.0)
            fit_atm.append(value)
    # An expiry within hours of its settlement is no point of a term structure (its ATM vol is noise on
    # a log axis of days); it is left out and counted in the legend.
    short = [d < SHORTEST_TERM_DAYS for d in fit_days]
    fit_atm = [v for v, s in zip(fit_atm, short, strict=True) if not s]
    fit_days = [d for d, s in zip(fit_days, short, strict=True) if not s]
    left_out = f"; {sum(short)} under {SHORTEST_TERM_DAYS:g} d left out" if any(short) else ""
    if fit_days:
        ax.scatter(fit_days, fit_atm, marker="x", s=40, color="tab:gray", zorder=4,
                   label=f"ATM vol of each expiry (its fit at ln(K/F) = 0{left_out})")
    index = read_volatility_index(engine, currency, minute, minute)
    title = f"{currency} ATM term structure at {_when(minute)}"
    if index and index[0].variance_index is not None:
        value = index[0].variance_index
        ax.scatter([30.0], [value], marker="D", s=60, color="tab:red", zorder=5,
                   label=f"variance index (30d) {value:.1f}%")
        ax.annotate(f"variance index (30d) {value:.1f}%", (30.0, value), xytext=(8, 4), textcoords="offset points",
                    color="tab:red", fontsize=9)
        title += f": variance index (30d) {value:.1f}%"
    if index and index[0].dvol is not None:
        dvol = index[0].dvol
        ax.scatter([30.0], [dvol], marker="s", s=60, color="tab:green", zorder=5, label=f"DVOL {dvol:.1f}%")
        ax.annotate(f"DVOL {dvol:.1f}%", (30.0, dvol), xytext=(8, -12), textcoords="offset points",
                    color="tab:green", fontsize=9)
        title += f", DVOL {dvol:.1f}%"
        if index[0].variance_index is not None:
            title += f" (DVOL - index {dvol - index[0].variance_index:+.1f} pts)"
    else:
        title += ", DVOL not recorded"
    ax.set_xscale("log")
    ticks = sorted({*grid.tenors.tolist(), 30.0})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("tenor (days, log scale)")
    ax.set_ylabel("implied vol (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title)


PLOTTERS: dict[str, Callable[[Engine, Schema, Figure, str, dt.datetime], None]] = {
    "smile": draw_smile, "surface": draw_surface, "term": draw_term,
}


def build_figure(engine: Engine, *, what: str, currency: str, at: dt.datetime | None = None,
                 size: tuple[int, int] = DEFAULT_SIZE, expiry: dt.date | None = None,
                 schema: Schema | None = None) -> tuple[Figure, dt.datetime]:
    """The Figure ``plot`` saves, and the minute it shows (what the tests read)."""
    if what not in PLOTTERS:
        raise PlotError(f"--what {what!r}: choose one of {', '.join(WHAT)}")
    if expiry is not None and what != "smile":
        raise PlotError(f"--expiry narrows a smile; --what {what} draws every expiry")
    schema = schema if schema is not None else Schema.of(engine)
    minute = resolve_minute(engine, schema, currency, at)
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    if expiry is not None:
        draw_smile(engine, schema, fig, currency, minute, expiry)
    else:
        PLOTTERS[what](engine, schema, fig, currency, minute)
    return fig, minute


def plot_from_database(url: str, *, what: str, currency: str, out: str | Path, at: dt.datetime | None = None,
                       size: tuple[int, int] = DEFAULT_SIZE,
                       expiry: dt.date | None = None,
                       archive_dir: str | Path | None = None) -> tuple[Path, dt.datetime]:
    """Draw ``what`` for ``currency`` into the PNG ``out``; returns the file and the minute drawn.
    ``expiry``: a smile of that expiry only. A day no longer in the database is read from the Parquet
    archive at ``archive_dir`` (:func:`sql.record.minute_engine`)."""
    if what not in PLOTTERS:
        raise PlotError(f"--what {what!r}: choose one of {', '.join(WHAT)}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PlotError(f"--out {str(out)!r}: the plot is a PNG; give a file name ending in .png")
    database = make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:" and not Path(database).exists():
        raise PlotError(f"database file {database} does not exist; give the desk's database with --db "
                        "(default: data/deribit.sqlite3)")
    from sql.record import minute_engine

    try:
        with minute_engine(url, archive_dir, currency, at) as engine:
            fig, minute = build_figure(engine, what=what, currency=currency, at=at, size=size, expiry=expiry)
    except SQLAlchemyError as exc:
        raise PlotError(f"cannot read {mask_url(url)}: {str(getattr(exc, 'orig', exc)).strip()}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out, minute
