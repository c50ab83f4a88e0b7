"""`main.py plot`: each --what writes a PNG of the asked size that is not blank, from SQLite or PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import main
from sql.plots import PlotError, parse_size, parse_time, plot_from_database
from sql.store import MinuteStore, snapshot_record
from tests.support.sql import AT, private_schema, small_snapshot


def _fill(url: str, spool: Path) -> None:
    store = MinuteStore(url, spool)
    store.open()
    for i, currency in ((0, "BTC"), (1, "BTC"), (0, "ETH")):
        assert store.record(snapshot_record(small_snapshot(at=AT + 60 * i, currency=currency)))
    store.close()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("plots")
    url = f"sqlite:///{root / 'desk.sqlite3'}"
    _fill(url, root / "spool")
    return url


@pytest.fixture(scope="module")
def postgres_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_schema(pg_url) as url:
        _fill(url, tmp_path_factory.mktemp("pg-spool"))
        yield url


def assert_real_png(path: Path, width: int, height: int) -> np.ndarray:
    image = imread(path)
    assert image.shape[:2] == (height, width)
    rgb = image[..., :3]
    # Not blank: many pixels differ from the background and there are many colours.
    background = rgb[0, 0]
    drawn = np.any(np.abs(rgb - background) > 0.05, axis=-1)
    assert drawn.mean() > 0.02
    assert len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 20
    return image


@pytest.mark.parametrize("what", ["smile", "surface", "term"])
def test_each_plot_from_the_command_line(sqlite_url: str, tmp_path: Path, what: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{what}.png"
    status = main.main(["plot", "--what", what, "--currency", "btc", "--out", str(out), "--db", sqlite_url,
                        "--size", "900x600"])
    assert status == 0, capsys.readouterr().err
    assert_real_png(out, 900, 600)
    # The latest minute unless --at says otherwise.
    assert "at 2021-07-22 23:01 UTC" in capsys.readouterr().out


def test_the_three_plots_differ_and_work_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    images = []
    for what in ("smile", "surface", "term"):
        path, minute = plot_from_database(postgres_url, what=what, currency="ETH", out=tmp_path / f"{what}.png")
        assert minute == dt.datetime.fromtimestamp(AT, dt.UTC)
        images.append(assert_real_png(path, 1200, 800))
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_at_picks_the_latest_minute_at_or_before(sqlite_url: str, tmp_path: Path) -> None:
    _, minute = plot_from_database(sqlite_url, what="term", currency="BTC", out=tmp_path / "a.png",
                                   at=parse_time("2021-07-22T23:00:30"))
    assert minute == dt.datetime.fromtimestamp(AT, dt.UTC)
    with pytest.raises(PlotError, match="no surface of BTC recorded at or before"):
        plot_from_database(sqlite_url, what="term", currency="BTC", out=tmp_path / "b.png",
                           at=parse_time(str(AT - 3600)))


def test_bad_requests_say_what_to_do(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlotError, match="no surface of XRP"):
        plot_from_database(sqlite_url, what="smile", currency="XRP", out=tmp_path / "x.png")
    with pytest.raises(PlotError, match=r"ending in \.png"):
        plot_from_database(sqlite_url, what="smile", currency="BTC", out=tmp_path / "x.jpg")
    with pytest.raises(PlotError, match="does not exist"):
        plot_from_database(f"sqlite:///{tmp_path / 'none.sqlite3'}", what="smile", currency="BTC",
                           out=tmp_path / "x.png")
    assert not (tmp_path / "none.sqlite3").exists()
    with pytest.raises(PlotError, match="ISO time"):
        parse_time("yesterday")
    with pytest.raises(PlotError, match="WIDTHxHEIGHT"):
        parse_size("big")
    assert parse_time("2021-07-22T23:00Z") == parse_time("1626994800") == parse_time("2021-07-22 23:00")
    status = main.main(["plot", "--what", "term", "--currency", "BTC", "--out", str(tmp_path / "t.png"),
                        "--db", sqlite_url, "--at", "soon"])
    assert status == 2 and "cannot plot: --at 'soon'" in capsys.readouterr().err


def test_a_smile_of_one_expiry(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--expiry`` (what the console's ``plot smile 29JUL21`` asks for) draws that expiry alone."""
    one, every = tmp_path / "one.png", tmp_path / "every.png"
    args = ["plot", "--what", "smile", "--currency", "BTC", "--db", sqlite_url, "--size", "600x400"]
    assert main.main([*args, "--out", str(one), "--expiry", "29jul21"]) == 0, capsys.readouterr().err
    assert main.main([*args, "--out", str(every)]) == 0
    assert not np.array_equal(assert_real_png(one, 600, 400), assert_real_png(every, 600, 400))
    assert main.main([*args, "--out", str(tmp_path / "x.png"), "--expiry", "30JUL21"]) == 2
    assert "no BTC quotes of the expiry 30JUL21 at" in capsys.readouterr().err
    assert main.main([*args[:2], "term", *args[3:], "--out", str(tmp_path / "y.png"), "--expiry", "29JUL21"]) == 2
    assert "--expiry narrows a smile" in capsys.readouterr().err
