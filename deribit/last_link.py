"""A last connection made for the safe shutdown: short, synchronous and bounded in time.

When the Connection is dead or cannot send (not logged in, link down), or did not finish its own
cancel and check, the program makes this one: it connects to the configured venue, logs in with
the configured credentials, sends ``private/cancel_all`` (the whole account) and then asks
``private/get_open_orders_by_currency`` for each configured currency. Everything it waits for has
a timeout (the connect, each answer) inside one budget, and it runs in a thread of its own that
is given up at the budget's end (a name lookup has no timeout of its own), so that the program
never hangs on its way out. It writes no frame down (tokens and signatures stay in memory) and
logs only what it found.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import msgspec
import structlog

from config.settings import DeribitSettings
from deribit.codec import (
    FrameDecoder,
    FrameError,
    Request,
    RequestEncoder,
    RpcError,
    RpcResponse,
    auth_client_credentials_request,
    auth_client_signature_request,
    cancel_all_request,
    decode_auth_result,
    get_open_orders_request,
)
from deribit.instruments import request_currency_of
from deribit.shutdown_check import CheckUnderWay, Findings
from deribit.transport import LinkClosed, WebsocketTransport
from messages.commands import CancelAll
from runtime.secrets import register_secrets

log = structlog.get_logger(actor="last_link")

#: How long after the budget the thread is waited for before it is given up (it closes its socket).
GIVE_UP_AFTER_S = 0.5


class _NoAnswer(Exception):
    pass


class LastLink:
    """One cancel-and-check over a connection of its own (see the module's docstring)."""

    def __init__(self, url: str, deribit: DeribitSettings, currencies: tuple[str, ...], *, via: str,
                 epoch_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.url = url
        self.dset = deribit
        self.currencies = currencies
        self.via = via
        self.epoch_ms = epoch_ms
        self._check = CheckUnderWay(via=via, currencies=currencies)
        self._lock = threading.Lock()  # the check is filled in by the link's thread, read by the caller's
        self._transport: WebsocketTransport | None = None

    def cancel_and_check(self, budget_s: float) -> Findings:
        """Connect, log in, cancel_all, check each currency; what was found after at most
        ``budget_s`` seconds (and :data:`GIVE_UP_AFTER_S`)."""
        deadline = time.monotonic() + budget_s
        log.warning("last_link_connecting", url=self.url, via=self.via, budget_s=budget_s)
        thread = threading.Thread(target=self._run, args=(deadline,), name="last-link", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()) + GIVE_UP_AFTER_S)
        if thread.is_alive():
            self._fail(f"no result within {budget_s:g} s")
            transport = self._transport
            if transport is not None:
                transport.abort()
        with self._lock:
            return self._check.findings()

    def _run(self, deadline: float) -> None:
        try:
            transport = self._transport = WebsocketTransport(
                self.url, connect_timeout_s=max(0.05, min(self.dset.request_timeout_s, deadline - time.monotonic())))
            transport.connect()
        except LinkClosed as exc:
            self._fail(str(exc))
            return
        try:
            self._cancel_and_check(transport, deadline)
        except LinkClosed as exc:
            self._fail(f"the last connection failed: {exc}")
        except _NoAnswer as exc:
            self._fail(str(exc))
        finally:
            transport.close()

    def _cancel_and_check(self, transport: WebsocketTransport, deadline: float) -> None:
        talk = _Talk(transport, deadline, self.dset.request_timeout_s)
        login = talk.ask(self._login_request())
        if isinstance(login, RpcResponse):
            # This connection's own tokens: masked like the Connection's should an answer echo them.
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                auth = decode_auth_result(login.result)
                register_secrets((auth.access_token, auth.refresh_token), transient=True)
        if isinstance(login, RpcError):
            self._fail(f"login refused: {login.message} (code {login.code}); check DERIBIT_CLIENT_ID and "
                       "DERIBIT_CLIENT_SECRET for this venue")
            return
        request = cancel_all_request(CancelAll(origin="safe-shutdown", request_key="last-link"))
        request_id = talk.send(request)
        with self._lock:
            self._check.cancel_sent = True
        answer = talk.wait(request_id, request[0])
        with self._lock:
            self._check.take_cancel(answer)
        log.warning("last_link_cancel_all", cancelled=self._check.cancelled, error=self._check.cancel_error)
        for currency in self.currencies:
            request = get_open_orders_request(request_currency_of(currency))
            answer = talk.ask(request)
            with self._lock:
                took = self._check.take_open_orders(currency, request[0], answer)
                orders = self._check.checked.get(currency, ())
            if not took:
                log.error("last_link_failed", url=self.url, why=self._check.failed)
                return
            log.warning("last_link_open_orders", currency=currency, open=len(orders),
                        order_ids=[o.order_id for o in orders])

    def _login_request(self) -> Request:
        dset = self.dset
        if dset.auth_method == "client_credentials":
            return auth_client_credentials_request(dset.client_id, dset.client_secret)
        return auth_client_signature_request(dset.client_id, dset.client_secret, self.epoch_ms())

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._check.failed:
                return
            self._check.fail(why)
        log.error("last_link_failed", url=self.url, why=why)


class _Talk:
    """Requests and their answers on one transport, each answer waited for at most
    ``answer_timeout_s`` and nothing past ``deadline``."""

    def __init__(self, transport: WebsocketTransport, deadline: float, answer_timeout_s: float) -> None:
        self.transport = transport
        self.deadline = deadline
        self.answer_timeout_s = answer_timeout_s
        self.encoder = RequestEncoder()
        self.decoder = FrameDecoder()

    def send(self, request: Request) -> int:
        request_id, frame = self.encoder.encode_request(request)
        self.transport.send(frame)
        return request_id

    def ask(self, request: Request) -> RpcResponse | RpcError:
        return self.wait(self.send(request), request[0])

    def wait(self, request_id: int, method: str) -> RpcResponse | RpcError:
        start = time.monotonic()
        until = min(self.deadline, start + self.answer_timeout_s)
        while (left := until - time.monotonic()) > 0:
            frame = self.transport.recv(left)
            if frame is None:
                continue
            try:
                decoded = self.decoder.decode(frame)
            except FrameError as exc:
                log.warning("last_link_malformed_frame", reason=exc.reason, excerpt=exc.excerpt)
                continue
            if isinstance(decoded, RpcResponse | RpcError) and decoded.id == request_id:
                return decoded
        raise _NoAnswer(f"no answer to {method} within {time.monotonic() - start:.1f} s")
