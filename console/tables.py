"""What the desk shows, as rich renderables: the option chain of one expiry, the positions with
their greeks and totals, the header (link, index, DVOL, the desk's vol figures, the hedgers), the
hedger panel and the open orders.

Pure functions over :class:`~console.desk_state.DeskState` and ``now`` (no actor, no terminal, no
printing): the line-mode commands print them, the full-screen application renders them to ANSI
text. They are laid out for a 120-column terminal; every number goes through
:mod:`console.numbers` (prices to their instrument's tick, ``-`` for what is missing or not finite).
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.numbers import (
    MISSING,
    _finite,
    amount_text,
    coin_text,
    greek_text,
    iv_text,
    price_text,
    usd_text,
)
from console.views import ALERT_STYLE, activation_text, alert_lines, describe_vega_hedger, expiry_label
from deribit.instruments import family_of, identity_of
from messages.account import Position
from messages.hedging import HedgeActivation, HedgeCode, HedgerStatus
from messages.market import Instrument
from messages.state import OptionQuote

if TYPE_CHECKING:  # desk_state imports console.views, which imports this module's callers
    from console.desk_state import DeskState

#: From this width the chain shows every column; below it, each side drops its 24 h volume and
#: open interest (slow figures a trader does not trade from) so that both sides fit 120 columns.
CHAIN_FULL_WIDTH = 145
STALE_MARK = "*"
#: The header's "last data" turns yellow past this many seconds without market data.
QUIET_AFTER_S = 5.0
STALE_STYLE = "yellow"
BID_STYLE = "green"
ASK_STYLE = "red"
LONG_STYLE = "green"
SHORT_STYLE = "red"


def compact_table(title: str | None) -> Table:
    """No vertical rules, one space between columns (the box's blank divider, no padding): both
    sides of a chain, and the positions with their greeks, fit 120 columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, title_justify="left",
                 show_edge=False)


def _positive(value: float | None) -> float | None:
    number = _finite(value)
    return number if number is not None and number > 0 else None


def _signed_style(value: float | None) -> str:
    number = _finite(value)
    if number is None or number == 0:
        return ""
    return LONG_STYLE if number > 0 else SHORT_STYLE


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "<1s"  # whole seconds: a live pane's text does not change with every refresh
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def underlying_tick(desk: DeskState, currency: str) -> float:
    """The decimals an index or forward of ``currency`` is written with: its futures' tick, at most
    a cent (BTC 0.5 -> cents, an XRP perpetual's 0.0001 -> 4 decimals)."""
    ticks = [f.tick_size for f in desk.futures(currency) if _positive(f.tick_size)]
    return min([0.01, *ticks])


def index_of(desk: DeskState, currency: str) -> float | None:
    """The USD index of a family (a linear family's coin index when its own is not known); None
    when missing, zero or not finite."""
    found = _positive(desk.index_price(currency))
    view = desk.views.get(currency)
    if found is None and view is not None:  # the option keeper's live answer carries it too
        found = _positive(view.index_price)
    if found is None:
        try:
            base = family_of(currency).base_currency
        except ValueError:
            return None
        found = _positive(desk.index_price(base)) if base != currency else None
    return found


def latest_data_at(desk: DeskState) -> float | None:
    """When the desk last heard from the market: the latest top of book or live chain answer
    (the connection reports no per-frame time)."""
    times = [t.at for t in desk.tops.values()] + [v.at for v in desk.views.values()]
    return max(times) if times else None


# -- the option chain -------------------------------------------------------------------------------
def strike_window(strikes: list[float], centre: float | None, each_side: int) -> list[float]:
    """``each_side`` strikes at or below ``centre`` and ``each_side`` above (fewer at the ends of
    the listing); with no centre (no forward, no index), the middle of the listing."""
    ordered = sorted(strikes)
    each_side = max(1, each_side)
    if centre is None:
        middle = len(ordered) // 2
        return ordered[max(0, middle - each_side):middle + each_side]
    below = [s for s in ordered if s <= centre]
    above = [s for s in ordered if s > centre]
    return below[-each_side:] + above[:each_side]


def _strike_text(strike: float) -> str:
    return price_text(strike, strike)  # as many decimals as the strike itself has


def _days_text(expiry_ms: int, now: float) -> str:
    days = (expiry_ms / 1000.0 - now) / 86400.0
    if days <= 0:
        return "expired"
    return f"{days:.1f}d" if days >= 1 else f"{days:.2f}d ({days * 24:.1f}h)"


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[OptionQuote, Instrument], str]
    style: str = ""


#: An option amount (coins: a size, open interest, volume) at or above this is no amount the
#: exchange sends: a dash, not a figure three hundred digits wide that pushes the chain apart.
_MAX_OPTION_AMOUNT = 1e9


def _amount(value: float | None, i: Instrument) -> str:
    if value is None or not 0.0 <= value < _MAX_OPTION_AMOUNT:
        return MISSING
    return amount_text(value, i.min_trade_amount)


def _bid_size(q: OptionQuote, i: Instrument) -> str:
    return _amount(q.bid_amount, i) if q.bid is not None else MISSING


def _ask_size(q: OptionQuote, i: Instrument) -> str:
    return _amount(q.ask_amount, i) if q.ask is not None else MISSING


def _side_iv(price: float | None, iv: float | None) -> str:
    """A side's IV: none without a price on that side, nor where Deribit sends 0 (no bid, or a
    bid below the option's intrinsic value has no IV)."""
    return iv_text(iv) if price is not None and iv is not None and iv > 0 else MISSING


_BOOK = (
    _Column("bsz", _bid_size, BID_STYLE),
    _Column("bIV", lambda q, i: _side_iv(q.bid, q.bid_iv), BID_STYLE),
    _Column("bid", lambda q, i: price_text(q.bid, i.tick_size), BID_STYLE),
    _Column("mark", lambda q, i: price_text(q.mark_price, i.tick_size)),
    _Column("ask", lambda q, i: price_text(q.ask, i.tick_size), ASK_STYLE),
    _Column("aIV", lambda q, i: _side_iv(q.ask, q.ask_iv), ASK_STYLE),
    _Column("asz", _ask_size, ASK_STYLE),
)
_SLOW = (
    _Column("delta", lambda q, i: greek_text(q.delta, 2)),
    _Column("OI", lambda q, i: _amount(q.open_interest, i)),
    _Column("vol24h", lambda q, i: _amount(q.volume_24h, i)),
)
#: The activity view's columns (narrow screens): mark IV, the greeks, open interest, volume.
_ACTIVITY = (
    _Column("mIV", lambda q, i: iv_text(q.mark_iv)),
    _Column("delta", lambda q, i: greek_text(q.delta, 2)),
    _Column("gamma", lambda q, i: greek_text(q.gamma, 5)),
    _Column("vega", lambda q, i: greek_text(q.vega, 2)),
    _Column("theta", lambda q, i: greek_text(q.theta, 2)),
    _Column("OI", lambda q, i: _amount(q.open_interest, i)),
    _Column("vol24h", lambda q, i: _amount(q.volume_24h, i)),
)


class ChainColumns(enum.Enum):
    """What a chain narrower than :data:`CHAIN_FULL_WIDTH` shows of each option (a key switches):
    its book (sizes, IVs, prices) and delta, or its activity (mark IV, greeks, open interest, 24 h
    volume). From that width on, the book, delta, open interest and volume together."""

    BOOK = "book"
    ACTIVITY = "activity"


def chain_columns(width: int, view: ChainColumns = ChainColumns.BOOK,
                  ) -> tuple[tuple[_Column, ...], tuple[_Column, ...]]:
    """The call side's and put side's columns at ``width``: mirrored as on Deribit (calls' slow
    figures on the far left, puts' on the far right)."""
    if width < CHAIN_FULL_WIDTH and view is ChainColumns.ACTIVITY:
        return tuple(reversed(_ACTIVITY)), _ACTIVITY
    slow = _SLOW if width >= CHAIN_FULL_WIDTH else _SLOW[:1]
    return tuple(reversed(slow)) + _BOOK, _BOOK + slow


def _side_cells(columns: tuple[_Column, ...], quote: OptionQuote | None, instrument: Instrument | None,
                ) -> list[Text]:
    if quote is None or instrument is None:
        return [Text(MISSING, style="dim") for _ in columns]
    cells = []
    for column in columns:
        text = column.cell(quote, instrument)
        if column.header == "mark" and quote.stale:  # before the figure: the digits stay aligned
            text = STALE_MARK + text
        cells.append(Text(text, style=STALE_STYLE if quote.stale else column.style))
    return cells


def _forward_of(quotes: Iterable[OptionQuote | None]) -> float | None:
    """An expiry's forward: the median ``underlying_price`` of its quotes (None: no usable one)."""
    forwards = [f for q in quotes if q is not None and (f := _positive(q.underlying_price)) is not None]
    return statistics.median(forwards) if forwards else None


def chain_title(desk: DeskState, currency: str, expiry_ms: int, now: float) -> str:
    """``BTC 26DEC26  fwd 60,012.50  19.0d  index 59,950.00  (prices in BTC, IV %)``: the forward
    is the median ``underlying_price`` of the expiry's live quotes."""
    listed = [i for i in desk.options(currency) if i.expiration_timestamp == expiry_ms]
    forward = _forward_of(desk.option_quote(i.instrument_name, now) for i in listed)
    tick = underlying_tick(desk, currency)
    prices_in = currency
    if listed:
        identity = identity_of(listed[0])
        prices_in = identity.settlement_currency if identity.is_linear else identity.base_currency
    return (f"{currency} {expiry_label(expiry_ms)}  fwd {price_text(forward, tick)}  {_days_text(expiry_ms, now)}"
            f"  index {price_text(index_of(desk, currency), tick)}  (prices in {prices_in}, IV %)")


def chain_table(desk: DeskState, currency: str, expiry_ms: int, strikes: int, now: float, *,
                width: int = 120, titled: bool = True, view: ChainColumns = ChainColumns.BOOK) -> RenderableType:
    """One currency's options of one expiry, live (:meth:`DeskState.option_quote`): calls left,
    strike in the middle, puts right; ``strikes`` strikes at or below the forward and as many
    above, the one nearest the forward marked ATM. The title holds the forward (the quotes'
    ``underlying_price``), days to expiry and the index. A stale book's cells are yellow with
    ``*`` before the mark, and a footer counts them (only when there are any); no live quote: ``-``."""
    listed = [i for i in desk.options(currency) if i.expiration_timestamp == expiry_ms]
    if not listed:
        known = ", ".join(expiry_label(e) for e in desk.option_expiries(currency))
        return Text(f"no {currency} options expire {expiry_label(expiry_ms)}; expiries: {known or 'none listed'}")
    by_strike: dict[float, dict[str, Instrument]] = {}
    for instrument in listed:
        if instrument.strike is not None and instrument.option_type is not None:
            by_strike.setdefault(instrument.strike, {})[instrument.option_type] = instrument
    quotes = {i.instrument_name: desk.option_quote(i.instrument_name, now) for i in listed}
    forward = _forward_of(quotes.values())
    index = index_of(desk, currency)
    centre = forward if forward is not None else index
    window = strike_window(list(by_strike), centre, strikes)
    atm = min(by_strike, key=lambda s: abs(s - centre)) if centre is not None else None
    calls, puts = chain_columns(width, view)
    table = compact_table(chain_title(desk, currency, expiry_ms, now) if titled else None)
    for column in calls:
        table.add_column(column.header, justify="right", no_wrap=True)
    table.add_column("strike", justify="center", style="bold", no_wrap=True)
    for column in puts:
        table.add_column(column.header, justify="right", no_wrap=True)
    stale: list[str] = []
    for strike in window:
        pair = by_strike[strike]
        call, put = pair.get("call"), pair.get("put")
        call_quote = quotes.get(call.instrument_name) if call is not None else None
        put_quote = quotes.get(put.instrument_name) if put is not None else None
        stale += [q.instrument_name for q in (call_quote, put_quote) if q is not None and q.stale]
        is_atm = strike == atm
        strike_cell = Text(f">{_strike_text(strike)}<" if is_atm else _strike_text(strike),
                           style="bold reverse" if is_atm else "bold")
        table.add_row(*_side_cells(calls, call_quote, call), strike_cell, *_side_cells(puts, put_quote, put))
    parts: list[RenderableType] = [table]
    if stale:
        books = "book is" if len(stale) == 1 else "books are"
        parts.append(Text(f"{STALE_MARK} {len(stale)} {books} stale (not known to be the exchange's: a gap or a "
                          f"resubscribe): {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}",
                          style=STALE_STYLE))
    if window and not any(q is not None for q in quotes.values()):
        parts.append(Text(f"no live {currency} quotes for {expiry_label(expiry_ms)} yet", style="dim"))
    return Group(*parts)


# -- positions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionLine:
    """One position's figures as shown. ``settlement``: the currency its PnL is paid in (the coin
    for inverse instruments, USDC for linear ones); USD figures ``None`` when the index is missing
    (inverse) or an input is; a ``future`` shows delta as its only greek."""

    currency: str
    position: Position
    instrument: Instrument | None
    settlement: str
    linear: bool | None
    future: bool
    value_usd: float | None
    floating: float | None
    total: float | None
    floating_usd: float | None
    total_usd: float | None


def _times(a: float | None, b: float | None) -> float | None:
    a, b = _finite(a), _finite(b)
    return None if a is None or b is None else a * b


def position_line(desk: DeskState, currency: str, position: Position) -> PositionLine:
    """The figures of one position: the exchange's (size, prices, PnL, greeks) and its USD value.
    ``floating`` PnL runs since the last 08:00 UTC settlement, ``total`` since the position was
    opened (both Deribit's). Inverse instruments are valued in USD at the coin's index (coin x
    index); linear ones are already in USDC (no inverse maths). Margining from the instrument's
    metadata, else from the currency setting the portfolio is kept under (``SOL_USDC`` is linear)."""
    instrument = desk.instrument(position.instrument_name)
    identity = identity_of(instrument) if instrument is not None else None
    if identity is not None:
        linear: bool | None = identity.is_linear
        future = identity.is_future
        settlement = identity.settlement_currency
    else:
        future = position.kind == "future"
        try:
            family = family_of(currency)
            linear, settlement = family.is_linear, family.settlement_currency
        except ValueError:
            linear, settlement = None, currency
    rate = 1.0 if linear else (index_of(desk, currency) if linear is False else None)
    if future and linear is False:
        value_usd = _finite(position.size)  # an inverse future's size is its USD notional
    else:
        value_usd = _times(_times(position.size, position.mark_price), rate)
    # Deribit's ``floating_profit_loss_usd`` (options) is the PnL since the position was opened,
    # against its USD average price: the exchange's own total in USD, preferred to total x index.
    total_usd = _finite(position.floating_profit_loss_usd)
    if total_usd is None:
        total_usd = _times(position.total_profit_loss, rate)
    return PositionLine(currency=currency, position=position, instrument=instrument, settlement=settlement,
                        linear=linear, future=future, value_usd=value_usd,
                        floating=_finite(position.floating_profit_loss), total=_finite(position.total_profit_loss),
                        floating_usd=_times(position.floating_profit_loss, rate), total_usd=total_usd)


def _order_key(line: PositionLine) -> tuple[object, ...]:
    i = line.instrument
    if i is None:
        return (line.currency, 2, 0, 0.0, line.position.instrument_name)
    return (line.currency, 0 if line.future else 1, i.expiration_timestamp, i.strike or 0.0,
            i.option_type or "", i.instrument_name)


def position_lines(desk: DeskState) -> list[PositionLine]:
    """Every open position of every currency, futures first, then options by expiry and strike."""
    lines = [position_line(desk, currency, p) for currency, portfolio in desk.portfolios.items()
             for p in portfolio.positions if p.size]
    return sorted(lines, key=_order_key)


def _total(values: Iterable[float | None]) -> float | None:
    """The sum, or None when any is missing (a total that leaves a line out is not shown)."""
    total = 0.0
    for value in values:
        number = _finite(value)
        if number is None:
            return None
        total += number
    return total


@dataclass(frozen=True)
class PositionTotals:
    currency: str
    settlement: str
    value_usd: float | None
    floating: float | None
    total: float | None
    floating_usd: float | None
    total_usd: float | None
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None


def position_totals(lines: list[PositionLine]) -> list[PositionTotals]:
    """One totals row per currency: the sums of its lines (greeks other than delta over options)."""
    out = []
    for currency in sorted({line.currency for line in lines}):
        mine = [line for line in lines if line.currency == currency]
        options = [line for line in mine if not line.future]
        settlements = {line.settlement for line in mine}
        out.append(PositionTotals(
            currency=currency, settlement=settlements.pop() if len(settlements) == 1 else "",
            value_usd=_total(line.value_usd for line in mine),
            floating=_total(line.floating for line in mine) if len(settlements) <= 1 else None,
            total=_total(line.total for line in mine) if len(settlements) <= 1 else None,
            floating_usd=_total(line.floating_usd for line in mine), total_usd=_total(line.total_usd for line in mine),
            delta=_total(line.position.delta for line in mine),
            gamma=_total(line.position.gamma for line in options), vega=_total(line.position.vega for line in options),
            theta=_total(line.position.theta for line in options)))
    return out


def direction_of(position: Position) -> str:
    """``long``/``short`` from the exchange's ``direction``, else from the size's sign."""
    if position.direction == "buy":
        return "long"
    if position.direction == "sell":
        return "short"
    size = _finite(position.size)
    return "long" if size and size > 0 else "short" if size and size < 0 else "flat"


def totals_of(lines: list[PositionLine]) -> list[str]:
    return sorted({line.currency for line in lines})


def _tick_and_step(line: PositionLine) -> tuple[float | None, float | None]:
    """The instrument's tick and amount step; without its metadata (an instrument no longer
    listed), four decimals for an inverse option's coin price, cents otherwise, and the size as
    exact as it is."""
    if line.instrument is not None:
        return line.instrument.tick_size, line.instrument.min_trade_amount
    tick = 0.0001 if not line.future and line.linear is False else 0.01
    size = _finite(line.position.size)
    return tick, abs(size) if size else None


def _coin_digits(settlement: str) -> int:
    return 2 if settlement == "USDC" else 4


def _money(value: float | None, text: str) -> Text:
    return Text(text, style=_signed_style(value))


def positions_table(desk: DeskState, now: float) -> RenderableType:
    """Instrument, direction, size, average, mark, USD value, floating and total PnL in the
    settlement currency (``PnL``) and in USD (``$``), and the exchange's greeks (futures: delta
    only), with a totals row per currency; then each currency's account as the exchange gives it."""
    lines = position_lines(desk)
    table = compact_table("positions (PnL as the exchange gives it, in the settlement currency; $: USD at the index)")
    names = [line.position.instrument_name for line in lines] + [f"{c} total (USDC)" for c in totals_of(lines)]
    for header in ("instrument", "dir", "size", "avg", "mark", "value$", "float", "total", "float$", "total$",
                   "delta", "gamma", "vega", "theta"):
        if header == "instrument":
            table.add_column(header, no_wrap=True, min_width=max(map(len, names), default=10))
        else:  # a figure too wide for its column folds onto a second line rather than being cut
            table.add_column(header, justify="left" if header == "dir" else "right", overflow="fold")
    totals = {t.currency: t for t in position_totals(lines)}
    for index, line in enumerate(lines):
        p = line.position
        tick, step = _tick_and_step(line)
        direction = direction_of(p)
        digits = _coin_digits(line.settlement)
        blank = "" if line.future else None  # futures carry delta only
        table.add_row(
            p.instrument_name, Text(direction, style=LONG_STYLE if direction == "long" else SHORT_STYLE),
            amount_text(p.size, step),
            price_text(p.average_price, tick), price_text(p.mark_price, tick), usd_text(line.value_usd),
            _money(line.floating, coin_text(line.floating, digits)), _money(line.total, coin_text(line.total, digits)),
            _money(line.floating_usd, usd_text(line.floating_usd)), _money(line.total_usd, usd_text(line.total_usd)),
            greek_text(p.delta, 4), blank if blank is not None else greek_text(p.gamma, 5),
            blank if blank is not None else greek_text(p.vega, 1),
            blank if blank is not None else greek_text(p.theta, 1))
        last_of_currency = index + 1 == len(lines) or lines[index + 1].currency != line.currency
        if last_of_currency:
            t = totals[line.currency]
            digits = _coin_digits(t.settlement)
            unit = f" ({t.settlement})" if t.settlement else ""
            table.add_row(
                Text(f"{t.currency} total{unit}", style="bold"), "", "", "", "", usd_text(t.value_usd),
                _money(t.floating, coin_text(t.floating, digits)), _money(t.total, coin_text(t.total, digits)),
                _money(t.floating_usd, usd_text(t.floating_usd)), _money(t.total_usd, usd_text(t.total_usd)),
                greek_text(t.delta, 4), greek_text(t.gamma, 5), greek_text(t.vega, 1), greek_text(t.theta, 1),
                style="bold", end_section=True)
    if not lines:
        table.add_row("(no positions)", *[""] * 13)
    notes = []
    for currency, portfolio in sorted(desk.portfolios.items()):
        if portfolio.equity is None and portfolio.delta_total is None:
            continue
        try:
            settlement = family_of(currency).settlement_currency
        except ValueError:
            settlement = currency
        notes.append(Text(f"{currency} account (exchange): equity {coin_text(portfolio.equity, 4)} {settlement}, "
                          f"delta total {greek_text(portfolio.delta_total, 4)} (options less premium + futures), "
                          f"{_age_text(now - portfolio.at)} old"
                          + ("" if portfolio.reconciled else "; NOT reconciled yet"), style="dim"))
    return Group(table, *notes)


# -- the header -----------------------------------------------------------------------------------
def _link(desk: DeskState) -> Text:
    status = desk.connection
    if status is None:
        return Text("no link status yet", style="yellow")
    style = "green" if status.can_trade else "yellow" if desk.link_up else "bold red"
    text = f"{status.state.value}, {'logged in' if status.authenticated else 'not logged in'}, " + (
        "trading allowed" if status.can_trade else "NO TRADING")
    if status.attempt:
        text += f", attempt {status.attempt}"
    return Text(text, style=style)


def _hedger_state(status: HedgerStatus | None) -> Text:
    if status is None:
        return Text("hedger -", style="dim")
    if status.alert:
        return Text(f"hedger {activation_text(status)} ALERT", style="bold white on red")
    style = "green" if status.active else "yellow" if status.activation is HedgeActivation.AWAITING_CONFIRMATION \
        else ""
    return Text(f"hedger {activation_text(status)}", style=style)


def header_text(desk: DeskState, venue: str, now: float) -> RenderableType:
    """The venue, the link's state and the age of the latest market data; per currency the index,
    Deribit's DVOL (else the desk's own 30-day variance index, labelled so), the desk's 30-day
    variance index and ATM vol (its latest surface) and the hedger's state."""
    last = latest_data_at(desk)
    quiet = last is None or now - last > QUIET_AFTER_S
    top = Text.assemble((venue, "bold"), "  ", _link(desk), "  last data ",
                        (f"{_age_text(now - last)} ago" if last is not None else "none yet",
                         "bold yellow" if quiet else ""))
    lines = [top]
    pad = max((len(c) for c in desk.currencies), default=3)
    for currency in desk.currencies:
        try:
            coin = family_of(currency).base_currency
        except ValueError:
            coin = currency
        surface = desk.surfaces.get(currency)
        dvol = desk.dvol.get(coin)
        index = index_of(desk, currency)
        variance = surface.variance_index if surface is not None else None
        atm = surface.atm_iv_30d if surface is not None else None
        vols = (f"DVOL {iv_text(dvol.volatility)}  var30 {iv_text(variance)}" if dvol is not None
                else f"desk vol index {iv_text(variance)} (no DVOL)")
        index_text = price_text(index, underlying_tick(desk, currency))
        lines.append(Text.assemble((f"{currency:<{pad}}", "bold"), f"  index {index_text}  {vols}  "
                                   f"ATM30 {iv_text(atm)}  ", _hedger_state(desk.hedgers.get(currency))))
    return Group(*lines)


# -- the hedger -------------------------------------------------------------------------------------
def _last_action(status: HedgerStatus, now: float) -> Text:
    text = Text(status.message or status.last_reason)
    if status.message and status.last_reason and status.last_reason != status.message:
        text.append("\n" + status.last_reason, style="bold red" if status.code is HedgeCode.IMPLAUSIBLE_DATA else "")
    if status.in_flight:
        label = f", {status.order_label}" if status.order_label else ""
        text.append(f"\norder in flight ({status.phase.value}{label})")
    if status.activation is HedgeActivation.AWAITING_CONFIRMATION and status.plan is not None:
        text.append("\n" + status.plan.describe(), style="yellow")
    text.append(f" ({_age_text(now - status.at)} ago)", style="dim")
    return text


def hedger_panel(desk: DeskState, now: float) -> RenderableType:
    """Per currency: state, instrument, band, options delta, hedge delta, mismatch (red beyond the
    band), hedge orders today and the last action; the red ALERT line of a hedger that switched
    itself off above it (until acknowledged)."""
    table = Table(title="delta hedging (deltas in coin)", title_justify="left")
    for column in ("ccy", "state", "instrument", "band", "options Δ", "hedge Δ", "mismatch", "orders", "last action"):
        table.add_column(column, justify="right" if column in ("band", "options Δ", "hedge Δ", "mismatch", "orders")
                         else "left")
    for s in sorted(desk.hedgers.values(), key=lambda s: s.currency):
        mismatch = _finite(s.mismatch)
        band = _finite(s.band)
        beyond = mismatch is not None and band is not None and abs(mismatch) > band
        state = Text(activation_text(s), style="bold white on red" if s.alert else "green" if s.active else "")
        if s.alert:
            state.append(" ALERT")
        table.add_row(s.currency, state, s.instrument, price_text(s.band, s.band, most=6),
                      greek_text(s.options_delta, 4), greek_text(s.hedge_delta, 4),
                      Text(greek_text(s.mismatch, 4), style="bold red" if beyond else ""), str(s.orders_today),
                      _last_action(s, now))
    if not table.row_count:
        table.add_row("(no status from the hedger yet)", *[""] * 8)
    vega = [Text(describe_vega_hedger(s), style=ALERT_STYLE if s.alert else "")
            for s in sorted(desk.vega_hedgers.values(), key=lambda s: s.currency)]
    return Group(*alert_lines(desk.alerts()), table, *vega)


# -- open orders ------------------------------------------------------------------------------------
def orders_table(desk: DeskState, now: float) -> RenderableType:
    """The open orders, prices to their instrument's tick and amounts to its step; age since placed."""
    table = compact_table("open orders")
    for column in ("label", "instrument", "side", "amount", "filled", "type", "price", "trigger", "flags", "age",
                   "order id"):
        table.add_column(column, justify="right" if column in ("amount", "filled", "price", "trigger", "age")
                         else "left", no_wrap=column != "flags")
    for o in sorted(desk.open_orders(), key=lambda o: (o.instrument_name, o.creation_timestamp, o.order_id)):
        instrument = desk.instrument(o.instrument_name)
        tick = instrument.tick_size if instrument is not None else None
        step = instrument.min_trade_amount if instrument is not None else None
        price = price_text(o.price, tick) if isinstance(o.price, float | int) else (
            "market" if o.price == "market_price" else MISSING)
        flags = " ".join(f for f, on in (("post-only", o.post_only), ("reduce-only", o.reduce_only)) if on)
        trigger = f"{price_text(o.trigger_price, tick)} {o.trigger or ''}".strip() if o.trigger_price is not None \
            else ""
        age = _age_text(now - o.creation_timestamp / 1000.0) if o.creation_timestamp else MISSING
        table.add_row(o.label, o.instrument_name,
                      Text(o.direction, style=LONG_STYLE if o.direction == "buy" else SHORT_STYLE),
                      amount_text(o.amount, step), amount_text(o.filled_amount, step), o.order_type, price, trigger,
                      flags, age, o.order_id)
    if not table.row_count:
        table.add_row("(no open orders)", *[""] * 10)
    return table
