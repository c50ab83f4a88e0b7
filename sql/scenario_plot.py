"""The scenario grid as a file and as a figure: ``python main.py plot --what scenario --grid FILE``.

The console computes the grid from the live book (desk/scenarios.py) and writes it as JSON
(:class:`ScenarioFile`, msgspec) under ``DATA_DIR/plots/``; this module reads it back and draws
it (matplotlib, Agg): on the left the PnL in USD as a heatmap over the underlying's move (x, %)
and the vol shift (y, vol points), a diverging colour scale centred on 0 (losses red, gains blue),
contour lines labelled in USD (dashed where the PnL is a loss) and the base cell (no move, no shift)
marked (each side of 0 on its own scale: the worst loss is full red and the best gain full blue); on the right the PnL
against the move, one line per vol shift (coloured from dark, the lowest, to yellow, the highest;
the unshifted one thick and black). The title says the
currency, when, the time step, how vols move, the book's value now and what was left out.

matplotlib is imported when a figure is drawn, not when the console writes a file.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_SIZE = (1400, 700)
DPI = 100
#: The most contour lines drawn (their levels are "nice" round USD amounts).
MAX_CONTOURS = 9
#: The most lines in the PnL-against-move chart (every other vol shift beyond that).
MAX_LINES = 11


class ScenarioFile(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario grid as the console computed it: ``pnl_usd[i][j]`` at ``vol_shifts[i]`` and
    ``spot_moves_pct[j]``; ``at`` unix seconds; ``days`` the time step used; ``sticky``
    ``moneyness`` or ``strike``; ``value_usd`` the book's value now; ``missing`` positions left out."""

    currency: str
    at: float
    days: float
    sticky: str
    spot_moves_pct: tuple[float, ...]
    vol_shifts: tuple[float, ...]
    pnl_usd: tuple[tuple[float, ...], ...]
    value_usd: float
    index_price: float | None = None
    missing: tuple[str, ...] = ()
    positions: int = 0


class ScenarioFileError(Exception):
    """The grid file cannot be read or is not a usable grid; the text says why."""


def write_scenario_file(grid: ScenarioFile, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(grid))
    return path


def read_scenario_file(path: str | Path) -> ScenarioFile:
    """The grid in ``path``, checked: a shape that matches its axes, finite PnL, axes ascending."""
    try:
        grid = msgspec.json.decode(Path(path).read_bytes(), type=ScenarioFile)
    except OSError as exc:
        raise ScenarioFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ScenarioFileError(f"{path} is not a scenario grid: {exc}") from None
    rows, columns = len(grid.vol_shifts), len(grid.spot_moves_pct)
    if not rows or not columns:
        raise ScenarioFileError(f"{path}: the grid has no points")
    if len(grid.pnl_usd) != rows or any(len(row) != columns for row in grid.pnl_usd):
        raise ScenarioFileError(f"{path}: the PnL is not {rows} x {columns} (vol shifts x moves)")
    if not all(math.isfinite(v) for row in grid.pnl_usd for v in row):
        raise ScenarioFileError(f"{path}: the PnL holds a value that is not finite")
    for name, axis in (("spot_moves_pct", grid.spot_moves_pct), ("vol_shifts", grid.vol_shifts)):
        if any(b <= a for a, b in itertools.pairwise(axis)) or not all(map(math.isfinite, axis)):
            raise ScenarioFileError(f"{path}: {name} must be finite and strictly ascending")
    return grid


def days_text(days: float) -> str:
    """``1 day``, ``0.92 days``, ``30 days``."""
    shown = f"{days:.2f}".rstrip("0").rstrip(".")
    return f"{shown} day" + ("" if shown == "1" else "s")


def _nice_levels(low: float, high: float, most: int) -> list[float]:
    """Round USD levels strictly between ``low`` and ``high``, at most ``most`` of them, 0 among
    them when it lies inside."""
    span = high - low
    if not span > 0:
        return []
    raw = span / (most + 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) + 1
    levels = [k * step for k in range(first, first + most + 2) if low < k * step < high]
    return levels[:most]


def _usd(value: float) -> str:
    """A contour's label: ``-12.5k``, ``800``, ``1.2M``."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:,.3g}M"
    if size >= 1e3:
        return f"{value / 1e3:,.3g}k"
    if size < 0.005:
        return "0"
    return f"{value:,.0f}" if size >= 10 else f"{value:,.2f}"


def _title(grid: ScenarioFile) -> str:
    when = dt.datetime.fromtimestamp(grid.at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    index = f", index {grid.index_price:,.2f}" if grid.index_price else ""
    left = f"; left out: {', '.join(grid.missing)}" if grid.missing else ""
    positions = f"{grid.positions} position{'' if grid.positions == 1 else 's'}"
    return (f"{grid.currency} scenario PnL (USD) after {days_text(grid.days)}, vols sticky to {grid.sticky}: "
            f"{positions} worth {grid.value_usd:,.0f} USD now{index}, {when}{left}")


def build_scenario_figure(grid: ScenarioFile, size: tuple[int, int] = DEFAULT_SIZE) -> Figure:
    """The figure (see the module doc); its first axes hold the heatmap (``QuadMesh``), its second
    one line per drawn vol shift (labelled ``vol +5``)."""
    import matplotlib
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    heat, lines = fig.subplots(1, 2, width_ratios=(1.15, 1))
    x = np.asarray(grid.spot_moves_pct, dtype=float)
    y = np.asarray(grid.vol_shifts, dtype=float)
    z = np.asarray(grid.pnl_usd, dtype=float)
    # White at 0, the worst loss full red and the best gain full blue (each side its own scale, so
    # that a loss region shows even beside a much larger gain; the colour bar gives the amounts).
    floor = max(float(np.max(np.abs(z))) * 0.01, 1e-6)
    low, high = min(float(z.min()), -floor), max(float(z.max()), floor)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=low, vmax=high)
    mesh = heat.pcolormesh(x, y, z, cmap="RdBu", norm=norm, shading="nearest")
    colourbar = fig.colorbar(mesh, ax=heat, shrink=0.9)
    colourbar.set_label("PnL (USD)")
    # Each half of the bar has its own scale: round amounts on both sides, 0 between them.
    colourbar.set_ticks([*_nice_levels(low, 0.0, 4), 0.0, *_nice_levels(0.0, high, 4)])
    colourbar.ax.yaxis.set_major_formatter(lambda v, _pos: _usd(v))
    if len(x) > 1 and len(y) > 1:
        levels = _nice_levels(float(z.min()), float(z.max()), MAX_CONTOURS)
        if levels:
            contours = heat.contour(x, y, z, levels=levels, colors="black", linewidths=0.8)
            heat.clabel(contours, fmt=_usd, fontsize=8, inline=True)
    if 0.0 in grid.spot_moves_pct and 0.0 in grid.vol_shifts:
        heat.plot([0.0], [0.0], marker="+", markersize=14, color="black", markeredgewidth=2)
        heat.annotate(f"now + {days_text(grid.days)}: {_usd(float(z[list(y).index(0.0), list(x).index(0.0)]))}",
                      (0.0, 0.0), textcoords="offset points", xytext=(8, 8), fontsize=9)
    heat.set_xlabel(f"{grid.currency} move (%)")
    heat.set_ylabel("vol shift (vol points)")
    heat.set_title("PnL over move and vol shift")

    rows = list(range(len(y)))
    if len(rows) > MAX_LINES:  # every k-th shift, keeping the unshifted one
        k = math.ceil(len(rows) / MAX_LINES)
        base = list(y).index(0.0) if 0.0 in grid.vol_shifts else 0
        rows = [i for i in rows if (i - base) % k == 0]
    # The vol shifts in a colour scale of their own (low vol dark, high vol yellow), not the PnL's.
    shades = matplotlib.colormaps["viridis"]
    colours = [shades(0.9 * i / max(1, len(rows) - 1)) for i in range(len(rows))]
    for colour, i in zip(colours, rows, strict=True):
        shift = y[i]
        unshifted = shift == 0.0
        lines.plot(x, z[i], marker="o" if len(x) <= 25 else None, markersize=3,
                   color="black" if unshifted else colour, linewidth=2.5 if unshifted else 1.2,
                   label=f"vol {shift:+g}", zorder=3 if unshifted else 2)
    lines.axhline(0.0, color="grey", linewidth=0.8)
    lines.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    lines.set_xlabel(f"{grid.currency} move (%)")
    lines.set_ylabel("PnL (USD)")
    lines.set_title("PnL against the move, per vol shift (vol points)")
    lines.yaxis.set_major_formatter(lambda v, _pos: _usd(v))
    lines.grid(True, alpha=0.3)
    lines.legend(fontsize=8, loc="best", ncols=2 if len(rows) > 6 else 1)
    fig.suptitle(_title(grid), fontsize=11)
    return fig


def plot_scenario_file(grid_file: str | Path, out: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Draw the grid in ``grid_file`` into the PNG ``out``; raises :class:`ScenarioFileError`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = build_scenario_figure(read_scenario_file(grid_file), size)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path
