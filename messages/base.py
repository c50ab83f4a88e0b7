"""The base of every message type."""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A typed, immutable message. Subclasses inherit ``frozen`` and ``kw_only``.

    Containers in fields must be tuples (or other immutable values) so a message can be
    shared between threads and hashed.
    """
