"""The Recorder: the only database writer.

Each :class:`SurfaceSnapshot` (one currency-minute) is one transaction; every order command seen on
the bus and its answer go to ``orders_audit``. When the database is unreachable the batch goes to
the spool on disk and a timer thread wakes the actor to retry with backoff in real time (also in
replay), writing the spool back in order once the database answers. A clean stop writes what it
can and leaves the rest spooled for the next start. The logic is :class:`sql.store.MinuteStore`;
this actor receives, calls it and publishes :class:`RecorderStatus` (each minute and on change).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec

from config.settings import SettingsError
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    PlaceOrder,
)
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import MinuteTick, Shutdown
from runtime.actor import Actor, ActorContext, handles
from sql.engine import DatabaseURLError
from sql.store import MinuteStore, audit_record, snapshot_record
from sql.writers import audit_answer, audit_request


class _Wake(msgspec.Struct, frozen=True):
    """From the Recorder's timer thread: time to see whether the database may be retried."""


class GetRecorderStatus(msgspec.Struct, frozen=True):
    """Ask (``ref.ask``) for the current :class:`RecorderStatus`; also a barrier for tests."""


def spool_directory(settings: Any) -> Path:
    return Path(settings.recorder.spool_dir) if settings.recorder.spool_dir else Path(settings.data_dir) / "spool"


class Recorder(Actor):
    def __init__(self, context: ActorContext, *, url: str | None = None, wake_interval_s: float = 0.2) -> None:
        super().__init__(context)
        s = context.settings
        r = s.recorder
        try:
            self.store = MinuteStore(url or s.database_url, spool_directory(s), retry_initial_s=r.retry_initial_s,
                                     retry_max_s=r.retry_max_s, busy_timeout_s=r.sqlite_busy_timeout_s,
                                     connect_timeout_s=r.connect_timeout_s)
        except DatabaseURLError as exc:
            # A URL that can never work stops the program at start with the settings' kind of message.
            raise SettingsError(f"database.url: {exc}") from None
        self.wake_interval_s = wake_interval_s
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None
        self._published: tuple[Any, ...] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.log.info("recorder_starting", database=self.store.database, spool=str(self.store.spool.directory),
                      backlog=self.store.backlog)
        self.store.open()
        self._timer = threading.Thread(target=self._timer_loop, name=f"{self.context.name}-timer", daemon=True)
        self._timer.start()
        self._publish_status(force=True)

    def on_stop(self) -> None:
        self._stop_timer_thread()
        self.store.flush()
        self._publish_status(force=True)
        self.store.close()

    def on_failure(self, *args: Any) -> None:
        self._stop_timer_thread()
        self.store.close()
        super().on_failure(*args)

    def _stop_timer_thread(self) -> None:
        self._stop_timer.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=1.0)

    def _timer_loop(self) -> None:
        while not self._stop_timer.wait(self.wake_interval_s):
            if self.store.backlog:
                try:
                    self.actor_ref.tell(_Wake())
                except Exception:  # the actor is gone
                    return

    # -- batches -----------------------------------------------------------------------------------------
    @handles(SurfaceSnapshot)
    def on_snapshot(self, snapshot: SurfaceSnapshot) -> None:
        self.store.record(snapshot_record(snapshot))
        self._publish_status()

    @handles(PlaceOrder, EditOrder, CancelOrder, CancelAll, CancelByLabel)
    def on_command(self, command: Any) -> None:
        self.store.record(audit_record(audit_request(command, self.context.clock.now())))
        self._publish_status()

    @handles(CommandResult, CommandFailed)
    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        self.store.record(audit_record(audit_answer(answer, self.context.clock.now())))
        self._publish_status()

    @handles(_Wake)
    def on_wake(self, _wake: _Wake) -> None:
        if self.store.backlog and self.store.due():
            self.store.catch_up()
            self._publish_status()

    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        self._publish_status(force=True)

    @handles(Shutdown)
    def on_shutdown(self, _event: Shutdown) -> None:
        self.store.flush()
        self._publish_status()

    @handles(GetRecorderStatus)
    def on_status_request(self, _request: GetRecorderStatus) -> RecorderStatus:
        return self.store.status(self.context.clock.now())

    def _publish_status(self, force: bool = False) -> None:
        status = self.store.status(self.context.clock.now())
        key = (status.reachable, status.backlog_minutes, status.backlog_batches, status.last_written_minute,
               status.last_error)
        if force or key != self._published:
            self._published = key
            self.publish(status)
