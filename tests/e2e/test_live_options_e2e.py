"""Options traded from live data, end to end on the simulator through the piped console: right after
start-up, before any minute's chain snapshot, ``setContractType`` + ``buyOption`` is accepted and
reaches the exchange, and ``price`` shows the option's mark as its live ticker has it."""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import re
import time
from collections.abc import Iterator

import pytest
from rich.console import Console as RichConsole

from actors.console import Console
from deribit.instruments import parse_expiry
from runtime.supervisor import ActorSpec
from tests.support.desk import StartDesk
from tests.support.settings import SIM_CLIENT_ID
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")

PERP = "BTC-PERPETUAL"
WANTED = {"connection", "books-BTC-option", "books-BTC-future", "portfolio"}


@pytest.fixture
def pipe() -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    try:
        yield reader, writer
    finally:
        writer.close()


def test_an_option_is_traded_and_priced_live_before_the_first_minute(
        sim_desk: StartDesk, pipe: tuple[io.TextIOWrapper, io.TextIOWrapper]) -> None:
    reader, writer = pipe
    buffer = io.StringIO()
    out = RichConsole(file=buffer, width=400, markup=False, highlight=False, emoji=False)
    # Both clocks start 2 s after a full minute: the first minute tick is 58 s away.
    # (the next full minute of the wall clock: the offset stays within the 60 s a signed login allows;
    # one more minute, as before, gave up to 62 s when the test started just after a full minute)
    first_minute = math.floor(time.time() / 60) * 60 + 60
    offset = first_minute - 58 - time.time()
    started = time.monotonic()
    desk = sim_desk({"console.instrument": PERP, "console.size_multiplier": 10.0}, currencies=["BTC"], seed=5,
                    only=WANTED, sim={"updates_per_s": 2.0, "index_vol": 0.0, "jumps_per_year": 0.0},
                    clock_offset_s=offset,
                    extra_specs=[ActorSpec("console", lambda ctx: Console.start(ctx, stdin=reader, out=out,
                                                                                interactive=False))])

    def nearest_two_sided() -> str:
        # The nearest expiry still an hour away on the desk's clock (one settling at 08:00 stays
        # listed until the rollover, and the console refuses an option past its expiry).
        soon = time.time() + offset + 3600
        options = [n for n in desk.sim.instruments("BTC") if n.count("-") == 3
                   and dt.datetime.combine(_expiry(n), dt.time(8), dt.UTC).timestamp() > soon]
        expiry = min(_expiry(n) for n in options)
        for name in sorted(options, key=lambda n: abs(_strike(n) - desk.sim.index("BTC"))):
            bids, asks = desk.sim.book(name)
            if _expiry(name) == expiry and bids and asks:
                return name
        raise AssertionError("no two-sided option in the simulator")

    option = nearest_two_sided()
    bid = desk.sim.book(option)[0][0][0]
    for line in (f"setContractType:{option}", f"buyOption:{bid},0.5", "price"):
        writer.write(line + "\n")
    writer.flush()

    def after(line: str, pattern: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            text = buffer.getvalue()
            start = text.rfind(f"> {line}\n")
            return re.compile(pattern).search(text, start) if start >= 0 else None
        try:
            match: re.Match[str] = wait_until(found, 30, f"{pattern!r} after {line!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the console shows:\n{buffer.getvalue()[-4000:]}") from None
        return match

    after(f"buyOption:{bid},0.5", rf"order manual_api_1: buy 0\.5 {re.escape(option)}: open at ")
    accepted_at, accepted_after = time.time() + offset, time.monotonic() - started
    orders = [o for o in desk.sim.open_orders(SIM_CLIENT_ID, "BTC") if o["instrument_name"] == option]
    assert [(o["direction"], o["amount"], o["price"]) for o in orders] == [("buy", 0.5, bid)]
    row = after("price", rf"│ {re.escape(option)}\s*│\s*([\d.,-]+)\s*│\s*([\d.,-]+)\s*│\s*([\d.]+)\s*│.*│ live\s*│")
    mark = desk.sim.ticker(option)["mark_price"]
    assert abs(float(row[3]) - mark) <= 0.00006, (row[0], mark)  # the table shows 4 decimals
    # Accepted before the first minute's snapshot: the desk's clock had not reached that minute.
    assert accepted_at < first_minute, accepted_after
    assert "full minute" not in buffer.getvalue()


def _expiry(name: str) -> dt.date:
    return parse_expiry(name.split("-")[1])


def _strike(name: str) -> float:
    return float(name.split("-")[2].replace("d", "."))
