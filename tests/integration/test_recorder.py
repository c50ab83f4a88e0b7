"""The Recorder: MinuteStore (write, spool, back off, catch up in order) and the actor around it.

Outages are real: a throwaway PostgreSQL cluster stopped and started again, a SQLite file held
under an exclusive lock by another connection.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import select

from actors.recorder import GetRecorderStatus, Recorder
from config.settings import SettingsError
from messages.commands import CommandResult, PlaceOrder
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import MinuteTick
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from sql.engine import make_engine
from sql.store import MinuteStore, audit_record, snapshot_record
from sql.tables import option_quotes, orders_audit, surface_points, volatility_index
from sql.writers import audit_request
from tests.support.postgres import ThrowawayCluster, dead_url
from tests.support.settings import make_settings
from tests.support.sql import AT, count, private_schema, small_snapshot
from tests.support.waiting import wait_until

# A minute's rows may wait for a throwaway cluster's restart.
wait_for = functools.partial(wait_until, timeout=30.0)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    c = ThrowawayCluster().start()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture
def dead() -> Iterator[str]:
    """A PostgreSQL URL that refuses connections for the whole test (its port held, never listened on)."""
    with dead_url() as url:
        yield url


@pytest.fixture(scope="module")
def snapshots() -> list[SurfaceSnapshot]:
    base = small_snapshot()
    return [msgspec.structs.replace(base, at=AT + 60 * i) for i in range(6)]


def assert_each_minute_once(url: str, snapshots: list[SurfaceSnapshot]) -> None:
    eng = make_engine(url)
    try:
        for snap in snapshots:
            minute = dt.datetime.fromtimestamp(snap.at, dt.UTC)
            assert count(eng, option_quotes, minute=minute) == len(snap.quotes)
            assert count(eng, surface_points, minute=minute) == len(snap.points)
            assert count(eng, volatility_index, minute=minute) == 1
        assert count(eng, volatility_index) == len(snapshots)
    finally:
        eng.dispose()


# -- MinuteStore -------------------------------------------------------------------------------------------
def test_postgres_outage_spools_then_writes_every_minute_once_in_order(
        cluster: ThrowawayCluster, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    clock = FakeMonotonic()
    with private_schema(cluster.url) as url:
        store = MinuteStore(url, tmp_path / "spool", retry_initial_s=1.0, retry_max_s=8.0, monotonic=clock)
        store.open()
        assert store.record(snapshot_record(snapshots[0])) is True
        cluster.stop()
        try:
            assert store.record(snapshot_record(snapshots[1])) is False
            assert store.reachable is False and store.last_error
            assert (store.backlog, store.backlog_minutes) == (1, 1)
            status = store.status(AT)
            assert (status.reachable, status.backlog_minutes, status.last_written_minute) == (False, 1, AT)
            # While backing off nothing is tried: new minutes queue behind the spooled one.
            for snap in snapshots[2:4]:
                assert store.record(snapshot_record(snap)) is False
            assert store.failures == 1 and store.backlog_minutes == 3
            clock.now += 1.0
            assert store.catch_up() == 0 and store.failures == 2  # still down: the wait doubles
            assert store.retry_at == pytest.approx(clock.now + 2.0)
            clock.now += 1.0
            assert store.catch_up() == 0 and store.failures == 2  # not due yet: not even tried
        finally:
            cluster.start()
        clock.now += 1.0
        # Back: a new minute is spooled behind the old ones, then all are written, oldest first.
        assert store.record(snapshot_record(snapshots[4])) is False
        assert store.backlog == 0 and store.reachable is True
        assert store.last_written_minute == snapshots[4].at and store.written_minutes == 5
        assert store.record(snapshot_record(snapshots[5])) is True
        assert_each_minute_once(url, snapshots)
        assert not list((tmp_path / "spool").glob("*.msgpack"))
        store.close()


def test_a_spool_written_twice_adds_nothing(snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    # A crash after the commit and before the file was deleted writes the batch again on restart.
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    store = MinuteStore(url, tmp_path / "spool")
    store.open()
    store.record(snapshot_record(snapshots[0]))
    store.spool.append(snapshot_record(snapshots[0]))
    store.spool.append(snapshot_record(snapshots[1]))
    store.close()
    again = MinuteStore(url, tmp_path / "spool")
    again.open()  # writes back what the last run left
    assert again.backlog == 0
    assert_each_minute_once(url, snapshots[:2])
    again.close()


def test_locked_sqlite_file_is_survived(snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    clock = FakeMonotonic()
    path = tmp_path / "desk.sqlite3"
    url = f"sqlite:///{path}"
    store = MinuteStore(url, tmp_path / "spool", busy_timeout_s=0.2, retry_initial_s=1.0, monotonic=clock)
    store.open()
    assert store.record(snapshot_record(snapshots[0]))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert store.record(snapshot_record(snapshots[1])) is False
        assert time.monotonic() - started < 5.0  # the busy timeout, not forever
        assert "locked" in store.last_error
        assert store.record(snapshot_record(snapshots[2])) is False
        clock.now += 1.0
        assert store.catch_up() == 0 and store.backlog_minutes == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    clock.now += 10.0
    assert store.catch_up() == 2 and store.backlog == 0
    assert_each_minute_once(url, snapshots[:3])
    store.close()


def test_backoff_doubles_up_to_the_maximum_and_resets_when_back(dead: str, tmp_path: Path) -> None:
    clock = FakeMonotonic()
    store = MinuteStore(dead, tmp_path / "spool", retry_initial_s=0.5, retry_max_s=3.0, connect_timeout_s=1.0,
                        monotonic=clock)
    store.open()  # no database: nothing raised, nothing written
    assert store.reachable is False and "Operational" in store.last_error
    delays = []
    for _ in range(6):
        delays.append(store.retry_at - clock.now)
        assert not store.due()
        clock.now = store.retry_at
        assert store.due()
        store.catch_up() if store.backlog else store.open()
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    store.close()


def test_a_batch_the_database_refuses_is_moved_aside_and_the_rest_go_on(
        pg_url: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    bad_quote = msgspec.structs.replace(snapshots[1].quotes[0], instrument_name="X" * 100)  # > String(64)
    bad = msgspec.structs.replace(snapshots[1], quotes=(bad_quote, *snapshots[1].quotes[1:]))
    with private_schema(pg_url) as url:
        store = MinuteStore(url, tmp_path / "spool")
        store.open()
        assert store.record(snapshot_record(bad)) is False
        assert store.rejected == 1 and store.backlog == 0 and store.reachable is True
        rejected = list((tmp_path / "spool" / "rejected").glob("*.msgpack"))
        assert len(rejected) == 1
        assert "too long" in rejected[0].with_suffix(".reason.txt").read_text()
        assert store.record(snapshot_record(snapshots[2])) is True
        assert_each_minute_once(url, [snapshots[2]])
        store.close()


def test_flush_writes_what_it_can_and_leaves_the_rest_for_the_next_start(
        dead: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    store = MinuteStore(dead, tmp_path / "spool", connect_timeout_s=1.0)
    for snap in snapshots[:3]:
        store.record(snapshot_record(snap))
    store.record(audit_record(audit_request(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10,
                                                       price=1.0, origin="hedger", request_key="k"), AT)))
    store.flush()
    assert (store.backlog, store.backlog_minutes) == (4, 3)
    store.close()
    # The next start, on a database that answers, writes them all.
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    later = MinuteStore(url, tmp_path / "spool")
    later.open()
    assert later.backlog == 0
    assert_each_minute_once(url, snapshots[:3])
    eng = make_engine(url)
    assert count(eng, orders_audit) == 1
    eng.dispose()
    later.close()


def test_spool_that_cannot_be_written_keeps_the_minute_in_memory(
        dead: str, snapshots: list[SurfaceSnapshot], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeMonotonic()
    store = MinuteStore(dead, tmp_path / "spool", connect_timeout_s=1.0, monotonic=clock)

    def disk_full(_record: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.spool, "append", disk_full)
    store.record(snapshot_record(snapshots[0]))
    assert (store.backlog, store.backlog_minutes, len(store.spool)) == (1, 1, 0)
    monkeypatch.undo()
    store.record(snapshot_record(snapshots[1]))  # the disk is back: both reach the spool, in order
    assert (len(store.spool), store.backlog) == (2, 2)
    assert [store.spool.peek()[1].snapshot.at] == [snapshots[0].at]  # type: ignore[index,union-attr]
    store.close()


# -- the actor ------------------------------------------------------------------------------------------------
class Bus:
    def __init__(self) -> None:
        self.messages: list[object] = []
        self.lock = threading.Lock()

    def publish(self, message: object) -> None:
        with self.lock:
            self.messages.append(message)

    def statuses(self) -> list[RecorderStatus]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, RecorderStatus)]


def start_recorder(url: str, spool: Path, bus: Bus, **settings: object) -> object:
    overrides = {"database.url": url, "recorder.spool_dir": str(spool), **settings}
    s = make_settings(overrides)
    context = ActorContext(name="recorder", clock=ReplayClock(AT), settings=s, publish=bus.publish)
    return Recorder.start(context)


def test_the_actor_records_minutes_and_orders_and_publishes_its_status(
        snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    bus = Bus()
    ref = start_recorder(url, tmp_path / "spool", bus)
    try:
        place = PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10, price=30000.0, origin="hedger",
                           request_key="h-1")
        ref.tell(snapshots[0])  # type: ignore[attr-defined]
        ref.tell(place)  # type: ignore[attr-defined]
        ref.tell(CommandResult(request_key="h-1", origin="hedger", method="private/buy", result="{}"))  # type: ignore[attr-defined]
        ref.tell(MinuteTick(at=AT + 60))  # type: ignore[attr-defined]
        status = ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
        assert isinstance(status, RecorderStatus)
        assert (status.reachable, status.backlog_minutes, status.written_minutes, status.last_written_minute) == (
            True, 0, 1, AT)
        assert status.database.startswith("sqlite ")
    finally:
        ref.stop()  # type: ignore[attr-defined]
    assert Recorder.subscriptions()  # commands, answers, snapshots, ticks
    published = bus.statuses()
    assert published[0].written_minutes == 0 and published[-1].written_minutes == 1
    assert sum(1 for m in bus.messages if isinstance(m, RecorderStatus)) >= 3  # start, change, tick
    assert_each_minute_once(url, snapshots[:1])
    eng = make_engine(url)
    with eng.connect() as conn:
        row = conn.execute(select(orders_audit)).one()
    eng.dispose()
    assert (row.request_key, row.outcome) == ("h-1", "accepted")


def test_the_actor_catches_up_by_itself_after_an_outage(
        cluster: ThrowawayCluster, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    bus = Bus()
    with private_schema(cluster.url) as url:
        ref = start_recorder(url, tmp_path / "spool", bus, **{"recorder.retry_initial_s": 0.2,
                                                              "recorder.retry_max_s": 0.5})
        try:
            ref.tell(snapshots[0])  # type: ignore[attr-defined]
            ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
            cluster.stop()
            try:
                for snap in snapshots[1:4]:
                    ref.tell(snap)  # type: ignore[attr-defined]
                status = ref.ask(GetRecorderStatus(), timeout=30)  # type: ignore[attr-defined]
                assert (status.reachable, status.backlog_minutes) == (False, 3)
                assert any(not s.reachable and s.backlog_minutes == 3 for s in bus.statuses())
                time.sleep(1.0)  # a few retries fail meanwhile
            finally:
                cluster.start()
            # No new message needed: the timer retries and the spool is written back.
            wait_for(lambda: ref.ask(GetRecorderStatus(), timeout=10).backlog_batches == 0)  # type: ignore[attr-defined]
            ref.tell(snapshots[4])  # type: ignore[attr-defined]
            status = ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
            assert status.reachable and status.written_minutes == 5
        finally:
            ref.stop()  # type: ignore[attr-defined]
        assert_each_minute_once(url, snapshots[:5])
        assert bus.statuses()[-1].reachable and bus.statuses()[-1].backlog_minutes == 0


def test_a_database_url_that_can_never_work_stops_the_start_with_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"database\.url: .*unsupported database 'mysql'.*postgresql\+psycopg2://"):
        start_recorder("mysql://desk:pw@db/x", tmp_path / "spool", Bus())
