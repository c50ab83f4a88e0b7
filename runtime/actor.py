"""The base of every actor: typed dispatch, an injected context, failure reporting.

An actor declares what it handles with ``@handles(MessageType, ...)`` on methods; those types are
its bus subscriptions. It publishes through its context and never holds another actor's ref.

Immediate delivery, for the few hops where a thread switch costs more than the work:
``@handles(T, immediate=True)`` has the bus run the handler in the publisher's thread instead of
queueing the message (the BookKeepers' and the Hedger's market data, the Connection's orders).
The message is the same typed, immutable message; only the thread differs. Such an actor
serialises everything it does under its own lock (an RLock held around every handler and
``on_start``), so its state is still touched by one thread at a time; an immediate handler can
run before ``on_start`` (it sees the state built in ``__init__``) and never after the actor
stopped or failed. A failure in an immediate handler is raised again in the actor's own thread,
so the supervisor sees it exactly like any other.

Such an actor never publishes while it holds its lock: what a handler publishes is kept and
goes out, in order, as soon as the handler returns and the lock is released. So no thread ever
holds two actors' locks, and immediate deliveries cannot deadlock however they chain (a
BookKeeper's top of book to the Hedger, the Hedger's order to the Connection, the Connection's
status to the BookKeepers). ``later`` and ``deferred_log`` put work in the same queue: a hot
handler's log lines are written after its messages went out, not before.
"""

from __future__ import annotations

import functools
import threading
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pykka
import structlog

from runtime.clock import Clock

if TYPE_CHECKING:
    from config.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def handles(*message_types: type, immediate: bool = False) -> Callable[[F], F]:
    """Mark a method as the handler of ``message_types``; ``immediate``: run it in the
    publisher's thread (see the module doc)."""

    def mark(method: F) -> F:
        method.__handles__ = message_types  # type: ignore[attr-defined]
        method.__immediate__ = immediate  # type: ignore[attr-defined]
        return method

    return mark


# Live actors by actor_urn: how the bus finds the actor behind a ref.
_actors: weakref.WeakValueDictionary[str, Actor] = weakref.WeakValueDictionary()


def immediate_delivery(ref: pykka.ActorRef) -> tuple[Callable[[type], bool], Callable[[object], None]] | None:
    """(whether ``ref``'s actor handles a message type immediately, the function that delivers
    such messages), or None when it has no immediate handlers."""
    actor = _actors.get(ref.actor_urn)
    if actor is None or not actor._immediate:
        return None
    return actor.handles_immediately, actor.deliver_now


def route_keys(ref: pykka.ActorRef) -> tuple[dict[type, Callable[[Any], Any]], Any]:
    """(how to key each message type ``ref``'s actor takes by key, the key it takes), or
    ``({}, None)``: every message of its types."""
    actor = _actors.get(ref.actor_urn)
    if actor is None or actor.route_key is None:
        return {}, None
    return actor.route_by, actor.route_key


class _ImmediateFailure:
    """An immediate handler raised: the actor's own thread raises it again (pykka's failure path)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Later:
    """A call kept in a handler's outbox, made in order with its messages once the lock is released."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs


class _DeferredLog:
    """A logger whose lines are written once the running handler returned (see ``Actor.later``)."""

    __slots__ = ("_actor", "_log")

    def __init__(self, actor: Actor, log: Any) -> None:
        self._actor = actor
        self._log = log

    def __getattr__(self, level: str) -> Callable[..., None]:
        method = getattr(self._log, level)
        later = self._actor.later
        return lambda *args, **kwargs: later(method, *args, **kwargs)


def _under_state_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """``on_start`` runs holding the state lock: an immediate handler waits until it is done."""

    @functools.wraps(method)
    def locked(self: Actor, *args: Any) -> Any:
        if self._state_lock is None:
            return method(self, *args)
        return self._locked(method, self, *args)

    locked.__state_locked__ = True  # type: ignore[attr-defined]
    return locked


def _after_state_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """``on_stop`` and ``on_failure`` run once any immediate handler still running has returned
    (pykka marks the actor stopped before calling them, so none starts after); they do not hold
    the lock, so that they may wait for a thread that is itself waiting for it."""

    @functools.wraps(method)
    def after(self: Actor, *args: Any) -> Any:
        lock = self._state_lock
        if lock is not None:
            with lock:
                pass
        return method(self, *args)

    after.__state_locked__ = True  # type: ignore[attr-defined]
    return after


@dataclass(frozen=True)
class ActorContext:
    """What the runtime gives an actor: its name, the clock, the settings, a logger, and the
    ways out (publish to the bus, report a failure to the supervisor)."""

    name: str
    clock: Clock
    settings: Settings
    publish: Callable[[object], None]
    report_failure: Callable[[str, BaseException, str], None] = field(default=lambda *_: None)
    # In replay the actor that reads the log moves time forward (clock and schedule) from its
    # own thread, so that ticks and data stay in log order; live it is a no-op.
    advance_time: Callable[[float], None] = field(default=lambda _t: None)
    replay: bool = False
    # Blocks until every actor of the program is started and on the bus (True), or the timeout
    # passes (False). A producer thread waits on it so nothing it publishes goes unheard.
    wait_started: Callable[[float], bool] = field(default=lambda _timeout: True)

    @property
    def log(self) -> Any:
        return structlog.get_logger(actor=self.name)


class Actor(pykka.ThreadingActor):
    _handlers: ClassVar[dict[type, Callable[[Any, Any], Any]]] = {}
    _immediate: ClassVar[tuple[type, ...]] = ()
    #: Message types this actor takes only when their key (the function's result) equals its
    #: ``route_key``; the bus skips it for the others (a BookKeeper hears only its family).
    route_by: ClassVar[dict[type, Callable[[Any], Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, Callable[[Any, Any], Any]] = {}
        immediate: dict[type, bool] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for message_type in getattr(attr, "__handles__", ()):
                    handlers[message_type] = attr
                    immediate[message_type] = bool(getattr(attr, "__immediate__", False))
        cls._handlers = handlers
        cls._immediate = tuple(t for t, now in immediate.items() if now)
        # The lifecycle hooks keep immediate handlers out (a no-op for actors without a lock).
        for hook, wrap in (("on_start", _under_state_lock), ("on_stop", _after_state_lock),
                           ("on_failure", _after_state_lock)):
            method = cls.__dict__.get(hook)
            if method is not None and not getattr(method, "__state_locked__", False):
                setattr(cls, hook, wrap(method))

    def __init__(self, context: ActorContext) -> None:
        super().__init__()
        self.context = context
        # Named for the actor's module: otherwise the name is that of the first caller, which for
        # a line written after its handler returned (``later``) is this module.
        self.log = structlog.get_logger(type(self).__module__, actor=context.name)
        # Only an actor with immediate handlers has other threads in it: only it pays for a lock.
        self._state_lock: threading.RLock | None = threading.RLock() if self._immediate else None
        # Per thread: what the handler running in it has published so far (None: no handler).
        self._outbox: threading.local | None = threading.local() if self._immediate else None
        self._failed_immediately = False
        self._failure: Exception | None = None  # what an immediate handler raised
        self.route_key: Any = None  # see route_by; None: every message of its types
        _actors[self.actor_urn] = self

    @classmethod
    def subscriptions(cls) -> tuple[type, ...]:
        return tuple(cls._handlers)

    @classmethod
    def immediate_subscriptions(cls) -> tuple[type, ...]:
        return cls._immediate

    @classmethod
    def _handler_of(cls, message_type: type) -> Callable[[Any, Any], Any] | None:
        """The handler a message of ``message_type`` gets: its own type's, else the first
        registered for a base class of it."""
        handler = cls._handlers.get(message_type)
        if handler is None:
            for handled, candidate in cls._handlers.items():
                if issubclass(message_type, handled):
                    return candidate
        return handler

    @classmethod
    def handles_immediately(cls, message_type: type) -> bool:
        """Whether the handler that ``message_type`` gets runs in the publisher's thread."""
        handler = cls._handler_of(message_type)
        return handler is not None and bool(getattr(handler, "__immediate__", False))

    def publish(self, message: object) -> None:
        outbox = self._outbox
        if outbox is not None:
            held = getattr(outbox, "messages", None)
            if held is not None:  # inside a handler, holding the lock: out when it returns
                held.append(message)
                return
        self.context.publish(message)

    def later(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``function`` once the running handler returned and its messages went out (now,
        outside a handler or in an actor without immediate handlers)."""
        outbox = self._outbox
        if outbox is not None:
            held = getattr(outbox, "messages", None)
            if held is not None:
                held.append(_Later(function, args, kwargs))
                return
        function(*args, **kwargs)

    def later_locked(self, function: Callable[..., Any], *args: Any) -> None:
        """As :meth:`later`, with the state lock held again for the call (for work on the
        actor's state that can wait until the running handler's messages went out)."""
        if self._state_lock is None:
            self.later(function, *args)
        else:
            self.later(self._locked, function, *args)

    @property
    def deferred_log(self) -> Any:
        """``self.log`` whose lines are written after the running handler's messages went out."""
        return _DeferredLog(self, self.log)

    def _locked(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` holding the state lock; what it publishes goes out after."""
        lock = self._state_lock
        outbox = self._outbox
        assert lock is not None and outbox is not None
        if getattr(outbox, "messages", None) is not None:  # re-entered: the outer call sends
            with lock:
                return function(*args)
        held: list[object] = []
        outbox.messages = held
        try:
            with lock:
                return function(*args)
        finally:
            outbox.messages = None
            if held:
                self._send_held(held)

    def _send_held(self, held: list[object]) -> None:
        """What a handler published and deferred, in order, now that it returned. A deferred
        call that raises fails this actor, not the thread that delivered to it (the link
        thread, for market data)."""
        publish = self.context.publish
        for message in held:
            if message.__class__ is _Later:
                try:
                    message.function(*message.args, **message.kwargs)
                except Exception as exc:
                    self._fail_immediately(exc)
                    return  # the rest was decided by what just failed
            else:
                publish(message)

    def _handler_for(self, message: Any) -> Callable[[Any, Any], Any] | None:
        handler = self._handlers.get(message.__class__)
        if handler is None:
            return self._handler_of(message.__class__)
        return handler

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is _ImmediateFailure:
            raise message.error
        if self._failure is not None:
            # Failed in another thread: the failure is raised at the next message, which is
            # not handled on state the failure may have left half-changed.
            raise self._failure
        handler = self._handler_for(message)
        lock = self._state_lock
        if handler is None:
            if lock is not None:
                with lock:  # a barrier (Supervisor.drain) waits for a running immediate handler
                    pass
            return None
        if lock is None:
            return handler(self, message)
        return self._locked(handler, self, message)

    def deliver_now(self, message: Any) -> None:
        """Handle ``message`` in the caller's thread (the bus calls this for immediate types).

        What ``_locked`` and a handler call do, written out: this is on the path from a frame
        to an order, where every call is paid for."""
        handler = self._handlers.get(message.__class__) or self._handler_of(message.__class__)
        lock = self._state_lock
        outbox = self._outbox
        if handler is None or lock is None or outbox is None:
            return
        outermost = getattr(outbox, "messages", None) is None  # else re-entered: the outer call sends
        if outermost:
            held: list[object] = []
            outbox.messages = held
        try:
            with lock:
                # A stopped or failed actor handles nothing, as a dead ref would not.
                if not self._failed_immediately and not self.actor_stopped.is_set():
                    try:
                        handler(self, message)
                    except Exception as exc:
                        self._fail_immediately(exc)
        finally:
            if outermost:
                outbox.messages = None
                if held:
                    self._send_held(held)

    def _fail_immediately(self, exc: Exception) -> None:
        if self._failed_immediately:
            return
        self._failed_immediately = True
        self._failure = exc
        # The actor's own thread raises it: pykka logs it, stops the actor and calls on_failure
        # there, which reports to the supervisor as for any other failure.
        try:
            self.actor_ref.tell(_ImmediateFailure(exc))
        except pykka.ActorDeadError:  # stopped meanwhile: nothing left to restart
            self.log.error("immediate_handler_failed_while_stopping", error=f"{type(exc).__name__}: {exc}")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exception_value is not None:
            text = "".join(traceback.format_exception(exception_type, exception_value, tb))
            self.context.report_failure(self.context.name, exception_value, text)

    on_failure = _after_state_lock(on_failure)
