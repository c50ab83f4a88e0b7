"""The websocket shell around the exchange: JSON-RPC over ``ws://HOST:PORT/ws/api/v2``.

One asyncio loop owns the exchange. Requests are answered in order per connection; the market
loop steps the exchange every ``step_s`` and routes its events to subscribed connections. Frames
are queued per connection and written in one batch per loop turn (the websocket frames are still
one JSON-RPC message each, as Deribit sends them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from simulator import errors, frames
from simulator.errors import RpcError, invalid_params
from simulator.exchange import Exchange
from simulator.listing import InstrumentSpec
from simulator.settings import SimSettings

log = logging.getLogger(__name__)

VERSION = "1.2.26"
WS_PATH = "/ws/api/v2"
# A client whose socket buffer stays above this is too slow: the stream waits for it, then drops it.
HIGH_WATER = 8 * 1024 * 1024
SLOW_CLIENT_S = 5.0
INTERVALS = ("raw", "100ms", "agg2")


@dataclass(slots=True)
class Faults:
    """Faults on demand. Counts are consumed as they fire."""

    drop_book_n: int = 0
    drop_book_p: float = 0.0
    stall_until: float = 0.0  # event-loop time
    refuse_logins: bool = False
    delay_s: float = 0.0
    rate_limit_n: int = 0
    malformed_n: int = 0
    dropped: int = 0
    # (instrument, prev_change_id, change_id) of every dropped book notification, for tests.
    dropped_books: list[tuple[str, int, int]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def drop_book(self) -> bool:
        if self.drop_book_n > 0:
            self.drop_book_n -= 1
            self.dropped += 1
            return True
        if self.drop_book_p > 0 and self.rng.random() < self.drop_book_p:
            self.dropped += 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class UserSub:
    """A private channel: ``what`` is orders/trades/portfolio/changes, ``target`` a kind or a name."""

    channel: str
    what: str
    target: str  # kind, instrument name, or currency for portfolio
    currency: str
    interval: str


@dataclass(eq=False, slots=True)
class Client:
    ws: ServerConnection
    number: int
    subs: set[str] = field(default_factory=set)
    user_subs: dict[str, UserSub] = field(default_factory=dict)
    depth_subs: dict[str, tuple[str, int]] = field(default_factory=dict)  # channel -> (name, depth)
    client_id: str | None = None
    cancel_on_disconnect: bool = False
    heartbeat_s: float | None = None
    awaiting_test: bool = False
    out: list[bytes] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    heartbeat: asyncio.Task[None] | None = None


class SimulatorServer:
    """Serves one :class:`Exchange`; construct, then ``await run(host, port)`` inside a loop."""

    def __init__(self, seed: int, settings: SimSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.exchange = Exchange(seed, settings, clock())
        self.faults = Faults()
        self.clients: set[Client] = set()
        self.subs: dict[str, set[Client]] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.port = 0
        self.frames_sent = 0
        self._server: Server | None = None
        self._number = 0
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._channels: dict[str, tuple[str, ...]] = {}
        self.methods: dict[str, Callable[[Client, dict[str, Any]], Any]] = {
            "public/test": lambda c, p: {"version": VERSION},
            "public/hello": lambda c, p: {"version": VERSION},
            "public/get_time": lambda c, p: int(self.clock() * 1000),
            "public/status": self._status,
            "public/auth": self._auth,
            "public/set_heartbeat": self._set_heartbeat,
            "public/disable_heartbeat": self._disable_heartbeat,
            "public/subscribe": lambda c, p: self._subscribe(c, p, private=False),
            "private/subscribe": lambda c, p: self._subscribe(c, p, private=True),
            "public/unsubscribe": self._unsubscribe,
            "private/unsubscribe": self._unsubscribe,
            "public/unsubscribe_all": self._unsubscribe_all,
            "private/unsubscribe_all": self._unsubscribe_all,
            "public/get_instruments": self._get_instruments,
            "public/get_index_price": self._get_index_price,
            "public/get_book_summary_by_currency": self._book_summary,
            "public/get_order_book": self._get_order_book,
            "public/ticker": lambda c, p: self.exchange.ticker(self._name(p)),
            "private/buy": lambda c, p: self.exchange.place(self._who(c, p), "buy", p),
            "private/sell": lambda c, p: self.exchange.place(self._who(c, p), "sell", p),
            "private/edit": lambda c, p: self.exchange.edit(self._who(c, p), p),
            "private/cancel": lambda c, p: self.exchange.cancel(self._who(c, p), p.get("order_id")),
            "private/cancel_all": lambda c, p: self.exchange.cancel_where(self._who(c, p), lambda o, s: True),
            "private/cancel_all_by_currency": self._cancel_all_by_currency,
            "private/cancel_all_by_instrument": self._cancel_all_by_instrument,
            "private/cancel_by_label": self._cancel_by_label,
            "private/get_open_orders_by_currency": self._open_orders,
            "private/get_order_state": self._order_state,
            "private/get_order_state_by_label": self._order_state_by_label,
            "private/get_order_history_by_currency": self._order_history,
            "private/get_positions": self._positions,
            "private/get_position": self._position,
            "private/get_account_summary": self._account_summary,
            "private/get_user_trades_by_currency": self._user_trades,
            "private/get_settlement_history_by_currency": self._settlement_history,
            "private/enable_cancel_on_disconnect": self._enable_cod,
            "private/disable_cancel_on_disconnect": self._disable_cod,
            "private/logout": self._logout,
            "simulator/fault": self._fault_rpc,
            "simulator/set_index": lambda c, p: self.set_index(str(p.get("currency")), float(p["price"])),
            "simulator/shift_index": lambda c, p: self.shift_index(str(p.get("currency")), float(p["pct"])),
            "simulator/set_vol_level": lambda c, p: self.set_vol_level(str(p.get("currency")), float(p["level"])),
            "simulator/lock_index": lambda c, p: self.lock_index(
                str(p.get("price_index")), bool(p.get("locked", True))
            ),
        }

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve until :meth:`shutdown`."""
        self._stop = asyncio.Event()
        async with serve(
            self._handler,
            host,
            port,
            process_request=self._check_path,
            compression=None,
            max_size=2**22,
            ping_interval=None,
            write_limit=2**20,
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            market = asyncio.create_task(self._market_loop())
            try:
                await self._stop.wait()
            finally:
                market.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await market
                self.close_connections()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def shutdown(self) -> None:
        self._stop.set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    # --- the stream ----------------------------------------------------------------------------

    async def _market_loop(self) -> None:
        loop = asyncio.get_running_loop()
        step = max(self.settings.step_s, 0.001)
        next_t = loop.time()
        while True:
            next_t += step
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = loop.time()  # behind: do not try to catch up a backlog of steps
                await asyncio.sleep(0)
            if loop.time() < self.faults.stall_until:
                continue
            try:
                self.exchange.step(self.clock())
                self.route_events()
                await self.flush_all()
            except Exception:
                log.exception("simulator market step failed")

    def route_events(self) -> None:
        """Turn the exchange's events into frames queued on subscribed clients."""
        ex = self.exchange
        events = ex.events
        ex.events = []
        subs = self.subs
        for ev in events:
            kind = ev[0]
            if kind == "book":
                _, name, prev, cid, bids, asks, ts = ev
                chans = self._chans(name)
                targets = [(ch, subs.get(ch)) for ch in chans[0:2]]
                if any(t for _, t in targets):
                    if self.faults.drop_book():
                        self.faults.dropped_books.append((name, prev, cid))
                        continue
                    data = frames.book_change(name, prev, cid, bids, asks, ts)
                    for ch, clients in targets:
                        if clients:
                            frame = frames.notification_raw(ch.encode(), data)
                            for c in clients:
                                c.out.append(frame)
                self._route_depth(name)
            elif kind == "ticker":
                name = ev[1]
                chans = self._chans(name)
                t1, t2, q = subs.get(chans[2]), subs.get(chans[3]), subs.get(chans[4])
                if t1 or t2:
                    data = frames.encode(ex.ticker(name))
                    for ch, clients in ((chans[2], t1), (chans[3], t2)):
                        if clients:
                            frame = frames.notification_raw(ch.encode(), data)
                            for c in clients:
                                c.out.append(frame)
                if q:
                    frame = frames.notification(chans[4], ex.quote(name))
                    for c in q:
                        c.out.append(frame)
            elif kind == "index":
                ch = f"deribit_price_index.{ev[1].lower()}_usd"
                clients = subs.get(ch)
                if clients:
                    frame = frames.notification(ch, self._index_data(ev[1]))
                    for c in clients:
                        c.out.append(frame)
            elif kind == "trades":
                _, name, trades = ev
                spec = ex.instruments.get(name)
                if spec is None:
                    continue
                for ch in self._trade_channels(spec):
                    clients = subs.get(ch)
                    if clients:
                        frame = frames.notification(ch, trades)
                        for c in clients:
                            c.out.append(frame)
            elif kind == "state":
                _, spec, state, ts = ev
                state_data = {"timestamp": ts, "state": state, "instrument_name": spec.name}
                for k in (spec.kind, "any"):
                    for cur in (spec.settlement_currency, "any"):
                        ch = f"instrument.state.{k}.{cur}"
                        clients = subs.get(ch)
                        if clients:
                            frame = frames.notification(ch, state_data)
                            for c in clients:
                                c.out.append(frame)
            elif kind == "ticker_closed":
                _, name, data = ev
                chans = self._chans(name)
                for ch in chans[2:4]:
                    for c in subs.get(ch, ()):
                        c.out.append(frames.notification(ch, data))
            elif kind == "vol_index":
                cur = ev[1]
                index_name = f"{cur.lower()}_usd"
                ch = f"deribit_volatility_index.{index_name}"
                clients = subs.get(ch)
                if clients:
                    frame = frames.notification(ch, self._vol_data(cur))
                    for c in clients:
                        c.out.append(frame)
                for idx in (index_name, f"{cur.lower()}_usdc"):
                    ch = f"markprice.options.{idx}"
                    clients = subs.get(ch)
                    if clients:
                        frame = frames.notification(ch, ex.option_marks(idx))
                        for c in clients:
                            c.out.append(frame)
            elif kind == "platform_state":
                clients = subs.get("platform_state")
                if clients:
                    frame = frames.notification("platform_state", {"price_index": ev[1], "locked": ev[2]})
                    for c in clients:
                        c.out.append(frame)
            elif kind in ("order", "user_trades", "portfolio", "changes"):
                self._route_user(ev)

    def _chans(self, name: str) -> tuple[str, ...]:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = (
                f"book.{name}.raw",
                f"book.{name}.100ms",
                f"ticker.{name}.raw",
                f"ticker.{name}.100ms",
                f"quote.{name}",
            )
        return ch

    def _route_depth(self, name: str) -> None:
        for c in self.clients:
            for ch, (n, depth) in c.depth_subs.items():
                if n == name:
                    c.out.append(frames.notification(ch, self._depth_data(name, depth)))

    def _depth_data(self, name: str, depth: int) -> dict[str, Any]:
        book = self.exchange.books[name]
        bids, asks = book.depth(depth)
        return {
            "timestamp": self.exchange.now_ms,
            "instrument_name": name,
            "change_id": book.change_id,
            "bids": bids,
            "asks": asks,
        }

    @staticmethod
    def _trade_channels(spec: InstrumentSpec) -> list[str]:
        out = [f"trades.{spec.name}.raw", f"trades.{spec.name}.100ms"]
        for k in (spec.kind, "any"):
            for cur in (spec.settlement_currency, "any"):
                out += [f"trades.{k}.{cur}.raw", f"trades.{k}.{cur}.100ms"]
        return out

    def _vol_data(self, currency: str) -> dict[str, Any]:
        """``deribit_volatility_index.{index}``: DVOL from the simulator's own smile."""
        return {
            "volatility": self.exchange.market.volatility_index(currency),
            "timestamp": self.exchange.now_ms,
            "index_name": f"{currency.lower()}_usd",
        }

    def _index_data(self, currency: str) -> dict[str, Any]:
        return {
            "timestamp": self.exchange.now_ms,
            "price": self.exchange.index_price(currency),
            "index_name": f"{currency.lower()}_usd",
        }

    def _route_user(self, ev: tuple[Any, ...]) -> None:
        kind, cid = ev[0], ev[1]
        for c in self.clients:
            if c.client_id != cid or not c.user_subs:
                continue
            for sub in c.user_subs.values():
                if kind == "portfolio":
                    if sub.what == "portfolio" and sub.currency in (ev[2], "ANY"):
                        c.out.append(frames.notification(sub.channel, self.exchange.account_summary(cid, ev[2])))
                    continue
                spec: InstrumentSpec = ev[2]
                if sub.what != {"order": "orders", "user_trades": "trades", "changes": "changes"}[kind]:
                    continue
                if sub.target == spec.name or (
                    sub.target in (spec.kind, "any") and sub.currency in (spec.settlement_currency, "any")
                ):
                    if kind == "order":
                        data: Any = ev[3] if sub.interval == "raw" else [ev[3]]
                    elif kind == "changes":
                        data = {"instrument_name": spec.name, "orders": ev[3], "trades": ev[4], "positions": ev[5]}
                    else:
                        data = ev[3]
                    c.out.append(frames.notification(sub.channel, data))

    async def flush_all(self) -> None:
        for c in list(self.clients):
            if c.out:
                await self._flush(c)

    async def _flush(self, c: Client) -> None:
        out, c.out = c.out, []
        ws = c.ws
        if ws.protocol.state is not State.OPEN or ws.transport.is_closing():
            return
        transport = ws.transport
        try:
            for frame in out:
                ws.protocol.send_text(frame)
            # One write for the whole batch (what send_data() does frame by frame); an empty chunk
            # is the protocol asking for a half-close.
            pending: list[bytes] = []
            for chunk in ws.protocol.data_to_send():
                if chunk:
                    pending.append(chunk)
                    continue
                transport.write(b"".join(pending))
                pending = []
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
            if pending:
                transport.write(b"".join(pending))
        except Exception:  # the socket went away between the state check and the write
            return
        self.frames_sent += len(out)
        if transport.get_write_buffer_size() > HIGH_WATER:
            # A slow reader: wait for it (this is backpressure on the whole stream), then drop it.
            try:
                await asyncio.wait_for(ws.drain(), SLOW_CLIENT_S)
            except (TimeoutError, Exception):
                log.warning("simulator: dropping slow client %d", c.number)
                transport.abort()

    def queue(self, c: Client, frame: bytes) -> None:
        c.out.append(frame)

    # --- connections ---------------------------------------------------------------------------

    @staticmethod
    def _check_path(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0].rstrip("/") != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self._number += 1
        c = Client(ws, self._number)
        self.clients.add(c)
        try:
            async for message in ws:
                await self._on_message(c, message)
        except ConnectionClosed:
            pass
        finally:
            self._drop_client(c)

    def _drop_client(self, c: Client) -> None:
        self.clients.discard(c)
        for ch in c.subs:
            s = self.subs.get(ch)
            if s is not None:
                s.discard(c)
                if not s:
                    del self.subs[ch]
        for t in list(c.tasks):
            t.cancel()
        if c.heartbeat is not None:
            c.heartbeat.cancel()
        if c.cancel_on_disconnect and c.client_id is not None:
            self.exchange.cancel_where(c.client_id, lambda o, s: True, reason="cancel_on_disconnect")
            self.route_events()

    async def _on_message(self, c: Client, message: str | bytes) -> None:
        loop = asyncio.get_running_loop()
        us_in = int(self.clock() * 1e6)
        wait = self.faults.stall_until - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            req = msgspec.json.decode(message)
        except msgspec.DecodeError:
            self._answer(c, frames.error(None, RpcError(errors.PARSE_ERROR).to_json(), us_in, us_in))
            return
        if not isinstance(req, dict):
            self._answer(c, frames.error(None, RpcError(errors.BAD_REQUEST).to_json(), us_in, us_in))
            return
        if req.get("method") is None and "result" in req:
            return  # a client's answer to something we sent; nothing to do
        req_id = req.get("id")
        method = req.get("method")
        params = req.get("params") or {}
        c.awaiting_test = False
        testnet = self.settings.testnet
        if not isinstance(params, dict) or not isinstance(method, str):
            self._answer(
                c,
                frames.error(
                    req_id,
                    invalid_params("params", "must be an object").to_json(),
                    us_in,
                    int(self.clock() * 1e6),
                    testnet,
                ),
            )
            return
        if self.faults.rate_limit_n > 0 and not method.startswith("simulator/"):
            self.faults.rate_limit_n -= 1
            self._answer(
                c,
                frames.error(
                    req_id,
                    RpcError(errors.TOO_MANY_REQUESTS).to_json(),
                    us_in,
                    int(self.clock() * 1e6),
                    testnet,
                ),
            )
            return
        handler = self.methods.get(method)
        try:
            if handler is None:
                raise RpcError(errors.METHOD_NOT_FOUND)
            value = handler(c, params)
            if isinstance(value, Awaitable):
                value = await value
            frame = frames.result(req_id, value, us_in, int(self.clock() * 1e6), testnet)
        except RpcError as e:
            frame = frames.error(req_id, e.to_json(), us_in, int(self.clock() * 1e6), testnet)
        except (KeyError, TypeError, ValueError) as e:
            frame = frames.error(
                req_id,
                invalid_params("params", str(e) or "bad value").to_json(),
                us_in,
                int(self.clock() * 1e6),
                testnet,
            )
        self._answer(c, frame)
        # Notifications a request produced (snapshots, orders, fills) follow its answer.
        if c.pending:
            c.out.extend(c.pending)
            c.pending.clear()
        self.route_events()
        await self.flush_all()

    def _answer(self, c: Client, frame: bytes) -> None:
        delay = self.faults.delay_s
        if delay > 0:
            loop = asyncio.get_running_loop()

            def later() -> None:
                c.out.append(frame)
                task = loop.create_task(self._flush(c))
                c.tasks.add(task)
                task.add_done_callback(c.tasks.discard)

            loop.call_later(delay, later)
            return
        c.out.append(frame)

    # --- public methods ------------------------------------------------------------------------

    def _name(self, p: dict[str, Any]) -> str:
        return self.exchange.spec(p.get("instrument_name")).name

    def _get_instruments(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        cur = p.get("currency")
        kind = p.get("kind")
        if p.get("expired"):
            return []
        if cur == "any":
            return [i for c2 in self.settings.account_currencies for i in self.exchange.instruments_json(c2, kind)]
        if cur not in self.settings.account_currencies:
            raise invalid_params("currency", "invalid currency")
        return self.exchange.instruments_json(cur, kind)

    def _get_index_price(self, c: Client, p: dict[str, Any]) -> dict[str, float]:
        idx = p.get("index_name")
        cur = idx.split("_")[0].upper() if isinstance(idx, str) else ""
        if cur not in self.settings.currencies or idx not in (f"{cur.lower()}_usd", f"{cur.lower()}_usdc"):
            raise invalid_params("index_name", "invalid index name")
        price = self.exchange.index_price(cur)
        return {"index_price": price, "estimated_delivery_price": price}

    def _book_summary(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        cur = p.get("currency")
        if cur not in self.settings.account_currencies:
            raise invalid_params("currency", "invalid currency")
        return self.exchange.book_summary(cur, p.get("kind"))

    def _get_order_book(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        depth = p.get("depth", 5)
        return self.exchange.order_book(self._name(p), int(depth) if isinstance(depth, int | float) else 5)

    # --- heartbeat -----------------------------------------------------------------------------

    def _set_heartbeat(self, c: Client, p: dict[str, Any]) -> str:
        interval = p.get("interval")
        if not isinstance(interval, int | float) or interval < self.settings.min_heartbeat_s:
            raise invalid_params("interval", f"must be at least {self.settings.min_heartbeat_s:g}")
        c.heartbeat_s = float(interval)
        if c.heartbeat is not None:
            c.heartbeat.cancel()
        c.heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(c))
        return "ok"

    def _disable_heartbeat(self, c: Client, p: dict[str, Any]) -> str:
        c.heartbeat_s = None
        if c.heartbeat is not None:
            c.heartbeat.cancel()
            c.heartbeat = None
        return "ok"

    async def _heartbeat(self, c: Client) -> None:
        """Ask for ``public/test`` every interval; a client that stays silent a whole interval is closed."""
        loop = asyncio.get_running_loop()
        while c.heartbeat_s is not None:
            await asyncio.sleep(c.heartbeat_s)
            if loop.time() < self.faults.stall_until:
                continue
            if c.awaiting_test:
                await c.ws.close(1000, "heartbeat timeout")
                return
            c.awaiting_test = True
            c.out.append(frames.HEARTBEAT_TEST_REQUEST)
            await self._flush(c)

    # --- auth ----------------------------------------------------------------------------------

    def _auth(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        if self.faults.refuse_logins:
            raise RpcError(errors.INVALID_CREDENTIALS)
        grant = p.get("grant_type")
        client_id: str | None = None
        if grant == "client_credentials":
            acc = self.exchange.accounts.get(str(p.get("client_id")))
            if acc is None or not hmac.compare_digest(acc.secret, str(p.get("client_secret", ""))):
                raise RpcError(errors.INVALID_CREDENTIALS)
            client_id = acc.client_id
        elif grant == "client_signature":
            acc = self.exchange.accounts.get(str(p.get("client_id")))
            ts, nonce, data, sig = (
                p.get("timestamp"),
                p.get("nonce", ""),
                p.get("data", ""),
                p.get("signature"),
            )
            if acc is None or not isinstance(ts, int) or not isinstance(sig, str):
                raise RpcError(errors.INVALID_CREDENTIALS)
            payload = f"{ts}\n{nonce}\n{data}".encode()
            want = hmac.new(acc.secret.encode(), payload, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, sig.lower()):
                raise RpcError(errors.INVALID_CREDENTIALS)
            if abs(ts / 1000.0 - self.clock()) > 60.0:
                raise RpcError(errors.INVALID_CREDENTIALS, {"reason": "timestamp too far from server time"})
            client_id = acc.client_id
        elif grant == "refresh_token":
            client_id = self.refresh_tokens.pop(str(p.get("refresh_token")), None)
            if client_id is None:
                raise RpcError(errors.INVALID_CREDENTIALS)
        else:
            raise invalid_params("grant_type", "must be client_credentials, client_signature or refresh_token")
        c.client_id = client_id
        ttl = self.settings.access_token_ttl_s
        access = f"{int(self.clock() * 1000)}.{secrets.token_hex(8)}"
        refresh = f"{int(self.clock() * 1000)}.{secrets.token_hex(8)}"
        self.tokens[access] = (client_id, self.clock() + ttl)
        self.refresh_tokens[refresh] = client_id
        return {
            "access_token": access,
            "expires_in": ttl,
            "refresh_token": refresh,
            "scope": "connection mainaccount",
            "enabled_features": [],
            "token_type": "bearer",
        }

    def _who(self, c: Client, p: dict[str, Any]) -> str:
        """The account a private call acts for: the connection's login or a valid access token."""
        token = p.get("access_token")
        if isinstance(token, str):
            entry = self.tokens.get(token)
            if entry is None or entry[1] < self.clock():
                raise RpcError(errors.UNAUTHORIZED)
            return entry[0]
        if c.client_id is None:
            raise RpcError(errors.UNAUTHORIZED)
        return c.client_id

    def _logout(self, c: Client, p: dict[str, Any]) -> str:
        self._who(c, p)
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(c.ws.close(1000, "logout")))
        return "ok"

    # --- subscriptions -------------------------------------------------------------------------

    def _subscribe(self, c: Client, p: dict[str, Any], private: bool) -> list[str]:
        channels = p.get("channels")
        if not isinstance(channels, list) or not all(isinstance(ch, str) for ch in channels):
            raise invalid_params("channels", "must be a list of channel names")
        if private:
            self._who(c, p)
        ok: list[str] = []
        initial: list[bytes] = []
        for ch in channels:
            parsed = self._parse_channel(ch)
            if parsed is None:
                continue
            what, arg = parsed
            if what == "user":
                if c.client_id is None:
                    continue
                c.user_subs[ch] = arg
                if arg.what == "portfolio":
                    for cur in self.settings.account_currencies if arg.currency == "ANY" else [arg.currency]:
                        initial.append(frames.notification(ch, self.exchange.account_summary(c.client_id, cur)))
            elif what == "depth":
                c.depth_subs[ch] = arg
                initial.append(frames.notification(ch, self._depth_data(*arg)))
            else:
                self.subs.setdefault(ch, set()).add(c)
                initial.extend(self._initial(ch, what, arg))
            c.subs.add(ch)
            ok.append(ch)
        # The answer goes first; snapshots follow it (see _on_message).
        c.pending.extend(initial)
        return ok

    def _initial(self, ch: str, what: str, arg: Any) -> list[bytes]:
        ex = self.exchange
        if what == "book":
            book = ex.books[arg]
            bids, asks = book.snapshot()
            return [
                frames.notification_raw(ch.encode(), frames.book_snapshot(arg, book.change_id, bids, asks, ex.now_ms))
            ]
        if what == "ticker":
            return [frames.notification(ch, ex.ticker(arg))]
        if what == "quote":
            return [frames.notification(ch, ex.quote(arg))]
        if what == "index":
            return [frames.notification(ch, self._index_data(arg))]
        if what == "vol_index":
            return [frames.notification(ch, self._vol_data(arg))]
        if what == "marks":
            return [frames.notification(ch, ex.option_marks(arg))]
        return []

    def _parse_channel(self, ch: str) -> tuple[str, Any] | None:
        """(kind, argument) of a channel this simulator serves, None for an unknown one."""
        ex = self.exchange
        parts = ch.split(".")
        head = parts[0]
        if head in ("book", "ticker", "quote", "trades") and len(parts) >= 2:
            name = parts[1]
            if head == "trades" and len(parts) == 4:
                kind_ok = parts[1] in ("future", "option", "any")
                cur_ok = parts[2] in (*self.settings.currencies, "any")
                return ("trades", None) if kind_ok and cur_ok and parts[3] in INTERVALS else None
            if name not in ex.instruments:
                return None
            if head == "quote":
                return ("quote", name) if len(parts) == 2 else None
            if head == "book" and len(parts) == 5 and parts[3].isdigit():
                return ("depth", (name, int(parts[3])))
            if len(parts) != 3 or parts[2] not in INTERVALS:
                return None
            return (head, name)
        if head == "deribit_price_index" and len(parts) == 2:
            cur = parts[1].split("_")[0].upper()
            return ("index", cur) if cur in self.settings.currencies and parts[1].endswith("_usd") else None
        if ch.startswith("instrument.state.") and len(parts) == 4:
            ok = parts[2] in ("future", "option", "any") and parts[3] in (*self.settings.account_currencies, "any")
            return ("state", None) if ok else None
        if head == "deribit_volatility_index" and len(parts) == 2:
            cur = parts[1].split("_")[0].upper()
            return ("vol_index", cur) if cur in self.settings.currencies and parts[1].endswith("_usd") else None
        if ch.startswith("markprice.options.") and len(parts) == 3:
            known = {s.price_index for s in ex.instruments.values() if s.is_option}
            return ("marks", parts[2]) if parts[2] in known else None
        if ch == "platform_state":
            return ("platform_state", None)
        if head == "user" and len(parts) >= 3:
            what = parts[1]
            if what == "portfolio" and len(parts) == 3:
                cur = parts[2].upper()
                return (
                    ("user", UserSub(ch, "portfolio", cur, cur, "raw"))
                    if cur in (*self.settings.account_currencies, "ANY")
                    else None
                )
            if what in ("orders", "trades", "changes"):
                if len(parts) == 4 and parts[2] in ex.instruments and parts[3] in INTERVALS:
                    return ("user", UserSub(ch, what, parts[2], "", parts[3]))
                kinds = ("future", "option", "any")
                currencies = (*self.settings.account_currencies, "any")
                if len(parts) == 5 and parts[2] in kinds and parts[3] in currencies and parts[4] in INTERVALS:
                    return ("user", UserSub(ch, what, parts[2], parts[3], parts[4]))
        return None

    def _unsubscribe(self, c: Client, p: dict[str, Any]) -> list[str]:
        channels = p.get("channels")
        if not isinstance(channels, list):
            raise invalid_params("channels", "must be a list of channel names")
        gone = []
        for ch in channels:
            if ch in c.subs:
                c.subs.discard(ch)
                c.user_subs.pop(ch, None)
                c.depth_subs.pop(ch, None)
                s = self.subs.get(ch)
                if s is not None:
                    s.discard(c)
                    if not s:
                        del self.subs[ch]
                gone.append(ch)
        return gone

    def _unsubscribe_all(self, c: Client, p: dict[str, Any]) -> str:
        self._unsubscribe(c, {"channels": list(c.subs)})
        return "ok"

    # --- private methods -----------------------------------------------------------------------

    def _currency(self, p: dict[str, Any]) -> str:
        cur = p.get("currency")
        if cur not in self.settings.account_currencies:
            raise invalid_params("currency", "invalid currency")
        return str(cur)

    def _cancel_all_by_currency(self, c: Client, p: dict[str, Any]) -> int:
        who = self._who(c, p)
        cur = self._currency(p)
        pred = self.exchange.type_filter(p.get("kind"), p.get("type"))
        return self.exchange.cancel_where(who, lambda o, s: s.currency == cur and pred(o, s))

    def _cancel_all_by_instrument(self, c: Client, p: dict[str, Any]) -> int:
        who = self._who(c, p)
        name = self._name(p)
        pred = self.exchange.type_filter(None, p.get("type"))
        return self.exchange.cancel_where(who, lambda o, s: s.name == name and pred(o, s))

    def _cancel_by_label(self, c: Client, p: dict[str, Any]) -> int:
        who = self._who(c, p)
        label = p.get("label")
        if not isinstance(label, str):
            raise invalid_params("label", "value is required")
        cur = p.get("currency")
        return self.exchange.cancel_where(who, lambda o, s: o.label == label and cur in (None, s.currency))

    def _open_orders(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self.exchange.open_orders_json(self._who(c, p), self._currency(p), p.get("kind"), p.get("type"))

    def _order_state(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        who = self._who(c, p)
        order = self.exchange.orders.get(str(p.get("order_id")))
        if order is None or order.account != who:
            raise RpcError(errors.ORDER_NOT_FOUND)
        return order.to_json()

    def _order_state_by_label(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self.exchange.orders_by_label_json(self._who(c, p), self._currency(p), str(p.get("label") or ""))

    def _order_history(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        count, offset = p.get("count", 20), p.get("offset", 0)
        if not (isinstance(count, int) and 1 <= count <= 10_000):
            raise invalid_params("count", "must be 1 to 10000")
        if not (isinstance(offset, int) and offset >= 0):
            raise invalid_params("offset", "must be a non-negative integer")
        return self.exchange.order_history_json(self._who(c, p), self._currency(p), p.get("kind"), count, offset,
                                                bool(p.get("include_unfilled", False)))

    def _positions(self, c: Client, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self.exchange.positions_json(self._who(c, p), self._currency(p), p.get("kind"))

    def _position(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        who = self._who(c, p)
        spec = self.exchange.spec(p.get("instrument_name"))
        acc = self.exchange.accounts[who]
        return self.exchange.position_json(who, acc.position(spec))

    def _settlement_history(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        return self.exchange.settlement_history(
            self._who(c, p), self._currency(p), p.get("type"), p.get("count", 20), p.get("continuation")
        )

    def _status(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        locked = sorted(self.exchange.locked_indices)
        return {"locked": "partial" if locked else "false", "locked_indices": locked}

    def _account_summary(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        return self.exchange.account_summary(self._who(c, p), self._currency(p), extended=p.get("extended") is True)

    def _user_trades(self, c: Client, p: dict[str, Any]) -> dict[str, Any]:
        count = p.get("count", 10)
        return self.exchange.user_trades_json(
            self._who(c, p),
            self._currency(p),
            p.get("kind"),
            int(count) if isinstance(count, int) else 10,
            p.get("sorting", "desc") != "asc",
        )

    def _enable_cod(self, c: Client, p: dict[str, Any]) -> str:
        self._who(c, p)
        c.cancel_on_disconnect = True
        return "ok"

    def _disable_cod(self, c: Client, p: dict[str, Any]) -> str:
        self._who(c, p)
        c.cancel_on_disconnect = False
        return "ok"

    # --- faults and test controls --------------------------------------------------------------

    def close_connections(self) -> int:
        n = 0
        for c in list(self.clients):
            c.ws.transport.abort()
            n += 1
        return n

    def send_malformed_frame(self) -> int:
        n = 0
        for c in list(self.clients):
            c.out.append(frames.MALFORMED)
            n += 1
        asyncio.get_running_loop().create_task(self.flush_all())
        return n

    def stall(self, seconds: float) -> None:
        self.faults.stall_until = asyncio.get_running_loop().time() + seconds

    def set_index(self, currency: str, price: float) -> str:
        if currency not in self.settings.currencies:
            raise invalid_params("currency", "invalid currency")
        self.exchange.market.set_index(currency, price)
        self.exchange.requote(list(self.exchange.books))
        return "ok"

    def set_vol_level(self, currency: str, level: float) -> str:
        """Scale the currency's implied vols (1.0: the model's base level) and requote every book."""
        if currency not in self.settings.currencies:
            raise invalid_params("currency", "invalid currency")
        if not 0.1 <= level <= 5.0:  # NaN fails too
            raise invalid_params("level", "must be 0.1 to 5")
        self.exchange.market.set_vol_level(currency, level)
        self.exchange.requote(list(self.exchange.books))
        return "ok"

    def lock_index(self, price_index: str, locked: bool = True) -> str:
        """Lock (or unlock) trading on a price index, as Deribit's platform locks do."""
        known = {s.price_index for s in self.exchange.instruments.values()}
        if price_index not in known:
            raise invalid_params("price_index", "unknown price index")
        self.exchange.lock_index(price_index, locked)
        return "ok"

    def shift_index(self, currency: str, pct: float) -> str:
        if currency not in self.settings.currencies:
            raise invalid_params("currency", "invalid currency")
        return self.set_index(currency, self.exchange.market.index(currency) * (1.0 + pct / 100.0))

    def fault(self, action: str, **kw: Any) -> Any:
        """One fault by name (the in-process API and ``simulator/fault`` share it)."""
        f = self.faults
        if action == "drop_book_notifications":
            f.drop_book_n += int(kw.get("n", 0) or 0)
            f.drop_book_p = float(kw.get("probability", f.drop_book_p) or 0.0)
            return "ok"
        if action == "close_connections":
            return self.close_connections()
        if action == "stall":
            self.stall(float(kw.get("seconds", 1.0)))
            return "ok"
        if action == "refuse_logins":
            f.refuse_logins = bool(kw.get("refuse", True))
            return "ok"
        if action == "send_malformed_frame":
            return self.send_malformed_frame()
        if action == "delay_answers":
            f.delay_s = float(kw.get("seconds", 0.0))
            return "ok"
        if action == "rate_limit_next":
            f.rate_limit_n += int(kw.get("n", 1))
            return "ok"
        if action == "clear":
            self.faults = Faults()
            return "ok"
        raise invalid_params("action", f"unknown fault {action!r}")

    def _fault_rpc(self, c: Client, p: dict[str, Any]) -> Any:
        action = p.get("action")
        if not isinstance(action, str):
            raise invalid_params("action", "value is required")
        kw = {k: v for k, v in p.items() if k != "action"}
        if action == "close_connections":
            # Answer first, then close everything (including the caller).
            asyncio.get_running_loop().call_later(0.05, self.close_connections)
            return len(self.clients)
        return self.fault(action, **kw)
