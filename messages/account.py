"""Account messages: our orders, fills, positions and margin figures, in Deribit's field names.

They are decoded straight from ``user.orders.*``, ``user.trades.*`` and ``user.portfolio.*``
notifications and from the results of ``private/get_positions``,
``private/get_account_summary`` and the order methods. Fields Deribit does not always send are
optional with a default (``None`` where 0 would be a claim rather than a fact); a field of the
wrong type fails decoding.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from messages.base import Message

Direction = Literal["buy", "sell"]


class OrderUpdate(Message, frozen=True, kw_only=True):
    """The current state of one of our orders.

    ``order_state``: ``open``, ``filled``, ``rejected``, ``cancelled``, ``untriggered``,
    ``triggered``. ``price`` is ``"market_price"`` for a trigger market order that has not
    triggered yet and ``None`` when absent. Amounts are USD for futures, coins for options."""

    order_id: str
    instrument_name: str
    order_state: str
    order_type: str
    direction: Direction
    amount: float
    price: float | Literal["market_price"] | None = None
    filled_amount: float = 0.0
    average_price: float | None = None
    time_in_force: str = "good_til_cancelled"
    label: str = ""
    post_only: bool = False
    reduce_only: bool = False
    reject_post_only: bool = False
    creation_timestamp: int = 0
    last_update_timestamp: int = 0
    contracts: float | None = None
    commission: float | None = None
    trigger: str | None = None
    trigger_price: float | None = None
    triggered: bool | None = None
    max_show: float | None = None
    original_order_type: str | None = None
    cancel_reason: str | None = None
    advanced: str | None = None
    implv: float | None = None
    usd: float | None = None
    api: bool = False
    web: bool = False
    is_liquidation: bool = False
    replaced: bool = False
    mmp: bool = False
    risk_reducing: bool = False


class UserTrade(Message, frozen=True, kw_only=True):
    """One fill of one of our orders (``user.trades.*``; the data is a list of these).

    ``direction`` is our order's side; ``liquidity`` ``"M"`` maker or ``"T"`` taker; ``fee``
    in ``fee_currency`` (negative is a rebate). ``state`` is the order's state after the fill.
    Deribit documents ``post_only``/``reduce_only`` here as strings but has sent booleans, so
    both are accepted."""

    trade_id: str
    order_id: str
    instrument_name: str
    timestamp: int
    direction: Direction
    price: float
    amount: float
    fee: float
    fee_currency: str
    trade_seq: int | None = None
    state: str | None = None
    liquidity: Literal["M", "T"] | None = None
    order_type: str | None = None
    label: str = ""
    index_price: float | None = None
    mark_price: float | None = None
    underlying_price: float | None = None
    iv: float | None = None
    tick_direction: int | None = None
    contracts: float | None = None
    profit_loss: float | None = None
    matching_id: str | None = None
    liquidation: str | None = None
    block_trade_id: str | None = None
    advanced: str | None = None
    post_only: bool | str | None = None
    reduce_only: bool | str | None = None
    api: bool | None = None
    mmp: bool | None = None
    risk_reducing: bool | None = None


class Position(Message, frozen=True, kw_only=True):
    """One position of ``private/get_positions``.

    ``size`` is signed: USD for futures, coins for options; ``direction`` ``"buy"`` long,
    ``"sell"`` short, ``"zero"`` flat. ``size_currency`` (futures only) is the size in coins.
    Greeks other than ``delta`` are for options only."""

    instrument_name: str
    kind: str
    direction: Literal["buy", "sell", "zero"]
    size: float
    average_price: float = 0.0
    mark_price: float | None = None
    index_price: float | None = None
    settlement_price: float | None = None
    size_currency: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    initial_margin: float | None = None
    maintenance_margin: float | None = None
    open_orders_margin: float | None = None
    floating_profit_loss: float | None = None
    realized_profit_loss: float | None = None
    total_profit_loss: float | None = None
    average_price_usd: float | None = None
    floating_profit_loss_usd: float | None = None
    realized_funding: float | None = None
    interest_value: float | None = None
    estimated_liquidation_price: float | None = None
    leverage: float | None = None


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """One of the account's request limits: ``rate`` credits per second refilled into a bucket
    of ``burst``."""

    rate: float
    burst: float


class AccountLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The account's own request limits (``limits`` of ``private/get_account_summary``): orders
    (matching engine: buy, sell, edit, cancel) and everything else. ``None`` when not said."""

    limits_per_currency: bool = False
    matching_engine: RateLimit | None = None
    non_matching_engine: RateLimit | None = None


class AccountFigures(Message, frozen=True, kw_only=True):
    """Balances, margins, P&L and greeks of one currency's account. Shared by the streamed
    :class:`PortfolioUpdate` and the requested :class:`AccountSummary`."""

    currency: str
    equity: float
    balance: float
    available_funds: float
    margin_balance: float
    initial_margin: float
    maintenance_margin: float
    available_withdrawal_funds: float | None = None
    projected_initial_margin: float | None = None
    projected_maintenance_margin: float | None = None
    delta_total: float | None = None
    projected_delta_total: float | None = None
    options_delta: float | None = None
    options_gamma: float | None = None
    options_vega: float | None = None
    options_theta: float | None = None
    options_value: float | None = None
    options_pl: float | None = None
    options_session_rpl: float | None = None
    options_session_upl: float | None = None
    futures_pl: float | None = None
    futures_session_rpl: float | None = None
    futures_session_upl: float | None = None
    total_pl: float | None = None
    session_rpl: float | None = None
    session_upl: float | None = None
    fee_balance: float | None = None
    spot_reserve: float | None = None
    additional_reserve: float | None = None
    estimated_liquidation_ratio: float | None = None
    margin_model: str | None = None
    portfolio_margining_enabled: bool = False
    cross_collateral_enabled: bool = False
    total_equity_usd: float | None = None
    total_margin_balance_usd: float | None = None
    total_initial_margin_usd: float | None = None
    total_maintenance_margin_usd: float | None = None
    total_delta_total_usd: float | None = None


class PortfolioUpdate(AccountFigures, frozen=True, kw_only=True):
    """``user.portfolio.{currency}``: the account figures changed."""


class AccountSummary(AccountFigures, frozen=True, kw_only=True):
    """The result of ``private/get_account_summary`` (taken on every reconcile)."""

    id: int | None = None
    username: str | None = None
    system_name: str | None = None
    type: str | None = None
    creation_timestamp: int | None = None
    limits: AccountLimits | None = None


class ExchangeWindow(Message, frozen=True, kw_only=True):
    """When the exchange took one of its answers, on its own clock: Deribit's ``usIn`` (the
    request arrived) and ``usOut`` (the answer left), in microseconds. A fill stamped before
    ``received_us`` is in the answer; one stamped after ``sent_us`` is not; one in between may
    be either."""

    received_us: int
    sent_us: int

    def includes(self, timestamp_ms: int) -> bool | None:
        """Whether an event the exchange stamped ``timestamp_ms`` (ms, floored) is reflected
        in the answer: True, False, or None when it cannot be told."""
        if (timestamp_ms + 1) * 1000 <= self.received_us:
            return True
        if timestamp_ms * 1000 > self.sent_us:
            return False
        return None


class ExchangeState(Message, frozen=True, kw_only=True):
    """What the exchange says is true for one currency, fetched on a reconcile
    (``private/get_positions``, ``private/get_open_orders_by_currency``,
    ``private/get_account_summary``): the Portfolio takes it in as of when it was taken (what
    it applied since is replayed on top). ``requested_at`` is when the requests went out and
    ``at`` when the last of the three answers arrived (the program's clock, unix seconds);
    ``positions_window`` and ``orders_window`` when the exchange took those two answers (None
    when it did not say)."""

    currency: str
    positions: tuple[Position, ...]
    open_orders: tuple[OrderUpdate, ...]
    summary: AccountSummary | None
    at: float
    reason: str = ""
    round: int = 0  # the reconcile's number (ReconcileStarted said it began)
    requested_at: float | None = None
    positions_window: ExchangeWindow | None = None
    orders_window: ExchangeWindow | None = None


class ReconcileStarted(Message, frozen=True, kw_only=True):
    """The requests of a reconcile of ``currency`` went out: its picture is being checked (the
    Hedger holds until an ExchangeState or a ReconcileFailed for it)."""

    currency: str
    at: float
    reason: str = ""
    round: int = 0


class ReconcileFailed(Message, frozen=True, kw_only=True):
    """A reconcile of ``currency`` ended without the exchange's picture (an error, a timeout,
    an answer of the wrong shape, the link lost): ``message`` says which."""

    currency: str
    at: float
    message: str
    reason: str = ""
    round: int = 0
    superseded: bool = False  # a newer reconcile of the currency replaced it


class UserChanges(Message, frozen=True, kw_only=True):
    """``user.changes.{kind}.{currency}.{interval}``: what one event did to our account on one
    instrument, atomically: the orders it changed, the fills, and the exchange's own positions
    after it (with its PnL figures)."""

    instrument_name: str
    orders: tuple[OrderUpdate, ...] = ()
    trades: tuple[UserTrade, ...] = ()
    positions: tuple[Position, ...] = ()


SettlementType = Literal["settlement", "delivery", "bankruptcy"]


class Settlement(Message, frozen=True, kw_only=True):
    """One entry of ``private/get_settlement_history_by_currency``: a daily settlement of a
    position (its session PnL moved into the balance at ``mark_price``), a delivery at expiry,
    or a bankruptcy. ``position`` is in the instrument's amount unit (USD for inverse futures,
    coin for options); PnL figures in the settlement currency."""

    type: SettlementType
    timestamp: int
    instrument_name: str | None = None
    position: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    profit_loss: float | None = None
    session_profit_loss: float | None = None
    funding: float | None = None
    funded: float | None = None
    session_bankruptcy: float | None = None
    session_tax: float | None = None
    session_tax_rate: float | None = None
    socialized: float | None = None


class SettlementHistory(Message, frozen=True, kw_only=True):
    """The settlements and deliveries of ``currency`` the exchange reported (newest first, as
    Deribit lists them), fetched at start and after each 08:00 UTC settlement; ``at`` is when the
    answer arrived (unix seconds)."""

    currency: str
    settlements: tuple[Settlement, ...]
    at: float
    continuation: str | None = None
