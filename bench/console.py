"""The console: how fast the grammar reads and prices lines, how many market messages the Console
actor absorbs, and how long a typed line takes to execute while the market streams at it."""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pykka
from rich.console import Console as RichConsole

from actors.console import Console
from config.settings import load_settings
from console.grammar import ORDER_COMMANDS, parse_line
from console.orders import OrderLimits, TradingContext, orders_for
from console.terminal import GetStartup, RunLine
from deribit.instruments import decode_instruments
from messages.market import InstrumentsLoaded
from messages.state import PortfolioChanged, TopOfBook
from messages.system import ConnectionState, ConnectionStatus
from runtime.actor import ActorContext
from runtime.bus import Bus
from runtime.clock import WallClock
from runtime.logs import setup_logging

FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "deribit" / \
    "instruments-BTC-2021-07-22.json"
LINES = ["a200", "d200", "as200", "dw200", "aw200", "ds200", "as100 16000", "dw200 18000s", "a100 16000 18000 10",
         "positions", "a200c", "hello", "buyOption:0.05,1", "ca", "as100 1600x"]


def _grammar_rate(instruments: dict[str, Any], n: int) -> float:
    ctx = TradingContext(instrument=instruments["BTC-PERPETUAL"], size_multiplier=10, bid=18990.0, ask=19000.0,
                         mark=18995.0, index_price=18990.0, limits=OrderLimits(1e6, 3.0, 50.0, 20))
    start = time.perf_counter()
    for i in range(n):
        command = parse_line(LINES[i % len(LINES)])
        if isinstance(command, ORDER_COMMANDS):
            orders_for(command, ctx, 1)  # buyOption on a future is refused: that is priced too
    return n / (time.perf_counter() - start)


def _tops(n: int, names: list[str]) -> list[TopOfBook]:
    return [TopOfBook(instrument_name=names[i % len(names)], kind="future", bid=60000.0 + i % 7, bid_amount=10.0,
                      ask=60010.0 + i % 5, ask_amount=10.0, timestamp=i, at=0.0, mark_price=60005.0)
            for i in range(n)]


def run(args: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench console")
    parser.add_argument("--lines", type=int, default=100_000, help="lines through the grammar")
    parser.add_argument("--messages", type=int, default=200_000, help="top-of-book messages flooded at the actor")
    parser.add_argument("--rate", type=float, default=20_000.0, help="market messages/s while typing")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to type while the market streams")
    opts = parser.parse_args(args)

    setup_logging(None, "warning", console=False)  # the console logs every line it runs
    instruments = {i.instrument_name: i for i in decode_instruments(FIXTURE.read_bytes())}
    grammar_rate = _grammar_rate(instruments, opts.lines)
    print(f"grammar {grammar_rate:,.0f} lines/s", file=sys.stderr)

    settings = load_settings(environ={}, overrides={"currencies": ["BTC"], "console.instrument": "BTC-PERPETUAL",
                                                    "console.size_multiplier": 10.0})
    bus = Bus()
    context = ActorContext(name="console", clock=WallClock(), settings=settings, publish=bus.publish)
    out = RichConsole(file=io.StringIO(), width=160, markup=False, highlight=False)
    ref = Console.start(context, out=out, interactive=False, terminal=False)
    bus.register("console", ref, Console.subscriptions())
    futures = [name for name, i in instruments.items() if i.kind == "future"]
    try:
        bus.publish(InstrumentsLoaded(currency="BTC", instruments=tuple(instruments.values()), at=0.0))
        bus.publish(ConnectionStatus(state=ConnectionState.SUBSCRIBED, venue="bench", at=0.0, can_trade=True))
        bus.publish(PortfolioChanged(currency="BTC", at=0.0, positions=(), open_orders=(), reconciled=True))
        flood = _tops(opts.messages, futures)
        ref.ask(GetStartup())
        start = time.perf_counter()
        for message in flood:
            bus.publish(message)
        ref.ask(GetStartup(), timeout=120)  # handled once the barrier behind them is answered
        absorb_rate = opts.messages / (time.perf_counter() - start)
        print(f"console absorbs {absorb_rate:,.0f} top-of-book messages/s", file=sys.stderr)

        # Type while a publisher streams at --rate: each line is an order (priced, published) or a table.
        stop = threading.Event()
        streamed = [0]

        def stream() -> None:
            interval = 1.0 / opts.rate
            batch = max(1, int(opts.rate / 1000))  # publish in small bursts, 1000 times a second
            next_at = time.perf_counter()
            i = 0
            while not stop.is_set():
                for _ in range(batch):
                    bus.publish(flood[i % len(flood)])
                    i += 1
                next_at += interval * batch
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            streamed[0] = i

        publisher = threading.Thread(target=stream, daemon=True)
        publisher.start()
        latencies: list[float] = []
        typed = ["as1 1000", "orders", "price", "a2", "positions"]
        deadline = time.perf_counter() + opts.seconds
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ref.ask(RunLine(typed[n % len(typed)]), timeout=30)
            latencies.append(time.perf_counter() - t0)
            n += 1
            time.sleep(0.02)
        stop.set()
        publisher.join()
        achieved = streamed[0] / opts.seconds
    finally:
        pykka.ActorRegistry.stop_all()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
    print(f"typing under {achieved:,.0f} msgs/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms", file=sys.stderr)
    return {
        "grammar_lines_per_s": round(grammar_rate),
        "console_absorbs_msgs_per_s": round(absorb_rate),
        "stream_msgs_per_s": round(achieved),
        "lines_typed": len(latencies),
        "line_latency_p50_ms": round(p50, 3),
        "line_latency_p99_ms": round(p99, 3),
        "line_latency_max_ms": round(latencies[-1] * 1000, 3),
    }
