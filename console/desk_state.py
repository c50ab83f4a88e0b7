"""What the console knows: the desk's picture from the bus, where the start-up stands, and what
a piped line waits for.

Plain classes over the messages (no actor, no terminal): the Console actor feeds
:class:`DeskState` every message it receives; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from console.views import fmt
from deribit.instruments import currency_of
from deribit.platform import PlatformLocks
from messages.account import OrderUpdate, Position, UserTrade
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    ExchangeCommand,
    PlaceOrder,
)
from messages.exposure import PlanStatus, VegaHedgerStatus
from messages.hedging import HedgeActivation, HedgerStatus
from messages.market import IndexPrice, Instrument, InstrumentsLoaded, PlatformState, VolatilityIndex
from messages.state import ChainSnapshot, ChainView, OptionQuote, PortfolioChanged, TopOfBook
from messages.surface import RecorderStatus, SurfaceSnapshot
from messages.system import ConnectionState, ConnectionStatus

#: A live option quote older than this (since its keeper answered) is not live any more: the
#: console asks several times a second, so only a keeper that stopped answering gets here.
LIVE_QUOTE_MAX_AGE_S = 2.0


# -- the desk's picture ---------------------------------------------------------------------------
class DeskState:
    """The latest of everything the console shows, fed message by message."""

    def __init__(self, currencies: Iterable[str]) -> None:
        self.currencies = tuple(currencies)
        self.connection: ConnectionStatus | None = None
        self.subscribed = False  # every channel confirmed since the last (re)connect
        self.instruments: dict[str, dict[str, Instrument]] = {}
        self.tops: dict[str, TopOfBook] = {}
        self.index: dict[str, float] = {}
        self.portfolios: dict[str, PortfolioChanged] = {}
        self.hedgers: dict[str, HedgerStatus] = {}
        self.vega_hedgers: dict[str, VegaHedgerStatus] = {}
        self.chains: dict[tuple[str, str], ChainSnapshot] = {}
        self.surfaces: dict[str, SurfaceSnapshot] = {}
        self.recorder: RecorderStatus | None = None
        self.dvol: dict[str, VolatilityIndex] = {}  # Deribit's DVOL by currency
        self.locks = PlatformLocks()
        #: The option keepers' latest live answers, by currency, and each option's latest quote
        #: with the local time of the answer that carried it.
        self.views: dict[str, ChainView] = {}
        self.live_options: dict[str, tuple[OptionQuote, float]] = {}
        self._expiries: dict[str, tuple[int, ...]] = {}  # listed option expiries by currency
        self.plan_status: PlanStatus | None = None  # the Assistant's latest news of the plan it works

    # Each ``on_*`` takes one message type; the actor dispatches by type.
    def on_connection(self, status: ConnectionStatus) -> None:
        if status.state is ConnectionState.SUBSCRIBED:
            self.subscribed = True
        elif status.state in (ConnectionState.CONNECTING, ConnectionState.DISCONNECTED, ConnectionState.STOPPED):
            self.subscribed = False
        self.connection = status

    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        listing = self.instruments[loaded.currency] = {i.instrument_name: i for i in loaded.instruments}
        self._expiries.pop(loaded.currency, None)
        for held in (self.tops, self.live_options):
            for name in [n for n in held if currency_of(n) == loaded.currency and n not in listing]:
                del held[name]

    def on_top(self, top: TopOfBook) -> None:
        self.tops[top.instrument_name] = top

    def on_index(self, index: IndexPrice) -> None:
        currency = index.index_name.partition("_")[0].upper()
        self.index[currency] = index.price

    def on_volatility_index(self, dvol: VolatilityIndex) -> None:
        self.dvol[dvol.index_name.partition("_")[0].upper()] = dvol

    def on_platform_state(self, state: PlatformState) -> bool:
        """True when the locks changed (the console says so)."""
        return self.locks.on_state(state)

    def on_portfolio(self, portfolio: PortfolioChanged) -> None:
        self.portfolios[portfolio.currency] = portfolio

    def on_hedger(self, status: HedgerStatus) -> None:
        self.hedgers[status.currency] = status

    def on_vega_hedger(self, status: VegaHedgerStatus) -> None:
        self.vega_hedgers[status.currency] = status

    def on_chain(self, chain: ChainSnapshot) -> None:
        self.chains[(chain.currency, chain.kind)] = chain

    def on_chain_view(self, view: ChainView) -> None:
        """A keeper's live answer; an answer older than the one held is dropped (never back in time)."""
        held = self.views.get(view.currency)
        if held is not None and held.at > view.at:
            return
        self.views[view.currency] = view
        listing = self.instruments.get(view.currency)
        for quote in view.options:
            # An answer under way when the instrument list dropped the option does not bring it back.
            if listing is None or quote.instrument_name in listing:
                self.live_options[quote.instrument_name] = (quote, view.at)

    def on_plan_status(self, status: PlanStatus) -> None:
        """The Assistant's latest (an older one than held is dropped)."""
        if self.plan_status is None or status.at >= self.plan_status.at:
            self.plan_status = status

    def on_surface(self, surface: SurfaceSnapshot) -> None:
        self.surfaces[surface.currency] = surface

    def take(self, message: IndexPrice | VolatilityIndex | PortfolioChanged | ChainSnapshot | SurfaceSnapshot
             ) -> None:
        """One of the messages that only update the picture (the actor hands them over as they come)."""
        match message:
            case IndexPrice():
                self.on_index(message)
            case VolatilityIndex():
                self.on_volatility_index(message)
            case PortfolioChanged():
                self.on_portfolio(message)
            case ChainSnapshot():
                self.on_chain(message)
            case SurfaceSnapshot():
                self.on_surface(message)

    def on_recorder(self, status: RecorderStatus) -> None:
        self.recorder = status

    # -- questions -----------------------------------------------------------------------------
    @property
    def can_trade(self) -> bool:
        return self.connection is not None and self.connection.can_trade

    @property
    def link_up(self) -> bool:
        """Connected to the exchange (logged in or not, subscribed or not)."""
        return self.connection is not None and self.connection.state in (
            ConnectionState.CONNECTED, ConnectionState.AUTHENTICATED, ConnectionState.SUBSCRIBED)

    def unreconciled(self) -> list[str]:
        """The currencies whose portfolio has not been reconciled with the exchange yet."""
        return [c for c in self.currencies if not (c in self.portfolios and self.portfolios[c].reconciled)]

    def instrument(self, name: str) -> Instrument | None:
        currency = currency_of(name)
        return self.instruments.get(currency or "", {}).get(name)

    def futures(self, currency: str | None = None) -> list[Instrument]:
        """Futures and perpetuals, perpetual first then by expiry, of one or every currency."""
        out = [i for c, listing in self.instruments.items() if currency in (None, c) for i in listing.values()
               if i.kind == "future"]
        return sorted(out, key=lambda i: (i.base_currency, i.settlement_period != "perpetual",
                                          i.expiration_timestamp, i.instrument_name))

    def hedged_by(self, name: str) -> str:
        """The currency whose active hedger hedges with ``name`` (it owns that position), else ''."""
        for status in self.hedgers.values():
            if status.instrument == name and status.active:
                return status.currency
        return ""

    def default_future(self, currencies: Iterable[str]) -> Instrument | None:
        """The future offered when none is named: the first listed (perpetual first) that is not
        the hedge instrument of a hedger that is on or awaiting its confirmation."""
        hedged = {s.instrument for s in self.hedgers.values()
                  if s.active or s.activation is HedgeActivation.AWAITING_CONFIRMATION}
        return next((f for c in currencies for f in self.futures(c) if f.instrument_name not in hedged), None)

    def alerts(self) -> list[HedgerStatus]:
        """The hedgers that switched themselves off and whose alert is not acknowledged yet."""
        return [s for _, s in sorted(self.hedgers.items()) if s.alert]

    def options(self, currency: str) -> list[Instrument]:
        listing = self.instruments.get(currency, {}).values()
        return sorted((i for i in listing if i.kind == "option"),
                      key=lambda i: (i.expiration_timestamp, i.strike or 0.0, i.option_type or ""))

    def option_expiries(self, currency: str) -> tuple[int, ...]:
        """The listed option expiries of ``currency`` (ms, ascending), from its instrument list."""
        expiries = self._expiries.get(currency)
        if expiries is None:
            listing = self.instruments.get(currency, {}).values()
            expiries = tuple(sorted({i.expiration_timestamp for i in listing if i.kind == "option"}))
            if currency in self.instruments:
                self._expiries[currency] = expiries
        return expiries

    def option_names(self) -> list[str]:
        """The options held (a position of any size other than 0), by name."""
        return [p.instrument_name for p in self.positions() if p.kind == "option"]

    def option_quote(self, name: str, now: float) -> OptionQuote | None:
        """The option's live quote (from a keeper's answer at most :data:`LIVE_QUOTE_MAX_AGE_S`
        old, stale books included: callers check ``stale``), else None."""
        held = self.live_options.get(name)
        if held is None or not 0.0 <= now - held[1] <= LIVE_QUOTE_MAX_AGE_S:
            return None
        return held[0]

    def open_orders(self) -> list[OrderUpdate]:
        return [o for p in self.portfolios.values() for o in p.open_orders]

    def positions(self) -> list[Position]:
        return [p for pf in self.portfolios.values() for p in pf.positions if p.size]

    def position_size(self, name: str) -> float:
        portfolio = self.portfolios.get(currency_of(name) or "")
        if portfolio is None:
            return 0.0
        return sum(p.size for p in portfolio.positions if p.instrument_name == name)

    def index_price(self, currency: str) -> float | None:
        if currency in self.index:
            return self.index[currency]
        for top in self.tops.values():
            if top.index_price and currency_of(top.instrument_name) == currency:
                return top.index_price
        view = self.views.get(currency)
        if view is not None and view.index_price:
            return view.index_price
        chain = self.chains.get((currency, "option"))
        return chain.index_price if chain is not None else None

    def books_synced(self, options: bool = True) -> tuple[int, int]:
        """Books known to be the exchange's, of all books: every listed future's (by its top of
        book) and, with ``options``, every option book as its keeper last counted them (see
        :meth:`option_books_synced`)."""
        names = [i.instrument_name for c in self.currencies for i in self.futures(c)]
        fresh = sum(1 for n in names if n in self.tops and not self.tops[n].stale)
        total = len(names)
        if options:
            counted = self.option_books_synced()
            if counted is not None:
                fresh, total = fresh + counted[0], total + counted[1]
        return fresh, total

    def option_books_synced(self) -> tuple[int, int] | None:
        """(synced, books) of the option families, from their keepers' latest live answers; a
        currency that lists options and has not answered yet counts each of them as not synced.
        None before any option is listed or counted."""
        synced = books = 0
        counted = False
        for currency in self.currencies:
            view = self.views.get(currency)
            if view is not None:
                synced, books, counted = synced + view.synced, books + view.books, True
            elif self.option_expiries(currency):
                books += sum(1 for i in self.instruments[currency].values() if i.kind == "option")
                counted = True
        return (synced, books) if counted else None


# -- start-up -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    name: str
    done: bool
    detail: str = ""
    completed: int = 0
    total: int = 1


def startup_stages(state: DeskState) -> tuple[Stage, ...]:
    """Connecting, instruments loaded, subscriptions confirmed, books synced (n of N: futures and
    option books), portfolio reconciled: where the start-up stands."""
    status = state.connection
    connected = state.link_up
    conn_detail = "" if status is None else status.state.value + (f" ({status.detail})" if status.detail else "")
    loaded = [c for c in state.currencies if c in state.instruments]
    counts = ", ".join(f"{c} {len(state.instruments[c])}" for c in loaded)
    fresh, total = state.books_synced()
    reconciled = [c for c in state.currencies if c in state.portfolios and state.portfolios[c].reconciled]
    n = len(state.currencies)
    return (
        Stage("connecting", connected, conn_detail),
        Stage("instruments loaded", len(loaded) == n, counts, len(loaded), n),
        Stage("subscriptions confirmed", state.subscribed),
        Stage(f"books synced ({fresh:,} of {total:,})", total > 0 and fresh == total, "", fresh, max(total, 1)),
        Stage("portfolio reconciled", len(reconciled) == n, ", ".join(reconciled), len(reconciled), n),
    )


# -- what a piped line waits for -----------------------------------------------------------------------
@dataclass
class ScriptWait:
    """One piped order or cancel line: the answers it waits for, then the portfolio showing
    what the answers said (open orders present, closed or cancelled ones gone, positions moved
    by the fills). ``gone`` holds order ids a cancel must remove."""

    request_keys: set[str]
    deadline: float
    baseline: dict[str, float] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    expect_open: set[str] = field(default_factory=set)
    delta: dict[str, float] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    follow_positions: bool = True

    @classmethod
    def for_orders(cls, orders: Iterable[PlaceOrder], state: DeskState, deadline: float) -> ScriptWait:
        """An order line: its answers, then the positions moved from where they are now by the
        fills; only the answers on an active hedger's instrument, where the hedger trades too."""
        orders = tuple(orders)
        names = {o.instrument_name for o in orders}
        if any(state.hedged_by(name) for name in names):
            return cls({o.request_key for o in orders}, deadline, follow_positions=False)
        return cls({o.request_key for o in orders}, deadline, baseline={name: state.position_size(name)
                                                                       for name in names})

    @classmethod
    def for_cancels(cls, cancels: Iterable[ExchangeCommand], state: DeskState, deadline: float) -> ScriptWait:
        """A cancel line: its answers, then the open orders it cancels gone from the portfolio."""
        cancels = tuple(cancels)
        gone: set[str] = set()
        open_orders = state.open_orders()
        for cancel in cancels:
            if isinstance(cancel, CancelOrder):
                gone.add(cancel.order_id)
            elif isinstance(cancel, CancelByLabel):
                gone |= {o.order_id for o in open_orders if o.label == cancel.label}
            elif isinstance(cancel, CancelAll):
                gone |= {o.order_id for o in open_orders}
        return cls({c.request_key for c in cancels}, deadline, gone=gone)

    def on_answer(self, answer: CommandResult | CommandFailed) -> None:
        if answer.request_key not in self.request_keys:
            return
        self.answered.add(answer.request_key)
        if isinstance(answer, CommandFailed):
            return
        order = answer.order
        if order is not None:
            if answer.method == "private/cancel":
                self.gone.add(order.order_id)
            elif order.order_state in ("open", "untriggered"):
                self.expect_open.add(order.order_id)
            else:
                self.gone.add(order.order_id)
        for trade in answer.trades:
            self._fill(trade)

    def _fill(self, trade: UserTrade) -> None:
        if not self.follow_positions:
            return
        signed = trade.amount if trade.direction == "buy" else -trade.amount
        self.delta[trade.instrument_name] = self.delta.get(trade.instrument_name, 0.0) + signed

    def missing(self, state: DeskState) -> list[str]:
        """What is still awaited; empty when the line is done."""
        out = [f"answer to {key}" for key in sorted(self.request_keys - self.answered)]
        open_ids = {o.order_id for o in state.open_orders()}
        out += [f"order {oid} in the portfolio" for oid in sorted(self.expect_open - open_ids)]
        out += [f"order {oid} gone from the portfolio" for oid in sorted(self.gone & open_ids)]
        for name, delta in sorted(self.delta.items()):
            want = self.baseline.get(name, 0.0) + delta
            if abs(state.position_size(name) - want) > 1e-9 * max(1.0, abs(want)):
                out.append(f"position {name} {fmt(want)}")
        return out


@dataclass
class ChainWait:
    """A piped ``chain`` line that moved the focus: waits until its chain was printed (``printed``
    says so), so that the next line's output comes after it."""

    printed: Callable[[], bool]
    deadline: float

    def missing(self, _state: DeskState) -> list[str]:
        return [] if self.printed() else ["the live chain"]


@dataclass
class HedgerWait:
    """A piped hedging line: waits for the hedger's status answering ``request_key``."""

    request_key: str
    deadline: float
    answered: bool = False

    def on_status(self, status: HedgerStatus | VegaHedgerStatus) -> None:
        if status.request_key == self.request_key:
            self.answered = True

    def missing(self, _state: DeskState) -> list[str]:
        return [] if self.answered else ["the hedger's answer"]
