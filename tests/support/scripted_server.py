"""A scripted Deribit for the Connection's integration tests: a real websocket server on loopback
(``websockets``' threaded server) that answers what the Connection asks (set_heartbeat, auth in
all three grants, get_instruments from a tiny list, subscribe/unsubscribe, the order and
reconcile methods), records every request with its arrival time and connection number, and
lets a test push notifications and inject faults: rejected logins, rate-limit errors, refused
channels, swallowed answers, malformed frames, closed sockets, silent stalls, refused connects.

Unlike ``simulator`` it has no market: a test says exactly what arrives and when.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.sync.server import Server, ServerConnection, serve

from tests.support.waiting import wait_until

CLIENT_ID = "scripted-desk"
CLIENT_SECRET = "fake-secret-Qm9vZ2llLTQ1Njc4OTAxMjM"  # a made-up secret the tests look for in logs
EXPIRY_MS = 4_102_444_800_000  # 2100-01-01 08:00 UTC: never expires during a test
PRIVATE_PREFIXES = ("user.",)


def _future(name: str, currency: str) -> dict[str, Any]:
    return {"instrument_name": name, "kind": "future", "base_currency": currency, "quote_currency": "USD",
            "settlement_period": "perpetual", "tick_size": 0.5 if currency == "BTC" else 0.05,
            "contract_size": 10.0 if currency == "BTC" else 1.0, "min_trade_amount": 10.0 if currency == "BTC" else 1.0,
            "expiration_timestamp": 32_503_680_000_000, "creation_timestamp": 1_534_167_754_000, "is_active": True}


def _option(currency: str, strike: int, kind: str) -> dict[str, Any]:
    return {"instrument_name": f"{currency}-1JAN00-{strike}-{kind}", "kind": "option", "base_currency": currency,
            "quote_currency": currency, "settlement_period": "month", "tick_size": 0.0005, "contract_size": 1.0,
            "min_trade_amount": 0.1 if currency == "BTC" else 1.0, "expiration_timestamp": EXPIRY_MS,
            "creation_timestamp": 1_700_000_000_000, "is_active": True, "strike": float(strike),
            "option_type": "call" if kind == "C" else "put"}


def tiny_instruments() -> dict[str, list[dict[str, Any]]]:
    """One perpetual and two options per currency (names are made up, never listed by Deribit)."""
    return {
        "BTC": [_future("BTC-PERPETUAL", "BTC"), _option("BTC", 60000, "C"), _option("BTC", 60000, "P")],
        "ETH": [_future("ETH-PERPETUAL", "ETH"), _option("ETH", 3000, "C"), _option("ETH", 3000, "P")],
    }


@dataclass
class Received:
    """One request as the server read it."""

    at: float  # time.monotonic() on arrival
    conn: int  # 1 for the first connection, 2 for the next, ...
    id: int | None
    method: str
    params: dict[str, Any]


@dataclass
class _Conn:
    number: int
    ws: ServerConnection
    lock: threading.Lock = field(default_factory=threading.Lock)
    subscribed: set[str] = field(default_factory=set)
    client_id: str | None = None
    stalled: bool = False


class RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class ScriptedServer:
    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
                 expires_in: int = 900, instruments: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.instruments = instruments if instruments is not None else tiny_instruments()
        self.requests: list[Received] = []
        self.issued_tokens: list[str] = []  # every access and refresh token handed out
        self.signatures: list[str] = []  # every client_signature received
        self.refuse_logins = False
        self.refuse_connects = False
        self.connects = 0  # websocket handshakes completed
        self.connect_attempts: list[float] = []  # time.monotonic() of every handshake request
        self.subscriptions: dict[int, set[str]] = {}  # connection number -> channels (kept after it closed)
        self._faults: Counter[tuple[str, str]] = Counter()  # (kind, method or channel) -> times left
        self._refresh_tokens: set[str] = set()
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._order_ids = itertools.count(1000)
        self._change_ids = itertools.count(1)
        self.orders: dict[str, dict[str, Any]] = {}
        # What private/get_positions answers, by currency (Deribit's position objects).
        self.positions: dict[str, list[dict[str, Any]]] = {}
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> str:
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None, ping_interval=None,
                             process_request=self._process_request, close_timeout=1)
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-deribit", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws/api/v2"

    def stop(self) -> None:
        if self._server is not None:
            self.close_connections()
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what happened --------------------------------------------------------------------------------
    def calls(self, method: str | None = None, conn: int | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (conn is None or r.conn == conn)]

    def subscribed(self, conn: int | None = None) -> set[str]:
        """Channels subscribed on connection ``conn`` (default: the latest), also after it closed."""
        with self._lock:
            number = self.connects if conn is None else conn
            return set(self.subscriptions.get(number, ()))

    def wait_until(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll ``condition`` until it returns something truthy; fail the test with ``what`` otherwise."""
        return wait_until(condition, timeout, what)

    def wait_for_call(self, method: str, count: int = 1, timeout: float = 10.0,
                      where: Callable[[Received], bool] | None = None) -> list[Received]:
        def found() -> list[Received]:
            calls = [r for r in self.calls(method) if where is None or where(r)]
            return calls if len(calls) >= count else []

        return self.wait_until(found, timeout, f"{count} x {method}")

    # -- faults ---------------------------------------------------------------------------------------
    def rate_limit_next(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` with 10028 too_many_requests."""
        with self._lock:
            self._faults[("rate_limit", method)] += times

    def swallow_next(self, method: str, times: int = 1) -> None:
        """Never answer the next ``times`` requests of ``method``."""
        with self._lock:
            self._faults[("swallow", method)] += times

    def fail_next(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` with an internal error (11094)."""
        with self._lock:
            self._faults[("fail", method)] += times

    def echo_tokens_next(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` with an error whose message and data echo
        the newest access and refresh tokens (a careless venue or proxy: issue 17)."""
        with self._lock:
            self._faults[("echo", method)] += times

    def refuse_channel(self, channel: str, times: int = 1) -> None:
        """Leave ``channel`` out of the next ``times`` subscribe answers that ask for it."""
        with self._lock:
            self._faults[("refuse", channel)] += times

    def stall(self) -> int:
        """Every open connection goes silent for good: nothing read, answered or pushed; the
        socket stays open. Returns how many were stalled."""
        with self._lock:
            for c in self._conns:
                c.stalled = True
            return len(self._conns)

    def close_connections(self) -> int:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.ws.close(1011, "scripted close")
        return len(conns)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- pushes ---------------------------------------------------------------------------------------
    def push(self, channel: str, data: Any) -> int:
        """A notification to every connection subscribed to ``channel``; returns how many got it."""
        frame = json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})
        with self._lock:
            targets = [c for c in self._conns if channel in c.subscribed and not c.stalled]
        return sum(self._send(c, frame) for c in targets)

    def send_raw(self, text: str) -> int:
        """Any text (a malformed frame, a heartbeat) to every open connection."""
        with self._lock:
            targets = [c for c in self._conns if not c.stalled]
        return sum(self._send(c, text) for c in targets)

    def send_test_request(self) -> int:
        return self.send_raw(json.dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}))

    def book_snapshot(self, instrument: str, bids: list[list[Any]] | None = None,
                      asks: list[list[Any]] | None = None) -> dict[str, Any]:
        return {"type": "snapshot", "timestamp": int(time.time() * 1000), "instrument_name": instrument,
                "change_id": next(self._change_ids),
                "bids": bids if bids is not None else [["new", 0.05, 1.0]],
                "asks": asks if asks is not None else [["new", 0.06, 1.0]]}

    @staticmethod
    def ticker(instrument: str, mark_price: float = 0.055) -> dict[str, Any]:
        return {"timestamp": int(time.time() * 1000), "instrument_name": instrument, "state": "open",
                "mark_price": mark_price, "index_price": 60000.0, "best_bid_price": 0.05, "best_bid_amount": 1.0,
                "best_ask_price": 0.06, "best_ask_amount": 1.0, "open_interest": 10.0, "min_price": 0.0005,
                "max_price": 0.5, "last_price": None, "settlement_price": None,
                "stats": {"volume": None, "price_change": None, "low": None, "high": None}}

    # -- the server -----------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        self.connect_attempts.append(time.monotonic())
        if self.refuse_connects:
            return connection.respond(503, "scripted: connections refused\n")
        return None

    def _send(self, c: _Conn, text: str) -> int:
        try:
            with c.lock:
                c.ws.send(text)
            return 1
        except ConnectionClosed:
            return 0

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            self.connects += 1
            conn = _Conn(self.connects, ws)
            self._conns.append(conn)
            self.subscriptions[conn.number] = conn.subscribed
        try:
            while True:
                try:
                    message = ws.recv(timeout=0.1)
                except TimeoutError:
                    continue
                if conn.stalled:
                    continue  # read and dropped: a stalled exchange answers nothing
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._conns.remove(conn)

    def _take_fault(self, kind: str, key: str) -> bool:
        if self._faults[(kind, key)] > 0:
            self._faults[(kind, key)] -= 1
            return True
        return False

    def _on_message(self, c: _Conn, message: str | bytes) -> None:
        us_in = int(time.time() * 1e6)
        request = json.loads(message)
        if "method" not in request:
            return  # a client's answer to something we sent
        method = request["method"]
        params = request.get("params") or {}
        with self._lock:
            self.requests.append(Received(time.monotonic(), c.number, request.get("id"), method, params))
            swallow = self._take_fault("swallow", method)
            limited = self._take_fault("rate_limit", method)
            failed = self._take_fault("fail", method)
            echo = self.issued_tokens[-2:] if self._take_fault("echo", method) else None
        if swallow:
            return
        after: list[str] = []
        try:
            if limited:
                raise RpcFault(10028, "too_many_requests")
            if failed:
                raise RpcFault(11094, "internal_server_error")
            if echo is not None:
                raise RpcFault(11050, f"bad_request: session {' / '.join(echo)} is not allowed",
                               {"reason": f"token {echo[0]} refused"})
            result = self._answer(c, method, params, after)
            us_out = int(time.time() * 1e6)
            frame = {"jsonrpc": "2.0", "id": request.get("id"), "result": result, "usIn": us_in, "usOut": us_out,
                     "usDiff": us_out - us_in, "testnet": True}
        except RpcFault as fault:
            error: dict[str, Any] = {"code": fault.code, "message": fault.message}
            if fault.data is not None:
                error["data"] = fault.data
            us_out = int(time.time() * 1e6)
            frame = {"jsonrpc": "2.0", "id": request.get("id"), "error": error, "usIn": us_in, "usOut": us_out,
                     "usDiff": us_out - us_in, "testnet": True}
        self._send(c, json.dumps(frame))
        for text in after:  # notifications a request causes follow its answer, as on Deribit
            self._send(c, text)

    def _answer(self, c: _Conn, method: str, p: dict[str, Any], after: list[str]) -> Any:
        if method == "public/set_heartbeat":
            if not isinstance(p.get("interval"), int | float) or p["interval"] < 10:
                raise RpcFault(-32602, "Invalid params", {"param": "interval", "reason": "must be at least 10"})
            return "ok"
        if method == "public/test":
            return {"version": "scripted"}
        if method == "public/auth":
            return self._auth(c, p)
        if method == "public/get_instruments":
            if p.get("currency") not in self.instruments:
                raise RpcFault(-32602, "Invalid params", {"param": "currency", "reason": "wrong format"})
            return self.instruments[p["currency"]]
        if method in ("public/subscribe", "private/subscribe"):
            return self._subscribe(c, p["channels"], private=method.startswith("private/"), after=after)
        if method in ("public/unsubscribe", "private/unsubscribe"):
            with self._lock:
                gone = [ch for ch in p["channels"] if ch in c.subscribed]
                c.subscribed -= set(gone)
            return gone
        if not method.startswith("private/"):
            raise RpcFault(-32601, "Method not found")
        if c.client_id is None:
            raise RpcFault(13009, "unauthorized")
        return self._private(method, p)

    def _auth(self, c: _Conn, p: dict[str, Any]) -> dict[str, Any]:
        grant = p.get("grant_type")
        if grant == "client_signature":
            self.signatures.append(str(p.get("signature")))
        if self.refuse_logins:
            raise RpcFault(13004, "invalid_credentials")
        if grant == "client_credentials":
            ok = p.get("client_id") == self.client_id and p.get("client_secret") == self.client_secret
        elif grant == "client_signature":
            payload = f"{p.get('timestamp')}\n{p.get('nonce', '')}\n{p.get('data', '')}".encode()
            want = hmac.new(self.client_secret.encode(), payload, hashlib.sha256).hexdigest()
            ok = p.get("client_id") == self.client_id and hmac.compare_digest(want, str(p.get("signature")))
        elif grant == "refresh_token":
            with self._lock:
                ok = p.get("refresh_token") in self._refresh_tokens
                self._refresh_tokens.discard(p.get("refresh_token"))
        else:
            raise RpcFault(-32602, "Invalid params", {"param": "grant_type", "reason": "wrong value"})
        if not ok:
            raise RpcFault(13004, "invalid_credentials")
        c.client_id = self.client_id
        access, refresh = f"acc-{secrets.token_hex(12)}", f"ref-{secrets.token_hex(12)}"
        with self._lock:
            self.issued_tokens += [access, refresh]
            self._refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": self.expires_in,
                "scope": "connection mainaccount", "token_type": "bearer"}

    def _subscribe(self, c: _Conn, channels: list[str], private: bool, after: list[str]) -> list[str]:
        if private and c.client_id is None:
            raise RpcFault(13009, "unauthorized")
        ok = []
        with self._lock:
            for channel in channels:
                if self._take_fault("refuse", channel):
                    continue
                if channel.startswith(PRIVATE_PREFIXES) and c.client_id is None:
                    continue
                ok.append(channel)
            c.subscribed |= set(ok)
        for channel in ok:  # a book subscription starts with a snapshot
            parts = channel.split(".")
            if parts[0] == "book" and len(parts) == 3:
                after.append(json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
                    "channel": channel, "data": self.book_snapshot(parts[1])}}))
        return ok

    def _order(self, p: dict[str, Any], direction: str) -> dict[str, Any]:
        order_id = f"SCR-{next(self._order_ids)}"
        order = {"order_id": order_id, "instrument_name": p["instrument_name"], "order_state": "open",
                 "order_type": p.get("type", "limit"), "direction": direction, "amount": p["amount"],
                 "price": p.get("price"), "filled_amount": 0.0, "label": p.get("label", ""),
                 "time_in_force": p.get("time_in_force", "good_til_cancelled"), "post_only": p.get("post_only", False),
                 "creation_timestamp": int(time.time() * 1000), "last_update_timestamp": int(time.time() * 1000),
                 "api": True}
        self.orders[order_id] = order
        return order

    def _private(self, method: str, p: dict[str, Any]) -> Any:
        if method in ("private/buy", "private/sell"):
            return {"order": self._order(p, method.split("/")[1]), "trades": []}
        if method == "private/edit":
            order = self.orders.get(p.get("order_id", ""))
            if order is None:
                raise RpcFault(11044, "not_open_order")
            order.update(amount=p["amount"], price=p.get("price", order["price"]), replaced=True)
            return {"order": order, "trades": []}
        if method == "private/cancel":
            order = self.orders.get(p.get("order_id", ""))
            if order is None:
                raise RpcFault(11044, "not_open_order")
            order["order_state"] = "cancelled"
            return order
        if method.startswith("private/cancel_all") or method == "private/cancel_by_label":
            open_orders = [o for o in self.orders.values() if o["order_state"] == "open"]
            for order in open_orders:
                order["order_state"] = "cancelled"
            return len(open_orders)
        if method == "private/enable_cancel_on_disconnect":
            return "ok"
        if method == "private/get_positions":
            return self.positions.get(p.get("currency", ""), [])
        if method == "private/get_open_orders_by_currency":
            return [o for o in self.orders.values()
                    if o["order_state"] == "open" and o["instrument_name"].startswith(p["currency"])]
        if method == "private/get_account_summary":
            return {"currency": p["currency"], "equity": 10.0, "balance": 10.0, "available_funds": 10.0,
                    "margin_balance": 10.0, "initial_margin": 0.0, "maintenance_margin": 0.0}
        raise RpcFault(-32601, "Method not found")
