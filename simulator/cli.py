"""Command line of the simulator: ``python main.py simulator [...]`` hands its arguments here.

- ``serve(port, seed, settings)``: serve on ``ws://127.0.0.1:PORT/ws/api/v2`` until interrupted; the
  first stdout line is ``simulator listening on URL`` (scripts and benchmarks read the port from it).
- ``generate_wire_log(...)``: see :mod:`simulator.generate`.
- ``run_simulator_cli(argv)``: both behind one argument parser; returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
import time

from simulator.generate import GENERATE_UPDATES_PER_S, generate_wire_log
from simulator.server import SimulatorServer
from simulator.settings import SimAccount, SimSettings


def serve(port: int = 0, seed: int = 1, settings: SimSettings | None = None, host: str = "127.0.0.1") -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM."""
    st = settings or SimSettings()

    async def main() -> None:
        server = SimulatorServer(seed, st)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, server.shutdown)
        task = asyncio.create_task(server.run(host, port))
        await server.wait_ready()
        print(f"simulator listening on {server.url}", flush=True)
        await task

    asyncio.run(main())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py simulator", description="A local Deribit (websocket JSON-RPC).")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chain", choices=("full", "small"), default="full", help="listing size")
    p.add_argument("--updates-per-s", type=float, default=None, help="book/ticker updates per instrument per second")
    p.add_argument("--step-s", type=float, default=None, help="market step in seconds")
    p.add_argument("--client-id", default=None, help="the default account's client id")
    p.add_argument("--client-secret", default=None, help="the default account's client secret")
    p.add_argument("--generate", metavar="FILE", default=None, help="write a wire log instead of serving")
    p.add_argument("--minutes", type=float, default=3.0, help="length of the generated log")
    p.add_argument("--start", type=float, default=None, help="virtual clock start (unix seconds)")
    return p


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    st = SimSettings(chain=args.chain)
    if args.updates_per_s is not None:
        st = dataclasses.replace(st, updates_per_s=args.updates_per_s)
    if args.step_s is not None:
        st = dataclasses.replace(st, step_s=args.step_s)
    if args.client_id or args.client_secret:
        acc = SimAccount()
        acc = dataclasses.replace(
            acc,
            client_id=args.client_id or acc.client_id,
            client_secret=args.client_secret or acc.client_secret,
        )
        st = dataclasses.replace(st, accounts=(acc,))
    return st


def run_simulator_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    st = settings_from_args(args)
    if args.generate:
        t0 = time.perf_counter()
        rate = args.updates_per_s if args.updates_per_s is not None else GENERATE_UPDATES_PER_S
        counts = generate_wire_log(args.generate, args.minutes, args.seed, args.start, st, rate)
        took = time.perf_counter() - t0
        print(
            f"wrote {counts['frames']} frames for {counts['instruments']} instruments "
            f"({args.minutes:g} virtual minutes) to {args.generate} in {took:.1f} s",
            file=sys.stderr,
        )
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.seed, st, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(run_simulator_cli(sys.argv[1:]))
