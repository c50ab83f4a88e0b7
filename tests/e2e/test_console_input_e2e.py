"""The console's input in a real terminal (a pseudo-terminal, prompt_toolkit) on the embedded
simulator: a size multiplier that is not finite or is out of range is refused as a flag (status 2,
nothing started) and at the prompt (asked again, then a valid one works); a failure while handling
one line leaves a usable prompt where ``ca`` and ``quit`` work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.failing_line import INJECTED
from tests.support.terminal import (
    PseudoTerminal,
    log_lines,
    patched_program_args,
    program_args,
    simulator_state,
    simulator_url,
)
from tests.support.waiting import wait_until

BAD_MULTIPLIERS = ["nan", "inf", "1e9"]
ALLOWED = r"give a number above 0 and at most 100,000 in the digits 0-9"


@pytest.mark.parametrize("value", BAD_MULTIPLIERS)
def test_a_bad_size_multiplier_flag_exits_2_on_a_terminal(tmp_path: Path, value: str) -> None:
    term = PseudoTerminal(program_args(tmp_path, "--instrument", "BTC-PERPETUAL", "--size-multiplier", value),
                          tmp_path)
    try:
        assert term.proc.wait(timeout=60) == 2
        term.expect(rf"settings error: command line \(--size-multiplier {value}\): console.size_multiplier: "
                    rf"size multiplier '{value}' is not a plain decimal number\. {ALLOWED}")
    finally:
        term.close()
    assert not (tmp_path / "logs").exists() and not (tmp_path / "data").exists()  # nothing started


def test_a_bad_size_multiplier_at_the_prompt_is_asked_for_again(tmp_path: Path) -> None:
    term = PseudoTerminal(program_args(tmp_path, "--instrument", "BTC-PERPETUAL"), tmp_path)
    try:
        term.expect(r"size multiplier:", timeout=60)
        for value in BAD_MULTIPLIERS:
            term.type(value + "\r")
            term.expect(rf"size multiplier '{value}' is not a plain decimal number\. {ALLOWED}")
            term.expect(r"size multiplier:")
        term.type("100001\r")
        term.expect(rf"size multiplier 100001 is above 100,000, the maximum\. {ALLOWED}")
        term.expect(r"size multiplier:")
        term.type("10\r")
        term.expect(r"trading BTC-PERPETUAL, size multiplier 10 \(a1 = 10 USD\)")
        term.expect(r"BTC-PERPETUAL x10>")
        # The same when asked again.
        term.type("reset size multiplier\r")
        term.expect(r"size multiplier:")
        term.type("inf\r")
        term.expect(rf"size multiplier 'inf' is not a plain decimal number\. {ALLOWED}")
        term.expect(r"size multiplier:")
        term.type("2\r")
        term.expect(r"BTC-PERPETUAL x2>")
        term.type("show size multiplier\r")
        term.expect(r"size multiplier: 2\b")
        term.type("quit\r")
        assert term.proc.wait(timeout=15) == 0
    finally:
        term.close()
    configured = [e for e in log_lines(tmp_path) if e["event"] == "console_configured"]
    assert [e["size_multiplier"] for e in configured] == [10.0, 2.0]


def test_a_failure_while_handling_one_line_leaves_a_usable_prompt(tmp_path: Path) -> None:
    """``a7`` fails inside its handling (tests.support.failing_line puts a bug there); the error
    is said naming the line, and the prompt goes on: ``ca`` cancels, ``a2`` trades, ``quit`` stops."""
    term = PseudoTerminal(patched_program_args("tests.support.failing_line", tmp_path, "--instrument",
                                               "BTC-PERPETUAL", "--size-multiplier", "10"), tmp_path)
    try:
        term.expect(r"BTC-PERPETUAL x10>", timeout=60)
        url = simulator_url(tmp_path)
        term.type("as1 1000\r")
        term.expect(r"order manual_api_1: buy 10 BTC-PERPETUAL: open at 1,000\.0 ")
        term.type("a7\r")
        term.expect(rf"error while handling 'a7': RuntimeError: {INJECTED} \(traceback in the log\)")
        term.expect(r"BTC-PERPETUAL x10>")
        term.type("ca\r")
        term.expect(r"cancelled 1 order\b")
        wait_until(lambda: simulator_state(url)[1] == [], what="the resting order cancelled")
        term.type("a2\r")
        term.expect(r"filled: buy 20 BTC-PERPETUAL @ [\d,.]+ \[manual_api_2\]")
        term.type("quit\r")
        assert term.proc.wait(timeout=15) == 0
    finally:
        term.close()
    events = log_lines(tmp_path)
    [failed] = [e for e in events if e["event"] == "console_line_failed"]
    assert failed["line"] == "a7" and f"RuntimeError: {INJECTED}" in failed["exception"]
    assert [e["event"] for e in events].count("console_order") == 2  # as1 1000 and a2; nothing for a7
    assert not [e for e in events if e["event"] in ("actor_failed", "console_terminal_failed")]
