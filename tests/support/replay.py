"""The program's actors on a wire log, in replay on the log's own clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pykka

import main
from actors.connection import GetReplaySummary
from config.settings import Settings
from runtime.clock import ReplayClock
from runtime.logs import setup_logging, shutdown_logging
from runtime.supervisor import ActorSpec, Supervisor
from runtime.wirelog import read_wire_log


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
    start = start_at if start_at is not None else next(iter(read_wire_log(log))).t
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
