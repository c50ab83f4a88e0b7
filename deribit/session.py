"""The conversation with the exchange, without threads or sockets.

A :class:`Session` holds what the Connection knows of its link: whether it is up, logged in and
subscribed (:class:`Link`), the token and when to refresh it, the instrument lists, the wanted
and confirmed channels, the order queue under the client-side rate limit, the requests in flight
and the reconciliations under way. It is driven by events, each with ``now`` (monotonic
seconds): the link opened or closed, an answer came, a command came, time passed (a tick). Each
returns what to do, in order: :class:`Send` (a request frame to write; if it cannot be written,
tell :meth:`Session.unsent`) and messages to publish.

Every order command is answered exactly once, with CommandResult or CommandFailed; a negative
CommandFailed code means it was refused here and never sent (``messages.commands``).
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from config.settings import Settings
from deribit import channels as ch
from deribit.codec import (
    MIN_HEARTBEAT_INTERVAL_S,
    AuthResult,
    EntryDefect,
    Request,
    RequestEncoder,
    RpcError,
    RpcResponse,
    auth_client_credentials_request,
    auth_client_signature_request,
    auth_refresh_request,
    command_failed,
    command_method,
    command_request,
    command_result,
    decode_account_summary,
    decode_auth_result,
    decode_open_orders,
    decode_positions,
    decode_settlement_history,
    decode_subscribed,
    enable_cancel_on_disconnect_request,
    get_account_summary_request,
    get_instruments_request,
    get_open_orders_request,
    get_positions_request,
    get_settlement_history_request,
    set_heartbeat_request,
    subscribe_request,
    unsubscribe_request,
)
from deribit.constants import GONE_STATES, LIVE_STATES, RATE_LIMIT_CODE
from deribit.instruments import (
    currency_of,
    decode_instrument_list,
    family_of,
    in_family,
    instrument_defect,
    request_currency_of,
    select_for_family,
)
from deribit.order_outcome import resolution_request, resolve
from deribit.platform import PlatformLocks, decode_platform_status, index_of, status_request
from deribit.shutdown_check import CheckUnderWay, Findings
from deribit.subscriptions import RESYNC_REQUESTS_PER_S, SubscriptionTracker, currency_channels, market_channels
from messages.account import (
    AccountLimits,
    AccountSummary,
    ExchangeState,
    ExchangeWindow,
    OrderUpdate,
    Position,
    ReconcileFailed,
    ReconcileStarted,
)
from messages.base import Message
from messages.commands import (
    ANSWER_LOST,
    INVALID,
    NOT_CONNECTED,
    PAPER_ONLY,
    PLATFORM_LOCKED,
    QUEUED_TOO_LONG,
    REPLAY_ONLY,
    TRADING_DISABLED,
    CancelAll,
    CommandFailed,
    EditOrder,
    ExchangeCommand,
    InvalidCommand,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
    ResubscribeInstrument,
)
from messages.market import Instrument, InstrumentsLoaded, InstrumentState, PlatformState
from messages.system import ConnectionState, ConnectionStatus, ConnectionStatusRequest, DailyRollover, SafeShutdown
from runtime.secrets import register_secrets
from runtime.throttle import TokenBucket, retry_delay, token_refresh_delay

#: Sends of one command after Deribit's rate-limit answer before giving up with its error.
MAX_RATE_LIMIT_RETRIES = 5
#: How many entries of the settlement history are asked for at a time.
SETTLEMENTS_PER_FETCH = 100


class Logger(Protocol):
    """What the edge logs with: a structlog logger (the actor's), or a test's."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def error(self, event: str, **fields: Any) -> Any: ...

    def exception(self, event: str, **fields: Any) -> Any: ...


class Link(enum.Enum):
    """The link as the conversation knows it: down, or up and logged in or not, with every
    wanted channel confirmed (SUBSCRIBED announced) or not."""

    DOWN = "down"
    CONNECTED = "connected"  # up, not logged in, channels not all confirmed
    SUBSCRIBED = "subscribed"  # up, not logged in (no credentials, or refused), every channel confirmed
    AUTHENTICATED = "authenticated"  # logged in, channels not all confirmed
    READY = "ready"  # logged in, every channel confirmed

    @property
    def up(self) -> bool:
        return self is not Link.DOWN

    @property
    def logged_in(self) -> bool:
        return self is Link.AUTHENTICATED or self is Link.READY

    @property
    def subscribed(self) -> bool:
        return self is Link.SUBSCRIBED or self is Link.READY

    def with_login(self, logged_in: bool) -> Link:
        return _LINKS[(logged_in, self.subscribed)] if self.up else self

    def with_subscribed(self, subscribed: bool) -> Link:
        return _LINKS[(self.logged_in, subscribed)] if self.up else self


_LINKS = {(False, False): Link.CONNECTED, (False, True): Link.SUBSCRIBED,
          (True, False): Link.AUTHENTICATED, (True, True): Link.READY}


# -- what to do --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Write ``frame`` (request ``request_id``) to the link. ``command``: the order command it
    carries, if any (for the latency probe)."""

    request_id: int
    method: str
    frame: bytes
    command: ExchangeCommand | None = None


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish ``message`` at once, before the frames that follow are written (a handler's other
    messages go out when it returns): its subscribers must have it before anything the exchange
    answers to those frames can reach them. They take it on their own queues."""

    message: Message


Effect = Send | Announce | Message
#: What :meth:`Session.handle` takes.
SessionEvent = (ResubscribeInstrument | RefreshInstruments | DailyRollover | InstrumentState | ReconcilePortfolio
                | SafeShutdown | ConnectionStatusRequest | PlatformState)


# -- the requests in flight: one type per kind ------------------------------------------------------------
@dataclass(slots=True)
class Queued:
    """An order command waiting for the rate limit (or sent: kept for a rate-limited retry)."""

    command: ExchangeCommand
    queued_at: float
    not_before: float = 0.0
    retries: int = 0
    request: Request | None = None  # (method, params), made once when it was checked


@dataclass(slots=True)
class Sent:
    """What every request in flight keeps: its method and when it was sent (for the timeout)."""

    method: str
    sent_at: float


@dataclass(slots=True)
class SetHeartbeat(Sent):
    pass


@dataclass(slots=True)
class Login(Sent):
    pass


@dataclass(slots=True)
class RefreshToken(Sent):
    pass


@dataclass(slots=True)
class EnableCancelOnDisconnect(Sent):
    pass


@dataclass(slots=True)
class LoadInstruments(Sent):
    currency: str


@dataclass(slots=True)
class Subscribe(Sent):
    batch: tuple[str, ...]


@dataclass(slots=True)
class Unsubscribe(Sent):
    """A resync's unsubscribe, or channels no longer wanted (the resyncs' budget)."""

    batch: tuple[str, ...]


@dataclass(slots=True)
class ResyncSubscribe(Sent):
    """A resync's fresh subscribe, after its unsubscribe answered (the resyncs' budget)."""

    batch: tuple[str, ...]


@dataclass(slots=True)
class SendOrder(Sent):
    queued: Queued


@dataclass(slots=True)
class GetPositions(Sent):
    currency: str
    round: int  # the reconcile it is part of: an answer of a superseded one is dropped


@dataclass(slots=True)
class GetOpenOrders(Sent):
    currency: str
    round: int


@dataclass(slots=True)
class GetSummary(Sent):
    currency: str
    round: int


@dataclass(slots=True)
class GetPlatformStatus(Sent):
    """``public/status``: which indices are locked (notifications may have been missed)."""


@dataclass(slots=True)
class GetSettlements(Sent):
    currency: str


@dataclass(slots=True)
class LostAnswer:
    """A command whose answer was lost, until the exchange says what became of it."""

    command: ExchangeCommand
    method: str
    failures: int = 0
    not_before: float = 0.0


@dataclass(slots=True)
class ResolveOrder(Sent):
    """What became of ``command``, whose answer was lost (its own method: ``lost_method``)."""

    command: ExchangeCommand
    lost_method: str


@dataclass(slots=True)
class ShutdownCancel(Sent):
    """The safe shutdown's cancel_all."""

    command: CancelAll


@dataclass(slots=True)
class ShutdownCheck(Sent):
    """The safe shutdown's check of one currency's open orders, after its cancel_all answered."""

    currency: str


Pending = (SetHeartbeat | Login | RefreshToken | EnableCancelOnDisconnect | LoadInstruments | Subscribe
           | Unsubscribe | ResyncSubscribe | SendOrder | GetPositions | GetOpenOrders | GetSummary | ShutdownCancel
           | ShutdownCheck | GetPlatformStatus | GetSettlements | ResolveOrder)
ReconcileRequest = GetPositions | GetOpenOrders | GetSummary
_PART = {GetPositions: "positions", GetOpenOrders: "open_orders", GetSummary: "summary"}


@dataclass
class _Reconcile:
    round: int
    reason: str
    requested_at: float  # the program's clock
    positions: tuple[Position, ...] | None = None
    orders: tuple[OrderUpdate, ...] | None = None
    summary: AccountSummary | None = None
    summary_done: bool = False
    positions_window: ExchangeWindow | None = None
    orders_window: ExchangeWindow | None = None


@dataclass
class _Instruments:
    """The instrument lists and their loading."""

    listed: dict[str, dict[str, Instrument]] = field(default_factory=dict)
    needed: set[str] = field(default_factory=set)  # currencies whose list must be (re)loaded
    in_flight: set[str] = field(default_factory=set)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_at: dict[str, float] = field(default_factory=dict)


class Session:
    """The Connection's conversation with the exchange (see the module's docstring).

    ``clock`` gives the ``at`` of what is published (the program's clock), ``epoch_ms`` the
    exchange's real time for a signed login. ``attempt``
    is the link's connection attempt, set by whoever connects (said in status messages)."""

    def __init__(self, settings: Settings, *, now: float, log: Logger, clock: Callable[[], float],
                 epoch_ms: Callable[[], int], replay: bool = False) -> None:
        self.settings = settings
        self.dset = settings.deribit
        self.venue = settings.venue
        self.currencies: tuple[str, ...] = tuple(settings.currencies)
        self.replay = replay
        self.log = log
        self.clock = clock
        self.epoch_ms = epoch_ms
        self.encoder = RequestEncoder()
        self.attempt = 0

        self.link = Link.DOWN
        self.login_rejected = ""
        self.access: AuthResult | None = None
        self.refresh_at = 0.0
        self.pending: dict[int, Pending] = {}
        self.instruments = _Instruments()
        self.subs = SubscriptionTracker(batch_size=self.dset.subscribe_batch_size)
        # Burst 1: subscribe requests go out evenly spaced, never more than the rate in a second.
        # The full subscription has the configured rate to itself; book resyncs (unsubscribes and
        # fresh subscribes) a small budget of their own, so that a storm of gaps never delays it.
        self.sub_bucket = TokenBucket(self.dset.subscribe_requests_per_s, 1.0, now)
        self.resync_bucket = TokenBucket(RESYNC_REQUESTS_PER_S, 1.0, now)
        self.sub_retry_at = 0.0
        self.resync_retry_at = 0.0
        # A request of this link could not be written: the link is gone, SUBSCRIBED is not said.
        self.write_failed = False
        self.to_unsubscribe: set[str] = set()
        self.order_bucket = TokenBucket(self.dset.order_requests_per_s, self.dset.order_burst, now)
        self.order_queue: collections.deque[Queued] = collections.deque()
        self.reconciles: dict[str, _Reconcile] = {}
        self.reconcile_rounds = 0
        self.reconcile_deferred: ReconcilePortfolio | None = None
        self.shutting_down = False  # after SafeShutdown: cancels only
        self.shutdown_check: CheckUnderWay | None = None  # the safe shutdown's cancel and check
        self.cod_enabled = False
        self.resyncs = 0
        self.locks = PlatformLocks()
        # When to ask for each currency's settlement history again (after the 08:00 settlement).
        self.settlements_due: dict[str, float] = {}
        # Commands whose answer was lost, by (origin, request_key), until the exchange says what
        # became of them (OrderResolved); those asked about on this link.
        self.unresolved: dict[tuple[str, str], LostAnswer] = {}
        self.resolving: set[tuple[str, str]] = set()
        self._out: list[Effect] = []

    # -- what the rest of the program sees -----------------------------------------------------------
    @property
    def authenticated(self) -> bool:
        return self.link.logged_in

    @property
    def may_send_orders(self) -> bool:
        """Orders and cancels may go out now: logged in on a live link, trading allowed."""
        return self.link.logged_in and self.settings.can_trade and not self.replay

    @property
    def can_trade(self) -> bool:
        """What ConnectionStatus.can_trade promises: logged in, every channel confirmed, trading allowed."""
        return self.may_send_orders and self.link.subscribed

    def status_now(self, origin: str) -> list[Effect]:
        """The link's current status, asked for by ``origin`` (nothing in replay: the log's open
        and close records are the status; an answer would land out of order with the data)."""
        if self.replay:
            return []
        state = {Link.DOWN: ConnectionState.DISCONNECTED, Link.CONNECTED: ConnectionState.CONNECTED,
                 Link.AUTHENTICATED: ConnectionState.AUTHENTICATED}.get(self.link, ConnectionState.SUBSCRIBED)
        self._status(state, detail=f"current status, asked by {origin or 'an actor'}")
        return self._done()

    def _status(self, state: ConnectionState, detail: str = "") -> None:
        self._out.append(ConnectionStatus(state=state, venue=self.venue, at=self.clock(),
                                          authenticated=self.authenticated, can_trade=self.can_trade,
                                          attempt=self.attempt, detail=detail))

    def _done(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def handle(self, event: SessionEvent, now: float) -> list[Effect]:
        """One of the program's events that the conversation takes (not an order command)."""
        match event:
            case ResubscribeInstrument():
                return self.resubscribe(event, now)
            case RefreshInstruments():
                return self.refresh(event, now)
            case DailyRollover():
                return self.rollover(event, now)
            case InstrumentState():
                return self.instrument_state(event, now)
            case ReconcilePortfolio():
                return self.reconcile(event, now)
            case SafeShutdown():
                return self.safe_shutdown(event, now)
            case ConnectionStatusRequest():
                return self.status_now(event.origin)
            case PlatformState():
                return self.platform_state(event)
        raise TypeError(f"the session takes no {type(event).__name__}")

    # -- the link ---------------------------------------------------------------------------------------
    def link_up(self, now: float) -> list[Effect]:
        self.link = Link.CONNECTED
        self.cod_enabled = False
        self.pending.clear()
        self.resolving.clear()
        self.subs.reset()
        # Private channels come back once this connection is logged in (a rejected login must
        # not keep SUBSCRIBED from being announced for the public ones).
        self.subs.drop({c for c in self.subs.wanted if ch.is_private(c)})
        self.to_unsubscribe.clear()
        self.sub_retry_at = self.resync_retry_at = 0.0
        self.write_failed = False
        self.instruments.retry_at.clear()
        if self.replay:
            return self._done()
        # Deribit refuses intervals below 10 s; a shorter heartbeat_s is kept by our own probe.
        interval = max(MIN_HEARTBEAT_INTERVAL_S, round(self.dset.heartbeat_s))
        self._request(SetHeartbeat, set_heartbeat_request(interval), now)
        if self.dset.client_id and self.dset.client_secret:
            self._login(now)
        self._request(GetPlatformStatus, status_request(), now)
        for currency in self.currencies:
            self.subs.want(currency_channels(currency, private=False))
            if currency in self.instruments.listed:
                self.subs.want(market_channels(self.instruments.listed[currency].values(), self.dset.book_interval))
            self.instruments.needed.add(currency)
        self._pump(now)
        return self._done()

    def link_down(self, reason: str) -> list[Effect]:
        self.link = Link.DOWN
        self.instruments.in_flight.clear()
        # Answers to requests in flight are lost with the link. An order's fate is unknown
        # until the portfolio reconciles; say so instead of guessing.
        self._fail_orders(f"connection lost ({reason}); not sent",
                          f"connection lost ({reason}) before the exchange answered; the order's state "
                          "is unknown until the portfolio reconciles")
        for currency in list(self.reconciles):
            self._reconcile_failed(currency, f"connection lost ({reason})")
        self._shutdown_check_failed(f"connection lost ({reason})")
        return self._done()

    def fail_orders(self, queued_why: str, lost_why: str | None = None) -> list[Effect]:
        """Answer every order command not yet answered: those waiting are refused (not sent,
        ``queued_why``); with ``lost_why``, those sent lose their answer too and every request in
        flight is forgotten (the link is gone)."""
        self._fail_orders(queued_why, lost_why)
        return self._done()

    def _fail_orders(self, queued_why: str, lost_why: str | None) -> None:
        if lost_why is not None:
            for pending in self.pending.values():
                if isinstance(pending, SendOrder):
                    self._lost(pending, lost_why)
            self.pending.clear()
            self.resolving.clear()
        while self.order_queue:
            self._refuse(self.order_queue.popleft().command, NOT_CONNECTED, queued_why)

    def _lost(self, pending: SendOrder, why: str) -> None:
        command = pending.queued.command
        self._out.append(CommandFailed(request_key=command.request_key, origin=command.origin,
                                       method=pending.method, code=ANSWER_LOST, message=why))
        if self.replay:
            return
        if resolution_request(command) is None:
            self.log.warning("order_unresolvable", request_key=command.request_key, origin=command.origin,
                             method=pending.method, hint="no order id or label to ask the exchange about")
            return
        self.unresolved[(command.origin, command.request_key)] = LostAnswer(command, pending.method)

    def tick(self, now: float) -> list[Effect]:
        self._pump(now)
        return self._done()

    def _pump(self, now: float) -> None:
        """Everything due now: timeouts, token refresh, instrument loads, subscriptions, orders."""
        if not self.link.up or self.replay:
            return
        self._expire_requests(now)
        if self.access is not None and self.link.logged_in and now >= self.refresh_at:
            self.refresh_at = now + self.dset.request_timeout_s  # until the refresh answers
            self._request(RefreshToken, auth_refresh_request(self.access.refresh_token), now)
        instruments = self.instruments
        for currency in sorted(instruments.needed - instruments.in_flight):
            if now >= instruments.retry_at.get(currency, 0.0):
                self._load_instruments(currency, now)
        self._pump_subscriptions(now)
        self._pump_orders(now)
        self._pump_settlements(now)
        self._pump_resolutions(now)

    # -- requests and answers ------------------------------------------------------------------------------
    def _request(self, kind: Callable[..., Pending], request: Request, now: float, *payload: Any,
                 command: ExchangeCommand | None = None) -> int:
        method, params = request
        request_id, frame = self.encoder.encode(method, params)
        self.pending[request_id] = kind(method, now, *payload)
        self._out.append(Send(request_id, method, frame, command))
        return request_id

    def unsent(self, request_id: int, now: float) -> list[Effect]:
        """Request ``request_id`` could not be written (the link failed): as if never sent."""
        pending = self.pending.pop(request_id, None)
        self.write_failed = True
        match pending:
            case SendOrder(queued=queued):
                self._refuse(queued.command, NOT_CONNECTED, "connection lost; not sent")
            case Subscribe():
                self.subs.in_flight.pop(request_id, None)
            case ResyncSubscribe():
                self.subs.resync_in_flight.pop(request_id, None)
            case Unsubscribe(batch=batch):
                self.to_unsubscribe |= set(batch)
            case LoadInstruments(currency=currency):
                self.instruments.in_flight.discard(currency)
            case GetPositions() | GetOpenOrders() | GetSummary():
                if self._current_round(pending):
                    self._reconcile_failed(pending.currency, f"{pending.method} could not be written (link lost)")
            case ShutdownCancel() | ShutdownCheck():
                self._shutdown_check_failed(f"{pending.method} could not be written (connection lost)")
            case ResolveOrder(command=command):
                self.resolving.discard((command.origin, command.request_key))
        return self._done()

    def _expire_requests(self, now: float) -> None:
        limit = self.dset.request_timeout_s
        expired = [rid for rid, p in self.pending.items() if now - p.sent_at > limit]
        for rid in expired:
            pending = self.pending.pop(rid)
            self.log.warning("request_timed_out", method=pending.method, kind=type(pending).__name__,
                             timeout_s=limit)
            match pending:
                case SendOrder():
                    self._lost(pending, f"no answer within {limit:g} s; the order's state is unknown "
                                        "until the portfolio reconciles")
                case Subscribe():
                    self.subs.failed(rid)
                    self._retry_subscriptions_later(0, now)
                case ResyncSubscribe():
                    self.subs.resync_failed(rid)
                    self._retry_resyncs_later(0, now)
                case Unsubscribe(batch=batch):
                    self.to_unsubscribe |= set(batch)
                    self._retry_resyncs_later(0, now)
                case LoadInstruments(currency=currency):
                    self._instruments_failed(currency, now)
                case Login():
                    self._login(now)
                case GetPositions() | GetOpenOrders() | GetSummary():
                    if self._current_round(pending):
                        self.log.warning("reconcile_failed", currency=pending.currency, part=_PART[type(pending)],
                                         message=f"no answer within {limit:g} s")
                        self._reconcile_failed(pending.currency, f"no answer to {pending.method} within {limit:g} s")
                case ShutdownCancel() | ShutdownCheck():
                    self._shutdown_check_failed(f"no answer to {pending.method} within {limit:g} s")
                case ResolveOrder():
                    self._resolution_failed(pending, now, f"no answer within {limit:g} s")

    def answer(self, answer: RpcResponse | RpcError, now: float) -> list[Effect]:
        """An answer of this link (the caller drops those of an earlier link)."""
        pending = self.pending.pop(answer.id, None) if answer.id is not None else None
        if pending is None:
            if isinstance(answer, RpcError):
                self.log.warning("unmatched_error", code=answer.code, message=answer.message, data=answer.data)
            return self._done()
        try:
            self._answered(pending, answer, now)
        except msgspec.MsgspecError as exc:
            # An answer of the wrong shape is the exchange's problem, not a reason to crash.
            shown = isinstance(answer, RpcResponse) and not isinstance(pending, Login | RefreshToken)  # tokens
            self.log.error("bad_answer", method=pending.method, error=str(exc),
                           excerpt=bytes(answer.result)[:200].decode("utf-8", "replace")
                           if isinstance(answer, RpcResponse) and shown else "")
            if isinstance(pending, LoadInstruments):
                self._instruments_failed(pending.currency, now)
            elif isinstance(pending, GetPositions | GetOpenOrders | GetSummary) and self._current_round(pending):
                self._reconcile_failed(pending.currency, f"the answer to {pending.method} could not be read: {exc}")
        return self._done()

    def _answered(self, pending: Pending, answer: RpcResponse | RpcError, now: float) -> None:
        error = answer if isinstance(answer, RpcError) else None
        match pending:
            case SendOrder():
                self._answer_order(pending, answer, now)
            case Subscribe():
                self._answer_subscribe(answer, now)
            case ResyncSubscribe():
                self._answer_resync(answer, now)
            case Unsubscribe(batch=batch):
                if error is not None:
                    self.log.warning("unsubscribe_failed", code=error.code, message=error.message)
                    self.to_unsubscribe |= set(batch)
                    self._retry_resyncs_later(error.code, now)
                    return
                # Channels still wanted were unsubscribed to be subscribed afresh (a book resync).
                self.subs.forget(batch)
                self._pump(now)
            case LoadInstruments(currency=currency):
                self._answer_instruments(currency, answer, now)
            case Login():
                self._answer_login(answer, now)
            case RefreshToken():
                if isinstance(answer, RpcError):
                    self.log.warning("token_refresh_failed", code=answer.code, message=answer.message)
                    self._login(now)  # a fresh login instead
                    return
                self._authenticated(decode_auth_result(answer.result), now, refreshed=True)
            case SetHeartbeat():
                if error is not None:
                    self.log.warning("set_heartbeat_failed", code=error.code, message=error.message)
            case EnableCancelOnDisconnect():
                if error is not None:
                    self.log.warning("cancel_on_disconnect_failed", code=error.code, message=error.message)
                else:
                    self.cod_enabled = True
                    self.log.info("cancel_on_disconnect_enabled")
            case GetPositions() | GetOpenOrders() | GetSummary():
                self._reconcile_part(pending, answer, now)
            case ShutdownCancel():
                self._answer_shutdown_cancel(pending, answer, now)
            case ShutdownCheck():
                self._answer_shutdown_check(pending, answer)
            case GetPlatformStatus():
                self._answer_platform_status(answer)
            case GetSettlements(currency=currency):
                self._answer_settlements(currency, answer)
            case ResolveOrder():
                self._answer_resolution(pending, answer, now)

    # -- auth ------------------------------------------------------------------------------------------------
    def _login(self, now: float) -> None:
        if self.dset.auth_method == "client_credentials":
            request = auth_client_credentials_request(self.dset.client_id, self.dset.client_secret)
        else:
            # The signature's timestamp must be the exchange's (real) time, whatever clock drives us.
            request = auth_client_signature_request(self.dset.client_id, self.dset.client_secret, self.epoch_ms())
        self._request(Login, request, now)

    def _answer_login(self, answer: RpcResponse | RpcError, now: float) -> None:
        if isinstance(answer, RpcError):
            # Also after a refused refresh: the session is gone, so no more orders on it.
            self.link = self.link.with_login(False)
            self.login_rejected = f"{answer.message} (code {answer.code})"
            self.log.error("login_rejected", code=answer.code, message=answer.message,
                           client_id=self.dset.client_id, auth_method=self.dset.auth_method,
                           hint="check DERIBIT_CLIENT_ID / DERIBIT_CLIENT_SECRET for this venue; "
                                "public market data keeps flowing, orders are refused")
            self._status(ConnectionState.CONNECTED, detail=f"login rejected: {self.login_rejected}")
            return
        self._authenticated(decode_auth_result(answer.result), now)

    def _authenticated(self, auth: AuthResult, now: float, refreshed: bool = False) -> None:
        # Known from now on: masked wherever they might be echoed (logs, wire log, error texts).
        register_secrets((auth.access_token, auth.refresh_token), transient=True)
        self.access = auth
        first = not self.link.logged_in
        self.link = self.link.with_login(True)
        self.login_rejected = ""
        self.refresh_at = now + token_refresh_delay(auth.expires_in)
        if not first:
            self.log.info("token_refreshed" if refreshed else "logged_in_again", expires_in_s=auth.expires_in)
            return
        self.log.info("authenticated", expires_in_s=auth.expires_in, method=self.dset.auth_method)
        for currency in self.currencies:
            if self.subs.want(currency_channels(currency, private=True)):
                self.link = self.link.with_subscribed(False)
        if self.settings.can_trade and self.dset.cancel_on_disconnect and not self.settings.paper:
            self._request(EnableCancelOnDisconnect, enable_cancel_on_disconnect_request(), now)
        self._status(ConnectionState.AUTHENTICATED)
        for currency in self.currencies:
            self.settlements_due[currency] = now
        if self.reconcile_deferred is not None:
            deferred, self.reconcile_deferred = self.reconcile_deferred, None
            self._reconcile(deferred, now)
        self._pump(now)

    # -- instruments -----------------------------------------------------------------------------------------
    def refresh(self, command: RefreshInstruments, now: float) -> list[Effect]:
        self._refresh(command, now)
        return self._done()

    def _refresh(self, command: RefreshInstruments, now: float) -> None:
        for currency in command.currencies or self.currencies:
            if currency not in self.currencies:
                self.log.warning("refresh_unknown_currency", currency=currency, configured=list(self.currencies))
            elif self.replay:
                self.log.info("replay_request_not_sent", method="public/get_instruments", currency=currency)
            else:
                # Loaded now if the link is up, else on the next connect (every connect loads all).
                self.instruments.needed.add(currency)
                if self.link.up:
                    self._load_instruments(currency, now)

    def rollover(self, event: DailyRollover, now: float) -> list[Effect]:
        self.log.info("daily_rollover", day=event.day)
        self._refresh(RefreshInstruments(origin="connection", reason=f"rollover {event.day}"), now)
        # The settlement and the deliveries take the exchange a moment after 08:00.
        for currency in self.currencies:
            self.settlements_due[currency] = now + self.dset.settlement_history_delay_s
        return self._done()

    def instrument_state(self, event: InstrumentState, now: float) -> list[Effect]:
        """A listing or an expiry the list does not know yet: load that family's list again. A
        linear family's ``instrument.state`` channels carry every coin's USDC instruments: those of
        families not configured are not ours. The name's first segment is all a notification
        says; the list loaded again decides from the metadata."""
        currency = event.instrument_name.partition("-")[0]
        if currency not in self.currencies:
            return self._done()
        known = event.instrument_name in self.instruments.listed.get(currency, {})
        if (event.state in LIVE_STATES and not known) or (event.state in GONE_STATES and known):
            self.log.info("instrument_state", instrument=event.instrument_name, state=event.state)
            self._refresh(RefreshInstruments(origin="connection", reason=event.state, currencies=(currency,)), now)
        return self._done()

    def _load_instruments(self, currency: str, now: float) -> None:
        """Ask for ``currency``'s list (a family: BTC's under BTC, SOL_USDC's under USDC)."""
        instruments = self.instruments
        instruments.needed.add(currency)
        if currency in instruments.in_flight:
            return
        instruments.in_flight.add(currency)
        self._request(LoadInstruments, get_instruments_request(family_of(currency).request_currency), now, currency)

    def _instruments_failed(self, currency: str, now: float) -> None:
        instruments = self.instruments
        instruments.in_flight.discard(currency)
        instruments.failures[currency] += 1
        delay = retry_delay(instruments.failures[currency], initial=1.0)
        instruments.retry_at[currency] = now + delay
        self.log.warning("instruments_retry", currency=currency, retry_in_s=delay)

    def _answer_instruments(self, currency: str, answer: RpcResponse | RpcError, now: float) -> None:
        if isinstance(answer, RpcError):
            self.log.error("get_instruments_failed", currency=currency, code=answer.code, message=answer.message)
            self._instruments_failed(currency, now)
            return
        family = family_of(currency)
        decoded, defects = decode_instrument_list(bytes(answer.result))
        # Identity from metadata decides what the books take: the family's options, futures and
        # perpetuals. The rest (combos, spot, the other margining, other coins of the USDC list,
        # unknown kinds) is counted in one line; it never fails the load.
        selection = select_for_family(decoded, family)
        decoded = selection.kept
        # An entry that does not decode is said per entry when its name is of this family (an
        # instrument the books lose); the USDC list's other coins' only count in the summary.
        foreign = tuple(d for d in defects if d.instrument_name.partition("-")[0] != currency)
        defects = tuple(d for d in defects if d.instrument_name.partition("-")[0] == currency)
        if selection.left_out or foreign:
            self.log.info("instruments_left_out", currency=currency, listed_under=family.request_currency,
                          kept=len(decoded), left_out=selection.left_out_count + len(foreign),
                          by_reason={why.value: count for why, count, _ in selection.left_out}
                          | ({"undecodable_other": len(foreign)} if foreign else {}),
                          examples={why.value: example for why, _, example in selection.left_out}
                          | ({"undecodable_other": foreign[0].instrument_name} if foreign else {}))
        # An unusable instrument is dropped here, before any book, the console or the hedger sees
        # it; the rest of the list stands.
        defects += tuple(d for d in map(instrument_defect, decoded) if d is not None)
        refused = {d.instrument_name for d in defects}
        for defect in defects:
            self.log.warning("instrument_refused", currency=currency, instrument=defect.instrument_name,
                             field=defect.field, value=defect.value, problem=defect.problem)
        listed = tuple(i for i in decoded if i.instrument_name not in refused)
        instruments = self.instruments
        instruments.in_flight.discard(currency)
        instruments.needed.discard(currency)
        instruments.failures.pop(currency, None)
        old = instruments.listed.get(currency, {})
        new = {i.instrument_name: i for i in listed}
        instruments.listed[currency] = new
        gone = [old[n] for n in old.keys() - new.keys()]
        if gone:
            self.to_unsubscribe |= self.subs.drop(market_channels(gone, self.dset.book_interval))
        if self.subs.want(market_channels(listed, self.dset.book_interval)):
            self.link = self.link.with_subscribed(False)
        self.log.info("instruments_loaded", currency=currency, options=sum(i.kind == "option" for i in listed),
                      futures=sum(i.kind == "future" for i in listed), refused=len(refused),
                      added=len(new.keys() - old.keys()) if old else None, removed=len(gone) if old else None)
        self._out.append(InstrumentsLoaded(currency=currency, instruments=listed, at=self.clock()))
        self._pump(now)

    # -- subscriptions -----------------------------------------------------------------------------------------
    def _pump_subscriptions(self, now: float) -> None:
        """The full subscription first, on its own budget; SUBSCRIBED once it is done (resyncs
        under way or not); then the resyncs on theirs."""
        subs = self.subs
        if now >= self.sub_retry_at:
            while True:
                batch = subs.next_batch()
                if not batch or not self.sub_bucket.try_take(now):
                    break
                subs.sent(self._request(Subscribe, subscribe_request(batch), now, batch), batch)
        if (not self.link.subscribed and subs.complete and not subs.in_flight and not self.instruments.needed
                and not self.write_failed):
            self.link = self.link.with_subscribed(True)
            done, wanted = subs.counts()
            resyncing = len(subs.resyncing)
            self.log.info("subscriptions_confirmed", channels=done, resyncing=resyncing)
            self._status(ConnectionState.SUBSCRIBED, detail=f"{done} of {wanted} channels"
                         + (f" ({resyncing} being resynced)" if resyncing else ""))
            # The resyncs wait for the next round: the status goes out when the handler returns,
            # after every frame of the round, and must not follow a frame that could not be
            # written (the link is gone; Session.unsent says so for the rounds after).
            return
        self._pump_resyncs(now)

    def _pump_resyncs(self, now: float) -> None:
        if now < self.resync_retry_at:
            return
        subs = self.subs
        # Fresh subscribes first: they finish resyncs whose unsubscribe answered. New unsubscribes
        # first would take every token while gaps keep coming, and no book would ever be resynced.
        batch = subs.next_resync_batch()
        if batch and self.resync_bucket.try_take(now):
            subs.resync_sent(self._request(ResyncSubscribe, subscribe_request(batch), now, batch), batch)
        if self.to_unsubscribe and self.resync_bucket.try_take(now):
            batch = tuple(sorted(self.to_unsubscribe))[: subs.batch_size]
            self.to_unsubscribe -= set(batch)
            self._request(Unsubscribe, unsubscribe_request(batch), now, batch)

    def _answer_subscribe(self, answer: RpcResponse | RpcError, now: float) -> None:
        if isinstance(answer, RpcError):
            batch = self.subs.failed(answer.id) if answer.id is not None else ()
            self.log.warning("subscribe_failed", code=answer.code, message=answer.message, channels=len(batch))
            self._retry_subscriptions_later(answer.code, now)
            return
        refused, unwanted = self.subs.answered(answer.id, decode_subscribed(answer.result))
        if refused:
            self.log.warning("subscribe_refused", channels=list(refused[:5]), count=len(refused))
            self._retry_subscriptions_later(0, now)
        if unwanted:
            self.to_unsubscribe |= set(unwanted)
        self._pump(now)

    def _answer_resync(self, answer: RpcResponse | RpcError, now: float) -> None:
        if isinstance(answer, RpcError):
            batch = self.subs.resync_failed(answer.id) if answer.id is not None else ()
            self.log.warning("resubscribe_failed", code=answer.code, message=answer.message, channels=len(batch))
            self._retry_resyncs_later(answer.code, now)
            return
        refused, unwanted = self.subs.resync_answered(answer.id, decode_subscribed(answer.result))
        if refused:
            self.log.warning("resubscribe_refused", channels=list(refused[:5]), count=len(refused))
            self._retry_resyncs_later(0, now)
        if unwanted:
            self.to_unsubscribe |= set(unwanted)
        self._pump(now)

    def _rate_limited(self, code: int, now: float) -> None:
        """Deribit said too fast: its subscribe credits are one pool, so both budgets start empty."""
        if code == RATE_LIMIT_CODE:
            self.sub_bucket.drain(now)
            self.resync_bucket.drain(now)

    def _retry_subscriptions_later(self, code: int, now: float) -> None:
        delay = retry_delay(self.subs.failures, initial=0.5)
        self._rate_limited(code, now)
        self.sub_retry_at = now + delay
        self.log.info("subscriptions_retry", retry_in_s=delay)

    def _retry_resyncs_later(self, code: int, now: float) -> None:
        delay = retry_delay(max(self.subs.resync_failures, 1), initial=0.5)
        self._rate_limited(code, now)
        self.resync_retry_at = now + delay
        self.log.info("resyncs_retry", retry_in_s=delay)

    def resubscribe(self, command: ResubscribeInstrument, now: float) -> list[Effect]:
        """A book found a gap: unsubscribe its channel and subscribe it afresh (a new snapshot)."""
        self.resyncs += 1
        channel = ch.book(command.instrument_name, self.dset.book_interval)
        if channel not in self.subs.wanted and ch.quote(command.instrument_name) in self.subs.wanted:
            channel = ch.quote(command.instrument_name)  # a future's top of book: a fresh quote follows
        if self.replay:
            self.log.info("replay_request_not_sent", method="public/unsubscribe", channel=channel)
            return self._done()
        if channel not in self.subs.wanted:
            self.log.warning("resubscribe_unknown_instrument", instrument=command.instrument_name,
                             origin=command.origin, reason=command.reason)
            return self._done()
        self.log.info("resubscribing", instrument=command.instrument_name, origin=command.origin,
                      reason=command.reason)
        if self.subs.resync(channel):
            self.to_unsubscribe.add(channel)
        # Not subscribed yet, or already being resynced: that subscribe's answer brings a snapshot.
        self._pump(now)
        return self._done()

    # -- orders ------------------------------------------------------------------------------------------------
    def command(self, command: ExchangeCommand, now: float) -> list[Effect]:
        """An order command: refused at once (a negative code), or queued and sent as the rate
        limit allows."""
        request, refusal = self.check(command)
        if refusal is not None:
            code, message = refusal
            if code == PAPER_ONLY and request is not None:
                method, params = request
                self.log.warning("paper_order", command=type(command).__name__, origin=command.origin,
                                 request_key=command.request_key, method=method, params=params)
            self._refuse(command, code, message)
            return self._done()
        self.order_queue.append(Queued(command, queued_at=now, request=request))
        self._pump_orders(now)
        return self._done()

    def check(self, command: ExchangeCommand) -> tuple[Request | None, tuple[int, str] | None]:
        """(its request, None) for a command that may be queued, else (its request or None, (the
        refusal code, why)). Changes nothing: an idle link's warm-up runs it too."""
        try:
            request = command_request(command)  # checks it: what is wrong is said, nothing sent
        except InvalidCommand as exc:
            return None, (INVALID, str(exc))
        if self.replay:
            return request, (REPLAY_ONLY, "replaying a wire log: nothing is sent")
        if not self.settings.can_trade:
            return request, (TRADING_DISABLED, "trading on mainnet needs the --live flag; not sent")
        if self.shutting_down and isinstance(command, PlaceOrder | EditOrder):
            return request, (NOT_CONNECTED, "safe shutdown: no new orders; not sent")
        if isinstance(command, PlaceOrder):
            index = self._index_of(command.instrument_name)
            if self.locks.locked(index):
                return request, (PLATFORM_LOCKED, f"Deribit has locked trading on {index} (platform_state); "
                                                  "not sent. Orders go again once it is unlocked")
        if self.settings.paper:
            method, params = request
            return request, (PAPER_ONLY, f"paper mode: {method} {params} logged, not sent")
        if not self.link.logged_in:
            why = "not connected" if not self.link.up else "not logged in"
            if self.login_rejected:
                why += f" (login rejected: {self.login_rejected})"
            return request, (NOT_CONNECTED, f"{why}; not sent")
        return request, None

    def _refuse(self, command: ExchangeCommand, code: int, message: str) -> None:
        self.log.warning("command_refused", command=type(command).__name__, origin=command.origin,
                         request_key=command.request_key, code=code, reason=message)
        self._out.append(CommandFailed(request_key=command.request_key, origin=command.origin,
                                       method=command_method(command), code=code, message=message))

    def _pump_orders(self, now: float) -> None:
        queue = self.order_queue
        limit = self.dset.request_timeout_s
        while queue:
            head = queue[0]
            command = head.command
            # A new order or edit decided on the market of many seconds ago is no longer
            # justified; cancels always go (they only reduce risk).
            if now - head.queued_at > limit and isinstance(command, PlaceOrder | EditOrder):
                queue.popleft()
                self._refuse(command, QUEUED_TOO_LONG,
                             f"waited {now - head.queued_at:.1f} s for the rate limit (over {limit:g} s); not sent")
                continue
            if now < head.not_before or not self.order_bucket.try_take(now):
                return
            queue.popleft()
            self._request(SendOrder, head.request or command_request(command), now, head, command=command)

    def _answer_order(self, pending: SendOrder, answer: RpcResponse | RpcError, now: float) -> None:
        queued = pending.queued
        command = queued.command
        if isinstance(answer, RpcError):
            if answer.code == RATE_LIMIT_CODE and queued.retries < MAX_RATE_LIMIT_RETRIES:
                # Too fast for the exchange (nothing was done): back off and send it again.
                queued.retries += 1
                delay = retry_delay(queued.retries, initial=0.25, maximum=5.0)
                queued.not_before = now + delay
                self.order_bucket.drain(now)
                self.order_queue.appendleft(queued)
                self.log.warning("order_rate_limited", request_key=command.request_key, retry_in_s=delay,
                                 retry=queued.retries)
                return
            self.log.warning("order_rejected", request_key=command.request_key, origin=command.origin,
                             method=pending.method, code=answer.code, message=answer.message, data=answer.data)
            self._out.append(command_failed(command, pending.method, answer))
            return
        self._out.append(command_result(command, pending.method, answer))

    def safe_shutdown(self, event: SafeShutdown, now: float) -> list[Effect]:
        """Nothing new goes out from now on: what waits is refused, and so is every new order.
        cancel_all goes out if this link can send it; once it answered, each currency's open
        orders are asked for. What was found: :meth:`shutdown_findings` (the program asks, and
        makes a last connection when this one could not do it all)."""
        self.shutting_down = True
        self._fail_orders("safe shutdown; not sent", None)
        if self.shutdown_check is not None:  # once: a second SafeShutdown changes nothing
            return self._done()
        check = self.shutdown_check = CheckUnderWay(via="the Connection", currencies=self.currencies)
        cancel = CancelAll(origin="connection", request_key="safe-shutdown")
        request, refusal = self.check(cancel)  # the one place that says what may be sent
        if refusal is not None or request is None:
            why = refusal[1] if refusal is not None else "invalid"
            check.fail(why)
            self.log.warning("safe_shutdown_cannot_cancel", reason=event.reason, why=why)
            return self._done()
        self.log.warning("cancelling_all_orders", reason=event.reason)
        check.cancel_sent = True
        self._request(ShutdownCancel, request, now, cancel)
        return self._done()

    def shutdown_findings(self) -> Findings | None:
        """What the safe shutdown's cancel and check found; None before it or while under way."""
        check = self.shutdown_check
        return check.findings() if check is not None and check.done else None

    def _answer_shutdown_cancel(self, pending: ShutdownCancel, answer: RpcResponse | RpcError, now: float) -> None:
        check = self.shutdown_check
        command = pending.command
        if isinstance(answer, RpcError):
            self.log.error("safe_shutdown_cancel_refused", code=answer.code, message=answer.message)
            self._out.append(command_failed(command, pending.method, answer))
        else:
            self._out.append(command_result(command, pending.method, answer))
        if check is not None:
            check.take_cancel(answer)
        if check is None or check.failed:
            return
        # Asked only now: what is open once the cancel took effect (still asked after a refusal).
        for currency in self.currencies:
            self._request(ShutdownCheck, get_open_orders_request(request_currency_of(currency)), now, currency)

    def _answer_shutdown_check(self, pending: ShutdownCheck, answer: RpcResponse | RpcError) -> None:
        check = self.shutdown_check
        if check is None or not check.take_open_orders(pending.currency, pending.method, answer):
            return
        orders = check.checked[pending.currency]
        self.log.warning("safe_shutdown_open_orders", currency=pending.currency, open=len(orders),
                         order_ids=[o.order_id for o in orders])

    def _shutdown_check_failed(self, why: str) -> None:
        check = self.shutdown_check
        if check is not None and not check.done:
            check.fail(why)

    # -- reconciliation ----------------------------------------------------------------------------------------
    def reconcile(self, command: ReconcilePortfolio, now: float) -> list[Effect]:
        """Ask for each currency's positions, open orders and account summary; ExchangeState
        once all three answered. Deferred until this connection is logged in."""
        self._reconcile(command, now)
        return self._done()

    def _reconcile(self, command: ReconcilePortfolio, now: float) -> None:
        if self.replay:
            return
        if not self.link.logged_in:
            self.reconcile_deferred = command
            self.log.info("reconcile_deferred", origin=command.origin, reason=command.reason)
            return
        for currency in command.currencies or self.currencies:
            if currency in self.reconciles:
                # Its answers may predate what the new request wants to see: only the new round counts.
                self._reconcile_failed(currency, f"superseded by a newer reconcile ({command.reason})", superseded=True)
            self.reconcile_rounds += 1
            number = self.reconcile_rounds
            at = self.clock()
            self.reconciles[currency] = _Reconcile(round=number, reason=command.reason, requested_at=at)
            # Before the requests: every fill the Portfolio took before this was known before we asked.
            self._out.append(Announce(ReconcileStarted(currency=currency, at=at, reason=command.reason,
                                                       round=number)))
            # A linear family's account is USDC's, shared by every coin's linear instruments.
            account = request_currency_of(currency)
            self._request(GetPositions, get_positions_request(account), now, currency, number)
            self._request(GetOpenOrders, get_open_orders_request(account), now, currency, number)
            self._request(GetSummary, get_account_summary_request(account), now, currency, number)

    def _current_round(self, pending: ReconcileRequest) -> bool:
        state = self.reconciles.get(pending.currency)
        return state is not None and state.round == pending.round

    def _reconcile_failed(self, currency: str, message: str, superseded: bool = False) -> None:
        state = self.reconciles.pop(currency)
        self._out.append(ReconcileFailed(currency=currency, at=self.clock(), message=message, reason=state.reason,
                                         round=state.round, superseded=superseded))

    def _reconcile_part(self, pending: ReconcileRequest, answer: RpcResponse | RpcError, now: float) -> None:
        currency = pending.currency
        if not self._current_round(pending):
            return
        state = self.reconciles[currency]
        if isinstance(answer, RpcError):
            self.log.warning("reconcile_failed", currency=currency, part=_PART[type(pending)], code=answer.code,
                             message=answer.message)
            self._reconcile_failed(currency, f"{pending.method} refused: {answer.message} (code {answer.code})")
            return
        window = (ExchangeWindow(received_us=answer.us_in, sent_us=answer.us_out)
                  if answer.us_in is not None and answer.us_out is not None else None)
        defects: tuple[EntryDefect, ...] = ()
        match pending:
            case GetPositions():
                positions, defects = decode_positions(answer.result)
                state.positions = tuple(p for p in positions if in_family(currency, p.instrument_name))
                state.positions_window = window
            case GetOpenOrders():
                orders, defects = decode_open_orders(answer.result)
                state.orders = tuple(o for o in orders if in_family(currency, o.instrument_name))
                state.orders_window = window
            case GetSummary():
                state.summary, defects = decode_account_summary(answer.result)
                state.summary_done = True
                self._adopt_limits(state.summary.limits, now)
        for defect in defects:  # an entry left out; the rest of the answer stands
            self.log.warning("entry_skipped", currency=currency, where=defect.where, name=defect.name,
                             field=defect.field, value=defect.value, problem=defect.problem)
        listed = self.instruments.listed.get(currency, {})
        unreadable = [d for d in defects if isinstance(pending, GetPositions) and d.name.split(" ")[0] in (
            *listed, "(no name)")]
        if unreadable:
            # A position in an instrument the desk trades, left out, would read as flat: the hedge is
            # computed from these, so the picture waits for an answer that can be read in full (the
            # Portfolio asks again). One in something it does not trade (a combo, spot) is skipped.
            first = unreadable[0]
            self._reconcile_failed(currency, f"{len(unreadable)} position(s) could not be read ({first.name}: "
                                             f"{first.field} {first.problem})")
            return
        if state.positions is not None and state.orders is not None and state.summary_done:
            del self.reconciles[currency]
            self._out.append(ExchangeState(currency=currency, positions=state.positions, open_orders=state.orders,
                                           summary=state.summary, at=self.clock(), reason=state.reason,
                                           round=state.round, requested_at=state.requested_at,
                                           positions_window=state.positions_window,
                                           orders_window=state.orders_window))


    # -- the platform's locks, the account's limits, settlements ----------------------------------------------
    def platform_state(self, event: PlatformState) -> list[Effect]:
        if self.locks.on_state(event):
            log = self.log.warning if event.locked else self.log.info
            log("platform_locked" if event.locked else "platform_unlocked", price_index=event.price_index)
        return self._done()

    def _index_of(self, instrument_name: str) -> str:
        for currency, listed in self.instruments.listed.items():
            instrument = listed.get(instrument_name)
            if instrument is not None:
                return index_of(currency, instrument)
        return index_of(currency_of(instrument_name))

    def _answer_platform_status(self, answer: RpcResponse | RpcError) -> None:
        if isinstance(answer, RpcError):
            self.log.warning("platform_status_failed", code=answer.code, message=answer.message)
            return
        status = decode_platform_status(answer.result)
        for state in self.locks.states_for_status(status):
            self.log.warning("platform_locked" if state.locked else "platform_unlocked",
                             price_index=state.price_index, source="public/status")
            self._out.append(state)
        if self.locks.everything:
            self.log.warning("platform_locked", price_index="all", source="public/status")

    def _adopt_limits(self, limits: AccountLimits | None, now: float) -> None:
        """The account's own order limit replaces the configured guess (Deribit counts credits per
        account: sending faster than it refills ends in 10028 and, persisted, the session)."""
        engine = limits.matching_engine if limits is not None else None
        if engine is None:
            return
        if not (math.isfinite(engine.rate) and engine.rate > 0 and math.isfinite(engine.burst) and engine.burst >= 1):
            self.log.warning("account_limits_ignored", rate=engine.rate, burst=engine.burst,
                             hint="the account's matching-engine limit is not usable; the configured one stays")
            return
        bucket = self.order_bucket
        if (bucket.rate, bucket.burst) == (engine.rate, float(engine.burst)):
            return
        self.log.info("order_limits_from_account", rate=engine.rate, burst=engine.burst,
                      configured_rate=self.dset.order_requests_per_s, configured_burst=self.dset.order_burst)
        bucket.set_limits(engine.rate, engine.burst, now)

    def _pump_settlements(self, now: float) -> None:
        if not self.link.logged_in or self.replay:
            return
        for currency, due in list(self.settlements_due.items()):
            if now >= due:
                del self.settlements_due[currency]
                self._request(GetSettlements, get_settlement_history_request(request_currency_of(currency),
                                                                             count=SETTLEMENTS_PER_FETCH),
                              now, currency)

    def _answer_settlements(self, currency: str, answer: RpcResponse | RpcError) -> None:
        if isinstance(answer, RpcError):
            self.log.warning("settlement_history_failed", currency=currency, code=answer.code, message=answer.message)
            return
        history, defects = decode_settlement_history(answer.result, currency, self.clock())
        ours = tuple(e for e in history.settlements
                     if e.instrument_name is None or in_family(currency, e.instrument_name))
        if len(ours) != len(history.settlements):  # a linear family's answer lists every coin's
            history = msgspec.structs.replace(history, settlements=ours)
        for defect in defects:
            self.log.warning("entry_skipped", currency=currency, where=defect.where, name=defect.name,
                             field=defect.field, value=defect.value, problem=defect.problem)
        self.log.info("settlement_history", currency=currency, entries=len(history.settlements))
        self._out.append(history)

    # -- commands whose answer was lost ---------------------------------------------------------------------
    #: Resolution requests in flight at a time (after a storm there may be many to ask about).
    RESOLVING_AT_ONCE = 5
    #: Tries before a lost answer's outcome is left unknown (asked again with a doubling backoff).
    RESOLUTION_ATTEMPTS = 10

    def _pump_resolutions(self, now: float) -> None:
        if not self.link.logged_in:
            return
        for key, lost in list(self.unresolved.items()):
            if len(self.resolving) >= self.RESOLVING_AT_ONCE:
                return
            if key in self.resolving or now < lost.not_before:
                continue
            request = resolution_request(lost.command)
            if request is None:  # _lost keeps only those it can ask about
                del self.unresolved[key]
                continue
            self.resolving.add(key)
            self._request(ResolveOrder, request, now, lost.command, lost.method)

    def _resolution_failed(self, pending: ResolveOrder, now: float, why: str) -> None:
        """Ask again after a backoff; after RESOLUTION_ATTEMPTS the outcome stays unknown (logged)."""
        command = pending.command
        key = (command.origin, command.request_key)
        self.resolving.discard(key)
        lost = self.unresolved.get(key)
        if lost is None:
            return
        lost.failures += 1
        if lost.failures >= self.RESOLUTION_ATTEMPTS:
            del self.unresolved[key]
            self.log.error("order_resolution_abandoned", request_key=command.request_key, origin=command.origin,
                           method=lost.method, attempts=lost.failures, why=why,
                           hint="the audit keeps this command's outcome unknown")
            return
        lost.not_before = now + retry_delay(lost.failures, initial=1.0, maximum=60.0)
        self.log.warning("order_resolution_failed", request_key=command.request_key, why=why,
                         retry_in_s=lost.not_before - now)

    def _answer_resolution(self, pending: ResolveOrder, answer: RpcResponse | RpcError, now: float) -> None:
        command = pending.command
        key = (command.origin, command.request_key)
        try:
            resolved = resolve(command, pending.lost_method, answer)
        except msgspec.MsgspecError as exc:
            self._resolution_failed(pending, now, f"the answer could not be read: {exc}")
            return
        if resolved is None:
            why = f"{answer.message} (code {answer.code})" if isinstance(answer, RpcError) else "no answer"
            self._resolution_failed(pending, now, why)
            return
        self.resolving.discard(key)
        self.unresolved.pop(key, None)
        self.log.info("order_resolved", request_key=command.request_key, origin=command.origin,
                      method=pending.lost_method, outcome=resolved.outcome.value, detail=resolved.message)
        self._out.append(resolved)
