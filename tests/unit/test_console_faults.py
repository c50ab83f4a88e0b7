"""The console's faults of issue 18, each as it was seen: two ``filled`` lines per order (one with
the limit price), piped lines echoed twice, a typo guard instead of a bad value's reason, ``plot``
demanding the command line's flags (see test_console), ``exit``/``?``/``help chain`` not
understood, help examples with 2021 expiries, uneven numbers, the stale footer always printed,
and orders that look like typos sent without a word."""

from __future__ import annotations

import datetime as dt
import io

import msgspec
import pytest
from rich.console import Console as RichConsole
from rich.console import RenderableType

from console.desk_state import DeskState
from console.grammar import HELP, Override, ParseError, parse_line
from console.orders import Refusal, TradingContext, describe_order, orders_for
from console.views import describe_answer, describe_fill, examples_for, help_view, tops_table
from deribit.instruments import expiry_ms
from messages.account import OrderUpdate, UserTrade
from messages.commands import CommandFailed, CommandResult, PlaceOrder
from messages.market import IndexPrice, Instrument, InstrumentsLoaded
from messages.state import TopOfBook
from tests.support.market import NOW, PERP, btc, market, option


def text_of(renderable: RenderableType | str) -> str:
    out = io.StringIO()
    RichConsole(file=out, width=200, markup=False, highlight=False).print(renderable)
    return out.getvalue()


def perpetual() -> Instrument:
    return next(i for i in btc() if i.instrument_name == PERP)


# -- 1. one filled line per fill; the order's line says what became of it ---------------------------------
def order_update(state: str, filled: float, amount: float = 20.0, tif: str = "good_til_cancelled",
                 price: float = 60060.0) -> OrderUpdate:
    return OrderUpdate(order_id="42", instrument_name=PERP, order_state=state, order_type="limit", direction="buy",
                       amount=amount, price=price, filled_amount=filled, average_price=60000.25 if filled else None,
                       label="manual_api_1", time_in_force=tif)


def fill(trade_id: str, price: float, amount: float, fee: float = 0.00000017, name: str = PERP) -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id="42", instrument_name=name, timestamp=0, direction="buy",
                     price=price, amount=amount, fee=fee, fee_currency="BTC", label="manual_api_1", liquidity="T")


def answer(order: OrderUpdate, *trades: UserTrade) -> CommandResult:
    return CommandResult(request_key="k", origin="console", method="private/buy", result="{}", order=order,
                         trades=trades)


def test_a_fill_line_has_the_fill_price_to_the_tick_and_the_fee_with_its_currency() -> None:
    assert describe_fill(fill("t1", 59987.0, 20.0), perpetual()) == (
        "filled: buy 20 BTC-PERPETUAL @ 59,987.0 [manual_api_1], fee 0.00000017 BTC, taker")
    put = option()  # tick 0.0005 above 0.005, 0.0001 below: every price to 4 decimals
    assert describe_fill(fill("t2", 0.03974563, 1.5, name=put.instrument_name), put).startswith(
        f"filled: buy 1.5 {put.instrument_name} @ 0.0397 [manual_api_1], fee 0.00000017 BTC")


@pytest.mark.parametrize(("order", "says"), [
    (order_update("filled", 20.0), "order manual_api_1: buy 20 BTC-PERPETUAL: filled 20 of 20 (id 42)"),
    (order_update("open", 5.0), "order manual_api_1: buy 20 BTC-PERPETUAL: open at 60,060.0, filled 5 of 20 so far"),
    (order_update("open", 0.0), "order manual_api_1: buy 20 BTC-PERPETUAL: open at 60,060.0 (id 42)"),
    (order_update("cancelled", 0.0, tif="immediate_or_cancel"),
     "buy 20 BTC-PERPETUAL: cancelled, filled 0 of 20: nothing at that price"),
    (order_update("cancelled", 10.0, tif="immediate_or_cancel"),
     "cancelled, filled 10 of 20: the rest found nothing at that price"),
    (order_update("rejected", 0.0), "buy 20 BTC-PERPETUAL: rejected (id 42)"),
])
def test_the_orders_line_says_what_became_of_it_without_a_second_filled_at_the_limit(order: OrderUpdate,
                                                                                    says: str) -> None:
    line = describe_answer(answer(order), perpetual())
    assert says in line, line
    assert " @ " not in line and not line.startswith("filled")
    if order.order_state not in ("open",):
        assert "60,060" not in line  # the limit is no fill price


def test_a_rejection_is_one_line() -> None:
    failed = CommandFailed(request_key="k", origin="console", method="private/buy", code=10009,
                           message="not_enough_funds")
    assert describe_answer(failed) == "rejected by the exchange (10009): not_enough_funds [k]"


# -- 6. help examples name listed instruments ---------------------------------------------------------------
def listed_2026() -> tuple[Instrument, ...]:
    """The perpetual and options of 11DEC26 and 26DEC26 (strikes 90,000 to 110,000)."""
    put = option()
    out = [perpetual()]
    for day in (11, 26):
        for strike in (90000, 100000, 110000):
            expiry = dt.date(2026, 12, day)
            name = f"BTC-{day}DEC26-{strike}-C"
            out.append(msgspec.structs.replace(put, instrument_name=name, strike=float(strike), option_type="call",
                                               expiration_timestamp=expiry_ms(expiry)))
    return tuple(out)


def test_help_examples_name_listed_instruments_or_say_they_will() -> None:
    desk = DeskState(["BTC"])
    before = help_view(desk, "BTC").plain
    assert "24SEP21" not in before and "2021" not in before and before == HELP
    assert "setContractType:OPTION" in before and "once the instrument list is in" in before
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=listed_2026(), at=NOW))
    desk.on_index(IndexPrice(index_name="btc_usd", price=101000.0, timestamp=0))
    assert examples_for(desk, "BTC").option == "BTC-11DEC26-100000-C"
    text = help_view(desk, "BTC").plain
    assert "e.g. setContractType:BTC-11DEC26-100000-C" in text and "e.g. chain 11DEC26" in text
    assert "24SEP21" not in text and "OPTION" not in text
    one = help_view(desk, "BTC", ("setContractType:NAME",)).plain
    assert "example: setContractType:BTC-11DEC26-100000-C" in one


def test_help_examples_skip_an_expiry_less_than_a_day_away() -> None:
    desk = DeskState(["BTC"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=listed_2026(), at=NOW))
    eleventh = dt.datetime(2026, 12, 11, 8, tzinfo=dt.UTC).timestamp()
    assert examples_for(desk, "BTC", eleventh - 2 * 86_400).expiry == "11DEC26"
    assert examples_for(desk, "BTC", eleventh - 3600).expiry == "26DEC26"
    assert examples_for(desk, "BTC", eleventh + 30 * 86_400).expiry == "11DEC26"  # none later: the nearest


# -- 7. prices to the instrument's tick -----------------------------------------------------------------------
def test_prices_in_lines_and_tops_are_to_the_tick() -> None:
    perp = perpetual()
    order = PlaceOrder(instrument_name=PERP, side="buy", amount=20.0, origin="console", request_key="k",
                       price=60046.5, label="manual_api_1", time_in_force="immediate_or_cancel")
    assert describe_order(order, perp) == "buy 20 BTC-PERPETUAL limit 60,046.5 IOC [manual_api_1]"
    big = msgspec.structs.replace(order, amount=120000.0)
    assert describe_order(big, perp) == "buy 120,000 BTC-PERPETUAL limit 60,046.5 IOC [manual_api_1]"
    top = TopOfBook(instrument_name=PERP, kind="future", bid=59926.0, bid_amount=16350.0, ask=59926.5,
                    ask_amount=9530.0, timestamp=0, at=NOW, mark_price=59926.33137, index_price=59919.2571)
    text = text_of(tops_table([top], instrument={PERP: perp}.get))
    assert "59,926.0" in text and "59,926.5" in text and "59,926.3 " in text and "59,919.26" in text
    assert "59,926.33137" not in text and "16,350" in text


def test_a_refusal_writes_prices_to_the_tick() -> None:
    result = orders_for(parse_line("as1 25000"), market(), 1)  # type: ignore[arg-type]
    assert isinstance(result, Refusal)
    assert "buy limit 25,000.0 is 31.61% above the mark 18,995.0" in result.reason


# -- 8. the stale footer only under a stale quote: tests/unit/test_tables.py (the chain is console/tables.py's)


# -- 9. orders that look like typos are held back until repeated with override ------------------------------
def run(line: str, ctx: TradingContext | None = None) -> tuple[PlaceOrder, ...] | Refusal:
    command = parse_line(line)
    assert command is not None and not isinstance(command, ParseError), command
    if isinstance(command, Override):
        return orders_for(command.order, ctx or market(), 1, override=True)
    return orders_for(command, ctx or market(), 1)  # type: ignore[arg-type]


# market(): bid 18990, ask 19000, mark 18995, the perpetual (tick 0.5); price limit 3% from the mark.
@pytest.mark.parametrize(("line", "says"), [
    ("as1 19000", "a post-only buy at 19,000.0 is at or above the ask 19,000.0"),
    ("as1 19500", "a post-only buy at 19,500.0 is at or above the ask 19,000.0"),
    ("aw1 19000.4", "a post-only buy at 19,000.0 is at or above the ask"),  # on the tick grid, down
    ("dw1 18990", "a post-only sell at 18,990.0 is at or below the bid 18,990.0"),
    ("ds1 18500", "a post-only sell at 18,500.0 is at or below the bid 18,990.0"),
    ("a1 18900 18500 5", "the buy ladder's bounds are typed the other way round (18,900.0 18,500.0); a buy ladder "
                         "is typed from its low bound up: 18,500.0 18,900.0"),
    ("d1 19100 19500 5", "the sell ladder's bounds are typed the other way round (19,100.0 19,500.0); a sell "
                         "ladder is typed from its high bound down: 19,500.0 19,100.0"),
    ("a1 18800 19100 4", "a buy ladder up to 19,100.0 reaches the ask 19,000.0"),
    ("a1 18800 19000 5", "a buy ladder up to 19,000.0 reaches the ask 19,000.0"),
    ("d1 19200 18900 4", "a sell ladder down to 18,900.0 reaches the bid 18,990.0"),
])
def test_an_order_that_looks_like_a_typo_is_held_back_until_override(line: str, says: str) -> None:
    held = run(line)
    assert isinstance(held, Refusal) and held.held, held
    assert says in held.reason and held.reason.startswith("looks like a typo: ")
    assert held.hint == "nothing sent; to send it as typed, repeat the line ending with override"
    sent = run(f"{line} override")
    assert isinstance(sent, tuple) and sent and all(isinstance(o, PlaceOrder) for o in sent), sent


@pytest.mark.parametrize("line", ["as1 18990", "dw1 19000", "as1 18000", "a1 18500 18900 5", "d1 19500 19100 5",
                                  "a2", "aw1", "ds1", "dw1 18000s", "as1", "dw1"])
def test_an_ordinary_order_is_not_held(line: str) -> None:
    result = run(line)
    assert isinstance(result, tuple) and result, result


def test_with_one_side_missing_or_the_limits_broken_no_typo_is_claimed() -> None:
    no_ask = TradingContext(instrument=market().instrument, size_multiplier=10, bid=18990.0, ask=None, mark=18995.0,
                            index_price=18990.0, limits=market().limits)
    assert isinstance(run("as1 19500", no_ask), tuple)  # nothing to be through
    crossed = TradingContext(instrument=market().instrument, size_multiplier=10, bid=19010.0, ask=19000.0,
                             mark=18995.0, index_price=18990.0, limits=market().limits)
    # A crossed book is no market: refused outright, never merely held (override would send it).
    for line in ("as1 19005", "as1 19005 override"):
        refused = run(line, crossed)
        assert isinstance(refused, Refusal) and not refused.held and "not a market" in refused.reason, line
    # The safety limits come first and override does not lift them.
    for line in ("as1 25000", "as1 25000 override", "a1 25000 18000 3 override"):
        refused = run(line)
        assert isinstance(refused, Refusal) and not refused.held and "above the mark" in refused.reason, line
    # A stale book is refused outright, never merely held.
    stale = TradingContext(instrument=market().instrument, size_multiplier=10, bid=18990.0, ask=19000.0,
                           mark=18995.0, index_price=18990.0, limits=market().limits, stale=True)
    refused = run("as1 19500 override", stale)
    assert isinstance(refused, Refusal) and "stale" in refused.reason
