"""The hedger and the trader on one account, end to end on the simulator through the piped console
(``printf 'a300\\nactivate delta hedging\\nactivate delta hedging confirm\\n...' | python main.py``):
a manual long in the hedge instrument, then activation sends nothing until the stated plan is
confirmed; confirmed, exactly the stated order reaches the exchange; while hedging is on, an
order line on the hedge instrument is refused unless it ends with ``override``.

What reached the exchange is read from the simulator's own record of orders, not the desk's."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console as RichConsole

from actors.console import Console
from actors.portfolio import GetPortfolio
from messages.hedging import HedgeActivation, HedgerControl, HedgerStatus
from runtime.supervisor import ActorSpec
from tests.support.desk import SimDesk, StartDesk
from tests.support.settings import SIM_CLIENT_ID
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")

PERP = "BTC-PERPETUAL"
WANTED = {"connection", "books-BTC-option", "books-BTC-future", "portfolio", "hedger"}


class PipedConsole:
    """The desk with its Console reading a pipe (the piped path: each line waits for what it
    sent) and printing into a buffer."""

    def __init__(self, sim_desk: StartDesk) -> None:
        read_fd, write_fd = os.pipe()
        self.stdin = os.fdopen(read_fd, "r")
        self.writer = os.fdopen(write_fd, "w")
        self.buffer = io.StringIO()
        out = RichConsole(file=self.buffer, width=400, markup=False, highlight=False, emoji=False)
        self.desk: SimDesk = sim_desk(
            {"hedger.currencies": ["BTC"], "console.instrument": PERP, "console.size_multiplier": 10.0},
            currencies=["BTC"], seed=5, only=WANTED,
            sim={"updates_per_s": 2.0, "index_vol": 0.0, "jumps_per_year": 0.0},
            extra_specs=[ActorSpec("console", lambda ctx: Console.start(ctx, stdin=self.stdin, out=out,
                                                                        interactive=False))])

    def type(self, line: str) -> None:
        self.writer.write(line + "\n")
        self.writer.flush()

    def output(self) -> str:
        return self.buffer.getvalue()

    def expect(self, pattern: str, after: str, timeout: float = 30.0) -> re.Match[str]:
        """``pattern`` in what was printed after the echo of the line ``after``."""
        def found() -> re.Match[str] | None:
            text = self.output()
            start = text.rfind(f"> {after}\n")
            return re.compile(pattern).search(text, start) if start >= 0 else None
        try:
            match: re.Match[str] = wait_until(found, timeout, f"{pattern!r} after {after!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the console shows:\n{self.output()[-4000:]}") from None
        return match

    def orders_on_exchange(self, prefix: str) -> list[Any]:
        """The simulator's record of every order of the desk's account whose label starts with ``prefix``."""
        exchange = self.desk.sim.server.exchange
        return self.desk.sim.call(lambda: [o for o in exchange.orders.values()
                                           if o.account == SIM_CLIENT_ID and o.label.startswith(prefix)])

    def perp_size(self) -> float:
        return next((p["size"] for p in self.desk.sim.positions(SIM_CLIENT_ID, "BTC") if p["instrument_name"] == PERP),
                    0.0)

    def hedger(self) -> HedgerStatus:
        [status] = self.desk.ask("hedger", HedgerControl(action="status", origin="test", currency="BTC"))
        return status

    def portfolio_shows(self, size: float) -> bool:
        portfolio = self.desk.ask("portfolio", GetPortfolio())["BTC"]
        return next((p.size for p in portfolio.positions if p.instrument_name == PERP), 0.0) == size

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def piped(sim_desk: StartDesk) -> Iterator[PipedConsole]:
    console = PipedConsole(sim_desk)
    try:
        yield console
    finally:
        console.close()


def test_a_manual_long_then_activation_waits_for_confirm_and_the_hedger_owns_its_instrument(
        piped: PipedConsole) -> None:
    # The trader's own long in the perpetual, the console's instrument and the hedger's.
    piped.type("a300")
    piped.expect(r"filled: buy 3,000 BTC-PERPETUAL @ [\d,.]+ \[manual_api_1\]", "a300")
    wait_until(lambda: piped.perp_size() == 3000.0, 10, "the simulator's position")

    piped.type("activate delta hedging")
    stated = piped.expect(r"hedger BTC: awaiting confirmation on BTC-PERPETUAL.*?plan (\d+): first order: "
                          r"(sell|buy) ([\d,]+) USD of BTC-PERPETUAL \(market\); it treats the whole position in "
                          r"BTC-PERPETUAL \(\+3,000 USD, \+3,000 USD of it not made by the hedger\) as the hedge",
                          "activate delta hedging")
    plan_id, side, amount = int(stated[1]), stated[2], float(stated[3].replace(",", ""))
    assert (side, amount) == ("sell", 3000.0)
    assert "NOTE: the console trades BTC-PERPETUAL, the hedger's instrument" in piped.output()
    status = piped.hedger()
    assert status.activation is HedgeActivation.AWAITING_CONFIRMATION and status.plan is not None
    assert status.plan.plan_id == plan_id
    # Nothing reaches the exchange while the plan waits, whatever the market does.
    index = piped.desk.sim.index("BTC")
    for pct in (1.0, -1.0, 0.0):
        piped.desk.sim.set_index("BTC", index * (1 + pct / 100))
        time.sleep(0.5)
    assert piped.orders_on_exchange("hedge-") == [] and piped.perp_size() == 3000.0

    piped.type("activate delta hedging confirm")
    piped.expect(rf"hedger BTC: active on BTC-PERPETUAL.*?hedging activated by console \(plan {plan_id} confirmed\)",
                 "activate delta hedging confirm")
    [hedge] = wait_until(lambda: piped.orders_on_exchange("hedge-"), 10, "the confirmed hedge on the exchange")
    assert (hedge.instrument, hedge.direction, hedge.amount, hedge.order_type) == (PERP, side, amount, "market")
    wait_until(lambda: piped.perp_size() == 0.0 and piped.portfolio_shows(0.0), 10, "the position hedged")
    wait_until(lambda: piped.hedger().phase == "idle", 10, "the hedge settled")

    # While it hedges, an order line on its instrument is refused, and says how to trade it anyway.
    piped.type("a300")
    piped.expect(r"refused, nothing sent: the BTC delta hedger owns BTC-PERPETUAL: it treats the whole position "
                 r"there as its hedge and would trade this order away\. to trade it anyway: another future \(change "
                 r"instrument\), deactivate delta hedging first, or the same line ending with override", "a300")
    # Cancels are never refused.
    piped.type("ca")
    piped.expect(r"sent: all cancel", "ca")
    assert [o.label for o in piped.orders_on_exchange("manual_api_")] == ["manual_api_1"]

    # With the word it goes through; the hedger then hedges it, as it said it would.
    piped.type("a300 override")
    piped.expect(r"filled: buy 3,000 BTC-PERPETUAL @ [\d,.]+ \[manual_api_2\]", "a300 override")
    assert [(o.label, o.direction, o.amount) for o in piped.orders_on_exchange("manual_api_")] == [
        ("manual_api_1", "buy", 3000.0), ("manual_api_2", "buy", 3000.0)]
    wait_until(lambda: len(piped.orders_on_exchange("hedge-")) == 2 and piped.perp_size() == 0.0, 15,
               "the override's long hedged")
    assert [(o.direction, o.amount) for o in piped.orders_on_exchange("hedge-")] == [("sell", 3000.0)] * 2

    piped.type("quit")
    piped.expect(r"stopping", "quit")
    # Each line waited for what it had to (the override's for its answer: the hedger moves that position too).
    assert "still waiting" not in piped.output()
