"""A loopback TCP server that accepts every connection and never says a word (not even the websocket
handshake's answer): what a hung exchange or a black-holing proxy looks like to a client.

    with SilentServer() as silent:
        client.connect(silent.url)  # must give up by itself
"""

from __future__ import annotations

import socket
import threading


class SilentServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/ws/api/v2"

    @property
    def accepted(self) -> int:
        return len(self._accepted)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._accepted.append(connection)  # held open, never read nor written

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone may not)
        except OSError:
            pass
        self._listener.close()
        for connection in self._accepted:
            connection.close()
        self._thread.join(2)
