"""Properties of the console grammar over random lines (hypothesis): nothing escapes it, and only
a line that an independent description of the language calls valid ever becomes an order."""

from __future__ import annotations

import math
import re
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.grammar import (
    ORDER_COMMANDS,
    Cancel,
    HelpOn,
    LadderOrder,
    LimitOrder,
    MarketOrder,
    OptionOrder,
    ParseError,
    SetContractType,
    StopOrder,
    TouchOrder,
    parse_line,
)
from console.orders import Refusal, orders_for
from messages.commands import check_command
from tests.support.market import market, option

# The language, written independently of the implementation: numbers are plain decimals with no
# sign, exponent, separator or leading zero; words are separated by ASCII spaces.
NUM = r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,8})?"
SHORTCUT = re.compile(
    rf"(?P<side>[ad])(?P<touch>[sw]?)(?P<q>{NUM})"
    rf"(?: +(?P<p>{NUM})(?P<stop>s?)| +(?P<low>{NUM}) +(?P<high>{NUM}) +(?P<n>[1-9][0-9]{{0,3}}))?"
)
OPTION_ORDER = re.compile(rf"(?P<name>(?i:buyoption|selloption)): *(?P<p>{NUM}) *, *(?P<a>{NUM})")
CANCELS = {"ca": "all", "cc": "last", "cb": "buys", "cs": "sells", "cstops": "stops"}


def expected_order(line: str) -> object | None:
    """What the language says ``line`` orders, or None when it is not a valid order line."""
    text = line.strip()
    if len(text) > 200 or not text.isprintable():
        return None
    if m := SHORTCUT.fullmatch(text):
        side = "buy" if m["side"] == "a" else "sell"
        q = float(m["q"])
        if not 0 < q <= 10_000:
            return None
        if m["p"] is not None:
            p = float(m["p"])
            if p <= 0:
                return None
            return StopOrder(side, q, p) if m["stop"] else LimitOrder(side, q, p)
        if m["low"] is not None:
            a, b, n = float(m["low"]), float(m["high"]), int(m["n"])
            if a <= 0 or b <= 0 or a == b or n < 2:
                return None
            return LadderOrder(side, q, min(a, b), max(a, b), n, reversed=(a > b) == (side == "buy"))
        if m["touch"]:
            return TouchOrder(side, q, "bid" if m["touch"] == "s" else "ask")
        return MarketOrder(side, q)
    if m := OPTION_ORDER.fullmatch(text):
        p, a = float(m["p"]), float(m["a"])
        if p <= 0 or not 0 < a <= 10_000:
            return None
        return OptionOrder("buy" if m["name"].lower() == "buyoption" else "sell", p, a)
    return None


def valid_lines() -> st.SearchStrategy[str]:
    number = st.one_of(st.integers(0, 20_000).map(str),
                       st.decimals(0, 30_000, places=2, allow_nan=False).map(lambda d: f"{d:f}"))
    shortcut = st.builds(lambda s, t, q: f"{s}{t}{q}", st.sampled_from("ad"), st.sampled_from(["", "s", "w"]), number)
    return st.one_of(
        shortcut,
        st.builds(lambda s, p, stop: f"{s} {p}{stop}", shortcut, number, st.sampled_from(["", "s"])),
        st.builds(lambda s, a, b, n: f"{s} {a} {b} {n}", shortcut, number, number, st.integers(0, 30)),
        st.builds(lambda side, p, a: f"{side}Option:{p},{a}", st.sampled_from(["buy", "sell"]), number, number),
        st.sampled_from([*CANCELS, "price", "status", "quit", "setContractType:BTC-24SEP21-40000-C"]),
    )


def mutated(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid-looking line with one character inserted, deleted or replaced."""
    alphabet = "adswcx0123456789.,:- sSe\t\n"

    def mutate(line: str, where: int, how: int, char: str) -> str:
        i = where % (len(line) + 1)
        if how == 0:
            return line[:i] + char + line[i:]
        if how == 1:
            return line[:i] + line[i + 1:]
        return line[:i] + char + line[i + 1:]

    return st.builds(mutate, base, st.integers(0, 40), st.integers(0, 2), st.sampled_from(alphabet))


LINES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="adswcx0123456789.,:- sSeE\t", max_size=24),
    valid_lines(),
    mutated(valid_lines()),
    st.builds(lambda a, b: a + b, valid_lines(), st.text(alphabet="c s\n\x00", min_size=1, max_size=3)),
)


def check_orders(command: object) -> None:
    """Pricing never raises, and whatever it produces the exchange encoder accepts."""
    ctx = replace(market(), instrument=option(), bid=0.05, ask=0.0555, mark=0.053) if isinstance(command, OptionOrder) \
        else market()
    result = orders_for(command, ctx, 1)  # type: ignore[arg-type]
    if isinstance(result, Refusal):
        assert result.reason
        return
    assert result
    step = ctx.instrument.min_trade_amount
    for order in result:
        check_command(order)
        assert math.isclose(order.amount / step, round(order.amount / step), abs_tol=1e-9)
        for price in (order.price, order.trigger_price):
            if price is not None:
                ticks = price / ctx.instrument.tick_size
                assert math.isclose(ticks, round(ticks), abs_tol=1e-6)
        if order.price is not None and order.side == "buy":
            assert order.price <= ctx.mark * (1 + 50 / 100)  # type: ignore[operator]


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
def test_no_exception_escapes_and_only_valid_lines_order(line: str) -> None:
    result = parse_line(line)
    assert result is None or type(result).__module__ == "console.grammar"
    expected = expected_order(line)
    if isinstance(result, ORDER_COMMANDS):
        assert expected is not None, f"{line!r} is not a valid order line but gave {result!r}"
        assert result == expected
        check_orders(result)
    else:
        assert expected is None, f"{line!r} is a valid order line but gave {result!r}"
    if isinstance(result, Cancel):
        assert CANCELS[" ".join(line.split())] == result.scope
    if isinstance(result, ParseError):
        assert result.reason and result.hint
    if line.strip().endswith("c") and " ".join(line.split()) not in CANCELS:
        # Never an order; at most the choice of an option (its name ends in -c) or a command's help.
        assert isinstance(result, ParseError | SetContractType | HelpOn), result


@settings(max_examples=2_000, deadline=None)
@given(valid_lines())
def test_valid_lines_are_understood(line: str) -> None:
    result = parse_line(line)
    expected = expected_order(line)
    if expected is not None:
        assert result == expected
        check_orders(result)
    elif SHORTCUT.fullmatch(line) or OPTION_ORDER.fullmatch(line):
        # Out of range (zero, above 10,000, equal bounds, a count below 2): a reason, no order.
        assert isinstance(result, ParseError), result


# Characters outside ASCII, weighted toward those that read as, look like or vanish beside the
# language's own: other scripts' digits (int, float and Decimal read them), full-width and
# mathematical forms, spaces that strip() and split() take, invisible format characters, letters
# whose case mapping is ASCII (upper() of U+017F is S); then any other.
_LOOKALIKES = "\u017f\u0131\u212a\ufb00\u00a0\u2003\u3000\u200b\u200d\ufeff\uff0e\uff0c\uff41\uff44\u2212"
NON_ASCII = st.one_of(
    st.characters(categories=["Nd", "Nl", "No"], min_codepoint=128),
    st.characters(categories=["Zs", "Zl", "Zp", "Cf", "Mn"], min_codepoint=128),
    st.sampled_from(_LOOKALIKES),
    st.characters(min_codepoint=0xFF10, max_codepoint=0xFF5A),  # full-width digits and letters
    st.characters(min_codepoint=128),
)


def with_non_ascii(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``base``'s lines with one to three non-ASCII characters inserted or substituted anywhere."""

    def insert(line: str, edits: list[tuple[int, bool, str]]) -> str:
        for where, replace_one, char in edits:
            i = where % (len(line) + 1)
            line = line[:i] + char + line[i + (1 if replace_one else 0):]
        return line

    edit = st.tuples(st.integers(0, 60), st.booleans(), NON_ASCII)
    return st.builds(insert, base, st.lists(edit, min_size=1, max_size=3))


@settings(max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(with_non_ascii(valid_lines()), st.text(min_size=1, max_size=40).filter(lambda t: not t.isascii())))
def test_no_line_with_a_non_ascii_character_ever_yields_an_order(line: str) -> None:
    assert not line.isascii()
    result = parse_line(line)
    assert not isinstance(result, ORDER_COMMANDS), f"{line!r} gave {result!r}"
    # Nor anything else: the console names a plot's file itself, so no line may hold such characters.
    assert result is None or isinstance(result, ParseError), f"{line!r} gave {result!r}"
    if isinstance(result, ParseError):
        assert result.reason and result.hint
