"""Frames per second the simulator streams to one client subscribed to the full BTC and ETH chain.

The simulator runs in a subprocess (fair on a 2-core machine: server and client each get a core)
with a high per-instrument update rate so it is CPU-bound; one websocket-client connection
subscribes every book and ticker and counts the frames it receives over a fixed window (parsing
frame headers only: a JSON decode per frame would measure the client, not the simulator; a
sample of frames is decoded to check them).

    python -m bench simulator [--seconds 10] [--updates-per-s 40] [--in-process] --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import websocket

from simulator import SimSettings, Simulator


def _rpc(ws: websocket.WebSocket, req_id: int, method: str, params: dict[str, Any]) -> Any:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == req_id:
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']}")
            return msg["result"]


class FrameCounter:
    """Counts websocket frames straight off the socket (server frames are unmasked), so the
    client's own cost stays far below the server's and the figure is the simulator's."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = b""
        self.frames = 0
        self.bytes = 0
        self.sample: list[bytes] = []

    def pump(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("simulator closed the connection")
        buf = self.buf + data if self.buf else data
        i = 0
        n = len(buf)
        frames = 0
        while True:
            if n - i < 2:
                break
            ln = buf[i + 1] & 0x7F
            head = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = int.from_bytes(buf[i + 2 : i + 4], "big")
                head = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = int.from_bytes(buf[i + 2 : i + 10], "big")
                head = 10
            if n - i < head + ln:
                break
            if frames % 4096 == 0 and len(self.sample) < 64:
                self.sample.append(buf[i + head : i + head + ln])
            frames += 1
            self.bytes += ln
            i += head + ln
        self.frames += frames
        self.buf = buf[i:]


def measure(url: str, seconds: float, warmup: float) -> dict[str, Any]:
    ws = websocket.create_connection(url, timeout=30, enable_multithread=False)
    names: list[str] = []
    for cur in ("BTC", "ETH"):
        names += [i["instrument_name"] for i in _rpc(ws, len(names) + 1, "public/get_instruments", {"currency": cur})]
    chans = [f"{kind}.{n}.raw" for n in names for kind in ("book", "ticker")]
    # From here on the socket is read raw: subscribe answers, snapshots and the stream are all counted
    # as frames, and the warm-up window swallows the first two.
    for i in range(0, len(chans), 500):
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 100 + i,
                    "method": "public/subscribe",
                    "params": {"channels": chans[i : i + 500]},
                }
            )
        )
    sock = ws.sock
    if sock is None:  # create_connection returns connected or raises
        raise RuntimeError(f"no socket to {url}")
    counter = FrameCounter(sock)
    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        counter.pump()
    f0, b0 = counter.frames, counter.bytes
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        counter.pump()
    took = time.perf_counter() - t0
    sock.close()
    bad = sum(1 for s in counter.sample if not s.startswith(b'{"jsonrpc":"2.0"'))
    for s in counter.sample:
        json.loads(s)
    count = counter.frames - f0
    return {
        "frames_per_s": round(count / took, 1),
        "mbytes_per_s": round((counter.bytes - b0) / took / 1e6, 2),
        "instruments": len(names),
        "seconds": round(took, 2),
        "sampled_frames_bad": bad,
    }


def run(args: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench simulator")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--updates-per-s", type=float, default=40.0)
    p.add_argument("--step-s", type=float, default=0.05)
    p.add_argument("--in-process", action="store_true", help="run the simulator in this process (a thread)")
    ns = p.parse_args(args)
    if ns.in_process:
        sim = Simulator(1, SimSettings(updates_per_s=ns.updates_per_s, step_s=ns.step_s))
        url = sim.start_in_thread()
        try:
            out = measure(url, ns.seconds, ns.warmup)
        finally:
            sim.stop()
        out["mode"] = "in-process"
        return out
    cmd = [
        sys.executable,
        "-m",
        "simulator.cli",
        "--updates-per-s",
        str(ns.updates_per_s),
        "--step-s",
        str(ns.step_s),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        url = line.rsplit(" ", 1)[1]
        print(f"simulator at {url}", file=sys.stderr)
        out = measure(url, ns.seconds, ns.warmup)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    out["mode"] = "subprocess"
    return out
