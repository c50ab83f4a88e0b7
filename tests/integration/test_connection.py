"""The Connection against a scripted Deribit on loopback (issue 3): login, heartbeats, dead links,
reconnects with every subscription restored, rate limits, malformed frames, token refresh,
subscribe batching and retries, and the rules that keep orders safe."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.connection import Connection, GetLinkStats
from main import make_supervisor
from messages.account import ExchangeState
from messages.commands import (
    ANSWER_LOST,
    INVALID,
    NOT_CONNECTED,
    PAPER_ONLY,
    QUEUED_TOO_LONG,
    TRADING_DISABLED,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    PlaceOrder,
    ReconcilePortfolio,
    ResubscribeInstrument,
)
from messages.market import BookSnapshot, InstrumentsLoaded, Ticker
from messages.system import ConnectionState, ConnectionStatus, SafeShutdown
from runtime.actor import ActorContext
from runtime.clock import WallClock
from runtime.supervisor import ActorSpec
from tests.support.connection_harness import Desk, connection_settings
from tests.support.scripted_server import ScriptedServer, _option

CALL = "BTC-1JAN00-60000-C"
PUT = "BTC-1JAN00-60000-P"
PUBLIC_BTC = {
    f"book.{CALL}.100ms", f"ticker.{CALL}.100ms", f"book.{PUT}.100ms", f"ticker.{PUT}.100ms",
    "quote.BTC-PERPETUAL", "ticker.BTC-PERPETUAL.100ms",
    "deribit_price_index.btc_usd", "instrument.state.option.BTC", "instrument.state.future.BTC",
    "platform_state", "deribit_volatility_index.btc_usd",
}
PRIVATE_BTC = {"user.orders.any.BTC.raw", "user.trades.any.BTC.raw", "user.changes.any.BTC.raw", "user.portfolio.btc"}
S = ConnectionState

RunDesk = Callable[..., Desk]  # (dotted settings keys, /, **top-level keys)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def run_desk(tmp_path: Path, server: ScriptedServer) -> Iterator[RunDesk]:
    desks: list[Desk] = []

    def start(values: Mapping[str, Any] | None = None, /, **keys: Any) -> Desk:
        desk = Desk.start(connection_settings(tmp_path, values, **keys), server.url)
        desks.append(desk)
        return desk

    yield start
    for desk in desks:
        desk.stop()


def order(key: str, **fields: Any) -> PlaceOrder:
    values: dict[str, Any] = {"instrument_name": CALL, "side": "buy", "amount": 0.1, "price": 0.05,
                              "origin": "test", "request_key": key}
    values.update(fields)
    return PlaceOrder(**values)


# -- login ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("auth_method", ["client_signature", "client_credentials"])
def test_login_subscribes_everything_and_publishes_market_data(
        run_desk: RunDesk, server: ScriptedServer, auth_method: str) -> None:
    desk = run_desk({"deribit.auth_method": auth_method})
    subscribed = desk.wait_state(S.SUBSCRIBED)
    assert subscribed.authenticated and subscribed.can_trade
    assert subscribed.detail == f"{len(PUBLIC_BTC | PRIVATE_BTC)} of {len(PUBLIC_BTC | PRIVATE_BTC)} channels"
    states = desk.states()
    assert states[:2] == ["connecting", "connected"]
    assert states.index("authenticated") < states.index("subscribed")

    (auth,) = server.calls("public/auth")
    assert auth.params["grant_type"] == auth_method and auth.params["client_id"] == server.client_id
    if auth_method == "client_signature":
        assert "client_secret" not in auth.params and len(auth.params["signature"]) == 64
    assert server.subscribed() == PUBLIC_BTC | PRIVATE_BTC
    for call in server.calls("public/subscribe"):
        assert not set(call.params["channels"]) & PRIVATE_BTC, "private channels need private/subscribe"
    assert server.calls("public/get_instruments")[0].params == {"currency": "BTC", "expired": False}
    (loaded,) = desk.seen(InstrumentsLoaded)
    assert loaded.currency == "BTC"
    assert sorted(i.instrument_name for i in loaded.instruments) == sorted([CALL, PUT, "BTC-PERPETUAL"])

    assert server.push("ticker.BTC-PERPETUAL.100ms", server.ticker("BTC-PERPETUAL", mark_price=61234.5)) == 1
    (ticker,) = desk.wait_seen(Ticker)
    assert ticker.instrument_name == "BTC-PERPETUAL" and ticker.mark_price == 61234.5
    # Each book subscription started with a snapshot, in order behind the subscribe answer.
    books = desk.wait_seen(BookSnapshot, count=2)
    assert {b.instrument_name for b in books} == {CALL, PUT}


def test_rejected_login_is_a_clear_error_and_public_data_keeps_flowing(
        run_desk: RunDesk, server: ScriptedServer) -> None:
    server.refuse_logins = True
    desk = run_desk()
    rejected = desk.wait_seen(ConnectionStatus, lambda s: s.detail.startswith("login rejected"))[0]
    assert rejected.detail == "login rejected: invalid_credentials (code 13004)"
    assert not rejected.authenticated and not rejected.can_trade
    error = desk.wait_log("login_rejected")
    assert error["level"] == "error" and error["code"] == 13004 and "DERIBIT_CLIENT_SECRET" in error["hint"]

    subscribed = desk.wait_state(S.SUBSCRIBED)  # the public channels
    assert not subscribed.authenticated and not subscribed.can_trade
    assert server.subscribed() == PUBLIC_BTC
    assert not server.calls("private/subscribe")
    server.push("ticker.BTC-PERPETUAL.100ms", server.ticker("BTC-PERPETUAL"))
    desk.wait_seen(Ticker)

    desk.publish(order("o-1"))
    answer = desk.wait_answer("o-1")
    assert isinstance(answer, CommandFailed) and answer.code == NOT_CONNECTED
    assert "login rejected: invalid_credentials" in answer.message
    assert not server.calls("private/buy")


# -- heartbeats and dead links ---------------------------------------------------------------------------
def test_heartbeat_interval_is_clamped_and_test_request_answered(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk({"deribit.heartbeat_s": 5.0})
    desk.wait_state(S.SUBSCRIBED)
    (heartbeat,) = server.calls("public/set_heartbeat")
    assert heartbeat.params == {"interval": 10}  # Deribit's minimum; 5 s is kept by the Connection itself
    assert server.send_test_request() == 1
    sent = time.monotonic()
    (test,) = server.wait_for_call("public/test", timeout=2.0)
    assert test.at - sent < 0.5 and test.conn == 1


def test_quiet_link_is_probed_not_dropped(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk({"deribit.heartbeat_s": 1.0})
    desk.wait_state(S.SUBSCRIBED)
    time.sleep(3.5)  # nothing pushed: only the Connection's own probes keep the link busy
    assert len(server.calls("public/test")) >= 2
    assert server.connects == 1 and "disconnected" not in desk.states()


def test_silent_stall_reconnects_within_two_heartbeats(run_desk: RunDesk, server: ScriptedServer) -> None:
    heartbeat_s = 1.0
    desk = run_desk({"deribit.heartbeat_s": heartbeat_s, "deribit.reconnect_initial_s": 0.1,
                     "deribit.reconnect_max_s": 0.2})
    desk.wait_state(S.SUBSCRIBED)
    first = server.subscribed(1)
    stalled_at = time.monotonic()
    assert server.stall() == 1
    server.wait_until(lambda: server.connects == 2, timeout=10, what="a second connection")
    elapsed = time.monotonic() - stalled_at
    # Dead after 2 heartbeats of silence, plus one receive slice and the reconnect delay.
    assert elapsed < 2 * heartbeat_s + 0.2 + 0.2 + 0.4, elapsed
    down = desk.wait_state(S.DISCONNECTED)
    assert "two heartbeat intervals" in down.detail
    desk.wait_state(S.SUBSCRIBED, count=2)
    assert server.subscribed(2) == first == PUBLIC_BTC | PRIVATE_BTC


def test_server_close_reconnects_with_backoff_and_restores_every_subscription(
        run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk({"deribit.reconnect_initial_s": 0.2, "deribit.reconnect_max_s": 0.8})
    desk.wait_state(S.SUBSCRIBED)
    first = server.subscribed(1)
    server.refuse_connects = True
    closed_at = time.monotonic()
    server.close_connections()
    server.wait_until(lambda: len(server.connect_attempts) >= 5, what="reconnect attempts")
    server.refuse_connects = False
    server.wait_until(lambda: server.connects == 2, what="a second connection")
    desk.wait_state(S.SUBSCRIBED, count=2)

    attempts = [t for t in server.connect_attempts[1:]]
    gaps = [b - a for a, b in zip([closed_at, *attempts], attempts, strict=False)]
    assert all(0.1 - 0.02 <= gap <= 0.8 + 0.3 for gap in gaps), gaps  # jittered, within [initial/2, max]
    failures = [s for s in desk.statuses() if s.state is S.DISCONNECTED]
    assert "reconnecting in" in failures[0].detail and "retrying in" in failures[1].detail
    assert [s.attempt for s in failures[1:4]] == sorted(s.attempt for s in failures[1:4])
    assert server.subscribed(2) == first == PUBLIC_BTC | PRIVATE_BTC
    assert [c.conn for c in server.calls("public/auth")] == [1, 2]
    assert [c.conn for c in server.calls("public/set_heartbeat")] == [1, 2]


# -- frames ----------------------------------------------------------------------------------------------
def test_malformed_frame_is_logged_with_an_excerpt_and_the_stream_continues(
        run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    bad = '{"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "ticker.BTC-PERPETUAL.100ms"'
    server.send_raw(bad)
    server.send_raw("certainly not json")
    server.push("ticker.BTC-PERPETUAL.100ms", server.ticker("BTC-PERPETUAL"))
    desk.wait_seen(Ticker)
    warnings = [line for line in desk.log_lines() if line["event"] == "malformed_frame"]
    assert [w["level"] for w in warnings] == ["warning", "warning"]
    assert warnings[0]["excerpt"] == bad and warnings[1]["excerpt"] == "certainly not json"
    assert "not a Deribit frame" in warnings[0]["reason"]
    stats = desk.connection().ask(GetLinkStats(), timeout=5)
    assert stats["malformed"] == 2 and stats["notifications"]["ticker"] == 1
    assert server.connects == 1


# -- auth lifetime -------------------------------------------------------------------------------------------
def test_token_is_refreshed_before_it_expires(run_desk: RunDesk, server: ScriptedServer) -> None:
    server.expires_in = 2
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    refreshes = server.wait_for_call("public/auth", count=3, timeout=6,
                                     where=lambda c: c.params["grant_type"] == "refresh_token")
    logins = [c for c in server.calls("public/auth") if c.params["grant_type"] != "refresh_token"]
    assert len(logins) == 1
    previous = logins[0].at
    for refresh in refreshes:
        assert 0.5 < refresh.at - previous < server.expires_in  # before the token in use expires
        previous = refresh.at
    assert refreshes[0].params["refresh_token"] in server.issued_tokens
    assert desk.log_events("token_refreshed")
    assert server.connects == 1


def test_refused_refresh_logs_in_afresh(run_desk: RunDesk, server: ScriptedServer) -> None:
    server.expires_in = 2
    desk = run_desk({"deribit.auth_method": "client_credentials"})
    desk.wait_state(S.SUBSCRIBED)
    server.fail_next("public/auth")  # the coming refresh
    server.wait_for_call("public/auth", count=3, timeout=6)
    grants = [c.params["grant_type"] for c in server.calls("public/auth")][:3]
    assert grants == ["client_credentials", "refresh_token", "client_credentials"]
    assert desk.log_events("token_refresh_failed")


def test_refused_refresh_and_login_end_trading_on_that_session(run_desk: RunDesk, server: ScriptedServer) -> None:
    server.expires_in = 2
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    server.refuse_logins = True  # the refresh, then the fresh login, are refused
    rejected = desk.wait_seen(ConnectionStatus, lambda s: s.detail.startswith("login rejected"), timeout=5)[0]
    assert not rejected.authenticated and not rejected.can_trade
    grants = [c.params["grant_type"] for c in server.calls("public/auth")]
    assert grants == ["client_signature", "refresh_token", "client_signature"]
    desk.publish(order("after-1"))
    answer = desk.wait_answer("after-1")
    assert isinstance(answer, CommandFailed) and answer.code == NOT_CONNECTED and "not logged in" in answer.message
    assert not server.calls("private/buy")


# -- subscriptions -------------------------------------------------------------------------------------------
def test_subscribe_requests_are_batched_within_the_rate_limit(run_desk: RunDesk, server: ScriptedServer) -> None:
    rate = 4.0
    desk = run_desk({"deribit.subscribe_batch_size": 3, "deribit.subscribe_requests_per_s": rate},
                    currencies=["BTC", "ETH"])
    desk.wait_state(S.SUBSCRIBED, timeout=20)
    requests = server.calls("public/subscribe") + server.calls("private/subscribe")
    requests.sort(key=lambda r: r.at)
    assert all(1 <= len(r.params["channels"]) <= 3 for r in requests)
    channels = [c for r in requests for c in r.params["channels"]]
    # each once: 14 per currency, and platform_state shared
    assert len(channels) == len(set(channels)) == 29
    assert len(requests) >= 8
    times = [r.at for r in requests]
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t - start < 1.0)
        assert in_window <= rate, f"{in_window} subscribe requests within one second"
    assert times[-1] - times[0] >= (len(times) - 1) / rate * 0.9


def test_refused_and_failed_subscriptions_are_retried(run_desk: RunDesk, server: ScriptedServer) -> None:
    server.refuse_channel("ticker.BTC-PERPETUAL.100ms")
    server.fail_next("private/subscribe")
    desk = run_desk()
    subscribed = desk.wait_state(S.SUBSCRIBED)
    assert server.subscribed() == PUBLIC_BTC | PRIVATE_BTC
    asked = [c for c in server.calls() if "ticker.BTC-PERPETUAL.100ms" in c.params.get("channels", ())]
    assert len(asked) >= 2 and asked[-1].params["channels"] == ["ticker.BTC-PERPETUAL.100ms"]  # alone, again
    assert len(server.calls("private/subscribe")) >= 2
    assert desk.log_events("subscribe_refused")[0]["count"] == 1
    assert desk.log_events("subscribe_failed")[0]["code"] == 11094
    assert subscribed.detail == f"{len(PUBLIC_BTC | PRIVATE_BTC)} of {len(PUBLIC_BTC | PRIVATE_BTC)} channels"


def test_resubscribe_instrument_unsubscribes_then_subscribes_its_book(
        run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    first = {b.instrument_name: b for b in desk.wait_seen(BookSnapshot, count=2)}[CALL]
    desk.publish(ResubscribeInstrument(instrument_name=CALL, origin="books", reason="gap"))
    (unsubscribe,) = server.wait_for_call("public/unsubscribe")
    (again,) = server.wait_for_call("public/subscribe", where=lambda c: c.at > unsubscribe.at)
    assert unsubscribe.params["channels"] == again.params["channels"] == [f"book.{CALL}.100ms"]
    fresh = desk.wait_seen(BookSnapshot, lambda b: b.instrument_name == CALL and b.change_id > first.change_id)
    assert fresh
    assert desk.connection().ask(GetLinkStats(), timeout=5)["resyncs"] == 1
    # A future's top of book is its quote channel: that is what starts afresh.
    desk.publish(ResubscribeInstrument(instrument_name="BTC-PERPETUAL", origin="books", reason="crossed"))
    unsubscribe = server.wait_for_call("public/unsubscribe", count=2)[1]
    server.wait_for_call("public/subscribe", where=lambda c: c.at > unsubscribe.at)
    assert unsubscribe.params["channels"] == ["quote.BTC-PERPETUAL"]
    server.wait_until(lambda: server.subscribed() == PUBLIC_BTC | PRIVATE_BTC, what="every channel back")


# -- orders ----------------------------------------------------------------------------------------------
def test_place_edit_cancel_round_trip(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    desk.publish(order("p-1", label="lbl"))
    placed = desk.wait_answer("p-1")
    assert isinstance(placed, CommandResult) and placed.method == "private/buy" and placed.origin == "test"
    assert placed.order is not None and placed.order.order_state == "open" and placed.order.label == "lbl"
    (buy,) = server.calls("private/buy")
    assert buy.params == {"instrument_name": CALL, "amount": 0.1, "type": "limit", "price": 0.05,
                          "time_in_force": "good_til_cancelled", "post_only": False, "reduce_only": False,
                          "label": "lbl"}
    desk.publish(EditOrder(order_id=placed.order.order_id, amount=0.2, price=0.045, origin="test",
                           request_key="e-1"))
    edited = desk.wait_answer("e-1")
    assert isinstance(edited, CommandResult) and edited.order is not None and edited.order.amount == 0.2
    desk.publish(CancelOrder(order_id=placed.order.order_id, origin="test", request_key="c-1"))
    cancelled = desk.wait_answer("c-1")
    assert isinstance(cancelled, CommandResult) and cancelled.order is not None
    assert cancelled.order.order_state == "cancelled"

    desk.publish(order("bad-1", price=None))  # a limit order without a price
    refused = desk.wait_answer("bad-1")
    assert isinstance(refused, CommandFailed) and refused.code == INVALID and "needs a price" in refused.message
    desk.publish(CancelOrder(order_id="SCR-404", origin="test", request_key="c-404"))
    rejected = desk.wait_answer("c-404")
    assert isinstance(rejected, CommandFailed) and rejected.code == 11044
    assert len(server.calls("private/buy")) == 1


def test_rate_limited_order_goes_out_exactly_once_more(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    server.rate_limit_next("private/buy")
    desk.publish(order("r-1"))
    answer = desk.wait_answer("r-1")
    time.sleep(1.0)  # room for a wrong third send or a second answer
    first, second = server.calls("private/buy")
    assert second.at - first.at >= 0.2  # backed off
    assert first.params == second.params
    assert isinstance(answer, CommandResult) and len(desk.answers("r-1")) == 1
    assert desk.log_events("order_rate_limited")[0]["request_key"] == "r-1"


def test_order_without_answer_is_reported_lost_once(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk({"deribit.request_timeout_s": 1.0})
    desk.wait_state(S.SUBSCRIBED)
    server.swallow_next("private/buy")
    desk.publish(order("lost-1"))
    answer = desk.wait_answer("lost-1", timeout=5)
    assert isinstance(answer, CommandFailed) and answer.code == ANSWER_LOST and "unknown" in answer.message
    server.swallow_next("private/sell")
    desk.publish(order("lost-2", side="sell"))
    server.wait_for_call("private/sell")
    server.close_connections()
    answer = desk.wait_answer("lost-2", timeout=5)
    assert isinstance(answer, CommandFailed) and answer.code == ANSWER_LOST and "connection lost" in answer.message
    time.sleep(1.2)
    assert len(desk.answers("lost-1")) == len(desk.answers("lost-2")) == 1


def test_commands_are_refused_while_disconnected_and_never_sent(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    server.refuse_connects = True
    server.close_connections()
    desk.wait_state(S.DISCONNECTED)
    desk.publish(order("d-1"))
    desk.publish(CancelOrder(order_id="SCR-1", origin="test", request_key="d-2"))
    for key in ("d-1", "d-2"):
        answer = desk.wait_answer(key)
        assert isinstance(answer, CommandFailed) and answer.code == NOT_CONNECTED and answer.code < 0
        assert "not connected" in answer.message
    server.refuse_connects = False
    desk.wait_state(S.SUBSCRIBED, count=2)
    time.sleep(0.5)
    assert not server.calls("private/buy") and not server.calls("private/cancel")


def test_mainnet_without_live_refuses_orders_and_sends_nothing(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk(venue="mainnet")
    subscribed = desk.wait_state(S.SUBSCRIBED)
    assert subscribed.authenticated and not subscribed.can_trade
    desk.publish(order("m-1"))
    answer = desk.wait_answer("m-1")
    assert isinstance(answer, CommandFailed) and answer.code == TRADING_DISABLED and "--live" in answer.message
    assert not server.calls("private/buy")
    assert not server.calls("private/enable_cancel_on_disconnect")


def test_paper_mode_logs_orders_and_sends_none(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk(paper=True)
    desk.wait_state(S.SUBSCRIBED)
    desk.publish(order("paper-1"))
    answer = desk.wait_answer("paper-1")
    assert isinstance(answer, CommandFailed) and answer.code == PAPER_ONLY
    logged = desk.wait_log("paper_order")
    assert logged["method"] == "private/buy" and logged["params"]["instrument_name"] == CALL
    assert not server.calls("private/buy")
    assert not server.calls("private/enable_cancel_on_disconnect")


@pytest.mark.parametrize(("settings", "enabled"), [
    ({"venue": "testnet"}, True),
    ({"venue": "mainnet", "live": True}, True),
    ({"venue": "testnet", "deribit.cancel_on_disconnect": False}, False),
    ({"venue": "mainnet"}, False),
])
def test_cancel_on_disconnect_is_enabled_when_trading(
        run_desk: RunDesk, server: ScriptedServer, settings: dict[str, Any], enabled: bool) -> None:
    desk = run_desk(settings)
    desk.wait_state(S.SUBSCRIBED)
    calls = server.calls("private/enable_cancel_on_disconnect")
    if enabled:
        auth = server.calls("public/auth")[0]
        assert [c.params for c in calls] == [{"scope": "connection"}] and calls[0].at > auth.at
        desk.wait_log("cancel_on_disconnect_enabled")
    else:
        assert calls == []


# -- reconcile and instruments -----------------------------------------------------------------------------
def test_reconcile_waits_for_login_then_publishes_exchange_state(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.publish(ReconcilePortfolio(origin="portfolio", reason="startup"))  # before the login
    (state,) = desk.wait_seen(ExchangeState)
    assert state.currency == "BTC" and state.reason == "startup" and state.positions == ()
    assert state.summary is not None and state.summary.equity == 10.0
    desk.publish(order("o-1"))
    desk.wait_answer("o-1")
    desk.publish(ReconcilePortfolio(origin="portfolio", reason="check"))
    second = desk.wait_seen(ExchangeState, lambda s: s.reason == "check")[0]
    assert [o.order_id for o in second.open_orders] == [desk.answers("o-1")[0].order.order_id]  # type: ignore[union-attr]


def test_instrument_listings_and_expiries_follow_instrument_state(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    new = _option("BTC", 70000, "C")
    server.instruments["BTC"] = [*server.instruments["BTC"], new]
    server.push("instrument.state.option.BTC", {"instrument_name": new["instrument_name"], "state": "created",
                                                "timestamp": 1})
    desk.wait_seen(InstrumentsLoaded, count=2)
    server.wait_until(lambda: f"book.{new['instrument_name']}.100ms" in server.subscribed(), what="the new book")
    assert len(server.calls("public/get_instruments")) == 2

    server.instruments["BTC"] = [i for i in server.instruments["BTC"] if i["instrument_name"] != PUT]
    server.push("instrument.state.option.BTC", {"instrument_name": PUT, "state": "settled", "timestamp": 2})
    (unsubscribe,) = server.wait_for_call("public/unsubscribe")
    assert sorted(unsubscribe.params["channels"]) == [f"book.{PUT}.100ms", f"ticker.{PUT}.100ms"]
    server.wait_until(lambda: not {f"book.{PUT}.100ms", f"ticker.{PUT}.100ms"} & server.subscribed(),
                      what="the expired option unsubscribed")


def test_orders_stuck_behind_the_rate_limit_are_not_sent_late(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk({"deribit.order_requests_per_s": 0.4, "deribit.order_burst": 1, "deribit.request_timeout_s": 1.0})
    desk.wait_state(S.SUBSCRIBED)
    desk.publish(order("q-1"))
    desk.publish(order("q-2"))  # a token only every 2.5 s: waits longer than the 1 s it may
    desk.publish(CancelOrder(order_id="SCR-1000", origin="test", request_key="q-3"))
    assert isinstance(desk.wait_answer("q-1"), CommandResult)
    late = desk.wait_answer("q-2", timeout=5)
    assert isinstance(late, CommandFailed) and late.code == QUEUED_TOO_LONG and "not sent" in late.message
    assert isinstance(desk.wait_answer("q-3", timeout=5), CommandResult)  # a cancel always goes
    assert len(server.calls("private/buy")) == 1 and len(server.calls("private/cancel")) == 1


def test_safe_shutdown_cancels_every_order(run_desk: RunDesk, server: ScriptedServer) -> None:
    desk = run_desk()
    desk.wait_state(S.SUBSCRIBED)
    desk.publish(order("s-1"))
    desk.wait_answer("s-1")
    desk.publish(SafeShutdown(reason="too many restarts"))
    (cancel_all,) = server.wait_for_call("private/cancel_all")
    assert cancel_all.params == {}
    answer = desk.wait_answer("safe-shutdown")
    assert isinstance(answer, CommandResult) and answer.origin == "connection" and answer.result == "1"
    assert desk.log_events("cancelling_all_orders")[0]["reason"] == "too many restarts"
    # From then on no new order goes out (a hedger deciding on the next frame is refused); cancels do.
    desk.publish(order("s-2"))
    refused = desk.wait_answer("s-2")
    assert isinstance(refused, CommandFailed) and refused.code == NOT_CONNECTED and "safe shutdown" in refused.message
    desk.publish(CancelOrder(order_id="SCR-1", origin="test", request_key="s-3"))
    desk.wait_answer("s-3")
    assert len(server.calls("private/buy")) == 1 and len(server.calls("private/cancel")) == 1


class _BrokenTransport:
    """Connects, then fails in a way no link problem does (a bug in the receiving code)."""

    def __init__(self, _url: str) -> None:
        self.closed = False

    def connect(self) -> None:
        pass

    def recv(self, _timeout_s: float) -> str | None:
        raise KeyError("a bug, not a closed socket")

    def send(self, _frame: bytes | str) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def test_a_failing_link_thread_fails_the_actor_for_the_supervisor(tmp_path: Path) -> None:
    settings = connection_settings(tmp_path, {"supervisor.backoff_initial_s": 0.05})
    supervisor = make_supervisor(settings, [ActorSpec("connection", lambda ctx: Connection.start(
        ctx, url="ws://unused", transport_factory=_BrokenTransport))], WallClock())
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    supervisor.start()
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while supervisor.restarts("connection") < 1:
            assert time.monotonic() < deadline, "the Connection was not restarted"
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(5)
        supervisor.stop()
        pykka.ActorRegistry.stop_all()


def test_the_connection_needs_a_url_or_a_replay_file(tmp_path: Path) -> None:
    settings = connection_settings(tmp_path)
    with pytest.raises(ValueError, match="websocket URL"):
        Connection(ActorContext(name="c", clock=WallClock(), settings=settings, publish=lambda _m: None))
