"""``risk`` and ``scenario`` end to end on the simulator through the piped console: an option is bought,
then ``risk BTC`` and ``scenario`` lines print figures consistent with the position as the exchange
marks it (its ticker's delta and vega, the account's options_delta and options_vega) and with each
other (the scenario's central difference over +-1% is the delta; no move, no shift, no time is 0)."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console as RichConsole

from actors.console import Console
from deribit.instruments import parse_expiry
from runtime.supervisor import ActorSpec
from sql.scenario_plot import read_scenario_file
from tests.support.desk import SimDesk, StartDesk
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")

PERP = "BTC-PERPETUAL"
WANTED = {"connection", "books-BTC-option", "books-BTC-future", "portfolio"}
SIZE = 0.5


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    try:
        yield reader, writer
    finally:
        writer.close()


def _expiry(name: str) -> dt.date:
    return parse_expiry(name.split("-")[1])


def _strike(name: str) -> float:
    return float(name.split("-")[2].replace("d", "."))


def an_option_days_away(desk: SimDesk, days: float) -> str:
    """The call nearest the money of the nearest expiry at least ``days`` away, with a two-sided book."""
    soon = dt.datetime.now(dt.UTC).timestamp() + days * 86400
    calls = [n for n in desk.sim.instruments("BTC") if n.count("-") == 3 and n.endswith("-C")
             and dt.datetime.combine(_expiry(n), dt.time(8), dt.UTC).timestamp() > soon]
    expiry = min(_expiry(n) for n in calls)
    for name in sorted(calls, key=lambda n: abs(_strike(n) - desk.sim.index("BTC"))):
        bids, asks = desk.sim.book(name)
        if _expiry(name) == expiry and bids and asks:
            return name
    raise AssertionError("no two-sided call in the simulator")


def number(text: str) -> float:
    return float(text.replace(",", "").replace("+", ""))


def test_risk_and_scenario_of_a_bought_option(sim_desk: StartDesk, pipe: tuple[io.TextIOWrapper, io.TextIOWrapper],
                                              tmp_path: Path) -> None:
    reader, writer = pipe
    buffer = io.StringIO()
    out = RichConsole(file=buffer, width=200, markup=False, highlight=False, emoji=False)
    desk = sim_desk({"console.instrument": PERP, "console.size_multiplier": 10.0}, currencies=["BTC"], seed=5,
                    only=WANTED, sim={"updates_per_s": 2.0, "index_vol": 0.0, "jumps_per_year": 0.0},
                    extra_specs=[ActorSpec("console", lambda ctx: Console.start(ctx, stdin=reader, out=out,
                                                                                interactive=False))])

    def send(*lines: str) -> None:
        for line in lines:
            writer.write(line + "\n")
        writer.flush()

    def after(line: str, pattern: str, timeout: float = 30) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            text = buffer.getvalue()
            start = text.rfind(f"> {line}\n")
            return re.compile(pattern, re.M).search(text, start) if start >= 0 else None
        try:
            match: re.Match[str] = wait_until(found, timeout, f"{pattern!r} after {line!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the console shows:\n{buffer.getvalue()[-6000:]}") from None
        return match

    def rows(line: str, end: str) -> dict[str, list[str]]:
        """The rows printed after ``line`` up to the next line's prompt, by their first word."""
        after(line, end)
        text = buffer.getvalue()
        block = text[text.rfind(f"> {line}\n"):].split("\n> ", 1)[0]
        return {r.split()[0]: r.split() for r in block.splitlines()[1:] if r.split()}

    option = an_option_days_away(desk, 3.0)  # a one-day step leaves it alive
    ask = desk.sim.book(option)[1][0][0]
    console = desk.supervisor.refs()["console"]
    assert console is not None
    send(f"setContractType:{option}")
    # The chosen option's live quote is asked for from now on: an order waits for it.
    wait_until(lambda: option in console.proxy().desk.get().live_options, 30, f"a live quote of {option}")
    send(f"buyOption:{ask},{SIZE}")
    after(f"buyOption:{ask},{SIZE}", rf"order manual_api_1: buy {SIZE} {re.escape(option)}: filled")
    # The account's figures follow the fill: the console's picture has them before risk is asked.
    wait_until(lambda: (console.proxy().desk.get().portfolios["BTC"].options_delta or 0.0) > 0.0, 30,
               "the account's options_delta after the fill")

    send("risk BTC", "scenario -1,0,1 0 0 sticky-strike", "scenario 0 0 0 sticky-strike", "scenario",
         "plot scenario -10:10:5 -5,0,5 1 sticky-strike")
    ticker = desk.sim.ticker(option)
    greeks = ticker["greeks"]  # as Deribit's ticker nests them: delta, vega (USD per vol point), ...
    index = desk.sim.index("BTC")

    risk = rows("risk BTC", r"^options_theta ")
    expiry_label = option.split("-")[1]
    bucket, options, total = risk[expiry_label], risk["options"], risk["total"]
    assert bucket[1:] == options[1:] == total[1:] and options[1] == "1", risk  # one option, no future
    delta, delta_usd, delta_pa = number(options[2]), number(options[3]), number(options[4])
    vega, theta = number(options[7]), number(options[9])
    assert delta == pytest.approx(SIZE * greeks["delta"], abs=2e-4), (options, greeks)  # Deribit's ticker delta
    assert delta_usd == pytest.approx(delta * index, rel=2e-3)
    assert 0 < delta_pa < delta  # a bought coin-settled call: the premium is a short coin exposure
    assert vega == pytest.approx(SIZE * greeks["vega"], rel=0.01) and vega > 0, (options, greeks)
    assert theta < 0
    ours, exchange, difference = (number(v) for v in risk["options_delta"][1:4])
    assert ours == pytest.approx(delta, abs=1e-4) and exchange == pytest.approx(ours, abs=2e-3)
    assert difference == pytest.approx(ours - exchange, abs=2e-4)
    vega_row = risk["options_vega"]
    assert number(vega_row[2]) == pytest.approx(vega, rel=0.02), vega_row
    assert "left out" not in buffer.getvalue()

    # Full repricing, no time step, vols as they are: -1%, 0, +1%.
    central = rows("scenario -1,0,1 0 0 sticky-strike", r"^\s*\+0 ")["+0"]
    down, flat, up = (number(v) for v in central[1:4])
    assert flat == 0.0
    forward_move = 0.02 * (index if index else 1.0)
    assert (up - down) / forward_move == pytest.approx(delta, rel=0.03), central  # the central difference is delta
    assert down < 0 < up
    assert rows("scenario 0 0 0 sticky-strike", r"^\s*\+0 ")["+0"][1] == "+0.00"

    grid = rows("scenario", r"^\s*\+20 ")
    value = re.search(r"book value now ([\d,.]+) USD", buffer.getvalue()[buffer.getvalue().rfind("> scenario\n"):])
    assert value is not None and number(value[1]) == pytest.approx(SIZE * ticker["mark_price"] * index, rel=0.01)
    assert grid["vol\\move"][1:] == ["-20%", "-15%", "-10%", "-5%", "+0%", "+5%", "+10%", "+15%", "+20%"]
    base_row = [number(v) for v in grid["+0"][1:]]
    assert base_row == sorted(base_row)  # a long call gains with the underlying
    assert number(grid["+0"][5]) == pytest.approx(theta, rel=0.1, abs=2.0)  # a day of theta, nothing moved
    assert number(grid["+5"][5]) > number(grid["+0"][5]) > number(grid["-5"][5])  # long vega
    assert number(grid["+0"][1]) >= -SIZE * ticker["mark_price"] * index * 1.01  # at most the premium is lost

    plotted = after("plot scenario -10:10:5 -5,0,5 1 sticky-strike", r"plotting it into\s+(\S+\.png)", timeout=30)
    written = read_scenario_file(Path(plotted[1]).with_suffix(".json"))
    assert written.spot_moves_pct == (-10.0, -5.0, 0.0, 5.0, 10.0) and written.vol_shifts == (-5.0, 0.0, 5.0)
    assert written.pnl_usd[1][2] == pytest.approx(theta, rel=0.1, abs=2.0)
    wait_until(lambda: Path(plotted[1]).exists(), 90, "the PNG of plot scenario")
