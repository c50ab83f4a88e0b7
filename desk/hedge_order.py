"""One hedge order's life, whatever it hedges: placed, answered, resting, edited, cancelled, its
answer lost, settled; and which orders on the exchange belong to which hedger.

A hedger (``desk.hedging.CurrencyHedger`` today, a vega hedger later) keeps at most one
:class:`HedgeOrder` in flight and decides *when* to move it; the order says *where* it stands and
refuses a move its phase does not allow (:class:`IllegalTransition`), so that a late answer or a
timeout can never put it somewhere it cannot be. It knows nothing of deltas or settings: the
hedger gives it the deadlines.

Phases (``messages.hedging.HedgePhase``) and their moves::

    SENT ──rest──▶ RESTING ──amend/cancel──▶ AMENDING ──rest──▶ RESTING
      │              │                          │
      └──────────────┴────────lose──────────────┴──▶ UNKNOWN ──cancel──▶ AMENDING
    SENT, RESTING, AMENDING, UNKNOWN ──settle──▶ SETTLING ──finish──▶ IDLE
    SENT, RESTING, AMENDING ──finish──▶ IDLE  (closed unfilled, or rejected)

``IDLE`` is final: the hedger has dropped the order, and nothing moves it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from messages.account import OrderUpdate, UserTrade
from messages.hedging import HedgePhase

Side = Literal["buy", "sell"]

CLOSED_STATES = frozenset({"filled", "cancelled", "rejected"})

_SENT, _RESTING, _AMENDING, _SETTLING, _UNKNOWN, _IDLE = (
    HedgePhase.SENT, HedgePhase.RESTING, HedgePhase.AMENDING, HedgePhase.SETTLING, HedgePhase.UNKNOWN,
    HedgePhase.IDLE)

#: The phases each phase may move to.
TRANSITIONS: dict[HedgePhase, frozenset[HedgePhase]] = {
    _SENT: frozenset({_RESTING, _SETTLING, _UNKNOWN, _IDLE}),
    _RESTING: frozenset({_AMENDING, _SETTLING, _UNKNOWN, _IDLE}),
    _AMENDING: frozenset({_RESTING, _SETTLING, _UNKNOWN, _IDLE}),
    _UNKNOWN: frozenset({_AMENDING, _SETTLING}),
    _SETTLING: frozenset({_IDLE}),
    _IDLE: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A hedge order was asked to move where its phase does not allow: a bug in the hedger."""


class OrderTag(msgspec.Struct, frozen=True):
    """What marks one hedger's orders: the ``origin`` of its commands (the Connection's answers
    come back with it) and its label prefix. Its labels are ``prefix`` + a number, and only
    those are its: it cancels no order it does not own, so another hedger's orders and a
    trader's (``manual_api_<n>``, or any label typed on the exchange's site) are safe.

    The prefix must end with a non-digit: then two different prefixes own disjoint labels
    (``hedge-`` does not own ``hedge-v-1``, nor ``hedge-1`` + digits ``hedge-12``)."""

    origin: str
    prefix: str

    def __post_init__(self) -> None:
        if not self.origin:
            raise ValueError("an order tag needs an origin")
        if not self.prefix or self.prefix[-1].isdigit():
            raise ValueError(f"a label prefix must end with a non-digit, got {self.prefix!r}")

    def label(self, number: int) -> str:
        return f"{self.prefix}{number}"

    def owns(self, label: str) -> bool:
        prefix = self.prefix
        return label.startswith(prefix) and label[len(prefix):].isdigit()

    def orphan_key(self, order_id: str) -> str:
        """The request key of the cancel of an order of an earlier run."""
        return f"{self.origin}-orphan-{order_id}"


class HedgeOrder(msgspec.Struct):
    """The one hedge order in flight and where it stands.

    Amounts and positions are in the instrument's own units (USD for an inverse future)."""

    label: str
    request_key: str
    side: Side
    amount: float
    order_type: str
    placed_at: float
    size_before: float  # the hedge instrument's position when it was sent
    phase: HedgePhase = HedgePhase.SENT
    price: float | None = None
    order_id: str | None = None
    filled: float = 0.0
    reprices: int = 0
    due: float | None = None  # when this phase times out
    pending_key: str | None = None  # the edit or cancel awaiting its answer (only while AMENDING)
    cancelling: bool = False
    expected_size: float | None = None  # SETTLING: the position the Portfolio must show
    reconcile_asked: bool = False
    unknown_since: float | None = None
    link_lost: bool = False  # the link dropped after it was sent
    amends: int = 0
    traded: float = 0.0
    trade_ids: set[str] = msgspec.field(default_factory=set)
    closed_at: float | None = None  # when we learned it closed (our clock): every fill was known then
    resolved_at: float | None = None  # its unknown fate was read off the exchange's picture that came then

    # -- what it is ------------------------------------------------------------------------------------
    @property
    def signed_filled(self) -> float:
        return self.filled if self.side == "buy" else -self.filled

    @property
    def following(self) -> bool:
        """Whether its own updates and trades still move it: not once it is settling (the
        Portfolio rules) or of unknown fate (the exchange's picture rules), nor once dropped."""
        return self.phase in (_SENT, _RESTING, _AMENDING)

    def is_ours(self, label: str, order_id: str) -> bool:
        return (self.order_id is not None and order_id == self.order_id) or label == self.label

    def still_open(self, open_orders: Iterable[OrderUpdate]) -> OrderUpdate | None:
        """This order among the exchange's open orders, if it is there."""
        return next((o for o in open_orders if o.label == self.label and o.order_state not in CLOSED_STATES), None)

    # -- what the exchange says ----------------------------------------------------------------------
    def take_state(self, update: OrderUpdate) -> None:
        self.order_id = update.order_id
        self.filled = max(self.filled, update.filled_amount)

    def take_trade(self, trade: UserTrade) -> None:
        # Fills arrive as trades and in order states (filled_amount): two running totals of the
        # same thing, either may lag, so the larger one is right (each trade counts once).
        if not self.order_id:
            self.order_id = trade.order_id
        if trade.trade_id in self.trade_ids:
            return
        self.trade_ids.add(trade.trade_id)
        self.traded += trade.amount
        self.filled = max(self.filled, self.traded)

    @property
    def all_trades_known(self) -> bool:
        """Every fill the order states report has come as a trade (whose id the Portfolio shows)."""
        return self.traded >= self.filled - 1e-9

    # -- transitions ---------------------------------------------------------------------------------
    def _go(self, to: HedgePhase) -> None:
        if to not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"hedge order {self.label}: {self.phase.value} -> {to.value}")
        self.phase = to

    def rest(self, due: float) -> None:
        """Open on the book (placed, repriced, or its edit failed): wait until ``due``."""
        self._go(_RESTING)
        self.pending_key = None
        self.due = due

    def amend(self, price: float, due: float) -> str:
        """Reprice the resting order; returns the edit's request key."""
        self._go(_AMENDING)
        self.amends += 1
        self.price = price
        self.pending_key = f"{self.label}/edit{self.amends}"
        self.due = due
        return self.pending_key

    def cancel(self, due: float) -> str:
        """Cancel it (resting, or found open after its fate was unknown); returns the cancel's
        request key."""
        self._go(_AMENDING)
        self.amends += 1
        self.cancelling = True
        self.pending_key = f"{self.label}/cancel{self.amends}"
        self.due = due
        return self.pending_key

    def settle(self, expected_size: float, now: float, due: float) -> None:
        """Closed with a fill (or resolved by the exchange's picture) at ``now``: wait until the
        Portfolio shows its fills (``expected_size`` is the position that should then be, for
        the log)."""
        self._go(_SETTLING)
        self.closed_at = now
        self.expected_size = expected_size
        self.pending_key = None
        self.due = due

    def lose(self, now: float, due: float) -> None:
        """Its answer was lost or never came, or the link dropped while it was open: its fate is
        unknown until the exchange's picture, fetched after ``now``, says."""
        self._go(_UNKNOWN)
        self.unknown_since = now
        self.pending_key = None
        self.reconcile_asked = False
        self.due = due

    def finish(self) -> None:
        """Dropped by its hedger: settled, closed unfilled, or rejected."""
        self._go(_IDLE)
        self.pending_key = None
        self.due = None
