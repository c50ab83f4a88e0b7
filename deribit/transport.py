"""The websocket itself (websocket-client), behind a small interface the Connection uses.

One thread receives (the Connection's link thread); any thread may send (websocket-client
serialises sends with ``enable_multithread``). Every failure becomes :class:`LinkClosed`.
"""

from __future__ import annotations

import os
import socket
import threading

import websocket

VENUE_URLS = {
    "mainnet": "wss://www.deribit.com/ws/api/v2",
    "testnet": "wss://test.deribit.com/ws/api/v2",
}


class LinkClosed(Exception):
    """The socket closed or failed; the Connection reconnects."""


class MaskKeys:
    """Masking keys for client frames (RFC 6455 5.3: from a strong source of entropy), drawn
    from ``os.urandom`` 4 KiB at a time: websocket-client's default calls ``os.urandom`` for
    every frame, a system call that also hands the GIL to another thread on the order's path."""

    def __init__(self, pool_bytes: int = 4096) -> None:
        self._size = pool_bytes
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()

    def __call__(self, length: int) -> bytes:
        with self._lock:
            at = self._at
            if at + length > len(self._pool):
                self._pool = os.urandom(max(self._size, length))
                at = 0
            self._at = at + length
            return self._pool[at:at + length]


class WebsocketTransport:
    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._ws: websocket.WebSocket | None = None

    def connect(self) -> None:
        try:
            ws = websocket.create_connection(self.url, timeout=self._timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
            ws.set_mask_key(MaskKeys())
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            # ValueError: a malformed URL; retrying will not help, but the message says why.
            raise LinkClosed(f"cannot connect to {self.url}: {exc}") from None
        self._ws = ws

    def recv(self, timeout_s: float) -> str | bytes | None:
        """One frame, or None when nothing arrived within ``timeout_s`` (a timeout in the middle
        of a frame keeps what was read: websocket-client resumes the frame on the next call)."""
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
        """Close with the websocket closing handshake (waits at most 0.5 s for the server)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except (OSError, websocket.WebSocketException):
                pass

    def abort(self) -> None:
        """Cut the socket without a handshake, from any thread: a blocked ``recv`` returns at once."""
        ws = self._ws
        sock = ws.sock if ws is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.connected
