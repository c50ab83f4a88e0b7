"""What the console shows: the answers, fills and statuses as lines, and the tables.

Plain functions over the messages and :class:`~console.desk_state.DeskState` (no actor, no
terminal), returning text or rich renderables; tests call them directly.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.grammar import HELP, Topic
from deribit.constants import PERPETUAL_EXPIRY_MS
from deribit.instruments import format_expiry
from messages.account import OrderUpdate, Position, UserTrade
from messages.commands import CommandFailed, CommandResult
from messages.hedging import HedgeActivation, HedgeCode, HedgerStatus
from messages.market import VolatilityIndex
from messages.state import ChainSnapshot, OptionQuote, PortfolioChanged, TopOfBook
from messages.surface import DatabaseHealth, RecorderStatus, SurfaceSnapshot
from messages.system import ConnectionStatus

if TYPE_CHECKING:  # desk_state renders its waits with fmt from here
    from console.desk_state import DeskState, Stage



def fmt(value: float | None, digits: int | None = None) -> str:
    """A number for a table: ``-`` when unknown, thousands separated, ``digits`` decimals (else
    as short as exact)."""
    if value is None:
        return "-"
    if digits is None:
        return f"{value:,.10g}" if abs(value) < 1e15 else f"{value:.6g}"
    return f"{value:,.{digits}f}"


def expiry_label(expiry_ms: int) -> str:
    if expiry_ms >= PERPETUAL_EXPIRY_MS:
        return "PERPETUAL"
    return format_expiry(dt.datetime.fromtimestamp(expiry_ms / 1000, tz=dt.UTC).date())


# -- answers as text --------------------------------------------------------------------------------
def describe_answer(answer: CommandResult | CommandFailed) -> str:
    if isinstance(answer, CommandFailed):
        where = "refused locally" if answer.code < 0 else f"rejected by the exchange ({answer.code})"
        data = f" {answer.data}" if answer.data else ""
        return f"{where}: {answer.message}{data} [{answer.request_key}]"
    order = answer.order
    if order is not None:
        price = order.price if isinstance(order.price, float | int) else None
        text = (f"{order.order_state}: {order.direction} {fmt(order.amount)} {order.instrument_name}"
                f"{' @ ' + fmt(price) if price is not None else ''}, filled {fmt(order.filled_amount)}"
                f"{' avg ' + fmt(order.average_price) if order.filled_amount and order.average_price else ''}"
                f" [{order.label or order.order_id}] (order {order.order_id})")
        if order.order_state == "cancelled" and not order.filled_amount and order.time_in_force in (
                "immediate_or_cancel", "fill_or_kill"):
            text += ": nothing at that price"
        return text
    try:
        result = json.loads(answer.result)
    except ValueError:
        result = answer.result
    if answer.method.startswith("private/cancel") and isinstance(result, int):
        return f"cancelled {result} order{'s' if result != 1 else ''}"
    return f"{answer.method}: {answer.result}"


def describe_fill(trade: UserTrade) -> str:
    return (f"filled: {trade.direction} {fmt(trade.amount)} {trade.instrument_name} @ {fmt(trade.price)}"
            f"{' [' + trade.label + ']' if trade.label else ''} (fee {fmt(trade.fee)} {trade.fee_currency})")


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


# -- tables -------------------------------------------------------------------------------------------
def positions_table(positions: Iterable[Position]) -> Table:
    """Deribit's own figures: ``floating`` PnL since the last 08:00 UTC settlement, ``total`` PnL
    against the average price, both in the instrument's settlement currency (the coin, or USDC for
    a linear ``..._USDC-...`` instrument)."""
    table = Table(title="positions (PnL in the settlement currency)", title_justify="left")
    for column in ("instrument", "size", "avg price", "mark", "floating PnL", "total PnL", "delta", "gamma", "vega",
                   "theta"):
        table.add_column(column, justify="left" if column == "instrument" else "right")
    for p in sorted(positions, key=lambda p: p.instrument_name):
        table.add_row(p.instrument_name, fmt(p.size), fmt(p.average_price), fmt(p.mark_price),
                      fmt(p.floating_profit_loss, 8), fmt(p.total_profit_loss, 8), fmt(p.delta, 4), fmt(p.gamma, 6),
                      fmt(p.vega, 2), fmt(p.theta, 2))
    if not table.row_count:
        table.add_row("(no positions)", *[""] * 9)
    return table


def orders_table(orders: Iterable[OrderUpdate]) -> Table:
    table = Table(title="open orders", title_justify="left")
    for column in ("label", "instrument", "side", "amount", "filled", "type", "price", "trigger", "flags",
                   "order id"):
        table.add_column(column, justify="right" if column in ("amount", "filled", "price", "trigger") else "left")
    for o in sorted(orders, key=lambda o: (o.instrument_name, o.creation_timestamp, o.order_id)):
        price = o.price if isinstance(o.price, float | int) else None
        flags = " ".join(f for f, on in (("post-only", o.post_only), ("reduce-only", o.reduce_only)) if on)
        trigger = f"{fmt(o.trigger_price)} {o.trigger}" if o.trigger_price is not None else ""
        table.add_row(o.label, o.instrument_name, o.direction, fmt(o.amount), fmt(o.filled_amount), o.order_type,
                      fmt(price), trigger, flags, o.order_id)
    if not table.row_count:
        table.add_row("(no open orders)", *[""] * 9)
    return table


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


def tops_table(tops: Iterable[TopOfBook], title: str = "futures") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("instrument", "bid", "bid amount", "ask", "ask amount", "mark", "index", "book"):
        table.add_column(column, justify="left" if column in ("instrument", "book") else "right")
    for t in tops:
        table.add_row(t.instrument_name, fmt(t.bid), fmt(t.bid_amount), fmt(t.ask), fmt(t.ask_amount),
                      fmt(t.mark_price), fmt(t.index_price), "STALE" if t.stale else "live")
    if not table.row_count:
        table.add_row("(no quotes yet)", *[""] * 7)
    return table


def hedger_table(statuses: Iterable[HedgerStatus]) -> Table:
    table = Table(title="delta hedging", title_justify="left")
    for column in ("currency", "state", "instrument", "band", "options delta", "hedge delta", "mismatch",
                   "orders today", "message"):
        table.add_column(column, justify="right" if column in ("band", "options delta", "hedge delta", "mismatch",
                                                                "orders today") else "left")
    for s in sorted(statuses, key=lambda s: s.currency):
        # The message, then why it holds (in red when data was refused as implausible).
        text = Text(s.message or s.last_reason)
        if s.message and s.last_reason and s.last_reason != s.message:
            text.append("\n" + s.last_reason, style="bold red" if s.code is HedgeCode.IMPLAUSIBLE_DATA else "")
        table.add_row(s.currency, activation_text(s), s.instrument, fmt(s.band),
                      fmt(s.options_delta, 4), fmt(s.hedge_delta, 4), fmt(s.mismatch, 4), str(s.orders_today), text)
    if not table.row_count:
        table.add_row("(no status from the hedger yet)", *[""] * 8)
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
    currency they are in (``now``: the clock, for the live option quote's age)."""
    match topic:
        case "help":
            return Text(HELP)
        case "price":
            return price_view(state, instrument, option, now)
        case "funds":
            return funds_table(state.portfolios.values())
        case "orders":
            return orders_table(state.open_orders())
        case "positions":
            return positions_table(state.positions())
        case "connection":
            return Text(describe_connection(state.connection))
        case "size_multiplier":
            return Text(f"size multiplier: {size_multiplier:g}" if size_multiplier else "no size multiplier chosen yet")
        case "status":
            return status_view(state, instrument)
        case "surface":
            return surface_view(state.surfaces.get(currency), currency, state.dvol.get(currency))
        case "hedging":
            return Group(*alert_lines(state.alerts()), hedger_table(state.hedgers.values()))


def status_view(state: DeskState, instrument: str | None) -> RenderableType:
    """``status``: positions with greeks, futures tickers, hedger and recorder, book sync."""
    tops = [state.tops[i.instrument_name] for i in state.futures() if i.instrument_name in state.tops]
    fresh, total = state.books_synced(options=False)
    options = state.option_books_synced()
    books = f"books: futures {fresh} of {total} synced" + (
        f", options {options[0]:,} of {options[1]:,}" if options else "")
    locked = state.locks.describe()
    parts: list[RenderableType] = [
        *([Text(f"{locked}: no new orders there", style="bold red")] if locked else []),
        *alert_lines(state.alerts()),
        Text(describe_connection(state.connection) + (f"; trading {instrument}" if instrument else "")),
        positions_table(state.positions()),
        tops_table(tops),
        hedger_table(state.hedgers.values()),
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
        parts.append(tops_table([top] if top is not None else [], title=f"{instrument}"))
    if option is not None:
        quote = state.option_quote(option, now) if now is not None else None
        parts.append(chain_rows_table([quote] if quote is not None else [], option,
                                      empty=f"(no live quote for {option} yet: waiting for its ticker and book)"))
    if not parts:
        parts.append(Text("no instrument chosen yet"))
    return Group(*parts)


def chain_rows_table(quotes: Iterable[OptionQuote], title: str,
                     empty: str = "(no quote at the last minute)") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("option", "bid", "ask", "mark", "IV", "delta", "book"):
        table.add_column(column, justify="left" if column in ("option", "book") else "right")
    for q in quotes:
        table.add_row(q.instrument_name, fmt(q.bid, 4), fmt(q.ask, 4), fmt(q.mark_price, 4), fmt(q.mark_iv, 2),
                      fmt(q.delta, 3), "STALE" if q.stale else "live")
    if not table.row_count:
        table.add_row(empty, *[""] * 6)
    return table


def chain_tables(chain: ChainSnapshot | None, expiry: str | None = None) -> RenderableType:
    """``chain [EXPIRY]``: one T-table per expiry: calls (bid, ask, mark, IV) | strike | puts."""
    if chain is None:
        return Text("no option chain yet: the books publish one at each full minute")
    by_expiry: dict[int, dict[float, dict[str, OptionQuote]]] = {}
    for q in chain.options:
        by_expiry.setdefault(q.expiry_ms, {}).setdefault(q.strike, {})[q.option_type] = q
    when = dt.datetime.fromtimestamp(chain.at, tz=dt.UTC).strftime("%H:%M UTC")
    tables: list[RenderableType] = []
    for expiry_ms in sorted(by_expiry):
        name = expiry_label(expiry_ms)
        if expiry is not None and name != expiry:
            continue
        table = Table(title=f"{chain.currency} {name} (at {when}, index {fmt(chain.index_price, 2)}; prices in "
                            f"{chain.currency}, IV in %)", title_justify="left")
        for column in ("C bid", "C ask", "C mark", "C IV", "strike", "P bid", "P ask", "P mark", "P IV"):
            table.add_column(column, justify="center" if column == "strike" else "right",
                             style="bold" if column == "strike" else None)
        for strike in sorted(by_expiry[expiry_ms]):
            row = by_expiry[expiry_ms][strike]

            def cells(q: OptionQuote | None) -> list[str]:
                if q is None:
                    return ["", "", "", ""]
                mark = fmt(q.mark_price, 4) + ("*" if q.stale else "")
                return [fmt(q.bid, 4), fmt(q.ask, 4), mark, fmt(q.mark_iv, 1)]

            table.add_row(*cells(row.get("call")), fmt(strike), *cells(row.get("put")))
        tables.append(table)
    if not tables:
        known = ", ".join(expiry_label(e) for e in sorted(by_expiry))
        return Text(f"no expiry {expiry} in the {chain.currency} chain; expiries: {known or 'none'}")
    tables.append(Text("* stale book"))
    return Group(*tables)


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
    if not surface.surface_ok:
        notes += "; the fit failed, quotes only"
    return Group(table, Text(notes))


def startup_text(stages: Iterable[Stage]) -> str:
    return "; ".join(f"{s.name}: {'done' if s.done else 'waiting'}{' (' + s.detail + ')' if s.detail else ''}"
                     for s in stages)
