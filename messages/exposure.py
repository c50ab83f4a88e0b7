"""The exposure assistant's plans and their progress, and the vega hedger's controls and status.

The Console plans (``target vega 5000 BTC 30d``: :mod:`desk.exposure`) and shows an
:class:`ExposurePlan`; nothing is sent until ``confirm``, which hands the plan to the Assistant
actor as a :class:`WorkPlan`. The Assistant works the legs with post-only limits repriced toward
the mid (labels ``plan-<n>-<leg>``), publishes a :class:`PlanStatus` on every change and stops on
:class:`CancelPlan`. Greeks are in the desk's risk units (:mod:`desk.risk`): delta in coin, gamma
in USD per 1% move, vega in USD per vol point, theta in USD per day.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from messages.base import Message


class Greek(StrEnum):
    """A greek a trader can ask the assistant for (or to hold), in the console's words."""

    DELTA = "delta"
    GAMMA = "gamma"
    VEGA = "vega"
    THETA = "theta"


class GreekFigures(Message, frozen=True, kw_only=True):
    """One currency's (or one leg's) greeks in the risk units: delta in coin, gamma in USD per 1%
    move of the underlying, vega in USD per vol point, theta in USD per day."""

    delta: float = 0.0
    gamma: float = 0.0
    vega: float = 0.0
    theta: float = 0.0

    def of(self, greek: Greek) -> float:
        return float(getattr(self, greek.value))


class PlanLeg(Message, frozen=True, kw_only=True):
    """One option of a plan: ``side`` ``amount`` coins (a multiple of its minimum trade amount);
    the book's touch and mid when planned (coin, or USDC in a linear family); ``greeks`` what the
    whole leg adds; ``cost_usd`` what it is expected to cost against the mid (half the spread and
    the fee)."""

    leg: int  # 1-based; the label is plan-<plan_id>-<leg>
    instrument_name: str
    side: Literal["buy", "sell"]
    amount: float
    bid: float
    ask: float
    mid: float
    underlying_price: float
    greeks: GreekFigures
    cost_usd: float
    fee_usd: float = 0.0


class ExposurePlan(Message, frozen=True, kw_only=True):
    """What the planner proposes for ``target <greek> <target> <currency> [<tenor>]``: legs that
    take the currency's ``greek`` from ``before`` to ``after`` (within ``tolerance``) while the
    ``holds`` stay where they are. ``reachable`` False: no plan (``reason`` says why: not enough
    liquidity, limits) and ``legs`` is empty. ``premium_usd`` is the net premium paid at the mids
    (negative: received). A plan is confirmed by ``plan_id`` before ``expires_at``."""

    plan_id: int
    currency: str
    greek: Greek
    target: float
    at: float
    expires_at: float
    tenor_days: float | None = None
    holds: tuple[Greek, ...] = ()
    tolerance: float = 0.0
    legs: tuple[PlanLeg, ...] = ()
    before: GreekFigures = GreekFigures()
    after: GreekFigures = GreekFigures()
    cost_usd: float = 0.0
    premium_usd: float = 0.0
    reachable: bool = True
    reason: str = ""

    def label(self, leg: int) -> str:
        return plan_label(self.plan_id, leg)


def plan_label(plan_id: int, leg: int) -> str:
    """The Deribit label of one leg's orders: ``plan-<n>-<leg>`` (the one place for it)."""
    return f"plan-{plan_id}-{leg}"


def is_plan_label(label: str) -> bool:
    """Whether an order's label is an exposure plan's (never a hedge order's)."""
    head, _, rest = label.partition("-")
    number, _, leg = rest.partition("-")
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return head == "plan" and number.isdecimal() and leg.isdecimal()


class WorkPlan(Message, frozen=True, kw_only=True):
    """The trader confirmed ``plan``: the Assistant works its legs (answered with PlanStatus)."""

    plan: ExposurePlan
    origin: str
    request_key: str = ""


class CancelPlan(Message, frozen=True, kw_only=True):
    """Stop working a plan and cancel its open orders (``plan_id`` 0: whichever is being worked).
    Answered with a PlanStatus."""

    origin: str
    request_key: str = ""
    plan_id: int = 0


class PlanState(StrEnum):
    """Where a plan being worked stands."""

    WORKING = "working"
    DONE = "done"  # every leg filled
    CANCELLED = "cancelled"  # by the trader (cancel plan); its open orders cancelled
    STOPPED = "stopped"  # by the Assistant: a gate (disconnected, stale, limits, rejections); message says why


class LegState(StrEnum):
    WAITING = "waiting"  # no order yet (gated, or the book not sane)
    RESTING = "resting"  # a post-only limit on the book
    AMENDING = "amending"  # an edit or cancel awaits its answer
    SENT = "sent"  # placed, no answer yet
    FILLED = "filled"
    CANCELLED = "cancelled"


class LegProgress(Message, frozen=True, kw_only=True):
    leg: int
    instrument_name: str
    side: Literal["buy", "sell"]
    amount: float
    filled: float = 0.0
    average_price: float | None = None
    price: float | None = None  # the resting limit's price
    order_id: str = ""
    state: LegState = LegState.WAITING
    reprices: int = 0


class PlanStatus(Message, frozen=True, kw_only=True):
    """The Assistant's picture of the plan it works (``plan_id`` 0: none), on every change and
    in answer to WorkPlan / CancelPlan (``request_key``)."""

    plan_id: int
    currency: str
    state: PlanState
    at: float
    legs: tuple[LegProgress, ...] = ()
    message: str = ""
    request_key: str = ""


class PlanStatusRequest(Message, frozen=True, kw_only=True):
    """Ask the Assistant for its current PlanStatus: answered to an ``ask`` and published on the bus
    (a restarted Hedger asks, so that its vega hedger holds while a plan is worked)."""

    origin: str = ""


# -- vega hedging ---------------------------------------------------------------------------------
class VegaHedgerControl(Message, frozen=True, kw_only=True):
    """Switch vega hedging of ``currency`` (empty: every hedged currency) on or off, or ask for
    its status; answered with VegaHedgerStatus."""

    action: Literal["activate", "deactivate", "status"]
    origin: str
    request_key: str = ""
    currency: str = ""


class SetVegaBand(Message, frozen=True, kw_only=True):
    """Change the vega band live: rehedge when |vega - target| exceeds ``band_usd`` (USD per vol
    point); ``tenor_days`` (None: unchanged) chooses the hedge option's tenor."""

    band_usd: float
    origin: str
    request_key: str = ""
    currency: str = ""
    tenor_days: float | None = None


class VegaHedgeCode(StrEnum):
    """The short, stable key of why a vega hedger does what it does (``VegaHedgerStatus.code``)."""

    NONE = ""  # nothing said yet (or since it was activated)
    TRADE = "trade"
    WITHIN_BAND = "within_band"
    BELOW_MIN_AMOUNT = "below_min_amount"  # the gap is less than half the hedge option's minimum trade
    OFF = "off"
    DISCONNECTED = "disconnected"
    PLATFORM_LOCKED = "platform_locked"
    NO_PORTFOLIO = "no_portfolio"
    UNRECONCILED = "unreconciled"
    RECONCILING = "reconciling"
    IN_FLIGHT = "in_flight"
    ORPHAN_ORDERS = "orphan_orders"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"
    DAILY_ORDERS = "daily_orders"
    DAILY_VOLUME = "daily_volume"
    NO_OPTION = "no_option"  # no listed option fits the tenor (or no forward to find the ATM strike)
    NO_TICKER = "no_ticker"  # a held option's or the hedge option's ticker is missing
    STALE_TICKER = "stale_ticker"
    NO_VEGA = "no_vega"  # a ticker without greeks, or the hedge option's vega is 0 / not finite
    IMPLAUSIBLE_DATA = "implausible_data"  # a refused ticker (NaN, absurd IV or greeks, crossed book)
    NO_BOOK = "no_book"  # the side to trade against is empty
    PRICE_DEVIATION = "price_deviation"  # the touch is too far from the mark
    SWITCHED_OFF = "switched_off"  # by itself: ``alert`` says why
    #: An exposure plan of the currency is being worked, or plan orders are open: its fills would be
    #: traded back toward the vega target, and an IOC could trade against a resting plan order.
    PLAN_WORKING = "plan_working"


class VegaHedgerStatus(Message, frozen=True, kw_only=True):
    """The vega hedger of one currency: ``vega`` the currency's option vega (USD per vol point)
    kept within ``band_usd`` of ``target_usd`` with ``option``; ``code``/``message`` why it does
    what it does; ``alert`` why it switched itself off."""

    currency: str
    active: bool
    band_usd: float
    tenor_days: float
    at: float
    target_usd: float = 0.0
    option: str = ""
    vega: float | None = None
    in_flight: bool = False
    orders_today: int = 0
    code: VegaHedgeCode = VegaHedgeCode.NONE
    message: str = ""
    alert: str = ""
    request_key: str = ""
    # Added by the vega hedger: the hedge option's vega per coin (USD per vol point), the day's
    # volume in coins, the order in flight's label and phase ("" when none), why it holds.
    option_vega: float | None = None
    volume_today: float = 0.0
    order_label: str = ""
    phase: str = ""
    reason: str = ""
