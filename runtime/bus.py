"""Publish by message type to the actors subscribed to that type.

Routing tables are immutable tuples swapped under a lock on (un)registration, so ``publish``
takes no lock: one dict lookup and one call per subscriber, a ``tell`` (queued for the actor's
thread) or, for the types an actor handles immediately (``@handles(T, immediate=True)``), its
handler run in the publisher's thread. Each publisher's messages reach each subscriber in the
order published (pykka inboxes are FIFO queues; immediate handlers run as they are published).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import pykka

from runtime.actor import immediate_delivery

Deliver = Callable[[object], None]


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (ref, its types, (whether it handles a type immediately, its deliverer) or None)
        self._members: dict[str, tuple[pykka.ActorRef, tuple[type, ...],
                                       tuple[Callable[[type], bool], Deliver] | None]] = {}
        # Concrete message type -> how to deliver it to each subscriber; filled lazily so that a
        # subscription to a base class also receives its subclasses.
        self._routes: dict[type, tuple[Deliver, ...]] = {}
        self._refs: dict[type, tuple[pykka.ActorRef, ...]] = {}

    def register(self, name: str, ref: pykka.ActorRef, types: Iterable[type]) -> None:
        """Route messages of ``types`` (and their subclasses) to ``ref``; replaces any actor
        registered under ``name`` (a restarted actor takes its predecessor's place)."""
        with self._lock:
            self._members[name] = (ref, tuple(types), immediate_delivery(ref))
            self._routes = {}
            self._refs = {}

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._members.pop(name, None) is not None:
                self._routes = {}
                self._refs = {}

    def members(self) -> dict[str, tuple[type, ...]]:
        with self._lock:
            return {name: types for name, (_, types, _now) in self._members.items()}

    def subscribers(self, message_type: type) -> tuple[pykka.ActorRef, ...]:
        refs = self._refs.get(message_type)
        if refs is None:
            self._route(message_type)
            refs = self._refs[message_type]
        return refs

    def publish(self, message: object) -> None:
        routes = self._routes.get(message.__class__)
        if routes is None:
            routes = self._route(message.__class__)
        for deliver in routes:
            try:
                deliver(message)
            except pykka.ActorDeadError:
                # Died between routing and telling; the supervisor re-registers its successor.
                pass

    def _route(self, message_type: type) -> tuple[Deliver, ...]:
        with self._lock:
            refs: list[pykka.ActorRef] = []
            delivers: list[Deliver] = []
            for ref, types, immediate in self._members.values():
                if not any(issubclass(message_type, t) for t in types):
                    continue
                refs.append(ref)
                if immediate is not None and immediate[0](message_type):
                    delivers.append(immediate[1])
                else:
                    delivers.append(ref.tell)
            routes = dict(self._routes)
            routes[message_type] = tuple(delivers)
            self._routes = routes
            refs_by_type = dict(self._refs)
            refs_by_type[message_type] = tuple(refs)
            self._refs = refs_by_type
            return routes[message_type]
