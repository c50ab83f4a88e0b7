"""The Connection: the only actor that touches the exchange's socket.

Two threads make it up. The *link thread* owns the socket's receiving side: it connects and
reconnects with backoff, decodes every frame and publishes market data straight onto the bus
(one hop less on the hot path), answers heartbeats, probes a quiet link and declares it dead
after two heartbeat intervals of silence, and hands RPC answers to the actor. The *actor
thread* (pykka) runs the conversation, :class:`deribit.session.Session` (auth and token
refresh, instruments, subscriptions, the order queue under the rate limits, reconciliation,
the answers to commands), and writes and publishes what it returns. Order commands are handled
immediately (``@handles(..., immediate=True)``): in the thread that published them, under the
actor's lock, so that a hedge decided on a frame is written to the socket without waiting for
the actor thread to be scheduled (websocket-client serialises sends). Link-level status
(connecting, connected, disconnected) is published by the link thread so that it stays in
order with the data it publishes.

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
    FrameDecoder,
    FrameError,
    Notification,
    RpcError,
    RpcResponse,
    TestRequest,
    UnknownChannel,
    answer_test_request,
    redact_frame,
)
from deribit.session import Effect, Send, Session
from deribit.transport import LinkClosed, Transport, WebsocketTransport
from messages.commands import (  # the refusal codes are re-exported for tests
    ANSWER_LOST as ANSWER_LOST,
)
from messages.commands import (
    INVALID as INVALID,
)
from messages.commands import (
    NOT_CONNECTED as NOT_CONNECTED,
)
from messages.commands import (
    PAPER_ONLY as PAPER_ONLY,
)
from messages.commands import (
    QUEUED_TOO_LONG as QUEUED_TOO_LONG,
)
from messages.commands import (
    REPLAY_ONLY as REPLAY_ONLY,
)
from messages.commands import (
    TRADING_DISABLED as TRADING_DISABLED,
)
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    EditOrder,
    ExchangeCommand,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
    ResubscribeInstrument,
)
from messages.market import BookChange, InstrumentState, Quote, Ticker
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
from runtime.throttle import Backoff
from runtime.wirelog import WireLogError, WireLogWriter, read_wire_log

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
    answer: RpcResponse | RpcError


class _Wake(msgspec.Struct, frozen=True):
    pass


class ReplayFinished(msgspec.Struct, frozen=True):
    pass


class GetReplaySummary(msgspec.Struct, frozen=True):
    pass


class GetLinkStats(msgspec.Struct, frozen=True):
    """Ask the Connection what its link saw so far (the replay summary's counts, live)."""


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
        self._transport_factory = transport_factory or (
            lambda u: WebsocketTransport(u, connect_timeout_s=self.dset.request_timeout_s)
        )
        self.transport: Transport | None = None
        self.decoder = FrameDecoder()
        self.wirelog: WireLogWriter | None = None
        if self.dset.record_wire and not replay_file:
            try:
                self.wirelog = WireLogWriter(self.dset.record_wire, redact=redact_frame)
            except WireLogError as exc:
                raise SettingsError(str(exc)) from None  # the program stops with this message, status 2
        # The conversation (actor thread, and immediate order commands under the actor's lock).
        self.session = Session(s, now=time.monotonic(), log=self.log, clock=context.clock.now,
                               epoch_ms=lambda: int(time.time() * 1000), replay=context.replay)
        self.generation = 0
        self.minutes = 0
        self._wirelog_flushed_at = 0.0

        # link thread
        self.stats = LinkStats()
        self._closing = threading.Event()
        self._link_thread: threading.Thread | None = None
        self._link_done = threading.Event()
        self._replay_finished = False
        self._unknown_channels: set[str] = set()
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
        self._apply(self.session.fail_orders("the program is stopping; not sent"))
        self._shutdown_link()
        self.log.info("link_stats", **self._summary())

    def on_failure(self, *args: Any) -> None:
        self._shutdown_link()
        # Every order command is answered once: what waits is refused, what is out is unknown.
        self._apply(self.session.fail_orders("the connection failed; not sent",
                                             "the connection failed before the answer; the order's state is "
                                             "unknown until the portfolio reconciles"))
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

    def _apply(self, effects: list[Effect]) -> None:
        """Write what the session says to send (in order) and publish what it says to publish."""
        for effect in effects:
            if effect.__class__ is Send:
                assert isinstance(effect, Send)
                try:
                    self._write(effect.method, effect.frame)
                except LinkClosed:
                    self._apply(self.session.unsent(effect.request_id, time.monotonic()))
                    continue
                if effect.command is not None and latency_probe is not None:
                    latency_probe.sent(effect.command, time.perf_counter_ns())
            else:
                self.publish(effect)

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
                                       attempt=self.session.attempt, detail=detail))

    def _link_loop(self) -> None:
        log = self.log
        backoff = self._backoff
        generation = 0
        try:
            while not self._closing.is_set():
                self.session.attempt += 1
                self._link_status(ConnectionState.CONNECTING)
                transport = self._transport_factory(self.url or "")
                self.transport = transport
                try:
                    transport.connect()
                except LinkClosed as exc:
                    delay = backoff.next_delay()
                    log.warning("connect_failed", error=str(exc), retry_in_s=round(delay, 2),
                                attempt=self.session.attempt)
                    self._link_status(ConnectionState.DISCONNECTED, f"{exc}; retrying in {delay:.1f} s")
                    self._closing.wait(delay)
                    continue
                generation += 1
                connected_at = time.monotonic()
                if self.wirelog is not None:
                    self.wirelog.write(self.context.clock.now(), "open")
                log.info("connected", url=self.url, attempt=self.session.attempt)
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
                    self.session.attempt = 0
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
        encodes and frames an order as :meth:`on_command` and :meth:`_write` would, and
        drops it. Nothing is sent, numbered, counted, published (but WarmUp) or logged; what
        changes is only caches (the decoder's channel table, the masking key pool's position)."""
        try:
            decode = self._decode
            for frame in tuple(self._warm_frames.values()):
                decode(frame)
            self._publish(_WARM_UP)
            request, _refusal = self.session.check(WARM_UP_ORDER)
            if request is not None:
                _, payload = self.session.encoder.encode(*request, request_id=0)  # id 0: numbers none
                warm_up = getattr(transport, "warm_up", None)
                if warm_up is not None:
                    warm_up(payload)
        except Exception as exc:  # a bug here must not cost the link: warm-ups stop, the link goes on
            self._warm_up_s = 0.0
            self.log.exception("warm_up_failed", error=f"{type(exc).__name__}: {exc}",
                               detail="the link's warm-ups are off until the Connection restarts; "
                                      "trading is not affected")

    def _send_now(self, method: str, params: dict[str, Any]) -> None:
        """Encode and write a request of the link's own (a probe, a test_request's answer)."""
        self._write(method, self.session.encoder.encode(method, params)[1])

    def _write(self, method: str, frame: bytes) -> None:
        """Write a request frame (either thread; websocket-client serialises sends)."""
        if self.context.replay:
            self.log.info("replay_request_not_sent", method=method)
            return
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

    # -- actor: the link's events and the program's, handed to the session ----------------------------
    @handles(_LinkUp)
    def on_link_up(self, event: _LinkUp) -> None:
        self.generation = event.generation
        self._apply(self.session.link_up(time.monotonic()))

    @handles(_LinkDown)
    def on_link_down(self, event: _LinkDown) -> None:
        if event.generation == self.generation:
            self._apply(self.session.link_down(event.reason))

    @handles(_LinkFailed)
    def on_link_failed(self, event: _LinkFailed) -> None:
        raise RuntimeError(f"the Connection's link thread failed: {event.error}")

    @handles(_Answer)
    def on_answer(self, event: _Answer) -> None:
        if event.generation == self.generation:
            self._apply(self.session.answer(event.answer, time.monotonic()))

    @handles(_Wake)
    def on_wake(self, _event: _Wake) -> None:
        now = time.monotonic()
        self._apply(self.session.tick(now))
        if self.wirelog is not None and now - self._wirelog_flushed_at >= 1.0:
            self._wirelog_flushed_at = now
            self.wirelog.flush()

    @handles(ConnectionStatusRequest)
    def on_status_request(self, request: ConnectionStatusRequest) -> None:
        self._apply(self.session.status_now(request.origin))

    @handles(ResubscribeInstrument)
    def on_resubscribe(self, command: ResubscribeInstrument) -> None:
        self._apply(self.session.resubscribe(command, time.monotonic()))

    @handles(RefreshInstruments)
    def on_refresh(self, command: RefreshInstruments) -> None:
        self._apply(self.session.refresh(command, time.monotonic()))

    @handles(DailyRollover)
    def on_rollover(self, event: DailyRollover) -> None:
        self._apply(self.session.rollover(event, time.monotonic()))

    @handles(InstrumentState)
    def on_instrument_state(self, event: InstrumentState) -> None:
        self._apply(self.session.instrument_state(event, time.monotonic()))

    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        self.minutes += 1

    @handles(PlaceOrder, EditOrder, CancelOrder, CancelAll, CancelByLabel, immediate=True)
    def on_command(self, command: ExchangeCommand) -> None:
        self._apply(self.session.command(command, time.monotonic()))

    @handles(ReconcilePortfolio)
    def on_reconcile(self, command: ReconcilePortfolio) -> None:
        self._apply(self.session.reconcile(command, time.monotonic()))

    @handles(SafeShutdown)
    def on_safe_shutdown(self, event: SafeShutdown) -> None:
        self._apply(self.session.safe_shutdown(event, time.monotonic()))

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
            "resyncs": self.session.resyncs,
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
