"""`python main.py replay` of a wire log made of real public Deribit notifications of every kind the desk
reads (tests/fixtures/public/wire-public.jsonl, built from the corpus): nothing counted as an error or
malformed, and every notification counted under its channel."""

from __future__ import annotations

from pathlib import Path

from tests.support.public_messages import NOTIFICATION_KINDS, WIRE_PUBLIC, public_messages, wire_log_lines
from tests.support.replay import counts_in_file, replay_cli


def test_the_committed_wire_log_is_the_corpus_s() -> None:
    assert WIRE_PUBLIC.read_text().splitlines() == wire_log_lines()
    kinds = {m.kind for m in public_messages() if m.kind in NOTIFICATION_KINDS}
    assert len(wire_log_lines()) - 1 == sum(len(public_messages(kind)) for kind in kinds)


def test_replay_of_real_public_notifications_has_no_error(tmp_path: Path) -> None:
    status, summary, stderr = replay_cli(WIRE_PUBLIC, tmp_path)
    assert status == 0, stderr
    assert summary is not None
    assert summary["errors"] == 0 and summary["malformed"] == 0, summary
    independent = counts_in_file(WIRE_PUBLIC)
    assert summary["in_frames"] == independent["in_frames"] == len(wire_log_lines()) - 1
    assert summary["notifications"] == independent["notifications"]
    for prefix in ("user.changes", "platform_state", "deribit_volatility_index", "markprice.options"):
        assert summary["notifications"].get(prefix, 0) > 0, prefix
