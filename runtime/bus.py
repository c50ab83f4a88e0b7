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
from typing import Any

import pykka

from runtime.actor import immediate_delivery, route_keys

Deliver = Callable[[object], None]


_ALL = object()  # a subscriber that takes every key


class _Keyed:
    """Routes of a type some subscribers take by key: the deliveries for each key, in
    registration order, and those for a key nobody asked for."""

    __slots__ = ("by_key", "default", "key_of")

    def __init__(self, key_of: Callable[[object], object], by_key: dict[object, tuple[Deliver, ...]],
                 default: tuple[Deliver, ...]) -> None:
        self.key_of = key_of
        self.by_key = by_key
        self.default = default


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (ref, its types, (whether it handles a type immediately, its deliverer) or None,
        #          (key functions by type, its key))
        self._members: dict[str, tuple[pykka.ActorRef, tuple[type, ...],
                                       tuple[Callable[[type], bool], Deliver] | None,
                                       tuple[dict[type, Callable[[Any], Any]], Any]]] = {}
        # Concrete message type -> how to deliver it to each subscriber; filled lazily so that a
        # subscription to a base class also receives its subclasses.
        self._routes: dict[type, tuple[Deliver, ...] | _Keyed] = {}
        self._refs: dict[type, tuple[pykka.ActorRef, ...]] = {}

    def register(self, name: str, ref: pykka.ActorRef, types: Iterable[type]) -> None:
        """Route messages of ``types`` (and their subclasses) to ``ref``; replaces any actor
        registered under ``name`` (a restarted actor takes its predecessor's place)."""
        with self._lock:
            self._members[name] = (ref, tuple(types), immediate_delivery(ref), route_keys(ref))
            self._routes = {}
            self._refs = {}

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._members.pop(name, None) is not None:
                self._routes = {}
                self._refs = {}

    def members(self) -> dict[str, tuple[type, ...]]:
        with self._lock:
            return {name: member[1] for name, member in self._members.items()}

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
        if routes.__class__ is _Keyed:
            routes = routes.by_key.get(routes.key_of(message), routes.default)
        for deliver in routes:  # type: ignore[union-attr]
            try:
                deliver(message)
            except pykka.ActorDeadError:
                # Died between routing and telling; the supervisor re-registers its successor.
                pass

    def _route(self, message_type: type) -> tuple[Deliver, ...] | _Keyed:
        with self._lock:
            refs: list[pykka.ActorRef] = []
            delivers: list[tuple[Deliver, object]] = []  # (deliver, the key it takes or _ALL)
            key_of: Callable[[Any], Any] | None = None
            for ref, types, immediate, (route_by, route_key) in self._members.values():
                if not any(issubclass(message_type, t) for t in types):
                    continue
                refs.append(ref)
                deliver = immediate[1] if immediate is not None and immediate[0](message_type) else ref.tell
                member_key_of = route_by.get(message_type)
                if member_key_of is None:
                    delivers.append((deliver, _ALL))
                    continue
                if key_of is not None and member_key_of is not key_of:
                    raise ValueError(f"subscribers of {message_type.__name__} key it in different ways")
                key_of = member_key_of
                delivers.append((deliver, route_key))
            route: tuple[Deliver, ...] | _Keyed
            if key_of is None:
                route = tuple(deliver for deliver, _ in delivers)
            else:
                keys = {key for _, key in delivers if key is not _ALL}
                route = _Keyed(key_of, {key: tuple(d for d, k in delivers if k is _ALL or k == key) for key in keys},
                               tuple(d for d, k in delivers if k is _ALL))
            routes = dict(self._routes)
            routes[message_type] = route
            self._routes = routes
            refs_by_type = dict(self._refs)
            refs_by_type[message_type] = tuple(refs)
            self._refs = refs_by_type
            return routes[message_type]
