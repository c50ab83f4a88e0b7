"""The Alarm: one thread that rings once the deadline set last is reached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from runtime.alarm import Alarm, ClockAlarm

LATE = 0.5  # generous: how late a ring may be on a loaded machine


class Rings:
    """Records when ``ring`` was called; ``on_ring`` runs inside it (in the alarm's thread)."""

    def __init__(self, on_ring: Callable[[int], None] | None = None) -> None:
        self.times: list[float] = []
        self.threads: list[int] = []
        self.on_ring = on_ring
        self.rung = threading.Condition()

    def __call__(self) -> None:
        with self.rung:
            self.times.append(time.monotonic())
            self.threads.append(threading.get_ident())
            self.rung.notify_all()
        if self.on_ring is not None:
            self.on_ring(len(self.times))

    def wait(self, count: int, timeout: float = 3.0) -> bool:
        with self.rung:
            return self.rung.wait_for(lambda: len(self.times) >= count, timeout)


@pytest.fixture
def alarms() -> Iterator[list[Alarm]]:
    made: list[Alarm] = []
    yield made
    for alarm in made:
        # From a helper thread: a broken alarm that rings holding its lock must fail the test, not hang it.
        closer = threading.Thread(target=alarm.close, daemon=True)
        closer.start()
        closer.join(1)


def make(alarms: list[Alarm], rings: Rings) -> Alarm:
    alarm = Alarm(rings, name="test-alarm")
    alarms.append(alarm)
    return alarm


def test_rings_once_at_the_deadline_in_its_own_thread(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    assert alarm.due is None
    due = time.monotonic() + 0.15
    alarm.set(due)
    assert alarm.due == due
    assert rings.wait(1)
    assert due <= rings.times[0] < due + LATE
    assert rings.threads[0] == alarm._thread.ident != threading.get_ident()
    assert alarm.due is None
    time.sleep(0.2)
    assert len(rings.times) == 1


def test_a_past_deadline_rings_at_once(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    start = time.monotonic()
    alarm.set(start - 1.0)
    assert rings.wait(1)
    assert rings.times[0] - start < LATE


def test_a_later_set_postpones_the_deadline(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    now = time.monotonic()
    alarm.set(now + 0.05)
    later = now + 0.35
    alarm.set(later)
    assert alarm.due == later
    assert rings.wait(1)
    assert later <= rings.times[0] < later + LATE
    time.sleep(0.1)
    assert len(rings.times) == 1


def test_a_later_set_brings_the_deadline_forward(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    now = time.monotonic()
    first = now + 0.5
    alarm.set(first)
    time.sleep(0.02)  # the alarm thread is waiting for the first deadline
    earlier = now + 0.1
    alarm.set(earlier)
    assert rings.wait(1)
    assert earlier <= rings.times[0] < first
    time.sleep(max(0.0, first + 0.15 - time.monotonic()))
    assert len(rings.times) == 1  # the replaced deadline does not ring as well


def test_clear_prevents_the_ring(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    alarm.set(time.monotonic() + 0.1)
    alarm.clear()
    assert alarm.due is None
    assert not rings.wait(1, timeout=0.3)
    # It still works after a clear.
    due = time.monotonic() + 0.05
    alarm.set(due)
    assert rings.wait(1)
    assert rings.times[0] >= due


def test_close_ends_the_thread_without_ringing(alarms: list[Alarm]) -> None:
    rings = Rings()
    alarm = make(alarms, rings)
    alarm.set(time.monotonic() + 0.1)
    alarm.close()
    alarm._thread.join(1)
    assert not alarm._thread.is_alive()
    time.sleep(0.15)
    assert rings.times == []


def test_close_of_an_idle_alarm_ends_the_thread(alarms: list[Alarm]) -> None:
    alarm = make(alarms, Rings())
    assert alarm._thread.is_alive()
    alarm.close()
    alarm._thread.join(1)
    assert not alarm._thread.is_alive()


def test_ring_may_set_the_next_deadline(alarms: list[Alarm]) -> None:
    holder: list[Alarm] = []
    gap = 0.1

    def rearm(count: int) -> None:
        if count < 3:
            holder[0].set(time.monotonic() + gap)

    rings = Rings(rearm)
    alarm = make(alarms, rings)
    holder.append(alarm)
    alarm.set(time.monotonic() + 0.02)
    assert rings.wait(3)
    first, second, third = rings.times
    assert second - first >= gap and third - second >= gap
    time.sleep(0.15)
    assert len(rings.times) == 3
    assert alarm.due is None


def test_a_clock_alarm_keeps_the_earliest_deadline_until_it_rang() -> None:
    rang = threading.Event()
    alarm = ClockAlarm(rang.set, name="test-clock-alarm")
    try:
        alarm.arm(100.5, now=100.0)
        alarm.arm(200.0, now=100.0)  # later: the earlier deadline stands
        assert alarm.due == 100.5
        assert rang.wait(5.0)
        alarm.rang()
        assert alarm.due is None
        alarm.arm(300.0, now=100.0)  # after the wake-up any deadline is set again
        assert alarm.due == 300.0
    finally:
        alarm.close()
