"""The desk on the simulator: the program's own wiring (``main.actor_specs``) against an in-process
simulator on the wall clock, started by the ``sim_desk`` fixture and stopped in its teardown.

    def test_x(sim_desk: StartDesk) -> None:
        desk = sim_desk({"hedger.currencies": ["BTC"]}, currencies=["BTC"], seed=5,
                        sim={"index_vol": 0.0}, only={"connection", "portfolio"})
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pykka
import pytest

import main
from actors.bookkeeper import GetBooks, GetBookStats, GetTops
from config.settings import Settings
from runtime.clock import ShiftedClock, WallClock
from runtime.logs import setup_logging, shutdown_logging
from runtime.supervisor import ActorSpec, Supervisor
from simulator import Simulator
from simulator.settings import SimSettings
from tests.support.settings import SIM_CLIENT_ID, SIM_CLIENT_SECRET, make_settings

SIM_BALANCES = {"BTC": 10.0, "ETH": 100.0}
#: The BookKeepers of the default currencies.
OPTION_KEEPERS = ("books-BTC-option", "books-ETH-option")
FUTURE_KEEPERS = ("books-BTC-future", "books-ETH-future")


class SimDesk:
    """A running simulator and the program's actors on it."""

    def __init__(self, sim: Simulator, supervisor: Supervisor, settings: Settings, data_dir: Path) -> None:
        self.sim = sim
        self.supervisor = supervisor
        self.settings = settings
        self.data_dir = data_dir

    def publish(self, message: object) -> None:
        self.supervisor.bus.publish(message)

    def ask(self, name: str, message: object, timeout: float = 10) -> Any:
        ref = self.supervisor.refs()[name]
        assert ref is not None, f"{name} is not running"
        return ref.ask(message, timeout=timeout)

    def stop(self) -> None:
        try:
            self.supervisor.stop()
        finally:
            self.sim.stop()


class StartDesk(Protocol):
    def __call__(self, values: Mapping[str, Any] | None = None, /, *, currencies: Sequence[str] = ...,
                 seed: int = ..., sim: Mapping[str, Any] | None = ..., only: Collection[str] | None = ...,
                 extra_specs: Sequence[ActorSpec] = ..., clock_offset_s: float = ...) -> SimDesk: ...


def start_desk(tmp_path: Path, values: Mapping[str, Any] | None = None, /, *,
               currencies: Sequence[str] = ("BTC", "ETH"), seed: int = 3, sim: Mapping[str, Any] | None = None,
               only: Collection[str] | None = None, extra_specs: Sequence[ActorSpec] = (),
               clock_offset_s: float = 0.0) -> SimDesk:
    """Start a simulator (the small chain, one account) and the desk logged in to it.

    ``values`` are dotted settings keys over the desk's defaults (the simulator's account, fast
    reconnects, files under ``tmp_path``); ``sim`` are :class:`SimSettings` fields; ``only`` keeps
    just the program's actors of those names; ``extra_specs`` start after them; ``clock_offset_s``
    moves both clocks (the simulator's and the desk's) by that much from the wall clock."""
    clock = ShiftedClock(clock_offset_s) if clock_offset_s else WallClock()
    setup_logging(tmp_path / "logs", "info", console=False, secrets=[SIM_CLIENT_SECRET])
    simulator = Simulator(seed=seed, settings=SimSettings.for_account(
        SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_BALANCES, **{"chain": "small", **(sim or {})}), clock=clock.now)
    url = simulator.start_in_thread()
    try:
        settings = make_settings({"deribit.client_id": SIM_CLIENT_ID, "deribit.client_secret": SIM_CLIENT_SECRET,
                                  "deribit.reconnect_initial_s": 0.2, "currencies": list(currencies),
                                  **(values or {})}, tmp_path=tmp_path)
        specs = [s for s in main.actor_specs(settings, url=url) if only is None or s.name in only]
        supervisor = main.make_supervisor(settings, [*specs, *extra_specs], clock, url=url)
    except BaseException:
        simulator.stop()
        raise
    desk = SimDesk(simulator, supervisor, settings, Path(settings.data_dir))
    try:
        supervisor.start()
    except BaseException:
        desk.stop()
        raise
    return desk


@pytest.fixture
def sim_desk(tmp_path: Path) -> Iterator[StartDesk]:
    """Starts desks on simulators (:func:`start_desk`); stops all of them, and every actor, at the end."""
    started: list[SimDesk] = []

    def start(values: Mapping[str, Any] | None = None, /, **kw: Any) -> SimDesk:
        desk = start_desk(tmp_path, values, **kw)
        started.append(desk)
        return desk

    try:
        yield start
    finally:
        try:
            for desk in started:
                desk.stop()
        finally:
            try:
                pykka.ActorRegistry.stop_all(timeout=5)
            except pykka.Timeout:
                pass  # an actor stopped while being asked to: nothing is left running that matters
            shutdown_logging()


def books_all_fresh(desk: SimDesk) -> bool:
    """Every BookKeeper has instruments and no stale book."""
    for name in OPTION_KEEPERS + FUTURE_KEEPERS:
        stats = desk.ask(name, GetBookStats())
        if stats["stale"] or not stats["instruments"]:
            return False
    return True


def compare_books(desk: SimDesk) -> int:
    """Every option book equals the simulator's (levels and change id) and every future's top equals
    the simulator's best levels; none is stale. Returns how many books were compared."""
    compared = 0
    for keeper in OPTION_KEEPERS:
        books: dict[str, Any] = desk.ask(keeper, GetBooks())
        assert books, keeper
        for name, view in books.items():
            bids, asks = desk.sim.book(name)
            assert not view.stale, (name, view.stale_reason)
            assert view.change_id == desk.sim.change_id(name), name
            assert list(view.bids) == bids and list(view.asks) == asks, name
            compared += 1
    for keeper in FUTURE_KEEPERS:
        tops = desk.ask(keeper, GetTops())
        assert tops, keeper
        for name, (bid, bid_amount, ask, ask_amount, stale) in tops.items():
            bids, asks = desk.sim.book(name)
            assert not stale, name
            assert (bid, bid_amount) == (bids[0] if bids else (None, 0.0)), name
            assert (ask, ask_amount) == (asks[0] if asks else (None, 0.0)), name
            compared += 1
    return compared
