"""System messages: time, lifecycle and connection status."""

from __future__ import annotations

import enum

from messages.base import Message


class MinuteTick(Message, frozen=True, kw_only=True):
    """A full UTC minute has passed. ``at`` is the boundary (unix seconds, multiple of 60):
    state sampled on this tick is the state as of ``at``."""

    at: float


class DailyRollover(Message, frozen=True, kw_only=True):
    """The daily instrument rollover time (08:00 UTC by default) was reached.

    ``at`` is the rollover instant (unix seconds); ``day`` its UTC date, ``YYYY-MM-DD``."""

    at: float
    day: str


class ActorFailed(Message, frozen=True, kw_only=True):
    """An actor raised while handling a message and was stopped; the supervisor restarts it."""

    actor: str
    error: str
    traceback: str = ""
    at: float = 0.0


class SafeShutdown(Message, frozen=True, kw_only=True):
    """Stop trading now: hedging off, open orders cancelled; the program is about to exit."""

    reason: str
    at: float = 0.0


class Shutdown(Message, frozen=True, kw_only=True):
    """The program is stopping cleanly: flush what must be flushed."""

    reason: str = "stop requested"
    at: float = 0.0


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTHENTICATED = "authenticated"
    SUBSCRIBED = "subscribed"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


class ConnectionStatus(Message, frozen=True, kw_only=True):
    """The link to the exchange changed state.

    ``can_trade`` is true only when the link is up, authenticated and subscribed; no actor may
    send an order otherwise. ``detail`` says why (an error text, a reconnect attempt)."""

    state: ConnectionState
    venue: str
    at: float
    authenticated: bool = False
    can_trade: bool = False
    attempt: int = 0
    detail: str = ""


class ExitStatus(enum.IntEnum):
    """The program's exit status (the README's table, ``main.py --help``)."""

    OK = 0  # a clean session
    FAILED = 1  # a piped session with refused or rejected lines, an unreachable venue, a fatal failure
    USAGE = 2  # bad settings or arguments (an unlisted --instrument among them)


class StopRequested(Message, frozen=True, kw_only=True):
    """Ask the supervisor to stop the program cleanly (the console's quit, the end of piped
    input); ``status``: the exit status the session ends with."""

    reason: str
    origin: str = ""
    status: ExitStatus = ExitStatus.OK


class ConnectionStatusRequest(Message, frozen=True, kw_only=True):
    """Ask the Connection to publish its current ConnectionStatus again (an actor that was
    restarted missed the last one)."""

    origin: str


class WarmUp(Message, frozen=True, kw_only=True):
    """The link has been idle for ``deribit.warm_up_ms``: run the path from a frame to an order
    again without its effects (decide, build the order, drop it; publish, log, number nothing),
    so that its code and data are in the CPU's caches when the next frame comes.

    Published by the Connection's link thread every ``warm_up_ms`` while no frame comes; take
    it only with an immediate handler (``@handles(WarmUp, immediate=True)``), so that it runs in
    that thread, on its core, and never queues."""
