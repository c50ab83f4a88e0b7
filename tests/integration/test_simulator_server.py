"""End to end over a real loopback websocket: auth, the full chain, trading, notifications, faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import websocket

from simulator import SimAccount, SimSettings, Simulator
from simulator.client import RpcClient, channel_is

SETTINGS = SimSettings(
    chain="small",
    updates_per_s=10.0,
    step_s=0.05,
    min_heartbeat_s=0.2,
    accounts=(SimAccount(), SimAccount("other", "other-secret", (("BTC", 1.0), ("ETH", 10.0)))),
)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(11, SETTINGS)
    s.start_in_thread()
    yield s
    s.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[RpcClient]:
    sim.clear_faults()
    c = RpcClient(sim.url)
    yield c
    c.close()
    sim.clear_faults()


def test_url_and_unknown_path(sim: Simulator) -> None:
    assert sim.url.startswith("ws://127.0.0.1:") and sim.url.endswith("/ws/api/v2")
    with pytest.raises(websocket.WebSocketException):
        ws = websocket.create_connection(sim.url.replace("/ws/api/v2", "/other"), timeout=2)
        ws.recv()


def test_auth_grants_and_wrong_credentials(client: RpcClient) -> None:
    bad = client.call("public/auth", {"grant_type": "client_credentials", "client_id": "desk", "client_secret": "x"})
    assert bad["error"] == {"message": "invalid_credentials", "code": 13004, "data": None}
    assert {"usIn", "usOut", "usDiff", "testnet"} <= set(bad)
    unauth = client.call("private/get_positions", {"currency": "BTC"})
    assert unauth["error"]["code"] == 13009
    ts = int(time.time() * 1000)
    nonce = secrets.token_hex(4)
    sig = hmac.new(b"desk-simulator-secret", f"{ts}\n{nonce}\n".encode(), hashlib.sha256).hexdigest()
    res = client.result(
        "public/auth",
        {
            "grant_type": "client_signature",
            "client_id": "desk",
            "timestamp": ts,
            "nonce": nonce,
            "data": "",
            "signature": sig,
        },
    )
    assert {"access_token", "refresh_token", "expires_in", "scope", "token_type"} <= set(res)
    again = client.result("public/auth", {"grant_type": "refresh_token", "refresh_token": res["refresh_token"]})
    assert again["access_token"] != res["access_token"]
    reused = client.call("public/auth", {"grant_type": "refresh_token", "refresh_token": res["refresh_token"]})
    assert reused["error"]["code"] == 13004
    assert isinstance(client.result("private/get_positions", {"currency": "BTC"}), list)


def test_full_chain_stream_keeps_change_id_continuity(sim: Simulator, client: RpcClient) -> None:
    names = [
        i["instrument_name"]
        for cur in ("BTC", "ETH", "USDC")
        for i in client.result("public/get_instruments", {"currency": cur})
    ]
    assert len(names) == len(sim.instruments())
    assert {"BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL"} <= set(names)
    chans = [f"book.{n}.raw" for n in names] + [f"ticker.{n}.100ms" for n in names]
    assert sorted(client.result("public/subscribe", {"channels": [*chans, "book.NOPE-1.raw"]})) == sorted(chans)
    client.pump(1.5)
    last: dict[str, int] = {}
    tickers = 0
    for n in [json.loads(f) for f in client.frames]:
        if n.get("method") != "subscription":
            continue
        ch, data = n["params"]["channel"], n["params"]["data"]
        if ch.startswith("ticker."):
            tickers += 1
        if not ch.startswith("book."):
            continue
        name = data["instrument_name"]
        if data["type"] == "snapshot":
            assert "prev_change_id" not in data
        else:
            assert data["prev_change_id"] == last[name]
            assert data["change_id"] > data["prev_change_id"]
        last[name] = data["change_id"]
    assert set(last) == set(names)
    assert tickers > len(names)
    # The public answers agree with the stream's source.
    book = client.result("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": 3})
    assert len(book["bids"]) == 3 and book["bids"][0][0] < book["asks"][0][0]
    assert client.result("public/get_index_price", {"index_name": "btc_usd"})["index_price"] > 0
    summary = client.result("public/get_book_summary_by_currency", {"currency": "ETH", "kind": "option"})
    assert summary and all(s["instrument_name"].startswith("ETH-") for s in summary)
    unknown = client.call("public/ticker", {"instrument_name": "BTC-1JAN20-1-C"})
    assert unknown["error"] == {
        "message": "Invalid params",
        "code": -32602,
        "data": {"reason": "instrument not found", "param": "instrument_name"},
    }


def test_trading_round_trip_with_notifications(sim: Simulator, client: RpcClient) -> None:
    client.login()
    perp = "BTC-PERPETUAL"
    client.result(
        "private/subscribe",
        {"channels": ["user.orders.any.any.raw", "user.trades.future.BTC.raw", "user.portfolio.btc"]},
    )
    client.wait_for(channel_is("user.portfolio.btc"))
    bid = sim.book(perp)[0][0][0]
    placed = client.result(
        "private/buy",
        {"instrument_name": perp, "amount": 40, "price": bid - 50.0, "label": "e2e", "post_only": True},
    )
    oid = placed["order"]["order_id"]
    assert placed["order"]["order_state"] == "open" and placed["order"]["label"] == "e2e"
    note = client.wait_for(lambda n: channel_is("user.orders")(n) and n["params"]["data"]["order_id"] == oid)
    assert note["params"]["data"]["order_state"] == "open"
    assert any(o["order_id"] == oid for o in client.result("private/get_open_orders_by_currency", {"currency": "BTC"}))
    edited = client.result("private/edit", {"order_id": oid, "amount": 60, "price": bid - 40.0})
    assert edited["order"]["amount"] == 60 and edited["order"]["price"] == bid - 40.0
    cancelled = client.result("private/cancel", {"order_id": oid})
    assert cancelled["order_state"] == "cancelled"
    assert client.call("private/cancel", {"order_id": oid})["error"]["code"] == 11044
    before = client.result("private/get_account_summary", {"currency": "BTC"})
    fill = client.result("private/buy", {"instrument_name": perp, "amount": 100, "type": "market"})
    assert fill["order"]["order_state"] == "filled" and fill["trades"]
    trade_note = client.wait_for(channel_is("user.trades.future.BTC.raw"))
    assert trade_note["params"]["data"][0]["order_id"] == fill["order"]["order_id"]
    portfolio = client.wait_for(
        lambda n: (
            channel_is("user.portfolio.btc")(n)
            and n["params"]["data"]["futures_session_upl"] != before["futures_session_upl"]
        )
    )
    assert portfolio["params"]["data"]["currency"] == "BTC"
    positions = client.result("private/get_positions", {"currency": "BTC", "kind": "future"})
    pos = next(p for p in positions if p["instrument_name"] == perp)
    assert pos["size"] == sum(p["size"] for p in sim.positions() if p["instrument_name"] == perp)
    trades = client.result("private/get_user_trades_by_currency", {"currency": "BTC", "count": 5})
    assert trades["trades"][0]["order_id"] == fill["order"]["order_id"]
    # Options: premium in coin; a resting order fills when the market moves through it.
    opt = next(n for n in sim.instruments("BTC") if n.endswith("-P") and sim.book(n)[1])
    ask = sim.book(opt)[1][0][0]
    bal = client.result("private/get_account_summary", {"currency": "BTC"})["balance"]
    resting = client.result("private/sell", {"instrument_name": opt, "amount": 0.5, "price": round(ask + 0.002, 4)})
    assert resting["order"]["order_state"] == "open"
    sim.shift_index("BTC", -15.0)
    client.wait_for(
        lambda n: (
            channel_is("user.orders")(n)
            and n["params"]["data"]["order_id"] == resting["order"]["order_id"]
            and n["params"]["data"]["order_state"] == "filled"
        )
    )
    after = client.result("private/get_account_summary", {"currency": "BTC"})["balance"]
    fee = min(0.0003 * 0.5, 0.125 * (ask + 0.002) * 0.5)
    assert after == pytest.approx(bal + 0.5 * round(ask + 0.002, 4) - fee, abs=1e-8)
    assert client.result("private/cancel_all", {}) >= 0
    assert client.result("private/cancel_all_by_currency", {"currency": "BTC"}) == 0
    assert client.result("private/cancel_by_label", {"label": "none"}) == 0


def test_rejections_over_the_wire(client: RpcClient) -> None:
    client.login()
    e = client.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 15, "type": "market"})["error"]
    assert e == {
        "message": "Invalid params",
        "code": -32602,
        "data": {"reason": "must be a multiple of contract size", "param": "amount"},
    }
    e = client.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 1.3})["error"]
    assert e["data"]["reason"] == "must conform to tick size"
    e = client.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10**9, "type": "market"})["error"]
    assert e == {"message": "not_enough_funds", "code": 10009, "data": None}
    assert client.call("private/nope", {})["error"]["code"] == -32601


def test_faults(sim: Simulator, client: RpcClient) -> None:
    client.result("public/subscribe", {"channels": ["book.BTC-PERPETUAL.raw"]})
    first = client.wait_for(channel_is("book.BTC-PERPETUAL"))
    assert first["params"]["data"]["type"] == "snapshot"
    prev = first["params"]["data"]["change_id"]
    # A dropped notification is a change_id gap.
    sim.drop_book_notifications(1)
    gap = False
    for _ in range(20):
        d = client.wait_for(channel_is("book.BTC-PERPETUAL"))["params"]["data"]
        if d["prev_change_id"] != prev:
            gap = True
            break
        prev = d["change_id"]
    assert gap
    # Rate limit, delay, malformed frame.
    sim.rate_limit_next(2)
    assert client.call("public/test", {})["error"] == {"message": "too_many_requests", "code": 10028, "data": None}
    assert client.call("public/test", {})["error"]["code"] == 10028
    assert "result" in client.call("public/test", {})
    sim.delay_answers(0.3)
    t0 = time.monotonic()
    client.result("public/test", {})
    assert time.monotonic() - t0 >= 0.3
    sim.delay_answers(0)
    assert sim.send_malformed_frame() >= 1
    with pytest.raises(json.JSONDecodeError):
        for _ in range(200):
            client._recv()
    # Refused logins.
    sim.refuse_logins(True)
    assert (
        client.call(
            "public/auth",
            {
                "grant_type": "client_credentials",
                "client_id": "desk",
                "client_secret": "desk-simulator-secret",
            },
        )["error"]["code"]
        == 13004
    )
    sim.refuse_logins(False)
    # Stall: silence, then the stream goes on.
    sim.stall(0.6)
    t0 = time.monotonic()
    client.result("public/test", {})
    assert time.monotonic() - t0 >= 0.4
    # Close connections.
    assert sim.close_connections() >= 1
    with pytest.raises((websocket.WebSocketException, ConnectionError, OSError)):
        for _ in range(1000):
            client._recv()


def test_fault_rpc_and_cancel_on_disconnect(sim: Simulator) -> None:
    a = RpcClient(sim.url)
    a.login("other", "other-secret")
    assert a.result("private/enable_cancel_on_disconnect", {"scope": "connection"}) == "ok"
    bid = sim.book("BTC-PERPETUAL")[0][0][0]
    placed = a.result("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid - 100.0})
    assert len(sim.open_orders("other")) == 1
    assert a.fault("rate_limit_next", n=1) == "ok"
    assert a.call("public/test")["error"]["code"] == 10028
    a.fault("clear")
    a.close()
    deadline = time.monotonic() + 3
    while sim.open_orders("other") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.open_orders("other") == []
    # Deribit names why (a plan worker places again after this, never after the trader's cancel).
    b = RpcClient(sim.url)
    b.login("other", "other-secret")
    state = b.result("private/get_order_state", {"order_id": placed["order"]["order_id"]})
    assert (state["order_state"], state["cancel_reason"]) == ("cancelled", "cancel_on_disconnect")
    b.close()


def test_heartbeat(sim: Simulator, client: RpcClient) -> None:
    assert client.call("public/set_heartbeat", {"interval": 0.01})["error"]["code"] == -32602
    assert client.result("public/set_heartbeat", {"interval": 0.2}) == "ok"
    hb = client.wait_for(lambda n: n.get("method") == "heartbeat", timeout=2)
    assert hb["params"] == {"type": "test_request"}
    client.result("public/test", {})
    client.wait_for(lambda n: n.get("method") == "heartbeat", timeout=2)
    # Silence after a test_request closes the connection.
    with pytest.raises((websocket.WebSocketException, ConnectionError, OSError)):
        time.sleep(0.6)
        for _ in range(100):
            client._recv()


def test_instrument_state_and_index_channels(sim: Simulator, client: RpcClient) -> None:
    res = client.result(
        "public/subscribe",
        {"channels": ["deribit_price_index.eth_usd", "instrument.state.any.any", "quote.ETH-PERPETUAL"]},
    )
    assert len(res) == 3
    idx = client.wait_for(channel_is("deribit_price_index.eth_usd"))["params"]["data"]
    assert idx["index_name"] == "eth_usd" and idx["price"] > 0
    sim.set_index("ETH", 2500.0)
    # Set at once; the running market may have taken its next step (index diffusion) before the read.
    assert sim.index("ETH") == pytest.approx(2500.0, rel=1e-3)
    q = client.wait_for(
        lambda n: channel_is("quote.ETH-PERPETUAL")(n) and abs(n["params"]["data"]["best_bid_price"] - 2500.0) < 50,
        timeout=5,
    )
    assert q["params"]["data"]["best_bid_price"] < q["params"]["data"]["best_ask_price"]


def test_cli_generate(tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "--generate",
            str(out),
            "--minutes",
            "0.05",
            "--chain",
            "small",
            "--seed",
            "4",
            "--start",
            "1790000000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == {"t": 1790000000.0, "dir": "open"}
    again = tmp_path / "again.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "--generate",
            str(again),
            "--minutes",
            "0.05",
            "--chain",
            "small",
            "--seed",
            "4",
            "--start",
            "1790000000",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert again.read_bytes() == out.read_bytes()


def test_issue_16_channels_and_methods_over_the_wire(sim: Simulator, client: RpcClient) -> None:
    """user.changes, platform_state with a lock, DVOL, option marks, the settlement history and
    the account's limits, as a Deribit client sees them."""
    client.login()
    channels = [
        "user.changes.any.any.raw",
        "platform_state",
        "deribit_volatility_index.btc_usd",
        "markprice.options.btc_usd",
    ]
    assert sorted(client.result("private/subscribe", {"channels": channels})) == sorted(channels)
    dvol = client.wait_for(channel_is("deribit_volatility_index.btc_usd"))["params"]["data"]
    assert dvol["index_name"] == "btc_usd" and 10 < dvol["volatility"] < 400
    marks = client.wait_for(channel_is("markprice.options.btc_usd"))["params"]["data"]
    assert {m["instrument_name"] for m in marks} == {n for n in sim.instruments("BTC") if n.count("-") == 3}
    fill = client.result("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 30, "type": "market"})
    change = client.wait_for(
        lambda n: (
            channel_is("user.changes.any.any.raw")(n)
            and any(o["order_id"] == fill["order"]["order_id"] for o in n["params"]["data"]["orders"])
        )
    )["params"]["data"]
    assert change["instrument_name"] == "BTC-PERPETUAL" and change["trades"]
    assert change["positions"][0]["size"] == sum(
        p["size"] for p in sim.positions() if p["instrument_name"] == "BTC-PERPETUAL"
    )
    sim.lock_index("btc_usd")
    state = client.wait_for(channel_is("platform_state"))["params"]["data"]
    assert state == {"price_index": "btc_usd", "locked": True}
    refused = client.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"})
    assert refused["error"]["code"] == 10019
    assert client.result("public/status", {})["locked_indices"] == ["btc_usd"]
    sim.lock_index("btc_usd", locked=False)
    assert client.wait_for(lambda n: channel_is("platform_state")(n) and n["params"]["data"]["locked"] is False)[
        "params"
    ]["data"] == {"price_index": "btc_usd", "locked": False}
    history = client.result("private/get_settlement_history_by_currency", {"currency": "BTC", "type": "settlement"})
    assert set(history) == {"settlements", "continuation"}
    limits = client.result("private/get_account_summary", {"currency": "BTC"})["limits"]
    assert limits["matching_engine"]["trading"]["total"]["rate"] > 0
    usdc = client.result("public/get_instruments", {"currency": "USDC", "kind": "future"})
    assert {i["instrument_name"] for i in usdc} == {"BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL"}
    linear = client.result("private/buy", {"instrument_name": "ETH_USDC-PERPETUAL", "amount": 0.01, "type": "market"})
    assert linear["trades"][0]["fee_currency"] == "USDC"
    pos = client.result("private/get_positions", {"currency": "USDC"})
    assert [p["size"] for p in pos if p["instrument_name"] == "ETH_USDC-PERPETUAL"] == [0.01]


def test_settlement_and_expiry_on_the_simulated_clock() -> None:
    """Across 08:00 UTC on the simulator's clock: the expiring option's last ticker (closed,
    "expired", its delivery price), its delivery, the perpetual's settlement and the history."""
    now = [datetime(2026, 9, 21, 7, 59, 58, tzinfo=UTC).timestamp()]
    s = Simulator(3, SimSettings(chain="small", step_s=0.05, updates_per_s=2.0), clock=lambda: now[0])
    s.start_in_thread()
    c = RpcClient(s.url)
    try:
        c.login()
        daily = min(
            (n for n in s.instruments("BTC") if n.count("-") == 3 and n.split("-")[1] == "21SEP26"),
            key=lambda n: abs(float(n.split("-")[2]) - s.index("BTC")),
        )
        c.result("private/subscribe", {"channels": [f"ticker.{daily}.raw", "instrument.state.option.BTC"]})
        c.result("private/buy", {"instrument_name": daily, "amount": 1.0, "type": "market"})
        c.result("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 100, "type": "market"})
        now[0] += 5.0  # 08:00:03
        last = c.wait_for(lambda n: channel_is(f"ticker.{daily}.raw")(n) and n["params"]["data"]["state"] == "closed")[
            "params"
        ]["data"]
        assert last["estimated_delivery_price"] == "expired" and last["delivery_price"] > 0
        states = [
            c.wait_for(
                lambda n: (
                    channel_is("instrument.state.option.BTC")(n) and n["params"]["data"]["instrument_name"] == daily
                )
            )["params"]["data"]["state"]
            for _ in range(3)
        ]
        assert states == ["closed", "settled", "terminated"]
        history = c.result("private/get_settlement_history_by_currency", {"currency": "BTC"})["settlements"]
        kinds = {(e["type"], e["instrument_name"]) for e in history}
        assert ("delivery", daily) in kinds and ("settlement", "BTC-PERPETUAL") in kinds
        delivery = next(e for e in history if e["type"] == "delivery")
        assert delivery["index_price"] == last["delivery_price"]
        perp = c.result("public/ticker", {"instrument_name": "BTC-PERPETUAL"})
        settled = next(e for e in history if e["instrument_name"] == "BTC-PERPETUAL")
        assert perp["settlement_price"] == settled["mark_price"]
        assert daily not in {p["instrument_name"] for p in c.result("private/get_positions", {"currency": "BTC"})}
    finally:
        c.close()
        s.stop()
