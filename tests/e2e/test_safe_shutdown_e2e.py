"""End to end on the simulator: safe shutdown tells the truth (issue 15).

With ``deribit.cancel_on_disconnect = false`` and two resting orders (BTC and ETH), an actor fails
past the supervisor's restart limit. The run ends with status 1, and what the program says about
the orders is checked against the simulator's own book of the account:

- the Connection itself fails (a bug injected into its session): nothing of it can cancel, so a
  last connection does, and checks; the orders are really gone and the message says it verified;
- the same, but the exchange refuses logins by then: the orders are still open and the message
  says their state is UNKNOWN, never "cancelled";
- another actor fails while the Connection is healthy: the Connection cancels and checks itself;
- the exchange accepts connections and never answers: the whole path ends within its budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import main
from deribit.last_link import GIVE_UP_AFTER_S
from deribit.session import Session
from messages.base import Message
from messages.commands import CommandFailed, CommandResult, PlaceOrder
from messages.system import ConnectionStatus
from runtime.actor import Actor, ActorContext, handles
from runtime.clock import WallClock
from runtime.logs import setup_logging, shutdown_logging
from runtime.supervisor import ActorSpec, Supervisor
from tests.support.desk import SimDesk, StartDesk
from tests.support.settings import SIM_CLIENT_ID, SIM_CLIENT_SECRET, make_settings
from tests.support.silent_server import SilentServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("isolated_cwd")  # the program's data/ goes to a temp dir

SETTINGS = {"deribit.cancel_on_disconnect": False, "supervisor.max_restarts": 1,
            "supervisor.backoff_initial_s": 0.1, "supervisor.backoff_max_s": 0.2, "deribit.safe_shutdown_s": 6.0}
ACTORS = {"connection", "hedger", "portfolio"}


class Break(Message, frozen=True, kw_only=True):
    """Makes the Fragile actor fail."""


class Fragile(Actor):
    """An actor of the program's that fails on demand (not the Connection)."""

    @handles(Break)
    def on_break(self, _message: Break) -> None:
        raise RuntimeError("injected failure")


class Tap(Actor):
    """Keeps the link's status and the answers to orders."""

    def __init__(self, context: ActorContext, sink: list[object]) -> None:
        super().__init__(context)
        self.sink = sink

    @handles(ConnectionStatus, CommandResult, CommandFailed)
    def on_message(self, message: object) -> None:
        self.sink.append(message)


def start(sim_desk: StartDesk, seen: list[object], **extra: Any) -> SimDesk:
    desk = sim_desk({**SETTINGS, **extra}, seed=11, only=ACTORS,
                    extra_specs=[ActorSpec("tap", lambda c: Tap.start(c, seen)),
                                 ActorSpec("fragile", lambda c: Fragile.start(c))])
    wait_until(lambda: any(isinstance(m, ConnectionStatus) and m.can_trade for m in list(seen)), 30,
               "the Connection ready to trade")
    return desk


def rest_two_orders(desk: SimDesk, seen: list[object]) -> dict[str, str]:
    """A post-only buy far below the market on each perpetual; their ids by currency."""
    placed: dict[str, str] = {}
    for currency, tick, amount in (("BTC", 0.5, 10.0), ("ETH", 0.05, 1.0)):
        price = round(desk.sim.index(currency) * 0.8 / tick) * tick
        key = f"rest-{currency}"
        desk.publish(PlaceOrder(instrument_name=f"{currency}-PERPETUAL", side="buy", amount=amount, price=price,
                                post_only=True, label=f"manual_api_{currency}", origin="test", request_key=key))
        answer = wait_until(lambda key=key: next((m for m in list(seen) if getattr(m, "request_key", None) == key),
                                                 None), 10, f"the answer to {key}")
        assert isinstance(answer, CommandResult) and answer.order is not None
        assert answer.order.order_state == "open"
        placed[currency] = answer.order.order_id
    return placed


def open_on_the_simulator(desk: SimDesk) -> dict[str, list[str]]:
    """The account's open orders as the simulator holds them (not as the desk believes)."""
    return {c: [o["order_id"] for o in desk.sim.open_orders(SIM_CLIENT_ID, c)] for c in ("BTC", "ETH")}


def run_until_fatal(supervisor: Supervisor, fail: Callable[[], None], timeout: float = 30) -> tuple[int, float]:
    """Run the supervisor, cause the failures, wait for the run to end: (status, seconds after ``fail``)."""
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(supervisor.run()), daemon=True)
    thread.start()
    started = time.monotonic()
    fail()
    thread.join(timeout)
    assert not thread.is_alive(), "the run did not end"
    return status[0], time.monotonic() - started


def break_the_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A bug in the Connection's session: every timer tick raises (the Connection and each restart fail)."""
    def tick(_session: Session, _now: float) -> list[Any]:
        raise RuntimeError("injected bug in the session's tick")

    return lambda: monkeypatch.setattr(Session, "tick", tick)


def test_connection_failing_past_the_limit_cancels_through_a_last_connection_and_verifies(
        sim_desk: StartDesk, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    desk = start(sim_desk, seen)
    placed = rest_two_orders(desk, seen)
    assert open_on_the_simulator(desk) == {"BTC": [placed["BTC"]], "ETH": [placed["ETH"]]}
    status, _took = run_until_fatal(desk.supervisor, break_the_connection(monkeypatch))
    assert status == 1
    assert open_on_the_simulator(desk) == {"BTC": [], "ETH": []}  # really cancelled
    message = main.exit_message(desk.supervisor)
    assert message is not None
    assert "error: actor 'connection' failed 2 times" in message and "injected bug" in message
    assert "through a last connection made for it (the Connection is not running)" in message
    assert "the exchange answered that it cancelled 2" in message
    assert "Verified: no open orders on BTC, ETH" in message and "UNKNOWN" not in message


def test_a_last_connection_that_cannot_log_in_says_unknown_and_the_orders_are_still_open(
        sim_desk: StartDesk, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    desk = start(sim_desk, seen)
    placed = rest_two_orders(desk, seen)
    desk.sim.refuse_logins()
    status, _took = run_until_fatal(desk.supervisor, break_the_connection(monkeypatch))
    assert status == 1
    assert open_on_the_simulator(desk) == {"BTC": [placed["BTC"]], "ETH": [placed["ETH"]]}
    message = main.exit_message(desk.supervisor)
    assert message is not None
    assert "login refused: invalid_credentials" in message and "cancel_all could not be sent" in message
    assert "The state of open orders on BTC, ETH is UNKNOWN" in message
    assert "Verified" not in message and "cancelled 2" not in message
    assert SIM_CLIENT_SECRET not in message


def test_another_actor_failing_lets_the_connection_cancel_and_verify_itself(sim_desk: StartDesk) -> None:
    seen: list[object] = []
    desk = start(sim_desk, seen)
    rest_two_orders(desk, seen)

    def fail_twice() -> None:
        desk.publish(Break())
        wait_until(lambda: desk.supervisor.restarts("fragile") == 1, 10, "the fragile actor restarted")
        desk.publish(Break())

    status, _took = run_until_fatal(desk.supervisor, fail_twice)
    assert status == 1
    assert open_on_the_simulator(desk) == {"BTC": [], "ETH": []}
    message = main.exit_message(desk.supervisor)
    assert message is not None and "error: actor 'fragile' failed 2 times" in message
    assert "went through the Connection; the exchange answered that it cancelled 2" in message
    assert "Verified: no open orders on BTC, ETH" in message and "last connection" not in message


def test_an_exchange_that_never_answers_ends_the_safe_shutdown_within_its_budget(tmp_path: Path) -> None:
    budget = 2.0
    setup_logging(tmp_path / "logs", "info", console=False, secrets=[SIM_CLIENT_SECRET])
    with SilentServer() as silent:
        settings = make_settings({**SETTINGS, "venue": "testnet", "currencies": ["BTC"],
                                  "deribit.client_id": SIM_CLIENT_ID, "deribit.client_secret": SIM_CLIENT_SECRET,
                                  "deribit.safe_shutdown_s": budget},
                                 tmp_path=tmp_path)
        specs = [s for s in main.actor_specs(settings, url=silent.url) if s.name == "connection"]
        supervisor = main.make_supervisor(settings, [*specs, ActorSpec("fragile", lambda c: Fragile.start(c))],
                                          WallClock(), url=silent.url)
        supervisor.start()
        try:
            def fail_twice() -> None:
                supervisor.bus.publish(Break())
                wait_until(lambda: supervisor.restarts("fragile") == 1, 10, "the fragile actor restarted")
                supervisor.bus.publish(Break())

            status, took = run_until_fatal(supervisor, fail_twice)
        finally:
            supervisor.stop()
            shutdown_logging()
        assert silent.accepted >= 2  # the Connection's attempts and the last connection's
    assert status == 1
    # The budget, the give-up grace and the actors' own stop (2 s at most), with room for a loaded machine.
    assert took < budget + GIVE_UP_AFTER_S + 2.0 + 3.0
    message = main.exit_message(supervisor)
    assert message is not None and "UNKNOWN" in message and "timed out" in message
    assert "https://test.deribit.com" in message
