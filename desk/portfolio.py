"""Our orders, positions and account figures as notifications build them, and the
reconciliation that takes in the exchange's own (pure; the Portfolio actor calls it).

A snapshot from the exchange is taken in as of when the exchange took it, never as of when it
arrived, so the picture never goes back in time, whatever the order in which the answers and
the notifications arrive:

- a fill we received before the snapshot's requests went out is in it (the exchange told us of
  it before it heard our request): nothing to do;
- a fill received while the requests were out is placed by the exchange's own times: stamped
  after the answer left (Deribit's ``usOut``) it is applied again on top of the snapshot, before
  the request arrived (``usIn``) it is in it; in between, or when the snapshot already holds a
  fill stamped after it (the times and the positions disagree), the snapshot is discarded and
  asked for again;
- a fill received after the snapshot was taken in, stamped before it was taken, is not applied
  (it should be in it) and not trusted either: the picture is in doubt until the next snapshot,
  which the Portfolio asks for at once;
- order states newer than the snapshot's open orders are kept.

Deribit's conventions: option amounts and prices are in coin, the average price is the
amount-weighted mean; futures and perpetual amounts are USD and inverse, so the average price is
the USD-weighted harmonic mean (``size / sum(usd_i / price_i)``) and PnL in coin is
``size * (1 / average - 1 / mark)``. Reducing a position keeps its average; flipping it opens
the rest at the fill's price.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import msgspec

from deribit.instruments import currency_of, kind_of
from messages.account import AccountFigures, ExchangeState, ExchangeWindow, OrderUpdate, Position, UserTrade
from messages.market import Ticker
from messages.state import PortfolioChanged

#: Order states after which an order is gone from the open orders.
CLOSED_ORDER_STATES = frozenset({"filled", "cancelled", "rejected"})
#: How many closed order ids and applied trade ids are remembered (late duplicates are ignored).
MEMORY = 10_000
#: Fills kept per currency to apply again on top of a snapshot taken before them.
JOURNAL = 2_000
#: Trade ids a picture carries (``PortfolioChanged.recent_trade_ids``): a hedger checks its own in them.
RECENT_TRADES = 512
#: Amounts are sums of contract multiples: rounding away float dust keeps them exact.
AMOUNT_DECIMALS = 8
#: A position size or price this close is the same (float noise of the exchange's rounding).
SIZE_TOLERANCE = 1e-8
PRICE_RELATIVE_TOLERANCE = 1e-6


def _clean(x: float) -> float:
    return round(x, AMOUNT_DECIMALS) + 0.0


def apply_fill(position: Position | None, trade: UserTrade) -> Position | None:
    """The position after one of our fills; ``None`` when it is flat."""
    kind = position.kind if position is not None else kind_of(trade.instrument_name)
    signed = trade.amount if trade.direction == "buy" else -trade.amount
    size = position.size if position is not None else 0.0
    average = position.average_price if position is not None else 0.0
    price = trade.price
    if size == 0 or (size > 0) == (signed > 0):
        new_size = _clean(size + signed)
        average = _opened_average(kind, size, average, signed, price, new_size)
    else:
        closing = min(abs(signed), abs(size))
        new_size = _clean(size - math.copysign(closing, size))
        rest = _clean(abs(signed) - closing)
        if rest > 0:
            new_size = math.copysign(rest, signed)
            average = price
        elif new_size == 0:
            average = 0.0
    if new_size == 0:
        return None
    mark = trade.mark_price if trade.mark_price is not None else (position.mark_price if position else None)
    base = position or Position(instrument_name=trade.instrument_name, kind=kind, direction="zero", size=0.0)
    updated = msgspec.structs.replace(
        base,
        size=new_size,
        direction="buy" if new_size > 0 else "sell",
        average_price=average,
        mark_price=mark,
        index_price=trade.index_price if trade.index_price is not None else base.index_price,
    )
    return with_mark(updated, mark, updated.index_price, None)


def _opened_average(kind: str, size: float, average: float, signed: float, price: float, new_size: float) -> float:
    if kind == "option":
        return (abs(size) * average + abs(signed) * price) / abs(new_size)
    coins = (size / average if size else 0.0) + signed / price
    return new_size / coins


def with_mark(position: Position, mark: float | None, index: float | None, ticker: Ticker | None) -> Position:
    """The position's mark-dependent figures (delta, greeks, floating PnL) at ``mark``.
    Greeks come from the option's ticker; a future's delta is its size in coin."""
    if mark is None or mark <= 0:
        return position
    size = position.size
    changes: dict[str, float | None] = {"mark_price": mark, "index_price": index}
    if position.kind == "option":
        floating = size * (mark - position.average_price)
        greeks = ticker.greeks if ticker is not None else None
        if greeks is not None:
            changes.update(
                delta=size * greeks.delta,
                gamma=size * greeks.gamma,
                vega=size * greeks.vega,
                theta=size * greeks.theta,
            )
    else:
        floating = size * (1.0 / position.average_price - 1.0 / mark) if position.average_price else 0.0
        changes.update(size_currency=size / mark, delta=size / mark)
    changes["floating_profit_loss"] = floating
    if position.realized_profit_loss is not None:
        changes["total_profit_loss"] = position.realized_profit_loss + floating
    return msgspec.structs.replace(position, **changes)


@dataclass(frozen=True, slots=True)
class Difference:
    """One way our picture differed from the exchange's at a reconcile."""

    currency: str
    what: str  # "position" | "order"
    key: str  # instrument or order id
    field: str
    ours: object
    theirs: object

    def __str__(self) -> str:
        return f"{self.currency} {self.what} {self.key} {self.field}: ours {self.ours!r}, exchange {self.theirs!r}"


def _close(a: float | None, b: float | None, relative: float, absolute: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= max(absolute, relative * max(abs(a), abs(b)))


def position_differences(currency: str, ours: dict[str, Position], theirs: dict[str, Position]) -> list[Difference]:
    out: list[Difference] = []
    for name in sorted(ours.keys() | theirs.keys()):
        mine, real = ours.get(name), theirs.get(name)
        if mine is None or real is None:
            out.append(Difference(currency, "position", name, "size", mine.size if mine else 0.0,
                                  real.size if real else 0.0))
            continue
        if not _close(mine.size, real.size, 0.0, SIZE_TOLERANCE):
            out.append(Difference(currency, "position", name, "size", mine.size, real.size))
        if not _close(mine.average_price, real.average_price, PRICE_RELATIVE_TOLERANCE, 1e-8):
            out.append(Difference(currency, "position", name, "average_price", mine.average_price,
                                  real.average_price))
    return out


_ORDER_FIELDS = ("instrument_name", "order_state", "direction", "amount", "filled_amount", "price", "trigger_price")


def order_differences(currency: str, ours: dict[str, OrderUpdate], theirs: dict[str, OrderUpdate]) -> list[Difference]:
    out: list[Difference] = []
    for order_id in sorted(ours.keys() | theirs.keys()):
        mine, real = ours.get(order_id), theirs.get(order_id)
        if mine is None or real is None:
            out.append(Difference(currency, "order", order_id, "presence",
                                  "open" if mine else "absent", "open" if real else "absent"))
            continue
        for name in _ORDER_FIELDS:
            a, b = getattr(mine, name), getattr(real, name)
            same = _close(a, b, 1e-9, SIZE_TOLERANCE) if isinstance(a, float) and isinstance(b, float) else a == b
            if not same:
                out.append(Difference(currency, "order", order_id, name, a, b))
    return out


def _same_sizes(a: dict[str, Position], b: dict[str, Position], fills: list[UserTrade]) -> bool:
    """Whether the instruments ``fills`` touch have the same position size in ``a`` and ``b``."""
    return all(_close(a[n].size if n in a else 0.0, b[n].size if n in b else 0.0, 0.0, SIZE_TOLERANCE)
               for n in {t.instrument_name for t in fills})


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """What taking in one snapshot did: ``applied`` (with ``differences`` between our picture and
    the result, and how many of our later fills and order states were kept on top of it) or not
    (``doubt`` says why it was discarded: it must be asked for again)."""

    applied: bool
    differences: list[Difference] = field(default_factory=list)
    replayed_fills: int = 0
    kept_orders: int = 0
    doubt: str = ""


@dataclass(slots=True)
class Received:
    """One of our fills as it came, and whether it was applied to the positions (a fill in doubt
    is not: the next snapshot holds it)."""

    trade: UserTrade
    applied: bool


@dataclass
class CurrencyAccount:
    """One currency's open orders, positions and account figures, and what is needed to take a
    snapshot in as of when it was taken."""

    currency: str
    orders: dict[str, OrderUpdate] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    figures: AccountFigures | None = None
    reconciled: bool = False
    reconciled_at: float | None = None
    # When the exchange took the last snapshot's positions and open orders (None: not said).
    positions_window: ExchangeWindow | None = None
    orders_window: ExchangeWindow | None = None
    # Reconciles under way: their round -> how many fills had come when their requests went out.
    outstanding: dict[int, int] = field(default_factory=dict)
    # The fills that came (newest last) and how many ever did: a snapshot is placed among them.
    journal: collections.deque[Received] = field(default_factory=lambda: collections.deque(maxlen=JOURNAL))
    journal_count: int = 0
    # When the requests of the snapshot in use went out (the program's clock): every fill we
    # knew of then is in its positions.
    requested_at: float | None = None
    recent_trades: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=RECENT_TRADES))
    # Why the picture cannot be trusted until the next snapshot ("" when it can).
    doubt: str = ""

    def snapshot(self, at: float) -> PortfolioChanged:
        figures = self.figures
        orders = sorted(self.orders.values(), key=lambda o: (o.creation_timestamp, o.order_id))
        return PortfolioChanged(
            currency=self.currency,
            at=at,
            positions=tuple(self.positions[name] for name in sorted(self.positions)),
            open_orders=tuple(orders),
            equity=figures.equity if figures else None,
            balance=figures.balance if figures else None,
            available_funds=figures.available_funds if figures else None,
            initial_margin=figures.initial_margin if figures else None,
            maintenance_margin=figures.maintenance_margin if figures else None,
            delta_total=figures.delta_total if figures else None,
            options_delta=figures.options_delta if figures else None,
            options_gamma=figures.options_gamma if figures else None,
            options_vega=figures.options_vega if figures else None,
            options_theta=figures.options_theta if figures else None,
            reconciled=self.reconciled,
            reconciling=bool(self.outstanding),
            reconciled_at=self.reconciled_at,
            reconcile_requested_at=self.requested_at,
            recent_trade_ids=tuple(self.recent_trades),
        )


class PortfolioBook:
    """Every currency's :class:`CurrencyAccount`. Each ``on_*`` method returns the currency
    whose picture changed (``None``: nothing changed)."""

    def __init__(self, currencies: tuple[str, ...] = ()) -> None:
        self.accounts: dict[str, CurrencyAccount] = {c: CurrencyAccount(c) for c in currencies}
        # Closed order ids -> the exchange's time of their closing state (ms).
        self._closed: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._trades: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.tickers: dict[str, Ticker] = {}

    def account(self, currency: str) -> CurrencyAccount:
        account = self.accounts.get(currency)
        if account is None:
            account = self.accounts[currency] = CurrencyAccount(currency)
        return account

    @staticmethod
    def _remember(memory: collections.OrderedDict[str, int], key: str, value: int = 0) -> None:
        memory[key] = value
        if len(memory) > MEMORY:
            memory.popitem(last=False)

    # -- notifications ------------------------------------------------------------------------------
    def on_order(self, order: OrderUpdate) -> str | None:
        """An order's new state (``user.orders`` or the answer to our own command)."""
        account = self.account(currency_of(order.instrument_name))
        order_id = order.order_id
        if order_id in self._closed:
            return None  # a late duplicate of an order we saw end
        known = account.orders.get(order_id)
        if known is not None and order.last_update_timestamp < known.last_update_timestamp:
            return None  # older than what we hold (an answer overtaken by a notification)
        if order.order_state in CLOSED_ORDER_STATES:
            self._remember(self._closed, order_id, order.last_update_timestamp)
            if account.orders.pop(order_id, None) is None:
                return None
            return account.currency
        window = account.orders_window
        if known is None and window is not None and window.includes(order.last_update_timestamp):
            return None  # the snapshot, taken after this state, no longer lists it as open
        if known == order:
            return None
        account.orders[order_id] = order
        return account.currency

    def on_trade(self, trade: UserTrade) -> str | None:
        """One of our fills: the position moves (each trade id counts once, and not at all when
        the last snapshot already holds it)."""
        if trade.trade_id in self._trades:
            return None
        self._remember(self._trades, trade.trade_id)
        account = self.account(currency_of(trade.instrument_name))
        window = account.positions_window
        included = window.includes(trade.timestamp) if window is not None else False
        account.journal.append(Received(trade, applied=included is False))
        account.journal_count += 1
        if included is not False:
            # Stamped before (or while) the exchange took the snapshot now in use, yet news to
            # us: it should be in it, but a fill counted twice or not at all is a wrong hedge, so
            # the picture is in doubt until a snapshot asked for now says.
            when = "as it was stamped" if included is None else "after it"
            account.doubt = (f"fill {trade.trade_id} of {trade.instrument_name} ({trade.timestamp} ms) came only after "
                             f"a snapshot of the positions the exchange took {when}")
            account.reconciled = False
            return account.currency
        account.recent_trades.append(trade.trade_id)
        name = trade.instrument_name
        position = apply_fill(account.positions.get(name), trade)
        if position is None:
            account.positions.pop(name, None)
        else:
            ticker = self.tickers.get(name)
            if ticker is not None:
                position = with_mark(position, ticker.mark_price, ticker.index_price, ticker)
            account.positions[name] = position
        return account.currency

    def on_figures(self, figures: AccountFigures) -> str:
        account = self.account(figures.currency)
        account.figures = figures
        return account.currency

    def on_ticker(self, ticker: Ticker) -> str | None:
        """A held instrument's marks; tickers of anything else are ignored (one lookup)."""
        name = ticker.instrument_name
        account = self.accounts.get(currency_of(name))
        if account is None:
            return None
        position = account.positions.get(name)
        if position is None:
            return None
        self.tickers[name] = ticker
        account.positions[name] = with_mark(position, ticker.mark_price, ticker.index_price, ticker)
        return account.currency

    # -- the link and the exchange's truth ----------------------------------------------------------
    def link_lost(self) -> list[str]:
        """Notifications may have been lost: nothing is reconciled until the exchange says so,
        and the reconciles under way went with the link."""
        changed = [a.currency for a in self.accounts.values() if a.reconciled or a.outstanding]
        for account in self.accounts.values():
            account.reconciled = False
            account.outstanding.clear()
        return changed

    def reconcile_started(self, currency: str, number: int) -> str:
        """Reconcile ``number`` of ``currency`` sent its requests."""
        account = self.account(currency)
        account.outstanding[number] = account.journal_count
        return currency

    def reconcile_failed(self, currency: str, number: int) -> str | None:
        account = self.account(currency)
        return currency if account.outstanding.pop(number, None) is not None else None

    def reconcile(self, state: ExchangeState) -> ReconcileOutcome:
        """Take in one currency's snapshot as of when the exchange took it (see the module doc),
        or discard it when that cannot be told."""
        account = self.account(state.currency)
        known_when_asked = account.outstanding.pop(state.round, None)
        replay, doubt = self._fills_after(account, state.positions_window, known_when_asked)
        if doubt:
            return ReconcileOutcome(applied=False, doubt=doubt)
        theirs_positions = {p.instrument_name: p for p in state.positions if p.size != 0}
        as_taken = dict(theirs_positions)
        for trade in replay:
            name = trade.instrument_name
            position = apply_fill(theirs_positions.get(name), trade)
            if position is None:
                theirs_positions.pop(name, None)
                continue
            ticker = self.tickers.get(name)
            if ticker is not None:
                position = with_mark(position, ticker.mark_price, ticker.index_price, ticker)
            theirs_positions[name] = position
        if replay and _same_sizes(as_taken, account.positions, replay) and not _same_sizes(
                theirs_positions, account.positions, replay):
            # Our fills stamped after it are in it already: its times and its positions disagree.
            return ReconcileOutcome(applied=False, doubt=(
                f"the snapshot already holds {len(replay)} fill(s) the exchange stamped after it took it"))
        theirs_orders, kept = self._orders_as_of(account, state)
        differences = position_differences(state.currency, account.positions, theirs_positions)
        differences += order_differences(state.currency, account.orders, theirs_orders)
        for name in account.positions.keys() - theirs_positions.keys():
            self.tickers.pop(name, None)
        account.positions = theirs_positions
        account.orders = theirs_orders
        if state.summary is not None:
            account.figures = state.summary
        account.reconciled = True
        account.reconciled_at = state.at
        account.positions_window = state.positions_window
        account.orders_window = state.orders_window
        account.requested_at = state.requested_at
        account.doubt = ""
        # Every fill that came is in these positions now, one way or the other.
        for received in account.journal:
            if not received.applied:
                received.applied = True
                account.recent_trades.append(received.trade.trade_id)
        return ReconcileOutcome(applied=True, differences=differences, replayed_fills=len(replay), kept_orders=kept)

    @staticmethod
    def _fills_after(account: CurrencyAccount, window: ExchangeWindow | None,
                     known_when_asked: int | None) -> tuple[list[UserTrade], str]:
        """Our fills the snapshot cannot hold (to apply on top of it), or why it cannot be told.
        ``known_when_asked``: how many fills had come when its requests went out (those are in
        it); None when that is not known (its start was not seen): then every fill kept is
        placed by the exchange's times."""
        first = account.journal_count - len(account.journal)
        since = [r.trade for i, r in enumerate(account.journal, first)
                 if known_when_asked is None or i >= known_when_asked]
        if window is None:
            if since and known_when_asked is not None:
                return [], (f"{len(since)} fill(s) came while the positions were fetched, and the answer does not "
                            "say when the exchange took them")
            return [], ""
        after: list[UserTrade] = []
        for trade in since:
            included = window.includes(trade.timestamp)
            if included is None:
                return [], (f"fill {trade.trade_id} of {trade.instrument_name} ({trade.timestamp} ms) came while the "
                            f"exchange was taking its positions ({window.received_us}-{window.sent_us} µs)")
            if not included:
                after.append(trade)
        return after, ""

    def _orders_as_of(self, account: CurrencyAccount, state: ExchangeState) -> tuple[dict[str, OrderUpdate], int]:
        """The snapshot's open orders with what we know happened to them since."""
        window = state.orders_window
        theirs = {o.order_id: o for o in state.open_orders if o.order_state not in CLOSED_ORDER_STATES}
        kept = 0
        for order_id, real in list(theirs.items()):
            closed_at = self._closed.get(order_id)
            if closed_at is None:
                continue
            if window is not None and closed_at >= real.last_update_timestamp:
                del theirs[order_id]  # we saw it end after the state the snapshot holds
                kept += 1
            else:
                del self._closed[order_id]  # the exchange knows better: it is open
        if window is None:
            return theirs, kept
        for order_id, mine in account.orders.items():
            known = theirs.get(order_id)
            if known is not None:
                if mine.last_update_timestamp > known.last_update_timestamp:
                    theirs[order_id] = mine
                    kept += 1
            elif window.includes(mine.last_update_timestamp) is not True:
                # Placed or changed while or after the exchange answered: not gone, just newer.
                theirs[order_id] = mine
                kept += 1
        return theirs, kept

    # -- expiry -------------------------------------------------------------------------------------
    def drop_instruments(self, names: set[str] | frozenset[str]) -> list[str]:
        """Instruments that settled or are no longer listed leave positions and orders."""
        changed = []
        for account in self.accounts.values():
            gone_positions = [n for n in account.positions if n in names]
            gone_orders = [i for i, o in account.orders.items() if o.instrument_name in names]
            for name in gone_positions:
                del account.positions[name]
                self.tickers.pop(name, None)
            for order_id in gone_orders:
                del account.orders[order_id]
            if gone_positions or gone_orders:
                changed.append(account.currency)
        return changed

    def held_instruments(self) -> set[str]:
        names: set[str] = set()
        for account in self.accounts.values():
            names.update(account.positions)
            names.update(o.instrument_name for o in account.orders.values())
        return names
