"""No secret, signature or token in any log line or in the wire log (issue 3).

The Connection logs in with a known fake secret (both auth methods), refreshes its short-lived
token several times, logs in afresh after a refused refresh, trades, and meets a malformed frame
that carries a token; then every JSON log line and every wire-log line is scanned for the
secret, every signature the server received and every token it issued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from messages.commands import CommandResult, PlaceOrder
from messages.system import ConnectionState
from runtime.logs import setup_logging
from runtime.wirelog import read_wire_log
from tests.support.connection_harness import Desk, connection_settings
from tests.support.scripted_server import CLIENT_SECRET, ScriptedServer


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
