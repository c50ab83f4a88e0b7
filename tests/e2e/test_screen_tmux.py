"""The full-screen desk in a real terminal: ``python main.py`` on the embedded simulator inside tmux
at 120x40; every pane is found, ``a2`` buys and the position appears with its greeks, ``quit``
ends the program within 2 s and leaves the terminal as it found it (cooked mode, main screen).

Skipped only when tmux is missing and this is not CI (``CI`` set: it must run).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.screen import pane
from tests.support.terminal import program_args
from tests.support.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"),
                                reason="tmux is not installed (on CI it must be)")


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[tuple[Tmux, Path]]:
    program = " ".join(shlex.quote(a) for a in program_args(tmp_path, "--instrument", "BTC-PERPETUAL",
                                                            "--size-multiplier", "10"))
    done = tmp_path / "status"
    # After the program: its status, then the terminal's modes as it left them.
    command = (f"env PYTHONPATH={shlex.quote(str(REPO))} TERM=xterm-256color {program}; "
               f"echo $? > {done}.tmp; stty -a > {tmp_path / 'stty'}; mv {done}.tmp {done}; echo PROGRAM ENDED; "
               "sleep 60")
    term = Tmux(command, tmp_path)
    try:
        yield term, tmp_path
    finally:
        term.close()


def test_the_desk_screen_trades_and_quits_in_a_real_terminal(desk: tuple[Tmux, Path]) -> None:
    term, tmp_path = desk
    term.wait(r"^BTC-PERPETUAL x10>", timeout=60)
    rows = term.wait(r"\Asimulator .*trading allowed")  # the first frame drawn
    assert rows[0].startswith("simulator") and "trading allowed" in rows[0], rows[0]
    assert rows[1].startswith("BTC  index "), rows[1]
    for title in ("POSITIONS", "HEDGER", "CHAIN BTC", "OPEN ORDERS", "MESSAGES"):
        assert any(row.startswith(f" {title}") for row in rows), (title, rows)
    assert "Ctrl-D/quit stop  F5/F6 expiry" in rows[-2]
    term.send("a2", "Enter")
    rows = term.wait(r"filled: buy 20 BTC-PERPETUAL")
    assert any("sent: buy 20 BTC-PERPETUAL" in row for row in pane(rows, "MESSAGES")), rows
    # The position with its greeks (delta of 20 USD at about 60,000: 0.0003 BTC).
    rows = term.wait(r"^BTC-PERPETUAL +long +20 ")
    [row] = [r for r in pane(rows, "POSITIONS") if r.startswith("BTC-PERPETUAL")]
    cells = row.split()
    assert re.fullmatch(r"0\.000\d", cells[10]), row  # delta, in the table's column
    # The chain is live: the option keepers' quotes within a second, prices in the coin.
    assert any(re.search(r" 0\.\d{4} ", r) for r in pane(rows, "CHAIN")), rows
    # The chain pane is the nearest listed expiry's; F6 shows the next one.
    [title] = [row for row in rows if row.startswith(" CHAIN BTC ")]
    expiry = title.split()[2]
    term.send("F6")
    rows = term.wait(r"^ CHAIN BTC (?!" + expiry + r" )\S+ ")
    assert rows[-1].rstrip() == "BTC-PERPETUAL x10>"  # nothing typed on the command line
    term.send("quit", "Enter")
    quit_at = time.monotonic()
    status = tmp_path / "status"
    while not status.exists() and time.monotonic() - quit_at < 10:
        time.sleep(0.05)
    took = time.monotonic() - quit_at
    assert status.exists(), "\n".join(term.rows())
    assert status.read_text().strip() == "0"
    assert took < 2.0, f"the program took {took:.1f} s to stop after quit"
    rows = term.wait("PROGRAM ENDED")
    assert not any(row.startswith(" POSITIONS") for row in rows)  # the main screen is back
    modes = (tmp_path / "stty").read_text()
    assert re.search(r"(?<!-)icanon", modes) and re.search(r"(?<![-\w])echo\b", modes), modes
