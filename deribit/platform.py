"""Which of Deribit's price indices are locked for trading: ``platform_state`` notifications
(``{"price_index": "sol_usdc", "locked": true}``) and ``public/status`` (``locked``: ``"true"``
everywhere, ``"partial"`` with ``locked_indices``, ``"false"``). ``instrument.state`` does not
announce these locks. A locked index means no new order or edit on its instruments; cancels
still go. Each actor that cares keeps its own :class:`PlatformLocks`, fed by the same
:class:`~messages.market.PlatformState` messages.
"""

from __future__ import annotations

import msgspec

from deribit.instruments import family_of
from messages.market import Instrument, PlatformState

#: ``public/status``'s word for "every index is locked".
ALL_LOCKED = "true"


def index_of(currency: str, instrument: Instrument | None = None) -> str:
    """The price index an instrument of ``currency`` trades on: its metadata's ``price_index``
    when listed with one, else the currency's (``btc_usd``; a linear family ``SOL_USDC`` is on
    ``sol_usdc``)."""
    if instrument is not None and instrument.price_index:
        return instrument.price_index
    try:
        return family_of(currency).index_name
    except ValueError:
        return f"{currency.lower()}_usd"


class PlatformStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The result of ``public/status``."""

    locked: str | bool = "false"
    locked_indices: tuple[str, ...] = ()


_status_decoder = msgspec.json.Decoder(PlatformStatus)


def decode_platform_status(raw: bytes | str | msgspec.Raw) -> PlatformStatus:
    return _status_decoder.decode(raw)


def status_request() -> tuple[str, dict[str, object]]:
    return "public/status", {}


class PlatformLocks:
    """The locked indices as the exchange last said them."""

    def __init__(self) -> None:
        self._locked: set[str] = set()
        self._everything = False

    @property
    def locked_indices(self) -> frozenset[str]:
        return frozenset(self._locked)

    @property
    def everything(self) -> bool:
        return self._everything

    def locked(self, index: str) -> bool:
        if not self._locked:  # the hedger asks on every decision: nothing locked costs one test
            return self._everything
        return self._everything or index.lower() in self._locked

    def on_state(self, state: PlatformState) -> bool:
        """Take one notification; True when the locks changed."""
        if state.price_index is None or state.locked is None:
            return False
        index = state.price_index.lower()
        before = index in self._locked
        if state.locked:
            self._locked.add(index)
        else:
            self._locked.discard(index)
        return before != state.locked

    def states_for_status(self, status: PlatformStatus) -> list[PlatformState]:
        """The notifications that bring every holder of locks to what ``public/status`` says
        (after a reconnect, when notifications may have been missed), applied here too."""
        everything = status.locked is True or str(status.locked).lower() == ALL_LOCKED
        now_locked = {i.lower() for i in status.locked_indices}
        out = [PlatformState(price_index=i, locked=True) for i in sorted(now_locked - self._locked)]
        out += [PlatformState(price_index=i, locked=False) for i in sorted(self._locked - now_locked)]
        self._locked = now_locked
        if everything != self._everything:
            self._everything = everything
        return out

    def describe(self) -> str:
        if self._everything:
            return "Deribit has locked trading on every index"
        if not self._locked:
            return ""
        return "Deribit has locked trading on " + ", ".join(sorted(self._locked))

