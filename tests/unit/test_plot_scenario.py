"""``plot --what scenario``: the grid file the console writes, read back and checked, the figure built
from it (the heatmap holds the grid, one line per vol shift holds its row), and the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import QuadMesh

import main
from sql.scenario_plot import (
    MAX_LINES,
    ScenarioFile,
    ScenarioFileError,
    build_scenario_figure,
    read_scenario_file,
    write_scenario_file,
)

NOW = 1796630400.0  # 2026-12-07 08:00 UTC


def straddle_grid(moves: tuple[float, ...] = tuple(float(m) for m in range(-20, 21, 5)),
                  shifts: tuple[float, ...] = tuple(float(s) for s in range(-20, 21, 5))) -> ScenarioFile:
    """A short straddle's shape: losses away from the money and with vol, theta gained at the base."""
    pnl = tuple(tuple(150.0 - 8.0 * m * m - 40.0 * s for m in moves) for s in shifts)
    return ScenarioFile(currency="BTC", at=NOW, days=1.0, sticky="moneyness", spot_moves_pct=moves, vol_shifts=shifts,
                        pnl_usd=pnl, value_usd=-2500.0, index_price=60000.0, missing=("BTC-X (no live mark)",),
                        positions=2)


def test_the_grid_file_round_trips(tmp_path: Path) -> None:
    grid = straddle_grid()
    path = write_scenario_file(grid, tmp_path / "plots" / "g.json")
    assert read_scenario_file(path) == grid


@pytest.mark.parametrize(("change", "says"), [
    ({"pnl_usd": ((1.0, 2.0),)}, "is not 1 x 3"),
    ({"pnl_usd": ((1.0, math.nan, 2.0),)}, "got `null`"),  # JSON has no NaN: msgspec writes null
    ({"spot_moves_pct": (0.0, 0.0, 1.0)}, "strictly ascending"),
    ({"vol_shifts": ()}, "no points"),
])
def test_a_bad_grid_file_is_refused(tmp_path: Path, change: dict[str, object], says: str) -> None:
    fields = {"currency": "BTC", "at": NOW, "days": 1.0, "sticky": "strike", "spot_moves_pct": (-1.0, 0.0, 1.0),
              "vol_shifts": (0.0,), "pnl_usd": ((1.0, 0.0, 1.0),), "value_usd": 1.0, **change}
    path = tmp_path / "g.json"
    write_scenario_file(ScenarioFile(**fields), path)  # type: ignore[arg-type]
    with pytest.raises(ScenarioFileError, match=says):
        read_scenario_file(path)


def test_an_infinite_pnl_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text('{"currency": "BTC", "at": 0, "days": 1, "sticky": "strike", "spot_moves_pct": [0], '
                    '"vol_shifts": [0], "pnl_usd": [[1e400]], "value_usd": 0}')
    with pytest.raises(ScenarioFileError, match="not a scenario grid: Number out of range"):
        read_scenario_file(path)


def test_garbage_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text('{"currency": "BTC"}')
    with pytest.raises(ScenarioFileError, match="is not a scenario grid"):
        read_scenario_file(tmp_path / "g.json")
    with pytest.raises(ScenarioFileError, match="cannot read"):
        read_scenario_file(tmp_path / "none.json")


def test_the_figure_holds_the_grid() -> None:
    grid = straddle_grid()
    fig = build_scenario_figure(grid)
    heat, lines = fig.axes[0], fig.axes[1]
    [mesh] = [c for c in heat.collections if isinstance(c, QuadMesh)]
    assert np.allclose(np.asarray(mesh.get_array()).reshape(len(grid.vol_shifts), len(grid.spot_moves_pct)),
                       grid.pnl_usd)
    assert heat.texts, "the contour lines are labelled"
    assert any("now + 1 day: 150" in t.get_text() for t in heat.texts)  # the base cell
    drawn = {line.get_label(): line for line in lines.get_lines() if line.get_label().startswith("vol ")}
    assert list(drawn) == [f"vol {s:+g}" for s in grid.vol_shifts]
    for shift, row in zip(grid.vol_shifts, grid.pnl_usd, strict=True):
        line = drawn[f"vol {shift:+g}"]
        assert np.allclose(line.get_xdata(), grid.spot_moves_pct) and np.allclose(line.get_ydata(), row)
    assert drawn["vol +0"].get_linewidth() > drawn["vol +5"].get_linewidth()  # the unshifted one stands out
    title = fig.get_suptitle()
    assert "BTC scenario PnL (USD) after 1 day, vols sticky to moneyness: 2 positions worth -2,500 USD" in title
    assert "left out: BTC-X (no live mark)" in title


def test_a_fine_grid_draws_at_most_max_lines_keeping_the_unshifted_one() -> None:
    shifts = tuple(float(s) for s in range(-20, 21))
    fig = build_scenario_figure(straddle_grid(shifts=shifts))
    labels = [line.get_label() for line in fig.axes[1].get_lines() if line.get_label().startswith("vol ")]
    assert len(labels) <= MAX_LINES and "vol +0" in labels and "vol -20" in labels


def test_one_row_or_one_column_still_draws() -> None:
    fig = build_scenario_figure(straddle_grid(moves=(0.0,), shifts=(0.0,)))
    assert len(fig.axes) >= 2


def test_the_command_line_draws_a_grid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid_file = write_scenario_file(straddle_grid(), tmp_path / "g.json")
    out = tmp_path / "plots" / "g.png"
    assert main.main(["plot", "--what", "scenario", "--grid", str(grid_file), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scenario of BTC (9 vol shifts x 9 moves)" in capsys.readouterr().out
    assert main.main(["plot", "--what", "scenario", "--out", str(out)]) == 2
    assert "--what scenario needs --grid" in capsys.readouterr().err
    assert main.main(["plot", "--what", "scenario", "--grid", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    assert "cannot plot: cannot read" in capsys.readouterr().err
    assert main.main(["plot", "--what", "smile", "--out", str(out)]) == 2
    assert "--currency is needed" in capsys.readouterr().err
