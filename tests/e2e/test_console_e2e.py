"""The console end to end: ``python main.py`` on the embedded simulator, driven in a pseudo-terminal
(prompt_toolkit) and through a pipe, with the simulator's own state checked over its API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.terminal import PseudoTerminal, log_lines, program_args, simulator_state, simulator_url


def test_trading_in_a_pseudo_terminal_against_the_simulator(tmp_path: Path) -> None:
    term = PseudoTerminal(program_args(tmp_path), tmp_path)
    try:
        term.expect(r"instrument \(number or name", timeout=60)
        term.type("BTC-PERPETUAL\r")
        term.expect(r"size multiplier:")
        term.type("10\r")
        term.expect(r"trading BTC-PERPETUAL, size multiplier 10 \(a1 = 10 USD\)")
        term.expect(r"BTC-PERPETUAL x10>")
        url = simulator_url(tmp_path)

        term.type("a2\r")
        term.expect(r"filled: buy 20 BTC-PERPETUAL @ [\d,.]+ \[manual_api_1\]")
        term.run_until("positions", r"BTC-PERPETUAL\s+long\s+20 ")

        term.type("as1 1000\r")
        term.expect(r"order manual_api_2: buy 10 BTC-PERPETUAL: open at 1,000\.0 ")
        term.run_until("orders", r"manual_api_2\s+BTC-PERPETUAL\s+buy\s+10 ")
        positions, orders = simulator_state(url)
        assert [(p["instrument_name"], p["size"]) for p in positions] == [("BTC-PERPETUAL", 20)]
        assert [(o["label"], o["price"], o["amount"], o["post_only"]) for o in orders] == [
            ("manual_api_2", 1000.0, 10.0, True)]

        # Ctrl-C clears the line: nothing is sent for it.
        term.type("a500\x03")
        term.type("ca\r")
        term.expect(r"cancelled 1 order\b")
        term.run_until("orders", r"\(no open orders\)")
        positions, orders = simulator_state(url)
        assert [(p["instrument_name"], p["size"]) for p in positions] == [("BTC-PERPETUAL", 20)]
        assert orders == []

        # The 20 USD long (inside the band) is not the hedger's: it says so and waits for the confirmation.
        term.type("activate delta hedging\r")
        term.expect(r"hedger BTC: awaiting confirmation on BTC-PERPETUAL.*first order: nothing now")
        term.type("activate delta hedging confirm\r")
        term.expect(r"hedger BTC: active on BTC-PERPETUAL")
        term.type("status\r")
        term.expect(r"delta hedging")
        term.expect(r"│ BTC\s*│ active\s*│ BTC-PERPETUAL")
        term.expect(r"books: futures \d+ of \d+ synced")

        term.type("quit\r")
        assert term.proc.wait(timeout=15) == 0
    finally:
        term.close()
    events = [line["event"] for line in log_lines(tmp_path)]
    assert events.count("console_order") == 2  # a2 and as1 1000, nothing for the cleared line
    assert "actors_stopped" in events
    assert (tmp_path / "data" / "console-history.txt").read_text().count("+a2") == 1


def test_piped_commands_without_a_terminal(tmp_path: Path) -> None:
    """``printf 'a2\\npositions\\nca\\nquit\\n' | python main.py --instrument BTC-PERPETUAL
    --size-multiplier 10``, with two invalid lines that must print their error and send nothing."""
    script = "a2\\npositions\\ndelta hedging status\\nas1 1000 2000\\na2c\\nca\\nquit\\n"
    command = " ".join([f"printf '{script}'", "|", *(f"'{a}'" for a in program_args(
        tmp_path, "--instrument", "BTC-PERPETUAL", "--size-multiplier", "10"))])
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    out = done.stdout
    assert done.returncode == 1, done.stderr  # the two invalid lines: a piped session that had refused lines
    assert "sent: buy 20 BTC-PERPETUAL limit" in out
    assert re.search(r"filled: buy 20 BTC-PERPETUAL @ [\d,.]+ \[manual_api_1\]", out)
    # The order waited for its fill to reach the portfolio: the next line shows the position.
    assert re.search(r"BTC-PERPETUAL\s+long\s+20 ", out.split("> positions")[1].split("> as1")[0])
    # The hedger's first status reached the console (it starts before the console does).
    status = out.split("> delta hedging status")[1].split("> as1")[0]
    assert re.search(r"│ BTC\s*│ inactive\s*│ BTC-PERPETUAL", status) and "no status from the hedger" not in status
    assert "not understood, nothing sent: a ladder needs a count after its two bounds" in out
    assert "not understood, nothing sent: last letter is c" in out
    assert re.search(r"cancelled \d+ orders?", out)
    assert out.index("> a2\n") < out.index("> positions") < out.index("> as1 1000 2000") < out.index("> quit")
    events = [line for line in log_lines(tmp_path)]
    assert [e["order"] for e in events if e["event"] == "console_order"] == [
        next(e["order"] for e in events if e["event"] == "console_order")]
    assert any(e["event"] == "stopped" and e["status"] == 1 for e in events)
    assert "quit: 2 line(s) refused, rejected or failed" in out


@pytest.mark.parametrize("stdin", ["devnull", "eof-after-lines"])
def test_end_of_input(tmp_path: Path, stdin: str) -> None:
    """No input at all keeps the program running (stopped by a signal); input that ends after
    some lines stops it cleanly."""
    args = program_args(tmp_path, "--instrument", "BTC-PERPETUAL", "--size-multiplier", "1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if stdin == "devnull":
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path, env=env)
        try:
            deadline = time.monotonic() + 60
            while not any(e["event"] == "console_no_input" for e in (log_lines(tmp_path)
                                                                     if (tmp_path / "logs").exists() else [])):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
            time.sleep(1.0)
            assert proc.poll() is None, "the program must keep running without a console"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.communicate()
    else:
        done = subprocess.run(args, input="connection status\n", capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "connection: subscribed to simulator, logged in, trading allowed" in done.stdout
        assert any(e["event"] == "console_stops_the_program" and e["reason"] == "end of console input"
                   and e["status"] == 0 for e in log_lines(tmp_path))


@pytest.mark.parametrize("how", ["ctrl-d", "sigterm"])
def test_leaving_the_prompt_stops_cleanly_and_restores_the_terminal(tmp_path: Path, how: str) -> None:
    term = PseudoTerminal(program_args(tmp_path, "--instrument", "BTC-PERPETUAL", "--size-multiplier", "2"),
                          tmp_path)
    try:
        term.expect(r"trading BTC-PERPETUAL, size multiplier 2 \(a1 = 2 USD\)", timeout=60)
        term.expect(r"BTC-PERPETUAL x2>")
        term.type("show size multiplier\r")
        term.expect(r"size multiplier: 2\b")
        term.expect(r"BTC-PERPETUAL x2>")  # the next prompt is up (between two, the terminal is cooked)
        assert not termios.tcgetattr(term.master)[3] & termios.ICANON  # the prompt runs in raw mode
        started = time.monotonic()
        if how == "ctrl-d":
            term.type("\x04")
        else:
            term.proc.send_signal(signal.SIGTERM)
        assert term.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 2.0
        assert termios.tcgetattr(term.master)[3] & termios.ICANON  # cooked mode again
    finally:
        term.close()
    stopped = [line for line in log_lines(tmp_path) if line["event"] == "actors_stopped"]
    assert stopped and ("quit" in stopped[0]["reason"]) == (how == "ctrl-d")
