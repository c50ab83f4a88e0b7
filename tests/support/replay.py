"""The program's actors on a wire log, in replay on the log's own clock."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pykka

import main
from actors.connection import GetReplaySummary
from config.settings import Settings
from deribit.channels import channel_prefix
from runtime.clock import ReplayClock
from runtime.logs import setup_logging, shutdown_logging
from runtime.supervisor import ActorSpec, Supervisor
from runtime.wirelog import first_time, read_wire_log
from tests.support.paths import REPO


@contextlib.contextmanager
def replayed_program(settings: Settings, log: Path, logs_dir: Path, *, extra_specs: Sequence[ActorSpec] = (),
                     start_at: float | None = None) -> Iterator[Supervisor]:
    """Every actor of the program reading ``log`` (then ``extra_specs``), on a replay clock from ``start_at``
    (default: the log's first record); stopped, with every actor and the logs, when the block ends.

    The Connection starts last: its replay thread reads at once, and started first (the program's
    order) it would publish the log's first snapshots before the BookKeepers are on the bus, which
    would then ask for resyncs that a replay cannot answer."""
    setup_logging(logs_dir, "info", console=False)
    program = main.actor_specs(settings, replay_file=str(log))
    assert program[0].name == "connection"
    start = start_at if start_at is not None else first_time(log)
    assert start is not None, f"{log} holds no good record"
    supervisor: Supervisor = main.make_supervisor(settings, [*program[1:], *extra_specs, program[0]],
                                                  ReplayClock(start), replay=True)
    try:
        supervisor.start()
        yield supervisor
    finally:
        supervisor.stop()
        pykka.ActorRegistry.stop_all()
        shutdown_logging()


def replay_summary(supervisor: Supervisor, timeout_s: float = 120.0) -> dict[str, Any]:
    """The Connection's summary once the log has been read to its end and every actor has handled it."""
    deadline = time.monotonic() + timeout_s
    while ask(supervisor, "connection", GetReplaySummary()) is None:
        assert time.monotonic() < deadline, f"the replay did not finish within {timeout_s:g} s"
        time.sleep(0.05)
    supervisor.drain()
    summary: dict[str, Any] = ask(supervisor, "connection", GetReplaySummary())
    return summary


def ask(supervisor: Supervisor, name: str, message: object, timeout: float = 30) -> Any:
    ref = supervisor.refs()[name]
    assert ref is not None, f"{name} is not running"
    return ref.ask(message, timeout=timeout)


def replay_cli(path: Path, tmp_path: Path, *options: str,
               timeout_s: float = 120) -> tuple[int, dict[str, Any] | None, str]:
    """`python main.py replay FILE [options]` in a clean environment; (status, summary or None, stderr)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DERIBIT_", "DESK__")) and k not in ("DATABASE_URL", "LOG_LEVEL")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "replay", str(path), "--set", f"logging.dir={tmp_path / 'logs'}",
         "--set", f"data_dir={tmp_path / 'data'}", *options],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(lines[-1]) if lines else None, proc.stderr


def counts_in_file(path: Path) -> dict[str, Any]:
    """What a wire log holds, counted with plain json: in frames and notifications per channel family."""
    in_frames = 0
    notifications: collections.Counter[str] = collections.Counter()
    responses = 0
    for record in read_wire_log(path):
        if record.dir != "in" or record.frame is None:
            continue
        in_frames += 1
        frame = json.loads(record.frame)
        if frame.get("method") == "subscription":
            notifications[channel_prefix(frame["params"]["channel"])] += 1
        elif "result" in frame:
            responses += 1
    return {"in_frames": in_frames, "notifications": dict(notifications), "responses": responses}
