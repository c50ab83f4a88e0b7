"""A hung database (not a refused one): the Recorder gives a write up at its deadline, spools the
minute, says HUNG, writes every minute once when the database runs again, and a stop never waits
on the hung write.

The hang is real: a throwaway PostgreSQL cluster's postmaster and backends stopped with SIGSTOP
(their kernel still accepts and acknowledges packets, so the driver blocks in ``recv``), resumed
with SIGCONT; a SQLite file held under an exclusive lock past the busy timeout. The issue's
150-second hang is :data:`HANG_S`, 15 s by default to keep the suite within its budget: what it
proves (the deadline fires, the minutes spool, nothing is lost or duplicated afterwards) does not
depend on the length once it is well past the deadline and a few retries at the backoff's
maximum. The program's SIGTERM test hangs the cluster until a minute reaches the Recorder (up to
a minute) and then stops the program.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pykka
import pytest
from sqlalchemy import select

from actors.recorder import GetRecorderStatus, Recorder
from messages.surface import DatabaseHealth, RecorderStatus, SurfaceSnapshot
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from sql.engine import make_engine
from sql.store import MinuteStore, snapshot_record
from sql.tables import volatility_index
from tests.support.paths import REPO
from tests.support.postgres import ThrowawayCluster
from tests.support.settings import make_settings
from tests.support.sql import AT, Bus, assert_each_minute_once, private_schema, small_snapshot
from tests.support.waiting import wait_until

#: How long the cluster stays hung: the issue's acceptance says 150 s, which
#: ``RECORDER_HANG_S=150 pytest tests/integration/test_recorder_hang.py`` runs (see the module doc).
HANG_S = float(os.environ.get("RECORDER_HANG_S", "15"))
#: The write deadline in these tests: short, so that the hang holds many deadlines and retries.
DEADLINE_S = 1.0

wait_for = functools.partial(wait_until, timeout=60.0)


def minutes(n: int) -> list[SurfaceSnapshot]:
    base = small_snapshot()
    return [msgspec.structs.replace(base, at=AT + 60 * i) for i in range(n)]


def cluster_pids(cluster: ThrowawayCluster) -> list[int]:
    """The postmaster first, then every process it forked (backends, checkpointer, ...)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The parent pid is the 2nd field after the command, which is in parentheses.
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == postmaster:
            children.append(int(entry.name))
    return [postmaster, *children]


@contextlib.contextmanager
def hung(cluster: ThrowawayCluster) -> Iterator[None]:
    """The cluster stopped with SIGSTOP for the block (the postmaster first: it forks nothing more)."""
    pids = cluster_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)



def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "db-write" and t.is_alive()]


def spooled_minutes(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("*-minute-*.msgpack"))


def test_a_hung_postgres_costs_a_deadline_then_every_minute_is_written_once(
        cluster: ThrowawayCluster, tmp_path: Path) -> None:
    snaps = minutes(1 + int(HANG_S) + 2)
    spool = tmp_path / "spool"
    with private_schema(cluster.url) as url:
        store = MinuteStore(url, spool, write_deadline_s=DEADLINE_S, retry_initial_s=0.5, retry_max_s=2.0)
        store.open()
        assert store.record(snapshot_record(snaps[0])) is True
        assert store.health is DatabaseHealth.OK
        n = 1
        with hung(cluster):
            hung_since = time.monotonic()
            assert store.record(snapshot_record(snaps[n])) is False  # returns: given up at the deadline
            n += 1
            status = store.status(AT)
            assert (status.health, status.reachable, status.backlog_minutes) == (DatabaseHealth.HUNG, False, 1)
            assert "DeadlineExceeded" in status.last_error
            # The abort ended the blocked driver call (its socket shut down), hung server or not:
            # no write thread is left waiting on it.
            wait_until(lambda: not writer_threads(), timeout=10.0)
            # A minute a second while hung: each is spooled behind the others (a retry, when the
            # backoff allows one, costs one deadline and fails again).
            while time.monotonic() - hung_since < HANG_S:
                assert store.record(snapshot_record(snaps[n])) is False
                n += 1
                time.sleep(1.0)
            assert store.health is DatabaseHealth.HUNG and store.failures >= 2
            assert (store.written_minutes, store.backlog_minutes) == (1, n - 1)
            assert len(spooled_minutes(spool)) == n - 1
        # Running again: the spool is written back, oldest first, each minute once.
        wait_for(lambda: store.catch_up() >= 0 and store.backlog == 0)
        assert store.record(snapshot_record(snaps[n])) is True
        assert store.health is DatabaseHealth.OK and store.reachable
        assert_each_minute_once(url, snaps[:n + 1])
        assert not spooled_minutes(spool)
        store.close()


def start_recorder(url: str, spool: Path, bus: Bus, stopping: threading.Event, deadline_s: float) -> object:
    s = make_settings({"database.url": url, "recorder.spool_dir": str(spool), "recorder.write_deadline_s": deadline_s,
                       "recorder.retry_initial_s": 0.5, "recorder.retry_max_s": 1.0})
    context = ActorContext(name="recorder", clock=ReplayClock(AT), settings=s, publish=bus.publish)
    return Recorder.start(context, stopping=stopping)


def test_a_stop_during_a_hung_write_spools_the_minute_and_returns_at_once(
        cluster: ThrowawayCluster, tmp_path: Path) -> None:
    snaps = minutes(2)
    spool = tmp_path / "spool"
    stopping = threading.Event()
    bus = Bus()
    with private_schema(cluster.url) as url:
        # A deadline far longer than any stop may take: only the stop can end the hung write.
        ref = start_recorder(url, spool, bus, stopping, deadline_s=600.0)
        try:
            ref.tell(snaps[0])  # type: ignore[attr-defined]
            assert ref.ask(GetRecorderStatus(), timeout=30).written_minutes == 1  # type: ignore[attr-defined]
            with hung(cluster):
                ref.tell(snaps[1])  # type: ignore[attr-defined]
                # The write is in flight (the actor answers nothing while it waits on it).
                with pytest.raises(pykka.Timeout):
                    ref.ask(GetRecorderStatus(), timeout=1.0)  # type: ignore[attr-defined]
                started = time.monotonic()
                stopping.set()  # what the supervisor does first on a stop
                ref.stop(timeout=30)  # type: ignore[attr-defined]
                took = time.monotonic() - started
                print(f"stop during the hung write took {took:.2f} s")
                assert took < 2.0, f"the stop took {took:.2f} s"
                assert spooled_minutes(spool) == [p.name for p in spool.glob("*.msgpack")]
                assert len(spooled_minutes(spool)) == 1
        finally:
            stopping.set()
            with contextlib.suppress(Exception):
                ref.stop(timeout=5)  # type: ignore[attr-defined]
        last: RecorderStatus = bus.statuses()[-1]
        assert (last.health, last.backlog_minutes) == (DatabaseHealth.HUNG, 1)
        # The next start writes the spooled minute: each minute once.
        again = MinuteStore(url, spool)
        again.open()
        assert again.backlog == 0
        again.close()
        assert_each_minute_once(url, snaps)


def test_a_sqlite_file_locked_past_the_busy_timeout_says_hung_and_loses_nothing(tmp_path: Path) -> None:
    snaps = minutes(4)
    path = tmp_path / "desk.sqlite3"
    url = f"sqlite:///{path}"
    store = MinuteStore(url, tmp_path / "spool", busy_timeout_s=0.2, write_deadline_s=DEADLINE_S,
                        retry_initial_s=0.1, retry_max_s=0.2)
    store.open()
    assert store.record(snapshot_record(snaps[0]))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert store.record(snapshot_record(snaps[1])) is False
        assert store.health is DatabaseHealth.HUNG and "locked" in store.last_error
        assert store.record(snapshot_record(snaps[2])) is False
        assert store.backlog_minutes == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_for(lambda: store.catch_up() >= 0 and store.backlog == 0)
    assert store.record(snapshot_record(snaps[3])) is True and store.health is DatabaseHealth.OK
    assert_each_minute_once(url, snaps)
    store.close()


def test_a_write_that_takes_more_than_half_its_deadline_says_slow(tmp_path: Path) -> None:
    snaps = minutes(3)
    path = tmp_path / "desk.sqlite3"
    deadline = 4.0
    store = MinuteStore(f"sqlite:///{path}", tmp_path / "spool", busy_timeout_s=deadline, write_deadline_s=deadline)
    store.open()
    assert store.record(snapshot_record(snaps[0])) and store.health is DatabaseHealth.OK
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    # Held for more than half the deadline, released well before the busy timeout ends.
    release = threading.Timer(deadline * 0.6, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        assert store.record(snapshot_record(snaps[1])) is True  # written: it waited for the lock
        assert store.health is DatabaseHealth.SLOW and store.reachable
        assert store.status(AT).health is DatabaseHealth.SLOW
    finally:
        release.join()
        holder.close()
    assert store.record(snapshot_record(snaps[2])) is True and store.health is DatabaseHealth.OK
    assert_each_minute_once(f"sqlite:///{path}", snaps)
    store.close()


def test_a_busy_timeout_longer_than_the_deadline_is_cut_to_fit(tmp_path: Path) -> None:
    # SQLite's busy wait cannot be interrupted: it must end before the write's deadline does.
    store = MinuteStore(f"sqlite:///{tmp_path / 'desk.sqlite3'}", tmp_path / "spool", busy_timeout_s=30.0,
                        write_deadline_s=DEADLINE_S)
    store.open()
    with store.engine.connect() as conn:
        busy_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert busy_ms is not None and busy_ms < DEADLINE_S * 1000
    store.close()


# -- the program ---------------------------------------------------------------------------------------------
def log_events(logs: Path) -> list[dict[str, object]]:
    events = []
    for f in logs.glob("*.jsonl"):
        for line in f.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                events.append(json.loads(line))
    return events


def wait_for_event(logs: Path, name: str, timeout: float, after: str = "") -> dict[str, object]:
    """The first ``name`` event logged after ``after`` (a log ``time``: ISO-8601, ms, UTC)."""
    found: list[dict[str, object]] = []

    def seen() -> bool:
        found[:] = [e for e in log_events(logs) if e.get("event") == name and str(e.get("time", "")) > after]
        return bool(found)

    wait_until(seen, timeout=timeout)
    return found[0]


def log_time_now() -> str:
    """Now as the log writes its ``time`` (runtime.logs.utc_timestamp)."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def test_sigterm_while_the_database_hangs_exits_within_two_seconds_with_the_minute_spooled(
        cluster: ThrowawayCluster, tmp_path: Path) -> None:
    logs, data = tmp_path / "logs", tmp_path / "data"
    spool = data / "spool"
    with private_schema(cluster.url) as url:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # A deadline of ten minutes: a write in flight at the SIGTERM can only be ended by the stop.
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), "run", "--db", url, "--set", f"logging.dir={logs}",
             "--set", f"data_dir={data}", "--set", "recorder.write_deadline_s=600"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_event(logs, "database_reachable", timeout=60)  # the schema is there
            with hung(cluster):
                hung_at = log_time_now()
                # A minute reaches the Recorder after the hang began (logged just before its write).
                wait_for_event(logs, "minute_recording", after=hung_at, timeout=150)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                took = time.monotonic() - sent
                print(f"SIGTERM during the hang: exit after {took:.2f} s")
                minutes_spooled = spooled_minutes(spool)
        finally:
            proc.kill()
            _out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert took < 2.0, f"the stop took {took:.2f} s"
        assert minutes_spooled, "the minute in flight was not spooled"
        events = [e.get("event") for e in log_events(logs)]
        assert "database_hung" in events and "spool_left_for_next_start" in events
        # The next start writes what was spooled: each currency-minute once.
        again = MinuteStore(url, spool)
        again.open()
        assert again.backlog == 0
        again.close()
        engine = make_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(select(volatility_index.c.minute, volatility_index.c.currency)).all()
        engine.dispose()
        assert len(rows) == len(set(rows)) >= len(minutes_spooled)
