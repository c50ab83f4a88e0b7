"""Minute ticks and the 08:00 UTC rollover under the replay clock: jumps, midnight, exactly once."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.system import DailyRollover, MinuteTick
from runtime.schedule import Schedule, parse_hhmm


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_one_tick_per_full_minute_in_order() -> None:
    s = Schedule(ts("2026-01-05T10:00:30"))
    assert s.advance(ts("2026-01-05T10:00:59")) == []
    assert s.advance(ts("2026-01-05T10:01:00")) == [MinuteTick(at=ts("2026-01-05T10:01:00"))]
    assert s.advance(ts("2026-01-05T10:01:00")) == []  # exactly once
    assert s.advance(ts("2026-01-05T10:01:30")) == []


def test_a_jump_over_several_minutes_emits_each_minute() -> None:
    s = Schedule(ts("2026-01-05T10:00:30"))
    events = s.advance(ts("2026-01-05T10:05:10"))
    assert [e.at for e in events] == [ts(f"2026-01-05T10:0{m}:00") for m in range(1, 6)]
    assert all(isinstance(e, MinuteTick) for e in events)


def test_time_going_backwards_emits_nothing() -> None:
    s = Schedule(ts("2026-01-05T10:00:30"))
    s.advance(ts("2026-01-05T10:02:00"))
    assert s.advance(ts("2026-01-05T10:01:00")) == []
    assert s.advance(ts("2026-01-05T10:02:30")) == []


def test_rollover_at_0800_after_that_minutes_tick() -> None:
    s = Schedule(ts("2026-01-05T07:59:10"))
    events = s.advance(ts("2026-01-05T08:00:00.5"))
    assert events == [MinuteTick(at=ts("2026-01-05T08:00:00")),
                      DailyRollover(at=ts("2026-01-05T08:00:00"), day="2026-01-05")]


def test_jump_across_midnight_and_two_rollovers() -> None:
    s = Schedule(ts("2026-01-05T07:00:00"))
    events = s.advance(ts("2026-01-07T07:00:00"))
    rollovers = [e for e in events if isinstance(e, DailyRollover)]
    ticks = [e for e in events if isinstance(e, MinuteTick)]
    assert [r.day for r in rollovers] == ["2026-01-05", "2026-01-06"]
    assert len(ticks) == 2 * 24 * 60
    assert MinuteTick(at=ts("2026-01-06T00:00:00")) in ticks
    times = [e.at for e in events]
    assert times == sorted(times)


def test_configurable_rollover_time() -> None:
    s = Schedule(ts("2026-01-05T23:58:00"), rollover_utc="00:00")
    events = s.advance(ts("2026-01-06T00:01:00"))
    assert DailyRollover(at=ts("2026-01-06T00:00:00"), day="2026-01-06") in events


@pytest.mark.parametrize("bad", ["8", "8am", "24:00", "08:60", "x:y"])
def test_bad_rollover_time_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(bad)


@given(start=st.floats(1.6e9, 1.7e9), steps=st.lists(st.floats(0, 4000), min_size=1, max_size=30))
def test_any_path_through_time_gives_each_minute_exactly_once(start: float, steps: list[float]) -> None:
    s = Schedule(start)
    now = start
    seen: list[float] = []
    for step in steps:
        now += step
        seen += [e.at for e in s.advance(now) if isinstance(e, MinuteTick)]
    expected = [m * 60.0 for m in range(int(start // 60) + 1, int(now // 60) + 1)]
    assert seen == expected
