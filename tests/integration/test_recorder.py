"""The Recorder: MinuteStore (write, spool, back off, catch up in order) and the actor around it.

Outages are real: a throwaway PostgreSQL cluster stopped and started again, a SQLite file held
under an exclusive lock by another connection.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import select

from actors.recorder import GetRecorderStatus, Recorder
from config.settings import SettingsError
from messages.account import Settlement, SettlementHistory
from messages.commands import CommandResult, PlaceOrder
from messages.market import VolatilityIndex
from messages.surface import DatabaseHealth, RecorderStatus, SurfaceSnapshot
from messages.system import MinuteTick
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from sql.engine import make_engine
from sql.queries import read_settlements, read_volatility_index
from sql.recording import DVOL_STALE_AFTER_S
from sql.store import MinuteStore, audit_record, settlements_record, snapshot_record
from sql.tables import orders_audit, settlements
from sql.writers import DvolReading, audit_request
from tests.support.postgres import ThrowawayCluster, dead_url
from tests.support.recorder_messages import docs_dvol, docs_settlements
from tests.support.settings import make_settings
from tests.support.sql import AT, Bus, assert_each_minute_once, count, private_schema, small_snapshot
from tests.support.waiting import wait_until

# A minute's rows may wait for a throwaway cluster's restart.
wait_for = functools.partial(wait_until, timeout=30.0)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now



@pytest.fixture
def dead() -> Iterator[str]:
    """A PostgreSQL URL that refuses connections for the whole test (its port held, never listened on)."""
    with dead_url() as url:
        yield url


@pytest.fixture(scope="module")
def snapshots() -> list[SurfaceSnapshot]:
    base = small_snapshot()
    return [msgspec.structs.replace(base, at=AT + 60 * i) for i in range(6)]


def history(*entries: Settlement, at: float = AT, currency: str = "BTC") -> SettlementHistory:
    return SettlementHistory(currency=currency, settlements=entries, at=at)


def assert_settlements_once(url: str, expected: set[tuple[str, str]]) -> None:
    """``settlements`` holds each of ``expected`` (instrument, type) exactly once, and nothing else."""
    eng = make_engine(url)
    try:
        rows = [(r.instrument, r.type) for r in read_settlements(eng)]
    finally:
        eng.dispose()
    assert sorted(rows) == sorted(expected)



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
            assert store.health is DatabaseHealth.UNREACHABLE  # refused, not hung
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
        assert store.health is DatabaseHealth.HUNG  # the busy timeout is the write's deadline passing
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


def test_a_lock_timeout_in_the_option_copy_is_spooled_never_moved_aside(
        pg_url: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    """The option rows go by COPY, a driver call whose errors come unwrapped: a lock held past the
    write's lock_timeout (the daily ordering or archive holding the day) is a moment's outage."""
    with private_schema(pg_url) as url:
        store = MinuteStore(url, tmp_path / "spool", write_deadline_s=1.0)
        store.open(now=snapshots[0].at)
        engine = make_engine(url)
        holder = engine.connect()
        try:
            holder.begin()
            holder.exec_driver_sql("LOCK TABLE option_minutes IN SHARE MODE")
            assert store.record(snapshot_record(snapshots[0])) is False
            assert store.rejected == 0 and store.backlog == 1
            assert not list((tmp_path / "spool" / "rejected").glob("*.msgpack"))
        finally:
            holder.close()
            engine.dispose()
        wait_until(lambda: store.due() and (store.catch_up() or not store.backlog), timeout=30)
        assert_each_minute_once(url, [snapshots[0]])
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


def test_postgres_outage_spools_settlements_with_the_minutes_and_writes_each_once(
        cluster: ThrowawayCluster, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    clock = FakeMonotonic()
    first, second = docs_settlements()
    reading = DvolReading(value=51.0, timestamp=int(snapshots[1].at * 1000) - 900)
    with private_schema(cluster.url) as url:
        store = MinuteStore(url, tmp_path / "spool", retry_initial_s=1.0, retry_max_s=4.0, monotonic=clock)
        store.open()
        assert store.record(settlements_record(history(first)))
        cluster.stop()
        try:
            # The history fetched again and again while the database is down, a minute between.
            assert store.record(settlements_record(history(first, at=AT + 1))) is False
            assert store.record(snapshot_record(snapshots[1], reading)) is False
            assert store.record(settlements_record(history(second, first, at=AT + 2))) is False
            assert store.record(settlements_record(history(second, first, at=AT + 3))) is False
            assert (store.backlog, store.backlog_minutes) == (4, 1)
            kinds = sorted(p.name.split("-")[1] for p in (tmp_path / "spool").glob("*.msgpack"))
            assert kinds == ["minute", "settlements", "settlements", "settlements"]
        finally:
            cluster.start()
        clock.now += 10.0
        assert store.catch_up() == 4 and store.backlog == 0
        store.close()
        assert_settlements_once(url, {("ETH-22FEB19", "settlement"), ("BTC-15FEB19-4000-P", "delivery")})
        eng = make_engine(url)
        recorded = {r.instrument: r.recorded_at.timestamp() for r in read_settlements(eng)}
        index = read_volatility_index(eng, "BTC")
        eng.dispose()
        assert recorded == {"ETH-22FEB19": AT, "BTC-15FEB19-4000-P": AT + 2}  # first arrival, not a later fetch
        assert [(r.minute.timestamp(), r.dvol) for r in index] == [(snapshots[1].at, 51.0)]
        assert not list((tmp_path / "spool").glob("*.msgpack"))


def test_settlements_spooled_twice_are_written_once(db_url: str, tmp_path: Path) -> None:
    # A crash after the commit and before the spool file was deleted writes the batch again.
    first, second = docs_settlements()
    store = MinuteStore(db_url, tmp_path / "spool")
    store.open()
    store.record(settlements_record(history(first, second)))
    store.spool.append(settlements_record(history(first, second)))
    store.spool.append(settlements_record(history(second, at=AT + 5)))
    store.close()
    again = MinuteStore(db_url, tmp_path / "spool")
    again.open()
    assert again.backlog == 0
    again.close()
    assert_settlements_once(db_url, {("ETH-22FEB19", "settlement"), ("BTC-15FEB19-4000-P", "delivery")})


# -- the actor ------------------------------------------------------------------------------------------------
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
    assert (row.request_key, row.outcome) == ("h-1", "sent")


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
                    ref.tell(history(*docs_settlements(), at=snap.at))  # type: ignore[attr-defined]
                status = ref.ask(GetRecorderStatus(), timeout=30)  # type: ignore[attr-defined]
                assert (status.reachable, status.backlog_minutes, status.backlog_batches) == (False, 3, 4)
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
        assert_settlements_once(url, {("ETH-22FEB19", "settlement"), ("BTC-15FEB19-4000-P", "delivery")})
        assert bus.statuses()[-1].reachable and bus.statuses()[-1].backlog_minutes == 0


def test_a_database_url_that_can_never_work_stops_the_start_with_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"database\.url: .*unsupported database 'mysql'.*postgresql\+psycopg2://"):
        start_recorder("mysql://desk:pw@db/x", tmp_path / "spool", Bus())


def test_the_actor_writes_the_dvol_of_each_minute_and_a_stale_one_as_missing(
        db_url: str, snapshots: list[SurfaceSnapshot], tmp_path: Path) -> None:
    stale_ms = int(DVOL_STALE_AFTER_S * 1000)
    real = docs_dvol()  # Deribit's documentation example, stamped 2021-04-30 10:19:06 UTC
    base = (real.timestamp // 60_000 + 1) * 60.0  # the next whole minute
    minutes = [msgspec.structs.replace(snapshots[0], at=base + 60 * i) for i in range(4)]
    base_ms = int(base * 1000)
    bus = Bus()
    ref = start_recorder(db_url, tmp_path / "spool", bus)
    try:
        ref.tell(real)  # type: ignore[attr-defined]
        ref.tell(VolatilityIndex(index_name="eth_usd", volatility=80.0, timestamp=base_ms + 1))  # type: ignore[attr-defined]
        ref.tell(minutes[0])  # type: ignore[attr-defined]  # the docs' DVOL, 54 s before the minute
        ref.tell(VolatilityIndex(index_name="btc_usd", volatility=131.0, timestamp=base_ms + 30_000))  # type: ignore[attr-defined]
        # The feed stops: the last DVOL is 30 s, 90 s, then 150 s old at the next minutes.
        for snap in minutes[1:]:
            ref.tell(snap)  # type: ignore[attr-defined]
        ref.tell(msgspec.structs.replace(snapshots[0], currency="ETH", at=base))  # type: ignore[attr-defined]
        status = ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
        assert status.written_minutes == 5
    finally:
        ref.stop()  # type: ignore[attr-defined]
    eng = make_engine(db_url)
    btc = read_volatility_index(eng, "BTC")
    eth = read_volatility_index(eng, "ETH")
    eng.dispose()
    got = [(r.minute.timestamp(), r.dvol, r.dvol_at.timestamp() * 1000 if r.dvol_at else None) for r in btc]
    assert got == [
        (base, real.volatility, real.timestamp),
        (base + 60, 131.0, base_ms + 30_000),
        (base + 120, 131.0, base_ms + 30_000),
        (base + 180, None, None),  # 150 s old: stale, stored as missing
    ]
    assert base_ms + 180_000 - (base_ms + 30_000) > stale_ms
    assert all(r.variance_index == snapshots[0].variance_index for r in btc)  # beside the variance index
    assert [r.dvol for r in eth] == [None]  # ETH's DVOL came 1 ms after the minute: none at it


def test_the_actor_records_each_settlement_once_however_often_the_history_comes(
        db_url: str, tmp_path: Path) -> None:
    first, second = docs_settlements()
    bus = Bus()
    ref = start_recorder(db_url, tmp_path / "spool", bus)
    try:
        for i in range(3):  # at start, after a reconnect, ...
            ref.tell(history(first, at=AT + i))  # type: ignore[attr-defined]
        ref.tell(history(at=AT + 10))  # type: ignore[attr-defined]  # an empty history: nothing to write
        ref.tell(history(second, first, at=AT + 86_400))  # type: ignore[attr-defined]  # after 08:00
        ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
    finally:
        ref.stop()  # type: ignore[attr-defined]
    assert VolatilityIndex in Recorder.subscriptions() and SettlementHistory in Recorder.subscriptions()
    assert_settlements_once(db_url, {("ETH-22FEB19", "settlement"), ("BTC-15FEB19-4000-P", "delivery")})
    # A new run (no memory of what was written) sends the same history again: still once each.
    ref = start_recorder(db_url, tmp_path / "spool", bus)
    try:
        ref.tell(history(second, first, at=AT + 90_000))  # type: ignore[attr-defined]
        ref.ask(GetRecorderStatus(), timeout=10)  # type: ignore[attr-defined]
    finally:
        ref.stop()  # type: ignore[attr-defined]
    assert_settlements_once(db_url, {("ETH-22FEB19", "settlement"), ("BTC-15FEB19-4000-P", "delivery")})
    eng = make_engine(db_url)
    assert count(eng, settlements) == 2
    eng.dispose()
