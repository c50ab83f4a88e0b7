"""Real Deribit messages from public sources (``tests/fixtures/public``): the loader, and the wire log
of the notifications among them.

Each file is ``<kind>/<name>.json`` holding ``{"source", "kind", "frame"}``: the whole JSON-RPC frame
as Deribit sent it (a notification or an answer) and where it was found (``SOURCES.md`` lists them
all). Kinds are named for what the frame is: ``book_snapshot``, ``ticker_option``, ``user_changes``,
``get_positions``, ``error``, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

PUBLIC_DIR = REPO / "tests" / "fixtures" / "public"
WIRE_PUBLIC = PUBLIC_DIR / "wire-public.jsonl"

#: Kinds whose frames are subscription notifications of channels the desk reads: the wire log's.
NOTIFICATION_KINDS: tuple[str, ...] = (
    "book_snapshot",
    "book_change",
    "ticker_option",
    "ticker_future",
    "ticker_perpetual",
    "ticker_expired",
    "quote",
    "trades",
    "price_index",
    "instrument_state",
    "user_orders",
    "user_trades",
    "user_portfolio",
    "user_changes",
    "platform_state",
    "volatility_index",
    "markprice_options",
)
#: Kinds whose frames are answers to requests.
ANSWER_KINDS: tuple[str, ...] = (
    "get_instruments",
    "get_positions",
    "get_open_orders",
    "get_account_summary",
    "order_result",
    "cancel_result",
    "settlement_history",
    "subscribe_result",
    "error",
)
#: Every kind of the corpus (tests/fixtures/public/<kind>/).
CORPUS_KINDS: tuple[str, ...] = NOTIFICATION_KINDS + ANSWER_KINDS
#: When the wire log starts (2021-07-22 22:42 UTC, the hour of the shared capture): no rollover or
#: minute boundary falls between its frames but the ones it crosses in its own seconds.
WIRE_START_T = 1_626_993_720.0


@dataclass(frozen=True)
class PublicMessage:
    """One real message: the file it is in, where it came from, its kind and the whole frame."""

    path: Path
    source: str
    kind: str
    frame: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.path.stem}"

    @property
    def text(self) -> str:
        """The frame as JSON text (what a socket would carry)."""
        return json.dumps(self.frame, separators=(",", ":"))


@cache
def _all_messages() -> tuple[PublicMessage, ...]:
    messages = []
    for path in sorted(PUBLIC_DIR.glob("*/*.json")):
        record = json.loads(path.read_text())
        if record.get("kind") != path.parent.name or not isinstance(record.get("frame"), dict):
            raise ValueError(f"{path}: kind must be its folder's name and frame a JSON object")
        messages.append(PublicMessage(path=path, source=str(record["source"]), kind=record["kind"],
                                      frame=record["frame"]))
    return tuple(messages)


def public_messages(kind: str | None = None) -> list[PublicMessage]:
    """Every message of the corpus (sorted by kind and file name), or those of ``kind``."""
    return [m for m in _all_messages() if kind is None or m.kind == kind]


def public_kinds() -> list[str]:
    return sorted({m.kind for m in _all_messages()})


def wire_log_lines(start_t: float = WIRE_START_T) -> list[str]:
    """The wire log of every notification of the corpus the desk reads, in :data:`NOTIFICATION_KINDS`
    order, one second apart after an ``open`` (DESIGN.md, "Time and replay")."""
    lines = [json.dumps({"t": start_t, "dir": "open"})]
    t = start_t
    for kind in NOTIFICATION_KINDS:
        for message in public_messages(kind):
            t += 1.0
            lines.append(json.dumps({"t": t, "dir": "in", "frame": message.text}))
    return lines
