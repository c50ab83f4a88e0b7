"""The full-screen desk in a real terminal: a tmux server of a test's own, its window's rows as
text, keys sent to it."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path


class Tmux:
    """One tmux server of its own (``-L``), one window of ``columns`` x ``rows`` (120x40) running
    ``command``."""

    def __init__(self, command: str, cwd: Path, columns: int = 120, rows: int = 40) -> None:
        self.socket = f"desk-screen-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-s", "desk", "-x", str(columns), "-y", str(rows), "-c", str(cwd), command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    def rows(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "desk").splitlines()

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "desk", *keys)

    def wait(self, pattern: str, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows()
            if re.search(pattern, "\n".join(rows), re.MULTILINE):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the screen within {timeout:g} s:\n" + "\n".join(rows))
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)
