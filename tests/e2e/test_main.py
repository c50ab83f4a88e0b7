"""The program starts, and stops cleanly within 2 s on Ctrl-C (SIGINT) and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args,
                             "--set", f"logging.dir={tmp_path / 'logs'}", "--set", f"data_dir={tmp_path / 'data'}"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_log(tmp_path: Path, event: str, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [json.loads(line) for f in (tmp_path / "logs").glob("*.jsonl") for line in f.read_text().splitlines()]
        if any(line["event"] == event for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {event} in the log")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_stops_cleanly_on_signal_within_two_seconds(tmp_path: Path, sig: signal.Signals) -> None:
    proc = start(tmp_path)
    try:
        wait_for_log(tmp_path, "actors_started")
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    _out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert elapsed < 2.0, f"stop took {elapsed:.2f} s"
    lines = wait_for_log(tmp_path, "stopped")
    assert any(line["event"] == "actors_stopped" for line in lines)


def test_help_of_each_command() -> None:
    for args in (["--help"], ["run", "--help"], ["config", "show", "--help"]):
        result = subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_simulator_generate_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    result = subprocess.run([sys.executable, str(REPO / "main.py"), "simulator", "--generate", str(out),
                             "--minutes", "0.05", "--chain", "small"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first = json.loads(out.read_text().splitlines()[0])
    assert first["dir"] == "open"


def test_the_desk_trades_on_a_simulator_started_on_its_own(tmp_path: Path) -> None:
    """README: `python main.py simulator --port N` in one terminal, the desk pointed at it with
    --venue-url in another; it logs in with the simulator's account and stops cleanly."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sim = subprocess.Popen([sys.executable, str(REPO / "main.py"), "simulator", "--port", "0", "--chain", "small"],
                           cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        first = sim.stdout.readline()
        assert first.startswith("simulator listening on ws://127.0.0.1:"), first
        url = first.split()[-1]
        desk = start(tmp_path, "--venue-url", url, "--currencies", "BTC")
        try:
            lines = wait_for_log(tmp_path, "authenticated", timeout=60)
            desk.send_signal(signal.SIGTERM)
            desk.wait(timeout=10)
        finally:
            desk.kill()
        _out, err = desk.communicate()
        assert desk.returncode == 0, err
        starting = next(line for line in lines if line["event"] == "starting")
        assert starting["url"] == url and starting["venue"] == "simulator"
    finally:
        sim.terminate()
        sim.communicate(timeout=10)
