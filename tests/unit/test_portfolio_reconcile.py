"""Reconciliation never goes back in time: a snapshot from the exchange is taken in as of when
the exchange took it (Deribit's usIn/usOut), whatever the order in which its answer and our fill
and order notifications arrive."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit.instruments import identity_of
from desk.portfolio import PortfolioBook, apply_fill
from messages.account import ExchangeState, ExchangeWindow, OrderUpdate, Position, UserTrade
from messages.market import InstrumentsLoaded
from tests.support.market import perpetual

FUTURE = "BTC-PERPETUAL"
_ids = itertools.count(1)


def fill(direction: str, amount: float, at_ms: int, price: float = 60_000.0, trade_id: str | None = None) -> UserTrade:
    return UserTrade(trade_id=trade_id or f"T{next(_ids)}", order_id="O1", instrument_name=FUTURE, timestamp=at_ms,
                     direction=direction, price=price, amount=amount, fee=0.0, fee_currency="BTC")  # type: ignore[arg-type]


def order(order_id: str, state: str, updated: int) -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=FUTURE, order_state=state, order_type="limit",
                       direction="buy", amount=10.0, price=59_000.0, creation_timestamp=1,
                       last_update_timestamp=updated)


def short(size: float, average: float = 60_000.0) -> Position:
    return Position(instrument_name=FUTURE, kind="future", direction="sell" if size < 0 else "buy", size=size,
                    average_price=average)


def window(at_ms: int, length_us: int = 300) -> ExchangeWindow:
    """The exchange took the answer from ``at_ms`` ms (+500 µs) for ``length_us``."""
    return ExchangeWindow(received_us=at_ms * 1000 + 500, sent_us=at_ms * 1000 + 500 + length_us)


def state(positions: tuple[Position, ...], taken_ms: int, orders: tuple[OrderUpdate, ...] = (), number: int = 1,
          at: float = 100.0) -> ExchangeState:
    return ExchangeState(currency="BTC", positions=positions, open_orders=orders, summary=None, at=at,
                         reason="test", round=number, positions_window=window(taken_ms),
                         orders_window=window(taken_ms), requested_at=at - 0.5)


def size(book: PortfolioBook) -> float:
    position = book.accounts["BTC"].positions.get(FUTURE)
    return position.size if position is not None else 0.0


# -- fills --------------------------------------------------------------------------------------
def test_a_snapshot_taken_before_our_fill_keeps_the_fill() -> None:
    # The race: the answer was delayed, the hedge filled (and was applied) meanwhile;
    # the snapshot still holds the position from before the hedge.
    book = PortfolioBook(("BTC",))
    book.on_trade(fill("sell", 61_580.0, at_ms=1_000))
    book.reconcile_started("BTC", 1)
    hedge = fill("sell", 18_180.0, at_ms=2_000)
    book.on_trade(hedge)
    outcome = book.reconcile(state((short(-61_580.0),), taken_ms=1_500))
    assert outcome.applied and outcome.replayed_fills == 1 and outcome.differences == []
    assert size(book) == -79_760.0  # not -61,580: the picture did not go back in time
    picture = book.accounts["BTC"].snapshot(100.0)
    assert picture.reconciled and not picture.reconciling and hedge.trade_id in picture.recent_trade_ids
    assert picture.reconcile_requested_at == 99.5


def test_a_late_notification_of_a_fill_the_snapshot_holds_is_not_applied_twice() -> None:
    book = PortfolioBook(("BTC",))
    book.reconcile(state((short(-10.0),), taken_ms=2_000))
    late = fill("sell", 10.0, at_ms=1_900)  # stamped before the snapshot: it should be in it
    assert book.on_trade(late) == "BTC"
    account = book.accounts["BTC"]
    # Not applied twice, and not taken on trust either: in doubt until a snapshot says.
    assert size(book) == -10.0 and not account.reconciled and "came only after a snapshot" in account.doubt
    book.reconcile_started("BTC", 2)
    assert book.reconcile(state((short(-10.0),), taken_ms=2_050, number=2)).applied
    assert account.reconciled and not account.doubt
    book.on_trade(late)  # a duplicate: nothing
    book.on_trade(fill("sell", 10.0, at_ms=2_100))  # after it: applied
    assert size(book) == -20.0 and account.reconciled


def test_a_snapshot_that_already_holds_fills_stamped_after_it_is_discarded() -> None:
    # The exchange's times and its positions disagree (a fill stamped late): replaying it would
    # count it twice. The snapshot is asked for again instead.
    book = PortfolioBook(("BTC",))
    book.reconcile(state((), taken_ms=1_000))
    book.reconcile_started("BTC", 2)
    book.on_trade(fill("sell", 10.0, at_ms=3_000))
    outcome = book.reconcile(state((short(-10.0),), taken_ms=2_000, number=2))
    assert not outcome.applied and "already holds 1 fill" in outcome.doubt and size(book) == -10.0


def test_a_fill_stamped_while_the_exchange_answered_discards_the_snapshot() -> None:
    book = PortfolioBook(("BTC",))
    book.reconcile(state((), taken_ms=1_000))
    book.reconcile_started("BTC", 2)
    book.on_trade(fill("buy", 10.0, at_ms=2_000))  # in [usIn, usOut] of the next answer: in it or not?
    before = book.accounts["BTC"].snapshot(0.0)
    outcome = book.reconcile(state((short(10.0),), taken_ms=2_000, number=2))
    assert not outcome.applied and "while the exchange was taking its positions" in outcome.doubt
    assert book.accounts["BTC"].snapshot(0.0).positions == before.positions  # nothing taken in


def test_a_late_fill_inside_the_window_makes_the_picture_doubtful() -> None:
    book = PortfolioBook(("BTC",))
    book.reconcile(state((short(10.0),), taken_ms=2_000))
    book.on_trade(fill("buy", 10.0, at_ms=2_000))
    account = book.accounts["BTC"]
    assert account.doubt and not account.reconciled and size(book) == 10.0
    book.reconcile_started("BTC", 2)
    assert book.reconcile(state((short(20.0),), taken_ms=3_000, number=2)).applied
    assert not account.doubt and account.reconciled and size(book) == 20.0


def test_without_exchange_times_fills_during_the_fetch_discard_the_snapshot() -> None:
    book = PortfolioBook(("BTC",))
    untimed = ExchangeState(currency="BTC", positions=(short(10.0),), open_orders=(), summary=None, at=1.0, round=1)
    book.reconcile_started("BTC", 1)
    book.on_trade(fill("buy", 10.0, at_ms=1_000))
    assert not book.reconcile(untimed).applied
    book.reconcile_started("BTC", 2)
    assert book.reconcile(msgspec.structs.replace(untimed, round=2, positions=(short(20.0),))).applied
    assert size(book) == 20.0


# -- orders -------------------------------------------------------------------------------------
def test_order_states_newer_than_the_snapshot_are_kept() -> None:
    book = PortfolioBook(("BTC",))
    book.on_order(order("A", "open", updated=1_000))
    book.on_order(order("B", "open", updated=1_000))
    book.on_order(order("B", "cancelled", updated=2_500))  # closed after the snapshot was taken
    book.on_order(order("C", "open", updated=2_600))  # placed after it
    book.on_order(order("D", "open", updated=900))  # closed before it, and we missed the close
    snapshot = state((), taken_ms=2_000, orders=(order("A", "open", 1_000), order("B", "open", 1_000)))
    outcome = book.reconcile(snapshot)
    assert sorted(book.accounts["BTC"].orders) == ["A", "C"]
    assert outcome.kept_orders == 2
    # A late notification of D's open state, older than the snapshot: the snapshot knows better.
    assert book.on_order(order("D", "open", updated=950)) is None
    assert "D" not in book.accounts["BTC"].orders


# -- any order of arrival -----------------------------------------------------------------------
@given(
    moves=st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 50)), min_size=1, max_size=12),
    started_at=st.integers(0, 12),
    taken_later=st.integers(0, 12),
    answer_later=st.integers(0, 12),
    in_window=st.booleans(),
    duplicates=st.booleans(),
)
def test_any_order_of_arrival_ends_at_the_exchange_position(moves: list[tuple[str, int]], started_at: int,
                                                            taken_later: int, answer_later: int, in_window: bool,
                                                            duplicates: bool) -> None:
    # The exchange fills our orders at 1,000 ms, 1,010 ms, ...; our requests go out after
    # ``started_at`` of the notifications came, which arrive in order; the exchange takes its
    # snapshot after that many of its fills or more (``taken_later``; with ``in_window``, while
    # one of them is stamped); the answer reaches the Portfolio after ``answer_later`` more
    # notifications.
    fills = [fill(side, amount * 10.0, at_ms=1_000 + 10 * i) for i, (side, amount) in enumerate(moves)]
    started_at = min(started_at, len(fills))
    taken_after = min(started_at + taken_later, len(fills))
    answer_at = min(started_at + answer_later, len(fills))
    taken_ms = 1_000 + 10 * taken_after - (0 if in_window and taken_after < len(fills) else 5)
    truth: Position | None = None
    for f in fills:
        if (f.timestamp + 1) * 1000 <= window(taken_ms).received_us:
            truth, _ = apply_fill(truth, f, identity_of(perpetual()))
    snapshot = state((truth,) if truth is not None else (), taken_ms=taken_ms)
    book = PortfolioBook(("BTC",))
    book.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),)))
    for i, f in enumerate(fills):
        if i == started_at:
            book.reconcile_started("BTC", 1)
        if i == answer_at:
            book.reconcile(snapshot)
        book.on_trade(f)
        if duplicates:
            book.on_trade(f)
    if started_at == len(fills):
        book.reconcile_started("BTC", 1)
    if answer_at == len(fills):
        book.reconcile(snapshot)
    account = book.accounts["BTC"]
    final: Position | None = None
    for f in fills:
        final, _ = apply_fill(final, f)
    if account.doubt or not account.reconciled:
        # It knows it cannot tell: a fresh snapshot, taken after every fill, settles it.
        book.reconcile_started("BTC", 2)
        fresh = state((final,) if final is not None else (), taken_ms=10_000, number=2)
        assert book.reconcile(fresh).applied
    assert account.reconciled
    assert size(book) == pytest.approx(final.size if final is not None else 0.0)
