"""What the desk shows (console/tables.py), read as a trader reads it: rendered with rich at 120
columns, on the real capture's BTC listing and tickers (2021-07-22) and the public linear USDC
instrument shapes (tests/fixtures/public_instruments)."""

from __future__ import annotations

import io
import math
import re

import msgspec
from rich.console import Console, RenderableType

from console.chain_focus import ChainFocus, focused_chain
from console.desk_state import LIVE_QUOTE_MAX_AGE_S, DeskState
from console.numbers import coin_text, greek_text, usd_text
from console.tables import (
    CHAIN_FULL_WIDTH,
    chain_table,
    direction_of,
    header_text,
    hedger_panel,
    orders_table,
    position_line,
    position_lines,
    position_totals,
    positions_table,
    strike_window,
)
from console.views import topic_view
from messages.account import OrderUpdate, Position
from messages.hedging import HedgeActivation, HedgeMode, HedgerStatus
from messages.market import IndexPrice, Instrument, InstrumentsLoaded, Ticker, VolatilityIndex
from messages.state import ChainView, OptionQuote, PortfolioChanged, TopOfBook
from messages.surface import SurfaceSnapshot
from messages.system import ConnectionState, ConnectionStatus
from tests.support import capture
from tests.support.contracts import OPTION_POSITIONS
from tests.support.public_instruments import as_instrument, public_entries

SEP21 = 1632470400000  # BTC-24SEP21, 08:00 UTC
FORWARD = 32374.66  # the capture's underlying_price of 24SEP21 at its last tickers
INDEX = 32208.13


def render(renderable: RenderableType, width: int = 120) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def ansi(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(width=120, file=out, force_terminal=True, color_system="standard").print(renderable)
    return out.getvalue()


def real_ticker(name: str) -> Ticker:
    return [t for t in capture.tickers() if t.instrument_name == name][-1]


NOW = real_ticker("BTC-24SEP21-8000-P").timestamp / 1000.0


def from_ticker(ticker: Ticker, instrument: Instrument, stale: bool = False) -> OptionQuote:
    """The quote a book keeper answers with, from a real ticker."""
    greeks = ticker.greeks
    return OptionQuote(
        instrument_name=ticker.instrument_name, expiry_ms=instrument.expiration_timestamp,
        strike=instrument.strike or 0.0, option_type=instrument.option_type or "call", bid=ticker.best_bid_price,
        bid_amount=ticker.best_bid_amount or 0.0, ask=ticker.best_ask_price, ask_amount=ticker.best_ask_amount or 0.0,
        mark_price=ticker.mark_price, mark_iv=ticker.mark_iv, underlying_price=ticker.underlying_price,
        index_price=ticker.index_price, open_interest=ticker.open_interest,
        delta=greeks.delta if greeks else None, gamma=greeks.gamma if greeks else None,
        vega=greeks.vega if greeks else None, theta=greeks.theta if greeks else None, age_s=0.1, stale=stale,
        bid_iv=ticker.bid_iv, ask_iv=ticker.ask_iv, volume_24h=ticker.stats.volume if ticker.stats else None)


def made_up(instrument: Instrument, mark: float, stale: bool = False) -> OptionQuote:
    """A quote around ``mark`` for the strikes the capture has no ticker of."""
    return OptionQuote(
        instrument_name=instrument.instrument_name, expiry_ms=instrument.expiration_timestamp,
        strike=instrument.strike or 0.0, option_type=instrument.option_type or "call", bid=mark - 0.0005,
        bid_amount=12.3, ask=mark + 0.0005, ask_amount=4.5, mark_price=mark, mark_iv=80.5,
        underlying_price=FORWARD, index_price=INDEX, open_interest=100.0, delta=0.5, gamma=0.00002, vega=50.0,
        theta=-30.0, age_s=0.1, stale=stale, bid_iv=79.0, ask_iv=82.0, volume_24h=7.0)


def btc_desk() -> DeskState:
    desk = DeskState(["BTC"])
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=capture.instruments("BTC"), at=NOW))
    desk.on_index(IndexPrice(index_name="btc_usd", price=INDEX, timestamp=int(NOW * 1000)))
    return desk


def sep21(desk: DeskState) -> dict[str, Instrument]:
    return {i.instrument_name: i for i in desk.options("BTC") if i.expiration_timestamp == SEP21}


def chain_desk(stale: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> DeskState:
    """Every 24SEP21 option quoted live at NOW (the real tickers where the capture has them)."""
    desk = btc_desk()
    quotes = []
    for name, instrument in sep21(desk).items():
        if name in missing:
            continue
        if name in ("BTC-24SEP21-8000-P", "BTC-24SEP21-34000-P"):
            quotes.append(from_ticker(real_ticker(name), instrument, stale=name in stale))
        else:
            strike = instrument.strike or 0.0
            intrinsic = max(0.0, (FORWARD - strike) if instrument.option_type == "call" else (strike - FORWARD))
            quotes.append(made_up(instrument, round(intrinsic / FORWARD + 0.05, 4), stale=name in stale))
    desk.on_chain_view(ChainView(currency="BTC", at=NOW, request_id=1, index_price=INDEX, options=tuple(quotes)))
    return desk


def rows(text: str) -> list[str]:
    """The chain's body rows (after the header's rule, up to a blank or a footer line)."""
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("───"))
    body = []
    for line in lines[start + 1:]:
        if not re.search(r"\d{1,3}(,\d{3})*<? ", line) or line.startswith("*"):
            break
        body.append(line)
    return body


def strike_of(row: str) -> str:
    match = re.search(r" (>?\d{1,3}(?:,\d{3})*<?) ", row[40:])
    assert match, row
    return match.group(1)


# -- the chain ------------------------------------------------------------------------------------
def test_the_chain_title_window_and_atm_marker() -> None:
    text = render(chain_table(chain_desk(), "BTC", SEP21, 3, NOW))
    # forward (the quotes' underlying_price), fractional days to 08:00 UTC 24 Sep, the index
    assert "BTC 24SEP21  fwd 32,374.66  63.4d  index 32,208.13  (prices in BTC, IV %)" in text
    body = rows(text)
    # three strikes at or below the forward, three above; the one nearest it marked
    assert [strike_of(r) for r in body] == ["28,000", "30,000", ">32,000<", "34,000", "36,000", "38,000"]
    assert all(len(line) <= 120 for line in text.splitlines()) and "…" not in text
    assert "stale" not in text and "*" not in text  # nothing stale: no marker, no footer


def test_the_chain_shows_the_real_ticker_to_the_tick() -> None:
    text = render(chain_table(chain_desk(), "BTC", SEP21, 3, NOW))
    [row] = [r for r in rows(text) if strike_of(r) == "34,000"]
    put = row.split("34,000", 1)[1].split()
    # bid size, bid IV, bid, mark, ask, ask IV, ask size, delta: the capture's ticker of 34000-P
    t = real_ticker("BTC-24SEP21-34000-P")
    assert t.best_bid_price is not None and t.best_ask_price is not None and t.greeks is not None
    assert put == [f"{t.best_bid_amount:,.1f}", f"{t.bid_iv:.1f}", f"{t.best_bid_price:.4f}", f"{t.mark_price:.4f}",
                   f"{t.best_ask_price:.4f}", f"{t.ask_iv:.1f}", f"{t.best_ask_amount:,.1f}",
                   greek_text(t.greeks.delta, 2)]
    # every price (bid, mark, ask of each side) has the tick's (0.0005) four decimals
    for line in rows(text):
        call, put = (side.split() for side in line.split(strike_of(line)))
        assert all(re.fullmatch(r"\d\.\d{4}", cell) for cell in call[3:6] + put[2:5]), line


def test_full_width_adds_open_interest_and_volume() -> None:
    narrow = render(chain_table(chain_desk(), "BTC", SEP21, 20, NOW))
    wide = render(chain_table(chain_desk(), "BTC", SEP21, 20, NOW, width=CHAIN_FULL_WIDTH), CHAIN_FULL_WIDTH)
    assert "OI" not in narrow and "vol24h" not in narrow
    assert wide.count("OI") == 2 and wide.count("vol24h") == 2 and "…" not in wide
    [row] = [r for r in rows(wide) if strike_of(r) == "8,000"]
    assert row.split()[-2:] == ["729.2", "10.1"]  # the real 8000-P: open interest, 24 h volume
    assert len(rows(wide)) == 31  # every strike of the expiry (20 each side is more than listed)


def test_stale_cells_are_marked_and_counted_only_when_stale() -> None:
    desk = chain_desk(stale=("BTC-24SEP21-34000-P",))
    text = render(chain_table(desk, "BTC", SEP21, 3, NOW))
    [row] = [r for r in rows(text) if strike_of(r) == "34,000"]
    mark = real_ticker("BTC-24SEP21-34000-P").mark_price
    assert f"*{mark:.4f}" in row.split("34,000")[1]
    assert "* 1 book is stale" in text and "BTC-24SEP21-34000-P" in text
    assert "\x1b[33m" in ansi(chain_table(desk, "BTC", SEP21, 3, NOW))  # yellow


def test_a_missing_or_old_quote_shows_a_dash() -> None:
    desk = chain_desk(missing=("BTC-24SEP21-36000-C",))
    [row] = [r for r in rows(render(chain_table(desk, "BTC", SEP21, 3, NOW))) if strike_of(r) == "36,000"]
    call, put = row.split("36,000")
    assert call.split() == ["-"] * 8 and "-" not in put.split()[:7]
    # A keeper that stopped answering: nothing older than the live limit is shown.
    later = NOW + LIVE_QUOTE_MAX_AGE_S + 0.5
    text = render(chain_table(desk, "BTC", SEP21, 3, later))
    assert "0.0" not in "".join(rows(text)) and "no live BTC quotes for 24SEP21 yet" in text


def test_strike_window_edges() -> None:
    strikes = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert strike_window(strikes, 30.0, 2) == [20.0, 30.0, 40.0, 50.0]
    assert strike_window(strikes, 5.0, 2) == [10.0, 20.0]
    assert strike_window(strikes, 99.0, 2) == [40.0, 50.0]
    assert strike_window(strikes, None, 1) == [20.0, 30.0]


def test_a_linear_chain_is_priced_in_usdc_to_its_tick() -> None:
    entries = public_entries()
    listing = []
    for strike in (130.0, 140.0, 150.0, 160.0):
        for kind in ("sol_call", "sol_put"):
            entry = entries[kind]
            letter = entry["instrument_name"][-1]
            listing.append(as_instrument({**entry, "strike": strike,
                                          "instrument_name": f"SOL_USDC-26JUN26-{strike:g}-{letter}"}))
    listing.append(as_instrument(entries["sol_usdc_perpetual"]))
    desk = DeskState(["SOL_USDC"])
    desk.on_instruments(InstrumentsLoaded(currency="SOL_USDC", instruments=tuple(listing), at=NOW))
    now = listing[0].expiration_timestamp / 1000.0 - 2.5 * 86400
    quotes = tuple(msgspec.structs.replace(made_up(i, 12.3), bid=12.25, ask=12.4, underlying_price=147.5)
                   for i in listing if i.kind == "option")
    desk.on_chain_view(ChainView(currency="SOL_USDC", at=now, request_id=1, index_price=147.0, options=quotes))
    text = render(chain_table(desk, "SOL_USDC", listing[0].expiration_timestamp, 2, now))
    assert "SOL_USDC 26JUN26  fwd 147.50  2.5d  index 147.00  (prices in USDC, IV %)" in text
    assert [strike_of(r) for r in rows(text)] == ["130", "140", ">150<", "160"]  # 150 is nearest 147.50
    assert " 12.25 12.30 12.40 " in text  # bid, mark, ask


def test_the_chain_command_shows_one_expiry() -> None:
    # The old `chain` printed every expiry (about 365 lines on mainnet) and the stale footer always.
    desk = chain_desk()
    focus = ChainFocus(("BTC",), strikes=5)
    assert focus.choose(None, "24SEP21", desk, NOW) is None
    text = render(focused_chain(desk, focus, NOW))
    assert "BTC 24SEP21" in text and "stale" not in text
    nearest = ChainFocus(("BTC",), strikes=5)
    text = render(focused_chain(desk, nearest, NOW))
    assert "BTC 23JUL21" in text and "BTC 24SEP21" not in text  # the next expiry: tomorrow 08:00
    assert len(text.splitlines()) < 20
    assert focus.choose(None, "1OCT21", desk, NOW) == \
        "no BTC options expire on 1OCT21; listed: 23JUL21, 24JUL21, 30JUL21, 6AUG21, 13AUG21, 27AUG21, 24SEP21, " \
        "31DEC21, 25MAR22, 24JUN22"


# -- positions ------------------------------------------------------------------------------------
def sol_desk() -> DeskState:
    entries = public_entries()
    listing = (as_instrument(entries["sol_call"]), as_instrument(entries["sol_usdc_perpetual"]))
    desk = DeskState(["BTC", "SOL_USDC"])
    desk.on_instruments(InstrumentsLoaded(currency="SOL_USDC", instruments=listing, at=NOW))
    desk.on_instruments(InstrumentsLoaded(currency="BTC", instruments=capture.instruments("BTC"), at=NOW))
    desk.on_index(IndexPrice(index_name="btc_usd", price=INDEX, timestamp=int(NOW * 1000)))
    desk.on_index(IndexPrice(index_name="sol_usdc", price=147.0, timestamp=int(NOW * 1000)))
    return desk


SOL_CALL = Position(instrument_name="SOL_USDC-26JUN26-150-C", kind="option", direction="sell", size=-10.0,
                    average_price=14.0, mark_price=12.5, floating_profit_loss=3.2, total_profit_loss=15.0,
                    delta=-5.1, gamma=-0.2, vega=-3.3, theta=1.1)
SOL_PERP = Position(instrument_name="SOL_USDC-PERPETUAL", kind="future", direction="buy", size=5.0,
                    average_price=140.0, mark_price=147.2, floating_profit_loss=36.0, total_profit_loss=36.0, delta=5.0)
BTC_PERP = Position(instrument_name="BTC-PERPETUAL", kind="future", direction="buy", size=12340.0,
                    average_price=31000.0, mark_price=32210.5, delta=0.3831, floating_profit_loss=0.0123456,
                    total_profit_loss=0.2345)
BTC_CALL = Position(instrument_name="BTC-24SEP21-40000-C", kind="option", direction="sell", size=-12.5,
                    average_price=0.0125, mark_price=0.011, delta=-2.1234, gamma=-0.000123, vega=-123.45, theta=45.67,
                    floating_profit_loss=-0.0012, total_profit_loss=0.00123, floating_profit_loss_usd=-40.1)


def portfolio(currency: str, *positions: Position, **figures: float) -> PortfolioChanged:
    return PortfolioChanged(currency=currency, at=NOW, positions=positions, open_orders=(), reconciled=True,
                            **figures)  # type: ignore[arg-type]


def test_a_linear_position_is_valued_without_inverse_maths() -> None:
    desk = sol_desk()
    desk.on_portfolio(portfolio("SOL_USDC", SOL_CALL, SOL_PERP))
    lines = {line.position.instrument_name: line for line in position_lines(desk)}
    call, perp = lines["SOL_USDC-26JUN26-150-C"], lines["SOL_USDC-PERPETUAL"]
    assert call.linear and call.settlement == "USDC"
    assert call.value_usd == -10.0 * 12.5  # size x mark in USDC: no index, no division
    assert (call.floating_usd, call.total_usd) == (3.2, 15.0)
    assert perp.value_usd == 5.0 * 147.2 and perp.total_usd == 36.0
    text = render(positions_table(desk, NOW))
    row = next(line for line in text.splitlines() if line.startswith("SOL_USDC-26JUN26-150-C"))
    assert row.split()[1:8] == ["short", "-10.0", "14.00", "12.50", "-125.00", "3.20", "15.00"]
    assert "SOL_USDC total (USDC)" in text


def test_an_inverse_option_is_valued_at_the_index_and_the_exchanges_usd_pnl_preferred() -> None:
    desk = btc_desk()
    desk.on_portfolio(portfolio("BTC", BTC_PERP, BTC_CALL))
    lines = {line.position.instrument_name: line for line in position_lines(desk)}
    call, perp = lines["BTC-24SEP21-40000-C"], lines["BTC-PERPETUAL"]
    assert call.value_usd is not None and math.isclose(call.value_usd, -12.5 * 0.011 * INDEX)
    assert call.floating_usd is not None and math.isclose(call.floating_usd, -0.0012 * INDEX)
    assert call.total_usd == -40.1  # the exchange's USD PnL since opened (floating_profit_loss_usd)
    # The real positions: Deribit's USD figure is the total since opened, near total x the index then.
    for real in OPTION_POSITIONS:
        assert real.total_profit_loss is not None and real.index_price is not None
        assert real.floating_profit_loss_usd == position_line(desk, "BTC", real).total_usd
        assert math.isclose(real.floating_profit_loss_usd, real.total_profit_loss * real.index_price, rel_tol=0.06)
    assert perp.value_usd == 12340.0  # an inverse future's size is USD
    text = render(positions_table(desk, NOW))
    perp_row = next(line for line in text.splitlines() if line.startswith("BTC-PERPETUAL"))
    assert perp_row.split() == ["BTC-PERPETUAL", "long", "12,340", "31,000.0", "32,210.5", "12,340", "0.0123",
                                "0.2345", usd_text(0.0123456 * INDEX), usd_text(0.2345 * INDEX), "0.3831"]
    assert all(len(line) <= 120 for line in text.splitlines()) and "…" not in text


def test_totals_rows_are_the_sums_of_the_lines() -> None:
    desk = sol_desk()
    desk.on_portfolio(portfolio("BTC", BTC_PERP, BTC_CALL, *[p for p in OPTION_POSITIONS if p.instrument_name[:3]
                                                             == "BTC"]))
    desk.on_portfolio(portfolio("SOL_USDC", SOL_CALL, SOL_PERP))
    lines = position_lines(desk)
    totals = {t.currency: t for t in position_totals(lines)}
    for currency, t in totals.items():
        mine = [line for line in lines if line.currency == currency]
        options = [line.position for line in mine if not line.future]
        assert t.delta == sum(line.position.delta or 0.0 for line in mine)
        assert t.gamma == sum(p.gamma for p in options if p.gamma is not None) or t.gamma is None
        assert t.floating == sum(line.floating or 0.0 for line in mine)
        assert t.total_usd is not None and math.isclose(t.total_usd, sum(line.total_usd or 0.0 for line in mine))
    text = render(positions_table(desk, NOW))
    sol = next(line for line in text.splitlines() if line.startswith("SOL_USDC total"))
    assert sol.split()[3:] == ["611.00", "39.20", "51.00", "39.20", "51.00", greek_text(-0.1, 4), greek_text(-0.2, 5),
                               "-3.3", "1.1"]
    # The real option positions carry no gamma: the BTC total says it cannot add it up.
    assert totals["BTC"].gamma is None and totals["BTC"].delta is not None


def test_futures_carry_delta_only_and_directions_are_coloured() -> None:
    desk = btc_desk()
    desk.on_portfolio(portfolio("BTC", BTC_PERP, BTC_CALL))
    text = render(positions_table(desk, NOW))
    perp_row = next(line for line in text.splitlines() if line.startswith("BTC-PERPETUAL"))
    assert perp_row.rstrip().endswith("0.3831")  # no gamma, vega, theta for a future
    coloured = ansi(positions_table(desk, NOW))
    assert "\x1b[32mlong" in coloured and "\x1b[31mshort" in coloured
    flat = msgspec.structs.replace(BTC_PERP, direction="zero", size=-10.0)
    assert direction_of(flat) == "short"


def test_hostile_figures_show_a_dash_and_never_crash() -> None:
    desk = btc_desk()
    desk.on_index(IndexPrice(index_name="btc_usd", price=0.0, timestamp=int(NOW * 1000)))
    nan_mark = msgspec.structs.replace(BTC_CALL, mark_price=float("nan"), delta=None, gamma=None, vega=None,
                                       theta=None, floating_profit_loss_usd=None, total_profit_loss=float("inf"))
    desk.on_portfolio(portfolio("BTC", nan_mark, BTC_PERP))
    text = render(positions_table(desk, NOW))
    row = next(line for line in text.splitlines() if line.startswith("BTC-24SEP21-40000-C")).split()
    assert row[4:] == ["-", "-", "-0.0012", "-", "-", "-", "-", "-", "-", "-"]
    total = next(line for line in text.splitlines() if line.startswith("BTC total")).split()
    assert "-" in total and "nan" not in text.lower() and "inf" not in text.lower()
    # a chain quote with every figure missing, and no index at all
    empty = DeskState(["BTC"])
    empty.on_instruments(InstrumentsLoaded(currency="BTC", instruments=capture.instruments("BTC"), at=NOW))
    call = sep21(empty)["BTC-24SEP21-32000-C"]
    blank = msgspec.structs.replace(made_up(call, 0.05), bid=None, ask=None, mark_price=float("nan"), mark_iv=None,
                                    underlying_price=None, delta=None, bid_iv=None, ask_iv=None)
    empty.on_chain_view(ChainView(currency="BTC", at=NOW, request_id=1, index_price=None, options=(blank,)))
    text = render(chain_table(empty, "BTC", SEP21, 2, NOW))
    assert "fwd -" in text and "index -" in text and "nan" not in text.lower()
    render(header_text(empty, "simulator", NOW))


# -- header, hedger, orders -------------------------------------------------------------------------
def hedger(**kw: object) -> HedgerStatus:
    fields: dict[str, object] = {"currency": "BTC", "active": True, "instrument": "BTC-PERPETUAL",
                                 "mode": HedgeMode.OPTIONS_VS_HEDGE, "band": 0.0025, "at": NOW - 12,
                                 "options_delta": -1.2345, "hedge_delta": 1.2, "mismatch": -0.0345,
                                 "message": "hedge sent: buy 1,110 USD", "activation": HedgeActivation.ACTIVE}
    return HedgerStatus(**(fields | kw))  # type: ignore[arg-type]


def test_header_names_link_index_vols_and_hedger() -> None:
    desk = btc_desk()
    desk.on_connection(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="mainnet", at=NOW - 100,
                                        authenticated=True, can_trade=True))
    desk.on_top(TopOfBook(instrument_name="BTC-PERPETUAL", kind="future", bid=32200.0, bid_amount=10.0, ask=32200.5,
                          ask_amount=10.0, timestamp=0, at=NOW - 0.3))
    desk.on_surface(SurfaceSnapshot(currency="BTC", at=NOW - 30, method="svi", index_price=INDEX, quotes=(),
                                    points=(), fits=(), tenors=(), variance_index=79.54, atm_iv_30d=78.04))
    desk.on_hedger(hedger())
    text = render(header_text(desk, "mainnet", NOW))
    assert "mainnet  subscribed, logged in, trading allowed  last data <1s ago" in text
    assert "BTC  index 32,208.13  desk vol index 79.5 (no DVOL)  ATM30 78.0  hedger active" in text
    desk.on_volatility_index(VolatilityIndex(index_name="btc_usd", volatility=81.37, timestamp=int(NOW * 1000)))
    desk.on_hedger(hedger(active=False, activation=HedgeActivation.OFF, alert="3 orders rejected"))
    text = render(header_text(desk, "mainnet", NOW))
    assert "DVOL 81.4  var30 79.5  ATM30 78.0  hedger inactive ALERT" in text


def test_hedger_panel_shows_state_band_deltas_and_the_alert() -> None:
    desk = btc_desk()
    desk.on_hedger(hedger())
    text = render(hedger_panel(desk, NOW))
    assert re.search(r"│ BTC\s*│ active\s*│ BTC-PERPETUAL\s*│ 0.0025 │\s*-1.2345 │\s*1.2000 │\s*-0.0345 │", text)
    assert "hedge sent: buy 1,110" in text and "12s" in text and "ALERT" not in text
    assert "\x1b[1;31m" in ansi(hedger_panel(desk, NOW))  # the mismatch is beyond the band: red
    desk.on_hedger(hedger(active=False, activation=HedgeActivation.OFF, alert="3 hedge orders rejected in a row"))
    text = render(hedger_panel(desk, NOW))
    assert text.startswith("ALERT hedger BTC switched itself off: 3 hedge orders rejected in a row")
    assert "inactive ALERT" in text


def test_orders_are_shown_to_their_tick() -> None:
    desk = btc_desk()
    orders = (OrderUpdate(order_id="o1", instrument_name="BTC-24SEP21-34000-P", order_state="open",
                          order_type="limit", direction="sell", amount=1.5, price=0.05, label="manual_api_2",
                          creation_timestamp=int((NOW - 90) * 1000)),
              OrderUpdate(order_id="o2", instrument_name="BTC-PERPETUAL", order_state="open", order_type="limit",
                          direction="buy", amount=100.0, price=32000.0, post_only=True, label="manual_api_1"))
    desk.on_portfolio(PortfolioChanged(currency="BTC", at=NOW, positions=(), open_orders=orders))
    text = render(orders_table(desk, NOW))
    assert re.search(r"manual_api_2\s+BTC-24SEP21-34000-P\s+sell\s+1.5\s+0.0\s+limit\s+0.0500\s+2m\s+o1", text)
    assert re.search(r"manual_api_1\s+BTC-PERPETUAL\s+buy\s+100\s+0\s+limit\s+32,000.0\s+post-only\s+-\s+o2", text)
    assert "(no open orders)" in render(orders_table(btc_desk(), NOW))


def test_line_mode_words_use_these_tables() -> None:
    desk = btc_desk()
    desk.on_portfolio(portfolio("BTC", BTC_PERP))
    positions = render(topic_view("positions", desk, "BTC-PERPETUAL", None, 10.0, "BTC", NOW))
    assert re.search(r"BTC-PERPETUAL\s+long\s+12,340 ", positions) and "BTC total (BTC)" in positions
    status = render(topic_view("status", desk, "BTC-PERPETUAL", None, 10.0, "BTC", NOW))
    assert "BTC  index 32,208.13" in status and "BTC total (BTC)" in status
    assert coin_text(0.0123456, 4) in status


def test_a_side_without_a_bid_or_an_iv_shows_no_iv_and_absurd_sizes_keep_the_layout() -> None:
    # Deribit's ticker says bid_iv 0 when there is no bid (or it is below the option's intrinsic
    # value): that is no IV, not a 0.0% vol. A negative or absurd size must not widen the table.
    desk = chain_desk()
    view = desk.views["BTC"]
    changed = []
    for q in view.options:
        if q.instrument_name == "BTC-24SEP21-30000-C":
            q = msgspec.structs.replace(q, bid=None, bid_iv=0.0, ask_iv=0.0)
        elif q.instrument_name == "BTC-24SEP21-30000-P":
            q = msgspec.structs.replace(q, bid_amount=-1e308, ask_amount=1e308)
        changed.append(q)
    desk.on_chain_view(ChainView(currency="BTC", at=NOW + 0.1, request_id=2, index_price=INDEX,
                                 options=tuple(changed)))
    text = render(chain_table(desk, "BTC", SEP21, 3, NOW + 0.1))
    assert all(len(line) <= 120 for line in text.splitlines()) and "…" not in text, text
    [row] = [r for r in rows(text) if strike_of(r) == "30,000"]
    call, put = (side.split() for side in row.split("30,000"))
    assert call[1:4] == ["-", "-", "-"] and call[6] == "-", row  # bid size, bid IV, bid; ask IV
    assert put[0] == "-" and put[6] == "-", row  # sizes that are not a size
