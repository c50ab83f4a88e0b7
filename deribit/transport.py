"""The websocket itself (websocket-client), behind a small interface the Connection uses.

One thread receives (the Connection's link thread); any thread may send: text frames are made
here (:func:`text_frame`) and written under websocket-client's send lock, so that frames never
interleave. Every failure becomes :class:`LinkClosed`.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

import websocket

#: The socket's own timeout: how long a frame that has begun to arrive may take to arrive whole
#: before ``recv`` returns None (resuming it on the next call), and how long a write (ours, or a
#: pong websocket-client answers inside ``recv``) waits for room at a time.
SOCKET_TIMEOUT_S = 0.2
#: How long a frame may take to go out whole when the socket's buffer is full; past it the link
#: is declared dead (a frame cut short would corrupt every frame after it).
SEND_TIMEOUT_S = 1.0


class LinkClosed(Exception):
    """The socket closed or failed; the Connection reconnects."""


class Transport(Protocol):
    """What the Connection needs of a link (:class:`WebsocketTransport`, or a test's double).
    Every failure is :class:`LinkClosed`. A transport may also have ``warm_up(frame)``: make
    what ``send`` would write and drop it (an idle link's warm-up); the Connection looks for it."""

    def connect(self) -> None: ...

    def recv(self, timeout_s: float) -> str | bytes | None:
        """The next frame, or None once ``timeout_s`` passed without one."""
        ...

    def send(self, frame: bytes | str) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Cut the link at once, from any thread."""
        ...


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


def text_frame(payload: bytes, mask_key: bytes) -> bytes:
    """One final, masked text frame (RFC 6455 5.2) of ``payload``: what websocket-client's
    ``ABNF.format`` makes, in a quarter of its time (a hedge order is written on this path)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    if not n:
        return head + mask_key
    key = int.from_bytes(mask_key * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return head + mask_key + (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class WebsocketTransport:
    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._ws: websocket.WebSocket | None = None
        self._poll: Callable[[float], list[tuple[int, int]]] | None = None
        self._tls_pending: Callable[[], int] | None = None
        self._mask_keys = MaskKeys()

    def connect(self) -> None:
        try:
            ws = websocket.create_connection(self.url, timeout=self._timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
            ws.set_mask_key(self._mask_keys)  # for what websocket-client itself sends (pong, close)
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            # ValueError: a malformed URL; retrying will not help, but the message says why.
            raise LinkClosed(f"cannot connect to {self.url}: {exc}") from None
        ws.settimeout(SOCKET_TIMEOUT_S)
        poller = select.poll()
        assert ws.sock is not None  # create_connection returns a connected socket
        poller.register(ws.sock, select.POLLIN)
        self._poll = poller.poll
        # TLS may hold decrypted bytes of the next frame that the socket no longer shows.
        self._tls_pending = ws.sock.pending if isinstance(ws.sock, ssl.SSLSocket) else None
        self._ws = ws

    def recv(self, timeout_s: float) -> str | bytes | None:
        """One frame, or None when nothing arrived within ``timeout_s``.

        The wait is a poll, not the socket's timeout: an idle link wakes up every few
        milliseconds (``warm_up_ms``), and a socket timeout that short would also bound the
        pongs websocket-client writes inside ``recv`` (one cut short corrupts the stream), while
        a timeout is an exception through websocket-client's reader, several times the poll's
        cost. A frame that stops half-way returns None after SOCKET_TIMEOUT_S; websocket-client
        keeps what was read and resumes the frame on the next call."""
        ws = self._ws
        if ws is None or self._poll is None:
            raise LinkClosed("not connected")
        tls_pending = self._tls_pending  # TLS may hold decrypted bytes the socket no longer shows
        if not (tls_pending is not None and tls_pending()) and not self._poll(timeout_s * 1000.0):
            return None
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
        data = self._frame(frame)
        try:
            with ws.lock:  # websocket-client's own send lock: one frame at a time on the socket
                sock = ws.sock
                if sock is None:
                    raise LinkClosed("not connected")
                try:
                    sent = sock.send(data)  # the whole frame, unless the socket's buffer is full
                except TimeoutError:
                    sent = 0
                if sent < len(data):
                    self._send_rest(sock, memoryview(data)[sent:])
        except (OSError, websocket.WebSocketException) as exc:
            raise LinkClosed(f"send failed: {exc}") from None

    def _send_rest(self, sock: socket.socket, rest: memoryview) -> None:
        """Write the rest of a frame within SEND_TIMEOUT_S. Not ``sendall``: one that times
        out has written an unknown part of the frame, which nothing could complete."""
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while rest:
            try:
                rest = rest[sock.send(rest):]
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise LinkClosed(f"send failed: the socket took no data for {SEND_TIMEOUT_S:g} s, "
                                     f"{len(rest)} bytes of a frame unsent") from None

    def _frame(self, frame: bytes | str) -> bytes:
        return text_frame(frame.encode() if isinstance(frame, str) else frame, self._mask_keys(4))

    def warm_up(self, frame: bytes | str) -> None:
        """Make the bytes :meth:`send` would write for ``frame`` and drop them (an idle link's
        warm-up: see ``deribit.warm_up_ms``). Writes nothing."""
        self._frame(frame)

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
