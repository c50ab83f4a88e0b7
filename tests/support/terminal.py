"""The program in a pseudo-terminal or a pipe, for the console's end-to-end tests: its command line
on the embedded simulator, its JSON log, the simulator's URL, state and account, :class:`PseudoTerminal`
(type keys, wait for text with the ANSI codes removed) and :class:`PipedProgram` (a script on its
standard input).

A test that must change the program's own code (a failure injected into one line's handling) runs
it through :func:`program_with_patch`: a module of ``tests/support`` that patches and then calls
``main.main``, so that nothing in the program knows about tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from simulator.client import RpcClient
from tests.support.paths import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")


def program_args(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), *args, "--currencies", "BTC",
            "--set", f"logging.dir={tmp_path / 'logs'}", "--set", f"data_dir={tmp_path / 'data'}"]


#: The exposure end-to-end runs' settings (``--set``): the simulator's takers hit resting option
#: orders once a second (0.2 by default), so that ~80 BTC of options fill in tens of seconds; the
#: hedger's band is 0.2 BTC (its default, 0.0025, is 150 USD: such a book's gamma moves its delta
#: more than that on each index tick of a few dollars), up to 60 orders a minute and 20 M USD a
#: day. Its market orders of up to 100,000 USD sweep the simulator's perpetual book (about 63,000
#: USD on five levels), which refills only at its next requote (about once a second): an order
#: that finds one side empty closes unfilled, which the hedger counts as a rejection; 20 in a row
#: are allowed instead of 3.
EXPOSURE_SETTINGS = ("--set", "simulator.option_taker_hits_per_s=1.0", "--set", "hedger.max_delta_mismatch=0.2",
                     "--set", "hedger.max_orders_per_minute=60", "--set", "hedger.max_daily_volume_usd=20000000",
                     "--set", "hedger.max_rejections=20")
EXPOSURE_BAND = 0.2


def log_lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in (tmp_path / "logs").glob("*.jsonl") for line in f.read_text().splitlines()]


def simulator_url(tmp_path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tmp_path / "logs").exists():
            for line in log_lines(tmp_path):
                if line["event"] == "starting":
                    return line["url"]
        time.sleep(0.1)
    raise AssertionError("the program did not log its simulator URL")


def simulator_state(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Positions and open orders of the desk's account, as the simulator itself says."""
    client = RpcClient(url)
    try:
        client.result("public/auth", {"grant_type": "client_credentials", "client_id": "desk",
                                      "client_secret": "desk-simulator-secret"})
        positions = client.result("private/get_positions", {"currency": "BTC"})
        orders = client.result("private/get_open_orders_by_currency", {"currency": "BTC"})
    finally:
        client.close()
    return [p for p in positions if p["size"]], orders


def simulator_call(url: str, method: str, params: dict[str, Any]) -> Any:
    """One private call to the simulator as the desk's account (``private/get_order_state``, ...)."""
    client = RpcClient(url)
    try:
        client.result("public/auth", {"grant_type": "client_credentials", "client_id": "desk",
                                      "client_secret": "desk-simulator-secret"})
        return client.result(method, params)
    finally:
        client.close()


def simulator_account(url: str, currency: str = "BTC") -> dict[str, Any]:
    """The desk's account summary (greeks, equity) as the simulator itself says."""
    summary: dict[str, Any] = simulator_call(url, "private/get_account_summary", {"currency": currency})
    return summary


class PipedProgram:
    """The program with its standard input a pipe (a script, line by line: each piped line waits
    for its answers before the next is read); its standard output read as it comes, standard error
    into ``stderr.txt``. ``expect`` as :class:`PseudoTerminal`'s; ``end`` closes the input (the end
    of the script stops the program) and gives the exit status."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.stderr = (cwd / "stderr.txt").open("w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
                                     start_new_session=True, text=True)
        self.out = ""
        self.seen = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.out += line

    @property
    def text(self) -> str:
        with self.lock:
            return self.out

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.compile(pattern, re.MULTILINE).search(self.text, self.seen)
            if match:
                self.seen = match.end()
                return match
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output; it shows:\n{self.text[self.seen:][-6000:]}")

    def end(self, timeout: float = 30.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if os.environ.get("CONSOLE_E2E_TRANSCRIPT"):
            Path(os.environ["CONSOLE_E2E_TRANSCRIPT"]).write_text(self.text)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        self.stderr.close()


class PseudoTerminal:
    """The program on a pseudo-terminal: type lines, wait for text (ANSI codes removed). ``plain``:
    the line console (``--plain``), not the full screen."""

    def __init__(self, args: list[str], cwd: Path, plain: bool = True) -> None:
        args = [*args, "--plain"] if plain else args
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1",
               "COLUMNS": "200", "LINES": "60"}
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = b""
        self.seen = 0  # what expect() has consumed
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    chunk = os.read(self.master, 65536)
                    if not chunk:
                        return
                    with self.lock:
                        self.raw += chunk
            except OSError:
                return

    @property
    def text(self) -> str:
        with self.lock:
            return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.compile(pattern).search(self.text, self.seen)
            if match:
                self.seen = match.end()
                return match
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the terminal; it shows:\n{self.text[self.seen:][-4000:]}")

    def run_until(self, line: str, pattern: str, tries: int = 20) -> re.Match[str]:
        """Type ``line`` until its output shows ``pattern`` (the portfolio may lag a fill by a moment)."""
        for _ in range(tries):
            self.type(line + "\r")
            self.expect(re.escape(line))
            try:
                return self.expect(pattern, timeout=1.5)
            except AssertionError:
                continue
        raise AssertionError(f"{line!r} never showed {pattern!r}:\n{self.text[-4000:]}")

    def close(self) -> None:
        if os.environ.get("CONSOLE_E2E_TRANSCRIPT"):
            Path(os.environ["CONSOLE_E2E_TRANSCRIPT"]).write_text(self.text)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        os.close(self.master)


def patched_program_args(module: str, tmp_path: Path, *args: str) -> list[str]:
    """:func:`program_args` for the program run by ``python -m MODULE`` (a module of tests/support
    that changes the program's code in its own process, then calls ``main.main``)."""
    return [sys.executable, "-m", module, *program_args(tmp_path, *args)[2:]]
