"""The SubscriptionTracker's two lanes: the full subscription and the book resyncs (issue 17)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deribit.subscriptions import SubscriptionTracker


def test_a_resync_is_neither_sent_nor_awaited_by_the_full_subscription() -> None:
    tracker = SubscriptionTracker(batch_size=2)
    tracker.want(["a", "b", "c"])
    tracker.sent(1, tracker.next_batch())
    assert not tracker.resync("a")  # in flight: its answer's snapshot is coming anyway
    tracker.answered(1, ["a", "b"])
    assert not tracker.resync("c") and not tracker.resync("x")  # not subscribed yet / not wanted
    assert tracker.resync("a") and not tracker.resync("a")  # once per resync
    assert tracker.next_resync_batch() == ()  # not before its unsubscribe answered
    tracker.forget(["a"])  # unsubscribed
    assert tracker.next_batch() == ("c",)  # the full subscription leaves "a" to the resync
    tracker.sent(2, ("c",))
    tracker.answered(2, ["c"])
    assert tracker.complete and tracker.counts() == (3, 3)  # done, with "a" still being resynced
    assert tracker.next_resync_batch() == ("a",)
    tracker.resync_sent(3, ("a",))
    assert tracker.next_resync_batch() == ()  # in flight
    assert tracker.resync_answered(3, []) == (("a",), ()) and tracker.resync_failures == 1
    assert tracker.next_resync_batch() == ("a",)  # refused: asked again
    tracker.resync_sent(4, ("a",))
    assert tracker.resync_failed(4) == ("a",) and tracker.resync_failures == 2 and tracker.failures == 0
    tracker.resync_sent(5, ("a",))
    assert tracker.resync_answered(5, ["a"]) == ((), ()) and tracker.resync_failures == 0
    assert tracker.resyncing == set() and tracker.confirmed == {"a", "b", "c"}
    # Dropped while being resynced: no longer wanted, nothing left to resync; a reconnect clears every lane.
    assert tracker.resync("b")
    assert tracker.drop(["b"]) == {"b"} and tracker.resyncing == set()
    assert tracker.resync("c")
    tracker.resync_sent(6, ("c",))
    tracker.reset()
    assert (tracker.resyncing, tracker.resync_in_flight, tracker.confirmed) == (set(), {}, set())
    assert tracker.next_batch() == ("a", "c")


OPS = st.lists(st.tuples(st.sampled_from(["full", "answer", "resync", "unsubscribed", "resync_send",
                                          "resync_answer", "drop", "want"]),
                         st.sampled_from("abcdef")), max_size=60)


@settings(max_examples=500)
@given(OPS)
def test_the_two_lanes_never_overlap_and_complete_means_every_wanted_channel_was_subscribed(
        ops: list[tuple[str, str]]) -> None:
    tracker = SubscriptionTracker(batch_size=3)
    tracker.want("abcd")
    ids = iter(range(1, 1000))
    for op, channel in ops:
        match op:
            case "full":
                if batch := tracker.next_batch():
                    tracker.sent(next(ids), batch)
            case "answer":
                if tracker.in_flight:
                    rid = min(tracker.in_flight)
                    tracker.answered(rid, tracker.in_flight[rid])
            case "resync":
                tracker.resync(channel)
            case "unsubscribed":
                if channel in tracker.resyncing:
                    tracker.forget([channel])
            case "resync_send":
                if batch := tracker.next_resync_batch():
                    tracker.resync_sent(next(ids), batch)
            case "resync_answer":
                if tracker.resync_in_flight:
                    rid = min(tracker.resync_in_flight)
                    tracker.resync_answered(rid, tracker.resync_in_flight[rid])
            case "drop":
                tracker.drop([channel])
            case "want":
                tracker.want([channel])
        # What each lane would send next: never the same channel, never one already subscribed.
        full, resync = set(tracker.next_batch()), set(tracker.next_resync_batch())
        assert not full & resync and not (full | resync) & tracker.confirmed
        assert not full & tracker.resyncing and resync <= tracker.resyncing <= tracker.wanted
        assert tracker.complete == (tracker.wanted <= tracker.confirmed | tracker.resyncing)
        done, wanted = tracker.counts()
        assert done <= wanted and (done == wanted) == tracker.complete
