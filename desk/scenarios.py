"""Scenarios: full Black-76 revaluation of every position over a grid of underlying moves and
vol shifts after a time step (pure).

Each option is repriced at forward ``F * (1 + move)``, after ``days`` (at or past expiry: its
intrinsic value at the moved forward), at a vol of either its own mark IV (sticky strike) or the
surface's smile of its expiry at the new log-moneyness ``ln(K / F')`` (sticky moneyness), plus the
shift in vol points (floored at a small positive vol). Futures move with the underlying. PnL is in
USD against today's value of the same positions (coin amounts are valued at the moved index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from desk.risk import OptionMark
from messages.state import PortfolioChanged
from messages.surface import SurfaceSnapshot


class Sticky(StrEnum):
    MONEYNESS = "moneyness"
    STRIKE = "strike"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """The grid: underlying moves in percent (-20 for -20%), vol shifts in vol points, the time
    step in days (``None``: to the next expiry of a held option) and how vols move."""

    spot_moves_pct: tuple[float, ...]
    vol_shifts: tuple[float, ...]
    days: float | None = 1.0
    sticky: Sticky = Sticky.MONEYNESS


@dataclass(frozen=True, slots=True)
class ScenarioGrid:
    """``pnl_usd[i][j]``: PnL at ``vol_shifts[i]`` and ``spot_moves_pct[j]``; ``days`` the step
    used; ``missing`` positions left out (no usable mark), named with why."""

    currency: str
    at: float
    spec: ScenarioSpec
    days: float
    pnl_usd: tuple[tuple[float, ...], ...]
    value_usd: float
    missing: tuple[str, ...] = ()


def scenario_grid(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float,
                  surface: SurfaceSnapshot | None, spec: ScenarioSpec, now: float) -> ScenarioGrid:
    raise NotImplementedError
