"""The Connection: the only actor that touches the exchange's socket.

Two threads make it up. The *link thread* runs :class:`deribit.link.LinkLoop` (connect and
reconnect with backoff, probe a quiet link, declare it dead after two heartbeat intervals of
silence; in replay, read the wire log) and, for each frame, :meth:`Connection.on_frame`, which
decodes it and publishes market data straight onto the bus (one hop less on the hot path),
answers heartbeats and hands RPC answers to the actor. The link thread also warms an idle link
up and wakes the actor. The *actor thread* (pykka) runs the conversation,
:class:`deribit.session.Session` (auth and token refresh, instruments, subscriptions, the order
queue under the rate limits, reconciliation, the answers to commands), and writes and publishes
what it returns. Order commands are handled immediately (``@handles(..., immediate=True)``): in
the thread that published them, under the actor's lock, so that a hedge decided on a frame is
written to the socket without waiting for the actor thread to be scheduled (websocket-client
serialises sends). Link-level status (connecting, connected, disconnected) is published by the
link thread so that it stays in order with the data it publishes.

In replay the link thread reads a wire log instead of a socket, moves the replay clock to each
frame's time, and requests are logged, not sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from config.settings import SettingsError
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
from deribit.link import LinkDown, LinkFailed, LinkLoop, LinkStats, LinkUp, ReplayFinished, Wake
from deribit.session import Announce, Effect, Send, Session, SessionEvent
from deribit.shutdown_check import Findings
from deribit.transport import LinkClosed, Transport, WebsocketTransport
from messages.commands import REPLAY_ONLY as REPLAY_ONLY  # re-exported for tests
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
from messages.market import BookChange, InstrumentState, PlatformState, Quote, Ticker
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
from runtime.wirelog import WireLogError, WireLogWriter

#: What an idle link's warm-up checks, encodes and frames (never sent): an order as the Hedger makes them.
WARM_UP_ORDER = PlaceOrder(instrument_name="BTC-PERPETUAL", side="sell", amount=10.0, origin="warm-up",
                           request_key="warm-up", type="market", label="hedge-0")
_WARM_UP = WarmUp()
#: The market data a hedge can be decided on: an idle link decodes the latest frame of each again.
WARM_UP_TYPES = frozenset({Ticker, BookChange, Quote})

#: Latency measurement hook for benchmarks and tests (bench/latency.py); None in the program,
#: which costs one global lookup per frame. When set: ``received(messages, t_ns)`` is called
#: with each notification's decoded messages and the perf_counter_ns() at which its frame came
#: off the socket, and ``sent(command, t_ns)`` after an order command's frame was written.
latency_probe: Any = None


class _Answer(msgspec.Struct, frozen=True):
    """An RPC answer, from the link thread to the actor."""

    generation: int
    answer: RpcResponse | RpcError


class GetReplaySummary(msgspec.Struct, frozen=True):
    pass


class GetLinkStats(msgspec.Struct, frozen=True):
    """Ask the Connection what its link saw so far (the replay summary's counts, live)."""


class GetShutdownFindings(msgspec.Struct, frozen=True):
    """Ask the Connection what its safe shutdown's cancel and check found (None: not done yet)."""


class Connection(Actor):
    def __init__(
        self,
        context: ActorContext,
        *,
        url: str | None = None,
        replay_file: str | None = None,
        replay_speed: float | None = None,
        replay_strict: bool = False,
        transport_factory: Callable[[str], Transport] | None = None,
    ) -> None:
        super().__init__(context)
        s = context.settings
        self.settings = s
        self.dset = s.deribit
        if not replay_file and not url:
            raise ValueError("the Connection needs the exchange's websocket URL (ws:// or wss://) or a wire log "
                             "to replay")
        self.venue = s.venue
        self.url = url
        self.replay_file = replay_file
        self.replay_speed = replay_speed  # None: as fast as possible
        self.replay_strict = replay_strict  # stop at the log's first bad line
        self._transport_factory = transport_factory or (
            lambda u: WebsocketTransport(u, connect_timeout_s=self.dset.request_timeout_s)
        )
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
        self.link = LinkLoop(self, closing=self._closing, log=self.log, clock=context.clock.now,
                             wirelog=self.wirelog, stats=self.stats)
        self._link_thread: threading.Thread | None = None
        self._replay_finished = False
        self._unknown_channels: set[str] = set()
        self.publish_now = context.publish  # the link thread's: straight onto the bus
        self._decode = self.decoder.decode
        # The latest frame of each of WARM_UP_TYPES: what an idle link decodes again.
        self._warm_frames: dict[type, str | bytes] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        def run() -> None:
            # The Connection starts first; what it publishes must find the actors started after it
            # (a replay's first book snapshots would otherwise be lost for good).
            if not self.context.wait_started(30.0):
                self.log.warning("started_before_the_other_actors")
            if self.replay_file:
                self.link.replay(self.replay_file, self.replay_speed, self.context.advance_time,
                                 max_jump_s=self.dset.replay_max_jump_s, strict=self.replay_strict)
            else:
                dset = self.dset
                self.link.run(self.url or "", self._transport_factory,
                              Backoff(dset.reconnect_initial_s, dset.reconnect_max_s), heartbeat_s=dset.heartbeat_s,
                              healthy_after_s=dset.healthy_after_s, warm_up_s=dset.warm_up_ms / 1000.0)

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
            if thread.is_alive() and self.link.transport is not None:
                self.link.transport.abort()
                thread.join(timeout=0.5)
        if self.wirelog is not None:
            self.wirelog.close()

    def _apply(self, effects: list[Effect]) -> None:
        """Write what the session says to send (in order) and publish what it says to publish."""
        for effect in effects:
            if isinstance(effect, Send):
                try:
                    self._write(effect.method, effect.frame)
                except LinkClosed:
                    self._apply(self.session.unsent(effect.request_id, time.monotonic()))
                    continue
                if effect.command is not None and latency_probe is not None:
                    latency_probe.sent(effect.command, time.perf_counter_ns())
            elif isinstance(effect, Announce):
                self.context.publish(effect.message)
            else:
                self.publish(effect)

    # -- the link thread (deribit.link.LinkOwner) ------------------------------------------------------
    def tell(self, message: object) -> bool:
        try:
            self.actor_ref.tell(message)
            return True
        except Exception:  # the actor is gone: the link thread ends
            self._closing.set()
            return False

    def link_status(self, state: ConnectionState, attempt: int, detail: str = "") -> None:
        self.session.attempt = attempt  # what the actor thread's status messages say too
        self.publish_now(ConnectionStatus(state=state, venue=self.venue, at=self.context.clock.now(),
                                          attempt=attempt, detail=detail))

    def on_frame(self, frame: str | bytes, generation: int) -> None:
        """The hot path: one frame from the link, decoded and published (link thread)."""
        probe = latency_probe
        received_ns = time.perf_counter_ns() if probe is not None else 0
        if self.wirelog is not None:
            self.wirelog.write(self.context.clock.now(), "in", frame)
        stats = self.stats
        stats.in_frames += 1
        try:
            # Any: the class tests below narrow it (identity is cheaper than isinstance; mypy cannot see it).
            decoded: Any = self._decode(frame)
        except FrameError as exc:
            stats.malformed += 1
            self.log.warning("malformed_frame", reason=exc.reason, excerpt=exc.excerpt)
            return
        cls = decoded.__class__
        if cls is Notification:
            stats.channels[decoded.channel] += 1
            publish = self.publish_now
            messages = decoded.messages
            for message in messages:
                publish(message)
            if messages and (kind := messages[0].__class__) in WARM_UP_TYPES:
                self._warm_frames[kind] = frame
            for defect in decoded.defects:  # an entry left out of a list; the rest was published
                self.log.warning("entry_skipped", channel=decoded.channel, where=defect.where, name=defect.name,
                                 field=defect.field, value=defect.value, problem=defect.problem)
            if probe is not None:  # after: its own bookkeeping is not the program's latency
                probe.received(messages, received_ns)
        elif cls is RpcResponse:
            stats.responses += 1
            self.tell(_Answer(generation, decoded))
        elif cls is RpcError:
            stats.errors += 1
            self.tell(_Answer(generation, decoded))
        elif cls is TestRequest:
            self.send_now(*answer_test_request())
        elif cls is UnknownChannel:
            stats.channels[decoded.channel] += 1
            if decoded.channel not in self._unknown_channels:
                self._unknown_channels.add(decoded.channel)
                self.log.info("unknown_channel_ignored", channel=decoded.channel)

    def warm_up(self, transport: Transport) -> bool:
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
            self.publish_now(_WARM_UP)
            request, _refusal = self.session.check(WARM_UP_ORDER)
            if request is not None:
                _, payload = self.session.encoder.encode(*request, request_id=0)  # id 0: numbers none
                warm_up = getattr(transport, "warm_up", None)
                if warm_up is not None:
                    warm_up(payload)
            return True
        except Exception as exc:  # a bug here must not cost the link: warm-ups stop, the link goes on
            self.log.exception("warm_up_failed", error=f"{type(exc).__name__}: {exc}",
                               detail="the link's warm-ups are off until the Connection restarts; "
                                      "trading is not affected")
            return False

    def send_now(self, method: str, params: dict[str, Any]) -> None:
        """Encode and write a request of the link's own (a probe, a test_request's answer)."""
        self._write(method, self.session.encoder.encode(method, params)[1])

    def _write(self, method: str, frame: bytes) -> None:
        """Write a request frame (either thread; websocket-client serialises sends)."""
        if self.context.replay:
            self.log.info("replay_request_not_sent", method=method)
            return
        transport = self.link.transport
        if transport is None:
            raise LinkClosed("not connected")
        if self.wirelog is not None:
            self.wirelog.write(self.context.clock.now(), "out", frame)
        try:
            transport.send(frame)
        except LinkClosed as exc:
            self.log.warning("send_failed", method=method, error=str(exc))
            raise

    # -- actor: the link's events and the program's, handed to the session ----------------------------
    @handles(LinkUp)
    def on_link_up(self, event: LinkUp) -> None:
        self.generation = event.generation
        self._apply(self.session.link_up(time.monotonic()))

    @handles(LinkDown)
    def on_link_down(self, event: LinkDown) -> None:
        if event.generation == self.generation:
            self._apply(self.session.link_down(event.reason))

    @handles(LinkFailed)
    def on_link_failed(self, event: LinkFailed) -> None:
        raise RuntimeError(f"the Connection's link thread failed: {event.error}")

    @handles(_Answer)
    def on_answer(self, event: _Answer) -> None:
        if event.generation == self.generation:
            self._apply(self.session.answer(event.answer, time.monotonic()))

    @handles(Wake)
    def on_wake(self, _event: Wake) -> None:
        now = time.monotonic()
        self._apply(self.session.tick(now))
        if self.wirelog is not None and now - self._wirelog_flushed_at >= 1.0:
            self._wirelog_flushed_at = now
            self.wirelog.flush()

    @handles(ResubscribeInstrument, RefreshInstruments, DailyRollover, InstrumentState, ReconcilePortfolio,
             SafeShutdown, ConnectionStatusRequest, PlatformState)
    def on_event(self, event: SessionEvent) -> None:
        self._apply(self.session.handle(event, time.monotonic()))

    @handles(PlaceOrder, EditOrder, CancelOrder, CancelAll, CancelByLabel, immediate=True)
    def on_command(self, command: ExchangeCommand) -> None:
        self._apply(self.session.command(command, time.monotonic()))

    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        self.minutes += 1

    @handles(Shutdown)
    def on_shutdown(self, _event: Shutdown) -> None:
        if self.wirelog is not None:
            self.wirelog.flush()

    # -- replay and statistics ---------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        return self.stats.summary(resyncs=self.session.resyncs, minutes=self.minutes)

    @handles(ReplayFinished)
    def on_replay_finished(self, _event: ReplayFinished) -> None:
        self._replay_finished = True
        self.log.info("replay_finished", in_frames=self.stats.in_frames, bad_lines=self.stats.bad_lines,
                      complete=self.stats.complete)

    @handles(GetReplaySummary)
    def on_summary(self, _request: GetReplaySummary) -> dict[str, Any] | None:
        """The replay's counts once the whole log was read and everything the link thread sent this
        actor before the end (minute ticks, answers) was handled; None before that."""
        if not (self.link.done.is_set() and self._replay_finished):
            return None
        return self.stats.replay_summary(resyncs=self.session.resyncs, minutes=self.minutes)

    @handles(GetLinkStats)
    def on_link_stats(self, _request: GetLinkStats) -> dict[str, Any]:
        """The same counts at any time (the link thread may be counting on)."""
        return self._summary()

    @handles(GetShutdownFindings)
    def on_shutdown_findings(self, _request: GetShutdownFindings) -> Findings | None:
        return self.session.shutdown_findings()
