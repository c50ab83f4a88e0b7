"""The bus: fan-out by type, subclass routing, removal, order per publisher, dead actors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pykka
import pytest

from messages.base import Message
from messages.system import DailyRollover, MinuteTick, SafeShutdown, Shutdown
from runtime.actor import Actor, ActorContext, handles
from runtime.bus import Bus
from runtime.clock import WallClock


class Seq(Message, frozen=True, kw_only=True):
    publisher: int
    n: int


class Recorder(Actor):
    def __init__(self, context: ActorContext, seen: list[object], done: threading.Event | None = None,
                 expect: int = 0) -> None:
        super().__init__(context)
        self.seen = seen
        self.done = done
        self.expect = expect

    def _note(self, message: object) -> None:
        self.seen.append(message)
        if self.done is not None and len(self.seen) >= self.expect:
            self.done.set()

    @handles(MinuteTick, Seq)
    def on_message(self, message: object) -> None:
        self._note(message)


class EverythingRecorder(Recorder):
    @handles(Message)
    def on_any(self, message: object) -> None:
        self._note(message)


def ctx(name: str, bus: Bus) -> ActorContext:
    return ActorContext(name=name, clock=WallClock(), settings=None, publish=bus.publish)


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def test_fan_out_to_every_subscriber_of_the_type() -> None:
    bus = Bus()
    a_seen: list[object] = []
    b_seen: list[object] = []
    a = Recorder.start(ctx("a", bus), a_seen)
    b = Recorder.start(ctx("b", bus), b_seen)
    bus.register("a", a, Recorder.subscriptions())
    bus.register("b", b, Recorder.subscriptions())
    tick = MinuteTick(at=60.0)
    bus.publish(tick)
    bus.publish(Shutdown())  # nobody subscribed: dropped, cheaply
    a.stop()
    b.stop()
    assert a_seen == [tick] and b_seen == [tick]


def test_subscribing_to_a_base_class_receives_subclasses() -> None:
    bus = Bus()
    seen: list[object] = []
    ref = EverythingRecorder.start(ctx("all", bus), seen)
    bus.register("all", ref, EverythingRecorder.subscriptions())
    msgs = [MinuteTick(at=60.0), DailyRollover(at=28800.0, day="1970-01-01"), SafeShutdown(reason="x")]
    for m in msgs:
        bus.publish(m)
    ref.stop()
    assert seen == msgs


def test_unregister_removes_routes() -> None:
    bus = Bus()
    seen: list[object] = []
    ref = Recorder.start(ctx("a", bus), seen)
    bus.register("a", ref, Recorder.subscriptions())
    bus.publish(MinuteTick(at=60.0))
    bus.unregister("a")
    bus.publish(MinuteTick(at=120.0))
    ref.stop()
    assert seen == [MinuteTick(at=60.0)]
    assert bus.subscribers(MinuteTick) == ()


def test_reregistering_a_name_replaces_the_old_actor() -> None:
    bus = Bus()
    old_seen: list[object] = []
    new_seen: list[object] = []
    old = Recorder.start(ctx("a", bus), old_seen)
    bus.register("a", old, Recorder.subscriptions())
    bus.publish(MinuteTick(at=60.0))
    new = Recorder.start(ctx("a", bus), new_seen)
    bus.register("a", new, Recorder.subscriptions())
    bus.publish(MinuteTick(at=120.0))
    old.stop()
    new.stop()
    assert old_seen == [MinuteTick(at=60.0)]
    assert new_seen == [MinuteTick(at=120.0)]


def test_publishing_to_a_dead_actor_does_not_raise() -> None:
    bus = Bus()
    ref = Recorder.start(ctx("a", bus), [])
    bus.register("a", ref, Recorder.subscriptions())
    ref.stop()
    bus.publish(MinuteTick(at=60.0))


def test_order_is_preserved_per_publisher_across_threads() -> None:
    bus = Bus()
    seen: list[Seq] = []
    done = threading.Event()
    per_publisher = 2000
    ref = Recorder.start(ctx("a", bus), seen, done, 4 * per_publisher)
    bus.register("a", ref, Recorder.subscriptions())

    def publish(p: int) -> None:
        for n in range(per_publisher):
            bus.publish(Seq(publisher=p, n=n))

    threads = [threading.Thread(target=publish, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done.wait(10)
    ref.stop()
    for p in range(4):
        assert [m.n for m in seen if m.publisher == p] == list(range(per_publisher))


def test_registration_while_publishing_is_safe() -> None:
    bus = Bus()
    stop = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            while not stop.is_set():
                bus.publish(MinuteTick(at=1.0))
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    t = threading.Thread(target=publish)
    t.start()
    refs = []
    for i in range(50):
        ref = Recorder.start(ctx(f"r{i}", bus), [])
        refs.append(ref)
        bus.register(f"r{i}", ref, Recorder.subscriptions())
        if i % 3 == 0:
            bus.unregister(f"r{i}")
    stop.set()
    t.join()
    assert errors == []
    assert set(bus.members()) == {f"r{i}" for i in range(50) if i % 3}


# -- keyed routes: a subscriber that takes only its key of a type ---------------------------------
class Tagged(Message, frozen=True, kw_only=True):
    tag: str
    n: int = 0


def tag_of(message: Tagged) -> str:
    return message.tag


class KeyedRecorder(Recorder):
    route_by: ClassVar[dict[type, Callable[[Any], Any]]] = {Tagged: tag_of}

    def __init__(self, context: ActorContext, seen: list[object], key: str) -> None:
        super().__init__(context, seen)
        self.route_key = key

    @handles(Tagged)
    def on_tagged(self, message: object) -> None:
        self._note(message)


class OtherKeying(KeyedRecorder):
    route_by: ClassVar[dict[type, Callable[[Any], Any]]] = {Tagged: lambda m: m.tag.upper()}


class TaggedRecorder(Recorder):
    @handles(Tagged)
    def on_tagged(self, message: object) -> None:
        self._note(message)


def test_keyed_subscribers_get_only_their_key_and_the_others_everything() -> None:
    bus = Bus()
    a_seen: list[object] = []
    b_seen: list[object] = []
    all_seen: list[object] = []
    a = KeyedRecorder.start(ctx("a", bus), a_seen, "a")
    b = KeyedRecorder.start(ctx("b", bus), b_seen, "b")
    every = TaggedRecorder.start(ctx("all", bus), all_seen)
    for name, ref in (("a", a), ("b", b), ("all", every)):
        bus.register(name, ref, ref.actor_class.subscriptions())
    sent = [Tagged(tag=tag, n=n) for n, tag in enumerate("abcab")]
    for message in sent:
        bus.publish(message)
    tick = MinuteTick(at=60.0)  # not keyed: every subscriber of the type
    bus.publish(tick)
    for ref in (a, b, every):
        ref.stop()
    assert a_seen == [m for m in sent if m.tag == "a"] + [tick]
    assert b_seen == [m for m in sent if m.tag == "b"] + [tick]
    assert all_seen == [*sent, tick]  # a key nobody takes still reaches the unkeyed ones, in order
    assert set(bus.subscribers(Tagged)) == {a, b, every}


def test_subscribers_keying_a_type_in_different_ways_are_refused() -> None:
    bus = Bus()
    a = KeyedRecorder.start(ctx("a", bus), [], "a")
    b = OtherKeying.start(ctx("b", bus), [], "b")
    bus.register("a", a, KeyedRecorder.subscriptions())
    bus.register("b", b, OtherKeying.subscriptions())
    with pytest.raises(ValueError, match="key it in different ways"):
        bus.publish(Tagged(tag="a"))
