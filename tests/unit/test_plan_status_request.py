"""A restarted Hedger asks whether a plan is worked (its vega hedgers hold while one is), and the
Assistant answers that question on the bus as well as to an ``ask``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.assistant import Assistant
from actors.hedger import Hedger
from messages.exposure import PlanState, PlanStatus, PlanStatusRequest
from runtime.actor import ActorContext
from runtime.clock import WallClock
from tests.support.settings import make_settings
from tests.support.waiting import wait_until


def test_a_started_hedger_asks_whether_a_plan_is_worked(tmp_path: Path) -> None:
    published: list[Any] = []
    settings = make_settings({"hedger.currencies": ["BTC"]}, tmp_path=tmp_path, currencies=["BTC"])
    ref = Hedger.start(ActorContext(name="hedger", clock=WallClock(), settings=settings, publish=published.append))
    try:
        wait_until(lambda: [m.origin for m in published if isinstance(m, PlanStatusRequest)] == ["hedger"])
    finally:
        ref.stop()


def test_the_assistant_answers_a_plan_status_request_on_the_bus_too(tmp_path: Path) -> None:
    published: list[Any] = []
    settings = make_settings(tmp_path=tmp_path, currencies=["BTC"])
    ref = Assistant.start(ActorContext(name="assistant", clock=WallClock(), settings=settings,
                                       publish=published.append))
    try:
        answer = ref.ask(PlanStatusRequest(origin="hedger"), timeout=10)
        assert isinstance(answer, PlanStatus) and answer.plan_id == 0 and answer.state is not PlanState.WORKING
        wait_until(lambda: answer in published)
    finally:
        ref.stop()
