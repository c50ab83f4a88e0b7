"""What the console shows: the answers, fills and statuses as lines, and the tables.

Plain functions over the messages and :class:`~console.desk_state.DeskState` (no actor, no
terminal), returning text or rich renderables; tests call them directly. Prices are written to
their instrument's tick and amounts to its step (:mod:`console.numbers`); :func:`fmt` is for
figures that are neither.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.grammar import NO_EXAMPLES, Examples, Topic, command_help, help_text
from console.numbers import amount_text, coin_text, price_text
from deribit.constants import PERPETUAL_EXPIRY_MS
from deribit.instruments import amount_step, format_expiry
from messages.account import OrderUpdate, UserTrade
from messages.commands import CommandFailed, CommandResult
from messages.exposure import VegaHedgerStatus
from messages.hedging import HedgeActivation, HedgerStatus
from messages.market import Instrument, VolatilityIndex
from messages.state import OptionQuote, PortfolioChanged, TopOfBook
from messages.surface import DatabaseHealth, RecorderStatus, SurfaceSnapshot
from messages.system import ConnectionStatus

if TYPE_CHECKING:  # desk_state renders its waits with fmt from here
    from console.desk_state import DeskState, Stage



def fmt(value: float | None, digits: int | None = None) -> str:
    """A figure that is no price nor amount of a known instrument (a band, a strike, a tenor, a
    count): ``-`` when unknown, thousands separated, ``digits`` decimals (else as short as exact).
    Prices go through :func:`price_of`, amounts through :func:`amount_of`."""
    if value is None:
        return "-"
    if digits is None:
        return f"{value:,.10g}" if abs(value) < 1e15 else f"{value:.6g}"
    return f"{value:,.{digits}f}"


def expiry_label(expiry_ms: int) -> str:
    if expiry_ms >= PERPETUAL_EXPIRY_MS:
        return "PERPETUAL"
    return format_expiry(dt.datetime.fromtimestamp(expiry_ms / 1000, tz=dt.UTC).date())


# -- numbers of an instrument --------------------------------------------------------------------------
def price_of(value: float | None, instrument: Instrument | None) -> str:
    """A price of ``instrument`` to its tick's decimals (its smallest tick: every price on its grid
    reads alike); without the instrument, as short as exact."""
    return price_text(value, instrument.tick_size) if instrument is not None else fmt(value)


def amount_of(value: float | None, instrument: Instrument | None) -> str:
    """An amount of ``instrument`` (USD of a future, coins of an option) to its step's decimals."""
    return amount_text(value, amount_step(instrument)) if instrument is not None else fmt(value)


#: An option's tick on Deribit (0.0001 coin) when its metadata is not at hand.
OPTION_TICK = 0.0001

#: Fees and other figures in a stable coin carry cents; in a coin, satoshis.
_STABLE = ("USD", "USDC", "USDT")


def fee_text(fee: float, currency: str) -> str:
    """A fee with its currency: ``0.00000017 BTC``, ``-0.0100 USDC`` (negative: a rebate)."""
    return f"{coin_text(fee, 4 if currency.upper() in _STABLE else 8)} {currency}"


# -- answers as text --------------------------------------------------------------------------------
_IMMEDIATE = ("immediate_or_cancel", "fill_or_kill")


def describe_order_state(order: OrderUpdate, instrument: Instrument | None = None) -> str:
    """What became of an order, in one line: open (at its price), filled N of M, cancelled or
    rejected. A filled order names no price: each fill has its own line with its price and fee."""
    amount = amount_of(order.amount, instrument)
    filled = amount_of(order.filled_amount, instrument)
    price = order.price if isinstance(order.price, float | int) else None
    head = f"order {order.label or order.order_id}: {order.direction} {amount} {order.instrument_name}"
    state = order.order_state
    part = f"filled {filled} of {amount}"
    if state == "open":
        what = f"open at {price_of(price, instrument)}" + (f", {part} so far" if order.filled_amount else "")
    elif state == "untriggered":
        what = f"waiting for its trigger at {price_of(order.trigger_price, instrument)} ({order.trigger})"
    elif state == "filled":
        what = part
    elif state == "cancelled":
        what = f"cancelled, {part}"
        if order.time_in_force in _IMMEDIATE:
            what += ": nothing at that price" if not order.filled_amount else ": the rest found nothing at that price"
        elif order.cancel_reason and order.cancel_reason != "user_request":
            what += f" ({order.cancel_reason})"
    elif state == "rejected":
        what = "rejected" + (f" ({order.cancel_reason})" if order.cancel_reason else "")
    else:
        what = f"{state}, {part}"
    return f"{head}: {what} (id {order.order_id})"


def describe_answer(answer: CommandResult | CommandFailed, instrument: Instrument | None = None) -> str:
    """The exchange's answer to one of the console's commands; ``instrument``: the order's (its
    tick and step)."""
    if isinstance(answer, CommandFailed):
        where = "refused locally" if answer.code < 0 else f"rejected by the exchange ({answer.code})"
        data = f" {answer.data}" if answer.data else ""
        return f"{where}: {answer.message}{data} [{answer.request_key}]"
    order = answer.order
    if order is not None:
        return describe_order_state(order, instrument)
    try:
        result = json.loads(answer.result)
    except ValueError:
        result = answer.result
    if answer.method.startswith("private/cancel") and isinstance(result, int):
        return f"cancelled {result} order{'s' if result != 1 else ''}"
    return f"{answer.method}: {answer.result}"


def describe_fill(trade: UserTrade, instrument: Instrument | None = None) -> str:
    """One fill: its price to the instrument's tick, its fee with the fee's currency."""
    liquidity = {"M": ", maker", "T": ", taker"}.get(trade.liquidity or "", "")
    return (f"filled: {trade.direction} {amount_of(trade.amount, instrument)} {trade.instrument_name} "
            f"@ {price_of(trade.price, instrument)}{' [' + trade.label + ']' if trade.label else ''}, "
            f"fee {fee_text(trade.fee, trade.fee_currency)}{liquidity}")


def activation_text(status: HedgerStatus) -> str:
    if status.active:
        return "active"
    return "awaiting confirmation" if status.activation is HedgeActivation.AWAITING_CONFIRMATION else "inactive"


def describe_hedger(status: HedgerStatus, traded: str | None = None) -> str:
    """The hedger's status as a line; ``traded``: the console's future, named when it is the
    hedger's instrument and the hedger is on or about to be."""
    state = activation_text(status)
    parts = [f"hedger {status.currency}: {state} on {status.instrument} ({status.mode}, band {fmt(status.band)})"]
    if status.mismatch is not None:
        parts.append(f"options delta {fmt(status.options_delta, 4)}, hedge {fmt(status.hedge_delta, 4)}, "
                     f"mismatch {fmt(status.mismatch, 4)}")
    if status.in_flight:
        parts.append("order in flight")
    if status.message:
        parts.append(status.message)
    if traded == status.instrument and (status.active or status.activation is HedgeActivation.AWAITING_CONFIRMATION):
        parts.append(f"NOTE: the console trades {traded}, the hedger's instrument: orders there are refused while "
                     "it hedges (change instrument, or end the line with override)")
    return "; ".join(parts)


def describe_vega_hedger(status: VegaHedgerStatus) -> str:
    """The vega hedger's status as a line (vega in USD per vol point)."""
    state = "active" if status.active else "inactive"
    parts = [f"vega hedger {status.currency}: {state}, band {fmt(status.band_usd)} around {fmt(status.target_usd)} "
             f"USD/vol pt, tenor {fmt(status.tenor_days)} d, option {status.option or '-'}"]
    if status.vega is not None:
        parts.append(f"vega {status.vega:,.1f}")
    if status.option_vega is not None:
        parts.append(f"{status.option_vega:,.2f} per coin of the option")
    parts.append(f"orders today {status.orders_today} ({fmt(status.volume_today)} coins)")
    if status.in_flight:
        parts.append(f"order in flight ({status.phase}, {status.order_label})")
    if status.code:
        parts.append(f"{status.code.value}: {status.reason}" if status.reason else status.code.value)
    if status.message:
        parts.append(status.message)
    if status.alert:
        parts.append(f"ALERT: {status.alert}")
    return "; ".join(parts)


ALERT_STYLE = "bold white on red"


def alert_lines(statuses: Iterable[HedgerStatus]) -> list[Text]:
    """The red line of each hedger that switched itself off, until it is acknowledged (``ack``)."""
    return [Text(f"ALERT hedger {s.currency} switched itself off: {s.alert} (type ack to acknowledge)",
                 style=ALERT_STYLE) for s in statuses if s.alert]


def describe_connection(status: ConnectionStatus | None) -> str:
    if status is None:
        return "connection: no status yet"
    text = (f"connection: {status.state.value} to {status.venue}, "
            f"{'logged in' if status.authenticated else 'not logged in'}, "
            f"{'trading allowed' if status.can_trade else 'no trading'}")
    if status.attempt:
        text += f", attempt {status.attempt}"
    if status.detail:
        text += f" ({status.detail})"
    return text


# -- tables (the desk's own: console/tables.py) ----------------------------------------------------
def funds_table(portfolios: Iterable[PortfolioChanged]) -> Table:
    table = Table(title="funds", title_justify="left")
    for column in ("currency", "equity", "balance", "available", "initial margin", "maint. margin", "delta total",
                   "reconciled"):
        table.add_column(column, justify="left" if column == "currency" else "right")
    for p in sorted(portfolios, key=lambda p: p.currency):
        table.add_row(p.currency, fmt(p.equity, 6), fmt(p.balance, 6), fmt(p.available_funds, 6),
                      fmt(p.initial_margin, 6), fmt(p.maintenance_margin, 6), fmt(p.delta_total, 4),
                      "yes" if p.reconciled else "no")
    if not table.row_count:
        table.add_row("(no account figures yet)", *[""] * 7)
    return table


def _unknown_instrument(_name: str) -> Instrument | None:
    return None


#: Index prices are USD to the cent.
INDEX_TICK = 0.01


def tops_table(tops: Iterable[TopOfBook], title: str = "futures",
               instrument: Callable[[str], Instrument | None] = _unknown_instrument) -> Table:
    """Top of book per instrument, prices to its tick and amounts to its step (``instrument``
    looks its metadata up)."""
    table = Table(title=title, title_justify="left")
    for column in ("instrument", "bid", "bid amount", "ask", "ask amount", "mark", "index", "book"):
        table.add_column(column, justify="left" if column in ("instrument", "book") else "right")
    for t in tops:
        inst = instrument(t.instrument_name)
        table.add_row(t.instrument_name, price_of(t.bid, inst), amount_of(t.bid_amount, inst), price_of(t.ask, inst),
                      amount_of(t.ask_amount, inst), price_of(t.mark_price, inst),
                      price_text(t.index_price, INDEX_TICK), "STALE" if t.stale else "live")
    if not table.row_count:
        table.add_row("(no quotes yet)", *[""] * 7)
    return table


def database_state(status: RecorderStatus) -> str:
    """The database as the Recorder last found it: reachable, SLOW, HUNG or UNREACHABLE."""
    if status.health in (DatabaseHealth.SLOW, DatabaseHealth.HUNG):
        return status.health.name
    return "reachable" if status.reachable else "UNREACHABLE"


def recorder_text(status: RecorderStatus | None) -> Text:
    if status is None:
        return Text("recorder: no status yet")
    last = (dt.datetime.fromtimestamp(status.last_written_minute, tz=dt.UTC).strftime("%H:%M UTC")
            if status.last_written_minute is not None else "none")
    text = (f"recorder: database {status.database} {database_state(status)}, "
            f"last minute written {last}, {status.written_minutes} written, backlog {status.backlog_minutes} "
            f"minutes")
    if status.last_error:
        text += f", last error: {status.last_error}"
    return Text(text)


def topic_view(topic: Topic, state: DeskState, instrument: str | None, option: str | None,
               size_multiplier: float | None, currency: str, now: float | None = None) -> RenderableType:
    """What an information word prints, given the chosen future, option and multiplier and the
    currency they are in, as of ``now`` (None: the desk's latest market data)."""
    from console import tables  # it builds on this module's lines (alerts, the hedger's state)

    at = now if now is not None else (tables.latest_data_at(state) or 0.0)
    match topic:
        case "help":
            return help_view(state, currency)
        case "price":
            return price_view(state, instrument, option, now)
        case "funds":
            return funds_table(state.portfolios.values())
        case "orders":
            return tables.orders_table(state, at)
        case "positions":
            return tables.positions_table(state, at)
        case "connection":
            return Text(describe_connection(state.connection))
        case "size_multiplier":
            return Text(f"size multiplier: {size_multiplier:g}" if size_multiplier else "no size multiplier chosen yet")
        case "status":
            return status_view(state, instrument, at)
        case "surface":
            return surface_view(state.surfaces.get(currency), currency, state.dvol.get(currency))
        case "hedging":
            return tables.hedger_panel(state, at)


def examples_for(state: DeskState, currency: str, now: float | None = None) -> Examples:
    """The help's examples: the listed option of ``currency`` (else of any currency) nearest the
    money at the nearest expiry, one at least a day after ``now`` when there is one (an option
    expiring within hours makes a poor example); :data:`NO_EXAMPLES` before any is listed."""
    options = state.options(currency) or [o for c in state.instruments for o in state.options(c)]
    if not options:
        return NO_EXAMPLES
    later = [o for o in options if now is not None and o.expiration_timestamp >= (now + 86_400) * 1000]
    expiry_ms = min(o.expiration_timestamp for o in later or options)
    listed = [o for o in options if o.expiration_timestamp == expiry_ms]
    calls = [o for o in listed if o.option_type == "call"] or listed
    index = state.index_price(calls[0].base_currency)
    chosen = min(calls, key=lambda o: abs((o.strike or 0.0) - index)) if index else calls[len(calls) // 2]
    return Examples(chosen.instrument_name, expiry_label(expiry_ms))


def help_view(state: DeskState, currency: str, typed: Iterable[str] | None = None,
              now: float | None = None) -> Text:
    """``help`` (every command) or ``help COMMAND`` (``typed``: the commands named), the examples
    naming listed instruments (see :func:`examples_for`)."""
    examples = examples_for(state, currency, now)
    return Text(help_text(examples) if typed is None else command_help(typed, examples))


def status_view(state: DeskState, instrument: str | None, now: float) -> RenderableType:
    """``status``: the header (link, index, vols, hedgers), positions with greeks, futures
    tickers, the hedger panel (with its alert), recorder, book sync."""
    from console import tables

    tops = [state.tops[i.instrument_name] for i in state.futures() if i.instrument_name in state.tops]
    fresh, total = state.books_synced(options=False)
    options = state.option_books_synced()
    books = f"books: futures {fresh} of {total} synced" + (
        f", options {options[0]:,} of {options[1]:,}" if options else "")
    locked = state.locks.describe()
    venue = state.connection.venue if state.connection is not None else "-"
    parts: list[RenderableType] = [
        *([Text(f"{locked}: no new orders there", style="bold red")] if locked else []),
        tables.header_text(state, venue, now),
        *([Text(f"trading {instrument}")] if instrument else []),
        tables.positions_table(state, now),
        tops_table(tops, instrument=state.instrument),
        tables.hedger_panel(state, now),
        recorder_text(state.recorder),
        Text(books),
    ]
    return Group(*parts)


def price_view(state: DeskState, instrument: str | None, option: str | None,
               now: float | None = None) -> RenderableType:
    """``price``: the chosen future's top of book and the chosen option's live quote (its keeper's
    answer at most a couple of seconds old at ``now``; none without ``now``)."""
    parts: list[RenderableType] = []
    if instrument is not None:
        top = state.tops.get(instrument)
        parts.append(tops_table([top] if top is not None else [], title=f"{instrument}",
                                instrument=state.instrument))
    if option is not None:
        quote = state.option_quote(option, now) if now is not None else None
        parts.append(chain_rows_table([quote] if quote is not None else [], option, state.instrument(option),
                                      empty=f"(no live quote for {option} yet: waiting for its ticker and book)"))
    if not parts:
        parts.append(Text("no instrument chosen yet"))
    return Group(*parts)


def chain_rows_table(quotes: Iterable[OptionQuote], title: str, instrument: Instrument | None = None,
                     empty: str = "(no quote)") -> Table:
    """Option quotes of ``instrument`` (prices to its tick; without it, to an option's 0.0001)."""
    tick = instrument.tick_size if instrument is not None else OPTION_TICK
    table = Table(title=title, title_justify="left")
    for column in ("option", "bid", "ask", "mark", "IV", "delta", "book"):
        table.add_column(column, justify="left" if column in ("option", "book") else "right")
    for q in quotes:
        table.add_row(q.instrument_name, price_text(q.bid, tick), price_text(q.ask, tick),
                      price_text(q.mark_price, tick), fmt(q.mark_iv, 2), fmt(q.delta, 3),
                      "STALE" if q.stale else "live")
    if not table.row_count:
        table.add_row(empty, *[""] * 6)
    return table


def dvol_text(dvol: VolatilityIndex | None) -> str:
    """Deribit's own 30-day index, with when it was published."""
    if dvol is None:
        return "DVOL (Deribit) not received yet"
    when = dt.datetime.fromtimestamp(dvol.timestamp / 1000, tz=dt.UTC).strftime("%H:%M:%S UTC")
    return f"DVOL (Deribit) {fmt(dvol.volatility, 2)} at {when}"


def surface_view(surface: SurfaceSnapshot | None, currency: str,
                 dvol: VolatilityIndex | None = None) -> RenderableType:
    """``surface``: the ATM term structure with 25-delta risk reversal and butterfly, and our
    30-day variance index beside Deribit's DVOL."""
    if surface is None:
        return Text(f"no {currency} surface yet: the SurfaceBuilder publishes one at each full minute; "
                    f"{dvol_text(dvol)}")
    when = dt.datetime.fromtimestamp(surface.at, tz=dt.UTC).strftime("%H:%M UTC")
    table = Table(title=f"{currency} volatility surface at {when} ({surface.method}), vol points",
                  title_justify="left")
    for column in ("tenor (days)", "ATM IV", "25d RR", "25d BF"):
        table.add_column(column, justify="right")
    for tenor in sorted(surface.tenors, key=lambda t: t.tenor_days):
        table.add_row(fmt(tenor.tenor_days), fmt(tenor.atm_iv, 2), fmt(tenor.rr25, 2), fmt(tenor.bf25, 2))
    if not table.row_count:
        table.add_row("(no tenors)", "", "", "")
    notes = (f"30-day: ATM {fmt(surface.atm_iv_30d, 2)}, RR {fmt(surface.rr25_30d, 2)}, "
             f"BF {fmt(surface.bf25_30d, 2)}, variance index {fmt(surface.variance_index, 2)}; {dvol_text(dvol)}")
    if not surface.complete:
        notes += (f"; INCOMPLETE minute: {surface.usable} of {surface.listed} listed options two-sided with a "
                  f"ticker (coverage {fmt(surface.coverage, 2)}): quotes only, no surface")
    elif not surface.surface_ok:
        notes += "; no surface this minute (the fit failed or there was nothing to fit), quotes only"
    return Group(table, Text(notes))


def startup_text(stages: Iterable[Stage]) -> str:
    return "; ".join(f"{s.name}: {'done' if s.done else 'waiting'}{' (' + s.detail + ')' if s.detail else ''}"
                     for s in stages)
