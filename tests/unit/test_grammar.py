"""The console's language: every example of the issue gives exactly the expected orders; every
bad line gives a reason and a hint; the safety checks refuse what must not be sent."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest

from config.settings import MAX_SIZE_MULTIPLIER
from console.grammar import (
    COMMANDS,
    COMPLETION_WORDS,
    GROUP_TITLES,
    HELP,
    Cancel,
    ChangeInstrument,
    Examples,
    Hedging,
    HelpOn,
    LadderOrder,
    LimitOrder,
    MarketOrder,
    OptionOrder,
    ParseError,
    Plot,
    Quit,
    ResetSizeMultiplier,
    SetContractType,
    SetHedgeStep,
    SetVegaHedge,
    Show,
    ShowChain,
    StopOrder,
    TouchOrder,
    VegaHedging,
    check_size_multiplier,
    commands_markdown,
    parse_line,
    parse_size_multiplier,
    pick_future,
)
from console.orders import (
    OrderLimits,
    Refusal,
    TradingContext,
    cancels_for,
    describe_order,
    label_number,
    next_label_number,
    orders_for,
)
from messages.account import OrderUpdate
from messages.commands import CancelAll, CancelByLabel, CancelOrder, PlaceOrder, check_command
from tests.support.market import LIMITS, btc, market, option
from tests.support.paths import REPO

FIELDS = ("side", "amount", "type", "price", "post_only", "reduce_only", "trigger", "trigger_price",
          "time_in_force", "label")


def order(side: str, amount: float, type_: str, price: float | None, post_only: bool, reduce_only: bool = False,
          trigger: str | None = None, trigger_price: float | None = None, tif: str = "good_til_cancelled",
          label: str = "manual_api_1") -> dict[str, Any]:
    return {"side": side, "amount": amount, "type": type_, "price": price, "post_only": post_only,
            "reduce_only": reduce_only, "trigger": trigger, "trigger_price": trigger_price, "time_in_force": tif,
            "label": label}


def fields(o: PlaceOrder) -> dict[str, Any]:
    return {name: getattr(o, name) for name in FIELDS}


def place(line: str, ctx: TradingContext | None = None, first_label: int = 1) -> tuple[PlaceOrder, ...] | Refusal:
    """The orders of ``line`` in ``ctx`` (default: the perpetual's :func:`market`)."""
    command = parse_line(line)
    assert not isinstance(command, ParseError), command
    return orders_for(command, market() if ctx is None else ctx, first_label)


IOC = "immediate_or_cancel"
EXAMPLES = [
    # a200: marketable limit 0.1% through the ask: 19000 x 1.001 = 19019 (on the 0.5 tick).
    ("a200", [order("buy", 2000, "limit", 19019.0, False, tif=IOC)]),
    # d200: 18990 x 0.999 = 18971.01, rounded up (a seller never takes less) to 18971.5.
    ("d200", [order("sell", 2000, "limit", 18971.5, False, tif=IOC)]),
    ("as200", [order("buy", 2000, "limit", 18990.0, True)]),
    ("dw200", [order("sell", 2000, "limit", 19000.0, True)]),
    ("aw200", [order("buy", 2000, "limit", 19000.0, False, tif=IOC)]),
    ("ds200", [order("sell", 2000, "limit", 18990.0, False, tif=IOC)]),
    ("as100 16000", [order("buy", 1000, "limit", 16000.0, True)]),
    ("aw100 16000", [order("buy", 1000, "limit", 16000.0, True)]),
    ("a100 16000", [order("buy", 1000, "limit", 16000.0, True)]),
    ("dw200 18000s", [order("sell", 2000, "stop_market", None, False, True, "mark_price", 18000.0)]),
    ("as200 20000s", [order("buy", 2000, "stop_market", None, False, True, "mark_price", 20000.0)]),
    # Ladder: 16000 + i x 2000/9, buys rounded down to the tick, from the low bound up.
    ("a100 16000 18000 10", [order("buy", 1000, "limit", p, True, label=f"manual_api_{i + 1}") for i, p in enumerate(
        [16000.0, 16222.0, 16444.0, 16666.5, 16888.5, 17111.0, 17333.0, 17555.5, 17777.5, 18000.0])]),
    # Sells from the high bound down, rounded up; bounds in either order.
    ("d50 22000 20000 5", [order("sell", 500, "limit", p, True, label=f"manual_api_{i + 1}") for i, p in enumerate(
        [22000.0, 21500.0, 21000.0, 20500.0, 20000.0])]),
    # Amounts round down to the 10 USD contract: 1.5 x 10 = 15 -> 10.
    ("a1.5", [order("buy", 10, "limit", 19019.0, False, tif=IOC)]),
    ("as100 16000.3", [order("buy", 1000, "limit", 16000.0, True)]),
    ("dw100 20000.3", [order("sell", 1000, "limit", 20000.5, True)]),
]


@pytest.mark.parametrize(("line", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_example_gives_exactly_the_expected_orders(line: str, expected: list[dict[str, Any]]) -> None:
    orders = place(line)
    assert not isinstance(orders, Refusal), orders
    assert [fields(o) for o in orders] == expected
    for o in orders:
        assert o.instrument_name == "BTC-PERPETUAL" and o.origin == "console"
        assert o.request_key == f"console-{o.label}"
        check_command(o)  # what the Connection's encoder would accept


def test_labels_continue_after_the_highest_open_manual_label() -> None:
    open_orders = [OrderUpdate(order_id=str(n), instrument_name="BTC-PERPETUAL", order_state="open",
                               order_type="limit", direction="buy", amount=10, label=label)
                   for n, label in enumerate(["manual_api_7", "manual_api_12", "hedger-3", "manual_api_x", ""])]
    assert next_label_number(open_orders) == 13
    assert next_label_number([], last_used=20) == 21
    assert next_label_number(open_orders, last_used=5) == 13
    orders = place("a100 16000 18000 3", first_label=13)
    assert [o.label for o in orders] == ["manual_api_13", "manual_api_14", "manual_api_15"]


def test_option_orders_on_the_chosen_contract() -> None:
    option_market = TradingContext(instrument=option(), size_multiplier=10, bid=0.05, ask=0.0555, mark=0.053,
                                   index_price=32000.0, limits=LIMITS)
    buy = orders_for(parse_line("buyOption:0.0512,1.25"), option_market, 4)  # type: ignore[arg-type]
    assert [fields(o) for o in buy] == [order("buy", 1.2, "limit", 0.051, False, label="manual_api_4")]
    sell = orders_for(parse_line("sellOption:0.0612,2"), option_market, 5)  # type: ignore[arg-type]
    assert [fields(o) for o in sell] == [order("sell", 2.0, "limit", 0.0615, False, label="manual_api_5")]
    # A future's shortcut on an option, or an option order on a future, is refused.
    assert isinstance(orders_for(parse_line("a200"), option_market, 1), Refusal)  # type: ignore[arg-type]
    assert isinstance(orders_for(parse_line("buyOption:0.05,1"), market(), 1), Refusal)  # type: ignore[arg-type]


PARSED = [
    ("price", Show("price")), ("funds", Show("funds")), ("orders", Show("orders")),
    ("positions", Show("positions")), ("connection status", Show("connection")),
    ("show size multiplier", Show("size_multiplier")), ("reset size multiplier", ResetSizeMultiplier()),
    ("change instrument", ChangeInstrument()), ("help", Show("help")), ("quit", Quit()), ("shutdown", Quit()),
    ("status", Show("status")), ("surface", Show("surface")), ("chain", ShowChain()),
    ("chain 24sep21", ShowChain("24SEP21")), ("plot surface BTC", Plot("heatmap", None, "BTC")),
    ("plot", Plot()), ("plot term", Plot("term")), ("plot heatmap", Plot("heatmap")),
    ("plot 26dec26", Plot("smile", "26DEC26")), ("PLOT Smile 26DEC26 eth", Plot("smile", "26DEC26", "ETH")),
    ("exit", Quit()), ("?", Show("help")), ("help chain", HelpOn(("chain [CURRENCY] [EXPIRY]",))),
    ("help setHedgeDeltaStep", HelpOn(("setHedgeDeltaStep:0.01",))), ("help exit", HelpOn(("quit / exit / shutdown",))),
    ("help ?", HelpOn(("help [COMMAND] / ?",))), ("help cancels", HelpOn(("ca", "cc", "cb", "cs", "cstops"))),
    ("setcontracttype:btc-24sep21-40000-c", SetContractType("BTC-24SEP21-40000-C")),
    ("a100 18000 16000 10", LadderOrder("buy", 100.0, 16000.0, 18000.0, 10, reversed=True)),
    ("d100 18000 16000 10", LadderOrder("sell", 100.0, 16000.0, 18000.0, 10)),
    ("d100 16000 18000 10", LadderOrder("sell", 100.0, 16000.0, 18000.0, 10, reversed=True)),
    ("activate delta hedging", Hedging("activate")), ("deactivate delta hedging", Hedging("deactivate")),
    ("delta hedging status", Show("hedging")), ("  Connection   Status ", Show("connection")),
    ("ca", Cancel("all")), ("cc", Cancel("last")), ("cb", Cancel("buys")), ("cs", Cancel("sells")),
    ("cstops", Cancel("stops")),
    ("setContractType:BTC-24SEP21-40000-C", SetContractType("BTC-24SEP21-40000-C")),
    ("setcontracttype:btc-24sep21-40000-P", SetContractType("BTC-24SEP21-40000-P")),
    ("setHedgeDeltaStep:0.01", SetHedgeStep(0.01)),
    ("buyOption:0.05,1", OptionOrder("buy", 0.05, 1.0)), ("sellOption:0.06, 2", OptionOrder("sell", 0.06, 2.0)),
    ("a200", MarketOrder("buy", 200.0)), ("ds10", TouchOrder("sell", 10.0, "bid")),
    ("as100 16000", LimitOrder("buy", 100.0, 16000.0)), ("dw200 18000s", StopOrder("sell", 200.0, 18000.0)),
    ("a100 16000 18000 10", LadderOrder("buy", 100.0, 16000.0, 18000.0, 10)),
    ("a10000", MarketOrder("buy", 10000.0)), ("", None), ("   ", None),
]


@pytest.mark.parametrize(("line", "expected"), PARSED, ids=[repr(p[0]) for p in PARSED])
def test_parse(line: str, expected: object) -> None:
    assert parse_line(line) == expected


BAD = [
    ("a200c", "last letter is c"), ("as100 16000c", "last letter is c"), ("pric", "unknown command 'pric'"),
    ("a10001", "got '10001' (above 10,000)"), ("a0", "got '0' (not above 0)"), ("a", "needs an amount"),
    ("ds", "needs an amount"), ("ax200", "second letter 'x'"), ("a2e3", "got '2e3'"),
    ("a-5", "got '-5' (no sign"), ("a1,000", "got '1,000' (no thousands separators)"),
    ("a007", "got '007' (digits 0-9"),
    ("d 200", "needs an amount"), ("A200", "lower case"), ("a200 xyz", "got 'xyz'"),
    ("a200 -5", "got '-5'"), ("a200 0", "got '0' (not above 0)"), ("a100 16000 18000", "needs a count"),
    ("a100 16000 18000 1", "a ladder is 2 orders or more"), ("a100 16000 18000 x", "got 'x'"),
    ("a100 16000s 18000 10", "no stop"), ("a100 16000 16000 4", "bounds are equal"),
    ("a1 2 3 4 5", "too many words"), ("activate hedging", "did you mean 'activate delta hedging'"),
    ("buyOption:0.05", "needs a price and an amount separated by a comma"), ("buyOption:0,1", "got '0' (not above 0)"),
    ("setHedgeDeltaStep:-1", "got '-1' (no sign"), ("setContractType:BTC-PERPETUAL", "is a perpetual"),
    ("setContractType:BTC-99XYZ21-1-C", "bad expiry"), ("foo:bar", "unknown command"),
    ("chain 2021-09-24", "bad expiry"), ("hello", "unknown command"), ("a" * 300, "longer than"),
    ("a200\x1b[A", "control characters"), ("a200 nan", "got 'nan'"), ("a200 inf", "got 'inf'"),
    ("help nothing", "help knows no command 'nothing'"),
]

# Each command's bad values: the reason says what the command accepts and what it got, never the
# typo guard's "last letter is c" (setHedgeDeltaStep:abc gave that).
VALUE_ERRORS = [
    ("setHedgeDeltaStep:abc", "setHedgeDeltaStep needs a number of coins of delta above 0 and at most 5, got 'abc' "
                              "(digits 0-9 and one decimal point only)"),
    ("setHedgeDeltaStep:0", "setHedgeDeltaStep needs a number of coins of delta above 0 and at most 5, got '0' "
                            "(not above 0)"),
    ("setHedgeDeltaStep:7", "setHedgeDeltaStep needs a number of coins of delta above 0 and at most 5, got '7' "
                            "(above 5)"),
    ("setHedgeDeltaStep:", "setHedgeDeltaStep needs a number of coins of delta above 0 and at most 5, got '' "
                           "(nothing was typed)"),
    ("setHedgeDeltaStep:0.000000001", "got '0.000000001' (at most 8 decimals)"),
    ("buyOption:abc", "buyOption needs a price and an amount separated by a comma (price in coin, amount in coins), "
                      "got 'abc'"),
    ("sellOption:0.05,abc", "sellOption's amount needs a number of coins above 0 and at most 10,000, got 'abc' "
                            "(digits 0-9 and one decimal point only)"),
    ("buyOption:abc,1", "buyOption's price needs a number in coin above 0, got 'abc' (digits 0-9 and one decimal "
                        "point only)"),
    ("buyOption:0.05,20000", "buyOption's amount needs a number of coins above 0 and at most 10,000, got '20000'"),
    ("setContractType:abc", "setContractType needs an option's name (CURRENCY-EXPIRY-STRIKE-C or -P), got 'abc'"),
    ("setContractType:btc-26dec26", "setContractType needs an option's name (CURRENCY-EXPIRY-STRIKE-C or -P), got "
                                    "'btc-26dec26' (BTC-26DEC26 is a future"),
    ("as1 abc", "the price needs a number above 0 (ending in s: a stop's trigger), got 'abc'"),
    ("dw1 1e5s", "the price needs a number above 0 (ending in s: a stop's trigger), got '1e5s'"),
    ("a1 100 abc 3", "the ladder's second bound needs a number above 0, got 'abc'"),
    ("a1 100 200 abc", "the ladder's count needs a whole number of orders from 2 to 9999, got 'abc'"),
    ("a1 100 200 1", "the ladder's count needs a whole number of orders from 2 to 9999, got '1'"),
    ("a1.123456789", "the amount needs a number above 0 and at most 10,000, got '1.123456789' (at most 8 decimals)"),
    ("plot 1x2", "plot needs at most one of smile, term, heatmap, one expiry (as 26DEC26) and one currency, "
                 "got '1x2'"),
    ("plot btc eth", "(two currencies)"),
    ("plot --what smile --currency BTC", "the console's plot takes words, not the command line's flags"),
    ("plot smile term", "(two kinds of plot)"),
    ("plot term 26DEC26", "(an expiry narrows a smile; term draws every expiry)"),
    ("plot 32DEC26", "got '32DEC26' (bad expiry"),
    ("help abc", "help knows no command 'abc'"),
]


@pytest.mark.parametrize(("line", "reason"), VALUE_ERRORS, ids=[v[0] for v in VALUE_ERRORS])
def test_a_bad_value_gets_its_real_reason(line: str, reason: str) -> None:
    result = parse_line(line)
    assert isinstance(result, ParseError), result
    assert reason in result.reason, result.reason
    assert "last letter is c" not in result.reason
    assert result.hint.startswith(("e.g.", "split", "did you mean", "help")), result.hint


@pytest.mark.parametrize(("line", "reason"), BAD, ids=[repr(b[0])[:30] for b in BAD])
def test_bad_lines_say_what_is_wrong_and_what_to_do(line: str, reason: str) -> None:
    result = parse_line(line)
    assert isinstance(result, ParseError), result
    assert reason in str(result)
    assert result.hint, "every error carries a hint"


def refused(line: str, ctx: TradingContext | None = None) -> str:
    result = place(line, ctx)
    assert isinstance(result, Refusal), result
    return str(result)


def test_stops_on_the_wrong_side_of_the_market_are_refused() -> None:
    assert "at or above the bid" in refused("dw200 18990s")
    assert "at or above the bid" in refused("ds200 19500s")
    assert "at or below the ask" in refused("as200 19000s")
    assert "at or below the ask" in refused("aw200 18000s")
    assert isinstance(place("dw200 18989.5s"), tuple)
    assert isinstance(place("as200 19000.5s"), tuple)


def test_safety_limits() -> None:
    # Notional: 10,000 x 10 = 100,000 USD passes a 1e6 limit, not a 50,000 one; a ladder counts whole.
    small = replace(market(), limits=OrderLimits(50_000, 3.0, 50.0, 20))
    assert "above the limit of 50,000 USD" in refused("a10000", small)
    assert "above the limit" in refused("as1000 16000 17000 6", small)
    assert isinstance(place("as1000 16000 17000 5", small), tuple)
    # A buy more than 3% above the mark, or a sell more than 3% below, is refused; passive is fine.
    assert "above the mark" in refused("as100 19600")
    assert "below the mark" in refused("dw100 18400")
    assert isinstance(place("as1 1000"), tuple)
    assert isinstance(place("dw1 90000"), tuple)
    # A wide touch makes the marketable order itself too far from the mark.
    wide = replace(market(), ask=20000.0)
    assert "above the mark" in refused("a200", wide)
    assert "above the limit of 20" in refused("a1 16000 17000 21")
    assert "finer than" in refused("a1 16000 16001 5")


def test_no_order_on_stale_data_while_disconnected_or_without_live() -> None:
    assert "stale" in refused("a200", replace(market(), stale=True))
    assert "not connected" in refused("as100 16000", replace(market(), connected=False))
    assert "--live" in refused("a200", replace(market(), trading_allowed=False))
    # Paper mode prints orders even on mainnet without --live; the data must still be good.
    assert isinstance(place("a200", replace(market(), trading_allowed=False, paper=True)), tuple)
    assert "no ask" in refused("a200", replace(market(), ask=None))
    assert "no bid" in refused("ds1", replace(market(), bid=None))
    assert "no mark" in refused("as1 16000", replace(market(), mark=None))
    assert "below BTC-PERPETUAL's minimum of 10" in refused("a0.5")


def open_order(order_id: str, direction: str, label: str, order_type: str = "limit",
               trigger: str | None = None) -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name="BTC-PERPETUAL", order_state="open", order_type=order_type,
                       direction=direction, amount=10, label=label, trigger=trigger,  # type: ignore[arg-type]
                       price=18000.0 if order_type == "limit" else "market_price")


OPEN = [
    open_order("b1", "buy", "manual_api_3"), open_order("b2", "buy", "manual_api_5"),
    open_order("s1", "sell", "manual_api_4"), open_order("h1", "buy", "hedger"),
    open_order("st1", "sell", "manual_api_2", "stop_market", "mark_price"),
]


def test_cancel_shortcuts() -> None:
    assert cancels_for(Cancel("all"), OPEN, request_key="k") == (CancelAll(origin="console", request_key="k"),)
    assert cancels_for(Cancel("last"), OPEN, request_key="k", currency="BTC") == (
        CancelByLabel(label="manual_api_5", origin="console", request_key="k", currency="BTC"),)
    # An order sent and not answered yet is the last one.
    assert cancels_for(Cancel("last"), OPEN, ["manual_api_9"], request_key="k")[0].label == "manual_api_9"  # type: ignore[index, union-attr]
    buys = cancels_for(Cancel("buys"), OPEN, request_key="k")
    assert buys == (CancelOrder(order_id="b1", origin="console", request_key="k-0"),
                    CancelOrder(order_id="b2", origin="console", request_key="k-1"))
    assert [c.order_id for c in cancels_for(Cancel("sells"), OPEN)] == ["s1"]  # type: ignore[union-attr]
    assert [c.order_id for c in cancels_for(Cancel("stops"), OPEN)] == ["st1"]  # type: ignore[union-attr]
    assert isinstance(cancels_for(Cancel("last"), []), Refusal)
    assert "no open manual sell orders" in str(cancels_for(Cancel("sells"), OPEN[:2]))


def test_describe_order_and_completion_words() -> None:
    orders = place("dw200 18000s")
    assert describe_order(orders[0]) == (  # type: ignore[index]
        "sell 2000 BTC-PERPETUAL stop_market trigger 18000 (mark_price) reduce-only [manual_api_1]")
    assert describe_order(place("a200")[0]) == "buy 2000 BTC-PERPETUAL limit 19019 IOC [manual_api_1]"  # type: ignore[index]
    for word in ("connection status", "activate delta hedging", "setContractType:", "cstops"):
        assert word in COMPLETION_WORDS


def test_help_words_and_completion_come_from_the_one_description() -> None:
    for entry in COMMANDS:
        assert f"  {entry.typed}  " in HELP
        for word in entry.words:  # word commands read in any case, the cancel shortcuts only as typed
            assert parse_line(word) == entry.command
            upper = parse_line(word.upper())
            assert isinstance(upper, ParseError) if entry.group == "Cancels" else upper == entry.command
    assert (*(w for c in COMMANDS if c.command is not None for w in c.words),
                                *(w for c in COMMANDS for w in c.completes)) == COMPLETION_WORDS
    # Every word the parser reads with a colon is offered, and each documented example parses.
    for name in ("setContractType", "buyOption", "sellOption", "setHedgeDeltaStep"):
        assert f"{name}:" in COMPLETION_WORDS
    for entry in COMMANDS:
        for typed in entry.typed.split(" / "):
            parsed = parse_line(re.sub(r" \[[^]]*\]", "", typed).replace(":NAME", ":BTC-26DEC26-100000-C"))
            assert isinstance(parsed, ParseError) == (typed == "a200c") and parsed is not None, typed
        example = parse_line(entry.example_line(Examples("BTC-26DEC26-100000-C", "26DEC26")))
        assert example is not None and (isinstance(example, ParseError) == (entry.typed == "a200c")), entry
    assert [title.split(" (")[0] for title in GROUP_TITLES.values()] == list(GROUP_TITLES)


@pytest.mark.parametrize(("line", "command"), [
    ("activate vega hedging", VegaHedging("activate")),
    ("  Deactivate  Vega  Hedging ", VegaHedging("deactivate")),
    ("vega hedging status", VegaHedging("status")),
    ("setVegaBand:2000", SetVegaHedge(2000.0)),
    ("setvegaband:1500.5,30", SetVegaHedge(1500.5, 30.0)),
    ("setVegaTenor:7", SetVegaHedge(None, 7.0)),
])
def test_vega_hedging_lines(line: str, command: object) -> None:
    assert parse_line(line) == command


@pytest.mark.parametrize(("line", "why"), [
    ("setVegaBand:0", "not above 0"),
    ("setVegaBand:-5", "no sign"),
    ("setVegaBand:nan", "digits 0-9"),
    ("setVegaBand:inf", "digits 0-9"),
    ("setVegaBand:1e3", "digits 0-9"),
    ("setVegaBand:", "nothing was typed"),
    ("setVegaBand:20000000", "too large"),
    ("setVegaBand:2000,0", "out of range"),
    ("setVegaBand:2000,401", "out of range"),
    ("setVegaBand:2000,", "nothing was typed"),
    ("setVegaTenor:nan", "digits 0-9"),
    ("setVegaTenor:0.5", "out of range"),
])
def test_bad_vega_settings_are_refused_saying_why(line: str, why: str) -> None:
    result = parse_line(line)
    assert isinstance(result, ParseError), result
    assert why in result.reason and "e.g. setVega" in str(result)


def test_the_readmes_command_table_is_the_one_description() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- console commands: python -m console.grammar -->\n", "<!-- end of console commands -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == commands_markdown() + "\n", "README's console table differs: paste `python -m console.grammar`"
    assert commands_markdown().count("\n") == len(COMMANDS) + 1


# -- numbers are ASCII only ------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "char"), [
    ("a2\u0660\u0660", "U+0660 ARABIC-INDIC DIGIT ZERO"),  # was a buy of 200
    ("a1\U0001d7ce", "U+1D7CE MATHEMATICAL BOLD DIGIT ZERO"),  # was a buy of 100
    ("as100 1\u096c000", "U+096C DEVANAGARI DIGIT SIX"),  # was a limit at 16000
    ("a\uff11", "U+FF11 FULLWIDTH DIGIT ONE"),
    ("as100\u200316000", "U+2003 EM SPACE"),  # split() takes it for a space
    ("\u00a0a200", "U+00A0 NO-BREAK SPACE"),  # strip() takes it away
    ("a2\u200b00", "U+200B ZERO WIDTH SPACE"),
    ("buyOption:0.05,\u0661", "U+0661 ARABIC-INDIC DIGIT ONE"),
    ("setHedgeDeltaStep:\u0660.01", "U+0660 ARABIC-INDIC DIGIT ZERO"),
    ("\u017fetContractType:BTC-24SEP21-40000-C", "U+017F LATIN SMALL LETTER LONG S"),  # upper() is S
])
def test_a_line_with_a_non_ascii_character_is_refused_naming_it(line: str, char: str) -> None:
    result = parse_line(line)
    assert isinstance(result, ParseError), result
    assert char in result.reason and "ASCII only" in result.reason and "0-9" in result.hint


def test_the_non_ascii_refusal_says_a_foreign_digit_is_one() -> None:
    assert "is a digit outside 0-9" in str(parse_line("a2\u0660\u0660"))
    assert "is not ASCII" in str(parse_line("as100\u200316000"))


def test_a_plot_line_is_ascii_like_any_other() -> None:
    # The console names the file itself: nothing typed on a plot line is a file name any more.
    result = parse_line("plot smile \u00e9t\u00e9")
    assert isinstance(result, ParseError) and "ASCII only" in result.reason


def test_start_up_answers_are_ascii_numbers_only() -> None:
    futures = [i for i in btc() if i.kind == "future"]
    assert pick_future("1", futures) == futures[0]
    assert isinstance(pick_future("\u0661", futures), ParseError)  # int() reads it as 1
    assert isinstance(pick_future("\uff11", futures), ParseError)
    assert parse_size_multiplier("10") == 10.0
    for text in ("\u0661\u0660", "1\uff10", "\U0001d7cf\U0001d7ce"):
        result = parse_size_multiplier(text)
        assert isinstance(result, ParseError) and "outside 0-9" in result.reason, text


def test_a_manual_label_is_numbered_in_ascii_digits() -> None:
    assert label_number("manual_api_3") == 3
    assert label_number("manual_api_\u0663") is None


# -- the size multiplier: finite and within its range on every path ---------------------------------------
@pytest.mark.parametrize(("text", "reason"), [
    ("nan", "not a plain decimal number"), ("inf", "not a plain decimal number"),
    ("1e9", "not a plain decimal number"), ("-1", "not a plain decimal number"), ("0", "not above 0"),
    ("100000.5", "above 100,000, the maximum"), ("1000000000", "not a plain decimal number"),
])
def test_a_size_multiplier_out_of_range_is_refused_saying_what_is_allowed(text: str, reason: str) -> None:
    result = parse_size_multiplier(text)
    assert isinstance(result, ParseError), result
    assert reason in result.reason and "above 0 and at most 100,000" in result.hint


def test_a_size_multiplier_given_as_a_number_is_checked_the_same_way() -> None:
    assert check_size_multiplier(MAX_SIZE_MULTIPLIER) == parse_size_multiplier("100000") == MAX_SIZE_MULTIPLIER
    assert check_size_multiplier(0.5) == 0.5
    for value in (float("nan"), float("inf"), -float("inf"), 0.0, -2.0, 1e9, MAX_SIZE_MULTIPLIER * (1 + 1e-12)):
        assert isinstance(check_size_multiplier(value), ParseError), value


def test_an_amount_that_is_not_finite_is_refused_not_raised() -> None:
    result = place("a1", replace(market(), size_multiplier=float("inf")))
    assert isinstance(result, Refusal) and "not a positive number" in result.reason
    result = place("a1", replace(market(), size_multiplier=float("nan")))
    assert isinstance(result, Refusal)


def test_an_option_order_is_refused_when_the_index_price_is_not_a_price() -> None:
    # The notional of an option is coins x index: a NaN or negative index must not make it pass
    # the notional limit (NaN > limit and -x > limit are both false).
    option_market = TradingContext(instrument=option(), size_multiplier=10, bid=0.05, ask=0.0555, mark=0.053,
                                   index_price=32000.0, limits=replace(LIMITS, max_notional_usd=10_000))
    assert "above the limit" in refused("buyOption:0.0512,1000", option_market)
    for index in (math.nan, -32000.0, math.inf):
        says = refused("buyOption:0.0512,1000", replace(option_market, index_price=index))
        assert "index price" in says, says


@pytest.mark.parametrize("line", ["a200", "as200", "dw200", "as1 18000", "a1 18000 18500 3", "dw200 18000s"])
@pytest.mark.parametrize(("bid", "ask"), [(19000.0, 18990.0), (19000.0, 19000.0), (math.nan, 19000.0),
                                          (18990.0, math.inf), (-18990.0, 19000.0)])
def test_no_order_from_a_crossed_or_implausible_touch(line: str, bid: float, ask: float) -> None:
    # A quote that is not a market (crossed, locked, NaN, infinite or negative) prices no
    # order, whatever the line, even when the keeper did not mark it stale.
    says = refused(line, replace(market(), bid=bid, ask=ask))
    assert "not a market" in says, says
