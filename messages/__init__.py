"""The project's vocabulary: every message that crosses between actors.

Each message is a frozen, keyword-only ``msgspec.Struct`` (see :class:`messages.base.Message`);
containers inside are tuples so that no receiver can mutate what another actor holds.
"""

from messages.base import Message
from messages.system import (
    ActorFailed,
    ConnectionState,
    ConnectionStatus,
    DailyRollover,
    MinuteTick,
    SafeShutdown,
    Shutdown,
)

__all__ = [
    "ActorFailed",
    "ConnectionState",
    "ConnectionStatus",
    "DailyRollover",
    "Message",
    "MinuteTick",
    "SafeShutdown",
    "Shutdown",
]
