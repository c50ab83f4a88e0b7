"""The Recorder: the only database writer.

Each :class:`SurfaceSnapshot` (one currency-minute) is one transaction, Deribit's DVOL at the
minute written beside its variance index (kept from the :class:`VolatilityIndex` notifications;
stored as missing when stale); every order command seen on the bus and its answer go to
``orders_audit`` (with the resolution of a lost answer, and the fills of orders that rested); each
:class:`SettlementHistory` adds its entries not recorded yet to ``settlements``. When the
database is unreachable the batch goes to the spool on disk and an :class:`~runtime.alarm.Alarm`
wakes the actor when the backoff allows a retry, in real time (also in replay), writing the spool
back in order once the database answers. Every write has a deadline (``recorder.write_deadline_s``):
a hung database costs the actor that long once, then the batches are spooled and the status says
``HUNG``. On PostgreSQL it makes the per-minute tables' day partitions ahead (today's and the next
``recorder.partition_days_ahead`` days') at start and at the first tick of each UTC day. Once a day,
in a thread of its own (:class:`sql.maintenance.DailyMaintenance`), it puts the finished days' option
rows in the order that serves one instrument over time (PostgreSQL) and, with
``recorder.archive_keep_days``, archives the older days to Parquet. A stop
(``stopping``, set by the program as it stops, from any thread) cuts a write in
flight short, spools what is in memory and leaves the rest spooled for the next start; the actor's
thread is a daemon, so nothing it waits on holds the exit. The logic is
:class:`sql.store.MinuteStore`; this actor receives, calls it and publishes :class:`RecorderStatus`
(each minute and on change).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pykka

from config.settings import Settings
from messages.account import OrderUpdate, SettlementHistory
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    OrderResolved,
    PlaceOrder,
)
from messages.market import VolatilityIndex
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import DailyRollover, MinuteTick, Shutdown
from runtime.actor import Actor, ActorContext, handles
from runtime.alarm import Alarm
from sql.archive import default_archive_dir
from sql.maintenance import DailyMaintenance
from sql.recording import DvolAtMinute, FillsSeen, SettlementsSeen
from sql.store import MinuteStore, audit_record, settlements_record, snapshot_record
from sql.writers import audit_answer, audit_fill, audit_request, audit_resolution


class _Wake(msgspec.Struct, frozen=True):
    """From the Recorder's alarm: the backoff allows trying the database again."""


class GetRecorderStatus(msgspec.Struct, frozen=True):
    """Ask (``ref.ask``) for the current :class:`RecorderStatus`; also a barrier for tests."""


def spool_directory(settings: Settings) -> Path:
    return Path(settings.recorder.spool_dir) if settings.recorder.spool_dir else Path(settings.data_dir) / "spool"


class Recorder(Actor):
    use_daemon_thread = True  # a write the deadline abandoned never holds the program's exit

    def __init__(self, context: ActorContext, *, url: str | None = None,
                 stopping: threading.Event | None = None) -> None:
        super().__init__(context)
        s = context.settings
        r = s.recorder
        # The settings checked database.url at load; a URL that can never work does not get here.
        self.store = MinuteStore(url or s.database_url, spool_directory(s), retry_initial_s=r.retry_initial_s,
                                 retry_max_s=r.retry_max_s, busy_timeout_s=r.sqlite_busy_timeout_s,
                                 connect_timeout_s=r.connect_timeout_s, write_deadline_s=r.write_deadline_s,
                                 stopping=stopping, partition_days_ahead=r.partition_days_ahead)
        # once a day, in a thread and on a connection of its own: finished days ordered, and with
        # recorder.archive_keep_days > 0 old days to Parquet and out of the database
        self.maintenance = DailyMaintenance(url or s.database_url, default_archive_dir(s.data_dir, r.archive_dir),
                                            keep_days=r.archive_keep_days, budget_s=r.archive_budget_s,
                                            connect_timeout_s=r.connect_timeout_s)
        self.dvol = DvolAtMinute()
        self.settlements_seen = SettlementsSeen()
        self.fills_seen = FillsSeen()
        self._dvol_current: dict[str, bool] = {}  # per currency: had the last minute a current DVOL
        self._alarm: Alarm | None = None
        self._published: tuple[Any, ...] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.log.info("recorder_starting", database=self.store.database, spool=str(self.store.spool.directory),
                      backlog=self.store.backlog)
        self._alarm = Alarm(self._ring, name=f"{self.context.name}-retry")
        self.store.open(now=self.context.clock.now())  # with the day partitions due now (PostgreSQL)
        self._publish_status(force=True)

    def on_stop(self) -> None:
        self._close_alarm()
        self.store.flush()
        self._publish_status(force=True)
        self.store.close()

    def on_failure(self, *args: Any) -> None:
        self._close_alarm()
        self.store.close()
        super().on_failure(*args)

    def _close_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.close()

    def _ring(self) -> None:
        try:
            self.actor_ref.tell(_Wake())
        except pykka.ActorDeadError:
            pass  # stopping: on_stop flushes what it can

    def _arm(self) -> None:
        """While anything is spooled, wake when the backoff allows the next try (at once if it does)."""
        if self._alarm is not None and self.store.backlog:
            self._alarm.set(self.store.retry_at)

    # -- batches -----------------------------------------------------------------------------------------
    @handles(SurfaceSnapshot)
    def on_snapshot(self, snapshot: SurfaceSnapshot) -> None:
        dvol = self.dvol.at_minute(snapshot.currency, snapshot.at)
        if self._dvol_current.get(snapshot.currency) != (dvol is not None):
            self._dvol_current[snapshot.currency] = dvol is not None
            self.log.info("dvol_recorded" if dvol is not None else "dvol_missing", currency=snapshot.currency,
                          minute=snapshot.at, dvol_at_ms=dvol.timestamp if dvol is not None else None)
        # One line per currency-minute, before the write: a write that then hangs is in the log.
        self.log.info("minute_recording", currency=snapshot.currency, minute=snapshot.at, backlog=self.store.backlog)
        self.store.record(snapshot_record(snapshot, dvol))
        self._publish_status()

    @handles(VolatilityIndex)
    def on_dvol(self, index: VolatilityIndex) -> None:
        if not self.dvol.update(index):
            self.log.debug("dvol_ignored", index_name=index.index_name, volatility=index.volatility,
                           timestamp=index.timestamp)

    @handles(SettlementHistory)
    def on_settlements(self, history: SettlementHistory) -> None:
        fresh = self.settlements_seen.new_entries(history)
        if fresh is not None:
            self.log.info("settlements_recording", currency=history.currency, entries=len(fresh.settlements))
            self.store.record(settlements_record(fresh))
            self._publish_status()

    @handles(PlaceOrder, EditOrder, CancelOrder, CancelAll, CancelByLabel)
    def on_command(self, command: Any) -> None:
        self.store.record(audit_record(audit_request(command, self.context.clock.now())))
        self._publish_status()

    @handles(CommandResult, CommandFailed)
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        self.store.record(audit_record(audit_answer(answer, self.context.clock.now())))
        self._publish_status()

    @handles(OrderResolved)
    def on_resolved(self, resolved: OrderResolved) -> None:
        self.store.record(audit_record(audit_resolution(resolved, self.context.clock.now())))
        self._publish_status()

    @handles(OrderUpdate)
    def on_order(self, order: OrderUpdate) -> None:
        # An order resting when answered that executes later: its placement's row says filled.
        if self.fills_seen.grew(order):
            self.store.record(audit_record(audit_fill(order, self.context.clock.now())))
            self._publish_status()

    @handles(_Wake)
    def on_wake(self, _wake: _Wake) -> None:
        if self.store.backlog and self.store.due():
            self.store.catch_up()
            self._publish_status()
        else:
            self._arm()

    @handles(MinuteTick, DailyRollover)
    def on_minute(self, _tick: MinuteTick | DailyRollover) -> None:
        # PostgreSQL's day partitions, today's and the next days': made at the first tick of a new day.
        self.store.make_partitions(self.context.clock.now())
        self.maintenance.tick(self.context.clock.now())
        self._publish_status(force=True)

    @handles(Shutdown)
    def on_shutdown(self, _event: Shutdown) -> None:
        self.store.flush()
        self._publish_status()

    @handles(GetRecorderStatus)
    def on_status_request(self, _request: GetRecorderStatus) -> RecorderStatus:
        return self.store.status(self.context.clock.now())

    def _publish_status(self, force: bool = False) -> None:
        self._arm()  # called after every write, spool and retry
        status = self.store.status(self.context.clock.now())
        key = (status.reachable, status.health, status.backlog_minutes, status.backlog_batches,
               status.last_written_minute, status.last_error)
        if force or key != self._published:
            self._published = key
            self.publish(status)
