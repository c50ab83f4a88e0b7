"""The console and an active hedger on one account, below the actor: an order line on the hedge
instrument is refused (cancels never are) unless it ends with ``override``; the future offered by
default is never the active hedger's; the words that confirm a plan and acknowledge an alert; the
red alert line in the views."""

from __future__ import annotations

import io

from rich.console import Console as RichConsole

from console.desk_state import DeskState, ScriptWait
from console.grammar import (
    HELP,
    Cancel,
    Hedging,
    LadderOrder,
    LimitOrder,
    MarketOrder,
    Override,
    ParseError,
    StopOrder,
    TouchOrder,
    parse_line,
    pick_future,
)
from console.orders import Refusal, Trading
from console.terminal import Choices, completions
from console.views import alert_lines, describe_hedger, topic_view
from messages.account import UserTrade
from messages.commands import CommandResult, PlaceOrder
from messages.hedging import HedgeActivation, HedgeCode, HedgePlan, HedgerStatus
from messages.market import InstrumentsLoaded
from messages.state import TopOfBook
from messages.system import ConnectionState, ConnectionStatus
from tests.support.market import LIMITS, NOW, PERP, btc, btc_futures, open_order, portfolio

FUTURE = next(f.instrument_name for f in btc_futures() if f.instrument_name != PERP)


def hedger(activation: HedgeActivation = HedgeActivation.ACTIVE, instrument: str = PERP, currency: str = "BTC",
           alert: str = "", plan: HedgePlan | None = None) -> HedgerStatus:
    return HedgerStatus(currency=currency, active=activation is HedgeActivation.ACTIVE, instrument=instrument,
                        mode="options_vs_hedge", band=0.0025, at=NOW, activation=activation, alert=alert,  # type: ignore[arg-type]
                        plan=plan)


def desk(*statuses: HedgerStatus) -> DeskState:
    d = DeskState(["BTC"])
    d.on_instruments(InstrumentsLoaded(currency="BTC", instruments=btc(), at=NOW))
    d.on_connection(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="simulator", at=NOW, can_trade=True))
    for f in btc_futures():
        d.on_top(TopOfBook(instrument_name=f.instrument_name, kind="future", bid=59990.0, bid_amount=1000.0,
                           ask=60000.0, ask_amount=1000.0, timestamp=0, at=NOW, mark_price=59995.0,
                           index_price=59950.0))
    d.on_portfolio(portfolio(orders=(open_order("o1", "manual_api_1"),)))
    for status in statuses:
        d.on_hedger(status)
    return d


def trading(instrument: str = PERP) -> Trading:
    t = Trading(LIMITS, key_prefix="console-k-", paper=False, trading_allowed=True)
    assert t.configure(instrument, 10.0, btc_futures()) is None
    return t


# -- the refusal -------------------------------------------------------------------------------------
def test_an_order_on_the_active_hedgers_instrument_is_refused_saying_how_to_trade_it() -> None:
    d = desk(hedger())
    for line in (MarketOrder("buy", 2), TouchOrder("sell", 2, "ask"), LimitOrder("buy", 2, 59000.0),
                 StopOrder("sell", 2, 58000.0), LadderOrder("buy", 1, 59000.0, 59500.0, 3)):
        refusal = trading().orders(line, d, NOW)
        assert isinstance(refusal, Refusal), line
        assert refusal.reason == ("the BTC delta hedger owns BTC-PERPETUAL: it treats the whole position there as "
                                  "its hedge and would trade this order away")
        assert refusal.hint == ("to trade it anyway: another future (change instrument), deactivate delta hedging "
                                "first, or the same line ending with override")
    sent = trading().orders(MarketOrder("buy", 2), d, NOW, override=True)
    assert isinstance(sent, tuple) and [(o.instrument_name, o.side, o.amount) for o in sent] == [(PERP, "buy", 20.0)]


def test_other_futures_an_inactive_or_awaiting_hedger_and_cancels_are_not_refused() -> None:
    assert isinstance(trading(FUTURE).orders(MarketOrder("buy", 2), desk(hedger()), NOW), tuple)
    for status in (hedger(HedgeActivation.OFF), hedger(HedgeActivation.AWAITING_CONFIRMATION),
                   hedger(instrument="BTC-24SEP21"), hedger(currency="ETH", instrument="ETH-PERPETUAL")):
        assert isinstance(trading().orders(MarketOrder("buy", 2), desk(status), NOW), tuple), status
    t = trading()
    for scope in ("all", "last", "buys"):
        assert isinstance(t.cancels(Cancel(scope), desk(hedger()), (), "BTC"), tuple), scope  # type: ignore[arg-type]


def test_a_piped_override_waits_for_its_answer_not_for_a_position_the_hedger_moves_too() -> None:
    d = desk(hedger())
    orders = trading().orders(MarketOrder("buy", 2), d, NOW, override=True)
    assert isinstance(orders, tuple)
    wait = ScriptWait.for_orders(orders, d, 9.0)
    assert wait.missing(d) == ["answer to console-k-manual_api_2"]
    wait.on_answer(CommandResult(request_key=orders[0].request_key, origin="console", method="private/buy",
                                 result="{}", trades=(fill(orders[0]),)))
    assert wait.missing(d) == []  # the position is the hedger's to move as well
    elsewhere = trading(FUTURE).orders(MarketOrder("buy", 2), d, NOW)
    assert isinstance(elsewhere, tuple)
    wait = ScriptWait.for_orders(elsewhere, d, 9.0)
    wait.on_answer(CommandResult(request_key=elsewhere[0].request_key, origin="console", method="private/buy",
                                 result="{}", trades=(fill(elsewhere[0]),)))
    assert wait.missing(d) == [f"position {FUTURE} 20"]


def fill(order: PlaceOrder) -> UserTrade:
    return UserTrade(trade_id="t1", order_id="o9", instrument_name=order.instrument_name, timestamp=1,
                     direction=order.side, price=60000.0, amount=order.amount, fee=0.0, fee_currency="BTC",
                     label=order.label)


def test_the_words_on_the_line() -> None:
    assert parse_line("a200 override") == Override(MarketOrder("buy", 200.0))
    assert parse_line("dw200 18000s override") == Override(StopOrder("sell", 200.0, 18000.0))
    assert parse_line("a100 16000 18000 10 override") == Override(LadderOrder("buy", 100.0, 16000.0, 18000.0, 10))
    for typo in ("a200c override", "a200 overridec"):
        refused = parse_line(typo)
        assert isinstance(refused, ParseError) and "last letter is c" in refused.reason, typo
    for wrong in ("a override", "a200 override override", "a200 OVERRIDE", "override", "buyOption:0.05,1 override"):
        assert isinstance(parse_line(wrong), ParseError), wrong
    assert parse_line("activate delta hedging confirm") == Hedging("confirm")
    assert parse_line("Activate Delta Hedging  CONFIRM") == Hedging("confirm")
    assert parse_line("ack") == Hedging("acknowledge")
    assert "a200 override" in HELP and "activate delta hedging confirm" in HELP and "  ack " in HELP
    choices = Choices(tuple(btc_futures()), (), PERP, 10.0)
    assert completions("a200 ov", choices, False) == ["a200 override"]
    assert completions("as100 16000 ", choices, False) == ["as100 16000 override"]
    assert completions("a200c ov", choices, False) == [] and completions("ca ov", choices, False) == []


# -- the default future ------------------------------------------------------------------------------
def test_the_default_future_is_never_the_active_hedgers() -> None:
    futures = desk().futures("BTC")  # as listed: the perpetual first, then by expiry
    assert futures[0].instrument_name == PERP
    assert (desk().default_future(["BTC"]) or futures[-1]).instrument_name == PERP
    assert (desk(hedger(HedgeActivation.OFF)).default_future(["BTC"]) or futures[-1]).instrument_name == PERP
    for status in (hedger(), hedger(HedgeActivation.AWAITING_CONFIRMATION)):
        d = desk(status)
        default = d.default_future(["BTC"])
        assert default is not None and default.instrument_name == futures[1].instrument_name != PERP
        t = Trading(LIMITS, key_prefix="k-", paper=False, trading_allowed=True)
        assert t.configure("", 10.0, futures, default) is None and t.instrument == default.instrument_name
    assert pick_future("", futures, futures[2]) == futures[2]
    assert isinstance(pick_future("", futures), ParseError)  # no default: the question is asked again
    assert pick_future("1", futures, futures[2]) == futures[0]  # a number or a name is taken as typed
    second = futures[1].instrument_name
    listing = Choices(tuple(futures[:2]), (), None, None, second, (PERP,)).futures_listing(", ")
    assert listing == f"futures: 1 {PERP} (hedger's), 2 {second}; Enter: {second}"


def test_what_the_console_says_when_it_trades_the_hedgers_instrument() -> None:
    assert "the BTC delta hedger owns it: orders there need override" in (trading().describe(desk(hedger())) or "")
    assert "owns" not in (trading(FUTURE).describe(desk(hedger())) or "")
    note = "NOTE: the console trades BTC-PERPETUAL, the hedger's instrument: orders there are refused"
    assert note in describe_hedger(hedger(), PERP)
    assert note in describe_hedger(hedger(HedgeActivation.AWAITING_CONFIRMATION), PERP)
    assert note not in describe_hedger(hedger(), FUTURE) and note not in describe_hedger(hedger(HedgeActivation.OFF),
                                                                                          PERP)


# -- the alert ----------------------------------------------------------------------------------------
def render(renderable: object) -> str:
    out = io.StringIO()
    RichConsole(file=out, width=200).print(renderable)
    return out.getvalue()


def test_the_alert_line_is_red_and_in_every_status_view_until_acknowledged() -> None:
    why = "3 hedge orders rejected in a row (last: not_enough_funds); hedging switched off"
    off = hedger(HedgeActivation.OFF, alert=why)
    [line] = alert_lines([off, hedger(currency="ETH", instrument="ETH-PERPETUAL")])
    assert line.plain == f"ALERT hedger BTC switched itself off: {why} (type ack to acknowledge)"
    assert "red" in str(line.style)
    d = desk(off)
    assert [s.currency for s in d.alerts()] == ["BTC"]
    for topic in ("status", "hedging"):
        assert "ALERT hedger BTC switched itself off" in render(topic_view(topic, d, PERP, None, 10.0, "BTC"))
    d.on_hedger(hedger(HedgeActivation.OFF))  # acknowledged: the hedger's status no longer carries it
    assert d.alerts() == []
    assert "ALERT" not in render(topic_view("status", d, PERP, None, 10.0, "BTC"))


def test_the_table_shows_a_plan_awaiting_confirmation() -> None:
    plan = HedgePlan(plan_id=3, at=NOW, expires_at=NOW + 60, instrument=PERP, code=HedgeCode.TRADE, reason="r",
                     side="sell", amount=3000.0, order_type="market", hedge_position=3000.0)
    status = hedger(HedgeActivation.AWAITING_CONFIRMATION, plan=plan)
    assert "hedger BTC: awaiting confirmation on BTC-PERPETUAL" in describe_hedger(status)
    assert "│ awaiting confirmation │" in render(topic_view("hedging", desk(status), PERP, None, 10.0, "BTC"))
    assert plan.describe() == ("first order: sell 3,000 USD of BTC-PERPETUAL (market); it treats the whole position "
                               "in BTC-PERPETUAL (+3,000 USD, +3,000 USD of it not made by the hedger) as the hedge")
