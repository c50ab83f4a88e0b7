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
- order states newer than the snapshot's open orders are kept;
- the positions of a ``user.changes`` event are the exchange's truth after that event: taken
  unless the picture already holds something newer of that instrument (a fill stamped after the
  event, or a snapshot taken after it); its orders and fills go the usual way, each once.

Positions and PnL follow Deribit's definitions, in one place: :mod:`deribit.contracts` (inverse
futures, inverse options, linear USDC instruments, from each instrument's identity). Where the
exchange sends a figure (``private/get_positions`` on a reconcile, the positions of
``user.changes``) the desk takes it, and computes between two such figures with the same
definitions, so a column never jumps: the session price behind the exchange's floating PnL is
kept and moved by our fills, so the next ticker at the same mark gives back the same figure. An
instrument whose metadata has not come yet keeps the exchange's figures (its size still moves
with our fills) and is named in the picture's ``unmodelled``. The 08:00 UTC settlement restarts
every session (floating from the settlement price, realized at 0); an expired position leaves
with its delivery (``deliveries``), the exchange's own entry replacing ours once it lists it.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import msgspec

from deribit import contracts
from deribit.contracts import Holding
from deribit.instruments import InstrumentIdentity, currency_of, identity_of, kind_of
from messages.account import (
    AccountFigures,
    ExchangeState,
    ExchangeWindow,
    OrderUpdate,
    Position,
    Settlement,
    SettlementHistory,
    UserChanges,
    UserTrade,
)
from messages.market import InstrumentsLoaded, Ticker
from messages.state import PortfolioChanged

#: Order states after which an order is gone from the open orders.
CLOSED_ORDER_STATES = frozenset({"filled", "cancelled", "rejected"})
#: How many closed order ids and applied trade ids are remembered (late duplicates are ignored).
MEMORY = 10_000
#: Fills kept per currency to apply again on top of a snapshot taken before them.
JOURNAL = 2_000
#: Trade ids a picture carries (``PortfolioChanged.recent_trade_ids``): a hedger checks its own in them.
RECENT_TRADES = 512
#: Deliveries and exchange settlement entries a picture carries, newest first.
RECENT_SETTLEMENTS = 100
#: A position size or price this close is the same (float noise of the exchange's rounding).
SIZE_TOLERANCE = 1e-8
PRICE_RELATIVE_TOLERANCE = 1e-6


@dataclass(slots=True)
class Session:
    """What the exchange's figures do not carry but the next ones depend on: the session price
    (the session's average; the settlement price for what was carried over) and the settlement
    price it last started from (``None``: not known). ``provisional``: restarted at our own last
    mark on the rollover, until a ticker says the exchange's settlement price."""

    price: float
    settlement_price: float | None = None
    provisional: bool = False
    filled_since: bool = False


def _holding(position: Position, session: Session | None) -> Holding:
    return Holding(position.size, position.average_price,
                   session.price if session is not None else position.average_price,
                   position.realized_profit_loss or 0.0)


def apply_fill(position: Position | None, trade: UserTrade, identity: InstrumentIdentity | None = None,
               session: Session | None = None) -> tuple[Position | None, Session | None]:
    """The position after one of our fills (``None`` when flat) and its session. Without the
    instrument's identity only the size moves (a new position's average is the fill's price,
    whatever the maths); its PnL figures are not guessed."""
    money = contracts.money_of(identity) if identity is not None else None
    signed = trade.amount if trade.direction == "buy" else -trade.amount
    base = position or Position(instrument_name=trade.instrument_name, kind=_kind(identity, trade.instrument_name),
                                direction="zero", size=0.0)
    mark = trade.mark_price if trade.mark_price is not None else base.mark_price
    index = trade.index_price if trade.index_price is not None else base.index_price
    if money is None:
        size = contracts.round_amount(base.size + signed)
        if size == 0:
            return None, None
        flipped = base.size == 0 or (size > 0) != (base.size > 0)
        updated = msgspec.structs.replace(
            base, size=size, direction="buy" if size > 0 else "sell",
            average_price=trade.price if flipped else base.average_price, mark_price=mark, index_price=index,
            floating_profit_loss=None, total_profit_loss=None,
            size_currency=None if base.kind != "option" else base.size_currency,
            delta=None if base.kind != "option" else base.delta)
        return updated, None
    held = contracts.fill(money, _holding(base, session) if position is not None else None, signed, trade.price)
    if held.size == 0:
        return None, None
    new_session = Session(held.session_price, session.settlement_price if session else None,
                          session.provisional if session else False, filled_since=True)
    updated = msgspec.structs.replace(
        base, size=held.size, direction="buy" if held.size > 0 else "sell", average_price=held.average_price,
        realized_profit_loss=held.realized, mark_price=mark, index_price=index)
    return with_mark(updated, mark, index, None, identity, new_session), new_session


def _kind(identity: InstrumentIdentity | None, name: str) -> str:
    """Deribit's position ``kind``: from the identity, else the name's shape (a label only)."""
    if identity is not None:
        return "option" if identity.is_option else "future"
    return kind_of(name)


def with_mark(position: Position, mark: float | None, index: float | None, ticker: Ticker | None,
              identity: InstrumentIdentity | None = None, session: Session | None = None) -> Position:
    """The position's mark-dependent figures at ``mark``: Deribit's floating (session) and total
    PnL and a future's delta in coin (:mod:`deribit.contracts`), an option's greeks from its
    ticker. Without the identity the PnL figures stay the exchange's."""
    if mark is None or not 0.0 < mark < math.inf:  # a mark that is no price moves nothing
        return position
    size = position.size
    changes: dict[str, float | None] = {"mark_price": mark, "index_price": index}
    greeks = ticker.greeks if ticker is not None else None
    if greeks is not None and position.kind == "option":
        changes.update(delta=size * greeks.delta, gamma=size * greeks.gamma, vega=size * greeks.vega,
                       theta=size * greeks.theta)
    money = contracts.money_of(identity) if identity is not None else None
    if money is not None:
        figures = contracts.mark(money, _holding(position, session), mark)
        changes.update(floating_profit_loss=figures.floating_profit_loss,
                       total_profit_loss=figures.total_profit_loss)
        if figures.delta is not None:
            changes.update(size_currency=figures.size_currency, delta=figures.delta)
    return msgspec.structs.replace(position, **changes)


def _settled_in(session: Session, price: float) -> tuple[Session, bool]:
    """The session after a ticker saying the instrument's settlement price is ``price``, and
    whether that restarted it (a settlement no rollover told us of: realized moves on)."""
    if session.settlement_price is None and not session.provisional:
        return Session(session.price, price, False, session.filled_since), False  # first seen
    if session.settlement_price == price and not session.provisional:
        return session, False
    if session.provisional:
        # The rollover restarted the session at our own last mark: now at the exchange's price
        # (unless our fills since moved it: the reconcile after the rollover settles that).
        return Session(session.price if session.filled_since else price, price, False, session.filled_since), False
    return Session(price, price, False, False), True


def _delivered_by(ticker: Ticker) -> bool:
    """The closing ticker of an expiring instrument: it says the price it delivered at."""
    price = ticker.delivery_price
    return ticker.estimated_delivery_price == "expired" and price is not None and 0.0 < price < math.inf


def _event_ms(changes: UserChanges) -> int | None:
    """When the exchange stamped one user.changes event (ms): its newest fill or order state."""
    stamps = [t.timestamp for t in changes.trades] + [o.last_update_timestamp for o in changes.orders
                                                       if o.last_update_timestamp]
    return max(stamps) if stamps else None


def _delivery_prices(identity: InstrumentIdentity | None, ticker: Ticker | None,
                     position: Position) -> tuple[float | None, float | None, bool]:
    """(the underlying's delivery price, the instrument's value at it, whether both are the
    exchange's own) for a position leaving at expiry: the closing ticker's ``delivery_price``,
    else its last ``estimated_delivery_price``, else the last mark as the value."""
    if ticker is not None and _delivered_by(ticker):
        underlying, exact = ticker.delivery_price, True
    elif (ticker is not None and isinstance(ticker.estimated_delivery_price, float)
          and 0.0 < ticker.estimated_delivery_price < math.inf):
        underlying, exact = ticker.estimated_delivery_price, False
    else:
        return None, position.mark_price, False
    assert underlying is not None
    if identity is not None:
        return underlying, contracts.delivery_value(identity, underlying), exact
    return underlying, underlying if position.kind == "future" else None, exact


def _delivery(identity: InstrumentIdentity | None, position: Position, session: Session | None, timestamp_ms: int,
              underlying: float | None, value: float | None) -> Settlement:
    """Our own delivery entry of a position leaving at ``value`` (its price at expiry; the
    underlying's delivery price beside it, as Deribit's entries carry the index): Deribit's
    ``profit_loss`` is the session's floating at it, ``session_profit_loss`` that plus the
    session's realized (both ``None`` without the contract maths)."""
    money = contracts.money_of(identity) if identity is not None else None
    profit = session_profit = None
    if money is not None and value is not None and value >= 0 and (value > 0 or not money.harmonic):
        _held, session_profit = contracts.settle(money, _holding(position, session), value)
        profit = session_profit - (position.realized_profit_loss or 0.0)
    return Settlement(type="delivery", timestamp=timestamp_ms, instrument_name=position.instrument_name,
                      position=position.size, mark_price=value, index_price=underlying, profit_loss=profit,
                      session_profit_loss=session_profit)


def session_of(position: Position, identity: InstrumentIdentity | None) -> Session | None:
    """The session behind one of the exchange's positions (``None`` without the identity)."""
    money = contracts.money_of(identity) if identity is not None else None
    if money is None:
        return None
    settled = position.settlement_price if position.settlement_price else None
    price = contracts.session_price_from(money, position.size, position.floating_profit_loss, position.mark_price,
                                         settled, position.average_price)
    return Session(price, settled)


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
    # Each modelled position's session (a position without one has no metadata yet: unmodelled).
    sessions: dict[str, Session] = field(default_factory=dict)
    # The exchange's time (ms) of the newest fill applied per instrument: an older user.changes
    # position would take the picture back in time.
    last_fill_ms: dict[str, int] = field(default_factory=dict)
    deliveries: collections.deque[Settlement] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_SETTLEMENTS))
    settlements: tuple[Settlement, ...] = ()

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
            unmodelled=tuple(sorted(self.positions.keys() - self.sessions.keys())),
            deliveries=tuple(self.deliveries),
            settlements=self.settlements,
        )

    def put(self, name: str, position: Position | None, session: Session | None) -> None:
        """Set (``None``: remove) one instrument's position and its session."""
        if position is None:
            self.positions.pop(name, None)
            self.sessions.pop(name, None)
            return
        self.positions[name] = position
        if session is None:
            self.sessions.pop(name, None)
        else:
            self.sessions[name] = session

    def record_delivery(self, entry: Settlement) -> None:
        """A position that left at expiry; an entry of the same instrument is replaced (the
        exchange's own, or the closing ticker's price, is better than an estimate)."""
        kept = [d for d in self.deliveries if d.instrument_name != entry.instrument_name]
        self.deliveries.clear()
        self.deliveries.extend([entry, *kept])


class PortfolioBook:
    """Every currency's :class:`CurrencyAccount`. Each ``on_*`` method returns the currency
    whose picture changed (``None``: nothing changed)."""

    def __init__(self, currencies: tuple[str, ...] = ()) -> None:
        self.accounts: dict[str, CurrencyAccount] = {c: CurrencyAccount(c) for c in currencies}
        # Closed order ids -> the exchange's time of their closing state (ms).
        self._closed: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._trades: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.tickers: dict[str, Ticker] = {}
        # Each listed instrument's identity (metadata): which contract maths its figures follow.
        self.identities: dict[str, InstrumentIdentity] = {}
        # Positions that left at expiry before their delivery price was known: (identity, the
        # position, its session), to compute the delivery again when the closing ticker comes.
        self._delivered: collections.OrderedDict[str, tuple[InstrumentIdentity | None, Position, Session | None]] = (
            collections.OrderedDict())

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
        account.last_fill_ms[name] = max(trade.timestamp, account.last_fill_ms.get(name, 0))
        self._apply(account.positions, account.sessions, trade, account)
        return account.currency

    def _apply(self, positions: dict[str, Position], sessions: dict[str, Session], trade: UserTrade,
               account: CurrencyAccount | None = None) -> None:
        """One fill on ``positions`` and ``sessions`` (an account's, or a snapshot's being replayed)."""
        name = trade.instrument_name
        identity = self.identities.get(name)
        position, session = apply_fill(positions.get(name), trade, identity, sessions.get(name))
        if position is not None:
            ticker = self.tickers.get(name)
            if ticker is not None:
                position = with_mark(position, ticker.mark_price, ticker.index_price, ticker, identity, session)
        if account is not None:
            account.put(name, position, session)
            return
        if position is None:
            positions.pop(name, None)
        else:
            positions[name] = position
        if session is None:
            sessions.pop(name, None)
        else:
            sessions[name] = session

    def on_figures(self, figures: AccountFigures) -> str:
        account = self.account(figures.currency)
        account.figures = figures
        return account.currency

    def on_ticker(self, ticker: Ticker) -> str | None:
        """A held instrument's marks; tickers of anything else are ignored (one lookup). A new
        settlement price in the ticker restarts the session at it; the closing ticker of an
        expiring instrument (``estimated_delivery_price`` "expired") delivers the position."""
        name = ticker.instrument_name
        account = self.accounts.get(currency_of(name))
        if account is None:
            return None
        position = account.positions.get(name)
        if position is None:
            return self._late_delivery(ticker) if ticker.estimated_delivery_price == "expired" else None
        if _delivered_by(ticker):
            return self._deliver(account, name, ticker.timestamp, ticker)
        self.tickers[name] = ticker
        identity = self.identities.get(name)
        session = account.sessions.get(name)
        settlement = ticker.settlement_price
        if session is not None and identity is not None and settlement is not None and 0.0 < settlement < math.inf:
            session, restarted = _settled_in(session, settlement)
            account.sessions[name] = session
            changes: dict[str, float | None] = {"settlement_price": session.settlement_price}
            if restarted:
                changes["realized_profit_loss"] = 0.0
            position = msgspec.structs.replace(position, **changes)
        account.positions[name] = with_mark(position, ticker.mark_price, ticker.index_price, ticker, identity, session)
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
        theirs_sessions = {name: session for name, p in theirs_positions.items()
                           if (session := session_of(p, self.identities.get(name))) is not None}
        for trade in replay:
            self._apply(theirs_positions, theirs_sessions, trade)
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
        account.sessions = theirs_sessions
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

    # -- metadata, settlement and expiry -------------------------------------------------------------
    def on_instruments(self, loaded: InstrumentsLoaded) -> list[str]:
        """Identities of a currency's listed instruments. A held position that had none is
        modelled from now on, from the exchange's figures it holds (currencies that changed)."""
        for instrument in loaded.instruments:
            self.identities[instrument.instrument_name] = identity_of(instrument)
        changed = []
        for account in self.accounts.values():
            newly = [n for n in account.positions if n not in account.sessions and n in self.identities]
            for name in newly:
                session = session_of(account.positions[name], self.identities[name])
                if session is not None:
                    account.sessions[name] = session
            if newly:
                changed.append(account.currency)
        return changed

    def unlisted(self, loaded: InstrumentsLoaded) -> set[str]:
        """Held instruments (positions or orders) that a complete list should hold and does not:
        those of the list's family (``ETH_USDC-...`` instruments are the ``ETH_USDC`` family's, never
        ``ETH``'s). An instrument whose metadata never came is not judged by a list."""
        listed = {i.instrument_name for i in loaded.instruments}
        return {name for name in self.held_instruments()
                if name not in listed and name in self.identities and currency_of(name) == loaded.currency}

    def settle_sessions(self) -> list[str]:
        """The 08:00 UTC settlement (``DailyRollover``): every modelled session restarts at the
        last mark (a ticker then says the exchange's own settlement price), realized at 0."""
        changed = []
        for account in self.accounts.values():
            for name, session in list(account.sessions.items()):
                position = account.positions[name]
                identity = self.identities.get(name)
                money = contracts.money_of(identity) if identity is not None else None
                if money is None or position.mark_price is None or position.mark_price <= 0:
                    continue
                held, _paid = contracts.settle(money, _holding(position, session), position.mark_price)
                session = account.sessions[name] = Session(held.session_price, session.settlement_price, True)
                position = msgspec.structs.replace(position, realized_profit_loss=0.0)
                account.positions[name] = with_mark(position, position.mark_price, position.index_price, None,
                                                    identity, session)
                if account.currency not in changed:
                    changed.append(account.currency)
        return changed

    def _deliver(self, account: CurrencyAccount, name: str, timestamp_ms: int, ticker: Ticker | None) -> str:
        """The position in ``name`` leaves at expiry at the closing ``ticker``'s delivery price,
        else at an estimate that a closing ticker may correct later."""
        position = account.positions[name]
        session = account.sessions.get(name)
        identity = self.identities.get(name)
        underlying, value, exact = _delivery_prices(identity, ticker, position)
        account.record_delivery(_delivery(identity, position, session, timestamp_ms, underlying, value))
        if not exact:
            self._delivered[name] = (identity, position, session)
            while len(self._delivered) > RECENT_SETTLEMENTS:
                self._delivered.popitem(last=False)
        self._leave(account, name)
        return account.currency

    def _leave(self, account: CurrencyAccount, name: str) -> None:
        account.put(name, None, None)
        self.tickers.pop(name, None)
        for order_id in [i for i, o in account.orders.items() if o.instrument_name == name]:
            del account.orders[order_id]

    def _late_delivery(self, ticker: Ticker) -> str | None:
        """The closing ticker of a position that already left on an estimate: the exact entry."""
        name = ticker.instrument_name
        if not _delivered_by(ticker) or name not in self._delivered:
            return None
        identity, position, session = self._delivered.pop(name)
        underlying, value, _exact = _delivery_prices(identity, ticker, position)
        account = self.account(currency_of(name))
        account.record_delivery(_delivery(identity, position, session, ticker.timestamp, underlying, value))
        return account.currency

    def drop_instruments(self, names: set[str] | frozenset[str], at_ms: int = 0) -> list[str]:
        """Instruments that expired or are no longer listed leave positions and orders; a
        position leaves as a delivery at the best price known (the closing ticker's, else its
        last estimated delivery price, else its mark), corrected when the closing ticker or the
        exchange's settlement history says more."""
        changed = []
        for account in self.accounts.values():
            gone_positions = [n for n in account.positions if n in names]
            gone_orders = [i for i, o in account.orders.items() if o.instrument_name in names]
            for name in gone_positions:
                ticker = self.tickers.get(name)
                closed = ticker is not None and _delivered_by(ticker)
                self._deliver(account, name, ticker.timestamp if ticker is not None and closed else at_ms, ticker)
            for order_id in gone_orders:
                account.orders.pop(order_id, None)
            if gone_positions or gone_orders:
                changed.append(account.currency)
        return changed

    def on_settlement_history(self, history: SettlementHistory) -> list[str]:
        """The exchange's settlements and deliveries: kept for the picture; a delivery of a position
        still held takes it out (with the exchange's figures), and replaces our own entry of it."""
        changed: set[str] = set()
        by_currency: dict[str, list[Settlement]] = {}
        for entry in history.settlements:
            if entry.instrument_name:
                by_currency.setdefault(currency_of(entry.instrument_name), []).append(entry)
        for currency, entries in by_currency.items():
            account = self.account(currency)
            known = {(e.type, e.instrument_name, e.timestamp) for e in account.settlements}
            fresh = [e for e in entries if (e.type, e.instrument_name, e.timestamp) not in known]
            if not fresh:
                continue
            merged = sorted([*account.settlements, *fresh], key=lambda e: e.timestamp, reverse=True)
            account.settlements = tuple(merged[:RECENT_SETTLEMENTS])
            changed.add(currency)
            for entry in fresh:
                name = entry.instrument_name
                if entry.type != "delivery" or name is None:
                    continue
                if name in account.positions:
                    self._leave(account, name)
                self._delivered.pop(name, None)
                account.record_delivery(entry)
        return sorted(changed)

    # -- user.changes ---------------------------------------------------------------------------------
    def on_changes(self, changes: UserChanges) -> tuple[list[str], bool]:
        """One event's orders, fills and the exchange's positions after it, atomically. Orders and
        fills go the usual way (each counted once, whatever came first); the positions are taken
        as the exchange's truth unless the picture already holds something newer (a later fill of
        that instrument, or a snapshot taken after the event). Returns the currencies changed and
        whether the positions were taken."""
        changed = {c for c in (self.on_order(o) for o in changes.orders) if c is not None}
        changed |= {c for c in (self.on_trade(t) for t in changes.trades) if c is not None}
        name = changes.instrument_name
        account = self.account(currency_of(name))
        when = _event_ms(changes)
        window = account.positions_window
        newer = (when is None or account.last_fill_ms.get(name, 0) > when
                 or (window is not None and window.includes(when) is not False))
        theirs = [p for p in changes.positions if p.instrument_name == name]
        if newer or not theirs:
            return sorted(changed), False
        position = theirs[-1]
        if position.size == 0:
            account.put(name, None, None)
        else:
            account.put(name, position, session_of(position, self.identities.get(name)))
        changed.add(account.currency)
        return sorted(changed), True

    def held_instruments(self) -> set[str]:
        names: set[str] = set()
        for account in self.accounts.values():
            names.update(account.positions)
            names.update(o.instrument_name for o in account.orders.values())
        return names
