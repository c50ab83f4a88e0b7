"""The plots read as a trader needs them: the tests read the Figure that ``main.py plot`` saves
(``sql.plots.build_figure``): axes and their labels, the delta axis, the forward and ATM lines, the
heatmap's cell values, hatched extrapolated cells and colour scale, the term chart's 30-day points;
and ``plot`` refuses an incomplete or empty minute with status 2, naming the nearest complete one.
Databases of schema 4 and of schema 3 (no ``extrapolated``, ``check_k_*``, ``minute_coverage``:
dropped here) are both read; NULL flags (old rows) are derived from the quotes."""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from sqlalchemy import DateTime, Engine, bindparam, text, update

import main
from sql.engine import make_engine
from sql.plots import Schema, build_figure
from sql.store import MinuteStore, snapshot_record
from sql.tables import surface_points, volatility_index
from tests.support.sql import AT, small_snapshot

MINUTE = dt.datetime.fromtimestamp(AT, dt.UTC)
LATER = MINUTE + dt.timedelta(minutes=1)
UTC = DateTime(timezone=True)  # how the desk's tables store a minute (the same text on SQLite)
EXPIRY = dt.date(2021, 7, 29)  # the 6.4-day SVI expiry of small_snapshot


def _fill(url: str, spool: Path) -> None:
    store = MinuteStore(url, spool)
    store.open()
    for i in (0, 1):
        assert store.record(snapshot_record(small_snapshot(at=AT + 60 * i, currency="BTC")))
    store.close()


@pytest.fixture(scope="module")
def base_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("figures")
    _fill(f"sqlite:///{root / 'desk.sqlite3'}", root / "spool")
    return root / "desk.sqlite3"


@pytest.fixture
def engine(base_file: Path, tmp_path: Path) -> Iterator[Engine]:
    """A copy of the two-minute database of schema 3, the test's to change."""
    path = tmp_path / "desk.sqlite3"
    shutil.copy(base_file, path)
    eng = make_engine(f"sqlite:///{path}")
    try:
        yield eng
    finally:
        eng.dispose()


def _as_schema_3(engine: Engine) -> None:
    """A database as schema 3 left it: no extrapolation flags, check range or coverage table."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE surface_points DROP COLUMN extrapolated"))
        conn.execute(text("ALTER TABLE surface_fits DROP COLUMN check_k_min"))
        conn.execute(text("ALTER TABLE surface_fits DROP COLUMN check_k_max"))
        conn.execute(text("DROP TABLE minute_coverage"))


def _forget_flags(engine: Engine, minute: dt.datetime | None = None) -> None:
    """Rows as the migration leaves old ones: the extrapolation flag NULL."""
    with engine.begin() as conn:
        if minute is None:
            conn.execute(text("UPDATE surface_points SET extrapolated = NULL"))
        else:
            conn.execute(text("UPDATE surface_points SET extrapolated = NULL WHERE minute = :m")
                         .bindparams(bindparam("m", minute, type_=UTC)))


def _figure(engine: Engine, what: str, **kwargs: object) -> Figure:
    fig, _ = build_figure(engine, what=what, currency="BTC", **kwargs)  # type: ignore[arg-type]
    return fig


def _main_axes(fig: Figure) -> list[Axes]:
    """The panels (not the secondary delta axes nor the colour bar)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_ylabel()]


def _legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _forward(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT forward FROM surface_fits WHERE currency = 'BTC' "
                                       "AND expiry LIKE '2021-07-29%' ORDER BY minute DESC")).scalars().first())


# -- smile ---------------------------------------------------------------------------------------------

def test_the_smile_of_one_expiry_has_strike_and_delta_axes_forward_atm_and_every_iv(engine: Engine) -> None:
    fig = _figure(engine, "smile", expiry=EXPIRY)
    (ax,) = _main_axes(fig)
    assert "strike" in ax.get_xlabel() and ax.get_ylabel() == "implied vol (%)"
    assert ax.get_xscale() == "log"
    # The secondary axis in delta: puts below the forward, calls above, labelled.
    (secondary,) = ax.child_axes
    assert "delta" in secondary.get_xlabel()
    ticks = dict(zip([t.get_text() for t in secondary.get_xticklabels()], secondary.get_xticks(), strict=True))
    forward = _forward(engine)
    assert {"25P", "25C"} <= ticks.keys()
    assert ticks["25P"] < forward < ticks["25C"]
    labels = _legend_labels(ax)
    assert {"bid IV", "ask IV", "mark IV", "fit (essvi)", "fit, extrapolated (outside quoted strikes)"} <= set(labels)
    forward_label = next(label for label in labels if label.startswith("forward "))
    atm_label = next(label for label in labels if label.startswith("ATM strike "))
    # The forward and the ATM strike as vertical lines where they are.
    vertical = {line.get_label(): line.get_xdata() for line in ax.get_lines() if line.get_label() in
                (forward_label, atm_label)}
    forward_x = vertical[forward_label]
    assert math.isclose(forward_x[0], forward) and forward_x[0] == forward_x[1]
    atm = vertical[atm_label][0]
    assert abs(atm - forward) < 0.1 * forward and float(atm_label.split()[-1].replace(",", "")) == atm
    # The fit solid inside the quoted strikes, dashed and lighter outside them.
    solid = next(line for line in ax.get_lines() if line.get_label() == "fit (essvi)")
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert solid.get_linestyle() == "-" and len(dashed) == 2
    quoted = ax.collections[0].get_offsets()[:, 0]
    assert max(np.nanmax(line.get_xdata()) for line in dashed) > quoted.max()
    assert min(np.nanmin(line.get_xdata()) for line in dashed) < quoted.min()
    title = ax.get_title()
    assert all(part in title for part in ("BTC", "29JUL21", "2021-07-22 23:01 UTC", "svi"))


def test_every_expiry_panel_has_the_same_axes(engine: Engine) -> None:
    fig = _figure(engine, "smile")
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "strike"]
    assert len(panels) == 4
    assert all(len(ax.child_axes) == 1 and ax.child_axes[0].get_xlabel() == "delta" for ax in panels)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"bid IV", "ask IV", "mark IV", "fit", "forward", "ATM strike"} <= set(labels)


def test_the_checked_range_shows_on_a_smile_when_recorded(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE surface_fits SET check_k_min = -4.0, check_k_max = 4.0"))
    (ax,) = _main_axes(_figure(engine, "smile", expiry=EXPIRY))
    assert "butterfly checked on k in [-4.0, 4.0]" in ax.get_title()


# -- heatmap -------------------------------------------------------------------------------------------

def _set_iv(engine: Engine, tenor: float, k: float, iv: float | None, minute: dt.datetime = LATER) -> None:
    with engine.begin() as conn:
        conn.execute(update(surface_points).where(surface_points.c.minute == minute,
                                                  surface_points.c.tenor_days == tenor,
                                                  surface_points.c.log_moneyness == k).values(iv=iv))


def _cells(ax: Axes) -> tuple[list[str], list[tuple[float, float]]]:
    values = [t.get_text() for t in ax.texts if t.get_gid() == "cell-value"]
    hatched = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches if p.get_gid() == "extrapolated"]
    assert all(p.get_hatch() for p in ax.patches if p.get_gid() == "extrapolated")
    return values, hatched


def test_the_heatmap_writes_each_value_hatches_extrapolation_and_one_wing_does_not_set_the_scale(
        engine: Engine) -> None:
    # One extrapolated 1-day wing of 280% (the first expiry settles in 0.4 days, the second in 6.4:
    # the 1-day tenor lies between them, and k = -0.5 far outside their quoted strikes).
    _set_iv(engine, 1.0, -0.5, 280.0)
    _forget_flags(engine)
    fig = _figure(engine, "surface")
    (ax,) = _main_axes(fig)
    assert ax.get_xlabel() == "log-moneyness ln(K/F)" and ax.get_ylabel() == "tenor (days)"
    assert [t.get_text() for t in ax.get_yticklabels()][:3] == ["1", "3", "7"]
    (bar,) = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == "implied vol (%)"
    values, hatched = _cells(ax)
    assert len(values) == 210 and "280" in values
    # Derived from the quoted strikes (schema 3): the 1-day wing and the 365-day row (after the last
    # expiry, 364.4 days) are extrapolated, the 30-day ATM cell is data.
    tenors = [1, 3, 7, 14, 21, 30, 60, 90, 180, 365]
    assert (0.0, 0.0) in hatched and all((j, 9.0) in hatched for j in range(21))
    assert (10.0, float(tenors.index(30))) not in hatched
    assert "derived from the quoted strikes' range" in ax.get_title()
    vmin, vmax = ax.collections[0].get_clim()
    assert vmax < 150.0 and vmin > 20.0
    (label,) = _legend_labels(ax)
    assert label.startswith(f"extrapolated ({len(hatched)} cells")
    (handle,) = ax.get_legend().legend_handles
    assert handle is not None and handle.get_hatch()


def test_recorded_flags_mark_the_cells_and_null_flags_are_derived(engine: Engine) -> None:
    _forget_flags(engine, MINUTE)
    with engine.begin() as conn:
        conn.execute(text("UPDATE surface_points SET extrapolated = (tenor_days = 60.0) WHERE minute = :m")
                     .bindparams(bindparam("m", LATER, type_=UTC)))
    assert Schema.of(engine) == Schema(extrapolated=True, check_range=True, coverage=True)
    values, hatched = _cells(_main_axes(_figure(engine, "surface"))[0])
    assert len(values) == 210
    assert sorted(hatched) == [(float(j), 6.0) for j in range(21)]  # the 60-day row, as recorded
    # Old rows (NULL) beside the new column: derived from the quotes, as on schema 3.
    _, derived = _cells(_main_axes(_figure(engine, "surface", at=MINUTE))[0])
    assert (0.0, 0.0) in derived and (10.0, 5.0) not in derived


def test_a_database_of_schema_3_is_read_with_derived_flags(engine: Engine) -> None:
    _as_schema_3(engine)
    assert Schema.of(engine) == Schema(extrapolated=False, check_range=False, coverage=False)
    (ax,) = _main_axes(_figure(engine, "surface"))
    _, hatched = _cells(ax)
    assert (0.0, 0.0) in hatched and "derived from the quoted strikes' range" in ax.get_title()


# -- term ----------------------------------------------------------------------------------------------

def test_the_term_chart_shows_expiries_and_the_index_and_dvol_as_points_at_30_days(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(update(volatility_index).where(volatility_index.c.minute == LATER)
                     .values(value=65.05, dvol=63.94))
    (ax,) = _main_axes(_figure(engine, "term"))
    labels = _legend_labels(ax)
    assert "variance index (30d) 65.0%" in labels or "variance index (30d) 65.1%" in labels
    assert "DVOL 63.9%" in labels
    assert ax.get_xlabel().startswith("tenor (days") and ax.get_ylabel() == "implied vol (%)"
    points = {c.get_label(): c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)}
    for label in labels:
        if label.startswith(("variance index", "DVOL")):
            assert points[label].shape == (1, 2) and points[label][0][0] == 30.0
    index_value = points[next(lab for lab in labels if lab.startswith("variance index"))][0][1]
    # No line across the tenors at the index's level (the old chart's axhline).
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        assert not (y.size >= 2 and np.allclose(y, index_value))
    # One point per expiry at its own maturity (the 0.4-day expiry left out, and said so).
    per_expiry = next(lab for lab in labels if lab.startswith("ATM vol of each expiry"))
    assert "1 under 0.5 d left out" in per_expiry
    assert sorted(np.round(points[per_expiry][:, 0], 1)) == [6.4, 50.4, 364.4]
    assert re.search(r"variance index \(30d\) 65\.\d%, DVOL 63\.9% \(DVOL - index -1\.\d pts\)", ax.get_title())


# -- incomplete and empty minutes ----------------------------------------------------------------------

def _plot(url: str, what: str, tmp_path: Path, *extra: str) -> int:
    return main.main(["plot", "--what", what, "--currency", "BTC", "--out", str(tmp_path / f"{what}.png"),
                      "--db", url, *extra])


@pytest.mark.parametrize("what", ["term", "smile", "surface"])
def test_a_minute_without_a_surface_is_refused_naming_the_nearest_complete_one(
        engine: Engine, tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Schema 3: the first minute after a start, every grid vol empty (what term drew as an empty chart)."""
    with engine.begin() as conn:
        conn.execute(update(surface_points).where(surface_points.c.minute == LATER).values(iv=None))
    assert _plot(str(engine.url), what, tmp_path) == 2
    err = capsys.readouterr().err
    assert "the BTC minute 2021-07-22 23:01 UTC has no surface" in err
    assert "nearest complete minute: 2021-07-22 23:00 UTC (--at 2021-07-22T23:00)" in err
    assert not (tmp_path / f"{what}.png").exists()
    assert _plot(str(engine.url), what, tmp_path, "--at", "2021-07-22T23:00") == 0


def test_a_minute_with_quotes_and_no_surface_rows_is_refused(engine: Engine, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with engine.begin() as conn:
        conn.execute(surface_points.delete().where(surface_points.c.minute == LATER))
    assert _plot(str(engine.url), "term", tmp_path) == 2
    assert "nearest complete minute: 2021-07-22 23:00 UTC" in capsys.readouterr().err


def _mark_incomplete(engine: Engine, minute: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM minute_coverage WHERE minute = :m AND currency = 'BTC'")
                     .bindparams(bindparam("m", minute, type_=UTC)))
        conn.execute(text("INSERT INTO minute_coverage (minute, currency, coverage, complete, listed, usable) "
                          "VALUES (:m, 'BTC', 0.12, false, 604, 72)").bindparams(bindparam("m", minute, type_=UTC)))


@pytest.mark.parametrize("what", ["term", "smile"])
def test_a_minute_marked_incomplete_is_refused(db_url: str, tmp_path: Path, what: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Schema 4: minute_coverage.complete false; on SQLite and PostgreSQL."""
    _fill(db_url, tmp_path / "spool")
    eng = make_engine(db_url)
    try:
        _mark_incomplete(eng, MINUTE)
        # The latest minute is complete and plots; the earlier one is refused, naming the later.
        assert _plot(db_url, what, tmp_path) == 0, capsys.readouterr().err
        assert _plot(db_url, what, tmp_path, "--at", "2021-07-22T23:00:30") == 2
        err = capsys.readouterr().err
        assert "2021-07-22 23:00 UTC is incomplete (coverage 12%, 72 of 604 options usable" in err
        assert "nearest complete minute: 2021-07-22 23:01 UTC" in err
        _mark_incomplete(eng, LATER)
        assert _plot(db_url, what, tmp_path) == 2
        assert "no complete minute of BTC is recorded" in capsys.readouterr().err
    finally:
        eng.dispose()
