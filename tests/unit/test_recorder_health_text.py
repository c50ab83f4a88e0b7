"""The console's recorder line and alerts say how the database answers: reachable, SLOW, HUNG or
UNREACHABLE (from RecorderStatus.health)."""

from __future__ import annotations

import pytest

from console.views import database_state, recorder_text
from messages.surface import DatabaseHealth, RecorderStatus


def status(health: DatabaseHealth, reachable: bool) -> RecorderStatus:
    return RecorderStatus(at=0.0, database="postgresql x", reachable=reachable, backlog_minutes=2,
                          backlog_batches=2, last_written_minute=None, written_minutes=0,
                          last_error="DeadlineExceeded: no answer" if not reachable else "", health=health)


@pytest.mark.parametrize(("health", "reachable", "word"), [
    (DatabaseHealth.OK, True, "reachable"),
    (DatabaseHealth.UNKNOWN, False, "UNREACHABLE"),
    (DatabaseHealth.SLOW, True, "SLOW"),
    (DatabaseHealth.HUNG, False, "HUNG"),
    (DatabaseHealth.UNREACHABLE, False, "UNREACHABLE"),
])
def test_the_recorder_line_names_the_database_health(health: DatabaseHealth, reachable: bool, word: str) -> None:
    assert database_state(status(health, reachable)) == word
    text = recorder_text(status(health, reachable)).plain
    assert f"database postgresql x {word}," in text
    assert ("last error" in text) is (not reachable)
