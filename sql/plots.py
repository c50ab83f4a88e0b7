"""Plots from the database (matplotlib, Agg; no display needed): ``python main.py plot ...``.

- ``smile``: one panel per expiry, bid and ask implied vols of the out-of-the-money quotes against
  log-moneyness ln(K/F), with the fitted smile (the SVI curve, or the seed's linear smile through the
  quotes' vols);
- ``surface``: the constant-maturity grid as a heatmap, tenor against log-moneyness;
- ``term``: the ATM term structure (the grid at ln(K/F) = 0, and each expiry's fitted ATM vol) with
  the 30-day variance index beside the 30-day ATM vol, and Deribit's DVOL at the minute when it was
  current.

Each reads one minute: the latest recorded for the currency, or the latest at or before ``--at``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sql.engine import make_engine, mask_url
from sql.queries import as_utc, read_volatility_index
from sql.tables import option_quotes, surface_fits, surface_points

WHAT = ("smile", "surface", "term")
DEFAULT_SIZE = (1200, 800)
DPI = 100


class PlotError(Exception):
    """Nothing to plot, or a bad request; the text says what and what to do."""


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


def _minute(engine: Engine, currency: str, at: dt.datetime | None) -> dt.datetime:
    query = select(func.max(surface_points.c.minute)).where(surface_points.c.currency == currency)
    if at is not None:
        query = query.where(surface_points.c.minute <= at)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        when = f" at or before {at.isoformat()}" if at is not None else ""
        raise PlotError(f"no surface of {currency} recorded{when} in {mask_url(str(engine.url))}; "
                        "run the desk (or replay a wire log) with this database first")
    return as_utc(found)


def _rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query))


def _svi_iv(parameters: dict[str, float], k: np.ndarray, years: float) -> np.ndarray:
    a, b, rho, m, sigma = (parameters[name] for name in ("a", "b", "rho", "m", "sigma"))
    w = a + b * (rho * (k - m) + np.sqrt((k - m) ** 2 + sigma**2))
    return 100.0 * np.sqrt(np.maximum(w, 0.0) / years)


def _plot_smile(engine: Engine, fig: Figure, currency: str, minute: dt.datetime,
                expiry_date: dt.date | None = None) -> None:
    quotes = _rows(engine, select(option_quotes.c.expiry, option_quotes.c.strike, option_quotes.c.underlying_price,
                                  option_quotes.c.bid_iv, option_quotes.c.ask_iv, option_quotes.c.mid_iv,
                                  option_quotes.c.mark_iv)
                   .where(option_quotes.c.minute == minute, option_quotes.c.currency == currency,
                          option_quotes.c.in_surface.is_(True))
                   .order_by(option_quotes.c.expiry, option_quotes.c.strike))
    fits = {as_utc(r.expiry): r for r in _rows(engine, select(surface_fits).where(
        surface_fits.c.minute == minute, surface_fits.c.currency == currency))}
    by_expiry: dict[dt.datetime, list[Any]] = {}
    for row in quotes:
        by_expiry.setdefault(as_utc(row.expiry), []).append(row)
    if not by_expiry:
        raise PlotError(f"no out-of-the-money quotes of {currency} at {minute.isoformat()}")
    if expiry_date is not None:
        known = ", ".join(f"{e:%d%b%y}".upper().lstrip("0") for e in sorted(by_expiry))
        by_expiry = {e: rows for e, rows in by_expiry.items() if e.date() == expiry_date}
        if not by_expiry:
            raise PlotError(f"no {currency} quotes of the expiry {f'{expiry_date:%d%b%y}'.upper()} at "
                            f"{minute.isoformat()}; "
                            f"expiries then: {known}")
    n = len(by_expiry)
    cols = math.ceil(math.sqrt(n * 1.5))
    rows = math.ceil(n / cols)
    for i, (expiry, group) in enumerate(sorted(by_expiry.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        k = np.array([math.log(r.strike / r.underlying_price) if r.underlying_price else np.nan for r in group])
        bid = np.array([np.nan if r.bid_iv is None else r.bid_iv for r in group])
        ask = np.array([np.nan if r.ask_iv is None else r.ask_iv for r in group])
        ax.scatter(k, bid, marker="^", s=10, color="tab:blue", label="bid IV")
        ax.scatter(k, ask, marker="v", s=10, color="tab:red", label="ask IV")
        fit = fits.get(expiry)
        parameters = json.loads(fit.parameters) if fit is not None else {}
        if fit is not None and fit.method == "svi" and parameters:
            finite = k[np.isfinite(k)]
            grid = np.linspace(finite.min(), finite.max(), 200) if finite.size else np.linspace(-0.5, 0.5, 200)
            ax.plot(grid, _svi_iv(parameters, grid, fit.years), color="black", lw=1.2, label="SVI fit")
        else:
            vol = np.array([r.mid_iv if r.mid_iv is not None else (r.mark_iv or np.nan) for r in group])
            ax.plot(k, vol, color="black", lw=1.0, label="linear smile")
        days = (expiry - minute).total_seconds() / 86_400
        rmse = f", rmse {fit.rmse:.2f}" if fit is not None and fit.rmse is not None else ""
        ax.set_title(f"{expiry:%d%b%y} ({days:.1f} d{rmse})", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"{currency} smiles at {minute:%Y-%m-%d %H:%M} UTC (vol % vs ln(K/F))", fontsize=11)
    fig.subplots_adjust(hspace=0.55, wspace=0.3, left=0.05, right=0.98, bottom=0.06, top=0.9)


def _grid(engine: Engine, currency: str, minute: dt.datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    points = _rows(engine, select(surface_points.c.tenor_days, surface_points.c.log_moneyness, surface_points.c.iv,
                                  surface_points.c.method)
                   .where(surface_points.c.minute == minute, surface_points.c.currency == currency))
    tenors = np.array(sorted({p.tenor_days for p in points}))
    ks = np.array(sorted({p.log_moneyness for p in points}))
    iv = np.full((tenors.size, ks.size), np.nan)
    t_index = {t: i for i, t in enumerate(tenors)}
    k_index = {k: j for j, k in enumerate(ks)}
    for p in points:
        if p.iv is not None:
            iv[t_index[p.tenor_days], k_index[p.log_moneyness]] = p.iv
    return tenors, ks, iv, points[0].method if points else ""


def _plot_surface(engine: Engine, fig: Figure, currency: str, minute: dt.datetime) -> None:
    tenors, ks, iv, method = _grid(engine, currency, minute)
    if not np.isfinite(iv).any():
        raise PlotError(f"the {currency} surface at {minute.isoformat()} has no finite point")
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.imshow(np.ma.masked_invalid(iv), aspect="auto", origin="lower", cmap="viridis",
                     extent=(ks[0] - 0.025, ks[-1] + 0.025, -0.5, tenors.size - 0.5))
    ax.set_yticks(range(tenors.size), [f"{t:g}d" for t in tenors])
    ax.set_xlabel("log-moneyness ln(K/F)")
    ax.set_ylabel("tenor")
    fig.colorbar(mesh, ax=ax, label="implied vol (%)")
    ax.set_title(f"{currency} constant-maturity surface ({method}) at {minute:%Y-%m-%d %H:%M} UTC")


def _plot_term(engine: Engine, fig: Figure, currency: str, minute: dt.datetime) -> None:
    tenors, ks, iv, method = _grid(engine, currency, minute)
    atm_col = np.nonzero(np.isclose(ks, 0.0))[0]
    if not atm_col.size:
        raise PlotError("the grid has no ln(K/F) = 0 column for the ATM term structure")
    atm = iv[:, atm_col[0]]
    index = read_volatility_index(engine, currency, minute, minute)
    fits = _rows(engine, select(surface_fits).where(surface_fits.c.minute == minute,
                                                    surface_fits.c.currency == currency))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(tenors, atm, marker="o", color="tab:blue", label=f"ATM vol, constant maturity ({method})")
    fit_days, fit_atm = [], []
    for fit in fits:
        parameters = json.loads(fit.parameters)
        if fit.method == "svi" and parameters and fit.years > 0:
            fit_days.append(fit.years * 365.0)
            fit_atm.append(float(_svi_iv(parameters, np.array([0.0]), fit.years)[0]))
    if fit_days:
        ax.scatter(fit_days, fit_atm, marker="x", color="tab:gray", label="ATM vol per expiry (SVI)")
    title = f"{currency} ATM term structure at {minute:%Y-%m-%d %H:%M} UTC"
    if index and index[0].variance_index is not None:
        value = index[0].variance_index
        ax.axhline(value, color="tab:red", ls="--", lw=1.0)
        ax.scatter([30.0], [value], marker="D", s=50, color="tab:red", label=f"30-day variance index {value:.2f}")
        title += f": index {value:.2f}"
        if index[0].atm_iv_30d is not None:
            title += f", ATM 30d {index[0].atm_iv_30d:.2f}"
    if index and index[0].dvol is not None:
        dvol = index[0].dvol
        ax.scatter([30.0], [dvol], marker="s", s=50, color="tab:green", label=f"Deribit DVOL {dvol:.2f}")
        title += f", DVOL {dvol:.2f}"
    ax.set_xscale("log")
    ax.set_xlabel("tenor (days, log scale)")
    ax.set_ylabel("implied vol (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)


PLOTTERS: dict[str, Callable[[Engine, Figure, str, dt.datetime], None]] = {
    "smile": _plot_smile, "surface": _plot_surface, "term": _plot_term,
}


def plot_from_database(url: str, *, what: str, currency: str, out: str | Path, at: dt.datetime | None = None,
                       size: tuple[int, int] = DEFAULT_SIZE,
                       expiry: dt.date | None = None) -> tuple[Path, dt.datetime]:
    """Draw ``what`` for ``currency`` into the PNG ``out``; returns the file and the minute drawn.
    ``expiry``: a smile of that expiry only."""
    if what not in PLOTTERS:
        raise PlotError(f"--what {what!r}: choose one of {', '.join(WHAT)}")
    if expiry is not None and what != "smile":
        raise PlotError(f"--expiry narrows a smile; --what {what} draws every expiry")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PlotError(f"--out {str(out)!r}: the plot is a PNG; give a file name ending in .png")
    database = make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:" and not Path(database).exists():
        raise PlotError(f"database file {database} does not exist; give the desk's database with --db "
                        "(default: data/deribit.sqlite3)")
    engine = make_engine(url)
    try:
        minute = _minute(engine, currency, at)
        fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
        FigureCanvasAgg(fig)
        if expiry is not None:
            _plot_smile(engine, fig, currency, minute, expiry)
        else:
            PLOTTERS[what](engine, fig, currency, minute)
    except SQLAlchemyError as exc:
        raise PlotError(f"cannot read {mask_url(url)}: {str(getattr(exc, 'orig', exc)).strip()}") from None
    finally:
        engine.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out, minute
