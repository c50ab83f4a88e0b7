"""The session and what the exchange says about itself: locked indices (``platform_state``,
``public/status``), the account's own order limits, the settlement history."""

from __future__ import annotations

from pathlib import Path

import pytest

from deribit.platform import PlatformLocks, PlatformStatus, index_of
from messages.account import SettlementHistory
from messages.commands import PLATFORM_LOCKED, CommandFailed, ReconcilePortfolio
from messages.market import PlatformState
from messages.system import DailyRollover
from tests.unit.test_session import PARTS, SUMMARY, Rig, order, reconcile_parts


def test_a_locked_index_refuses_new_orders_on_it_and_cancels_still_go(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.handle(PlatformState(price_index="btc_usd", locked=True), 1.0))
    assert rig.log.events("platform_locked")[0]["price_index"] == "btc_usd"
    sent = len(rig.sent)
    rig.take(rig.session.command(order("o-1"), 1.0))
    refused = rig.of(CommandFailed)[-1]
    assert (refused.request_key, refused.code) == ("o-1", PLATFORM_LOCKED)
    assert "btc_usd" in refused.message and len(rig.sent) == sent
    # Another index's lock says nothing about BTC; unlocking BTC lets orders go again.
    rig.take(rig.session.handle(PlatformState(price_index="sol_usdc", locked=False), 1.1))
    rig.take(rig.session.handle(PlatformState(price_index="btc_usd", locked=False), 1.2))
    rig.take(rig.session.command(order("o-2"), 1.3))
    assert rig.last("private/sell")["params"]["instrument_name"] == "BTC-PERPETUAL"


def test_public_status_on_connect_brings_the_locks_up_to_date_and_publishes_the_changes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.answer(rig.last("public/status"), {"locked": "partial", "locked_indices": ["btc_usd"]}, 0.5)
    assert rig.of(PlatformState) == [PlatformState(price_index="btc_usd", locked=True)]
    rig.take(rig.session.command(order("o-1"), 1.0))
    assert rig.of(CommandFailed)[-1].code == PLATFORM_LOCKED
    # After a reconnect the status no longer lists it: unlocked, and said so.
    rig.take(rig.session.link_down("test"))
    rig.take(rig.session.link_up(2.0))
    rig.answer(rig.last("public/status"), {"locked": "false", "locked_indices": []}, 2.1)
    assert rig.of(PlatformState)[-1] == PlatformState(price_index="btc_usd", locked=False)


def test_platform_locks_everything_and_index_names() -> None:
    locks = PlatformLocks()
    assert locks.states_for_status(PlatformStatus(locked="true")) == []
    assert locks.locked("eth_usd") and locks.everything and "every index" in locks.describe()
    locks.states_for_status(PlatformStatus(locked="false"))
    assert not locks.locked("eth_usd") and locks.describe() == ""
    assert not locks.on_state(PlatformState(allow_unauthenticated_public_requests=True))
    assert (index_of("BTC"), index_of("ETH"), index_of("SOL_USDC")) == ("btc_usd", "eth_usd", "sol_usdc")


def _answer_summary(rig: Rig, limits: object, now: float) -> None:
    parts = reconcile_parts(rig)
    for method, result in zip(PARTS, ([], [], {**SUMMARY, "limits": limits}), strict=True):
        rig.answer(parts[method], result, now)


def test_the_accounts_own_order_limit_replaces_the_configured_one(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    _answer_summary(rig, {"limits_per_currency": False, "matching_engine": {"rate": 2, "burst": 3},
                          "non_matching_engine": {"rate": 20, "burst": 100}}, 1.1)
    bucket = rig.session.order_bucket
    assert (bucket.rate, bucket.burst) == (2, 3.0)
    assert rig.log.events("order_limits_from_account")[0]["configured_rate"] > 0
    # The bucket now holds at most 3: a fourth order at once waits for the account's rate.
    rig.sent.clear()
    for i in range(4):
        rig.take(rig.session.command(order(f"o-{i}"), 1.2))
    assert len(rig.requests("private/sell")) == 3
    rig.take(rig.session.tick(1.2 + 0.5))
    assert len(rig.requests("private/sell")) == 4


@pytest.mark.parametrize(("rate", "burst"), [(0, 20), (-1, 20), (5, 0)])
def test_an_unusable_account_limit_is_ignored_with_a_warning(tmp_path: Path, rate: float, burst: float) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    before = (rig.session.order_bucket.rate, rig.session.order_bucket.burst)
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    _answer_summary(rig, {"matching_engine": {"rate": rate, "burst": burst}}, 1.1)
    assert (rig.session.order_bucket.rate, rig.session.order_bucket.burst) == before
    assert rig.log.events("account_limits_ignored")


def test_the_settlement_history_is_read_after_login_and_again_after_the_0800_settlement(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    [request] = rig.requests("private/get_settlement_history_by_currency")
    assert request["params"]["currency"] == "BTC"
    entry = {"type": "delivery", "timestamp": 1_632_470_400_000, "instrument_name": "BTC-24SEP21-40000-P",
             "position": 1.0, "mark_price": 0.0, "index_price": 42_000.0, "profit_loss": -0.01,
             "session_profit_loss": -0.01}
    rig.answer(request, {"settlements": [entry], "continuation": "none"}, 1.0)
    [history] = rig.of(SettlementHistory)
    assert history.currency == "BTC" and history.settlements[0].instrument_name == "BTC-24SEP21-40000-P"
    rig.take(rig.session.handle(DailyRollover(at=2.0, day="2021-09-24"), 2.0))
    rig.take(rig.session.tick(3.0))
    assert len(rig.requests("private/get_settlement_history_by_currency")) == 1  # not at 08:00 sharp
    rig.take(rig.session.tick(2.0 + 61.0))
    assert len(rig.requests("private/get_settlement_history_by_currency")) == 2
