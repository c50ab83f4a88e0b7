"""Immediate delivery: handlers run in the publisher's thread, under the actor's state lock, with
what they publish (and their ``later`` calls, their deferred log lines) sent after they return."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from messages.base import Message
from runtime.actor import Actor, ActorContext, handles, immediate_delivery
from runtime.bus import Bus
from runtime.clock import WallClock
from tests.support.waiting import wait_until as wait_for


class Fast(Message, frozen=True, kw_only=True):
    n: int = 0


class Slow(Message, frozen=True, kw_only=True):
    pass


class Trigger(Message, frozen=True, kw_only=True):
    pass


class Out(Message, frozen=True, kw_only=True):
    n: int


class Ping(Message, frozen=True, kw_only=True):
    hops: int


class Pong(Message, frozen=True, kw_only=True):
    hops: int


Failure = tuple[str, BaseException, str]


def ctx(name: str, bus: Bus, report_failure: Callable[[str, BaseException, str], None] | None = None) -> ActorContext:
    if report_failure is None:
        return ActorContext(name=name, clock=WallClock(), settings=None, publish=bus.publish)
    return ActorContext(name=name, clock=WallClock(), settings=None, publish=bus.publish,
                        report_failure=report_failure)


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


class Mixed(Actor):
    """Fast is handled immediately, Slow in the actor's own thread; both note their thread."""

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.own_thread: int | None = None
        self.fast_threads: list[int] = []
        self.slow_threads: list[int] = []
        self.slow_done = threading.Event()

    def on_start(self) -> None:
        self.own_thread = threading.get_ident()

    @handles(Fast, immediate=True)
    def on_fast(self, _m: Fast) -> None:
        self.fast_threads.append(threading.get_ident())

    @handles(Slow)
    def on_slow(self, _m: Slow) -> None:
        self.slow_threads.append(threading.get_ident())
        self.slow_done.set()


def start_mixed(bus: Bus, name: str = "mixed") -> tuple[pykka.ActorRef[Mixed], Mixed]:
    ref = Mixed.start(ctx(name, bus))
    bus.register(name, ref, Mixed.subscriptions())
    return ref, _instance(ref)


def _instance(ref: pykka.ActorRef[Any]) -> Any:
    """The actor object behind ``ref`` (immediate actors are indexed by urn for the bus)."""
    found = immediate_delivery(ref)
    assert found is not None, "not an actor with immediate handlers"
    return found[1].__self__  # type: ignore[attr-defined]


def test_immediate_handler_runs_in_the_publishing_thread_and_queued_one_in_the_actor_thread() -> None:
    bus = Bus()
    ref, actor = start_mixed(bus)
    main = threading.get_ident()
    bus.publish(Fast())
    assert actor.fast_threads == [main]  # already handled: publish ran it

    other: list[int] = []

    def publish_from_other_thread() -> None:
        other.append(threading.get_ident())
        bus.publish(Fast(n=1))

    t = threading.Thread(target=publish_from_other_thread)
    t.start()
    t.join(5)
    assert actor.fast_threads == [main, other[0]]

    bus.publish(Slow())
    assert actor.slow_done.wait(5)
    wait_for(lambda: actor.own_thread is not None)
    assert actor.slow_threads == [actor.own_thread]
    assert actor.own_thread not in (main, other[0])
    ref.stop()


class Guarded(Actor):
    """A queued handler (and on_start) that hold the actor until released; an immediate one that
    notes whether it ran while they were in progress."""

    def __init__(self, context: ActorContext, block_start: bool) -> None:
        super().__init__(context)
        self.block_start = block_start
        self.busy = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fast_called = threading.Event()
        self.fast_saw_busy: list[bool] = []

    def _hold(self) -> None:
        self.busy = True
        self.entered.set()
        assert self.release.wait(5)
        self.busy = False

    def on_start(self) -> None:
        if self.block_start:
            self._hold()

    @handles(Slow)
    def on_slow(self, _m: Slow) -> None:
        self._hold()

    @handles(Fast, immediate=True)
    def on_fast(self, _m: Fast) -> None:
        self.fast_saw_busy.append(self.busy)
        self.fast_called.set()


@pytest.mark.parametrize("hold_in", ["queued_handler", "on_start"])
def test_immediate_handler_waits_for_a_running_queued_handler_or_on_start(hold_in: str) -> None:
    bus = Bus()
    ref = Guarded.start(ctx("guarded", bus), hold_in == "on_start")
    bus.register("guarded", ref, Guarded.subscriptions())
    actor: Guarded = _instance(ref)
    if hold_in == "queued_handler":
        bus.publish(Slow())
    assert actor.entered.wait(5)

    publisher = threading.Thread(target=bus.publish, args=(Fast(),), daemon=True)
    publisher.start()
    # While the actor's thread holds its state, the immediate delivery waits (a generous window:
    # without the lock it would have run within microseconds).
    assert not actor.fast_called.wait(0.2)
    assert publisher.is_alive()
    actor.release.set()
    assert actor.fast_called.wait(5)
    publisher.join(5)
    assert not publisher.is_alive()
    assert actor.fast_saw_busy == [False]
    ref.stop()


class Events:
    """A shared, ordered journal."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.threads: list[int] = []

    def add(self, line: str) -> None:
        self.lines.append(line)


class FakeLog:
    def __init__(self, events: Events) -> None:
        self.events = events

    def info(self, event: str, **fields: Any) -> None:
        self.events.add(f"log {event}")


class Producer(Actor):
    """On Trigger (immediate) or Slow (queued) publishes Out 1..3 interleaved with a later call
    and a deferred log line, then notes it returned; on_start publishes Out 0."""

    def __init__(self, context: ActorContext, events: Events) -> None:
        super().__init__(context)
        self.events = events
        self.log = FakeLog(events)

    def on_start(self) -> None:
        self.publish(Out(n=0))
        self.events.add("start done")

    def _produce(self) -> None:
        self.publish(Out(n=1))
        self.later(self.events.add, "later a")
        self.publish(Out(n=2))
        self.deferred_log.info("hot")
        self.publish(Out(n=3))
        self.later(self.events.add, "later b")
        self.events.add("handler done")

    @handles(Trigger, immediate=True)
    def on_trigger(self, _m: Trigger) -> None:
        self._produce()

    @handles(Slow)
    def on_slow(self, _m: Slow) -> None:
        self._produce()


class Consumer(Actor):
    def __init__(self, context: ActorContext, events: Events) -> None:
        super().__init__(context)
        self.events = events

    @handles(Out, immediate=True)
    def on_out(self, m: Out) -> None:
        self.events.add(f"out {m.n}")
        self.events.threads.append(threading.get_ident())


PRODUCED = ["handler done", "out 1", "later a", "out 2", "log hot", "out 3", "later b"]


def start_pair(bus: Bus, events: Events) -> pykka.ActorRef[Producer]:
    consumer = Consumer.start(ctx("consumer", bus), events)
    bus.register("consumer", consumer, Consumer.subscriptions())
    producer = Producer.start(ctx("producer", bus), events)
    bus.register("producer", producer, Producer.subscriptions())
    return producer


def test_what_an_immediate_handler_publishes_goes_out_in_order_after_it_returned() -> None:
    bus = Bus()
    events = Events()
    start_pair(bus, events)
    wait_for(lambda: "out 0" in events.lines)
    events.lines.clear()
    events.threads.clear()
    bus.publish(Trigger())
    # All of it ran in this thread, before publish returned.
    assert events.lines == PRODUCED
    assert events.threads == [threading.get_ident()] * 3


def test_what_a_queued_handler_and_on_start_publish_goes_out_after_they_returned() -> None:
    bus = Bus()
    events = Events()
    producer = start_pair(bus, events)
    wait_for(lambda: "out 0" in events.lines)
    assert events.lines[:2] == ["start done", "out 0"]
    events.lines.clear()
    events.threads.clear()
    bus.publish(Slow())
    wait_for(lambda: len(events.lines) >= len(PRODUCED))
    producer.stop()
    assert events.lines == PRODUCED
    # The consumer's immediate handler ran in the producer's own thread.
    assert len(set(events.threads)) == 1 and events.threads[0] != threading.get_ident()


def test_later_runs_at_once_outside_a_handler() -> None:
    bus = Bus()
    events = Events()
    producer = start_pair(bus, events)
    wait_for(lambda: "out 0" in events.lines)
    actor: Producer = _instance(producer)
    actor.later(events.add, "now")
    assert events.lines[-1] == "now"


class _Bouncer(Actor):
    """Answers what it takes with the other type, up to ``limit`` hops, counting in ``counts``."""

    def __init__(self, context: ActorContext, counts: dict[str, int], limit: int) -> None:
        super().__init__(context)
        self.counts = counts
        self.limit = limit


class PingSide(_Bouncer):
    @handles(Ping, immediate=True)
    def on_ping(self, m: Ping) -> None:
        self.counts["ping"] += 1  # under this actor's lock
        time.sleep(0)  # let the other thread run while this one is in the handler
        if m.hops < self.limit:
            self.publish(Pong(hops=m.hops + 1))


class PongSide(_Bouncer):
    @handles(Pong, immediate=True)
    def on_pong(self, m: Pong) -> None:
        self.counts["pong"] += 1
        time.sleep(0)
        if m.hops < self.limit:
            self.publish(Ping(hops=m.hops + 1))


def test_two_actors_delivering_immediately_to_each_other_from_two_threads_do_not_deadlock() -> None:
    bus = Bus()
    counts = {"ping": 0, "pong": 0}
    limit = 4
    a = PingSide.start(ctx("a", bus), counts, limit)
    b = PongSide.start(ctx("b", bus), counts, limit)
    bus.register("a", a, PingSide.subscriptions())
    bus.register("b", b, PongSide.subscriptions())
    rounds = 300
    barrier = threading.Barrier(2)

    def run(seed: Message) -> None:
        barrier.wait(5)
        for _ in range(rounds):
            bus.publish(seed)

    threads = [threading.Thread(target=run, args=(Ping(hops=0),), daemon=True),
               threading.Thread(target=run, args=(Pong(hops=0),), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "deadlocked"
    # Ping(0) -> Pong(1) -> Ping(2) -> Pong(3) -> Ping(4): 3 pings, 2 pongs; the mirror from Pong(0).
    assert counts == {"ping": 5 * rounds, "pong": 5 * rounds}


class Brittle(Actor):
    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.calls = 0
        self.error = RuntimeError("immediate kaput")

    @handles(Fast, immediate=True)
    def on_fast(self, _m: Fast) -> None:
        self.calls += 1
        raise self.error


def test_failure_in_an_immediate_handler_stops_the_actor_and_is_reported_not_raised() -> None:
    bus = Bus()
    reported: list[Failure] = []
    ref = Brittle.start(ctx("brittle", bus, lambda *args: reported.append(args)))
    bus.register("brittle", ref, Brittle.subscriptions())
    actor: Brittle = _instance(ref)
    bus.publish(Fast())  # does not raise here
    bus.publish(Fast(n=1))  # failed already (stopping or stopped): ignored
    wait_for(lambda: len(reported) == 1 and not ref.is_alive())
    name, error, text = reported[0]
    assert name == "brittle"
    assert error is actor.error
    assert "RuntimeError" in text and "immediate kaput" in text
    bus.publish(Fast(n=2))  # stopped: ignored
    assert actor.calls == 1
    assert len(reported) == 1


def test_immediate_delivery_to_a_stopped_actor_does_nothing() -> None:
    bus = Bus()
    ref, actor = start_mixed(bus)
    ref.stop()
    bus.publish(Fast())  # no exception
    assert actor.fast_threads == []


class Plain(Actor):
    def __init__(self, context: ActorContext, holder: list[Plain]) -> None:
        super().__init__(context)
        holder.append(self)
        self.threads: list[int] = []
        self.done = threading.Event()

    @handles(Fast)
    def on_fast(self, _m: Fast) -> None:
        self.threads.append(threading.get_ident())
        self.done.set()


def test_subscribers_and_actors_without_immediate_handlers_are_unchanged() -> None:
    bus = Bus()
    holder: list[Plain] = []
    plain = Plain.start(ctx("plain", bus), holder)
    bus.register("plain", plain, Plain.subscriptions())
    mixed, actor = start_mixed(bus)
    assert bus.subscribers(Fast) == (plain, mixed)
    assert bus.subscribers(Slow) == (mixed,)
    assert immediate_delivery(plain) is None
    assert holder[0]._state_lock is None
    assert actor._state_lock is not None
    assert Mixed.immediate_subscriptions() == (Fast,)
    assert Plain.immediate_subscriptions() == ()
    bus.publish(Fast())
    assert holder[0].done.wait(5)
    assert holder[0].threads and holder[0].threads[0] != threading.get_ident()  # through tell
    assert actor.fast_threads == [threading.get_ident()]


class Base(Message, frozen=True, kw_only=True):
    pass


class Derived(Base, frozen=True, kw_only=True):
    pass


class BaseNowDerivedQueued(Actor):
    """Handles Base immediately but has its own queued handler for the subclass Derived."""

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.derived_threads: list[int] = []
        self.done = threading.Event()

    @handles(Base, immediate=True)
    def on_base(self, _m: Base) -> None:
        pass

    @handles(Derived)
    def on_derived(self, _m: Derived) -> None:
        self.derived_threads.append(threading.get_ident())
        self.done.set()


def test_a_queued_handler_for_a_subclass_of_an_immediate_type_runs_in_the_actor_thread() -> None:
    bus = Bus()
    ref = BaseNowDerivedQueued.start(ctx("split", bus))
    bus.register("split", ref, BaseNowDerivedQueued.subscriptions())
    actor: BaseNowDerivedQueued = _instance(ref)
    bus.publish(Derived())
    assert actor.done.wait(5)
    assert actor.derived_threads != [threading.get_ident()]


class LateBreaker(Actor):
    """Its immediate handler succeeds but defers a call that raises; Slow is queued."""

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.slow_calls = 0
        self.gate = threading.Event()

    @handles(Fast, immediate=True)
    def on_fast(self, _m: Fast) -> None:
        self.publish(Out(n=1))
        self.later(self.explode)

    def explode(self) -> None:
        raise ValueError("deferred kaput")

    @handles(Trigger)
    def on_trigger(self, _m: Trigger) -> None:
        self.gate.wait(5.0)  # holds the actor's thread while the test fails it from outside

    @handles(Slow)
    def on_slow(self, _m: Slow) -> None:
        self.slow_calls += 1


class OutSeen(Actor):
    def __init__(self, context: ActorContext, seen: list[object]) -> None:
        super().__init__(context)
        self.seen = seen

    @handles(Out, Fast, immediate=True)
    def on_any(self, message: object) -> None:
        self.seen.append(message)


def test_a_deferred_call_that_raises_fails_its_actor_not_the_publisher() -> None:
    bus = Bus()
    reported: list[Failure] = []
    ref = LateBreaker.start(ctx("late", bus, lambda *args: reported.append(args)))
    seen: list[object] = []
    other = OutSeen.start(ctx("other", bus), seen)
    for name, r in (("late", ref), ("other", other)):
        bus.register(name, r, r.actor_class.subscriptions())
    bus.publish(Fast())  # must not raise in this (the publishing) thread
    # The other subscriber of Fast, after the failing one, still got it; so did Out.
    assert [type(m).__name__ for m in seen] == ["Out", "Fast"]
    wait_for(lambda: len(reported) == 1 and not ref.is_alive())
    assert reported[0][0] == "late" and isinstance(reported[0][1], ValueError)


def test_queued_messages_after_an_immediate_failure_are_not_handled() -> None:
    bus = Bus()
    reported: list[Failure] = []
    ref = LateBreaker.start(ctx("late", bus, lambda *args: reported.append(args)))
    bus.register("late", ref, LateBreaker.subscriptions())
    actor: LateBreaker = _instance(ref)
    ref.tell(Trigger())  # the actor's thread is busy with this
    ref.tell(Slow())  # queued behind it
    bus.publish(Fast())  # fails the actor from this thread meanwhile
    actor.gate.set()
    wait_for(lambda: len(reported) == 1 and not ref.is_alive())
    assert actor.slow_calls == 0  # not handled on what the failure may have left half-changed
