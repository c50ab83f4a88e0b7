"""Hedger controls (from the Console) and the Hedger's status."""

from __future__ import annotations

from typing import Literal

from messages.base import Message


class HedgerControl(Message, frozen=True, kw_only=True):
    """Switch delta hedging on or off, or ask for its status (answered with HedgerStatus).

    ``currency`` empty: every configured currency."""

    action: Literal["activate", "deactivate", "status"]
    origin: str
    request_key: str = ""
    currency: str = ""


class SetHedgeBand(Message, frozen=True, kw_only=True):
    """Change the rehedge band live (the FMZ strategy's ``setHedgeDeltaStep``): rehedge when
    |options delta + hedge delta| exceeds ``max_delta_mismatch`` coins."""

    max_delta_mismatch: float
    origin: str
    request_key: str = ""
    currency: str = ""


class HedgerStatus(Message, frozen=True, kw_only=True):
    """The Hedger's state for one currency, published on every change and on request.

    Deltas in coin; ``mismatch`` = ``options_delta + hedge_delta``; ``message`` a readable line
    for the console (e.g. why hedging is paused or was switched off)."""

    currency: str
    active: bool
    instrument: str
    mode: str
    band: float
    at: float
    options_delta: float | None = None
    hedge_delta: float | None = None
    mismatch: float | None = None
    in_flight: bool = False
    orders_today: int = 0
    volume_today: float = 0.0
    last_reason: str = ""
    # The short key of last_reason (within_band, trade, cooldown, rate_limit, stale_ticker, ...).
    code: str = ""
    message: str = ""
    request_key: str = ""
    # The order in flight's phase (idle, sent, resting, amending, settling, unknown) and label.
    phase: str = "idle"
    order_label: str = ""
    delta_source: str = ""
