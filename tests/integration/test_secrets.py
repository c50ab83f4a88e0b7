"""No secret, signature or token in any log line or in the wire log (issue 3).

The Connection logs in with a known fake secret (both auth methods), refreshes its short-lived
token several times, logs in afresh after a refused refresh, trades, and meets a malformed frame
that carries a token; then every JSON log line and every wire-log line is scanned for the
secret, every signature the server received and every token it issued."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from messages.commands import CommandResult, PlaceOrder
from messages.system import ConnectionState
from runtime.logs import setup_logging
from runtime.wirelog import read_wire_log
from tests.support.connection_harness import Desk, connection_settings
from tests.support.scripted_server import CLIENT_SECRET, ScriptedServer
from tests.support.waiting import wait_until


@pytest.mark.parametrize("auth_method", ["client_signature", "client_credentials"])
def test_no_secret_signature_or_token_in_logs_or_wire_log(tmp_path: Path, auth_method: str) -> None:
    wire = tmp_path / "wire.jsonl"
    settings = connection_settings(tmp_path, {"deribit.auth_method": auth_method, "deribit.record_wire": str(wire),
                                              "logging.level": "debug"})
    with ScriptedServer(expires_in=1) as server:
        desk = Desk.start(settings, server.url)
        try:
            desk.wait_state(ConnectionState.SUBSCRIBED)
            server.wait_for_call("public/auth", count=3, where=lambda c: c.params["grant_type"] == "refresh_token")
            server.fail_next("public/auth")  # a refused refresh: the Connection logs in afresh
            server.wait_for_call("public/auth", count=2, where=lambda c: c.params["grant_type"] == auth_method)
            token = server.issued_tokens[-1]
            server.send_raw(f'{{"jsonrpc": "2.0", "id": 99, "result": {{"access_token": "{token}", "refresh')
            desk.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10, price=50000.0,
                                    origin="test", request_key="k-1", label="secret-test"))
            assert isinstance(desk.wait_answer("k-1"), CommandResult)
            desk.wait_log("malformed_frame")
        finally:
            desk.stop()
            setup_logging(None, "warning", console=False)  # release the log files

    secrets_found = [CLIENT_SECRET, *server.signatures, *server.issued_tokens]
    assert len(server.issued_tokens) >= 8  # a login, three refreshes, a second login: each two tokens
    if auth_method == "client_signature":
        assert len(server.signatures) == 2 and all(len(s) == 64 for s in server.signatures)

    log_lines = [line for path in sorted(desk.log_dir.glob("*.jsonl")) for line in path.read_text().splitlines()]
    events = {json.loads(line)["event"] for line in log_lines}
    wanted = {"authenticated", "token_refreshed", "token_refresh_failed", "malformed_frame", "link_stats"}
    assert wanted <= events, wanted - events
    wire_lines = wire.read_text().splitlines()
    records = list(read_wire_log(wire))
    auth_out = [r.frame for r in records if r.dir == "out" and r.frame and '"public/auth"' in r.frame]
    assert len(auth_out) >= 5 and all("<redacted>" in frame for frame in auth_out)
    auth_in = [r.frame for r in records if r.dir == "in" and r.frame and '"refresh_token"' in r.frame]
    assert len(auth_in) >= 4 and all('"access_token":"<redacted>"' in f.replace(" ", "") for f in auth_in)

    for where, lines in (("log", log_lines), ("wire log", wire_lines)):
        for number, line in enumerate(lines, 1):
            for secret in secrets_found:
                assert secret not in line, f"{where} line {number} holds a secret: {line[:300]}"


#: A database password with an @ in it (written %40 in the URL, as the settings require).
DB_PASSWORD = "db-p@ss-Q7x1"


def test_an_echoed_token_and_a_database_password_with_an_at_are_in_no_file_written(
        tmp_path: Path, pg_url: str) -> None:
    """A venue echoes the session's tokens in an order's error; the database password holds an @.
    Neither reaches the order's answer (what the console prints and orders_audit stores), the
    audit rows, the log, the wire log or any other file under the test's directory."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from actors.recorder import Recorder
    from messages.commands import CommandFailed
    from runtime.supervisor import ActorSpec

    url = make_url(pg_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    assert "%40" in url
    wire = tmp_path / "wire.jsonl"
    settings = connection_settings(tmp_path, {"deribit.record_wire": str(wire), "logging.level": "debug",
                                              "database.url": url})
    assert DB_PASSWORD in settings.secrets() and quote(DB_PASSWORD, safe="") in settings.secrets()
    with ScriptedServer() as server:
        desk = Desk.start(settings, server.url, extra_specs=[ActorSpec("recorder", lambda ctx: Recorder.start(ctx))])
        try:
            desk.wait_state(ConnectionState.SUBSCRIBED)
            server.echo_tokens_next("private/buy")
            desk.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10, price=50000.0,
                                    origin="test", request_key="echo-1", label="secret-test"))
            answer = desk.wait_answer("echo-1")
            engine = create_engine(pg_url)
            with engine.connect() as conn:
                def audit() -> list[str]:
                    rows = conn.execute(text("SELECT * FROM orders_audit WHERE request_key = 'echo-1' "
                                             "AND answer IS NOT NULL")).all()
                    conn.commit()
                    return [str(tuple(row)) for row in rows]
                rows = wait_until(audit, timeout=20, what="the echoed order's audit row")
            engine.dispose()
        finally:
            desk.stop()
            setup_logging(None, "warning", console=False)  # release the log files

    tokens = server.issued_tokens[-2:]
    assert isinstance(answer, CommandFailed) and answer.code == 11050
    assert "bad_request: session ***" in answer.message and "***" in answer.data
    values = [CLIENT_SECRET, *tokens, DB_PASSWORD, quote(DB_PASSWORD, safe="")]
    for value in values:
        assert value not in answer.message + answer.data
        assert not any(value in row for row in rows), rows
    wire_text = wire.read_text()
    assert "bad_request: session ***" in wire_text  # the error frame is there, masked
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert wire in written and any(path.suffix == ".jsonl" and path != wire for path in written)
    for path in written:
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, f"{path} holds {value[:4]}..."
