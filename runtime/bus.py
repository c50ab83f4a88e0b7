"""Publish by message type to the actors subscribed to that type.

Routing tables are immutable tuples swapped under a lock on (un)registration, so ``publish``
takes no lock: one dict lookup and one ``tell`` per subscriber. Each publisher's messages reach
each subscriber in the order published (pykka inboxes are FIFO queues).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pykka


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, tuple[pykka.ActorRef, tuple[type, ...]]] = {}
        # Concrete message type -> subscriber refs; filled lazily so that a subscription to a
        # base class also receives its subclasses.
        self._routes: dict[type, tuple[pykka.ActorRef, ...]] = {}

    def register(self, name: str, ref: pykka.ActorRef, types: Iterable[type]) -> None:
        """Route messages of ``types`` (and their subclasses) to ``ref``; replaces any actor
        registered under ``name`` (a restarted actor takes its predecessor's place)."""
        with self._lock:
            self._members[name] = (ref, tuple(types))
            self._routes = {}

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._members.pop(name, None) is not None:
                self._routes = {}

    def members(self) -> dict[str, tuple[type, ...]]:
        with self._lock:
            return {name: types for name, (_, types) in self._members.items()}

    def subscribers(self, message_type: type) -> tuple[pykka.ActorRef, ...]:
        routes = self._routes.get(message_type)
        if routes is None:
            routes = self._route(message_type)
        return routes

    def publish(self, message: object) -> None:
        routes = self._routes.get(message.__class__)
        if routes is None:
            routes = self._route(message.__class__)
        for ref in routes:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                # Died between routing and telling; the supervisor re-registers its successor.
                pass

    def _route(self, message_type: type) -> tuple[pykka.ActorRef, ...]:
        with self._lock:
            refs = tuple(
                ref
                for ref, types in self._members.values()
                if any(issubclass(message_type, t) for t in types)
            )
            routes = dict(self._routes)
            routes[message_type] = refs
            self._routes = routes
            return refs
