"""The websocket transport: masking keys (every frame its own, from os.urandom in blocks), frames as
websocket-client makes them, and writes that outlast the receive timeout."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from deribit.transport import SEND_TIMEOUT_S, LinkClosed, MaskKeys, WebsocketTransport, text_frame


def test_keys_have_the_length_asked_and_do_not_repeat() -> None:
    keys = MaskKeys(pool_bytes=64)
    drawn = [keys(4) for _ in range(1000)]  # the pool is refilled many times over
    assert all(len(key) == 4 for key in drawn)
    # 1,000 random 32-bit keys: a repeat has a chance of about 1e-4; consecutive equal keys would
    # mean the pool is reused.
    assert len(set(drawn)) >= 999
    assert all(a != b for a, b in itertools.pairwise(drawn))


def test_a_key_longer_than_the_pool_is_served_whole() -> None:
    keys = MaskKeys(pool_bytes=8)
    assert len(keys(32)) == 32
    assert len(keys(4)) == 4


def test_frames_masked_with_them_unmask_to_the_payload() -> None:
    keys = MaskKeys()
    payload = b'{"jsonrpc":"2.0","id":7,"method":"private/buy","params":{"amount":10}}'
    frame = websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT)
    frame.get_mask_key = keys
    wire = frame.format()
    # 2 header bytes (length < 126), then the key, then the masked payload.
    assert wire[1] & 0x80 and wire[1] & 0x7F == len(payload)
    key, masked = wire[2:6], wire[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == payload


@pytest.mark.parametrize("length", [0, 1, 3, 4, 125, 126, 127, 1000, 65535, 65536, 70001])
def test_our_text_frames_are_byte_for_byte_websocket_clients(length: int) -> None:
    payload = bytes((i * 7 + 3) % 256 for i in range(length))
    key = b"\x9a\x01\xf3\x5c"
    theirs = websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT)
    theirs.get_mask_key = lambda _n: key
    assert text_frame(payload, key) == theirs.format()


def _transport_on(sock: socket.socket) -> WebsocketTransport:
    """A transport whose websocket is ``sock`` (as after connect), with a 1 ms socket timeout."""
    transport = WebsocketTransport("ws://127.0.0.1:9/unused", connect_timeout_s=5.0)
    transport._ws = types.SimpleNamespace(sock=sock, lock=threading.Lock(), connected=True)  # type: ignore[assignment]
    sock.settimeout(0.001)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return transport


def _unmask(wire: bytes) -> bytes:
    assert wire[0] == 0x81 and wire[1] == 0x80 | 127  # final text frame, masked, 64-bit length
    length = int.from_bytes(wire[2:10], "big")
    key, masked = wire[10:14], wire[14:]
    assert len(masked) == length
    return bytes(b ^ key[i % 4] for i, b in enumerate(masked))


def test_a_frame_bigger_than_the_socket_buffer_goes_out_whole_past_the_receive_timeout() -> None:
    # The socket's timeout is the receive slice (1 ms here); a reader that comes back only
    # after 50 ms must still get the whole frame, not half of it and a dead link.
    ours, peer = socket.socketpair()
    with ours, peer:
        transport = _transport_on(ours)
        payload = bytes(range(256)) * 1024  # 256 KiB
        received = bytearray()

        def read_late() -> None:
            time.sleep(0.05)
            while len(received) < 14 + len(payload):
                chunk = peer.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read_late)
        reader.start()
        transport.send(payload)
        reader.join(5)
        assert _unmask(bytes(received)) == payload


def test_a_peer_that_takes_nothing_fails_the_send_after_the_timeout() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        transport = _transport_on(ours)
        started = time.monotonic()
        with pytest.raises(LinkClosed, match=r"the socket took no data for 1 s, \d+ bytes of a frame unsent"):
            transport.send(bytes(1 << 22))
        assert SEND_TIMEOUT_S <= time.monotonic() - started < SEND_TIMEOUT_S + 1.0


def test_warm_up_makes_the_frame_and_writes_nothing() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        transport = _transport_on(ours)
        transport.warm_up(b'{"jsonrpc":"2.0","id":0,"method":"private/sell","params":{"amount":10.0}}')
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(1)


class _Peer:
    """The server's end of a real websocket on loopback: a bare handshake, then raw bytes (over
    TLS when given a server context)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        scheme = "wss" if tls is not None else "ws"
        self.url = f"{scheme}://127.0.0.1:{self._server.getsockname()[1]}/ws/api/v2"
        self.conn: socket.socket | None = None
        self._tls = tls
        self._accepted = threading.Thread(target=self._accept)
        self._accepted.start()

    def _accept(self) -> None:
        conn, _ = self._server.accept()
        if self._tls is not None:
            conn = self._tls.wrap_socket(conn, server_side=True)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", request, re.IGNORECASE)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.conn = conn

    def connected(self) -> socket.socket:
        self._accepted.join(5)
        assert self.conn is not None
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self._server.close()


def _server_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload  # a server's frames are not masked


def _connected_to(peer: _Peer) -> Iterator[tuple[WebsocketTransport, socket.socket]]:
    transport = WebsocketTransport(peer.url, connect_timeout_s=5.0)
    try:
        transport.connect()
        yield transport, peer.connected()
    finally:
        transport.close()
        peer.close()


@pytest.fixture
def linked() -> Iterator[tuple[WebsocketTransport, socket.socket]]:
    """A transport connected to a bare peer, and the peer's socket."""
    yield from _connected_to(_Peer())


def test_recv_polls_for_the_timeout_and_reads_frames_that_came_together_one_by_one(
        linked: tuple[WebsocketTransport, socket.socket]) -> None:
    transport, conn = linked
    started = time.monotonic()
    assert transport.recv(0.02) is None
    assert 0.015 <= time.monotonic() - started < 0.5
    conn.sendall(_server_frame('{"n":1}') + _server_frame('{"n":2}'))
    assert transport.recv(1.0) == '{"n":1}'
    started = time.monotonic()
    assert transport.recv(1.0) == '{"n":2}'
    assert time.monotonic() - started < 0.1  # no wait: it was already there


def test_a_frame_that_stops_half_way_is_resumed_on_the_next_call(
        linked: tuple[WebsocketTransport, socket.socket]) -> None:
    transport, conn = linked
    frame = _server_frame('{"jsonrpc":"2.0","method":"subscription","params":{}}')
    conn.sendall(frame[:20])
    assert transport.recv(0.01) is None  # the start came, the rest did not within the timeout
    assert transport.recv(0.01) is None  # nothing new
    conn.sendall(frame[20:])
    assert transport.recv(1.0) == '{"jsonrpc":"2.0","method":"subscription","params":{}}'


def test_a_peer_that_closes_ends_the_link(linked: tuple[WebsocketTransport, socket.socket]) -> None:
    transport, conn = linked
    conn.close()
    with pytest.raises(LinkClosed):
        transport.recv(1.0)


@pytest.fixture
def tls_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WebsocketTransport, socket.socket]]:
    """A transport connected over TLS (a certificate of its own for 127.0.0.1, trusted through
    websocket-client's WEBSOCKET_CLIENT_CA_BUNDLE) to a bare peer, and the peer's socket."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate for the TLS peer")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(cert))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    yield from _connected_to(_Peer(tls=server_context))


def test_over_tls_a_frame_already_decrypted_is_read_without_waiting(
        tls_linked: tuple[WebsocketTransport, socket.socket]) -> None:
    # Two frames in one TLS record: reading the first decrypts both, and the socket shows
    # nothing more; the second must come at once, not when the next packet or the timeout does.
    transport, conn = tls_linked
    conn.sendall(_server_frame('{"n":1}') + _server_frame('{"n":2}'))
    assert transport.recv(2.0) == '{"n":1}'
    started = time.monotonic()
    assert transport.recv(2.0) == '{"n":2}'
    assert time.monotonic() - started < 0.5
