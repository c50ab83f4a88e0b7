"""Watched option tops (``WatchOptionTops``): an option family that does not publish its tops
publishes those of the options a watcher named, at once and on every change, until no watcher
names them; the Assistant watches its plan's legs while it works the plan, and nothing after."""

from __future__ import annotations

from typing import Any

from desk.book_family import BookFamily
from desk.plan_worker import ORIGIN, PlanWorker
from messages.exposure import CancelPlan, ExposurePlan, Greek, GreekFigures, PlanLeg, WorkPlan
from messages.market import BookChange, BookSnapshot
from messages.state import TopOfBook, WatchOptionTops

CALL = "BTC-24SEP21-40000-C"
PUT = "BTC-24SEP21-30000-P"
T0 = 1_626_993_720.0


def snap(name: str, change_id: int, bid: float = 0.01, ask: float = 0.02) -> BookSnapshot:
    return BookSnapshot(instrument_name=name, timestamp=change_id, change_id=change_id,
                        bids=(("new", bid, 1.0),), asks=(("new", ask, 2.0),))


def top_change(name: str, prev: int, change_id: int, bid: float) -> BookChange:
    return BookChange(instrument_name=name, timestamp=change_id, change_id=change_id, prev_change_id=prev,
                      bids=(("new", bid, 1.0),))


def tops(messages: tuple[Any, ...]) -> list[tuple[str, float | None]]:
    return [(m.instrument_name, m.bid) for m in messages if isinstance(m, TopOfBook)]


def test_only_watched_options_publish_their_tops_until_unwatched() -> None:
    family = BookFamily("BTC", "option", publish_top=False)
    assert family.on_snapshot(snap(CALL, 10), T0) == ()
    assert family.on_snapshot(snap(PUT, 20), T0) == ()
    # Watching gives the current top at once, then every change of it; the other stays quiet.
    assert tops(family.watch("assistant", (CALL,), T0)) == [(CALL, 0.01)]
    assert tops(family.on_change(top_change(CALL, 10, 11, 0.015), T0 + 1)) == [(CALL, 0.015)]
    assert family.on_change(top_change(PUT, 20, 21, 0.012), T0 + 1) == ()
    # Another watcher adds its own; watching the same again gives nothing new at once.
    assert tops(family.watch("console", (PUT,), T0 + 2)) == [(PUT, 0.012)]
    assert family.watch("assistant", (CALL,), T0 + 2) == ()
    # Unwatched by one: the other's still published.
    family.watch("assistant", (), T0 + 3)
    assert family.on_change(top_change(CALL, 11, 12, 0.016), T0 + 3) == ()
    assert tops(family.on_change(top_change(PUT, 21, 22, 0.013), T0 + 3)) == [(PUT, 0.013)]
    # A stale book of a watched option is said at once (its last top said fresh).
    out = family.on_change(top_change(PUT, 99, 100, 0.014), T0 + 4)
    assert [(m.instrument_name, m.stale) for m in out if isinstance(m, TopOfBook)] == [(PUT, True)]


def test_an_option_listed_after_the_watch_is_watched_from_its_first_book() -> None:
    family = BookFamily("BTC", "option", publish_top=False)
    assert family.watch("assistant", (CALL,), T0) == ()
    assert tops(family.on_snapshot(snap(CALL, 10), T0 + 1)) == [(CALL, 0.01)]


def test_the_worker_watches_its_legs_while_it_works_and_nothing_after() -> None:
    out: list[object] = []

    class Log:
        def info(self, event: str, **fields: Any) -> None: ...

        def warning(self, event: str, **fields: Any) -> None: ...

    worker = PlanWorker(out.append, Log())
    leg = PlanLeg(leg=1, instrument_name=CALL, side="buy", amount=1.0, bid=0.01, ask=0.02, mid=0.015,
                  underlying_price=40000.0, greeks=GreekFigures(), cost_usd=0.0)
    plan = ExposurePlan(plan_id=3, currency="BTC", greek=Greek.VEGA, target=1.0, at=T0, expires_at=T0 + 60,
                        legs=(leg, PlanLeg(**{**{f: getattr(leg, f) for f in leg.__struct_fields__},
                                              "leg": 2, "instrument_name": PUT, "side": "sell"})))
    worker.start(WorkPlan(plan=plan, origin="console", request_key="c"), T0)
    watches = [m for m in out if isinstance(m, WatchOptionTops)]
    assert watches == [WatchOptionTops(currency="BTC", names=(CALL, PUT), origin=ORIGIN)]
    worker.on_minute(T0 + 60)
    assert len([m for m in out if isinstance(m, WatchOptionTops)]) == 2  # again: a keeper may have restarted
    worker.cancel(CancelPlan(origin="console", request_key="k"), T0 + 61)  # nothing open: cancelled at once
    assert [m for m in out if isinstance(m, WatchOptionTops)][-1].names == ()


def test_a_refresh_confirms_the_current_tops_of_what_is_already_watched() -> None:
    family = BookFamily("BTC", "option", publish_top=False)
    family.on_snapshot(snap(CALL, 10), T0)
    family.on_snapshot(snap(PUT, 20), T0)
    assert tops(family.watch("assistant", (CALL, PUT), T0)) == [(CALL, 0.01), (PUT, 0.01)]
    assert family.watch("assistant", (CALL, PUT), T0 + 9) == ()
    # A quiet book's top is confirmed on request, stamped now.
    again = family.watch("assistant", (CALL,), T0 + 9, refresh=True)
    assert [(m.instrument_name, m.at) for m in again if isinstance(m, TopOfBook)] == [(CALL, T0 + 9)]
    # A keeper restarted since holds no book yet: nothing to confirm.
    assert BookFamily("BTC", "option", publish_top=False).watch("assistant", (CALL,), T0 + 9, refresh=True) == ()
