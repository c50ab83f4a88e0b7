"""Hedger controls (from the Console) and the Hedger's status."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

from messages.base import Message
from messages.market import DataFault


# String enums: msgspec encodes them by value, and they compare equal to (and format as) their
# value, so logs, the console and anything reading the strings see what they saw before.
class HedgeMode(StrEnum):
    """What the hedge balances: the options against the hedge instrument, or against every future."""

    OPTIONS_VS_HEDGE = "options_vs_hedge"
    NET = "net"


class HedgePhase(StrEnum):
    """Where a hedger's order stands; ``IDLE`` when it has none."""

    IDLE = "idle"
    SENT = "sent"  # placed, no answer yet
    RESTING = "resting"  # a limit order open on the book
    AMENDING = "amending"  # an edit or cancel of the resting order awaits its answer
    SETTLING = "settling"  # closed with a fill: waiting for the Portfolio to show it
    UNKNOWN = "unknown"  # the answer was lost: waiting for the exchange's picture


class HedgeCode(StrEnum):
    """The short, stable key of why a hedger does what it does (``HedgerStatus.code``)."""

    NONE = ""  # nothing said yet (or since hedging was activated)
    # The decision (desk.hedge_decision.decide).
    TRADE = "trade"
    WITHIN_BAND = "within_band"
    BELOW_CONTRACT = "below_contract"
    NO_TICKER = "no_ticker"
    STALE_TICKER = "stale_ticker"
    NO_OPTION_DELTA = "no_option_delta"
    NO_FUTURE_PRICE = "no_future_price"
    NO_HEDGE_QUOTE = "no_hedge_quote"
    HEDGE_BOOK_STALE = "hedge_book_stale"
    STALE_HEDGE_QUOTE = "stale_hedge_quote"
    NO_HEDGE_PRICE = "no_hedge_price"
    NO_CONTRACT_SIZE = "no_contract_size"
    IMPLAUSIBLE_DATA = "implausible_data"  # HedgerStatus.fault says what
    ORDER_TOO_LARGE = "order_too_large"
    # The gates checked before deciding.
    DISCONNECTED = "disconnected"
    PLATFORM_LOCKED = "platform_locked"  # Deribit locked trading on the hedge instrument's index
    NO_PORTFOLIO = "no_portfolio"
    UNRECONCILED = "unreconciled"
    NOT_LISTED = "not_listed"
    NO_INDEX = "no_index"
    RECONCILING = "reconciling"
    ORPHAN_ORDERS = "orphan_orders"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"
    DAILY_VOLUME = "daily_volume"
    REVERSAL_PAUSE = "reversal_pause"  # a small order against the last one, held a moment


class HedgeActivation(StrEnum):
    """Whether a hedger hedges: off, waiting for the trader to confirm the plan it stated on
    activation (nothing is sent meanwhile), or on."""

    OFF = "off"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    ACTIVE = "active"


class HedgePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a hedger states on activation: the order it would send first (``side`` None: none
    now, ``reason`` says why; ``stated`` False: it cannot say yet, the data is not there), and
    the position in the hedge instrument it treats as the hedge (all of it: ``hedge_position``,
    None before the portfolio came, of which ``own_position`` is the net of its own fills this
    run). ``confirm`` says why it waits for a confirmation (empty: it does not); a confirmation
    names ``plan_id`` and is refused after ``expires_at``, once the plan changed, or while it
    cannot be stated."""

    plan_id: int
    at: float
    expires_at: float
    instrument: str
    code: HedgeCode
    reason: str
    side: Literal["buy", "sell"] | None = None
    amount: float = 0.0  # USD, the hedge instrument's amount
    order_type: str = ""
    stated: bool = True
    hedge_position: float | None = None
    own_position: float = 0.0
    confirm: str = ""

    @property
    def not_made(self) -> float | None:
        """The part of the hedge instrument's position the hedger did not make (USD)."""
        return None if self.hedge_position is None else self.hedge_position - self.own_position

    def describe(self) -> str:
        """One readable line: the first order, and what it treats as the hedge."""
        if self.side is not None:
            first = f"first order: {self.side} {self.amount:,.0f} USD of {self.instrument} ({self.order_type})"
            if self.code != HedgeCode.TRADE:
                first += f", once this clears: {self.reason}"
        else:
            first = f"first order: {'nothing now' if self.stated else 'it cannot say yet'} ({self.reason})"
        held = f"it treats the whole position in {self.instrument} ("
        not_made = self.not_made
        if self.hedge_position is None:
            held += "not known yet"
        else:
            held += f"{self.hedge_position:+,.0f} USD"
            if not_made:
                held += f", {not_made:+,.0f} USD of it not made by the hedger"
        return f"{first}; {held}) as the hedge"


class HedgerControl(Message, frozen=True, kw_only=True):
    """Switch delta hedging on or off, ask for its status (answered with HedgerStatus), confirm
    the plan stated on activation (``plan_id``: the one shown), or acknowledge its alert.

    ``currency`` empty: every configured currency."""

    action: Literal["activate", "confirm", "deactivate", "status", "acknowledge"]
    origin: str
    request_key: str = ""
    currency: str = ""
    plan_id: int = 0


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
    for the console (e.g. why hedging is paused or was switched off). ``active``: it hedges
    (``activation`` ACTIVE); ``activation`` also tells off from awaiting the confirmation of
    ``plan``, the plan stated on activation;
    ``alert`` why the hedger switched itself off, kept until acknowledged or activated again."""

    currency: str
    active: bool
    instrument: str
    mode: HedgeMode
    band: float
    at: float
    options_delta: float | None = None
    hedge_delta: float | None = None
    mismatch: float | None = None
    in_flight: bool = False
    orders_today: int = 0
    volume_today: float = 0.0
    last_reason: str = ""
    # The short key of last_reason.
    code: HedgeCode = HedgeCode.NONE
    message: str = ""
    request_key: str = ""
    # The order in flight's phase and label.
    phase: HedgePhase = HedgePhase.IDLE
    order_label: str = ""
    delta_source: str = ""
    # With code IMPLAUSIBLE_DATA: what is wrong with which input (last_reason has the figures).
    fault: DataFault | None = None
    activation: HedgeActivation = HedgeActivation.OFF
    plan: HedgePlan | None = None
    alert: str = ""
