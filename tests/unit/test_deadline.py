"""sql.deadline: a driver call that does not answer in time is given up (and aborted); a stop cuts
the wait short; a call's time against its deadline says whether the database is ok, slow or hung."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.surface import DatabaseHealth
from sql.deadline import SLOW_SHARE, DeadlineExceeded, call_with_deadline, classify


def test_a_call_that_returns_gives_its_result() -> None:
    value, elapsed = call_with_deadline(lambda: 42, 10.0)
    assert value == 42 and elapsed >= 0.0


def test_what_the_call_raises_is_raised_in_the_caller() -> None:
    def refuse() -> None:
        raise ValueError("refused")

    aborted = threading.Event()
    with pytest.raises(ValueError, match="refused"):
        call_with_deadline(refuse, 10.0, abort=aborted.set)
    assert not aborted.is_set()


def test_a_call_past_its_deadline_is_aborted_and_given_up() -> None:
    release = threading.Event()  # the "server": answers only when aborted
    with pytest.raises(DeadlineExceeded) as raised:
        call_with_deadline(release.wait, 0.05, abort=release.set)
    assert release.is_set()  # abort was called
    assert not raised.value.stopping
    assert "hung" in str(raised.value)


def test_a_call_that_never_returns_is_abandoned() -> None:
    never = threading.Event()
    try:
        with pytest.raises(DeadlineExceeded):
            call_with_deadline(never.wait, 0.05)  # abort does nothing: the thread is left behind
    finally:
        never.set()


def test_a_stop_cuts_a_long_deadline_short() -> None:
    stopping = threading.Event()
    release = threading.Event()
    threading.Timer(0.05, stopping.set).start()
    with pytest.raises(DeadlineExceeded) as raised:
        # An hour's deadline: only the stop (and its grace) can end this wait.
        call_with_deadline(release.wait, 3600.0, abort=release.set, stopping=stopping, stop_grace_s=0.05)
    assert raised.value.stopping and release.is_set()
    assert "stopping" in str(raised.value)


def test_a_call_started_while_stopping_still_gets_its_grace() -> None:
    stopping = threading.Event()
    stopping.set()
    value, _ = call_with_deadline(lambda: "written", 3600.0, stopping=stopping)
    assert value == "written"


@given(st.floats(min_value=0.0, max_value=100.0), st.floats(min_value=0.01, max_value=60.0))
def test_health_from_the_time_a_write_took(elapsed: float, deadline: float) -> None:
    health = classify(elapsed, deadline)
    if elapsed >= deadline:
        assert health is DatabaseHealth.HUNG
    elif elapsed > SLOW_SHARE * deadline:
        assert health is DatabaseHealth.SLOW
    else:
        assert health is DatabaseHealth.OK
