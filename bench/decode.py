"""Frame decoding speed: ``deribit.codec.FrameDecoder`` against plain ``json.loads``.

Builds frames shaped like the real capture (``shared/fixtures/deribit``): book changes, tickers
and a few snapshots, each a fixture frame with its ids, timestamps and prices moved on, then
times decoding all of them, best of several passes, in the same run.

``python -m bench decode [--frames N] [--passes K] [--seed S] [--json]``
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deribit.codec import FrameDecoder

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "deribit"
WIRE_SAMPLE = FIXTURES / "wire-2021-07-22-options-sample.jsonl"
#: Share of each frame kind in the generated stream (a busy options feed is mostly book changes).
MIX = {"change": 0.59, "ticker": 0.40, "snapshot": 0.01}


def _templates() -> dict[str, list[dict[str, Any]]]:
    """The capture's notifications by kind, as parsed JSON."""
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in MIX}
    for line in WIRE_SAMPLE.read_text().splitlines():
        record = json.loads(line)
        if record.get("dir") != "in":
            continue
        frame = json.loads(record["frame"])
        channel = frame.get("params", {}).get("channel", "")
        if channel.startswith("ticker."):
            by_kind["ticker"].append(frame)
        elif channel.startswith("book."):
            by_kind[frame["params"]["data"]["type"]].append(frame)
    return by_kind


def _nudge(value: float, rng: random.Random) -> float:
    return round(value * (1.0 + rng.uniform(-0.01, 0.01)), 8)


def _perturb(frame: dict[str, Any], step: int, rng: random.Random) -> dict[str, Any]:
    """A later frame of the same instrument: ids and time move on, prices move a little."""
    frame = copy.deepcopy(frame)
    data = frame["params"]["data"]
    data["timestamp"] += step * 100
    if "change_id" in data:
        data["change_id"] += 2 * step
        if "prev_change_id" in data:
            data["prev_change_id"] = data["change_id"] - 1
        for side in ("bids", "asks"):
            data[side] = [[act, _nudge(price, rng), _nudge(size, rng)] for act, price, size in data[side]]
    else:
        for key in ("mark_price", "underlying_price", "index_price", "mark_iv"):
            if isinstance(data.get(key), float):
                data[key] = _nudge(data[key], rng)
        if data.get("greeks"):
            data["greeks"] = {name: _nudge(value, rng) for name, value in data["greeks"].items()}
    return frame


def build_frames(count: int, seed: int = 7) -> list[str]:
    """``count`` compact JSON frames in the :data:`MIX` proportions, shuffled."""
    rng = random.Random(seed)
    templates = _templates()
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    frames = []
    for step, kind in enumerate(kinds, start=1):
        template = rng.choice(templates[kind])
        frames.append(json.dumps(_perturb(template, step, rng), separators=(",", ":")))
    return frames


def _best_rate(decode: Callable[[str], Any], frames: Sequence[str], passes: int) -> float:
    """Frames per second of the fastest pass (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(passes):
        gc.collect()
        start = time.perf_counter()
        for frame in frames:
            decode(frame)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def run(args: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench decode", description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000, help="frames to decode per pass")
    parser.add_argument("--passes", type=int, default=5, help="passes; the fastest counts")
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args(args)

    started = time.perf_counter()
    frames = build_frames(options.frames, options.seed)
    megabytes = sum(map(len, frames)) / 1e6
    print(
        f"built {len(frames)} frames ({megabytes:.1f} MB) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    decoder = FrameDecoder()
    for frame in frames:  # every generated frame must decode: a benchmark of errors is no benchmark
        decoder.decode(frame)
    codec_rate = _best_rate(decoder.decode, frames, options.passes)
    print(f"codec:      {codec_rate:,.0f} frames/s", file=sys.stderr)
    json_rate = _best_rate(json.loads, frames, options.passes)
    print(f"json.loads: {json_rate:,.0f} frames/s", file=sys.stderr)
    return {
        "frames": len(frames),
        "frames_per_s": round(codec_rate),
        "json_loads_frames_per_s": round(json_rate),
        "ratio": round(codec_rate / json_rate, 3),
        "passes": options.passes,
        "mb_per_pass": round(megabytes, 2),
        "mix": ", ".join(f"{kind} {share:.0%}" for kind, share in MIX.items()),
    }
