"""The Connection: the only actor that touches the exchange's socket.

Two threads make it up. The *link thread* owns the socket's receiving side: it connects and
reconnects with backoff, decodes every frame and publishes market data straight onto the bus
(one hop less on the hot path), answers heartbeats, probes a quiet link and declares it dead
after two heartbeat intervals of silence, and hands RPC answers to the actor. The *actor
thread* (pykka) owns the conversation: auth and token refresh, the instrument list,
subscriptions in rate-limited batches, order commands through a client-side rate limiter, and
reconciliation requests. Order commands are handled immediately (``@handles(..., immediate=True)``):
in the thread that published them, under the actor's lock, so that a hedge decided on a frame is
written to the socket without waiting for the actor thread to be scheduled (websocket-client
serialises sends). Link-level status (connecting, connected, disconnected) is published by
the link thread so that it stays in order with the data it publishes.

Every order command is answered exactly once, with CommandResult or CommandFailed; a negative
CommandFailed code means it was refused here and never sent (see the codes below).

In replay the link thread reads a wire log instead of a socket, moves the replay clock to each
frame's time, and requests are logged, not sent.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from config.settings import SettingsError
from deribit import channels as ch
from deribit.codec import (
    MIN_HEARTBEAT_INTERVAL_S,
    FrameDecoder,
    FrameError,
    Notification,
    RequestEncoder,
    RpcError,
    RpcResponse,
    TestRequest,
    UnknownChannel,
    answer_test_request,
    auth_client_credentials_request,
    auth_client_signature_request,
    auth_refresh_request,
    command_failed,
    command_request,
    command_result,
    decode_account_summary,
    decode_auth_result,
    decode_open_orders,
    decode_positions,
    decode_subscribed,
    enable_cancel_on_disconnect_request,
    get_account_summary_request,
    get_instruments_request,
    get_open_orders_request,
    get_positions_request,
    redact_frame,
    set_heartbeat_request,
    subscribe_request,
    unsubscribe_request,
)
from deribit.instruments import decode_instruments
from deribit.subscriptions import SubscriptionTracker, currency_channels, market_channels
from deribit.transport import LinkClosed, WebsocketTransport
from messages.account import ExchangeState
from messages.commands import (  # the refusal codes are re-exported for tests
    ANSWER_LOST,
    INVALID,
    NOT_CONNECTED,
    PAPER_ONLY,
    QUEUED_TOO_LONG,
    REPLAY_ONLY,
    TRADING_DISABLED,
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    EditOrder,
    InvalidCommand,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
    ResubscribeInstrument,
)
from messages.market import BookChange, Instrument, InstrumentsLoaded, InstrumentState, Quote, Ticker
from messages.system import (
    ConnectionState,
    ConnectionStatus,
    ConnectionStatusRequest,
    DailyRollover,
    MinuteTick,
    SafeShutdown,
    Shutdown,
    WarmUp,
)
from runtime.actor import Actor, ActorContext, handles
from runtime.throttle import Backoff, TokenBucket, retry_delay, token_refresh_delay
from runtime.wirelog import WireLogError, WireLogWriter, read_wire_log

RATE_LIMIT_CODE = 10028  # Deribit's too_many_requests
#: Sends of one command after Deribit's rate-limit answer before giving up with its error.
MAX_RATE_LIMIT_RETRIES = 5
#: How often the link thread wakes the actor (timers: batches, retries, timeouts, refresh).
WAKE_EVERY_S = 0.1
#: How long recv blocks; bounds how fast the link thread notices a stop.
RECV_SLICE_S = 0.2
#: What an idle link's warm-up checks, encodes and frames (never sent): an order as the Hedger makes them.
WARM_UP_ORDER = PlaceOrder(instrument_name="BTC-PERPETUAL", side="sell", amount=10.0, origin="warm-up",
                           request_key="warm-up", type="market", label="hedge-0")
_WARM_UP = WarmUp()
#: The most of an idle link's time its warm-ups may take.
WARM_UP_SHARE = 0.05
#: The market data a hedge can be decided on: an idle link decodes the latest frame of each again.
WARM_UP_TYPES = frozenset({Ticker, BookChange, Quote})
LIVE_STATES = frozenset({"created", "started", "open"})
GONE_STATES = frozenset({"settled", "closed", "terminated", "deactivated", "expired"})

#: Latency measurement hook for benchmarks and tests (bench/latency.py); None in the program,
#: which costs one global lookup per frame. When set: ``received(messages, t_ns)`` is called
#: with each notification's decoded messages and the perf_counter_ns() at which its frame came
#: off the socket, and ``sent(command, t_ns)`` after an order command's frame was written.
latency_probe: Any = None


# -- messages between the Connection's own two threads (private to this module) -----------------
class _LinkUp(msgspec.Struct, frozen=True):
    generation: int


class _LinkDown(msgspec.Struct, frozen=True):
    generation: int
    reason: str


class _LinkFailed(msgspec.Struct, frozen=True):
    error: str


class _Answer(msgspec.Struct, frozen=True):
    generation: int
    answer: Any  # RpcResponse | RpcError


class _Wake(msgspec.Struct, frozen=True):
    pass


class ReplayFinished(msgspec.Struct, frozen=True):
    pass


class GetReplaySummary(msgspec.Struct, frozen=True):
    pass


class GetLinkStats(msgspec.Struct, frozen=True):
    """Ask the Connection what its link saw so far (the replay summary's counts, live)."""


@dataclass(slots=True)
class _Pending:
    kind: str
    sent_at: float
    payload: Any = None
    method: str = ""


@dataclass
class _Reconcile:
    reason: str
    positions: tuple[Any, ...] | None = None
    orders: tuple[Any, ...] | None = None
    summary: Any = None
    summary_done: bool = False


@dataclass(slots=True)
class _Queued:
    command: Any
    queued_at: float
    not_before: float = 0.0
    retries: int = 0
    request: tuple[str, dict[str, Any]] | None = None  # (method, params), made once when it was checked


@dataclass
class LinkStats:
    """What the link thread saw. Counted per channel (cheap on the hot path), summed per
    channel family when reported."""

    in_frames: int = 0
    channels: collections.Counter[str] = field(default_factory=collections.Counter)
    responses: int = 0
    errors: int = 0
    malformed: int = 0

    def notifications(self) -> dict[str, int]:
        by_prefix: collections.Counter[str] = collections.Counter()
        for channel, count in list(self.channels.items()):
            by_prefix[ch.channel_prefix(channel)] += count
        return dict(sorted(by_prefix.items()))


Transport = Any  # WebsocketTransport or a test double with connect/recv/send/close/abort (warm_up optional)


def method_of(command: Any) -> str:
    """The Deribit method a command becomes (without validating it)."""
    if isinstance(command, PlaceOrder):
        return f"private/{command.side}"
    if isinstance(command, CancelAll):
        if command.instrument_name is not None:
            return "private/cancel_all_by_instrument"
        return "private/cancel_all_by_currency" if command.currency else "private/cancel_all"
    return {EditOrder: "private/edit", CancelOrder: "private/cancel",
            CancelByLabel: "private/cancel_by_label"}.get(type(command), type(command).__name__)


def check_link_settings(dset: Any) -> None:
    """Raise SettingsError naming the first [deribit] setting the Connection cannot work with."""
    positive = ("heartbeat_s", "subscribe_requests_per_s", "order_requests_per_s", "reconnect_initial_s",
                "request_timeout_s")
    for name in positive:
        if not getattr(dset, name) > 0:
            raise SettingsError(f"deribit.{name} must be greater than 0, got {getattr(dset, name)!r}")
    if not dset.warm_up_ms >= 0:
        raise SettingsError(f"deribit.warm_up_ms must be 0 (off) or more, got {dset.warm_up_ms!r}")
    if dset.subscribe_batch_size < 1 or dset.order_burst < 1:
        raise SettingsError("deribit.subscribe_batch_size and deribit.order_burst must be at least 1, got "
                            f"{dset.subscribe_batch_size!r} and {dset.order_burst!r}")
    if dset.reconnect_max_s < dset.reconnect_initial_s:
        raise SettingsError(f"deribit.reconnect_max_s ({dset.reconnect_max_s!r}) must not be below "
                            f"deribit.reconnect_initial_s ({dset.reconnect_initial_s!r})")


class Connection(Actor):
    def __init__(
        self,
        context: ActorContext,
        *,
        url: str | None = None,
        replay_file: str | None = None,
        replay_speed: float | None = None,
        transport_factory: Callable[[str], Transport] | None = None,
    ) -> None:
        super().__init__(context)
        s = context.settings
        self.settings = s
        self.dset = s.deribit
        check_link_settings(self.dset)
        if not replay_file and not url:
            raise ValueError("the Connection needs the exchange's websocket URL (ws:// or wss://) or a wire log "
                             "to replay")
        self.venue = s.venue
        self.url = url
        self.replay_file = replay_file
        self.replay_speed = replay_speed  # None: as fast as possible
        self.currencies: tuple[str, ...] = tuple(s.currencies)
        self._transport_factory = transport_factory or (
            lambda u: WebsocketTransport(u, connect_timeout_s=self.dset.request_timeout_s)
        )
        self.transport: Transport | None = None
        self.decoder = FrameDecoder()
        self.encoder = RequestEncoder()
        self.wirelog: WireLogWriter | None = None
        if self.dset.record_wire and not replay_file:
            try:
                self.wirelog = WireLogWriter(self.dset.record_wire, redact=redact_frame)
            except WireLogError as exc:
                raise SettingsError(str(exc)) from None  # the program stops with this message, status 2

        # conversation state (actor thread)
        self.generation = 0
        self.link_up = False
        self.authenticated = False
        self.login_rejected = ""
        self.access: Any = None  # AuthResult
        self.refresh_at = 0.0
        self.pending: dict[int, _Pending] = {}
        self.instruments: dict[str, dict[str, Instrument]] = {}
        self.instruments_needed: set[str] = set()  # currencies whose list must be (re)loaded
        self.instruments_in_flight: set[str] = set()
        self.instruments_failures: collections.Counter[str] = collections.Counter()
        self.instruments_retry_at: dict[str, float] = {}
        self.subs = SubscriptionTracker(batch_size=self.dset.subscribe_batch_size)
        # Burst 1: subscribe requests go out evenly spaced, never more than the rate in a second.
        self.sub_bucket = TokenBucket(self.dset.subscribe_requests_per_s, 1.0, time.monotonic())
        self.sub_retry_at = 0.0
        self.to_unsubscribe: set[str] = set()
        self.order_bucket = TokenBucket(self.dset.order_requests_per_s, self.dset.order_burst, time.monotonic())
        self.order_queue: collections.deque[_Queued] = collections.deque()
        self.reconciles: dict[str, _Reconcile] = {}
        self.reconcile_deferred: ReconcilePortfolio | None = None
        self.subscribed_announced = False
        self.shutting_down = False  # after SafeShutdown: cancels only
        self.resyncs = 0
        self.minutes = 0
        self.cod_enabled = False
        self._wirelog_flushed_at = 0.0

        # link thread
        self.stats = LinkStats()
        self._closing = threading.Event()
        self._link_thread: threading.Thread | None = None
        self._link_done = threading.Event()
        self._replay_finished = False
        self._unknown_channels: set[str] = set()
        self._attempt = 0
        self._publish = context.publish  # hot path: one attribute less per message
        self._decode = self.decoder.decode
        self._warm_up_s = self.dset.warm_up_ms / 1000.0
        # The latest frame of each of WARM_UP_TYPES: what an idle link decodes again.
        self._warm_frames: dict[type, str | bytes] = {}
        self._backoff = Backoff(self.dset.reconnect_initial_s, self.dset.reconnect_max_s)

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        loop = self._replay_loop if self.replay_file else self._link_loop

        def run() -> None:
            # The Connection starts first; what it publishes must find the actors started after it
            # (a replay's first book snapshots would otherwise be lost for good).
            if not self.context.wait_started(30.0):
                self.log.warning("started_before_the_other_actors")
            loop()

        self._link_thread = threading.Thread(target=run, name=f"{self.context.name}-link", daemon=True)
        self._link_thread.start()

    def on_stop(self) -> None:
        while self.order_queue:
            self._refuse(self.order_queue.popleft().command, NOT_CONNECTED, "the program is stopping; not sent")
        self._shutdown_link()
        self.log.info("link_stats", **self._summary())

    def on_failure(self, *args: Any) -> None:
        self._shutdown_link()
        # Every order command is answered once: what waits is refused, what is out is unknown.
        while self.order_queue:
            self._refuse(self.order_queue.popleft().command, NOT_CONNECTED, "the connection failed; not sent")
        for pending in list(self.pending.values()):
            if pending.kind == "order":
                command = pending.payload[0]
                self.publish(CommandFailed(request_key=command.request_key, origin=command.origin,
                                           method=pending.method, code=ANSWER_LOST,
                                           message="the connection failed before the answer; the order's state is "
                                                   "unknown until the portfolio reconciles"))
        self.pending.clear()
        super().on_failure(*args)

    def _shutdown_link(self) -> None:
        self._closing.set()
        thread = self._link_thread
        if thread is not None and thread is not threading.current_thread():
            # The link thread notices within one recv slice and closes the socket itself (one
            # reader at a time); cut the socket only if it does not.
            thread.join(timeout=1.0)
            if thread.is_alive() and self.transport is not None:
                self.transport.abort()
                thread.join(timeout=0.5)
        if self.wirelog is not None:
            self.wirelog.close()

    @property
    def may_send_orders(self) -> bool:
        """Orders and cancels may go out now: logged in on a live link, trading allowed."""
        return self.link_up and self.authenticated and self.settings.can_trade and not self.context.replay

    @property
    def can_trade(self) -> bool:
        """What ConnectionStatus.can_trade promises: logged in, every channel confirmed, trading allowed."""
        return self.may_send_orders and self.subscribed_announced

    def _status(self, state: ConnectionState, detail: str = "") -> None:
        self.publish(ConnectionStatus(state=state, venue=self.venue, at=self.context.clock.now(),
                                      authenticated=self.authenticated, can_trade=self.can_trade,
                                      attempt=self._attempt, detail=detail))

    @handles(ConnectionStatusRequest)
    def on_status_request(self, request: ConnectionStatusRequest) -> None:
        if self.context.replay:
            # The log's open and close records are the link's status; an answer from this thread
            # would land out of order with the data and read as a new link to the BookKeepers.
            return
        if not self.link_up:
            state = ConnectionState.DISCONNECTED
        elif self.subscribed_announced:
            state = ConnectionState.SUBSCRIBED
        elif self.authenticated:
            state = ConnectionState.AUTHENTICATED
        else:
            state = ConnectionState.CONNECTED
        self._status(state, detail=f"current status, asked by {request.origin or 'an actor'}")

    # -- the link thread -------------------------------------------------------------------------
    def _tell_self(self, message: object) -> bool:
        try:
            self.actor_ref.tell(message)
            return True
        except Exception:  # the actor is gone: the link thread ends
            self._closing.set()
            return False

    def _link_status(self, state: ConnectionState, detail: str = "") -> None:
        self._publish(ConnectionStatus(state=state, venue=self.venue, at=self.context.clock.now(),
                                       attempt=self._attempt, detail=detail))

    def _link_loop(self) -> None:
        log = self.log
        backoff = self._backoff
        generation = 0
        try:
            while not self._closing.is_set():
                self._attempt += 1
                self._link_status(ConnectionState.CONNECTING)
                transport = self._transport_factory(self.url or "")
                self.transport = transport
                try:
                    transport.connect()
                except LinkClosed as exc:
                    delay = backoff.next_delay()
                    log.warning("connect_failed", error=str(exc), retry_in_s=round(delay, 2), attempt=self._attempt)
                    self._link_status(ConnectionState.DISCONNECTED, f"{exc}; retrying in {delay:.1f} s")
                    self._closing.wait(delay)
                    continue
                generation += 1
                connected_at = time.monotonic()
                if self.wirelog is not None:
                    self.wirelog.write(self.context.clock.now(), "open")
                log.info("connected", url=self.url, attempt=self._attempt)
                self._link_status(ConnectionState.CONNECTED)
                if not self._tell_self(_LinkUp(generation)):
                    transport.close()
                    break
                try:
                    reason = self._receive_until_closed(transport, generation)
                except LinkClosed as exc:
                    reason = str(exc)
                transport.close()
                if self.wirelog is not None:
                    self.wirelog.write(self.context.clock.now(), "close")
                if self._closing.is_set():
                    break
                if time.monotonic() - connected_at >= self.dset.healthy_after_s:
                    backoff.reset()
                    self._attempt = 0
                delay = backoff.next_delay()
                log.warning("disconnected", reason=reason, retry_in_s=round(delay, 2))
                self._link_status(ConnectionState.DISCONNECTED, f"{reason}; reconnecting in {delay:.1f} s")
                if not self._tell_self(_LinkDown(generation, reason)):
                    break
                self._closing.wait(delay)
        except Exception as exc:  # a bug, not a link problem: let the supervisor restart the actor
            log.exception("link_thread_failed", error=f"{type(exc).__name__}: {exc}")
            self._tell_self(_LinkFailed(f"{type(exc).__name__}: {exc}"))
        finally:
            self._link_done.set()

    def _receive_until_closed(self, transport: Transport, generation: int) -> str:
        """Read frames until the link fails, goes silent or the actor stops; returns why.

        Deribit heartbeats at no less than 10 s; to notice a dead link sooner (heartbeat_s may be
        lower), a link quiet for heartbeat_s is probed with ``public/test``, and one that stays
        silent for two heartbeat intervals is dead."""
        probe_after = self.dset.heartbeat_s
        dead_after = 2.0 * probe_after
        last_frame = last_wake = last_probe = time.monotonic()
        recv = transport.recv
        on_frame = self._on_frame
        closing = self._closing
        warm_up_next = 0.0
        while not closing.is_set():
            warm_up_s = self._warm_up_s  # 0 once a warm-up failed
            frame = recv(min(warm_up_s, RECV_SLICE_S) if warm_up_s else RECV_SLICE_S)
            now = time.monotonic()
            if frame is not None:
                last_frame = now
                on_frame(frame, generation)
            else:
                if warm_up_s and now >= warm_up_next:
                    self._warm_up(transport)
                    # At most WARM_UP_SHARE of the link thread's idle time: the decision grows with
                    # the options held (about 0.5 ms for 200), its cost with it.
                    warm_up_next = now + (time.monotonic() - now) / WARM_UP_SHARE
                silent = now - last_frame
                if silent > dead_after:
                    return f"no frame for {silent:.1f} s (two heartbeat intervals): link dead"
                if silent > probe_after and now - last_probe > probe_after:
                    last_probe = now
                    self._send_now("public/test", {})
            if now - last_wake >= WAKE_EVERY_S:
                last_wake = now
                if not self._tell_self(_Wake()):
                    break
        return "stopped"

    def _on_frame(self, frame: str | bytes, generation: int) -> None:
        """The hot path: one frame from the link, decoded and published (link thread)."""
        probe = latency_probe
        received_ns = time.perf_counter_ns() if probe is not None else 0
        if self.wirelog is not None:
            self.wirelog.write(self.context.clock.now(), "in", frame)
        stats = self.stats
        stats.in_frames += 1
        try:
            decoded = self._decode(frame)
        except FrameError as exc:
            stats.malformed += 1
            self.log.warning("malformed_frame", reason=exc.reason, excerpt=exc.excerpt)
            return
        cls = decoded.__class__
        if cls is Notification:
            stats.channels[decoded.channel] += 1
            publish = self._publish
            messages = decoded.messages
            for message in messages:
                publish(message)
            if messages and (kind := messages[0].__class__) in WARM_UP_TYPES:
                self._warm_frames[kind] = frame
            if probe is not None:  # after: its own bookkeeping is not the program's latency
                probe.received(messages, received_ns)
        elif cls is RpcResponse:
            stats.responses += 1
            self._tell_self(_Answer(generation, decoded))
        elif cls is RpcError:
            stats.errors += 1
            self._tell_self(_Answer(generation, decoded))
        elif cls is TestRequest:
            self._send_now(*answer_test_request())
        elif cls is UnknownChannel:
            stats.channels[decoded.channel] += 1
            if decoded.channel not in self._unknown_channels:
                self._unknown_channels.add(decoded.channel)
                self.log.info("unknown_channel_ignored", channel=decoded.channel)

    def _warm_up(self, transport: Transport) -> None:
        """The link has been idle for ``warm_up_ms``: run the path from a frame to an order again,
        without its effects, so that its code and data are in the CPU's caches when the next
        frame comes (link thread). Left idle, they are not: on this project's machine a frame
        that came after 40 ms of silence took ten times as long to decode as one right after
        another, and so did every step after it. Decodes the latest market data frames again,
        publishes WarmUp (the Hedger decides and builds its order, and drops it), then checks,
        encodes and frames an order as :meth:`on_command` and :meth:`_send_now` would, and
        drops it. Nothing is sent, numbered, counted, published (but WarmUp) or logged; what
        changes is only caches (the decoder's channel table, the masking key pool's position)."""
        try:
            decode = self._decode
            for frame in tuple(self._warm_frames.values()):
                decode(frame)
            self._publish(_WARM_UP)
            request, _refusal = self._check_order(WARM_UP_ORDER)
            if request is not None:
                _, payload = self.encoder.encode(*request, request_id=0)  # id 0: numbers none
                warm_up = getattr(transport, "warm_up", None)
                if warm_up is not None:
                    warm_up(payload)
        except Exception as exc:  # a bug here must not cost the link: warm-ups stop, the link goes on
            self._warm_up_s = 0.0
            self.log.exception("warm_up_failed", error=f"{type(exc).__name__}: {exc}",
                               detail="the link's warm-ups are off until the Connection restarts; "
                                      "trading is not affected")

    def _send_now(self, method: str, params: dict[str, Any]) -> int:
        """Encode and write a request (either thread; websocket-client serialises sends)."""
        request_id, frame = self.encoder.encode(method, params)
        if self.context.replay:
            self.log.info("replay_request_not_sent", method=method)
            return request_id
        transport = self.transport
        if transport is None:
            raise LinkClosed("not connected")
        if self.wirelog is not None:
            self.wirelog.write(self.context.clock.now(), "out", frame)
        try:
            transport.send(frame)
        except LinkClosed as exc:
            self.log.warning("send_failed", method=method, error=str(exc))
            raise
        return request_id

    def _replay_loop(self) -> None:
        assert self.replay_file is not None
        first_t: float | None = None
        started = time.monotonic()
        generation = 0
        try:
            for record in read_wire_log(self.replay_file):
                if self._closing.is_set():
                    break
                t = record.t
                if self.replay_speed:
                    if first_t is None:
                        first_t = t
                    due = started + (t - first_t) / self.replay_speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                self.context.advance_time(t)
                direction = record.dir
                if direction == "in" and record.frame is not None:
                    self._on_frame(record.frame, generation)
                elif direction == "open":
                    generation += 1
                    self._publish(ConnectionStatus(state=ConnectionState.CONNECTED, venue="replay", at=t))
                    self._tell_self(_LinkUp(generation))
                elif direction == "close":
                    self._publish(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="replay", at=t,
                                                   detail="closed in the log"))
                    self._tell_self(_LinkDown(generation, "closed in the log"))
        except Exception as exc:  # a bad log line: say which, and end the replay
            self.log.error("replay_failed", error=str(exc))
            self.stats.errors += 1
        finally:
            self._link_done.set()
            self._tell_self(ReplayFinished())

    # -- actor: link events ----------------------------------------------------------------------
    @handles(_LinkUp)
    def on_link_up(self, event: _LinkUp) -> None:
        self.generation = event.generation
        self.link_up = True
        self.authenticated = False
        self.cod_enabled = False
        self.subscribed_announced = False
        self.pending.clear()
        self.subs.reset()
        # Private channels come back once this connection is logged in (a rejected login must
        # not keep SUBSCRIBED from being announced for the public ones).
        self.subs.drop({c for c in self.subs.wanted if ch.is_private(c)})
        self.to_unsubscribe.clear()
        self.sub_retry_at = 0.0
        self.instruments_retry_at.clear()
        if self.context.replay:
            return
        # Deribit refuses intervals below 10 s; a shorter heartbeat_s is kept by our own probe.
        interval = max(MIN_HEARTBEAT_INTERVAL_S, round(self.dset.heartbeat_s))
        self._request("heartbeat", *set_heartbeat_request(interval))
        if self.dset.client_id and self.dset.client_secret:
            self._login()
        for currency in self.currencies:
            self.subs.want(currency_channels(currency, private=False))
            if currency in self.instruments:
                self.subs.want(market_channels(self.instruments[currency].values(), self.dset.book_interval))
            self.instruments_needed.add(currency)
        self._pump()

    @handles(_LinkDown)
    def on_link_down(self, event: _LinkDown) -> None:
        if event.generation != self.generation:
            return
        self.link_up = False
        self.authenticated = False
        self.subscribed_announced = False
        self.instruments_in_flight.clear()
        # Answers to requests in flight are lost with the link. An order's fate is unknown
        # until the portfolio reconciles; say so instead of guessing.
        for pending in self.pending.values():
            if pending.kind == "order":
                command = pending.payload[0]
                self.publish(CommandFailed(
                    request_key=command.request_key, origin=command.origin, method=pending.method,
                    code=ANSWER_LOST,
                    message=f"connection lost ({event.reason}) before the exchange answered; the order's state "
                            "is unknown until the portfolio reconciles"))
        self.pending.clear()
        while self.order_queue:
            self._refuse(self.order_queue.popleft().command, NOT_CONNECTED,
                         f"connection lost ({event.reason}); not sent")
        self.reconciles.clear()

    @handles(_LinkFailed)
    def on_link_failed(self, event: _LinkFailed) -> None:
        raise RuntimeError(f"the Connection's link thread failed: {event.error}")

    @handles(_Wake)
    def on_wake(self, _event: _Wake) -> None:
        self._pump()
        if self.wirelog is not None:
            now = time.monotonic()
            if now - self._wirelog_flushed_at >= 1.0:
                self._wirelog_flushed_at = now
                self.wirelog.flush()

    def _pump(self) -> None:
        """Everything due now: timeouts, token refresh, instrument loads, subscriptions, orders."""
        if not self.link_up or self.context.replay:
            return
        now = time.monotonic()
        self._expire_requests(now)
        if self.access is not None and self.authenticated and now >= self.refresh_at:
            self.refresh_at = now + self.dset.request_timeout_s  # until the refresh answers
            self._request("refresh", *auth_refresh_request(self.access.refresh_token))
        for currency in sorted(self.instruments_needed - self.instruments_in_flight):
            if now >= self.instruments_retry_at.get(currency, 0.0):
                self._load_instruments(currency)
        self._pump_subscriptions(now)
        self._pump_orders(now)

    # -- requests ----------------------------------------------------------------------------------
    def _request(self, kind: str, method: str, params: dict[str, Any], payload: Any = None) -> int | None:
        try:
            request_id = self._send_now(method, params)
        except LinkClosed:
            return None
        self.pending[request_id] = _Pending(kind=kind, sent_at=time.monotonic(), payload=payload, method=method)
        return request_id

    def _expire_requests(self, now: float) -> None:
        limit = self.dset.request_timeout_s
        expired = [rid for rid, p in self.pending.items() if now - p.sent_at > limit]
        for rid in expired:
            pending = self.pending.pop(rid)
            self.log.warning("request_timed_out", method=pending.method, kind=pending.kind, timeout_s=limit)
            kind = pending.kind
            if kind == "order":
                command = pending.payload[0]
                self.publish(CommandFailed(request_key=command.request_key, origin=command.origin,
                                           method=pending.method, code=ANSWER_LOST,
                                           message=f"no answer within {limit:g} s; the order's state is unknown "
                                                   "until the portfolio reconciles"))
            elif kind == "subscribe":
                self.subs.failed(rid)
                self._retry_subscriptions_later(0)
            elif kind == "unsubscribe":
                self.to_unsubscribe |= set(pending.payload)
            elif kind == "instruments":
                self._instruments_failed(pending.payload)
            elif kind == "auth":
                self._login()
            elif kind in ("positions", "open_orders", "summary") and self.reconciles.pop(pending.payload, None):
                self.log.warning("reconcile_failed", currency=pending.payload, part=kind,
                                 message=f"no answer within {limit:g} s")

    @handles(_Answer)
    def on_answer(self, event: _Answer) -> None:
        if event.generation != self.generation:
            return
        answer = event.answer
        pending = self.pending.pop(answer.id, None) if answer.id is not None else None
        if pending is None:
            if answer.__class__ is RpcError:
                self.log.warning("unmatched_error", code=answer.code, message=answer.message, data=answer.data)
            return
        handler = getattr(self, f"_answer_{pending.kind}")
        try:
            handler(pending, answer)
        except msgspec.MsgspecError as exc:
            # An answer of the wrong shape is the exchange's problem, not a reason to crash.
            shown = answer.__class__ is RpcResponse and pending.kind not in ("auth", "refresh")  # tokens
            self.log.error("bad_answer", method=pending.method, error=str(exc),
                           excerpt=bytes(answer.result)[:200].decode("utf-8", "replace") if shown else "")
            if pending.kind == "instruments":
                self._instruments_failed(pending.payload)

    def _answer_heartbeat(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        if answer.__class__ is RpcError:
            self.log.warning("set_heartbeat_failed", code=answer.code, message=answer.message)

    # -- auth ---------------------------------------------------------------------------------------
    def _login(self) -> None:
        if self.dset.auth_method == "client_credentials":
            request = auth_client_credentials_request(self.dset.client_id, self.dset.client_secret)
        else:
            # The signature's timestamp must be the exchange's (real) time, whatever clock drives us.
            request = auth_client_signature_request(self.dset.client_id, self.dset.client_secret,
                                                    int(time.time() * 1000))
        self._request("auth", *request)

    def _answer_auth(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        if answer.__class__ is RpcError:
            # Also after a refused refresh: the session is gone, so no more orders on it.
            self.authenticated = False
            self.login_rejected = f"{answer.message} (code {answer.code})"
            self.log.error("login_rejected", code=answer.code, message=answer.message,
                           client_id=self.dset.client_id, auth_method=self.dset.auth_method,
                           hint="check DERIBIT_CLIENT_ID / DERIBIT_CLIENT_SECRET for this venue; "
                                "public market data keeps flowing, orders are refused")
            self._status(ConnectionState.CONNECTED, detail=f"login rejected: {self.login_rejected}")
            return
        self._authenticated(decode_auth_result(answer.result))

    def _answer_refresh(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        if answer.__class__ is RpcError:
            self.log.warning("token_refresh_failed", code=answer.code, message=answer.message)
            self._login()  # a fresh login instead
            return
        self._authenticated(decode_auth_result(answer.result), refreshed=True)

    def _authenticated(self, auth: Any, refreshed: bool = False) -> None:
        self.access = auth
        first = not self.authenticated
        self.authenticated = True
        self.login_rejected = ""
        self.refresh_at = time.monotonic() + token_refresh_delay(auth.expires_in)
        if not first:
            self.log.info("token_refreshed" if refreshed else "logged_in_again", expires_in_s=auth.expires_in)
            return
        self.log.info("authenticated", expires_in_s=auth.expires_in, method=self.dset.auth_method)
        for currency in self.currencies:
            if self.subs.want(currency_channels(currency, private=True)):
                self.subscribed_announced = False
        if self.settings.can_trade and self.dset.cancel_on_disconnect and not self.settings.paper:
            self._request("cod", *enable_cancel_on_disconnect_request())
        self._status(ConnectionState.AUTHENTICATED)
        if self.reconcile_deferred is not None:
            deferred, self.reconcile_deferred = self.reconcile_deferred, None
            self.on_reconcile(deferred)
        self._pump()

    def _answer_cod(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        if answer.__class__ is RpcError:
            self.log.warning("cancel_on_disconnect_failed", code=answer.code, message=answer.message)
        else:
            self.cod_enabled = True
            self.log.info("cancel_on_disconnect_enabled")

    # -- instruments and subscriptions ------------------------------------------------------------
    def _load_instruments(self, currency: str) -> None:
        self.instruments_needed.add(currency)
        if currency in self.instruments_in_flight:
            return
        self.instruments_in_flight.add(currency)
        if self._request("instruments", *get_instruments_request(currency), payload=currency) is None:
            self.instruments_in_flight.discard(currency)

    def _instruments_failed(self, currency: str) -> None:
        self.instruments_in_flight.discard(currency)
        self.instruments_failures[currency] += 1
        delay = retry_delay(self.instruments_failures[currency], initial=1.0)
        self.instruments_retry_at[currency] = time.monotonic() + delay
        self.log.warning("instruments_retry", currency=currency, retry_in_s=delay)

    def _answer_instruments(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        currency = pending.payload
        if answer.__class__ is RpcError:
            self.log.error("get_instruments_failed", currency=currency, code=answer.code, message=answer.message)
            self._instruments_failed(currency)
            return
        listed = tuple(i for i in decode_instruments(bytes(answer.result)) if i.kind in ("option", "future"))
        self.instruments_in_flight.discard(currency)
        self.instruments_needed.discard(currency)
        self.instruments_failures.pop(currency, None)
        old = self.instruments.get(currency, {})
        new = {i.instrument_name: i for i in listed}
        self.instruments[currency] = new
        gone = [old[n] for n in old.keys() - new.keys()]
        if gone:
            self.to_unsubscribe |= self.subs.drop(market_channels(gone, self.dset.book_interval))
        if self.subs.want(market_channels(listed, self.dset.book_interval)):
            self.subscribed_announced = False
        self.log.info("instruments_loaded", currency=currency, options=sum(i.kind == "option" for i in listed),
                      futures=sum(i.kind == "future" for i in listed),
                      added=len(new.keys() - old.keys()) if old else None, removed=len(gone) if old else None)
        self.publish(InstrumentsLoaded(currency=currency, instruments=listed, at=self.context.clock.now()))
        self._pump()

    def _pump_subscriptions(self, now: float) -> None:
        if now < self.sub_retry_at:
            return
        if self.to_unsubscribe and self.sub_bucket.try_take(now):
            batch = tuple(sorted(self.to_unsubscribe))[: self.subs.batch_size]
            self.to_unsubscribe -= set(batch)
            if self._request("unsubscribe", *unsubscribe_request(batch), payload=batch) is None:
                self.to_unsubscribe |= set(batch)
                return
        while True:
            batch = self.subs.next_batch()
            if not batch or not self.sub_bucket.try_take(now):
                break
            request_id = self._request("subscribe", *subscribe_request(batch), payload=batch)
            if request_id is None:
                return
            self.subs.sent(request_id, batch)
        if (not self.subscribed_announced and self.subs.complete and not self.subs.in_flight
                and not self.instruments_needed and not self.to_unsubscribe):
            self.subscribed_announced = True
            confirmed, wanted = self.subs.counts()
            self.log.info("subscriptions_confirmed", channels=confirmed)
            self._status(ConnectionState.SUBSCRIBED, detail=f"{confirmed} of {wanted} channels")

    def _answer_subscribe(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        request_id = answer.id
        if answer.__class__ is RpcError:
            batch = self.subs.failed(request_id) if request_id is not None else ()
            self.log.warning("subscribe_failed", code=answer.code, message=answer.message, channels=len(batch))
            self._retry_subscriptions_later(answer.code)
            return
        refused, unwanted = self.subs.answered(request_id, decode_subscribed(answer.result))
        if refused:
            self.log.warning("subscribe_refused", channels=list(refused[:5]), count=len(refused))
            self._retry_subscriptions_later(0)
        if unwanted:
            self.to_unsubscribe |= set(unwanted)
        self._pump()

    def _retry_subscriptions_later(self, code: int) -> None:
        delay = retry_delay(self.subs.failures, initial=0.5)
        now = time.monotonic()
        if code == RATE_LIMIT_CODE:
            self.sub_bucket.drain(now)
        self.sub_retry_at = now + delay
        self.log.info("subscriptions_retry", retry_in_s=delay)

    def _answer_unsubscribe(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        batch: tuple[str, ...] = pending.payload
        if answer.__class__ is RpcError:
            self.log.warning("unsubscribe_failed", code=answer.code, message=answer.message)
            self.to_unsubscribe |= set(batch)
            self._retry_subscriptions_later(answer.code)
            return
        # Channels still wanted were unsubscribed to be subscribed afresh (a book resync).
        self.subs.forget(batch)
        self._pump()

    @handles(ResubscribeInstrument)
    def on_resubscribe(self, command: ResubscribeInstrument) -> None:
        self.resyncs += 1
        channel = ch.book(command.instrument_name, self.dset.book_interval)  # type: ignore[arg-type]
        if channel not in self.subs.wanted and ch.quote(command.instrument_name) in self.subs.wanted:
            channel = ch.quote(command.instrument_name)  # a future's top of book: a fresh quote follows
        if self.context.replay:
            self.log.info("replay_request_not_sent", method="public/unsubscribe", channel=channel)
            return
        if channel not in self.subs.wanted:
            self.log.warning("resubscribe_unknown_instrument", instrument=command.instrument_name,
                             origin=command.origin, reason=command.reason)
            return
        self.log.info("resubscribing", instrument=command.instrument_name, origin=command.origin,
                      reason=command.reason)
        if channel in self.subs.confirmed:
            self.to_unsubscribe.add(channel)
        # Not yet confirmed: its subscribe answer brings a fresh snapshot anyway.
        self._pump()

    @handles(RefreshInstruments)
    def on_refresh(self, command: RefreshInstruments) -> None:
        for currency in command.currencies or self.currencies:
            if currency not in self.currencies:
                self.log.warning("refresh_unknown_currency", currency=currency, configured=list(self.currencies))
            elif self.context.replay:
                self.log.info("replay_request_not_sent", method="public/get_instruments", currency=currency)
            else:
                # Loaded now if the link is up, else on the next connect (every connect loads all).
                self.instruments_needed.add(currency)
                if self.link_up:
                    self._load_instruments(currency)

    @handles(DailyRollover)
    def on_rollover(self, event: DailyRollover) -> None:
        self.log.info("daily_rollover", day=event.day)
        self.on_refresh(RefreshInstruments(origin="connection", reason=f"rollover {event.day}"))

    @handles(InstrumentState)
    def on_instrument_state(self, event: InstrumentState) -> None:
        currency = event.instrument_name.split("-", 1)[0].split("_", 1)[0]
        known = event.instrument_name in self.instruments.get(currency, {})
        if (event.state in LIVE_STATES and not known) or (event.state in GONE_STATES and known):
            self.log.info("instrument_state", instrument=event.instrument_name, state=event.state)
            self.on_refresh(RefreshInstruments(origin="connection", reason=event.state, currencies=(currency,)))

    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        self.minutes += 1

    # -- orders ---------------------------------------------------------------------------------------
    @handles(PlaceOrder, EditOrder, CancelOrder, CancelAll, CancelByLabel, immediate=True)
    def on_command(self, command: Any) -> None:
        request, refusal = self._check_order(command)
        if refusal is not None:
            code, message = refusal
            if code == PAPER_ONLY:
                method, params = request
                self.log.warning("paper_order", command=type(command).__name__, origin=command.origin,
                                 request_key=command.request_key, method=method, params=params)
            self._refuse(command, code, message)
            return
        now = time.monotonic()
        self.order_queue.append(_Queued(command, queued_at=now, request=request))
        self._pump_orders(now)

    def _check_order(self, command: Any) -> tuple[Any, tuple[int, str] | None]:
        """(its request, None) for a command that may be queued, else (its request or None, (the
        refusal code, why)). Changes nothing: an idle link's warm-up runs it too."""
        try:
            request = command_request(command)  # checks it: what is wrong is said, nothing sent
        except InvalidCommand as exc:
            return None, (INVALID, str(exc))
        if self.context.replay:
            return request, (REPLAY_ONLY, "replaying a wire log: nothing is sent")
        if not self.settings.can_trade:
            return request, (TRADING_DISABLED, "trading on mainnet needs the --live flag; not sent")
        if self.shutting_down and isinstance(command, PlaceOrder | EditOrder):
            return request, (NOT_CONNECTED, "safe shutdown: no new orders; not sent")
        if self.settings.paper:
            method, params = request
            return request, (PAPER_ONLY, f"paper mode: {method} {params} logged, not sent")
        if not (self.link_up and self.authenticated):
            why = "not connected" if not self.link_up else "not logged in"
            if self.login_rejected:
                why += f" (login rejected: {self.login_rejected})"
            return request, (NOT_CONNECTED, f"{why}; not sent")
        return request, None

    def _refuse(self, command: Any, code: int, message: str) -> None:
        method = method_of(command)
        self.log.warning("command_refused", command=type(command).__name__, origin=command.origin,
                         request_key=command.request_key, code=code, reason=message)
        self.publish(CommandFailed(request_key=command.request_key, origin=command.origin, method=method,
                                   code=code, message=message))

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
            method, params = head.request or command_request(command)
            if self._request("order", method, params, payload=(command, head)) is None:
                self._refuse(command, NOT_CONNECTED, "connection lost; not sent")
            elif latency_probe is not None:
                latency_probe.sent(command, time.perf_counter_ns())

    def _answer_order(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        command, queued = pending.payload
        if answer.__class__ is RpcError:
            if answer.code == RATE_LIMIT_CODE and queued.retries < MAX_RATE_LIMIT_RETRIES:
                # Too fast for the exchange (nothing was done): back off and send it again.
                queued.retries += 1
                delay = retry_delay(queued.retries, initial=0.25, maximum=5.0)
                now = time.monotonic()
                queued.not_before = now + delay
                self.order_bucket.drain(now)
                self.order_queue.appendleft(queued)
                self.log.warning("order_rate_limited", request_key=command.request_key, retry_in_s=delay,
                                 retry=queued.retries)
                return
            self.log.warning("order_rejected", request_key=command.request_key, origin=command.origin,
                             method=pending.method, code=answer.code, message=answer.message, data=answer.data)
            self.publish(command_failed(command, pending.method, answer))
            return
        self.publish(command_result(command, pending.method, answer))

    # -- reconciliation -------------------------------------------------------------------------------
    @handles(ReconcilePortfolio)
    def on_reconcile(self, command: ReconcilePortfolio) -> None:
        if self.context.replay:
            return
        if not (self.link_up and self.authenticated):
            # Done as soon as this connection is logged in.
            self.reconcile_deferred = command
            self.log.info("reconcile_deferred", origin=command.origin, reason=command.reason)
            return
        for currency in command.currencies or self.currencies:
            self.reconciles[currency] = _Reconcile(reason=command.reason)
            self._request("positions", *get_positions_request(currency), payload=currency)
            self._request("open_orders", *get_open_orders_request(currency), payload=currency)
            self._request("summary", *get_account_summary_request(currency), payload=currency)

    def _answer_positions(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        self._reconcile_part(pending.payload, "positions", answer, decode_positions)

    def _answer_open_orders(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        self._reconcile_part(pending.payload, "orders", answer, decode_open_orders)

    def _answer_summary(self, pending: _Pending, answer: RpcResponse | RpcError) -> None:
        self._reconcile_part(pending.payload, "summary", answer, decode_account_summary)

    def _reconcile_part(self, currency: str, part: str, answer: Any, decode: Callable[[Any], Any]) -> None:
        state = self.reconciles.get(currency)
        if state is None:
            return
        if answer.__class__ is RpcError:
            self.log.warning("reconcile_failed", currency=currency, part=part, code=answer.code,
                             message=answer.message)
            self.reconciles.pop(currency, None)
            return
        try:
            setattr(state, part, decode(answer.result))
        except msgspec.MsgspecError:
            self.reconciles.pop(currency, None)
            raise
        if part == "summary":
            state.summary_done = True
        if state.positions is not None and state.orders is not None and state.summary_done:
            del self.reconciles[currency]
            self.publish(ExchangeState(currency=currency, positions=state.positions, open_orders=state.orders,
                                       summary=state.summary, at=self.context.clock.now(), reason=state.reason))

    # -- shutdown ---------------------------------------------------------------------------------------
    @handles(SafeShutdown)
    def on_safe_shutdown(self, event: SafeShutdown) -> None:
        # Nothing new goes out from now on: what waits is refused, and so is every new order.
        self.shutting_down = True
        while self.order_queue:
            self._refuse(self.order_queue.popleft().command, NOT_CONNECTED, "safe shutdown; not sent")
        if self.may_send_orders and not self.settings.paper:
            self.log.warning("cancelling_all_orders", reason=event.reason)
            cancel = CancelAll(origin="connection", request_key="safe-shutdown")
            self._request("order", *command_request(cancel), payload=(cancel, _Queued(cancel, time.monotonic())))

    @handles(Shutdown)
    def on_shutdown(self, _event: Shutdown) -> None:
        if self.wirelog is not None:
            self.wirelog.flush()

    # -- replay and statistics ---------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "in_frames": stats.in_frames,
            "notifications": stats.notifications(),
            "responses": stats.responses,
            "errors": stats.errors + stats.malformed,
            "malformed": stats.malformed,
            "resyncs": self.resyncs,
            "minutes": self.minutes,
        }

    @handles(ReplayFinished)
    def on_replay_finished(self, _event: ReplayFinished) -> None:
        self._replay_finished = True
        self.log.info("replay_finished", in_frames=self.stats.in_frames)

    @handles(GetReplaySummary)
    def on_summary(self, _request: GetReplaySummary) -> dict[str, Any] | None:
        """The replay's counts once the whole log was read and everything the link thread sent this
        actor before the end (minute ticks, answers) was handled; None before that."""
        if not (self._link_done.is_set() and self._replay_finished):
            return None
        return self._summary()

    @handles(GetLinkStats)
    def on_link_stats(self, _request: GetLinkStats) -> dict[str, Any]:
        """The same counts at any time (the link thread may be counting on)."""
        return self._summary()
