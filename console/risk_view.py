"""The console's ``risk`` and ``scenario``: the book's greeks and scenario grid from what the
console holds (:class:`~console.desk_state.DeskState`: the portfolios, the option keepers' live
quotes of the held options, the index, the surface), computed by desk/risk.py and
desk/scenarios.py, drawn as rich tables (also the screen's risk view, F9), and the scenario grid
as the file ``plot scenario`` draws (sql/scenario_plot.py).

A held option without a live quote is left out of every figure and named; a piped line waits for
those quotes first (:class:`LiveMarksWait`), as ``chain`` waits for its chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from config.settings import RiskSettings
from console.desk_state import DeskState
from console.grammar import Scenario
from console.numbers import MISSING, _finite, greek_text, usd_text
from console.tables import compact_table
from desk.risk import AccountCheck, CurrencyRisk, Exposure, OptionMark, currency_risk, mark_of
from desk.scenarios import ScenarioGrid, ScenarioSpec, Sticky, scenario_grid
from sql.scenario_plot import ScenarioFile, days_text

#: The scenario table's most spot-move columns in one table (a wider grid is printed in parts).
SCENARIO_COLUMNS = 11
GAIN_STYLE = "green"
LOSS_STYLE = "red"


# -- the inputs --------------------------------------------------------------------------------------
def held_options(desk: DeskState, currency: str) -> list[str]:
    """The options of ``currency`` held (any size but 0)."""
    portfolio = desk.portfolios.get(currency)
    if portfolio is None:
        return []
    return [p.instrument_name for p in portfolio.positions if p.size and p.kind == "option"]


def live_marks(desk: DeskState, currency: str, now: float) -> tuple[dict[str, OptionMark], tuple[str, ...]]:
    """The held options' marks from their live quotes, and the held options without one (no live
    quote, or one without a usable mark yet: its first ticker not in)."""
    marks: dict[str, OptionMark] = {}
    waiting: list[str] = []
    for name in held_options(desk, currency):
        quote = desk.option_quote(name, now)
        mark = None if quote is None else mark_of(quote, desk.instrument(name))
        if mark is None:
            waiting.append(name)
        else:
            marks[name] = mark
    return marks, tuple(waiting)


def risk_of(desk: DeskState, currency: str, now: float) -> CurrencyRisk | str:
    """``currency``'s risk now, or why there is none."""
    portfolio = desk.portfolios.get(currency)
    if portfolio is None:
        return f"{currency}: no portfolio yet (it comes once the exchange answered)"
    marks, _ = live_marks(desk, currency, now)
    return currency_risk(portfolio, marks, desk.index_price(currency), now)


def scenario_spec(command: Scenario, settings: RiskSettings) -> ScenarioSpec:
    """What a ``scenario`` line asks for, the ``[risk]`` settings filling what it leaves out."""
    to_expiry = command.to_expiry or (command.days is None and settings.days_to_expiry)
    days = None if to_expiry else (settings.days if command.days is None else command.days)
    return ScenarioSpec(spot_moves_pct=command.spot_moves_pct or settings.spot_moves_pct,
                        vol_shifts=command.vol_shifts or settings.vol_shifts, days=days,
                        sticky=command.sticky or Sticky(settings.sticky))


def scenario_of(desk: DeskState, currency: str, spec: ScenarioSpec, now: float) -> ScenarioGrid | str:
    """``currency``'s scenario grid now, or why there is none."""
    portfolio = desk.portfolios.get(currency)
    if portfolio is None:
        return f"{currency}: no portfolio yet (it comes once the exchange answered)"
    if not any(p.size for p in portfolio.positions):
        return f"{currency}: no positions, nothing to reprice"
    index = _finite(desk.index_price(currency))
    if index is None or index <= 0:
        return f"{currency}: no index price yet"
    marks, _ = live_marks(desk, currency, now)
    return scenario_grid(portfolio, marks, index, desk.surfaces.get(currency), spec, now)


@dataclass
class LiveMarksWait:
    """A piped ``risk`` / ``scenario`` line: waits until each held option of ``currencies`` has a
    live quote (the console asks for them at every refresh), then ``then`` prints; at the deadline
    it prints anyway, naming what was left out."""

    currencies: tuple[str, ...]
    now: Callable[[], float]
    deadline: float
    then: Callable[[], None]

    def missing(self, desk: DeskState) -> list[str]:
        now = self.now()
        return [f"a live mark of {name}" for c in self.currencies for name in live_marks(desk, c, now)[1]]

    def finish(self) -> None:
        self.then()


# -- risk ------------------------------------------------------------------------------------------------
def _cents(value: float | None) -> float | None:
    """A USD figure that rounds to 0.00 as 0 (no ``-0.00``)."""
    return 0.0 if value is not None and abs(value) < 0.005 else value


def _usd(value: float | None, signed: bool = False) -> str:
    return usd_text(_cents(value), signed=signed)


def _usd_of(coin: float, index: float | None) -> float | None:
    return None if index is None else coin * index


def _exposure_cells(e: Exposure, index: float | None) -> list[str]:
    return [greek_text(e.delta, 4), _usd(_usd_of(e.delta, index)), greek_text(e.delta_pa, 4),
            _usd(_usd_of(e.delta_pa, index)), _usd(e.gamma_usd_1pct), _usd(e.vega_usd), _usd(e.vega_30d_usd),
            _usd(e.theta_usd)]


RISK_COLUMNS = ("expiry", "pos", "delta", "delta$", "delta PA", "deltaPA$", "gamma$/1%", "vega$", "vega30d$",
                "theta$/d")
#: The digits each account figure is shown with (gamma is Deribit's, coin per USD: small).
_ACCOUNT_DIGITS = {"options_gamma": 6, "options_vega": 2, "options_theta": 2}


def _agreement(check: AccountCheck, digits: int) -> Text:
    """Whether our figure is within the stated tolerance of the exchange's (``-``: nothing to
    compare, or no tolerance stated: an AccountCheck before desk/risk.py gave one)."""
    agrees = getattr(check, "agrees", None)
    tolerance = getattr(check, "tolerance", None)
    if agrees is None or tolerance is None:
        return Text(MISSING)
    within = f"within {greek_text(tolerance, digits)}"
    return Text(f"yes, {within}", style=GAIN_STYLE) if agrees else Text(f"NO, not {within}", style="bold red")


def risk_table(risk: CurrencyRisk, titled: bool = True) -> RenderableType:
    """One currency's risk: a row per expiry bucket, the options' total and the total with the
    futures; the exchange's account figures beside ours with the difference (``titled`` False,
    the screen's pane: no title, the account figures on one line); what was left out."""
    index = _finite(risk.index_price)
    when = dt.datetime.fromtimestamp(risk.at, tz=dt.UTC).strftime("%H:%M:%S UTC")
    title = (f"{risk.currency} risk at {when}, index {usd_text(index)} (delta in coin, $: USD at the index; PA: "
             "premium-adjusted; vega per vol point)")
    table = compact_table(title if titled else None)
    for header in RISK_COLUMNS:
        table.add_column(header, justify="left" if header == "expiry" else "right", no_wrap=header == "expiry")
    for bucket in risk.buckets:
        table.add_row(bucket.label, str(bucket.positions), *_exposure_cells(bucket.exposure, index))
    if not risk.buckets:
        table.add_row("(no positions)", *[""] * (len(RISK_COLUMNS) - 1))
    options = risk.option_positions
    if options is None:  # a CurrencyRisk that does not say: the dated buckets' count
        options = sum(b.positions for b in risk.buckets if b.expiry_ms is not None)
    table.add_row(Text("options", style="bold"), str(options), *_exposure_cells(risk.options, index),
                  style="bold", end_section=False)
    table.add_row(Text("total", style="bold"), str(sum(b.positions for b in risk.buckets)),
                  *_exposure_cells(risk.total, index), style="bold")
    parts: list[RenderableType] = [table]
    if risk.account and not titled:
        parts.append(Text("exchange (difference ours - exchange): " + ",  ".join(
            f"{c.name} {greek_text(c.exchange, _ACCOUNT_DIGITS.get(c.name, 4))} "
            f"({greek_text(c.difference, _ACCOUNT_DIGITS.get(c.name, 4))}"
            f"{', OFF' if getattr(c, 'agrees', None) is False else ''})" for c in risk.account)))
    elif risk.account:
        checks = compact_table(f"{risk.currency} against the exchange's account figures")
        for header in ("figure", "ours", "exchange", "difference", "agrees"):
            checks.add_column(header, justify="left" if header in ("figure", "agrees") else "right")
        for check in risk.account:
            digits = _ACCOUNT_DIGITS.get(check.name, 4)
            checks.add_row(check.name, greek_text(check.ours, digits), greek_text(check.exchange, digits),
                           greek_text(check.difference, digits), _agreement(check, digits))
        parts.append(checks)
    if risk.missing:
        parts.append(Text(f"left out of every figure: {'; '.join(risk.missing)}", style="yellow"))
    return Group(*parts)


def risk_view(desk: DeskState, currencies: Iterable[str], now: float, titled: bool = True) -> RenderableType:
    """``risk``'s output: each currency's :func:`risk_table` (or why there is none)."""
    parts: list[RenderableType] = []
    for currency in currencies:
        risk = risk_of(desk, currency, now)
        parts.append(Text(risk, style="yellow") if isinstance(risk, str) else risk_table(risk, titled))
    return Group(*parts)


# -- scenarios ---------------------------------------------------------------------------------------------
def _pnl_cell(value: float, base: bool) -> Text:
    style = GAIN_STYLE if value >= 0.005 else LOSS_STYLE if value <= -0.005 else ""
    return Text(_usd(value, signed=True), style=f"{style} bold" if base else style)


def scenario_title(grid: ScenarioGrid, index: float | None, surface: bool) -> str:
    sticky = f"sticky {grid.spec.sticky.value}" + ("" if surface or grid.spec.sticky is Sticky.STRIKE
                                                   else " (no surface yet)")
    step = days_text(grid.days) + (" (to the next expiry)" if grid.spec.days is None else "")
    return (f"{grid.currency} scenario PnL in USD after {step}, vols {sticky}; book value now "
            f"{_usd(grid.value_usd)} USD, index {usd_text(index)}; rows: vol shift (vol points), "
            "columns: underlying move (%)")


def scenario_table(grid: ScenarioGrid, index: float | None = None, surface: bool = True,
                   columns: int = SCENARIO_COLUMNS) -> RenderableType:
    """The PnL grid, rows the vol shifts and columns the moves (in parts of ``columns`` moves);
    the base cell (no move, no shift) in bold."""
    moves = grid.spec.spot_moves_pct
    parts: list[RenderableType] = [Text(scenario_title(grid, index, surface))]
    for start in range(0, len(moves), columns):
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
        table.add_column("vol\\move", justify="right", style="bold")
        for move in moves[start:start + columns]:
            table.add_column(f"{move:+g}%", justify="right")
        for shift, row in zip(grid.spec.vol_shifts, grid.pnl_usd, strict=True):
            cells = [_pnl_cell(v, shift == 0 and m == 0) for m, v in
                     zip(moves[start:start + columns], row[start:start + columns], strict=True)]
            table.add_row(f"{shift:+g}", *cells)
        parts.append(table)
    if grid.missing:
        parts.append(Text(f"left out: {'; '.join(grid.missing)}", style="yellow"))
    notes = getattr(grid, "notes", ())  # what the revaluation says of itself (a newer ScenarioGrid's field)
    if notes:
        parts.append(Text(f"notes: {'; '.join(notes)}", style="dim"))
    return Group(*parts)


def scenario_summary(grid: ScenarioGrid) -> str:
    """One line: the grid's size, its step and its worst and best PnL."""
    flat = [(v, shift, move) for shift, row in zip(grid.spec.vol_shifts, grid.pnl_usd, strict=True)
            for move, v in zip(grid.spec.spot_moves_pct, row, strict=True)]
    worst, best = min(flat), max(flat)
    return (f"{grid.currency} scenario grid, {len(grid.spec.vol_shifts)} vol shifts x {len(grid.spec.spot_moves_pct)} "
            f"moves after {days_text(grid.days)}, sticky {grid.spec.sticky.value}: worst "
            f"{_usd(worst[0], signed=True)} USD (move {worst[2]:+g}%, vol {worst[1]:+g}), best "
            f"{_usd(best[0], signed=True)} USD (move {best[2]:+g}%, vol {best[1]:+g})")


def scenario_file(grid: ScenarioGrid, index: float | None, positions: int) -> ScenarioFile:
    """The grid as ``plot scenario`` writes it for ``main.py plot --what scenario``."""
    return ScenarioFile(currency=grid.currency, at=grid.at, days=grid.days, sticky=grid.spec.sticky.value,
                        spot_moves_pct=tuple(grid.spec.spot_moves_pct), vol_shifts=tuple(grid.spec.vol_shifts),
                        pnl_usd=tuple(tuple(row) for row in grid.pnl_usd), value_usd=grid.value_usd,
                        index_price=index, missing=tuple(grid.missing), positions=positions)


def scenario_paths(currency: str, plots_dir: Path, now: float) -> tuple[Path, Path]:
    """The grid file and the PNG of a ``plot scenario``: ``CURRENCY-scenario-YYYYMMDD-HHMMSS``."""
    stamp = dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y%m%d-%H%M%S")
    stem = plots_dir / f"{currency}-scenario-{stamp}"
    return stem.with_suffix(".json"), stem.with_suffix(".png")


def positions_of(desk: DeskState, currency: str) -> int:
    portfolio = desk.portfolios.get(currency)
    return 0 if portfolio is None else sum(1 for p in portfolio.positions if p.size)
