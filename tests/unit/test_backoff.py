"""The one backoff (runtime.throttle): the Connection's reconnects (jittered), the supervisor's
restarts and the Recorder's database retries (deterministic), and retry_delay."""

from __future__ import annotations

import random

import pytest

from runtime.throttle import Backoff, doubling, retry_delay


def test_without_jitter_the_delay_doubles_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 3.0, jitter=False)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_with_jitter_each_delay_lies_between_half_the_initial_and_the_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    for attempt in range(10):
        assert 0.25 <= backoff.next_delay() <= doubling(0.5, 4.0, attempt)


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(1.0, 30.0, jitter=False)
    backoff.attempt = 5000  # 2 ** 5000 seconds is no float
    assert backoff.next_delay() == 30.0
    assert retry_delay(5000, 1.0, 30.0) == 30.0


def test_retry_delay_is_the_same_doubling_counted_from_one_failure() -> None:
    backoff = Backoff(0.25, 5.0, jitter=False)
    assert [retry_delay(n, 0.25, 5.0) for n in range(1, 8)] == [backoff.next_delay() for _ in range(7)]


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_cannot_work_is_refused(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial, maximum, jitter=False)
