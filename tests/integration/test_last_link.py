"""The safe shutdown's last connection (deribit.last_link) over real loopback websockets: against the
simulator (the orders are really cancelled, and the check says so), the scripted server (the
requests in order, a refused login, a refused cancel, a swallowed answer), a closed port and a
server that accepts and never answers (bounded in time); no secret or token in its log."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import DeribitSettings
from deribit.last_link import GIVE_UP_AFTER_S, LastLink
from deribit.shutdown_check import Reach, report
from runtime.logs import setup_logging, shutdown_logging
from simulator import SimSettings, Simulator
from simulator.client import RpcClient
from tests.support.scripted_server import CLIENT_ID, CLIENT_SECRET, ScriptedServer
from tests.support.settings import make_settings
from tests.support.silent_server import SilentServer

VIA = "a last connection made for it (test)"
BOTH = ("BTC", "ETH")


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    setup_logging(tmp_path / "logs", "info", console=False, secrets=[CLIENT_SECRET])
    yield tmp_path / "logs"
    shutdown_logging()


def deribit(tmp_path: Path, **values: Any) -> DeribitSettings:
    keys = {"deribit.client_id": CLIENT_ID, "deribit.client_secret": CLIENT_SECRET, "deribit.request_timeout_s": 5.0}
    keys.update({f"deribit.{k}": v for k, v in values.items()})
    return make_settings(keys, tmp_path=tmp_path).deribit


def logged_in(url: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> RpcClient:
    client = RpcClient(url)
    client.result("public/auth", {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return client


def rest(client: RpcClient, instrument: str, price: float, label: str) -> str:
    placed = client.result("private/buy", {"instrument_name": instrument, "amount": 10 if "BTC" in instrument else 1,
                                           "type": "limit", "price": price, "post_only": True, "label": label})
    return str(placed["order"]["order_id"])


def test_it_cancels_every_order_on_the_simulator_and_verifies_none_is_open(tmp_path: Path, logs: Path) -> None:
    with Simulator(seed=5, settings=SimSettings.for_account(CLIENT_ID, CLIENT_SECRET, {"BTC": 10.0, "ETH": 100.0},
                                                           chain="small")) as sim:
        client = logged_in(sim.url)
        rest(client, "BTC-PERPETUAL", round(sim.index("BTC") * 0.8 * 2) / 2, "rest-btc")
        rest(client, "ETH-PERPETUAL", round(sim.index("ETH") * 0.8 * 20) / 20, "rest-eth")
        client.close()
        assert len(sim.open_orders(CLIENT_ID, "BTC")) == 1 and len(sim.open_orders(CLIENT_ID, "ETH")) == 1
        found = LastLink(sim.url, deribit(tmp_path), BOTH, via=VIA).cancel_and_check(5.0)
        assert sim.open_orders(CLIENT_ID, "BTC") == [] and sim.open_orders(CLIENT_ID, "ETH") == []
    assert found.cancel_sent and found.cancelled == 2 and not found.failed
    assert found.checked == (("BTC", ()), ("ETH", ()))
    assert "Verified: no open orders on BTC, ETH" in report(Reach.ORDERS, found, venue="simulator")


def test_it_logs_in_cancels_then_checks_each_currency_in_that_order(tmp_path: Path, logs: Path) -> None:
    with ScriptedServer() as server:
        client = logged_in(server.url)
        kept = rest(client, "BTC-PERPETUAL", 50000.0, "manual_api_1")
        server.fail_next("private/cancel_all")  # the exchange refuses the cancel: the order stays open
        found = LastLink(server.url, deribit(tmp_path), BOTH, via=VIA).cancel_and_check(5.0)
        client.close()
        calls = [(r.method, r.params.get("currency")) for r in server.calls() if r.conn == 2]
        assert calls == [("public/auth", None), ("private/cancel_all", None),
                         ("private/get_open_orders_by_currency", "BTC"), ("private/get_open_orders_by_currency", "ETH")]
        auth = server.calls("public/auth", conn=2)[0].params
        assert auth["grant_type"] == "client_signature" and "client_secret" not in auth  # the secret stays here
        tokens = list(server.issued_tokens)
    assert found.cancel_error == "internal_server_error (code 11094)" and found.cancelled is None
    assert [o.order_id for o in found.still_open] == [kept] and found.still_open[0].label == "manual_api_1"
    text = report(Reach.ORDERS, found, venue="testnet")
    assert f"BTC-PERPETUAL buy 10 at 50000, label 'manual_api_1', order id {kept}" in text
    logged = "".join(path.read_text() for path in logs.glob("*.jsonl"))
    events = [json.loads(line)["event"] for line in logged.splitlines()]
    assert {"last_link_connecting", "last_link_cancel_all", "last_link_open_orders"} <= set(events)
    assert CLIENT_SECRET not in logged and not any(token in logged for token in tokens)


def test_a_refused_login_sends_nothing_and_says_why(tmp_path: Path, logs: Path) -> None:
    with ScriptedServer() as server:
        server.refuse_logins = True
        found = LastLink(server.url, deribit(tmp_path, auth_method="client_credentials"), BOTH,
                         via=VIA).cancel_and_check(5.0)
        assert not server.calls("private/cancel_all")
    assert not found.cancel_sent and found.checked == ()
    assert found.failed.startswith("login refused: invalid_credentials (code 13004)")
    text = report(Reach.ORDERS, found, venue="testnet")
    assert "UNKNOWN" in text and "cancel_all could not be sent" in text
    assert CLIENT_SECRET not in "".join(path.read_text() for path in logs.glob("*.jsonl"))


def test_a_swallowed_answer_ends_within_the_budget(tmp_path: Path, logs: Path) -> None:
    with ScriptedServer() as server:
        server.swallow_next("private/get_open_orders_by_currency")
        started = time.monotonic()
        found = LastLink(server.url, deribit(tmp_path), BOTH, via=VIA).cancel_and_check(1.5)
        took = time.monotonic() - started
    assert found.cancelled == 0 and found.checked == ()
    assert found.failed.startswith("no answer to private/get_open_orders_by_currency within")
    assert took < 1.5 + GIVE_UP_AFTER_S + 2.0  # bounded by the budget, not by the exchange


def test_a_closed_port_is_unknown_at_once(tmp_path: Path, logs: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    found = LastLink(f"ws://127.0.0.1:{port}/ws/api/v2", deribit(tmp_path), BOTH, via=VIA).cancel_and_check(5.0)
    assert not found.cancel_sent and found.failed.startswith(f"cannot connect to ws://127.0.0.1:{port}")


def test_a_server_that_accepts_and_never_answers_is_given_up_within_the_budget(tmp_path: Path, logs: Path) -> None:
    with SilentServer() as silent:
        started = time.monotonic()
        found = LastLink(silent.url, deribit(tmp_path), BOTH, via=VIA).cancel_and_check(1.5)
        took = time.monotonic() - started
        assert silent.accepted == 1
    assert not found.cancel_sent and found.checked == () and "timed out" in found.failed
    assert took < 1.5 + GIVE_UP_AFTER_S + 2.0
    assert "UNKNOWN" in report(Reach.ORDERS, found, venue="mainnet")
