"""Running the Connection for a test: settings, a Supervisor with the Connection and a probe
actor that keeps every message of the bus, JSON logs in the test's directory, and waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec
import pykka

from actors.connection import Connection
from config.settings import Settings
from deribit.transport import Transport
from main import make_supervisor
from messages.base import Message
from messages.commands import CommandFailed, CommandResult
from messages.system import ConnectionState, ConnectionStatus
from runtime.actor import Actor, ActorContext, handles
from runtime.clock import WallClock
from runtime.logs import setup_logging
from runtime.supervisor import ActorSpec, Supervisor
from tests.support.scripted_server import CLIENT_ID, CLIENT_SECRET
from tests.support.settings import make_settings
from tests.support.waiting import wait_until

M = TypeVar("M")


class GetSeen(msgspec.Struct, frozen=True):
    """Ask the probe for what it kept (not a Message: the bus never routes it)."""


class Probe(Actor):
    """Keeps every message published on the bus, in arrival order. ``keep`` limits what it
    keeps (market data of a full chain is counted, not kept)."""

    def __init__(self, context: ActorContext, keep: Callable[[Message], bool] | None = None) -> None:
        super().__init__(context)
        self.seen: list[Message] = []
        self.counts: dict[str, int] = {}
        self.keep = keep

    @handles(Message)
    def on_message(self, message: Message) -> None:
        name = type(message).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        if (self.keep is None or self.keep(message)) and name != "WarmUp":  # an idle link's, every few ms
            self.seen.append(message)

    @handles(GetSeen)
    def on_get(self, _request: GetSeen) -> tuple[list[Message], dict[str, int]]:
        return list(self.seen), dict(self.counts)


# A Connection test's settings: testnet trading with the scripted server's account, BTC only, quick
# reconnects, a generous subscribe rate.
CONNECTION_TEST_SETTINGS: dict[str, Any] = {
    "venue": "testnet",
    "currencies": ["BTC"],
    "deribit.client_id": CLIENT_ID,
    "deribit.client_secret": CLIENT_SECRET,
    "deribit.reconnect_initial_s": 0.1,
    "deribit.reconnect_max_s": 0.5,
    "deribit.subscribe_requests_per_s": 20.0,
    "deribit.request_timeout_s": 5.0,
}


def connection_settings(tmp_path: Path, values: Mapping[str, Any] | None = None, /, **keys: Any) -> Settings:
    """:data:`CONNECTION_TEST_SETTINGS` with ``values`` (dotted keys) and ``keys`` (top-level keys) over
    them, built by :func:`~tests.support.settings.make_settings` with the files under ``tmp_path``."""
    return make_settings({**CONNECTION_TEST_SETTINGS, **(values or {})}, tmp_path=tmp_path, **keys)


@dataclass
class Desk:
    """A Supervisor running a probe and the Connection against ``url``."""

    settings: Settings
    supervisor: Supervisor
    log_dir: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, settings: Settings, url: str, keep: Callable[[Message], bool] | None = None,
              logs: bool = True, transport: Callable[[str], Transport] | None = None,
              extra_specs: Sequence[ActorSpec] = ()) -> Desk:
        """The probe, ``extra_specs``, then the Connection (on ``transport``, default the Connection's own
        websocket), started in that order."""
        log_dir = Path(settings.logging.dir)
        if logs:
            setup_logging(log_dir, settings.logging.level, console=False, secrets=settings.secrets())
        specs = [
            ActorSpec("probe", lambda ctx: Probe.start(ctx, keep)),
            *extra_specs,
            ActorSpec("connection", lambda ctx: Connection.start(ctx, url=url, transport_factory=transport)),
        ]
        supervisor = make_supervisor(settings, specs, WallClock())
        supervisor.start()
        return cls(settings, supervisor, log_dir)

    def stop(self) -> None:
        try:
            self.supervisor.stop(timeout_s=5.0)
        finally:
            pykka.ActorRegistry.stop_all()

    # -- the bus ----------------------------------------------------------------------------------
    def publish(self, message: object) -> None:
        self.supervisor.bus.publish(message)

    def connection(self) -> pykka.ActorRef:
        ref = self.supervisor.refs()["connection"]
        assert ref is not None, "the Connection is not running"
        return ref

    def _probe(self) -> tuple[list[Message], dict[str, int]]:
        ref = self.supervisor.refs()["probe"]
        assert ref is not None
        kept: tuple[list[Message], dict[str, int]] = ref.ask(GetSeen(), block=True, timeout=10)
        return kept

    @overload
    def seen(self) -> list[Message]: ...
    @overload
    def seen(self, kind: type[M]) -> list[M]: ...

    def seen(self, kind: type[Any] | None = None) -> list[Any]:
        messages, _counts = self._probe()
        return [m for m in messages if kind is None or isinstance(m, kind)]

    def counts(self) -> dict[str, int]:
        return self._probe()[1]

    def wait_seen(self, kind: type[M], where: Callable[[M], bool] = lambda _m: True, count: int = 1,
                  timeout: float = 10.0) -> list[M]:
        """The first ``count`` messages of ``kind`` that ``where`` accepts; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.seen(kind) if where(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s: {len(found)} of {count} {kind.__name__}; "
                                     f"statuses: {self.states()}")
            time.sleep(0.03)

    wait_until = staticmethod(wait_until)

    def statuses(self) -> list[ConnectionStatus]:
        return self.seen(ConnectionStatus)

    def states(self) -> list[str]:
        return [s.state.value for s in self.statuses()]

    def wait_state(self, state: ConnectionState, count: int = 1, timeout: float = 10.0) -> ConnectionStatus:
        return self.wait_seen(ConnectionStatus, lambda s: s.state is state, count, timeout)[count - 1]

    def answers(self, request_key: str) -> list[CommandResult | CommandFailed]:
        return [m for m in self.seen() if isinstance(m, CommandResult | CommandFailed)
                and m.request_key == request_key]

    def wait_answer(self, request_key: str, timeout: float = 10.0) -> CommandResult | CommandFailed:
        deadline = time.monotonic() + timeout
        while True:
            found = self.answers(request_key)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {request_key} within {timeout:g} s")
            time.sleep(0.03)

    # -- the logs ---------------------------------------------------------------------------------
    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for path in sorted(self.log_dir.glob("*.jsonl")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return lines

    def log_events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def wait_log(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.log_events(event)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} in the log within {timeout:g} s")
            time.sleep(0.03)
