"""A local Deribit: the same websocket JSON-RPC as Deribit, for everything the desk uses.

``Simulator`` runs a :class:`~simulator.server.SimulatorServer` on its own asyncio loop in a
daemon thread, and offers tests thread-safe controls: faults on demand, deterministic market
moves and read access to the exchange's own state::

    sim = Simulator(seed=1, settings=SimSettings(chain="small"))
    url = sim.start_in_thread()          # ws://127.0.0.1:PORT/ws/api/v2
    sim.shift_index("BTC", -5.0)
    sim.drop_book_notifications(1)
    sim.lock_index("btc_usd")            # platform_state says so; its orders are refused (10019)
    bids, asks = sim.book("BTC-PERPETUAL")
    sim.stop()
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from simulator.exchange import Exchange
from simulator.generate import generate_wire_log
from simulator.server import WS_PATH, SimulatorServer
from simulator.settings import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SimAccount, SimSettings

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "WS_PATH",
    "Exchange",
    "SimAccount",
    "SimSettings",
    "Simulator",
    "SimulatorServer",
    "generate_wire_log",
]

T = TypeVar("T")


class Simulator:
    """The simulator as an object a test or the program owns: start, drive, inspect, stop."""

    def __init__(
        self, seed: int = 1, settings: SimSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.seed = seed
        self.settings = settings or SimSettings()
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SimulatorServer | None = None
        self._error: BaseException | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: a free port) from a daemon thread; returns the websocket URL."""
        if self._thread is not None:
            return self.url
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = SimulatorServer(self.seed, self.settings, self.clock)

                async def run() -> None:
                    assert self._server is not None
                    task = asyncio.create_task(self._server.run(host, port))
                    waiter = asyncio.create_task(self._server.wait_ready())
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    ready.set()
                    await task

                loop.run_until_complete(run())
            except BaseException as e:  # surfaced by start_in_thread
                self._error = e
            finally:
                ready.set()
                loop.close()

        self._thread = threading.Thread(target=main, name="deribit-simulator", daemon=True)
        self._thread.start()
        ready.wait(30.0)
        if self._error is not None or self._server is None or not self._server.port:
            raise RuntimeError(f"simulator failed to start: {self._error!r}")
        return self.url

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._server is None:
            return
        server = self._server
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(server.shutdown)
        self._thread.join(10.0)
        self._thread = None

    def __enter__(self) -> Simulator:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "simulator not started"
        return f"ws://127.0.0.1:{self._server.port}{WS_PATH}"

    @property
    def port(self) -> int:
        assert self._server is not None, "simulator not started"
        return self._server.port

    @property
    def server(self) -> SimulatorServer:
        assert self._server is not None, "simulator not started"
        return self._server

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the simulator's loop (the only thread that touches its state)."""
        if self._loop is None or not self._loop.is_running():
            return fn()

        async def wrapped() -> T:
            out = fn()
            # Whatever the call changed goes out to subscribers now.
            self.server.route_events()
            await self.server.flush_all()
            return out

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout)

    # --- faults --------------------------------------------------------------------------------

    def drop_book_notifications(self, n: int = 1, probability: float = 0.0) -> None:
        """Skip the next ``n`` book notifications (and each later one with ``probability``): a gap."""
        self.call(lambda: self.server.fault("drop_book_notifications", n=n, probability=probability))

    def dropped_book_notifications(self) -> list[tuple[str, int, int]]:
        """``(instrument, prev_change_id, change_id)`` of every book notification dropped so far."""
        return self.call(lambda: list(self.server.faults.dropped_books))

    def close_connections(self) -> int:
        return self.call(self.server.close_connections)

    def stall(self, seconds: float) -> None:
        """Go silent for ``seconds``: no notifications, answers held back, heartbeats paused."""
        self.call(lambda: self.server.stall(seconds))

    def refuse_logins(self, refuse: bool = True) -> None:
        self.call(lambda: self.server.fault("refuse_logins", refuse=refuse))

    def send_malformed_frame(self) -> int:
        return self.call(self.server.send_malformed_frame)

    def delay_answers(self, seconds: float) -> None:
        self.call(lambda: self.server.fault("delay_answers", seconds=seconds))

    def rate_limit_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with Deribit's ``too_many_requests`` (10028)."""
        self.call(lambda: self.server.fault("rate_limit_next", n=n))

    def clear_faults(self) -> None:
        self.call(lambda: self.server.fault("clear"))

    # --- market control ------------------------------------------------------------------------

    def set_index(self, currency: str, price: float) -> None:
        """Put the index at ``price`` now and requote every book around it."""
        self.call(lambda: self.server.set_index(currency, price))

    def shift_index(self, currency: str, pct: float) -> None:
        self.call(lambda: self.server.shift_index(currency, pct))

    def set_vol_level(self, currency: str, level: float) -> None:
        """Put the level of ``currency``'s implied vols at ``level`` (1.0: the model's base; 1.2
        lifts every vol by a fifth) now and requote every book around it."""
        self.call(lambda: self.server.set_vol_level(currency, level))

    def lock_index(self, price_index: str, locked: bool = True) -> None:
        """Lock (``locked=False``: unlock) trading on a price index (``btc_usd``): orders on its
        instruments are refused and ``platform_state`` says so, as on Deribit."""
        self.call(lambda: self.server.lock_index(price_index, locked))

    def settlement_history(self, client_id: str = DEFAULT_CLIENT_ID, currency: str = "BTC") -> list[dict[str, Any]]:
        return self.call(
            lambda: self.server.exchange.settlement_history(client_id, currency, None, 1000, None)["settlements"]
        )

    def index(self, currency: str) -> float:
        return self.call(lambda: self.server.exchange.index_price(currency))

    # --- state readers -------------------------------------------------------------------------

    def book(self, instrument: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Published (bids best first, asks best first) as (price, amount) pairs."""

        def read() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
            book = self.server.exchange.books[instrument]
            bids, asks = book.depth(10_000)
            return [(p, a) for p, a in bids], [(p, a) for p, a in asks]

        return self.call(read)

    def change_id(self, instrument: str) -> int:
        return self.call(lambda: self.server.exchange.books[instrument].change_id)

    def instruments(self, currency: str | None = None) -> list[str]:
        """Names listed under ``currency`` as get_instruments lists them (by settlement currency)."""
        return self.call(
            lambda: [
                n for n, s in self.server.exchange.instruments.items() if currency in (None, s.settlement_currency)
            ]
        )

    def ticker(self, instrument: str) -> dict[str, Any]:
        return self.call(lambda: self.server.exchange.ticker(instrument))

    def positions(self, client_id: str = DEFAULT_CLIENT_ID, currency: str = "BTC") -> list[dict[str, Any]]:
        return self.call(lambda: self.server.exchange.positions_json(client_id, currency))

    def open_orders(self, client_id: str = DEFAULT_CLIENT_ID, currency: str = "BTC") -> list[dict[str, Any]]:
        return self.call(lambda: self.server.exchange.open_orders_json(client_id, currency))

    def account_summary(self, client_id: str = DEFAULT_CLIENT_ID, currency: str = "BTC") -> dict[str, Any]:
        return self.call(lambda: self.server.exchange.account_summary(client_id, currency))

    def frames_sent(self) -> int:
        return self.call(lambda: self.server.frames_sent)
