"""The Portfolio's PnL columns with Deribit's definitions: the exchange's figures where it sends
them, the same definitions between them (no jump at the next ticker), unmodelled instruments,
user.changes, the 08:00 settlement, deliveries at expiry and the settlement history."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import msgspec
import pytest

from desk.portfolio import PortfolioBook
from messages.account import (
    ExchangeState,
    ExchangeWindow,
    OrderUpdate,
    Position,
    Settlement,
    SettlementHistory,
    UserChanges,
    UserTrade,
)
from messages.market import Greeks, InstrumentsLoaded, Ticker
from tests.support.contracts import (
    DOCS_USER_CHANGES,
    ISSUE_16_PERPETUAL,
    OPTION_POSITIONS,
    inverse_option,
    inverse_perpetual,
    linear_option,
    linear_perpetual,
)

PERP = "BTC-PERPETUAL"
LINEAR = "ETH_USDC-PERPETUAL"
OPTION = "BTC-25JUN21-28000-P"
_ids = itertools.count(1)


def loaded(*instruments: object) -> InstrumentsLoaded:
    return InstrumentsLoaded(currency="BTC", instruments=instruments)  # type: ignore[arg-type]


def book(*currencies: str, metadata: bool = True) -> PortfolioBook:
    out = PortfolioBook(currencies or ("BTC",))
    if metadata:
        out.on_instruments(loaded(inverse_perpetual(), inverse_option(OPTION, dt.date(2021, 6, 25), 28_000.0, "put"),
                                  linear_perpetual()))
    return out


def snapshot(*positions: Position, currency: str = "BTC", taken_ms: int = 1_000) -> ExchangeState:
    window = ExchangeWindow(received_us=taken_ms * 1000, sent_us=taken_ms * 1000 + 300)
    return ExchangeState(currency=currency, positions=positions, open_orders=(), summary=None, at=1.0,
                         positions_window=window, orders_window=window)


def ticker(name: str, mark: float, timestamp: int = 5_000, **fields: object) -> Ticker:
    return Ticker(instrument_name=name, timestamp=timestamp, state="open", mark_price=mark,
                  index_price=fields.pop("index_price", mark), **fields)  # type: ignore[arg-type]


def trade(name: str, direction: str, amount: float, price: float, at_ms: int = 10_000, mark: float | None = None,
          trade_id: str | None = None) -> UserTrade:
    return UserTrade(trade_id=trade_id or f"T{next(_ids)}", order_id="O1", instrument_name=name, timestamp=at_ms,
                     direction=direction, price=price, amount=amount, fee=0.0, fee_currency="BTC",  # type: ignore[arg-type]
                     mark_price=mark)


def held(b: PortfolioBook, name: str, currency: str = "BTC") -> Position:
    return b.accounts[currency].positions[name]


# -- the exchange's figures, and the next ticker -------------------------------------------------------
@pytest.mark.parametrize("exchange", [ISSUE_16_PERPETUAL, DOCS_USER_CHANGES], ids=["issue-16", "docs-user.changes"])
def test_a_ticker_after_a_reconcile_gives_back_the_exchanges_figures(exchange: Position) -> None:
    b = book()
    assert b.reconcile(snapshot(exchange)).applied
    assert held(b, PERP) == exchange  # the exchange's own figures are shown as sent
    assert exchange.mark_price is not None
    b.on_ticker(ticker(PERP, exchange.mark_price, settlement_price=exchange.settlement_price))
    again = held(b, PERP)
    assert again.floating_profit_loss == pytest.approx(exchange.floating_profit_loss, abs=2e-9)
    assert again.total_profit_loss == pytest.approx(exchange.total_profit_loss, abs=5e-9)
    assert again.realized_profit_loss == exchange.realized_profit_loss
    # ... and moves continuously from there.
    b.on_ticker(ticker(PERP, exchange.mark_price + 0.5, settlement_price=exchange.settlement_price))
    moved = held(b, PERP)
    step = exchange.size * (1 / exchange.mark_price - 1 / (exchange.mark_price + 0.5))
    assert moved.floating_profit_loss == pytest.approx((exchange.floating_profit_loss or 0.0) + step, abs=3e-9)
    assert moved.total_profit_loss == pytest.approx((exchange.total_profit_loss or 0.0) + step, abs=6e-9)


def test_the_old_definitions_jumped_at_the_next_ticker() -> None:
    """The desk used to show floating from the average price at the next ticker: -1.079e-5 BTC
    where the exchange had just said -2.82e-7."""
    exchange = ISSUE_16_PERPETUAL
    b = book()
    b.reconcile(snapshot(exchange))
    assert exchange.mark_price is not None
    b.on_ticker(ticker(PERP, exchange.mark_price))
    assert abs((held(b, PERP).floating_profit_loss or 0.0) - (exchange.floating_profit_loss or 0.0)) < 2e-9
    assert abs((exchange.total_profit_loss or 0.0) - (exchange.floating_profit_loss or 0.0)) > 1e-5


@pytest.mark.parametrize("exchange", OPTION_POSITIONS[1:2], ids=[OPTION])
def test_an_option_keeps_the_exchanges_session_and_takes_its_greeks(exchange: Position) -> None:
    b = book()
    b.reconcile(snapshot(exchange))
    assert exchange.mark_price is not None
    b.on_ticker(ticker(OPTION, exchange.mark_price, index_price=exchange.index_price,
                       greeks=Greeks(delta=-0.1166, gamma=0.0, vega=56.6, theta=-73.9)))
    again = held(b, OPTION)
    # The answer's mark and settlement price carry 6-8 decimals: within their rounding.
    assert again.floating_profit_loss == pytest.approx(exchange.floating_profit_loss, abs=1e-7)
    assert again.total_profit_loss == pytest.approx(exchange.total_profit_loss, abs=1e-7)
    assert again.delta == pytest.approx(exchange.size * -0.1166)


def test_fills_between_reconciles_use_the_same_definitions() -> None:
    """A sale out of a position carried over from the settlement realizes against the settlement
    price (the docs' user.changes: 10 USD at 17,391 against 16,025.83: 0.00004898 BTC)."""
    size = DOCS_USER_CHANGES.size + 10.0
    before = msgspec.structs.replace(DOCS_USER_CHANGES, size=size, realized_profit_loss=0.0,
                                     floating_profit_loss=size * (1 / 16_025.83 - 1 / 17_391))
    b = book()
    b.reconcile(snapshot(before))
    b.on_trade(trade(PERP, "sell", 10.0, 17_391.0, mark=17_391.0))
    after = held(b, PERP)
    assert after.size == DOCS_USER_CHANGES.size and after.average_price == 15_000.0
    assert after.realized_profit_loss == pytest.approx(0.00004898, abs=5e-9)
    assert after.floating_profit_loss == pytest.approx(DOCS_USER_CHANGES.floating_profit_loss, abs=2e-9)
    assert after.total_profit_loss == pytest.approx(DOCS_USER_CHANGES.total_profit_loss, abs=2e-9)


def test_a_linear_perpetual_is_modelled_in_coin_and_usdc() -> None:
    """Issue 16: ETH_USDC-PERPETUAL, two buys of 0.001 at 2,973.55 and 3,067.2: average 3,020.375,
    delta 0.002 ETH (inverse maths gave 3,019.65 and 6.7e-7)."""
    b = book("BTC", "ETH")
    b.on_trade(trade(LINEAR, "buy", 0.001, 2973.55, mark=2980.0))
    b.on_trade(trade(LINEAR, "buy", 0.001, 3067.2, mark=3070.0))
    position = held(b, LINEAR, "ETH_USDC")  # USDC's account, never ETH's
    assert position.size == 0.002 and position.average_price == pytest.approx(3020.375, rel=1e-12)
    assert position.delta == position.size_currency == 0.002
    assert position.total_profit_loss == pytest.approx(0.002 * (3070.0 - 3020.375))
    assert b.accounts["ETH"].snapshot(0.0).unmodelled == ()


# -- no metadata ------------------------------------------------------------------------------------
def test_without_metadata_the_exchanges_figures_stay_and_the_picture_says_so() -> None:
    b = book(metadata=False)
    exchange = ISSUE_16_PERPETUAL
    b.reconcile(snapshot(exchange))
    b.on_ticker(ticker(PERP, 100_000.0))
    position = held(b, PERP)
    assert position.floating_profit_loss == exchange.floating_profit_loss
    assert position.total_profit_loss == exchange.total_profit_loss
    assert b.accounts["BTC"].snapshot(0.0).unmodelled == (PERP,)
    # A fill moves the size (the hedger needs it) but no PnL is guessed.
    b.on_trade(trade(PERP, "buy", 10.0, 100_000.0))
    position = held(b, PERP)
    assert position.size == 50.0 and position.floating_profit_loss is None and position.delta is None
    # The metadata comes: modelled from the exchange's last figures on.
    assert b.on_instruments(loaded(inverse_perpetual())) == ["BTC"]
    assert b.accounts["BTC"].snapshot(0.0).unmodelled == ()


# -- user.changes -----------------------------------------------------------------------------------
def changes(position: Position, *trades: UserTrade, orders: tuple[OrderUpdate, ...] = ()) -> UserChanges:
    return UserChanges(instrument_name=position.instrument_name, trades=trades, orders=orders, positions=(position,))


def test_user_changes_positions_are_the_exchanges_truth_after_the_event() -> None:
    b = book()
    b.reconcile(snapshot(msgspec.structs.replace(DOCS_USER_CHANGES, size=DOCS_USER_CHANGES.size + 10.0)))
    sale = trade(PERP, "sell", 10.0, 17_391.0, at_ms=20_000, trade_id="1430914")
    currencies, taken = b.on_changes(changes(DOCS_USER_CHANGES, sale))
    assert currencies == ["BTC"] and taken
    assert held(b, PERP) == DOCS_USER_CHANGES
    # The same fill again from user.trades counts once.
    assert b.on_trade(sale) is None
    assert held(b, PERP).size == DOCS_USER_CHANGES.size


def test_an_older_user_changes_position_never_takes_the_picture_back() -> None:
    b = book()
    b.reconcile(snapshot())
    first = trade(PERP, "buy", 10.0, 50_000.0, at_ms=20_000)
    later = trade(PERP, "buy", 10.0, 50_000.0, at_ms=21_000)
    b.on_trade(first)
    b.on_trade(later)
    old = Position(instrument_name=PERP, kind="future", direction="buy", size=10.0, average_price=50_000.0)
    _, taken = b.on_changes(changes(old, first))
    assert not taken and held(b, PERP).size == 20.0
    # A snapshot taken after the event holds it already: not taken either.
    b.reconcile(snapshot(msgspec.structs.replace(old, size=30.0), taken_ms=30_000))
    _, taken = b.on_changes(changes(old, trade(PERP, "buy", 10.0, 50_000.0, at_ms=25_000)))
    assert not taken and held(b, PERP).size == 30.0
    # A flat position after the event removes it.
    flat = msgspec.structs.replace(old, size=0.0, direction="zero")
    _, taken = b.on_changes(changes(flat, trade(PERP, "sell", 30.0, 50_000.0, at_ms=40_000)))
    assert taken and PERP not in b.accounts["BTC"].positions


# -- settlement -------------------------------------------------------------------------------------
def test_the_0800_settlement_restarts_the_session() -> None:
    b = book()
    b.reconcile(snapshot(DOCS_USER_CHANGES))
    assert b.settle_sessions() == ["BTC"]
    position = held(b, PERP)
    assert position.floating_profit_loss == 0.0 and position.realized_profit_loss == 0.0
    assert position.total_profit_loss == pytest.approx(DOCS_USER_CHANGES.total_profit_loss, abs=2e-9)
    # The exchange's settlement price, when a ticker says it, is the session's start.
    b.on_ticker(ticker(PERP, 17_500.0, settlement_price=17_450.0))
    position = held(b, PERP)
    assert position.settlement_price == 17_450.0
    assert position.floating_profit_loss == pytest.approx(DOCS_USER_CHANGES.size * (1 / 17_450.0 - 1 / 17_500.0))
    assert position.realized_profit_loss == 0.0


def test_a_settlement_seen_only_in_the_ticker_restarts_the_session_too() -> None:
    b = book()
    b.reconcile(snapshot(DOCS_USER_CHANGES))
    b.on_ticker(ticker(PERP, 17_391.0, settlement_price=16_025.83))
    assert held(b, PERP).realized_profit_loss == DOCS_USER_CHANGES.realized_profit_loss
    b.on_ticker(ticker(PERP, 17_400.0, settlement_price=17_380.0))
    position = held(b, PERP)
    assert position.realized_profit_loss == 0.0
    assert position.floating_profit_loss == pytest.approx(DOCS_USER_CHANGES.size * (1 / 17_380.0 - 1 / 17_400.0))


# -- expiry -----------------------------------------------------------------------------------------
def closing(name: str, delivery: float, timestamp: int = 9_000) -> Ticker:
    """The last ticker of an expiring instrument: ``delivery`` is the underlying's price (USD)."""
    return Ticker(instrument_name=name, timestamp=timestamp, state="closed", mark_price=0.0, index_price=delivery,
                  estimated_delivery_price="expired", delivery_price=delivery)


def test_the_closing_ticker_delivers_the_position() -> None:
    """An inverse put delivers its intrinsic value in coin at the underlying's delivery price:
    (28,000 - 24,000) / 24,000 BTC per BTC; the session's PnL is from its settlement price."""
    exchange = OPTION_POSITIONS[1]  # long 0.1 BTC-25JUN21-28000-P, settled at 0.13975074
    b = book()
    b.reconcile(snapshot(exchange))
    b.on_order(OrderUpdate(order_id="A", instrument_name=OPTION, order_state="open", order_type="limit",
                           direction="sell", amount=0.1, price=0.2, last_update_timestamp=1))
    assert b.on_ticker(closing(OPTION, 24_000.0)) == "BTC"
    account = b.accounts["BTC"]
    assert OPTION not in account.positions and account.orders == {}
    [delivery] = account.snapshot(0.0).deliveries
    value = 4_000.0 / 24_000.0
    assert (delivery.type, delivery.instrument_name, delivery.position, delivery.index_price) == (
        "delivery", OPTION, 0.1, 24_000.0)
    assert delivery.mark_price == pytest.approx(value)
    assert delivery.profit_loss == pytest.approx(0.1 * (value - 0.13975074), abs=1e-9)
    assert delivery.session_profit_loss == delivery.profit_loss  # nothing realized this session


def test_a_position_dropped_at_the_rollover_is_corrected_by_the_closing_ticker() -> None:
    b = book()
    b.reconcile(snapshot(OPTION_POSITIONS[1]))
    b.on_ticker(ticker(OPTION, 0.14, index_price=24_400.0, estimated_delivery_price=24_500.0))
    assert b.drop_instruments({OPTION}, at_ms=8_000) == ["BTC"]
    [estimate] = b.accounts["BTC"].snapshot(0.0).deliveries
    assert estimate.index_price == 24_500.0 and estimate.mark_price == pytest.approx(3_500.0 / 24_500.0)
    assert b.on_ticker(closing(OPTION, 24_000.0)) == "BTC"
    [exact] = b.accounts["BTC"].snapshot(0.0).deliveries
    assert exact.mark_price == pytest.approx(4_000.0 / 24_000.0) and exact.timestamp == 9_000
    assert b.on_ticker(closing(OPTION, 24_000.0)) is None  # once


def test_the_settlement_history_delivers_what_is_still_held_and_is_kept() -> None:
    b = book()
    b.reconcile(snapshot(OPTION_POSITIONS[1], ISSUE_16_PERPETUAL))
    theirs = Settlement(type="delivery", timestamp=1_624_608_000_000, instrument_name=OPTION, position=0.1,
                        mark_price=0.1402, index_price=31_000.0, profit_loss=0.0000045, session_profit_loss=0.0000045)
    daily = Settlement(type="settlement", timestamp=1_624_608_000_000, instrument_name=PERP, position=40.0,
                       mark_price=109_351.31, index_price=109_300.0, profit_loss=-1e-6, session_profit_loss=-1e-6)
    history = SettlementHistory(currency="BTC", settlements=(theirs, daily), at=1.0)
    assert b.on_settlement_history(history) == ["BTC"]
    picture = b.accounts["BTC"].snapshot(0.0)
    assert [p.instrument_name for p in picture.positions] == [PERP]
    assert picture.deliveries == (theirs,) and set(picture.settlements) == {theirs, daily}
    assert b.on_settlement_history(history) == []  # nothing new


def test_a_list_judges_only_its_own_familys_instruments() -> None:
    """A held linear ETH_USDC-PERPETUAL is not gone because the ETH list (inverse) lacks it, and an
    instrument without metadata is never judged by a list; an inverse one missing from its own
    currency's list is."""
    b = book("BTC", "ETH")
    b.on_trade(trade(LINEAR, "buy", 0.001, 3000.0))
    b.on_trade(trade(PERP, "buy", 10.0, 50_000.0))
    b.on_trade(trade("BTC-24SEP21", "buy", 10.0, 50_000.0))  # no metadata
    eth = InstrumentsLoaded(currency="ETH", instruments=(inverse_perpetual("ETH"),))
    assert b.unlisted(eth) == set()
    assert b.unlisted(InstrumentsLoaded(currency="BTC", instruments=())) == {PERP}
    assert b.unlisted(InstrumentsLoaded(currency="ETH_USDC", instruments=())) == {LINEAR}
    assert b.unlisted(InstrumentsLoaded(currency="BTC_USDC", instruments=())) == set()


def test_a_linear_option_is_priced_and_settled_in_usdc() -> None:
    name = "SOL_USDC-25JUN21-0d5-C"
    b = PortfolioBook(("SOL_USDC",))
    b.on_instruments(InstrumentsLoaded(currency="SOL_USDC", instruments=(
        linear_option(name, dt.date(2021, 6, 25), 0.5, "call"),)))
    b.on_trade(trade(name, "buy", 10.0, 0.02))
    b.on_trade(trade(name, "buy", 30.0, 0.04))
    b.on_ticker(ticker(name, 0.05, index_price=0.52, greeks=Greeks(delta=0.6, gamma=1.0, vega=0.01, theta=-0.02)))
    position = held(b, name, "SOL_USDC")
    assert position.average_price == pytest.approx(0.035) and position.delta == pytest.approx(24.0)
    assert position.total_profit_loss == pytest.approx(40.0 * (0.05 - 0.035))  # USDC
    assert b.on_ticker(closing(name, 0.62)) == "SOL_USDC"
    [delivery] = b.accounts["SOL_USDC"].snapshot(0.0).deliveries
    assert delivery.mark_price == pytest.approx(0.12)
    assert delivery.profit_loss == pytest.approx(40.0 * (0.12 - 0.035))


@pytest.mark.parametrize("mark", [float("nan"), float("inf"), -1.0, 0.0])
def test_a_mark_that_is_no_price_moves_no_figure(mark: float) -> None:
    b = book("BTC", "ETH")
    b.on_trade(trade(PERP, "buy", 40.0, 112_585.87, mark=112_585.87))
    before = held(b, PERP)
    b.on_ticker(ticker(PERP, mark))
    after = held(b, PERP)
    assert (after.floating_profit_loss, after.total_profit_loss, after.delta, after.mark_price) == (
        before.floating_profit_loss, before.total_profit_loss, before.delta, before.mark_price)


@pytest.mark.parametrize("settlement", [float("nan"), float("inf"), -5.0])
def test_a_settlement_price_that_is_no_price_restarts_no_session(settlement: float) -> None:
    b = book("BTC", "ETH")
    b.on_trade(trade(PERP, "buy", 40.0, 112_585.87, mark=112_585.87))
    b.on_ticker(ticker(PERP, 110_000.0, settlement_price=109_351.31))
    good = held(b, PERP)
    b.on_ticker(ticker(PERP, 110_000.0, settlement_price=settlement))
    after = held(b, PERP)
    assert after.floating_profit_loss == good.floating_profit_loss
    assert after.floating_profit_loss is not None and math.isfinite(after.floating_profit_loss)


@pytest.mark.parametrize("delivery", [float("nan"), float("inf"), 0.0, -24_000.0])
def test_a_closing_ticker_whose_delivery_price_is_no_price_delivers_nothing(delivery: float) -> None:
    """The position stays (its figures untouched) until the exchange's history, the rollover or the
    instrument's state takes it out at a price that is one."""
    b = book()
    b.reconcile(snapshot(OPTION_POSITIONS[1]))
    before = b.accounts["BTC"].positions[OPTION]
    b.on_ticker(closing(OPTION, delivery))
    account = b.accounts["BTC"]
    assert account.positions[OPTION] == before and account.snapshot(0.0).deliveries == ()
