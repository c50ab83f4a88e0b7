"""A plain blocking JSON-RPC websocket client (websocket-client): drives a simulator from tests or
scripts, including an out-of-process one through ``simulator/fault``. Not the desk's Connection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import websocket


class RpcClient:
    """Sends requests, keeps every notification (raw text and parsed) in arrival order."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.frames: list[str] = []  # every text frame received, raw
        self.notes: list[dict[str, Any]] = []
        self._id = 0

    def close(self) -> None:
        self.ws.close()

    def _recv(self) -> dict[str, Any]:
        received = self.ws.recv()
        raw = received.decode() if isinstance(received, bytes) else received
        if raw == "":
            raise ConnectionError("the server closed the connection")
        self.frames.append(raw)
        msg = json.loads(raw)
        if msg.get("method") in ("subscription", "heartbeat"):
            self.notes.append(msg)
        return msg

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        self._id += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or {}}))
        return self._id

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The whole response frame (``result`` or ``error``)."""
        req = self.send(method, params)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._recv()
            if msg.get("id") == req:
                return msg
        raise TimeoutError(method)

    def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        msg = self.call(method, params)
        assert "result" in msg, msg
        return msg["result"]

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """The first notification (already received or arriving) that ``pred`` accepts."""
        for n in self.notes:
            if pred(n):
                self.notes.remove(n)
                return n
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._recv()
            if msg.get("method") in ("subscription", "heartbeat") and pred(msg):
                self.notes.remove(msg)
                return msg
        raise TimeoutError("no matching notification")

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._recv()
            except websocket.WebSocketTimeoutException:
                return

    def fault(self, action: str, **params: Any) -> Any:
        """A fault on a simulator reached over the wire, e.g. ``fault("stall", seconds=2)``."""
        return self.result("simulator/fault", {"action": action, **params})

    def login(self, client_id: str = "desk", secret: str = "desk-simulator-secret") -> dict[str, Any]:
        params = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        return self.result("public/auth", params)


def channel_is(prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda n: n.get("method") == "subscription" and n["params"]["channel"].startswith(prefix)
