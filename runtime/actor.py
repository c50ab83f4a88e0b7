"""The base of every actor: typed dispatch, an injected context, failure reporting.

An actor declares what it handles with ``@handles(MessageType, ...)`` on methods; those types are
its bus subscriptions. It publishes through its context and never holds another actor's ref.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import pykka
import structlog

from runtime.clock import Clock

F = TypeVar("F", bound=Callable[..., Any])


def handles(*message_types: type) -> Callable[[F], F]:
    def mark(method: F) -> F:
        method.__handles__ = message_types  # type: ignore[attr-defined]
        return method

    return mark


@dataclass(frozen=True)
class ActorContext:
    """What the runtime gives an actor: its name, the clock, the settings, a logger, and the
    ways out (publish to the bus, report a failure to the supervisor)."""

    name: str
    clock: Clock
    settings: Any
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, Callable[[Any, Any], Any]] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for message_type in getattr(attr, "__handles__", ()):
                    handlers[message_type] = attr
        cls._handlers = handlers

    def __init__(self, context: ActorContext) -> None:
        super().__init__()
        self.context = context
        self.log = context.log

    @classmethod
    def subscriptions(cls) -> tuple[type, ...]:
        return tuple(cls._handlers)

    def publish(self, message: object) -> None:
        self.context.publish(message)

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(message.__class__)
        if handler is None:
            for message_type, candidate in self._handlers.items():
                if isinstance(message, message_type):
                    handler = candidate
                    break
            else:
                return None
        return handler(self, message)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exception_value is not None:
            text = "".join(traceback.format_exception(exception_type, exception_value, tb))
            self.context.report_failure(self.context.name, exception_value, text)
