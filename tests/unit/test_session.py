"""The Connection's conversation (deribit.session.Session) driven by hand: events in, with ``now``;
frames to send and messages to publish out. No threads, no sockets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.connection import Connection, _Answer
from deribit.codec import RpcError, RpcResponse
from deribit.link import LinkUp, Wake
from deribit.platform import PlatformLocks, PlatformStatus, index_of
from deribit.session import (
    MAX_RATE_LIMIT_RETRIES,
    Announce,
    GetOpenOrders,
    GetPositions,
    GetSummary,
    Link,
    Login,
    ResyncSubscribe,
    Send,
    SendOrder,
    Session,
    Subscribe,
    Unsubscribe,
)
from deribit.subscriptions import RESYNC_REQUESTS_PER_S
from deribit.transport import LinkClosed
from messages.account import ExchangeState, ExchangeWindow, ReconcileFailed, ReconcileStarted, SettlementHistory
from messages.commands import (
    ANSWER_LOST,
    INVALID,
    NOT_CONNECTED,
    PAPER_ONLY,
    PLATFORM_LOCKED,
    QUEUED_TOO_LONG,
    REPLAY_ONLY,
    TRADING_DISABLED,
    AuditOutcome,
    CancelAll,
    CancelOrder,
    CommandFailed,
    CommandResult,
    OrderResolved,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
    ResubscribeInstrument,
)
from messages.market import InstrumentsLoaded, InstrumentState, PlatformState
from messages.system import ConnectionState, ConnectionStatus, ConnectionStatusRequest, DailyRollover, SafeShutdown
from runtime.actor import ActorContext
from runtime.clock import WallClock
from tests.support.connection_harness import connection_settings
from tests.support.public_instruments import public_entries
from tests.support.scripted_server import tiny_instruments

EPOCH_MS = 1_700_000_000_000
PUBLIC_BTC = {"deribit_price_index.btc_usd", "instrument.state.option.BTC", "instrument.state.future.BTC",
              "platform_state", "deribit_volatility_index.btc_usd"}
PRIVATE_BTC = {"user.orders.any.BTC.raw", "user.trades.any.BTC.raw", "user.changes.any.BTC.raw", "user.portfolio.btc"}
MARKET_BTC = {"book.BTC-1JAN00-60000-C.100ms", "ticker.BTC-1JAN00-60000-C.100ms", "book.BTC-1JAN00-60000-P.100ms",
              "ticker.BTC-1JAN00-60000-P.100ms", "quote.BTC-PERPETUAL", "ticker.BTC-PERPETUAL.100ms"}


class Log:
    """A structlog-like logger that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def exception(self, event: str, **fields: Any) -> None:
        self.lines.append(("exception", event, fields))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [fields for _level, name, fields in self.lines if name == event]


class Rig:
    """A session, what it sent (decoded frames) and what it published."""

    def __init__(self, tmp_path: Path, values: Mapping[str, Any] | None = None, /, *, replay: bool = False,
                 **keys: Any) -> None:
        """``values`` are dotted settings keys, ``keys`` top-level ones (:func:`connection_settings`)."""
        self.settings = connection_settings(tmp_path, values, **keys)
        self.log = Log()
        self.session = Session(self.settings, now=0.0, log=self.log, clock=lambda: 1_000.0,
                               epoch_ms=lambda: EPOCH_MS, replay=replay)
        self.sent: list[dict[str, Any]] = []
        self.published: list[Any] = []

    def take(self, effects: list[Any]) -> list[Any]:
        for effect in effects:
            if isinstance(effect, Send):
                frame = msgspec.json.decode(effect.frame)
                assert frame["method"] == effect.method and frame["id"] == effect.request_id
                self.sent.append(frame)
            elif isinstance(effect, Announce):
                self.published.append(effect.message)
            else:
                self.published.append(effect)
        return effects

    def requests(self, method: str) -> list[dict[str, Any]]:
        return [frame for frame in self.sent if frame["method"] == method]

    def last(self, method: str) -> dict[str, Any]:
        return self.requests(method)[-1]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.published if isinstance(m, kind)]

    def answer(self, request: dict[str, Any], result: Any, now: float) -> list[Any]:
        return self.take(self.session.answer(RpcResponse(id=request["id"], result=msgspec.Raw(msgspec.json.encode(
            result))), now))

    def error(self, request: dict[str, Any], code: int, now: float, message: str = "refused") -> list[Any]:
        return self.take(self.session.answer(RpcError(id=request["id"], code=code, message=message), now))

    def confirm_subscriptions(self, now: float) -> None:
        """Answer every subscribe request not yet answered with all its channels."""
        for request in list(self.sent):
            if request["method"].endswith("/subscribe") and request["id"] in self.session.pending:
                self.answer(request, request["params"]["channels"], now)

    def states(self) -> list[ConnectionState]:
        return [s.state for s in self.of(ConnectionStatus)]

    def log_in(self, now: float = 0.0, expires_in: int = 900, link_up: bool = True) -> None:
        """Link up (unless it is), logged in, the instruments listed, every channel confirmed."""
        if link_up:
            self.take(self.session.link_up(now))
        self.answer(self.last("public/auth"), {"access_token": "a", "refresh_token": "r", "expires_in": expires_in},
                    now)
        self.answer(self.last("public/get_instruments"), tiny_instruments()["BTC"], now)
        for step in range(20):  # the subscribe bucket gives one request per 1/20 s
            self.take(self.session.tick(now + step / 20))
            self.confirm_subscriptions(now + step / 20)
        assert self.session.link is Link.READY


def order(key: str, **fields: Any) -> PlaceOrder:
    values: dict[str, Any] = {"instrument_name": "BTC-PERPETUAL", "side": "sell", "amount": 10.0, "type": "market",
                              "origin": "test", "request_key": key}
    values.update(fields)
    return PlaceOrder(**values)


# -- the link's state --------------------------------------------------------------------------------------
def test_the_links_state_is_one_enum_with_its_transitions() -> None:
    assert not Link.DOWN.up and not Link.DOWN.with_login(True).up  # down stays down
    assert Link.CONNECTED.with_login(True) is Link.AUTHENTICATED
    assert Link.AUTHENTICATED.with_subscribed(True) is Link.READY
    assert Link.READY.with_login(False) is Link.SUBSCRIBED
    assert Link.SUBSCRIBED.with_subscribed(False) is Link.CONNECTED
    assert Link.READY.logged_in and Link.READY.subscribed and not Link.SUBSCRIBED.logged_in


# -- login and token refresh --------------------------------------------------------------------------------
def test_login_on_link_up_and_refresh_at_four_fifths_of_the_tokens_life(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.take(rig.session.link_up(0.0))
    assert [f["method"] for f in rig.sent][:4] == ["public/set_heartbeat", "public/auth", "public/status",
                                                 "public/get_instruments"]
    assert rig.last("public/set_heartbeat")["params"] == {"interval": 10}
    login = rig.last("public/auth")["params"]
    assert (login["grant_type"], login["timestamp"]) == ("client_signature", EPOCH_MS)
    assert rig.session.link is Link.CONNECTED
    assert isinstance(rig.session.pending[rig.last("public/auth")["id"]], Login)

    rig.answer(rig.last("public/auth"), {"access_token": "a", "refresh_token": "r1", "expires_in": 100}, 1.0)
    assert rig.session.link is Link.AUTHENTICATED and rig.states() == [ConnectionState.AUTHENTICATED]
    assert rig.requests("private/enable_cancel_on_disconnect")
    logins = len(rig.requests("public/auth"))
    rig.take(rig.session.tick(80.9))  # 0.8 x 100 s after the answer at 1.0: not yet
    assert len(rig.requests("public/auth")) == logins
    rig.take(rig.session.tick(81.0))
    refresh = rig.last("public/auth")
    assert refresh["params"] == {"grant_type": "refresh_token", "refresh_token": "r1"}
    rig.take(rig.session.tick(82.0))  # one refresh at a time
    assert len(rig.requests("public/auth")) == logins + 1
    rig.answer(refresh, {"access_token": "b", "refresh_token": "r2", "expires_in": 100}, 82.0)
    assert rig.log.events("token_refreshed") and rig.session.link.logged_in

    rig.take(rig.session.tick(162.0))  # a refused refresh: a fresh login instead
    rig.error(rig.last("public/auth"), 13009, 162.0)
    assert rig.log.events("token_refresh_failed")
    assert rig.last("public/auth")["params"]["grant_type"] == "client_signature"


def test_a_rejected_login_refuses_orders_and_says_why(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.take(rig.session.link_up(0.0))
    rig.error(rig.last("public/auth"), 13004, 0.1, message="invalid_credentials")
    assert rig.states() == [ConnectionState.CONNECTED] and not rig.session.authenticated
    rig.take(rig.session.command(order("o-1"), 0.2))
    refused = rig.of(CommandFailed)[-1]
    assert (refused.code, refused.request_key) == (NOT_CONNECTED, "o-1")
    assert "login rejected: invalid_credentials (code 13004)" in refused.message


# -- subscriptions ------------------------------------------------------------------------------------------
def test_subscriptions_go_in_batches_under_the_rate_limit(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": "", "deribit.subscribe_batch_size": 2,
                         "deribit.subscribe_requests_per_s": 1.0})
    rig.take(rig.session.link_up(0.0))
    assert not rig.requests("public/auth")  # no credentials: public data only
    assert [len(f["params"]["channels"]) for f in rig.requests("public/subscribe")] == [2]
    rig.take(rig.session.tick(0.9))
    assert len(rig.requests("public/subscribe")) == 1  # one request a second, burst 1
    rig.take(rig.session.tick(1.0))
    subscribes = rig.requests("public/subscribe")
    assert [len(f["params"]["channels"]) for f in subscribes] == [2, 2]
    rig.take(rig.session.tick(2.0))
    subscribes = rig.requests("public/subscribe")
    assert [len(f["params"]["channels"]) for f in subscribes] == [2, 2, 1]
    assert {c for f in subscribes for c in f["params"]["channels"]} == PUBLIC_BTC
    assert all(isinstance(rig.session.pending[f["id"]], Subscribe) for f in subscribes)


def test_subscribed_is_announced_once_every_channel_is_confirmed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": ""})
    rig.take(rig.session.link_up(0.0))
    rig.confirm_subscriptions(0.0)
    assert ConnectionState.SUBSCRIBED not in rig.states()  # the instruments are not listed yet
    rig.answer(rig.last("public/get_instruments"), tiny_instruments()["BTC"], 0.1)
    assert [m.currency for m in rig.of(InstrumentsLoaded)] == ["BTC"]
    assert ConnectionState.SUBSCRIBED not in rig.states()  # the listed instruments' channels are not confirmed
    for step in range(1, 10):
        rig.take(rig.session.tick(step / 10))
        rig.confirm_subscriptions(step / 10)
    wanted = PUBLIC_BTC | MARKET_BTC
    assert rig.session.subs.confirmed == wanted
    subscribed = [s for s in rig.of(ConnectionStatus) if s.state is ConnectionState.SUBSCRIBED]
    assert len(subscribed) == 1 and subscribed[0].detail == f"{len(wanted)} of {len(wanted)} channels"
    assert not subscribed[0].can_trade  # not logged in
    rig.take(rig.session.tick(5.0))
    assert rig.states().count(ConnectionState.SUBSCRIBED) == 1
    assert rig.session.link is Link.SUBSCRIBED


def test_a_partly_refused_batch_is_retried_and_holds_subscribed_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": ""})
    rig.take(rig.session.link_up(0.0))
    rig.answer(rig.last("public/get_instruments"), tiny_instruments()["BTC"], 0.0)
    request = rig.last("public/subscribe")
    rig.answer(request, request["params"]["channels"][1:], 0.0)
    assert rig.log.events("subscribe_refused")[0]["count"] == 1
    assert rig.session.sub_retry_at == pytest.approx(0.5)  # retry_delay(1, initial=0.5)
    before = len(rig.requests("public/subscribe"))
    rig.take(rig.session.tick(0.4))
    assert len(rig.requests("public/subscribe")) == before
    for step in range(5, 30):
        rig.take(rig.session.tick(step / 10))
        rig.confirm_subscriptions(step / 10)
    assert rig.session.subs.complete and rig.states().count(ConnectionState.SUBSCRIBED) == 1


def test_everything_is_subscribed_again_after_a_reconnect(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    assert rig.session.subs.confirmed == PUBLIC_BTC | PRIVATE_BTC | MARKET_BTC
    rig.take(rig.session.link_down("gone"))
    assert rig.session.link is Link.DOWN and not rig.session.can_trade
    rig.sent.clear()
    rig.published.clear()
    rig.take(rig.session.link_up(10.0))
    # The known instruments' channels are wanted at once; the private ones after the new login.
    first = {c for f in rig.requests("public/subscribe") for c in f["params"]["channels"]}
    assert first == PUBLIC_BTC | MARKET_BTC
    rig.log_in(10.0, link_up=False)
    again = {c for f in rig.sent if f["method"].endswith("/subscribe") for c in f["params"]["channels"]}
    assert again == PUBLIC_BTC | PRIVATE_BTC | MARKET_BTC
    assert rig.states().count(ConnectionState.SUBSCRIBED) == 1 and rig.of(ConnectionStatus)[-1].can_trade


def test_a_resync_unsubscribes_and_subscribes_the_book_afresh(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    book = "book.BTC-1JAN00-60000-C.100ms"
    rig.take(rig.session.resubscribe(ResubscribeInstrument(instrument_name="BTC-1JAN00-60000-C", origin="t",
                                                           reason="gap"), 5.0))
    unsubscribe = rig.last("public/unsubscribe")
    assert unsubscribe["params"]["channels"] == [book] and rig.session.resyncs == 1
    rig.answer(unsubscribe, [book], 5.0)
    rig.take(rig.session.tick(6.0))
    assert rig.last("public/subscribe")["params"]["channels"] == [book]


Requests = list[tuple[float, list[str]]]


def _subscribe_under_a_gap_storm(tmp_path: Path, storm: bool) -> tuple[Rig, Requests, Requests, float]:
    """Public data only, 2 channels a request, 1 request a second: 11 channels in 6 batches.
    Every request is answered at once; with ``storm``, both books (subscribed first) find a gap
    every 0.1 s. Returns the rig, the full subscription's requests and the resyncs' (time,
    channels), and when SUBSCRIBED came."""
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": "", "deribit.subscribe_batch_size": 2,
                         "deribit.subscribe_requests_per_s": 1.0})
    rig.take(rig.session.link_up(0.0))
    rig.answer(rig.last("public/get_instruments"), tiny_instruments()["BTC"], 0.0)
    full: Requests = []
    resyncs: Requests = []
    subscribed_at = -1.0
    for step in range(200):
        now = step / 10
        if storm:
            for name in ("BTC-1JAN00-60000-C", "BTC-1JAN00-60000-P"):
                rig.take(_resync(rig, name, now))
        rig.take(rig.session.tick(now))
        for request in list(rig.sent):
            pending = rig.session.pending.get(request["id"])
            if pending is None:
                continue
            if isinstance(pending, Subscribe):
                full.append((now, request["params"]["channels"]))
            elif isinstance(pending, ResyncSubscribe | Unsubscribe):
                resyncs.append((now, request["params"]["channels"]))
            else:
                continue
            rig.answer(request, request["params"]["channels"], now)
        if subscribed_at < 0 and ConnectionState.SUBSCRIBED in rig.states():
            subscribed_at = now
    return rig, full, resyncs, subscribed_at


def test_a_storm_of_gaps_never_delays_the_full_subscription_and_resyncs_keep_their_own_budget(
        tmp_path: Path) -> None:
    """Issue 17: resyncs took the one subscribe token each time, the remaining batches never went
    out and SUBSCRIBED never came. The full subscription now goes exactly as on a calm link, and
    the resyncs (unsubscribes and fresh subscribes) stay within their own budget."""
    calm, calm_full, calm_resyncs, calm_at = _subscribe_under_a_gap_storm(tmp_path, storm=False)
    rig, full, resyncs, subscribed_at = _subscribe_under_a_gap_storm(tmp_path, storm=True)
    assert full == calm_full and len(full) == 6 and calm_resyncs == []
    assert subscribed_at == calm_at >= 0 and rig.states().count(ConnectionState.SUBSCRIBED) == 1
    # The books were resynced again and again (an unsubscribe, then a fresh subscribe) ...
    assert len(rig.requests("public/unsubscribe")) > 5 and len(resyncs) > 10
    assert rig.session.resyncs > len(rig.requests("public/unsubscribe"))  # gaps of a book being resynced: one
    # ... never faster than their own budget (burst 1).
    for i, (start, _) in enumerate(resyncs):
        for j in range(i, len(resyncs)):
            assert j - i + 1 <= 1 + RESYNC_REQUESTS_PER_S * (resyncs[j][0] - start) + 1e-9
    # Once the gaps stop, every resync finishes: every channel confirmed, none left resyncing.
    for step in range(200, 240):
        rig.take(rig.session.tick(step / 10))
        rig.confirm_subscriptions(step / 10)
        for request in rig.requests("public/unsubscribe"):
            if request["id"] in rig.session.pending:
                rig.answer(request, request["params"]["channels"], step / 10)
    assert not rig.session.subs.resyncing and rig.session.subs.confirmed == calm.session.subs.confirmed


# -- the instrument list --------------------------------------------------------------------------------------
def test_an_unusable_instrument_is_dropped_from_the_list_with_a_warning_and_the_rest_kept(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": ""})
    rig.take(rig.session.link_up(0.0))
    perpetual, call, put = tiny_instruments()["BTC"]
    zero_tick = {**perpetual, "instrument_name": "BTC-1JAN30", "settlement_period": "month", "tick_size": 0.0}
    rig.answer(rig.last("public/get_instruments"),
               [perpetual, zero_tick, call, {**put, "min_trade_amount": -0.1}, {**call, "instrument_name": "BTC-X",
                                                                                "contract_size": None}], 0.1)
    [loaded] = rig.of(InstrumentsLoaded)
    assert [i.instrument_name for i in loaded.instruments] == ["BTC-PERPETUAL", "BTC-1JAN00-60000-C"]
    refused = [(level, fields["instrument"], fields["field"], fields["value"]) for level, event, fields in rig.log.lines
               if event == "instrument_refused"]
    assert refused == [("warning", "BTC-X", "contract_size", "null"), ("warning", "BTC-1JAN30", "tick_size", "0.0"),
                       ("warning", "BTC-1JAN00-60000-P", "min_trade_amount", "-0.1")]
    assert rig.log.events("instruments_loaded")[-1]["refused"] == 3
    wanted = rig.session.subs.wanted
    assert "quote.BTC-PERPETUAL" in wanted and "book.BTC-1JAN00-60000-C.100ms" in wanted
    assert not {c for c in wanted if "BTC-1JAN30" in c or "60000-P" in c or "BTC-X" in c}
    # An instrument listed before whose metadata turns bad is dropped, and its channels with it.
    rig.take(rig.session.handle(RefreshInstruments(origin="test", reason="again"), 1.0))
    rig.answer(rig.last("public/get_instruments"), [{**perpetual, "tick_size": -0.5}, call, put], 1.0)
    assert [i.instrument_name for i in rig.of(InstrumentsLoaded)[-1].instruments] == [
        "BTC-1JAN00-60000-C", "BTC-1JAN00-60000-P"]
    assert not {c for c in rig.session.subs.wanted if "BTC-PERPETUAL" in c}
    assert rig.log.events("instrument_refused")[-1] == {"currency": "BTC", "instrument": "BTC-PERPETUAL",
                                                        "field": "tick_size", "value": "-0.5",
                                                        "problem": "must be a positive finite number"}


# -- families: what a currency setting loads (tests/support/public_instruments.py: real entries) ------
def _rig(tmp_path: Path, *currencies: str) -> Rig:
    rig = Rig(tmp_path, {"deribit.client_id": "", "deribit.client_secret": ""}, currencies=list(currencies))
    rig.take(rig.session.link_up(0.0))
    return rig


def _load(rig: Rig, listed_under: str) -> dict[str, Any]:
    [request] = [r for r in rig.requests("public/get_instruments") if r["params"]["currency"] == listed_under]
    return request


def test_a_linear_family_is_loaded_from_the_usdc_list_and_keeps_only_its_coin(tmp_path: Path) -> None:
    e = public_entries()
    rig = _rig(tmp_path, "BTC", "SOL_USDC")
    assert sorted(r["params"]["currency"] for r in rig.requests("public/get_instruments")) == ["BTC", "USDC"]
    usdc = [e[k] for k in ("btc_usdc_perpetual", "sol_usdc_perpetual", "sol_call", "sol_put", "xrp_call",
                           "btc_usdc_call")]
    rig.answer(_load(rig, "USDC"), usdc, 0.1)
    [loaded] = rig.of(InstrumentsLoaded)
    assert loaded.currency == "SOL_USDC"
    assert [i.instrument_name for i in loaded.instruments] == ["SOL_USDC-PERPETUAL", "SOL_USDC-26JUN26-150-C",
                                                               "SOL_USDC-26JUN26-140-P"]
    [line] = rig.log.events("instruments_left_out")
    assert line["currency"] == "SOL_USDC" and line["listed_under"] == "USDC" and line["kept"] == 3
    assert line["by_reason"] == {"other_coin": 3} and line["examples"] == {"other_coin": "BTC_USDC-PERPETUAL"}
    wanted = rig.session.subs.wanted
    assert {"deribit_price_index.sol_usdc", "instrument.state.option.USDC", "instrument.state.future.USDC",
            "book.SOL_USDC-26JUN26-150-C.100ms", "quote.SOL_USDC-PERPETUAL"} <= wanted
    assert not {c for c in wanted if "XRP" in c or "BTC_USDC" in c}


def test_combos_spot_and_linear_entries_in_an_inverse_list_are_one_line_and_never_fail_the_load(
        tmp_path: Path) -> None:
    e = public_entries()
    rig = _rig(tmp_path, "BTC")
    listed = [e["inverse_option"], e["btc_usdc_perpetual"], e["spot"], *e["option_combos"], *e["future_combos"]]
    rig.answer(_load(rig, "BTC"), listed, 0.1)
    [loaded] = rig.of(InstrumentsLoaded)
    assert [i.instrument_name for i in loaded.instruments] == ["BTC-26JUN26-100000-C"]
    [line] = rig.log.events("instruments_left_out")
    assert line["left_out"] == 14 and line["by_reason"] == {"linear": 1, "spot": 1, "combo": 12}
    assert not rig.log.events("instrument_refused") and not rig.log.events("instruments_retry")
    assert "BTC" not in rig.session.instruments.needed  # loaded: no retry
    # A list of only such entries is still a load (no books), not a failure.
    rig.take(rig.session.handle(RefreshInstruments(origin="test", reason="again"), 1.0))
    rig.answer(rig.last("public/get_instruments"), e["option_combos"], 1.0)
    assert rig.of(InstrumentsLoaded)[-1].instruments == () and len(rig.log.events("instruments_left_out")) == 2


def test_instrument_states_of_families_not_configured_are_not_ours(tmp_path: Path) -> None:
    rig = _rig(tmp_path, "BTC", "SOL_USDC")
    rig.answer(_load(rig, "USDC"), [public_entries()["sol_call"]], 0.1)
    loads = len(rig.requests("public/get_instruments"))
    for name in ("XRP_USDC-26JUN26-0d7-C", "BTC_USDC-26JUN26-120000-C", "BTC-STRG-19MAY26-74000_79000x"):
        rig.take(rig.session.handle(InstrumentState(instrument_name=name, state="created", timestamp=0), 1.0))
    assert len(rig.requests("public/get_instruments")) == loads  # another family's, or not a family at all
    assert not rig.log.events("refresh_unknown_currency")
    rig.take(rig.session.handle(InstrumentState(instrument_name="SOL_USDC-26JUN26-160-C", state="created",
                                                timestamp=0), 1.0))
    assert rig.last("public/get_instruments")["params"]["currency"] == "USDC"


# -- orders -----------------------------------------------------------------------------------------------
def test_orders_wait_for_the_rate_limit_and_a_rate_limited_order_is_sent_again_after_a_backoff(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.order_requests_per_s": 1.0, "deribit.order_burst": 1})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.take(rig.session.command(order("o-2"), 10.0))
    assert [f["params"]["amount"] for f in rig.requests("private/sell")] == [10.0]
    assert len(rig.session.order_queue) == 1
    first = rig.last("private/sell")
    rig.error(first, 10028, 10.1, message="too_many_requests")
    assert rig.log.events("order_rate_limited")[0] == {"request_key": "o-1", "retry_in_s": 0.25, "retry": 1}
    assert [q.command.request_key for q in rig.session.order_queue] == ["o-1", "o-2"]  # back at the head
    rig.take(rig.session.tick(10.3))  # past its backoff, but the bucket was drained at 10.1
    assert len(rig.requests("private/sell")) == 1
    rig.take(rig.session.tick(11.1))
    again = rig.last("private/sell")
    assert again["id"] != first["id"] and len(rig.requests("private/sell")) == 2
    assert not rig.of(CommandFailed)
    rig.answer(again, {"order": {}, "trades": []}, 11.2)
    assert [a.request_key for a in rig.of(CommandResult)] == ["o-1"]


def test_a_rate_limited_order_gets_the_exchanges_error_after_the_last_retry(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.request_timeout_s": 60.0})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    now = 10.0
    for _retry in range(MAX_RATE_LIMIT_RETRIES):
        rig.error(rig.last("private/sell"), 10028, now, message="too_many_requests")
        now += 6.0  # past the longest backoff (5 s) and a refilled bucket
        rig.take(rig.session.tick(now))
    assert len(rig.requests("private/sell")) == MAX_RATE_LIMIT_RETRIES + 1 and not rig.of(CommandFailed)
    rig.error(rig.last("private/sell"), 10028, now, message="too_many_requests")
    assert [(f.request_key, f.code) for f in rig.of(CommandFailed)] == [("o-1", 10028)]
    assert [e["retry_in_s"] for e in rig.log.events("order_rate_limited")] == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_a_rate_limited_order_that_waited_too_long_in_all_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.request_timeout_s": 5.0})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.error(rig.last("private/sell"), 10028, 14.0, message="too_many_requests")
    rig.take(rig.session.tick(15.1))  # queued at 10.0: over the 5 s a new order may wait
    assert [(f.request_key, f.code) for f in rig.of(CommandFailed)] == [("o-1", QUEUED_TOO_LONG)]


def test_an_order_that_waited_too_long_is_refused_but_a_cancel_still_goes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.order_requests_per_s": 0.01, "deribit.order_burst": 1,
                         "deribit.request_timeout_s": 5.0})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.take(rig.session.command(order("o-2"), 10.0))
    rig.take(rig.session.command(CancelAll(origin="t", request_key="c-1"), 10.0))
    rig.answer(rig.last("private/sell"), {"order": {}, "trades": []}, 10.0)  # o-1's pending answered: no matter
    rig.take(rig.session.tick(15.1))
    assert [(f.request_key, f.code) for f in rig.of(CommandFailed)] == [("o-2", QUEUED_TOO_LONG)]
    assert [q.command.request_key for q in rig.session.order_queue] == ["c-1"]


def test_the_answers_find_their_commands_request_keys(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 1.0))
    rig.take(rig.session.command(order("o-2", side="buy"), 1.0))
    sell, buy = rig.last("private/sell"), rig.last("private/buy")
    pending = rig.session.pending[buy["id"]]
    assert isinstance(pending, SendOrder) and pending.queued.command.request_key == "o-2"
    rig.answer(buy, {"order": {}, "trades": []}, 1.1)  # out of order, and of a shape the codec cannot read
    rig.error(sell, 10009, 1.2, message="not_enough_funds")
    answers = [(a.request_key, a.method, type(a).__name__) for a in rig.of(CommandResult) + rig.of(CommandFailed)]
    assert answers == [("o-2", "private/buy", "CommandResult"), ("o-1", "private/sell", "CommandFailed")]
    assert rig.of(CommandFailed)[0].code == 10009


def test_the_answer_is_lost_with_the_link_and_what_waits_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.order_requests_per_s": 1.0, "deribit.order_burst": 1})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.take(rig.session.command(order("o-2"), 10.0))
    rig.take(rig.session.link_down("reset by peer"))
    failed = {f.request_key: f for f in rig.of(CommandFailed)}
    assert (failed["o-1"].code, failed["o-2"].code) == (ANSWER_LOST, NOT_CONNECTED)
    assert "connection lost (reset by peer) before the exchange answered" in failed["o-1"].message
    assert failed["o-1"].method == "private/sell"
    assert not rig.session.pending and not rig.session.order_queue


def test_an_unanswered_order_times_out_as_lost_and_an_unwritten_one_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.request_timeout_s": 5.0})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.take(rig.session.tick(15.1))
    lost = rig.of(CommandFailed)[-1]
    assert (lost.request_key, lost.code) == ("o-1", ANSWER_LOST) and "no answer within 5 s" in lost.message
    sends = [e for e in rig.take(rig.session.command(order("o-2"), 16.0)) if isinstance(e, Send)]
    rig.take(rig.session.unsent(sends[0].request_id, 16.0))  # the socket failed as it was written
    refused = rig.of(CommandFailed)[-1]
    assert (refused.request_key, refused.code, refused.message) == ("o-2", NOT_CONNECTED, "connection lost; not sent")


def test_every_order_waiting_or_out_is_answered_by_one_function(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.order_requests_per_s": 1.0, "deribit.order_burst": 1})
    rig.log_in()
    rig.take(rig.session.command(order("o-1"), 10.0))
    rig.take(rig.session.command(order("o-2"), 10.0))
    rig.take(rig.session.fail_orders("stopping; not sent"))  # waiting only: o-1's answer may still come
    assert [(f.request_key, f.code) for f in rig.of(CommandFailed)] == [("o-2", NOT_CONNECTED)]
    rig.take(rig.session.fail_orders("failed; not sent", "failed before the answer"))
    assert [(f.request_key, f.code) for f in rig.of(CommandFailed)][-1] == ("o-1", ANSWER_LOST)


@pytest.mark.parametrize(("overrides", "replay", "code"), [
    ({}, True, REPLAY_ONLY),
    ({"paper": True}, False, PAPER_ONLY),
    ({"venue": "mainnet"}, False, TRADING_DISABLED),
])
def test_replay_paper_and_mainnet_without_live_refuse_orders_and_send_nothing(
        tmp_path: Path, overrides: dict[str, Any], replay: bool, code: int) -> None:
    rig = Rig(tmp_path, overrides, replay=replay)
    if not replay:
        rig.log_in()
    sent = len(rig.sent)
    rig.take(rig.session.command(order("o-1"), 10.0))
    refused = rig.of(CommandFailed)[-1]
    assert (refused.request_key, refused.code, refused.method) == ("o-1", code, "private/sell")
    assert len(rig.sent) == sent and not rig.session.order_queue
    if code == PAPER_ONLY:
        assert rig.log.events("paper_order")[0]["params"]["instrument_name"] == "BTC-PERPETUAL"


def test_an_invalid_order_is_refused_before_anything_else(tmp_path: Path) -> None:
    rig = Rig(tmp_path, replay=True)
    rig.take(rig.session.command(order("o-1", amount=-1.0), 0.0))
    assert rig.of(CommandFailed)[-1].code == INVALID


def test_safe_shutdown_refuses_new_orders_and_cancels_all(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.handle(SafeShutdown(reason="too many restarts"), 1.0))
    assert rig.last("private/cancel_all")["params"] == {}
    rig.take(rig.session.command(order("o-1"), 1.1))
    assert rig.of(CommandFailed)[-1].message == "safe shutdown: no new orders; not sent"


OPEN_ORDER = {"order_id": "SCR-7", "instrument_name": "BTC-PERPETUAL", "order_state": "open", "order_type": "limit",
              "direction": "sell", "amount": 50.0, "price": 70000.0, "label": "manual_api_3"}


def test_safe_shutdown_checks_the_open_orders_once_its_cancel_answered(tmp_path: Path) -> None:
    rig = Rig(tmp_path, currencies=["BTC", "ETH"])
    rig.take(rig.session.link_up(0.0))  # logged in is enough: cancels go out before every channel is confirmed
    rig.answer(rig.last("public/auth"), {"access_token": "a", "refresh_token": "r", "expires_in": 900}, 0.0)
    rig.take(rig.session.handle(SafeShutdown(reason="too many restarts"), 1.0))
    cancel = rig.last("private/cancel_all")
    assert not rig.requests("private/get_open_orders_by_currency")  # asked only once the cancel took effect
    assert rig.session.shutdown_findings() is None
    rig.answer(cancel, 2, 1.1)
    answered = rig.of(CommandResult)[-1]
    assert (answered.request_key, answered.origin, answered.result) == ("safe-shutdown", "connection", "2")
    checks = rig.requests("private/get_open_orders_by_currency")
    assert [c["params"] for c in checks] == [{"currency": "BTC"}, {"currency": "ETH"}]
    rig.answer(checks[0], [OPEN_ORDER], 1.2)
    assert rig.session.shutdown_findings() is None  # ETH still to answer
    rig.answer(checks[1], [], 1.2)
    found = rig.session.shutdown_findings()
    assert found is not None and found.via == "the Connection" and found.cancel_sent and found.cancelled == 2
    assert [(c, [o.order_id for o in orders]) for c, orders in found.checked] == [("BTC", ["SCR-7"]), ("ETH", [])]
    assert not found.failed and found.still_open[0].label == "manual_api_3"
    rig.take(rig.session.handle(SafeShutdown(reason="again"), 1.3))  # a second one sends nothing more
    assert len(rig.requests("private/cancel_all")) == 1


def test_safe_shutdown_a_refused_cancel_is_kept_and_the_orders_are_still_checked(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.handle(SafeShutdown(reason="x"), 1.0))
    rig.error(rig.last("private/cancel_all"), 10028, 1.1, message="too_many_requests")
    assert rig.of(CommandFailed)[-1].request_key == "safe-shutdown"
    rig.answer(rig.last("private/get_open_orders_by_currency"), [OPEN_ORDER], 1.2)
    found = rig.session.shutdown_findings()
    assert found is not None and found.cancelled is None
    assert found.cancel_error == "too_many_requests (code 10028)" and len(found.still_open) == 1


@pytest.mark.parametrize(("link_up", "why"), [(False, "not connected; not sent"), (True, "not logged in; not sent")])
def test_safe_shutdown_that_cannot_send_says_so_at_once(tmp_path: Path, link_up: bool, why: str) -> None:
    rig = Rig(tmp_path)
    if link_up:
        rig.take(rig.session.link_up(0.0))
    rig.take(rig.session.handle(SafeShutdown(reason="x"), 1.0))
    assert not rig.requests("private/cancel_all")
    found = rig.session.shutdown_findings()
    assert found is not None and not found.cancel_sent and found.failed == why and found.checked == ()


@pytest.mark.parametrize("lost", ["link down", "timeout", "unsent"])
def test_safe_shutdown_losing_the_answers_ends_the_check_unverified(tmp_path: Path, lost: str) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.handle(SafeShutdown(reason="x"), 1.0))
    rig.answer(rig.last("private/cancel_all"), 0, 1.1)
    check = rig.last("private/get_open_orders_by_currency")
    if lost == "link down":
        rig.take(rig.session.link_down("EOF"))
        why = "connection lost (EOF)"
    elif lost == "timeout":
        rig.take(rig.session.tick(1.1 + rig.settings.deribit.request_timeout_s + 0.1))
        why = "no answer to private/get_open_orders_by_currency within 5 s"
    else:
        rig.take(rig.session.unsent(check["id"], 1.2))
        why = "private/get_open_orders_by_currency could not be written (connection lost)"
    found = rig.session.shutdown_findings()
    assert found is not None and found.cancelled == 0 and found.checked == () and found.failed == why


# -- reconciliation and the rest --------------------------------------------------------------------------
def test_a_reconcile_waits_for_the_login_and_publishes_once_all_three_parts_answered(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", reason="start"), 0.0))
    assert rig.log.events("reconcile_deferred") and not rig.sent
    rig.log_in()
    parts = {f["method"]: f for f in rig.sent if f["method"] in (
        "private/get_positions", "private/get_open_orders_by_currency", "private/get_account_summary")}
    assert {type(rig.session.pending[f["id"]]) for f in parts.values()} == {GetPositions, GetOpenOrders, GetSummary}
    rig.answer(parts["private/get_positions"], [], 1.0)
    rig.answer(parts["private/get_open_orders_by_currency"], [], 1.0)
    assert not rig.of(ExchangeState)
    rig.answer(parts["private/get_account_summary"], {"currency": "BTC", "equity": 1.0, "balance": 1.0,
                                                      "margin_balance": 1.0, "available_funds": 1.0,
                                                      "initial_margin": 0.0, "maintenance_margin": 0.0,
                                                      "delta_total": 0.0}, 1.0)
    [state] = rig.of(ExchangeState)
    assert (state.currency, state.reason, state.positions, state.open_orders) == ("BTC", "start", (), ())


SUMMARY = {"currency": "BTC", "equity": 1.0, "balance": 1.0, "margin_balance": 1.0, "available_funds": 1.0,
           "initial_margin": 0.0, "maintenance_margin": 0.0}
PARTS = ("private/get_positions", "private/get_open_orders_by_currency", "private/get_account_summary")


def reconcile_parts(rig: Rig) -> dict[str, dict[str, Any]]:
    return {f["method"]: f for f in rig.sent if f["method"] in PARTS}


def test_a_reconcile_is_announced_before_its_requests_and_carries_the_exchanges_times(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    effects = rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", reason="check",
                                                             currencies=("BTC",)), 1.0))
    # The start goes out at once, ahead of the frames: fills taken before it were known before we asked.
    assert isinstance(effects[0], Announce) and isinstance(effects[0].message, ReconcileStarted)
    assert all(isinstance(e, Send) for e in effects[1:]) and len(effects) == 4
    [started] = rig.of(ReconcileStarted)
    parts = reconcile_parts(rig)
    for method, result in zip(PARTS, ([], [], SUMMARY), strict=True):
        rig.take(rig.session.answer(RpcResponse(id=parts[method]["id"], result=msgspec.Raw(msgspec.json.encode(
            result)), us_in=5_000_000, us_out=5_000_400), 1.1))
    [state] = rig.of(ExchangeState)
    assert state.round == started.round and state.requested_at == started.at
    assert state.positions_window == ExchangeWindow(received_us=5_000_000, sent_us=5_000_400)
    assert state.orders_window == state.positions_window


def test_a_newer_reconcile_supersedes_one_under_way_and_its_late_answers_count_for_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    first = reconcile_parts(rig)
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="hedger", currencies=("BTC",)), 1.1))
    [superseded] = rig.of(ReconcileFailed)
    assert superseded.superseded and superseded.round == rig.of(ReconcileStarted)[0].round
    second = reconcile_parts(rig)
    for method, result in zip(PARTS, ([], [], SUMMARY), strict=True):
        rig.answer(first[method], result, 1.2)
    assert not rig.of(ExchangeState)  # the first round's answers do not make a picture
    for method, result in zip(PARTS, ([], [], SUMMARY), strict=True):
        rig.answer(second[method], result, 1.3)
    [state] = rig.of(ExchangeState)
    assert state.round == rig.of(ReconcileStarted)[-1].round


def test_a_reconcile_keeps_the_entries_it_can_read_and_logs_each_it_cannot(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    parts = reconcile_parts(rig)
    good = {"instrument_name": "BTC-PERPETUAL", "kind": "future", "direction": "buy", "size": 10.0, "leverage": 33.5}
    odd = {**good, "instrument_name": "BTC-FS-29SEP23_PERP", "kind": "future_combo", "direction": "long"}
    rig.answer(parts["private/get_positions"], [good, odd], 1.1)
    rig.answer(parts["private/get_open_orders_by_currency"], [], 1.1)
    rig.answer(parts["private/get_account_summary"], {**SUMMARY, "limits": {"matching_engine": "fast"}}, 1.1)
    [state] = rig.of(ExchangeState)
    assert [p.instrument_name for p in state.positions] == ["BTC-PERPETUAL"]
    assert state.summary is not None and state.summary.limits is None and state.summary.equity == 1.0
    skipped = [fields for level, event, fields in rig.log.lines if event == "entry_skipped"]
    assert [(f["where"], f["name"], f["field"]) for f in skipped] == [
        ("private/get_positions[1]", "BTC-FS-29SEP23_PERP", "direction"),
        ("private/get_account_summary limits", "(the account)", "matching_engine")]
    assert all(level == "warning" for level, event, _ in rig.log.lines if event == "entry_skipped")


def test_a_reconcile_fails_when_a_position_in_a_listed_instrument_cannot_be_read(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    parts = reconcile_parts(rig)
    bad = {"instrument_name": "BTC-PERPETUAL", "kind": "future", "direction": "long", "size": 10.0}
    rig.answer(parts["private/get_positions"], [bad], 1.1)
    rig.answer(parts["private/get_open_orders_by_currency"], [], 1.1)
    rig.answer(parts["private/get_account_summary"], SUMMARY, 1.1)
    assert not rig.of(ExchangeState)  # read as flat it would be a wrong hedge
    [failed] = rig.of(ReconcileFailed)
    assert "1 position(s) could not be read (BTC-PERPETUAL: direction" in failed.message


@pytest.mark.parametrize("fault", ["error", "timeout", "unreadable", "link lost", "unwritten"])
def test_a_reconcile_that_cannot_finish_says_so(tmp_path: Path, fault: str) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.sent.clear()
    effects = rig.take(rig.session.handle(ReconcilePortfolio(origin="portfolio", currencies=("BTC",)), 1.0))
    positions = reconcile_parts(rig)["private/get_positions"]
    if fault == "error":
        rig.error(positions, 10_000, 1.1, "internal error")
    elif fault == "timeout":
        rig.take(rig.session.tick(1.0 + rig.settings.deribit.request_timeout_s + 0.1))
    elif fault == "unreadable":
        rig.answer(positions, {"not": "a list"}, 1.1)
    elif fault == "link lost":
        rig.take(rig.session.link_down("test"))
    else:
        send = next(e for e in effects if isinstance(e, Send) and e.request_id == positions["id"])
        rig.take(rig.session.unsent(send.request_id, 1.0))
    [failed] = rig.of(ReconcileFailed)
    assert failed.currency == "BTC" and failed.round == rig.of(ReconcileStarted)[0].round and failed.message
    assert not failed.superseded and "BTC" not in rig.session.reconciles


def test_a_listing_the_session_does_not_know_loads_the_list_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    loads = len(rig.requests("public/get_instruments"))
    rig.take(rig.session.handle(InstrumentState(instrument_name="BTC_USDC-1JAN00-70000-C", state="created",
                                                timestamp=0), 1.0))
    assert len(rig.requests("public/get_instruments")) == loads  # the linear BTC_USDC family's: not configured
    rig.take(rig.session.handle(InstrumentState(instrument_name="BTC-1JAN00-70000-C", state="created",
                                                timestamp=0), 1.0))
    assert len(rig.requests("public/get_instruments")) == loads + 1
    rig.take(rig.session.handle(InstrumentState(instrument_name="BTC-1JAN00-60000-C", state="open",
                                                timestamp=0), 1.0))
    assert len(rig.requests("public/get_instruments")) == loads + 1  # known: nothing to do


def test_the_current_status_is_said_on_request_but_not_in_replay(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.take(rig.session.handle(ConnectionStatusRequest(origin="console"), 0.0))
    assert rig.of(ConnectionStatus)[-1].state is ConnectionState.DISCONNECTED
    rig.log_in()
    rig.take(rig.session.handle(ConnectionStatusRequest(origin="console"), 1.0))
    status = rig.of(ConnectionStatus)[-1]
    assert (status.state, status.can_trade, status.detail) == (ConnectionState.SUBSCRIBED, True,
                                                               "current status, asked by console")
    replay = Rig(tmp_path, replay=True)
    assert replay.session.handle(ConnectionStatusRequest(origin="console"), 0.0) == []


# -- as the Connection it came from did (actors/connection.py before issue 14) ---------------------------
def _written(rig: Rig, effects: list[Any], *, link_failed: bool, now: float) -> list[Any]:
    """What the Connection's ``_apply`` does with ``effects``: each Send written, or (the link
    failed) handed back to ``Session.unsent``; everything else published. Returns what was published."""
    published: list[Any] = []
    for effect in effects:
        if isinstance(effect, Send):
            if link_failed:
                published += rig.take(rig.session.unsent(effect.request_id, now))
            else:
                rig.take([effect])
        else:
            published.append(effect)
            rig.take([effect])
    return published


def _resync(rig: Rig, instrument: str, now: float) -> list[Any]:
    return rig.session.resubscribe(ResubscribeInstrument(instrument_name=instrument, origin="t", reason="gap"), now)


def _up_with_public_batch_unanswered(rig: Rig) -> dict[str, Any]:
    """Link up, logged in, instruments listed, every batch answered but the first (public) one."""
    rig.take(rig.session.link_up(0.0))
    public = rig.last("public/subscribe")
    rig.answer(rig.last("public/auth"), {"access_token": "a", "refresh_token": "r", "expires_in": 900}, 0.0)
    rig.answer(rig.last("public/get_instruments"), tiny_instruments()["BTC"], 0.0)
    rig.take(rig.session.tick(1.0))  # the private and market channels
    rest = rig.last("private/subscribe") if rig.requests("private/subscribe") else rig.last("public/subscribe")
    assert rest["id"] != public["id"]
    rig.answer(rest, rest["params"]["channels"], 1.0)
    return public


def test_subscribed_is_not_announced_on_a_link_whose_resync_frame_could_not_be_written(tmp_path: Path) -> None:
    """SUBSCRIBED (can_trade) does not wait for resyncs, but a frame of this link that could not
    be written means the link is gone: nothing after it says SUBSCRIBED."""
    rig = Rig(tmp_path, {"deribit.subscribe_requests_per_s": 1.0})
    public = _up_with_public_batch_unanswered(rig)
    # A book found a gap: its unsubscribe goes on the resyncs' own budget at once, and the link has failed.
    published = _written(rig, _resync(rig, "BTC-1JAN00-60000-C", 1.0), link_failed=True, now=1.0)
    assert rig.requests("public/unsubscribe") == [] and published == []
    assert rig.session.to_unsubscribe == {"book.BTC-1JAN00-60000-C.100ms"}  # to be sent again
    rig.answer(public, public["params"]["channels"], 1.5)  # the full subscription is complete
    rig.take(rig.session.tick(2.0))
    assert ConnectionState.SUBSCRIBED not in rig.states(), "SUBSCRIBED (can_trade) on a link whose write failed"
    assert not rig.session.can_trade


def test_subscribed_does_not_wait_for_a_resync_and_no_resync_frame_shares_its_round(tmp_path: Path) -> None:
    """The full subscription done, SUBSCRIBED is announced with a resync still under way; the
    resync's frames wait for the next round (the status goes out after the round's frames)."""
    rig = Rig(tmp_path, {"deribit.subscribe_requests_per_s": 1.0})
    public = _up_with_public_batch_unanswered(rig)
    book = "book.BTC-1JAN00-60000-C.100ms"
    rig.take(_resync(rig, "BTC-1JAN00-60000-C", 1.0))
    unsubscribe = rig.last("public/unsubscribe")
    assert unsubscribe["params"]["channels"] == [book]
    rig.answer(unsubscribe, [book], 1.2)  # unsubscribed: the book waits for its fresh subscribe
    rig.take(_resync(rig, "BTC-1JAN00-60000-P", 1.2))  # another gap; the resyncs' budget is spent
    sent = len(rig.sent)
    effects = rig.answer(public, public["params"]["channels"], 2.0)  # the resyncs' budget has a token again
    assert [e for e in effects if isinstance(e, Send)] == [] and len(rig.sent) == sent
    [subscribed] = [m for m in effects if isinstance(m, ConnectionStatus)]
    assert subscribed.state is ConnectionState.SUBSCRIBED and subscribed.can_trade
    assert subscribed.detail.endswith("(2 being resynced)")
    rig.take(rig.session.tick(2.0))  # the resync finishes first: the fresh subscribe, then the next unsubscribe
    assert rig.last("public/subscribe")["params"]["channels"] == [book]
    rig.take(rig.session.tick(3.0))
    assert rig.last("public/unsubscribe")["params"]["channels"] == ["book.BTC-1JAN00-60000-P.100ms"]
    assert rig.states().count(ConnectionState.SUBSCRIBED) == 1


class _DeadAfter:
    """A transport whose sends fail once ``dead`` is set (the link has just gone)."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.dead = False

    def send(self, frame: bytes | str) -> None:
        if self.dead:
            raise LinkClosed("gone")
        self.frames.append(msgspec.json.decode(frame))

    def connect(self) -> None: ...

    def recv(self, timeout_s: float) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def test_the_connection_announces_no_subscribed_on_a_link_whose_unsubscribe_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Connection actor's own handlers (no threads): its ``_apply`` hands the
    unwritten unsubscribe back to the session, and nothing says can_trade afterwards."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    published: list[Any] = []
    settings = connection_settings(tmp_path, {"deribit.subscribe_requests_per_s": 1.0})
    conn = Connection(ActorContext(name="connection", clock=WallClock(), settings=settings, publish=published.append),
                      url="ws://test")
    transport = _DeadAfter()
    conn.link.transport = transport

    def frame(method: str) -> dict[str, Any]:
        return [f for f in transport.frames if f["method"] == method][-1]

    def answer(request: dict[str, Any], result: Any) -> None:
        conn.on_receive(_Answer(1, RpcResponse(id=request["id"], result=msgspec.Raw(msgspec.json.encode(result)))))

    conn.on_receive(LinkUp(1))
    public = frame("public/subscribe")
    answer(frame("public/auth"), {"access_token": "a", "refresh_token": "r", "expires_in": 900})
    answer(frame("public/get_instruments"), tiny_instruments()["BTC"])
    clock[0] = 1.0
    conn.on_receive(Wake())
    rest = frame("private/subscribe") if any(f["method"] == "private/subscribe" for f in transport.frames) \
        else frame("public/subscribe")
    answer(rest, rest["params"]["channels"])
    published.clear()
    transport.dead = True
    conn.on_receive(ResubscribeInstrument(instrument_name="BTC-1JAN00-60000-C", origin="t", reason="gap"))
    clock[0] = 1.5
    answer(public, public["params"]["channels"])  # an answer read before the link thread saw the end
    clock[0] = 2.0
    conn.on_receive(Wake())
    said = [m for m in published if isinstance(m, ConnectionStatus)]
    assert not any(s.can_trade for s in said), said
    assert not conn.session.can_trade


# -- what the exchange says about itself: locks, the account's limits, settlements ----------------------------
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


# -- what became of an order whose answer was lost ---------------------------------------------------------------
def lost_order(**fields: Any) -> dict[str, Any]:
    """An order as Deribit lists it (private/get_order_state, get_order_state_by_label)."""
    values: dict[str, Any] = {"order_id": "9001", "instrument_name": "BTC-PERPETUAL", "order_state": "open",
                              "order_type": "limit", "direction": "sell", "amount": 10.0, "price": 30000.0,
                              "filled_amount": 0.0, "label": "hedge-1", "creation_timestamp": 1}
    values.update(fields)
    return values


def test_a_lost_answer_is_resolved_once_the_link_is_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.command(order("o-1", label="hedge-1", type="limit", price=30000.0), 10.0))
    rig.take(rig.session.command(order("o-2"), 10.0))  # no label: nothing to ask about
    rig.take(rig.session.link_down("reset by peer"))
    lost = {f.request_key: f for f in rig.of(CommandFailed)}
    assert {k: f.code for k, f in lost.items()} == {"o-1": ANSWER_LOST, "o-2": ANSWER_LOST}
    assert rig.log.events("order_unresolvable")[0]["request_key"] == "o-2"
    assert not rig.requests("private/get_order_state_by_label")  # nothing asked while down
    rig.log_in(20.0)
    ask = rig.last("private/get_order_state_by_label")
    assert ask["params"] == {"currency": "BTC", "label": "hedge-1"}
    # The link drops again before the answer: asked again on the next link.
    rig.take(rig.session.link_down("again"))
    rig.log_in(30.0)
    asks = rig.requests("private/get_order_state_by_label")
    assert len(asks) == 2
    rig.answer(asks[-1], [lost_order(order_state="filled", filled_amount=10.0)], 31.0)
    resolved = rig.of(OrderResolved)
    assert [(r.request_key, r.origin, r.method, r.outcome) for r in resolved] == [
        ("o-1", "test", "private/sell", AuditOutcome.FILLED)]
    rig.take(rig.session.tick(40.0))
    assert len(rig.requests("private/get_order_state_by_label")) == 2 and not rig.session.unresolved


def test_a_timed_out_answer_is_asked_about_on_the_same_link(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"deribit.request_timeout_s": 5.0})
    rig.log_in()
    rig.take(rig.session.command(CancelOrder(order_id="77", origin="console", request_key="c-1"), 10.0))
    rig.take(rig.session.tick(15.1))
    assert rig.of(CommandFailed)[-1].code == ANSWER_LOST
    ask = rig.last("private/get_order_state")
    assert ask["params"] == {"order_id": "77"}
    rig.error(ask, 10028, 15.2, message="too_many_requests")  # says nothing: asked again, after a backoff
    rig.take(rig.session.tick(15.3))
    assert rig.last("private/get_order_state")["id"] == ask["id"]
    rig.take(rig.session.tick(16.3))
    again = rig.last("private/get_order_state")
    assert again["id"] != ask["id"]
    rig.answer(again, lost_order(order_id="77", order_state="cancelled"), 16.4)
    assert [(r.request_key, r.outcome) for r in rig.of(OrderResolved)] == [("c-1", AuditOutcome.SENT)]


def test_a_resolution_that_keeps_failing_backs_off_and_is_given_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.log_in()
    rig.take(rig.session.command(CancelOrder(order_id="77", origin="console", request_key="c-1"), 10.0))
    rig.take(rig.session.link_down("reset"))
    rig.log_in(20.0)
    now, asked = 20.0, []
    for _ in range(60):
        if rig.session.pending and rig.last("private/get_order_state")["id"] in rig.session.pending:
            ask = rig.last("private/get_order_state")
            asked.append(now)
            rig.error(ask, 13021, now, message="forbidden")
        now += 30.0
        rig.take(rig.session.tick(now))
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert len(asked) == Session.RESOLUTION_ATTEMPTS and gaps == sorted(gaps)  # never faster than before
    assert rig.log.events("order_resolution_abandoned")[0]["request_key"] == "c-1"
    assert not rig.session.unresolved and not rig.of(OrderResolved)
