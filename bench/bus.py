"""Bus throughput into a pykka actor versus plain pykka ``tell`` to the same actor, same run."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pykka

from config.settings import load_settings
from messages.base import Message
from runtime.actor import Actor, ActorContext, handles
from runtime.bus import Bus
from runtime.clock import WallClock


class Ping(Message, frozen=True, kw_only=True):
    n: int


class Sink(Actor):
    def __init__(self, context: ActorContext, holder: list[Sink]) -> None:
        super().__init__(context)
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        holder.append(self)  # the benchmark reads the counter without going through the inbox

    @handles(Ping)
    def on_ping(self, _m: Ping) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


def _timed(send: Callable[[Ping], None], sink: Sink, messages: list[Ping]) -> float:
    sink.count = 0
    sink.target = len(messages)
    sink.done.clear()
    start = time.perf_counter()
    for m in messages:
        send(m)
    if not sink.done.wait(60):
        raise RuntimeError("the sink did not receive every message")
    return len(messages) / (time.perf_counter() - start)


def run(args: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench bus")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args(args)

    bus = Bus()
    holder: list[Sink] = []
    settings = load_settings(environ={}, cwd=Path(tempfile.gettempdir()))  # the defaults; the sink reads none
    ref = Sink.start(ActorContext(name="sink", clock=WallClock(), settings=settings, publish=bus.publish), holder)
    sink = holder[0]
    bus.register("sink", ref, Sink.subscriptions())
    messages = [Ping(n=i) for i in range(opts.messages)]
    bus_rates: list[float] = []
    raw_rates: list[float] = []
    try:
        _timed(bus.publish, sink, messages[:20_000])  # warm-up
        for _ in range(opts.rounds):
            # Alternate so that drift of the machine affects both sides alike.
            raw_rates.append(_timed(ref.tell, sink, messages))
            bus_rates.append(_timed(bus.publish, sink, messages))
            print(f"raw {raw_rates[-1]:,.0f}/s  bus {bus_rates[-1]:,.0f}/s", file=sys.stderr)
    finally:
        pykka.ActorRegistry.stop_all()
    bus_rate = statistics.median(bus_rates)
    raw_rate = statistics.median(raw_rates)
    return {
        "messages": opts.messages,
        "rounds": opts.rounds,
        "msgs_per_s": round(bus_rate),
        "raw_tell_msgs_per_s": round(raw_rate),
        "ratio": round(bus_rate / raw_rate, 3),
    }
