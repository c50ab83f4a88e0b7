"""Replay (issue 3): `main.py replay` on the real capture; record a live session against the
simulator with --record-wire and replay it to the same counts; a generated log replays the same
way twice, with minute ticks and the 08:00 rollover in order with the data. Bad lines and hostile
logs: test_replay_hostile.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pykka

from actors.connection import REPLAY_ONLY, Connection, GetReplaySummary
from main import build_parser, make_supervisor, overrides_from_args
from messages.base import Message
from messages.commands import CommandFailed, PlaceOrder
from messages.market import Ticker
from messages.system import ConnectionState, ConnectionStatus, ConnectionStatusRequest, DailyRollover, MinuteTick
from runtime.clock import ReplayClock
from runtime.logs import setup_logging
from runtime.supervisor import ActorSpec
from runtime.wirelog import first_time, read_wire_log
from simulator import SimSettings, Simulator, generate_wire_log
from tests.support.capture import wire_sample
from tests.support.connection_harness import Desk, GetSeen, Probe, connection_settings
from tests.support.paths import REPO
from tests.support.replay import counts_in_file, replay_cli


def test_replay_of_the_real_capture_prints_its_counts(tmp_path: Path) -> None:
    status, summary, stderr = replay_cli(wire_sample(), tmp_path)
    assert status == 0, stderr
    assert summary is not None
    assert summary["in_frames"] == 136
    assert summary["notifications"]["book"] == 46 and summary["notifications"]["ticker"] == 89
    assert summary["errors"] == 0 and summary["malformed"] == 0
    assert summary["bad_lines"] == 0 and summary["first_bad_lines"] == [] and summary["complete"] is True
    independent = counts_in_file(wire_sample())
    assert summary["in_frames"] == independent["in_frames"]
    assert summary["notifications"] == independent["notifications"]
    assert summary["responses"] == independent["responses"] == 1
    # The replay's own run id, on every line it logged: told apart from the desk in the same daily file.
    logged = [json.loads(line) for f in (tmp_path / "logs").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert logged and {line["run_id"] for line in logged} == {summary["run_id"]}


def test_record_then_replay_gives_the_recorded_counts(tmp_path: Path) -> None:
    wire = tmp_path / "recorded.jsonl"
    args = build_parser().parse_args(["run", "--record-wire", str(wire), "--currencies", "BTC"])
    overrides = overrides_from_args(args)
    assert overrides["deribit.record_wire"] == str(wire)
    sim = Simulator(seed=5, settings=SimSettings.for_account("rec", "rec-secret-0000", {"BTC": 10.0, "ETH": 100.0},
                                                             chain="small", updates_per_s=5.0))
    sim.start_in_thread()
    try:
        settings = connection_settings(tmp_path, {**overrides, "deribit.client_id": "rec",
                                                  "deribit.client_secret": "rec-secret-0000"})
        desk = Desk.start(settings, sim.url, keep=lambda m: not isinstance(m, Ticker))
        try:
            desk.wait_state(ConnectionState.SUBSCRIBED, timeout=20)
            desk.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10, type="market",
                                    origin="test", request_key="rec-1"))
            desk.wait_answer("rec-1")
            time.sleep(1.5)
        finally:
            desk.stop()
        live = desk.log_events("link_stats")[-1]
        setup_logging(None, "warning", console=False)
    finally:
        sim.stop()

    records = list(read_wire_log(wire))
    assert [records[0].dir, records[-1].dir] == ["open", "close"]
    assert any(r.dir == "out" and r.frame and '"private/buy"' in r.frame for r in records)
    status, summary, stderr = replay_cli(wire, tmp_path)
    assert status == 0, stderr
    assert summary is not None
    for key in ("in_frames", "notifications", "responses", "errors", "malformed"):
        assert summary[key] == live[key], key
    assert summary["malformed"] == 0 and summary["errors"] == 0
    independent = counts_in_file(wire)
    assert summary["in_frames"] == independent["in_frames"] > 100
    assert summary["notifications"] == independent["notifications"]
    assert {"book", "ticker", "quote", "user.orders", "user.portfolio"} <= set(summary["notifications"])


def replay_in_process(path: Path, tmp_path: Path) -> tuple[dict[str, Any], list[Message]]:
    """Replay ``path`` through the Connection and a probe on the replay clock; (summary, bus messages)."""
    settings = connection_settings(tmp_path, currencies=["BTC", "ETH"])
    first = first_time(path)
    assert first is not None
    specs = [ActorSpec("probe", lambda ctx: Probe.start(ctx, lambda m: not isinstance(m, Ticker))),
             ActorSpec("connection", lambda ctx: Connection.start(ctx, replay_file=str(path)))]
    supervisor = make_supervisor(settings, specs, ReplayClock(first), replay=True)
    supervisor.start()
    try:
        connection = supervisor.refs()["connection"]
        assert connection is not None
        supervisor.bus.publish(PlaceOrder(instrument_name="BTC-PERPETUAL", side="buy", amount=10, type="market",
                                          origin="test", request_key="replay-1"))
        # A restarted actor's question: in replay only the log's open/close records are the
        # link's status (an answer here would land mid-log and read as a new link).
        supervisor.bus.publish(ConnectionStatusRequest(origin="test"))
        deadline = time.monotonic() + 60
        summary = None
        while summary is None:
            assert time.monotonic() < deadline, "the replay did not finish"
            summary = connection.ask(GetReplaySummary(), timeout=10)
            time.sleep(0.02)
        supervisor.drain()
        probe = supervisor.refs()["probe"]
        assert probe is not None
        seen, _ = probe.ask(GetSeen(), timeout=10)
        connection_answers = [m for m in seen if isinstance(m, CommandFailed)]
        assert [(a.request_key, a.code) for a in connection_answers] == [("replay-1", REPLAY_ONLY)]
        return summary, seen
    finally:
        supervisor.stop()
        pykka.ActorRegistry.stop_all()


def test_generated_log_replays_identically_with_ticks_and_rollover_in_order(tmp_path: Path) -> None:
    start = dt.datetime(2025, 1, 6, 7, 58, 30, tzinfo=dt.UTC).timestamp()
    wire = tmp_path / "generated.jsonl"
    made = generate_wire_log(wire, minutes=2, seed=3, start=start, settings=SimSettings(chain="small"),
                             updates_per_s=0.5)
    first, seen = replay_in_process(wire, tmp_path)
    second, _ = replay_in_process(wire, tmp_path)
    assert first == second
    assert first["notifications"]["book"] == made["book"]
    assert first["notifications"]["ticker"] == made["ticker"]
    assert first["notifications"]["quote"] == made["quote"]
    assert first["notifications"]["deribit_price_index"] == made["index"]
    assert first["notifications"].get("instrument.state", 0) == made["state"]
    assert first["minutes"] == 2 and first["errors"] == 0
    statuses = [m for m in seen if isinstance(m, ConnectionStatus)]
    assert [(s.state, s.venue) for s in statuses] == [(ConnectionState.CONNECTED, "replay"),
                                                      (ConnectionState.DISCONNECTED, "replay")]

    ticks = [(i, m) for i, m in enumerate(seen) if isinstance(m, MinuteTick | DailyRollover)]
    assert [(type(m).__name__, m.at - start) for _, m in ticks] == [
        ("MinuteTick", 30.0), ("MinuteTick", 90.0), ("DailyRollover", 90.0)]
    # Data stamped before a tick's instant was published before it; data from that instant on, after it.
    stamped = [(i, m.timestamp / 1000) for i, m in enumerate(seen) if hasattr(m, "timestamp")]
    assert len(stamped) > 100
    for position, tick in ticks:
        assert all(t < tick.at for i, t in stamped if i < position)
        assert all(t >= tick.at for i, t in stamped if i > position)


def test_record_wire_to_an_unwritable_path_stops_the_program_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERIBIT_", "DESK__"))}
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "run", "--record-wire", str(tmp_path), "--set",
         f"logging.dir={tmp_path / 'logs'}", "--set", f"data_dir={tmp_path / 'data'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    # Refused at load (issue 17: the program's files are checked with the settings), naming the flag.
    assert f"deribit.record_wire: {tmp_path} is a directory, not a file" in proc.stderr
    assert "--record-wire" in proc.stderr and "Traceback" not in proc.stderr
