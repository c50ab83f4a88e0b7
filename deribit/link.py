"""The link thread's loops: the socket's receiving side, or a wire log in replay.

:class:`LinkLoop` runs in a thread of its owner's (the Connection's link thread). Live, it
connects and reconnects with backoff, reads frames until the link fails, goes quiet or is
stopped, probes a quiet link and declares it dead after two heartbeat intervals of silence,
warms an idle link up and wakes its owner at a steady pace. In replay it reads a wire log,
moves the replay clock to each record's time and paces the records as asked. Each frame goes to
the owner's ``on_frame`` as it comes (the hot path: decoding and publishing are the owner's);
the link's events go to the owner's ``tell`` as the messages below.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from deribit import channels as ch
from deribit.session import Logger
from deribit.transport import LinkClosed, Transport
from messages.system import ConnectionState, ConnectionStatus
from runtime.throttle import Backoff
from runtime.wirelog import BadLine, WireLogWriter, scan_wire_log

#: How often the link thread wakes its owner (timers: batches, retries, timeouts, refresh).
WAKE_EVERY_S = 0.1
#: How long recv blocks; bounds how fast the link thread notices a stop.
RECV_SLICE_S = 0.2
#: The most of an idle link's time its warm-ups may take.
WARM_UP_SHARE = 0.05
#: How many bad lines a replay's summary names (the first by line number; all are counted).
BAD_LINES_NAMED = 100
#: The longest single wait of a paced replay (bounds how fast it notices a stop).
REPLAY_WAIT_SLICE_S = 0.5


# -- what the link thread tells its owner -----------------------------------------------------------
class LinkUp(msgspec.Struct, frozen=True):
    generation: int


class LinkDown(msgspec.Struct, frozen=True):
    generation: int
    reason: str


class LinkFailed(msgspec.Struct, frozen=True):
    error: str


class Wake(msgspec.Struct, frozen=True):
    pass


class ReplayFinished(msgspec.Struct, frozen=True):
    pass


@dataclass
class LinkStats:
    """What the link thread saw. Counted per channel (cheap on the hot path), summed per
    channel family when reported."""

    in_frames: int = 0
    channels: collections.Counter[str] = field(default_factory=collections.Counter)
    responses: int = 0
    errors: int = 0
    malformed: int = 0
    # A replay's: the wire log's bad lines (counted; the first BAD_LINES_NAMED by number kept), whether
    # it was read to its end, and what ended it early.
    bad_lines: int = 0
    first_bad_lines: list[BadLine] = field(default_factory=list)
    complete: bool = True
    failure: str | None = None

    def bad_line(self, bad: BadLine) -> None:
        self.bad_lines += 1
        bisect.insort(self.first_bad_lines, bad, key=lambda b: b.line)
        del self.first_bad_lines[BAD_LINES_NAMED:]

    def notifications(self) -> dict[str, int]:
        by_prefix: collections.Counter[str] = collections.Counter()
        for channel, count in list(self.channels.items()):
            by_prefix[ch.channel_prefix(channel)] += count
        return dict(sorted(by_prefix.items()))

    def summary(self, *, resyncs: int, minutes: int) -> dict[str, Any]:
        """The counts a replay's summary (and the link's stats) report."""
        return {"in_frames": self.in_frames, "notifications": self.notifications(), "responses": self.responses,
                "errors": self.errors + self.malformed + self.bad_lines, "malformed": self.malformed,
                "resyncs": resyncs, "minutes": minutes}

    def replay_summary(self, *, resyncs: int, minutes: int) -> dict[str, Any]:
        """A replay's summary: the counts, the wire log's bad lines (``first_bad_lines``: line and
        reason, by line number) and whether the whole log was read (``complete``; ``failure``: why not)."""
        return {**self.summary(resyncs=resyncs, minutes=minutes), "bad_lines": self.bad_lines,
                "first_bad_lines": [{"line": b.line, "reason": b.reason} for b in self.first_bad_lines],
                "complete": self.complete, **({"failure": self.failure} if self.failure is not None else {})}


class LinkOwner(Protocol):
    """What the loop needs of whoever runs it."""

    def on_frame(self, frame: str | bytes, generation: int) -> None:
        """One frame of link ``generation`` (the hot path)."""

    def tell(self, message: object) -> bool:
        """Hand ``message`` to the owner; False once it is gone (the loop ends)."""

    def publish(self, message: object) -> None:
        """Put ``message`` on the bus from this thread (in order with the data)."""

    def link_status(self, state: ConnectionState, attempt: int, detail: str = "") -> None:
        """Say the link's state (connecting, connected, disconnected) at connection ``attempt``."""

    def warm_up(self, transport: Transport) -> bool:
        """The link is idle: warm the path from a frame to an order up; False: it failed, stop."""

    def send_now(self, method: str, params: dict[str, Any]) -> None:
        """Write a request of the link's own (a probe); raises LinkClosed."""


class LinkLoop:
    """The link thread's work (see the module's docstring). ``transport`` is the link's current
    transport (None before the first), ``attempt`` the connection attempt since the link was
    last healthy, ``done`` set once the loop ended."""

    def __init__(self, owner: LinkOwner, *, closing: threading.Event, log: Logger, clock: Callable[[], float],
                 wirelog: WireLogWriter | None, stats: LinkStats) -> None:
        self.owner = owner
        self.closing = closing
        self.log = log
        self.clock = clock
        self.wirelog = wirelog
        self.stats = stats
        self.transport: Transport | None = None
        self.attempt = 0
        self.warm_up_s = 0.0  # 0: no warm-ups (off, or one failed: off until the owner restarts)
        self.done = threading.Event()

    def run(self, url: str, connect: Callable[[str], Transport], backoff: Backoff, *, heartbeat_s: float,
            healthy_after_s: float, warm_up_s: float) -> None:
        """Connect, read until the link closes, reconnect after a backoff; until ``closing``."""
        log, owner, closing = self.log, self.owner, self.closing
        self.warm_up_s = warm_up_s
        generation = 0
        try:
            while not closing.is_set():
                self.attempt += 1
                owner.link_status(ConnectionState.CONNECTING, self.attempt)
                transport = self.transport = connect(url)
                try:
                    transport.connect()
                except LinkClosed as exc:
                    delay = backoff.next_delay()
                    # A warning once per run of failures (the console says what to check); the
                    # attempts after it are in the JSON log, not printed again and again.
                    (log.warning if self.attempt == 1 else log.info)(
                        "connect_failed", error=str(exc), retry_in_s=round(delay, 2), attempt=self.attempt)
                    owner.link_status(ConnectionState.DISCONNECTED, self.attempt,
                                      f"{exc}; retrying in {delay:.1f} s")
                    closing.wait(delay)
                    continue
                generation += 1
                connected_at = time.monotonic()
                if self.wirelog is not None:
                    self.wirelog.write(self.clock(), "open")
                log.info("connected", url=url, attempt=self.attempt)
                owner.link_status(ConnectionState.CONNECTED, self.attempt)
                if not owner.tell(LinkUp(generation)):
                    transport.close()
                    break
                try:
                    reason = self._receive_until_closed(transport, generation, heartbeat_s)
                except LinkClosed as exc:
                    reason = str(exc)
                transport.close()
                if self.wirelog is not None:
                    self.wirelog.write(self.clock(), "close")
                if closing.is_set():
                    break
                if time.monotonic() - connected_at >= healthy_after_s:
                    backoff.reset()
                    self.attempt = 0
                delay = backoff.next_delay()
                log.warning("disconnected", reason=reason, retry_in_s=round(delay, 2))
                owner.link_status(ConnectionState.DISCONNECTED, self.attempt,
                                  f"{reason}; reconnecting in {delay:.1f} s")
                if not owner.tell(LinkDown(generation, reason)):
                    break
                closing.wait(delay)
        except Exception as exc:  # a bug, not a link problem: let the supervisor restart the owner
            log.exception("link_thread_failed", error=f"{type(exc).__name__}: {exc}")
            owner.tell(LinkFailed(f"{type(exc).__name__}: {exc}"))
        finally:
            self.done.set()

    def _receive_until_closed(self, transport: Transport, generation: int, heartbeat_s: float) -> str:
        """Read frames until the link fails, goes silent or the owner stops; returns why.

        Deribit heartbeats at no less than 10 s; to notice a dead link sooner (heartbeat_s may be
        lower), a link quiet for heartbeat_s is probed with ``public/test``, and one that stays
        silent for two heartbeat intervals is dead. An idle link is warmed up every ``warm_up_s``."""
        probe_after = heartbeat_s
        dead_after = 2.0 * probe_after
        last_frame = last_wake = last_probe = time.monotonic()
        recv = transport.recv
        owner = self.owner
        on_frame = owner.on_frame
        closing = self.closing
        warm_up_next = 0.0
        while not closing.is_set():
            warm_up_s = self.warm_up_s
            frame = recv(min(warm_up_s, RECV_SLICE_S) if warm_up_s else RECV_SLICE_S)
            now = time.monotonic()
            if frame is not None:
                last_frame = now
                on_frame(frame, generation)
            else:
                if warm_up_s and now >= warm_up_next:
                    if not owner.warm_up(transport):
                        self.warm_up_s = 0.0
                    # At most WARM_UP_SHARE of the link thread's idle time: the decision grows with
                    # the options held (about 0.5 ms for 200), its cost with it.
                    warm_up_next = now + (time.monotonic() - now) / WARM_UP_SHARE
                silent = now - last_frame
                if silent > dead_after:
                    return f"no frame for {silent:.1f} s (two heartbeat intervals): link dead"
                if silent > probe_after and now - last_probe > probe_after:
                    last_probe = now
                    owner.send_now("public/test", {})
            if now - last_wake >= WAKE_EVERY_S:
                last_wake = now
                if not owner.tell(Wake()):
                    break
        return "stopped"

    def replay(self, path: str, speed: float | None, advance_time: Callable[[float], None], *,
               max_jump_s: float, strict: bool = False) -> None:
        """Read the wire log at ``path`` as the link (``speed``: times real time; None: at once).

        A bad line (see :func:`runtime.wirelog.scan_wire_log`; ``max_jump_s`` bounds a time's jump)
        is counted, logged and skipped, and the rest replayed; with ``strict`` the replay ends at
        the first. Only good records move the clock, so the minute schedule covers the log's real
        span and no more."""
        owner, stats, closing = self.owner, self.stats, self.closing
        first_t: float | None = None
        started = time.monotonic()
        generation = 0
        try:
            for record in scan_wire_log(path, max_jump_s=max_jump_s):
                if closing.is_set():
                    stats.complete = False
                    stats.failure = "stopped"
                    break
                if isinstance(record, BadLine):
                    stats.bad_line(record)
                    if stats.bad_lines <= BAD_LINES_NAMED:  # a log of bad lines makes no log of its size
                        self.log.info("replay_bad_line", line=record.line, reason=record.reason)
                    if strict:
                        stats.complete = False
                        stats.failure = f"line {record.line} is bad (--strict: the replay stops at the first)"
                        break
                    continue
                t = record.t
                if speed:
                    if first_t is None:
                        first_t = t
                    while (delay := started + (t - first_t) / speed - time.monotonic()) > 0:
                        if closing.wait(min(delay, REPLAY_WAIT_SLICE_S)):
                            break
                advance_time(t)
                direction = record.dir
                if direction == "in" and record.frame is not None:
                    owner.on_frame(record.frame, generation)
                elif direction == "open":
                    generation += 1
                    owner.publish(ConnectionStatus(state=ConnectionState.CONNECTED, venue="replay", at=t))
                    owner.tell(LinkUp(generation))
                elif direction == "close":
                    owner.publish(ConnectionStatus(state=ConnectionState.DISCONNECTED, venue="replay", at=t,
                                                   detail="closed in the log"))
                    owner.tell(LinkDown(generation, "closed in the log"))
        except Exception as exc:  # the file could not be read on (or a bug): say so, and end the replay
            self.log.error("replay_failed", error=f"{type(exc).__name__}: {exc}")
            stats.errors += 1
            stats.complete = False
            stats.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()
            owner.tell(ReplayFinished())
