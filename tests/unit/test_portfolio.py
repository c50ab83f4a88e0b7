"""Portfolio bookkeeping: positions from fills (Deribit's conventions), the order life cycle,
marks, reconciliation differences and expiry."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deribit.instruments import currency_of, identity_of, kind_of
from desk.portfolio import PortfolioBook, Session, apply_fill, with_mark
from messages.account import AccountSummary, ExchangeState, OrderUpdate, PortfolioUpdate, Position, UserTrade
from messages.market import Greeks, InstrumentsLoaded, Ticker
from simulator.accounts import Position as SimPosition
from simulator.listing import InstrumentSpec
from tests.support.contracts import inverse_option, inverse_perpetual

OPTION = "BTC-24SEP21-40000-C"
FUTURE = "BTC-PERPETUAL"
_ids = itertools.count(1)
OPTION_ID = identity_of(inverse_option(OPTION, dt.date(2021, 9, 24), 40_000.0))
FUTURE_ID = identity_of(inverse_perpetual())
IDS = {OPTION: OPTION_ID, FUTURE: FUTURE_ID}


def book_with_metadata() -> PortfolioBook:
    book = PortfolioBook(("BTC",))
    book.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(
        inverse_option(OPTION, dt.date(2021, 9, 24), 40_000.0), inverse_perpetual())))
    return book


def fills(name: str, *moves: tuple[str, float, float]) -> tuple[Position | None, Session | None]:
    """A position built by fills (direction, amount, price) with its instrument's metadata."""
    position: Position | None = None
    session: Session | None = None
    for direction, amount, price in moves:
        position, session = apply_fill(position, trade(name, direction, amount, price), IDS[name], session)
    return position, session


def trade(name: str, direction: str, amount: float, price: float, trade_id: str | None = None,
          mark: float | None = None) -> UserTrade:
    return UserTrade(
        trade_id=trade_id or f"T{next(_ids)}",
        order_id="O1",
        instrument_name=name,
        timestamp=1,
        direction=direction,  # type: ignore[arg-type]
        price=price,
        amount=amount,
        fee=0.0,
        fee_currency="BTC",
        mark_price=mark,
    )


def order(order_id: str, state: str, updated: int = 1, filled: float = 0.0, name: str = OPTION) -> OrderUpdate:
    return OrderUpdate(
        order_id=order_id,
        instrument_name=name,
        order_state=state,
        order_type="limit",
        direction="buy",
        amount=1.0,
        price=0.05,
        filled_amount=filled,
        creation_timestamp=1,
        last_update_timestamp=updated,
    )


def test_names() -> None:
    assert currency_of("ETH-30JUL21-2800-C") == "ETH" and currency_of("BTC_USDC-PERPETUAL") == "BTC_USDC"
    assert kind_of(OPTION) == "option" and kind_of(FUTURE) == "future" and kind_of("BTC-24SEP21") == "future"


def test_option_average_is_amount_weighted_and_a_flip_opens_at_the_fill_price() -> None:
    position, session = fills(OPTION, ("buy", 1.0, 0.05), ("buy", 1.0, 0.07))
    assert position is not None and position.size == 2.0 and position.average_price == pytest.approx(0.06)
    position, session = apply_fill(position, trade(OPTION, "sell", 0.5, 0.09), OPTION_ID, session)
    assert position is not None and position.size == 1.5 and position.average_price == pytest.approx(0.06)
    assert position.realized_profit_loss == pytest.approx(0.5 * (0.09 - 0.06))
    position, session = apply_fill(position, trade(OPTION, "sell", 2.5, 0.08), OPTION_ID, session)
    assert position is not None and position.size == -1.0 and position.direction == "sell"
    assert position.average_price == 0.08
    assert apply_fill(position, trade(OPTION, "buy", 1.0, 0.01), OPTION_ID, session) == (None, None)


def test_future_average_is_the_usd_weighted_harmonic_mean() -> None:
    position, session = fills(FUTURE, ("buy", 100.0, 50_000.0))
    position, _ = apply_fill(position, trade(FUTURE, "buy", 100.0, 40_000.0, mark=40_100.0), FUTURE_ID, session)
    assert position is not None and position.kind == "future"
    assert position.average_price == pytest.approx(200.0 / (100 / 50_000 + 100 / 40_000))
    # A future's delta is its size in coin at the mark (the fill's mark until a ticker comes).
    assert position.delta == pytest.approx(200.0 / 40_100.0) and position.mark_price == 40_100.0


FILLS = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 30), st.integers(1, 400)), min_size=1, max_size=25
)


@settings(max_examples=150, deadline=None)
@given(FILLS, st.booleans())
def test_positions_match_the_simulators_contract_maths(fills: list[tuple[str, int, int]], is_option: bool) -> None:
    """Random fills give the simulator's own size and average price (its Position is the
    exchange side of the end-to-end tests)."""
    if is_option:
        spec = InstrumentSpec(OPTION, "BTC", "option", dt.date(2021, 9, 24), "month", 0.0005, 1, 0.1, 0.0003,
                              0.0003, 0, strike=40_000.0, option_type="call")
        name, amount_step, price_step = OPTION, 0.1, 0.0005
    else:
        spec = InstrumentSpec(FUTURE, "BTC", "future", None, "perpetual", 0.5, 10, 10, 0.0, 0.0005, 0)
        name, amount_step, price_step = FUTURE, 10.0, 125.0
    reference = SimPosition(spec)
    ours: Position | None = None
    session: Session | None = None
    for direction, amount_units, price_units in fills:
        amount, price = round(amount_units * amount_step, 8), round(price_units * price_step, 8)
        reference.apply(direction, amount, price)
        ours, session = apply_fill(ours, trade(name, direction, amount, price), IDS[name], session)
        if reference.size == 0:
            assert ours is None
        else:
            assert ours is not None and ours.size == reference.size
            assert ours.average_price == pytest.approx(reference.average_price, rel=1e-9)


def test_marks_give_floating_pnl_and_greeks() -> None:
    option, session = fills(OPTION, ("buy", 2.0, 0.05))
    assert option is not None
    ticker = Ticker(instrument_name=OPTION, timestamp=1, state="open", mark_price=0.06, index_price=40_000.0,
                    greeks=Greeks(delta=0.5, gamma=0.0001, vega=20.0, theta=-10.0))
    marked = with_mark(option, ticker.mark_price, ticker.index_price, ticker, OPTION_ID, session)
    assert marked.floating_profit_loss == pytest.approx(0.02) and marked.total_profit_loss == pytest.approx(0.02)
    assert (marked.delta, marked.gamma, marked.vega, marked.theta) == pytest.approx((1.0, 0.0002, 40.0, -20.0))
    future, session = fills(FUTURE, ("sell", 1000.0, 50_000.0))
    assert future is not None
    marked = with_mark(future, 40_000.0, 40_000.0, None, FUTURE_ID, session)
    assert marked.delta == pytest.approx(-0.025) and marked.size_currency == pytest.approx(-0.025)
    assert marked.floating_profit_loss == pytest.approx(-1000.0 * (1 / 50_000 - 1 / 40_000))


def test_order_life_cycle() -> None:
    book = PortfolioBook(("BTC",))
    assert book.on_order(order("A", "open", 1)) == "BTC"
    assert book.on_order(order("A", "open", 2, filled=0.4)) == "BTC"  # partially filled
    assert book.accounts["BTC"].orders["A"].filled_amount == 0.4
    assert book.on_order(order("A", "open", 1)) is None  # an older state (a late answer) is ignored
    assert book.on_order(order("A", "filled", 3, filled=1.0)) == "BTC"
    assert "A" not in book.accounts["BTC"].orders
    assert book.on_order(order("A", "open", 4)) is None  # a late duplicate of a closed order
    book.on_order(order("B", "untriggered"))
    book.on_order(order("C", "open"))
    book.on_order(order("C", "cancelled", 2))
    assert book.on_order(order("D", "rejected")) is None  # never open: nothing changes
    assert set(book.accounts["BTC"].orders) == {"B"}
    assert [o.order_id for o in book.accounts["BTC"].snapshot(0.0).open_orders] == ["B"]


def test_trades_count_once() -> None:
    book = PortfolioBook(("BTC",))
    fill = trade(OPTION, "buy", 1.0, 0.05, trade_id="X")
    assert book.on_trade(fill) == "BTC"
    assert book.on_trade(fill) is None
    assert book.accounts["BTC"].positions[OPTION].size == 1.0


def test_tickers_mark_held_instruments_only() -> None:
    book = book_with_metadata()
    book.on_trade(trade(OPTION, "buy", 1.0, 0.05))
    other = Ticker(instrument_name="BTC-24SEP21-50000-C", timestamp=1, state="open", mark_price=0.01)
    assert book.on_ticker(other) is None
    assert book.on_ticker(Ticker(instrument_name=OPTION, timestamp=2, state="open", mark_price=0.07)) == "BTC"
    assert book.accounts["BTC"].positions[OPTION].floating_profit_loss == pytest.approx(0.02)


def test_reconcile_reports_differences_and_the_exchange_wins() -> None:
    book = PortfolioBook(("BTC",))
    book.on_trade(trade(OPTION, "buy", 1.0, 0.05))
    book.on_order(order("A", "open"))
    book.on_figures(PortfolioUpdate(currency="BTC", equity=1.0, balance=1.0, available_funds=1.0,
                                    margin_balance=1.0, initial_margin=0.0, maintenance_margin=0.0))
    assert not book.accounts["BTC"].reconciled
    theirs = Position(instrument_name=OPTION, kind="option", direction="buy", size=2.0, average_price=0.05)
    future = Position(instrument_name=FUTURE, kind="future", direction="sell", size=-10.0, average_price=50_000.0)
    summary = AccountSummary(currency="BTC", equity=2.0, balance=2.0, available_funds=2.0, margin_balance=2.0,
                             initial_margin=0.0, maintenance_margin=0.0)
    state = ExchangeState(currency="BTC", positions=(theirs, future), open_orders=(order("B", "open"),),
                          summary=summary, at=5.0, reason="test")
    differences = book.reconcile(state).differences
    described = {(d.what, d.key, d.field) for d in differences}
    assert described == {("position", OPTION, "size"), ("position", FUTURE, "size"),
                         ("order", "A", "presence"), ("order", "B", "presence")}
    account = book.accounts["BTC"]
    assert account.reconciled and account.figures == summary
    assert account.positions == {OPTION: theirs, FUTURE: future} and set(account.orders) == {"B"}
    assert book.reconcile(state).differences == []  # the same truth again: nothing differs
    snapshot = account.snapshot(6.0)
    assert snapshot.reconciled and snapshot.equity == 2.0 and len(snapshot.positions) == 2
    assert book.link_lost() == ["BTC"] and not account.reconciled


def test_expired_instruments_leave() -> None:
    book = PortfolioBook(("BTC",))
    book.on_trade(trade(OPTION, "buy", 1.0, 0.05))
    book.on_trade(trade(FUTURE, "buy", 10.0, 50_000.0))
    book.on_order(order("A", "open"))
    assert book.held_instruments() == {OPTION, FUTURE}
    assert book.drop_instruments({OPTION}) == ["BTC"]
    assert book.held_instruments() == {FUTURE}
    assert book.drop_instruments({OPTION}) == []
