"""Logs: every line valid JSON with time, level, actor and event; no secret anywhere."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import structlog

from runtime.logs import setup_logging, shutdown_logging
from runtime.secrets import MASK

SECRET = "Zx9-fake-client-secret-0123"


def test_json_lines_with_required_fields_and_no_secrets(tmp_path: Path) -> None:
    setup_logging(tmp_path, "debug", console=False, secrets=[SECRET])
    log = structlog.get_logger(actor="tester")
    log.info("plain_event", value=1)
    log.info("auth_sent", client_secret=SECRET, access_token="tok-abc-123456", nested={"refresh_token": "r-1"})
    log.warning("echo", frame=f'{{"params": {{"client_secret": "{SECRET}"}}}}', signature="deadbeef")
    try:
        raise ValueError(f"login failed with {SECRET}")
    except ValueError:
        log.exception("login_failed")
    logging.getLogger("some.library").error("library says %s", SECRET)
    for handler in logging.getLogger().handlers:
        handler.flush()
    files = list(tmp_path.glob("app-*.jsonl"))
    assert len(files) == 1 and re.fullmatch(r"app-\d{8}\.jsonl", files[0].name)
    text = files[0].read_text()
    assert SECRET not in text
    assert "tok-abc-123456" not in text and "deadbeef" not in text and "r-1" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 5
    for line in lines:
        assert {"time", "level", "event", "actor"} <= set(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert lines[0]["value"] == 1 and lines[0]["actor"] == "tester"
    assert "ValueError" in lines[3]["exception"]
    assert lines[4]["actor"] == "some.library" and lines[4]["level"] == "error"
    shutdown_logging()


def test_one_rule_for_secrets_masks_keys_values_and_url_passwords() -> None:
    from runtime.secrets import MASK, is_secret_key, mask_url, mask_value, url_password

    for key in ("client_secret", "access_token", "refresh_token", "signature", "Authorization", "api_key", "password"):
        assert is_secret_key(key) and mask_value(key, "x") == MASK, key
    assert mask_value("client_secret", "") == "" and mask_value("client_id", "desk") == "desk"
    assert mask_url("postgresql+psycopg2://desk:s3cret@db:5432/x") == "postgresql+psycopg2://desk:***@db:5432/x"
    assert mask_url("sqlite:///data/deribit.sqlite3") == "sqlite:///data/deribit.sqlite3"
    assert url_password("postgresql+psycopg2://desk:s3cret@db/x") == "s3cret"
    assert url_password("postgresql+psycopg2://desk@db/x") is None


def test_the_wire_log_redaction_takes_its_key_names_from_the_same_rule() -> None:
    from deribit.codec import REDACTED, redact_frame

    frame = '{"params":{"client_id":"desk","client_secret":"abc","api_key":"k1","access_token":"t1"}}'
    assert redact_frame(frame) == (f'{{"params":{{"client_id":"desk","client_secret":"{REDACTED}",'
                                   f'"api_key":"{REDACTED}","access_token":"{REDACTED}"}}}}')


def _log_lines(path: Path) -> list[dict]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for f in sorted(path.glob("app-*.jsonl")) for line in f.read_text().splitlines()]


def test_a_long_text_is_cut_with_its_length_noted_and_a_secret_at_the_cut_masked_first(tmp_path: Path) -> None:
    token = "acc-0f3c9e1d2b7a4c6e8f0a1b2c"
    setup_logging(tmp_path, "info", console=False, max_field_chars=100)
    from runtime.secrets import register_secrets

    register_secrets([token], transient=True)
    log = structlog.get_logger(actor="tester")
    channel = "book." + "X" * (10 << 20)  # a 10 MiB channel name from a bad frame
    log.warning("unknown_channel", channel=channel, echoed="y" * 90 + token, nested={"deep": [[[[[[[[token]]]]]]]]})
    line = _log_lines(tmp_path)[-1]
    shutdown_logging()
    assert line["channel"] == channel[:100] + f"...({len(channel):,} characters)"
    # The token straddled the cut: masked before cutting, so none of it is left.
    assert line["echoed"] == "y" * 90 + MASK and token[:8] not in json.dumps(line)
    assert token not in json.dumps(line)


def test_tokens_are_kept_by_the_masker_as_long_as_they_may_be_seen() -> None:
    from runtime.secrets import TRANSIENT_KEPT, register_secrets, scrub_text

    configured = "configured-secret-0001"
    register_secrets([configured])
    tokens = [f"tok-{n:04d}-abcdef" for n in range(TRANSIENT_KEPT * 2)]
    for token in tokens:
        register_secrets([token], transient=True)
    newest = tokens[-TRANSIENT_KEPT:]
    assert scrub_text(" ".join([configured, *newest])) == " ".join([MASK] * (1 + len(newest)))
    assert scrub_text(tokens[0]) == tokens[0]  # long expired: no longer kept, the list stays bounded
    assert scrub_text("abc") == "abc"


def test_every_json_line_has_the_run_id_and_pid_and_times_in_iso_and_nothing_else_altered(tmp_path: Path) -> None:
    """The desk, piped runs and replays share one daily file: each line says which run wrote it.
    A minute in unix seconds and a Deribit timestamp in epoch milliseconds read as ISO 8601 UTC;
    a duration in ms, a day, texts and other numbers stay as logged; secrets stay masked."""
    import os

    from runtime.logs import run_id

    setup_logging(tmp_path, "debug", console=False, secrets=[SECRET])
    log = structlog.get_logger(actor="tester")
    log.info("minute_recording", currency="BTC", minute=1_796_630_400, backlog=0, day="2026-12-07")
    log.info("dvol_recorded", minute=1_796_630_400.0, dvol_at_ms=1_796_630_399_123, build_ms=12.5)
    log.error("surface_failed", at=1_796_630_460, error=f"failed with {SECRET}", client_secret=SECRET)
    log.debug("dvol_ignored", timestamp=1_796_630_401_000, volatility=55.2, minute=None)
    log.info("not_a_time", at="somewhere", minute=True, count=3)
    logging.getLogger("some.library").warning("library line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = next(tmp_path.glob("app-*.jsonl")).read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    shutdown_logging()
    assert len(lines) == 6
    assert re.fullmatch(r"[0-9a-f]{6}", run_id())
    for line in lines:
        assert line["run_id"] == run_id() and line["pid"] == os.getpid()
    recording, dvol, failed, ignored, not_a_time, library = lines
    assert recording["minute"] == "2026-12-07T08:00:00Z"
    assert (recording["currency"], recording["backlog"], recording["day"]) == ("BTC", 0, "2026-12-07")
    assert dvol["minute"] == "2026-12-07T08:00:00Z" and dvol["dvol_at"] == "2026-12-07T07:59:59.123Z"
    assert "dvol_at_ms" not in dvol and dvol["build_ms"] == 12.5
    assert failed["at"] == "2026-12-07T08:01:00Z" and failed["client_secret"] == MASK
    assert SECRET not in text and MASK in failed["error"]
    assert ignored["timestamp"] == "2026-12-07T08:00:01Z" and ignored["volatility"] == 55.2
    assert ignored["minute"] is None
    assert (not_a_time["at"], not_a_time["minute"], not_a_time["count"]) == ("somewhere", True, 3)
    assert library["event"] == "library line" and library["actor"] == "some.library"
    # The head of a line stays readable with tail -f: time, level, actor, event, then the run.
    assert list(recording)[:6] == ["time", "level", "actor", "event", "run_id", "pid"]
