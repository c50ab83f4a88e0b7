"""The websocket itself (websocket-client), behind a small interface the Connection uses."""

from __future__ import annotations

import websocket

VENUE_URLS = {
    "mainnet": "wss://www.deribit.com/ws/api/v2",
    "testnet": "wss://test.deribit.com/ws/api/v2",
}


class LinkClosed(Exception):
    """The socket closed or failed; the Connection reconnects."""


class WebsocketTransport:
    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._ws: websocket.WebSocket | None = None

    def connect(self) -> None:
        try:
            ws = websocket.create_connection(self.url, timeout=self._timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
        except (OSError, websocket.WebSocketException) as exc:
            raise LinkClosed(f"cannot connect to {self.url}: {exc}") from None
        self._ws = ws

    def recv(self, timeout_s: float) -> str | bytes | None:
        """One frame, or None when nothing arrived within ``timeout_s``."""
        ws = self._ws
        if ws is None:
            raise LinkClosed("not connected")
        ws.settimeout(timeout_s)
        try:
            data = ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as exc:
            raise LinkClosed(f"receive failed: {exc}") from None
        if data == "" and not ws.connected:
            raise LinkClosed("closed by the server")
        return data

    def send(self, frame: bytes | str) -> None:
        ws = self._ws
        if ws is None:
            raise LinkClosed("not connected")
        try:
            ws.send(frame)  # bytes go out as a text frame unchanged
        except (OSError, websocket.WebSocketException) as exc:
            raise LinkClosed(f"send failed: {exc}") from None

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except (OSError, websocket.WebSocketException):
                pass

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.connected
