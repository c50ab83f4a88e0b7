"""The console's pure parts below the actor: the trading context (what is chosen, what an order
or cancel line becomes against the desk's picture, at a given ``now``), what a piped line waits
for, the completion words and the information views."""

from __future__ import annotations

import io
import re

import msgspec
from rich.console import Console as RichConsole

from console.desk_state import LIVE_QUOTE_MAX_AGE_S, DeskState, ScriptWait
from console.grammar import Cancel, LimitOrder, MarketOrder, OptionOrder, Show, Topic
from console.orders import Refusal, Trading, describe_cancel
from console.tables import hedger_panel
from console.terminal import Choices, completions
from console.views import topic_view
from desk.book_family import BookFamily
from messages.commands import CancelAll, CancelByLabel, CancelOrder, PlaceOrder
from messages.hedging import HedgeCode, HedgeMode, HedgerStatus
from messages.market import DataFault, InstrumentsLoaded, Quote
from messages.state import ChainSnapshot, ChainView, TopOfBook
from messages.system import ConnectionState, ConnectionStatus
from tests.support.market import LIMITS, NOW, PERP, PUT, btc, btc_futures, open_order, portfolio, position, quote


def trading(paper: bool = False, trading_allowed: bool = True) -> Trading:
    return Trading(LIMITS, key_prefix="console-k-", paper=paper, trading_allowed=trading_allowed)


def desk(state: ConnectionState = ConnectionState.SUBSCRIBED, can_trade: bool = True,
         **portfolio_kw: object) -> DeskState:
    d = DeskState(["BTC"])
    d.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    d.on_connection(ConnectionStatus(state=state, venue="simulator", at=NOW, can_trade=can_trade))
    d.on_top(TopOfBook(instrument_name=PERP, kind="future", bid=59990.0, bid_amount=1000.0, ask=60000.0,
                       ask_amount=1000.0, timestamp=0, at=NOW, mark_price=59995.0, index_price=59950.0))
    d.on_portfolio(portfolio(**portfolio_kw))  # type: ignore[arg-type]
    return d


def chosen(t: Trading, multiplier: float = 10.0) -> Trading:
    assert t.configure(PERP, multiplier, btc_futures()) is None
    return t


def test_configure_by_number_or_name_and_what_it_says() -> None:
    t = trading()
    assert t.configure("1", None, btc_futures()) is None and t.instrument == btc_futures()[0].instrument_name
    assert t.describe(desk()) is None  # no multiplier yet
    assert t.configure(PERP.lower(), 10.0, btc_futures()) is None
    assert (t.instrument, t.size_multiplier) == (PERP, 10.0)
    assert t.describe(desk()) == "trading BTC-PERPETUAL, size multiplier 10 (a1 = 10 USD)"
    assert "PAPER: orders are printed, not sent" in (chosen(trading(paper=True)).describe(desk()) or "")
    error = t.configure("BTC-1JAN99", None, btc_futures())
    assert error is not None and "is not a listed future" in error and t.instrument == PERP
    # A valid future is kept when the multiplier that came with it is not.
    assert "above 100,000" in (t.configure("1", 200_000.0, btc_futures()) or "")
    assert (t.instrument, t.size_multiplier) == (btc_futures()[0].instrument_name, 10.0)


def test_the_option_is_forgotten_when_the_future_changes() -> None:
    t = chosen(trading())
    assert t.choose_option(PUT, desk()) is None and t.option == PUT
    assert t.configure(PERP, None, btc_futures()) is None and t.option == PUT  # the same future: kept
    assert t.configure("1", None, btc_futures()) is None and t.option is None


def test_choose_option_refuses_other_currencies_and_unlisted_names() -> None:
    t = chosen(trading())
    assert str(t.choose_option("ETH-24SEP21-2000-C", desk())) == (
        "ETH-24SEP21-2000-C is not an option on BTC (the chosen BTC-PERPETUAL)")
    assert str(t.choose_option("BTC-24SEP21-99000-C", desk())) == (
        "BTC-24SEP21-99000-C is not listed; options of the chain: chain [CURRENCY] [EXPIRY]")
    assert t.option is None


def test_order_lines_need_a_choice_a_book_and_a_link() -> None:
    line = MarketOrder("buy", 2)
    assert "no instrument or size multiplier chosen" in str(trading().orders(line, desk(), NOW))
    t = chosen(trading())
    empty = desk()
    del empty.tops[PERP]
    assert "no book for BTC-PERPETUAL yet" in str(t.orders(line, empty, NOW))
    assert "not connected" in str(t.orders(line, desk(ConnectionState.DISCONNECTED, can_trade=False), NOW))
    assert "mainnet orders need --live" in str(chosen(trading(trading_allowed=False)).orders(line, desk(), NOW))
    # Paper orders are printed, not sent: a link without trading rights is enough for them.
    paper = chosen(trading(paper=True, trading_allowed=False))
    assert not isinstance(paper.orders(line, desk(ConnectionState.AUTHENTICATED, can_trade=False), NOW), Refusal)
    assert isinstance(paper.orders(line, desk(ConnectionState.CONNECTING, can_trade=False), NOW), Refusal)


def test_labels_and_request_keys_continue() -> None:
    t = chosen(trading())
    first = t.orders(LimitOrder("buy", 2, 59000.0), desk(), NOW)
    assert isinstance(first, tuple)
    assert [(o.label, o.request_key, o.amount) for o in first] == [("manual_api_1", "console-k-manual_api_1", 20.0)]
    # The console's own last label counts even before the portfolio shows the order...
    second = t.orders(LimitOrder("buy", 2, 59000.0), desk(), NOW)
    assert isinstance(second, tuple) and second[0].label == "manual_api_2"
    # ... and so does a higher one among the open orders; a refusal uses no label.
    higher = desk(orders=(open_order("o7", "manual_api_7"),))
    assert isinstance(t.orders(LimitOrder("buy", 2, 99000.0), higher, NOW), Refusal)
    third = t.orders(LimitOrder("buy", 2, 59000.0), higher, NOW)
    assert isinstance(third, tuple) and third[0].label == "manual_api_8" and t.last_label == 8
    assert (t.key("hedger"), t.key("band")) == ("console-k-hedger-1", "console-k-band-2")


def test_option_orders_are_priced_on_the_live_quote_and_refused_without_one() -> None:
    t = chosen(trading())
    line = OptionOrder("buy", 0.2812, 1.25)
    assert "no option chosen" in str(t.orders(line, desk(), NOW))
    d = desk()
    assert t.choose_option(PUT, d) is None
    put = msgspec.structs.replace(quote(40000, "put", 0.28, 0.29), instrument_name=PUT)
    # The minute's snapshot no longer prices an order: only the live quote does.
    d.on_chain(ChainSnapshot(currency="BTC", kind="option", at=NOW, index_price=31900.0, options=(put,)))
    refused = str(t.orders(line, d, NOW))
    assert f"no live quote for {PUT} yet" in refused and "full minute" not in refused
    d.on_chain_view(ChainView(currency="BTC", at=NOW, request_id=1, index_price=31900.0, options=(put,)))
    orders = t.orders(line, d, NOW + LIVE_QUOTE_MAX_AGE_S)
    assert isinstance(orders, tuple)
    assert (orders[0].instrument_name, orders[0].amount, orders[0].price) == (PUT, 1.2, 0.281)
    # An answer older than that is no live quote (its keeper stopped answering).
    assert f"no live quote for {PUT} yet" in str(t.orders(line, d, NOW + LIVE_QUOTE_MAX_AGE_S + 0.1))
    # An older answer arriving late never replaces a newer one (never back in time).
    d.on_chain_view(ChainView(currency="BTC", at=NOW - 1, request_id=0, index_price=31900.0,
                              options=(msgspec.structs.replace(put, stale=True),)))
    assert isinstance(t.orders(line, d, NOW + 1), tuple)
    d.on_chain_view(ChainView(currency="BTC", at=NOW + 1, request_id=2, index_price=31900.0,
                              options=(msgspec.structs.replace(put, stale=True),)))
    assert "stale" in str(t.orders(line, d, NOW + 1))


def test_cancels_use_the_pending_orders_and_the_waits_know_what_must_go() -> None:
    t = chosen(trading())
    d = desk(orders=(open_order("o1", "manual_api_1"), open_order("o2", "manual_api_2", "sell"),
                     open_order("x", "other")))
    pending = [PlaceOrder(instrument_name=PERP, side="buy", amount=10, origin="console", request_key="r",
                          label="manual_api_5", price=1.0)]
    last = t.cancels(Cancel("last"), d, pending, "BTC")
    assert last == (CancelByLabel(label="manual_api_5", origin="console", request_key="console-k-cancel-last-1",
                                  currency="BTC"),)
    assert describe_cancel(last[0]) == "CancelByLabel manual_api_5"  # type: ignore[index]
    sells = t.cancels(Cancel("sells"), d, (), "BTC")
    assert isinstance(sells, tuple) and describe_cancel(sells[0]) == "CancelOrder o2"
    assert ScriptWait.for_cancels(sells, d, 5.0).gone == {"o2"}
    by_label = CancelByLabel(label="manual_api_1", origin="console", request_key="k1", currency="BTC")
    every = CancelAll(origin="console", request_key="k2")
    assert ScriptWait.for_cancels((by_label,), d, 5.0).gone == {"o1"}
    wait = ScriptWait.for_cancels((every, CancelOrder(order_id="zz", origin="console", request_key="k3")), d, 5.0)
    assert (wait.gone, wait.request_keys, wait.deadline) == ({"o1", "o2", "x", "zz"}, {"k2", "k3"}, 5.0)


def test_an_order_wait_starts_from_the_positions_now() -> None:
    d = desk(positions=(position(20.0),))
    orders = chosen(trading()).orders(LimitOrder("buy", 2, 59000.0), d, NOW)
    assert isinstance(orders, tuple)
    wait = ScriptWait.for_orders(orders, d, 9.0)
    assert (wait.request_keys, wait.baseline, wait.deadline) == ({"console-k-manual_api_1"}, {PERP: 20.0}, 9.0)
    assert wait.missing(d) == ["answer to console-k-manual_api_1"]


def test_the_desk_state_link_and_reconciliation() -> None:
    d = DeskState(["BTC", "ETH"])
    assert not d.link_up and d.unreconciled() == ["BTC", "ETH"]
    d.on_connection(ConnectionStatus(state=ConnectionState.AUTHENTICATED, venue="x", at=NOW))
    d.on_portfolio(portfolio())
    assert d.link_up and d.unreconciled() == ["ETH"]
    d.on_connection(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="x", at=NOW))
    assert not d.link_up


def test_completions() -> None:
    futures = tuple(btc_futures())
    options = tuple(i.instrument_name for i in btc() if i.kind == "option")
    choices = Choices(futures, options, PERP, 10.0)
    assert completions("  act", choices, False) == ["activate delta hedging", "activate delta hedging confirm",
                                                    "activate vega hedging"]
    assert sorted(completions("setcontracttype:btc-24sep21-40000-", choices, False)) == [
        "setcontracttype:BTC-24SEP21-40000-C", "setcontracttype:BTC-24SEP21-40000-P"]
    assert completions("chain", choices, False) == ["chain "]
    assert "ca" not in completions("ca", choices, False)  # the word typed in full is not offered again
    assert completions("BTC-P", choices, True) == [PERP] and completions("BTC-P", choices, False) == []


def test_each_information_word_has_its_view() -> None:
    d = desk(positions=(position(20.0),))
    expected: dict[Topic, str] = {
        "help": "Trading (a buys", "price": "59,990", "funds": "funds", "orders": "(no open orders)",
        "positions": "BTC-PERPETUAL", "connection": "connection: subscribed to simulator",
        "size_multiplier": "size multiplier: 10", "status": "books: futures 1 of 8 synced",
        "surface": "no BTC surface yet", "hedging": "(no status from the hedger yet)",
    }
    assert set(expected) == set(Topic.__args__)  # type: ignore[attr-defined]
    for topic, text in expected.items():
        out = io.StringIO()
        RichConsole(file=out, width=160).print(topic_view(topic, d, PERP, None, 10.0, "BTC"))
        assert text in out.getvalue(), (topic, out.getvalue())
    out = io.StringIO()
    RichConsole(file=out, width=160).print(topic_view(Show("size_multiplier").topic, d, PERP, None, None, "BTC"))
    assert "no size multiplier chosen yet" in out.getvalue()


def test_a_crossed_futures_quote_is_never_traded_on() -> None:
    # The case: bid 61,000 over ask 59,000 on the quote channel. The book keeper marks the
    # future stale (and asks for a resubscribe); `a1` is refused, not sent as a buy at 59,059.

    family = BookFamily("BTC", "future", publish_top=True)
    d, t = desk(), chosen(trading())
    for bid, ask in ((59_990.0, 60_000.0), (61_000.0, 59_000.0)):
        quote_message = Quote(instrument_name=PERP, timestamp=int(NOW * 1000), best_bid_price=bid,
                              best_bid_amount=1000.0, best_ask_price=ask, best_ask_amount=1000.0)
        for message in family.on_quote(quote_message, NOW):
            if isinstance(message, TopOfBook):
                d.on_top(message)
    refused = t.orders(MarketOrder("buy", 1), d, NOW)
    assert isinstance(refused, Refusal) and "stale" in str(refused)


def test_the_hedger_table_says_why_it_holds() -> None:
    status = HedgerStatus(currency="BTC", active=True, instrument=PERP, mode=HedgeMode.OPTIONS_VS_HEDGE, band=0.0025,
                          at=NOW, code=HedgeCode.IMPLAUSIBLE_DATA, fault=DataFault.CROSSED,
                          last_reason="implausible data refused: BTC-PERPETUAL: crossed: bid 80000 above ask 70000",
                          message="hedging activated by console")
    d = desk()
    d.on_hedger(status)
    out = io.StringIO()
    RichConsole(file=out, width=250, color_system=None).print(hedger_panel(d, NOW))
    text = out.getvalue()
    assert "crossed: bid 80000 above ask 70000" in text and "hedging activated by console" in text


def test_the_no_option_hint_names_a_listed_option() -> None:
    # The hint named BTC-24SEP21-40000-C whatever was listed (help examples come from the listing).
    t = chosen(trading())
    d = desk()
    refused = str(t.orders(OptionOrder("buy", 0.05, 1), d, NOW))
    [named] = re.findall(r"setContractType:([A-Z]+-[0-9]\S*)", refused)
    assert d.instrument(named) is not None and d.instrument(named).kind == "option", refused  # type: ignore[union-attr]
    # Later listings give later examples: nothing expired is offered.
    later = desk()
    listing = tuple(i for i in btc() if i.kind != "option" or i.instrument_name != named)
    later.on_instruments(InstrumentsLoaded(currency="BTC", instruments=listing, at=NOW))
    [other] = re.findall(r"setContractType:([A-Z]+-[0-9]\S*)", str(t.orders(OptionOrder("buy", 0.05, 1), later, NOW)))
    assert other != named and later.instrument(other) is not None


def test_no_order_on_an_instrument_past_its_expiry() -> None:
    # From 08:00 until the rollover drops it, an expired option is still listed and its keeper
    # still answers with its last (frozen) quote: nothing may be priced on that.
    t = chosen(trading())
    d = desk()
    assert t.choose_option(PUT, d) is None
    expiry = (d.instrument(PUT) or btc()[0]).expiration_timestamp / 1000
    put = msgspec.structs.replace(quote(40000, "put", 0.28, 0.29), instrument_name=PUT)
    line = OptionOrder("buy", 0.2812, 1.25)
    d.on_chain_view(ChainView(currency="BTC", at=expiry - 1, request_id=1, index_price=31900.0, options=(put,)))
    assert isinstance(t.orders(line, d, expiry - 1), tuple)
    d.on_chain_view(ChainView(currency="BTC", at=expiry + 1, request_id=2, index_price=31900.0, options=(put,)))
    assert "expired" in str(t.orders(line, d, expiry + 1))
    # The same for a future: its book freezes at expiry and is never marked stale.
    future = next(f for f in btc_futures() if f.settlement_period != "perpetual")
    assert t.configure(future.instrument_name, None, btc_futures()) is None
    d.on_top(TopOfBook(instrument_name=future.instrument_name, kind="future", bid=59990.0, bid_amount=1000.0,
                       ask=60000.0, ask_amount=1000.0, timestamp=0, at=NOW, mark_price=59995.0))
    at = future.expiration_timestamp / 1000
    assert isinstance(t.orders(MarketOrder("buy", 2), d, at - 1), tuple)
    assert "expired" in str(t.orders(MarketOrder("buy", 2), d, at))


def test_a_refused_choice_of_option_forgets_the_previous_one() -> None:
    # setContractType:X refused (X expired at 08:00 and left the list), then buyOption: the order
    # went to the option chosen before X, which the trader no longer meant.
    t = chosen(trading())
    d = desk()
    assert t.choose_option(PUT, d) is None
    assert isinstance(t.choose_option("BTC-24SEP21-99000-C", d), Refusal)
    assert t.option is None
    assert "no option chosen" in str(t.orders(OptionOrder("buy", 0.2812, 1.25), d, NOW))
