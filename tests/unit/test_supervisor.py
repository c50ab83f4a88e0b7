"""Supervision: start order, restart after a failure, the restart-intensity limit, clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import pykka
import pytest

from messages.base import Message
from messages.system import ActorFailed, ExitStatus, MinuteTick, SafeShutdown, Shutdown, StopRequested
from runtime.actor import Actor, ActorContext, handles
from runtime.bus import Bus
from runtime.clock import ReplayClock
from runtime.supervisor import NOT_CHECKED, ActorSpec, MakeSafe, RestartPolicy, Supervisor, TooManyRestarts
from tests.support.waiting import wait_until as wait_for


class Count(Message, frozen=True, kw_only=True):
    pass


class Boom(Message, frozen=True, kw_only=True):
    text: str = "boom"


class GetCount(Message, frozen=True, kw_only=True):
    pass


class Counter(Actor):
    """Counts Count messages; raises on Boom."""

    def __init__(self, context: ActorContext, journal: list[str]) -> None:
        super().__init__(context)
        self.count = 0
        self.journal = journal

    def on_start(self) -> None:
        self.journal.append(f"start {self.context.name}")

    def on_stop(self) -> None:
        self.journal.append(f"stop {self.context.name}")

    @handles(Count)
    def on_count(self, _m: Count) -> None:
        self.count += 1

    @handles(Boom)
    def on_boom(self, m: Boom) -> None:
        raise RuntimeError(m.text)

    @handles(GetCount)
    def on_get(self, _m: GetCount) -> int:
        return self.count


class Watcher(Actor):
    def __init__(self, context: ActorContext, seen: list[object]) -> None:
        super().__init__(context)
        self.seen = seen

    @handles(ActorFailed, SafeShutdown, Shutdown, MinuteTick)
    def on_event(self, m: object) -> None:
        self.seen.append(m)


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def make(policy: RestartPolicy | None = None, replay: bool = True,
         make_safe: MakeSafe | None = None) -> tuple[Supervisor, list[str], list[object]]:
    journal: list[str] = []
    seen: list[object] = []
    specs = [
        ActorSpec("watcher", lambda c: Watcher.start(c, seen)),
        ActorSpec("counter", lambda c: Counter.start(c, journal)),
    ]
    sup = Supervisor(specs, bus=Bus(), clock=ReplayClock(1_000_000.0), settings=None,
                     policy=policy or RestartPolicy(backoff_initial_s=0.01, backoff_max_s=0.05),
                     replay=replay, safe_shutdown_grace_s=0.0, make_safe=make_safe)
    return sup, journal, seen


def run_in_thread(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    status: list[int] = []
    t = threading.Thread(target=lambda: status.append(sup.run()), daemon=True)
    t.start()
    return t, status


def count(sup: Supervisor) -> int:
    ref = sup.refs()["counter"]
    assert ref is not None
    return ref.ask(GetCount(), timeout=2)


def test_starts_in_order_and_stops_in_reverse() -> None:
    sup, journal, _ = make()
    sup.start()
    sup.stop()
    assert journal == ["start counter", "stop counter"]
    assert sup.stopped


def test_restart_gives_a_fresh_instance_that_gets_later_messages() -> None:
    sup, journal, seen = make()
    sup.start()
    t, status = run_in_thread(sup)
    for _ in range(3):
        sup.bus.publish(Count())
    assert count(sup) == 3
    first = sup.refs()["counter"]
    sup.bus.publish(Boom(text="kaput"))
    wait_for(lambda: sup.restarts("counter") == 1 and sup.refs()["counter"] not in (None, first))
    assert count(sup) == 0  # old state gone
    sup.bus.publish(Count())
    assert count(sup) == 1  # the new instance receives later messages
    failures = [m for m in seen if isinstance(m, ActorFailed)]
    assert len(failures) == 1 and failures[0].actor == "counter" and "kaput" in failures[0].error
    assert "RuntimeError" in failures[0].traceback
    sup.request_stop("test over")
    t.join(5)
    assert status == [0]
    assert journal.count("start counter") == 2


def test_backoff_doubles_between_consecutive_restarts() -> None:
    policy = RestartPolicy(backoff_initial_s=0.1, backoff_max_s=5.0, max_restarts=5, window_s=60)
    sup, _, _ = make(policy)
    sup.start()
    t, _ = run_in_thread(sup)
    times = []
    for n in range(1, 4):
        ref = sup.refs()["counter"]
        start = time.monotonic()
        sup.bus.publish(Boom())
        wait_for(lambda n=n, ref=ref: sup.restarts("counter") == n and sup.refs()["counter"] is not ref)
        times.append(time.monotonic() - start)
    sup.request_stop("done")
    t.join(5)
    assert 0.09 <= times[0] < 0.35
    assert 0.19 <= times[1] < 0.5
    assert 0.39 <= times[2] < 0.8


def test_too_many_restarts_publishes_safe_shutdown_and_exits_nonzero() -> None:
    policy = RestartPolicy(backoff_initial_s=0.001, backoff_max_s=0.002, max_restarts=3, window_s=60)
    sup, _, seen = make(policy)
    sup.start()
    t, status = run_in_thread(sup)
    for n in range(1, 4):
        ref = sup.refs()["counter"]
        sup.bus.publish(Boom(text=f"fault {n}"))
        wait_for(lambda n=n, ref=ref: sup.restarts("counter") == n and sup.refs()["counter"] is not ref)
    sup.bus.publish(Boom(text="the last straw"))
    t.join(5)
    assert status == [1]
    assert sup.fatal is not None
    assert "counter" in str(sup.fatal) and "the last straw" in str(sup.fatal)
    kinds = [type(m).__name__ for m in seen]
    assert "SafeShutdown" in kinds
    assert kinds.index("SafeShutdown") < kinds.index("Shutdown")
    assert sup.stopped


def fail_past_the_limit(sup: Supervisor) -> list[int]:
    """Run ``sup`` and make its counter fail twice with a limit of one restart; the run's status."""
    sup.start()
    t, status = run_in_thread(sup)
    ref = sup.refs()["counter"]
    sup.bus.publish(Boom(text="first"))
    wait_for(lambda: sup.restarts("counter") == 1 and sup.refs()["counter"] is not ref)
    sup.bus.publish(Boom(text="second"))
    t.join(10)
    return status


ONE_RESTART = RestartPolicy(backoff_initial_s=0.001, backoff_max_s=0.002, max_restarts=1, window_s=60)


def test_too_many_restarts_claims_nothing_about_orders_it_did_not_check() -> None:
    text = str(TooManyRestarts("connection", "RuntimeError: x", 6, 60))
    assert "actor 'connection' failed 6 times within 60 s; last error: RuntimeError: x" in text
    assert "cancel" not in text and "the program stops" in text


def test_after_too_many_restarts_the_program_makes_the_account_safe_and_its_report_is_kept() -> None:
    calls: list[tuple[str, dict[str, bool], list[str]]] = []
    seen_then: list[object] = []

    def make_safe(fatal: TooManyRestarts, actors: Mapping[str, pykka.ActorRef | None]) -> str:
        watcher = actors["watcher"]
        assert watcher is not None
        watcher.ask(GetCount(), timeout=2)  # not its message: answered once it handled all before it
        calls.append((fatal.actor, {name: ref is not None for name, ref in actors.items()},
                      [type(m).__name__ for m in seen_then]))
        return "Open orders: verified none"

    sup, _, seen = make(ONE_RESTART, make_safe=make_safe)
    seen_then = seen
    assert fail_past_the_limit(sup) == [1]
    # Called once, after SafeShutdown went out and before the actors stopped; the failed one is None.
    [(actor, running, kinds)] = calls
    assert actor == "counter" and running == {"watcher": True, "counter": False}
    assert "SafeShutdown" in kinds and "Shutdown" not in kinds
    assert sup.safe_report == "Open orders: verified none" and sup.stopped


def test_a_failing_make_safe_leaves_the_state_unknown() -> None:
    def make_safe(fatal: TooManyRestarts, actors: Mapping[str, pykka.ActorRef | None]) -> str:
        raise OSError("no route to host")

    sup, _, _ = make(ONE_RESTART, make_safe=make_safe)
    assert fail_past_the_limit(sup) == [1]
    assert sup.safe_report.startswith("Open orders: UNKNOWN; checking them failed (OSError: no route to host)")


def test_without_make_safe_nothing_is_claimed() -> None:
    sup, _, _ = make(ONE_RESTART)
    assert fail_past_the_limit(sup) == [1]
    assert sup.safe_report == NOT_CHECKED and "UNKNOWN" in NOT_CHECKED


def test_replay_time_publishes_ticks_through_the_bus() -> None:
    sup, _, seen = make()
    sup.start()
    sup.advance_time(1_000_000.0 + 200)
    sup.stop()
    ticks = [m.at for m in seen if isinstance(m, MinuteTick)]
    assert ticks == [1_000_020.0, 1_000_080.0, 1_000_140.0, 1_000_200.0]


def test_stop_requested_on_the_bus_ends_the_run() -> None:
    from messages.system import StopRequested

    sup, _, seen = make()
    sup.start()
    t, status = run_in_thread(sup)
    sup.bus.publish(StopRequested(reason="quit typed", origin="console"))
    t.join(5)
    assert status == [0] and sup.stopped
    shutdowns = [m for m in seen if isinstance(m, Shutdown)]
    assert shutdowns and "quit typed" in shutdowns[0].reason


def test_producers_can_wait_until_every_actor_is_on_the_bus() -> None:
    contexts: list[ActorContext] = []

    def factory(ctx: ActorContext) -> pykka.ActorRef:
        contexts.append(ctx)
        assert ctx.wait_started(0.01) is False  # nothing started yet while we are being built
        return Counter.start(ctx, [])

    sup = Supervisor([ActorSpec("counter", factory)], bus=Bus(), clock=ReplayClock(0.0), settings=None,
                     replay=True)
    sup.start()
    try:
        assert contexts[0].wait_started(0.01) is True
    finally:
        sup.stop()


@pytest.mark.parametrize("status", [ExitStatus.OK, ExitStatus.FAILED, ExitStatus.USAGE])
def test_a_stop_requested_on_the_bus_ends_the_run_with_its_exit_status(status: ExitStatus) -> None:
    """The console's end of a piped session says how it went (refused lines: 1, an unlisted
    --instrument: 2); the run returns that status."""
    sup, _, _ = make()
    sup.start()
    t, result = run_in_thread(sup)
    sup.bus.publish(StopRequested(reason="end of console input", origin="console", status=status))
    t.join(5)
    assert result == [status] and sup.stopped
