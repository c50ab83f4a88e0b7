"""Exit statuses of ``python main.py`` on the embedded simulator: 0 for a clean session, 1 for a
piped session with a refused or rejected line and for a venue not reachable within the start-up
timeout, 2 for an unlisted ``--instrument`` (piped and on a terminal)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.terminal import PseudoTerminal, log_lines, program_args

FLAGS = ("--instrument", "BTC-PERPETUAL", "--size-multiplier", "10")


def run(tmp_path: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(program_args(tmp_path, *args), input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("stdin", "args", "status", "says"), [
    ("positions\nquit\n", FLAGS, 0, "> quit"),
    ("positions\nfoo\nquit\n", FLAGS, 1, "quit: 1 line(s) refused, rejected or failed (line 2 'foo'); exit status 1"),
    # An account with nothing in it: the exchange rejects the order (10009 not_enough_funds).
    ("a2\n", (*FLAGS, "--set", "simulator.initial_btc=0"), 1, "rejected by the exchange (10009)"),
])
def test_a_piped_session_exits_0_when_clean_and_1_with_a_refused_or_rejected_line(
        tmp_path: Path, stdin: str, args: tuple[str, ...], status: int, says: str) -> None:
    done = run(tmp_path, stdin, *args)
    assert done.returncode == status, done.stdout[-2000:] + done.stderr[-2000:]
    assert says in done.stdout
    assert ("exit status 1" in done.stdout) == (status == 1)
    events = log_lines(tmp_path)
    assert any(e["event"] == "stopped" and e["status"] == status for e in events)
    # The run id said at start is the one on every line of the run's JSON log.
    run_id = next(e["run_id"] for e in events)
    assert done.stderr.startswith(f"run {run_id} (pid ") and {e["run_id"] for e in events} == {run_id}


def test_an_unlisted_instrument_exits_2_saying_what_was_given_and_what_is_listed(tmp_path: Path) -> None:
    done = run(tmp_path, "a2\n", "--instrument", "FOO", "--size-multiplier", "10")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    said = " ".join(done.stdout.split())  # the console wraps long lines
    assert "--instrument FOO: not a listed future of BTC; listed: BTC-PERPETUAL, BTC-" in said
    assert "> a2" not in done.stdout and not any(e["event"] == "console_order" for e in log_lines(tmp_path))


def test_an_unlisted_instrument_exits_2_on_a_terminal(tmp_path: Path) -> None:
    term = PseudoTerminal(program_args(tmp_path, "--instrument", "FOO", "--size-multiplier", "10"), tmp_path)
    try:
        term.expect(r"--instrument FOO: not a listed future of BTC; listed: BTC-PERPETUAL", timeout=60)
        assert term.proc.wait(timeout=15) == 2
    finally:
        term.close()


def test_an_unreachable_venue_is_said_once_and_exits_1_after_the_startup_timeout(tmp_path: Path) -> None:
    done = run(tmp_path, "BTC-PERPETUAL\n10\npositions\n", "--venue-url", "ws://127.0.0.1:1/ws/api/v2",
               "--set", "console.startup_timeout_s=3")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    said = " ".join(done.stdout.split())
    assert said.count("cannot reach the simulator venue") == 1, said
    assert "Connection refused" in said and "Check the network, the URL" in said and "the venue (--venue)" in said
    assert said.count("not reachable within the start-up timeout (3 s") == 1
    assert "> positions" not in said and "futures:" not in said  # no instrument question after it
    # The connect failures are in the JSON log; stderr (the screen) has the first one only.
    assert done.stderr.count("connect_failed") <= 1
    assert sum(e["event"] == "connect_failed" for e in log_lines(tmp_path)) >= 2


def test_quit_at_the_instrument_question_on_a_terminal_stops_cleanly(tmp_path: Path) -> None:
    term = PseudoTerminal(program_args(tmp_path), tmp_path)
    try:
        term.expect(r"instrument \(number or name", timeout=60)
        term.type("exit\r")
        assert term.proc.wait(timeout=15) == 0
    finally:
        term.close()
    assert "not a listed future" not in term.text


def test_the_statuses_are_in_help_and_in_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    from main import main
    from messages.system import ExitStatus

    helps = []
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        helps.append(capsys.readouterr().out)
    readme = (REPO / "README.md").read_text()
    for status in ExitStatus:
        assert all(f"\n  {status.value}  " in text for text in helps)
        assert f"\n| {status.value} | " in readme


def test_an_unreachable_venue_on_a_terminal_shows_no_log_record(tmp_path: Path) -> None:
    """The line console on a terminal: the friendly line once, no raw ``connect_failed`` record
    beside it (the JSON log keeps them)."""
    term = PseudoTerminal(program_args(tmp_path, "--venue-url", "ws://127.0.0.1:1/ws/api/v2",
                                       "--set", "console.startup_timeout_s=3"), tmp_path)
    try:
        term.expect(r"not reachable within the start-up timeout", timeout=60)
        assert term.proc.wait(timeout=15) == 1
    finally:
        term.close()
    assert term.text.count("cannot reach the simulator venue") == 1, term.text
    assert "connect_failed" not in term.text and "[warning]" not in term.text, term.text
    assert sum(e["event"] == "connect_failed" for e in log_lines(tmp_path)) >= 2
