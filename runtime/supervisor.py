"""One-for-one supervision, the minute and rollover schedule, and orderly shutdown.

The supervisor takes actors as factories and imports none of them. It starts them in order and
stops them in reverse. An actor that raises while handling a message is restarted after a
backoff (100 ms doubling to 5 s) and re-registered on the bus; more restarts than the intensity
limit allows in the window publishes :class:`SafeShutdown`, has the program make the account safe
and say what it found (:class:`MakeSafe`, given by main.py: the supervisor knows nothing of
exchanges), and ends the run with an error.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pykka
import structlog

from messages.system import (
    ActorFailed,
    ConnectionStatusRequest,
    ExitStatus,
    SafeShutdown,
    Shutdown,
    StopRequested,
)
from runtime.actor import Actor, ActorContext, handles
from runtime.bus import Bus
from runtime.clock import Clock
from runtime.schedule import Schedule
from runtime.throttle import Backoff

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(actor="supervisor")

ActorFactory = Callable[[ActorContext], pykka.ActorRef]


class _Barrier:
    """Asked of an actor to know it handled everything before it (no actor handles it)."""


class _StopListener(Actor):
    """Turns a StopRequested on the bus (the console's quit) into a supervisor stop."""

    def __init__(self, context: ActorContext, on_stop: Callable[[str, ExitStatus], None]) -> None:
        super().__init__(context)
        self._on_stop = on_stop

    @handles(StopRequested)
    def on_stop_requested(self, message: StopRequested) -> None:
        self._on_stop(f"{message.reason} ({message.origin})" if message.origin else message.reason, message.status)


@dataclass(frozen=True)
class ActorSpec:
    name: str
    factory: ActorFactory


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    max_restarts: int = 5
    window_s: float = 60.0


@dataclass
class _Slot:
    spec: ActorSpec
    backoff: Backoff  # restarts in a row: reset when the window holds no failure
    ref: pykka.ActorRef | None = None
    failures: deque[float] = field(default_factory=deque)
    last_error: str = ""
    restarts: int = 0


class TooManyRestarts(RuntimeError):
    """Says what failed and that the program stops; what became of the orders is the
    :class:`MakeSafe` report's to say (only it checked)."""

    def __init__(self, actor: str, last_error: str, count: int, window_s: float) -> None:
        super().__init__(
            f"actor {actor!r} failed {count} times within {window_s:g} s; last error: {last_error}. "
            "Safe shutdown: the program stops (no more hedging, no new orders); see the log for tracebacks."
        )
        self.actor = actor
        self.last_error = last_error


class MakeSafe(Protocol):
    """What the program does after a fatal failure, once SafeShutdown was published, before the
    actors stop: make the account safe and check it (``actors``: the running ones by name, None
    for a failed one). Returns what it found, for the exit message; it must say only what it
    checked, and finish in bounded time."""

    def __call__(self, fatal: TooManyRestarts, actors: Mapping[str, pykka.ActorRef | None]) -> str: ...


#: The exit message's part about the account when the program gave no :class:`MakeSafe`.
NOT_CHECKED = "Open orders: UNKNOWN; nothing checked them. Check the exchange's open orders now."


class Supervisor:
    def __init__(
        self,
        specs: list[ActorSpec],
        *,
        bus: Bus,
        clock: Clock,
        settings: Settings,
        policy: RestartPolicy | None = None,
        rollover_utc: str = "08:00",
        replay: bool = False,
        safe_shutdown_grace_s: float = 1.5,
        make_safe: MakeSafe | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique: {names}")
        self.bus = bus
        self.clock = clock
        self.settings = settings
        self.policy = policy or RestartPolicy()
        self.replay = replay
        self._grace = safe_shutdown_grace_s
        self._make_safe = make_safe
        self._slots = {s.name: _Slot(spec=s, backoff=Backoff(self.policy.backoff_initial_s, self.policy.backoff_max_s,
                                                             jitter=False)) for s in specs}
        self._order = names
        self._schedule = Schedule(clock.now(), rollover_utc)
        self._schedule_lock = threading.Lock()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._restarts: list[tuple[float, str]] = []  # (monotonic due, name) heap
        # Set as the stop begins; shared with actors that must cut a blocking call short then
        # (the Recorder's database write).
        self._stopping = stopping if stopping is not None else threading.Event()
        self._stopped = threading.Event()
        self._all_started = threading.Event()
        self.fatal: TooManyRestarts | None = None
        self.safe_report = ""  # after a fatal failure: what MakeSafe found (the exit message says it)
        self._lock = threading.RLock()

    # -- context given to actors -------------------------------------------------------------
    def _context(self, name: str) -> ActorContext:
        return ActorContext(
            name=name,
            clock=self.clock,
            settings=self.settings,
            publish=self.bus.publish,
            report_failure=self._report_failure,
            advance_time=self.advance_time if self.replay else (lambda _t: None),
            replay=self.replay,
            wait_started=self._all_started.wait,
        )

    def _report_failure(self, name: str, error: BaseException, tb: str) -> None:
        self._events.put(("failed", (name, f"{type(error).__name__}: {error}", tb)))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._listener = _StopListener.start(self._context("supervisor"), self.request_stop)
        self.bus.register("supervisor", self._listener, _StopListener.subscriptions())
        for name in self._order:
            self._start_one(name)
        self._all_started.set()
        log.info("actors_started", actors=self._order)

    def _start_one(self, name: str) -> None:
        slot = self._slots[name]
        restarted = slot.ref is not None
        ref = slot.spec.factory(self._context(name))
        slot.ref = ref
        self.bus.register(name, ref, ref.actor_class.subscriptions())
        if restarted:
            # A restarted actor asks for the link's state as it starts, before it is on the bus:
            # the answer could pass it by. Asked again now that it is registered.
            self.bus.publish(ConnectionStatusRequest(origin="supervisor"))

    def refs(self) -> dict[str, pykka.ActorRef | None]:
        return {name: slot.ref for name, slot in self._slots.items()}

    def drain(self, rounds: int = 3, timeout_s: float = 30.0) -> None:
        """Wait until every actor handled what was sent to it so far; repeated so that what
        one actor sent another while draining is handled too."""
        for _ in range(rounds):
            for name in self._order:
                ref = self._slots[name].ref
                if ref is None:
                    continue
                try:
                    ref.ask(_Barrier(), timeout=timeout_s)
                except (pykka.ActorDeadError, pykka.Timeout):
                    pass

    def restarts(self, name: str) -> int:
        return self._slots[name].restarts

    def stop(self, reason: str = "stop requested", timeout_s: float = 2.0) -> None:
        """Publish Shutdown, then stop actors in reverse start order (each drains its inbox)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopping.set()
            self.bus.publish(Shutdown(reason=reason, at=self.clock.now()))
            deadline = time.monotonic() + timeout_s
            for name in reversed(self._order):
                slot = self._slots[name]
                self.bus.unregister(name)
                if slot.ref is None:
                    continue
                remaining = max(0.05, deadline - time.monotonic())
                try:
                    slot.ref.stop(block=True, timeout=remaining)
                except pykka.ActorDeadError:
                    pass
                except pykka.Timeout:
                    log.warning("actor_stop_timeout", stopped_actor=name)
                slot.ref = None
            listener = getattr(self, "_listener", None)
            if listener is not None:
                self.bus.unregister("supervisor")
                try:
                    listener.stop(block=False)
                except pykka.ActorDeadError:
                    pass
            self._stopped.set()
            self._events.put(("wake", None))
            log.info("actors_stopped", reason=reason)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def request_stop(self, reason: str, status: ExitStatus = ExitStatus.OK) -> None:
        """Thread-safe (signal handlers, the console): ends :meth:`run`, which returns ``status``."""
        self._events.put(("stop", (reason, status)))

    # -- time ----------------------------------------------------------------------------------
    def advance_time(self, now: float) -> None:
        """Move the replay clock to ``now`` and publish every tick and rollover passed, from the
        calling thread so that they stay in order with what that thread publishes next."""
        with self._schedule_lock:
            advance = getattr(self.clock, "advance_to", None)
            if advance is not None:
                now = advance(now)
            events = self._schedule.advance(now)
        for event in events:
            self.bus.publish(event)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, until: threading.Event | None = None) -> ExitStatus:
        """Supervise until a stop is requested (or ``until`` is set). Returns the exit status:
        the one the stop was requested with (OK for a signal; the console's for its session),
        FAILED after too many restarts."""
        reason = "stop requested"
        status = ExitStatus.OK
        try:
            while not self._stopped.is_set() and not (until is not None and until.is_set()):
                timeout = self._next_wakeup()
                try:
                    kind, payload = self._events.get(timeout=timeout)
                except queue.Empty:
                    kind, payload = "timer", None
                if kind == "failed":
                    self._on_failure(*payload)
                    if self.fatal is not None:
                        break
                elif kind == "stop":
                    reason, status = payload
                    break
                self._run_due_restarts()
                if not self.replay:
                    self.advance_time_live()
        finally:
            if self.fatal is not None:
                self._safe_shutdown(self.fatal)
                self.stop(reason=str(self.fatal))
            else:
                self.stop(reason=reason)
        return ExitStatus.FAILED if self.fatal is not None else status

    def advance_time_live(self) -> None:
        with self._schedule_lock:
            events = self._schedule.advance(self.clock.now())
        for event in events:
            self.bus.publish(event)

    def _next_wakeup(self) -> float:
        # The run loop is the supervisor's timer: it waits on its event queue until the next restart
        # or tick is due, so it needs no Alarm thread of its own.
        candidates = [1.0]
        if self._restarts:
            candidates.append(self._restarts[0][0] - time.monotonic())
        if not self.replay:
            candidates.append(self._schedule.next_event_time() - self.clock.now())
        return max(0.0, min(candidates))

    def _on_failure(self, name: str, error: str, tb: str) -> None:
        slot = self._slots.get(name)
        if slot is None or self._stopping.is_set():
            return
        self.bus.unregister(name)
        slot.ref = None
        now = time.monotonic()
        while slot.failures and now - slot.failures[0] > self.policy.window_s:
            slot.failures.popleft()
        if not slot.failures:
            slot.backoff.reset()
        slot.failures.append(now)
        slot.last_error = error
        log.error("actor_failed", failed_actor=name, error=error, traceback=tb, failures=len(slot.failures))
        self.bus.publish(ActorFailed(actor=name, error=error, traceback=tb, at=self.clock.now()))
        if len(slot.failures) > self.policy.max_restarts:
            self.fatal = TooManyRestarts(name, error, len(slot.failures), self.policy.window_s)
            log.critical("restart_intensity_exceeded", failed_actor=name, error=error)
            return
        delay = slot.backoff.next_delay()
        heapq.heappush(self._restarts, (now + delay, name))
        log.info("actor_restart_scheduled", restarting_actor=name, delay_s=delay)

    def _run_due_restarts(self) -> None:
        now = time.monotonic()
        while self._restarts and self._restarts[0][0] <= now:
            _, name = heapq.heappop(self._restarts)
            slot = self._slots[name]
            try:
                self._start_one(name)
            except Exception as exc:  # a factory that fails counts as another failure
                self._on_failure(name, f"{type(exc).__name__}: {exc}", "")
                continue
            slot.restarts += 1
            log.info("actor_restarted", restarted_actor=name, restarts=slot.restarts)

    def _safe_shutdown(self, fatal: TooManyRestarts) -> None:
        self.bus.publish(SafeShutdown(reason=str(fatal), at=self.clock.now()))
        if self._make_safe is None:
            # Give the hedger and the connection time to switch off and cancel before stopping.
            time.sleep(self._grace)
            self.safe_report = NOT_CHECKED
        else:
            try:
                self.safe_report = self._make_safe(fatal, self.refs())
            except Exception as exc:  # whatever failed, the message must not claim anything
                log.exception("make_safe_failed", error=f"{type(exc).__name__}: {exc}")
                self.safe_report = (f"Open orders: UNKNOWN; checking them failed ({type(exc).__name__}: {exc}). "
                                    "Check the exchange's open orders now.")
        log.critical("safe_shutdown_report", report=self.safe_report)
