"""Hedge latency: from the frame that pushes the mismatch past the band to the hedge order on the
socket, with the simulator streaming the full BTC and ETH chains.

The simulator runs in a subprocess (one core for it, one for the desk); the desk is the
program's own wiring (``main.actor_specs``: Connection, four BookKeepers, Portfolio,
SurfaceBuilder, Recorder on SQLite in a temporary directory, Hedger, Console) on the wall clock.
A plain JSON-RPC client of the bench's own buys at-the-money BTC calls, moves the index through
``simulator/set_index`` and reads the exchange's positions, tickers and perpetual book.

Two runs. The scripted path: the simulator's own index diffusion is off, the bench moves the
index by 0.15-0.6% at a time (each move requotes the whole chain at once: a burst of some 2,600
frames, the perpetual's first) and after each settle computes the mismatch from the exchange's
figures. The stream: the simulator's own diffusion (60% a year, jumps) moves the market in
50 ms steps and no scripted move is made; its hedges are triggered by ordinary frames.

The path measured is the program's own: the link thread decodes the frame and publishes it; the
Hedger handles market data immediately in that thread (so do the BookKeepers), decides, and
publishes the order, which the Connection also handles immediately: the frame that triggered a
hedge and the order it led to are read and written by the same thread, with no queue between.
While the link is idle (between the simulator's bursts) it warms that path up every
``deribit.warm_up_ms`` (the program's default; ``--warm-up-ms 0`` measures without). Figures are
reported against the issue's targets (``p50_to_target``, ``p99_to_target``).

Timing uses two probes that cost nothing when not installed: the Connection's
``latency_probe`` stamps each notification frame as it comes off the socket (perf_counter_ns,
before decoding) and each order frame right after it was written; the Hedger's ``order_probe``
names the message that triggered each order (called once the order went out). Latency =
send stamp - receive stamp of the frame that carried the trigger (for a BookKeeper's TopOfBook,
the frame of the quote it came from). Orders triggered by something other than a frame (a
settled fill, a control) are counted, not timed.

With ``--screen`` the same runs measure the cost of the full-screen console: the desk's screen
(:class:`console.screen.DeskScreen`, the program's own, asking the Console actor for a frame of
120x40 at its 4 Hz and drawing it into a VT100 output on ``/dev/null``) is switched on and off in
alternate blocks (``--screen-block`` scripted moves, ``--screen-block-s`` seconds of the stream),
and the figures of the blocks with it (``screen.on``) are set against those without
(``screen.off``), with their ratios; ``frame_ms_p50/p99``: how long a frame took to come from the
actor (its mailbox, then the panes that changed, rendered); ``screen_frames_per_s`` and
``screen_redraws_per_s``: frames applied and redraws made (a frame that changed nothing is not
redrawn).

    python -m bench latency [--moves 30] [--stream-s 40] [--updates-per-s 2.5] [--calls 3] [--warm-up-ms MS]
                            [--screen] --json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pykka

CLIENT_ID, CLIENT_SECRET = "desk", "desk-simulator-secret"
#: The issue's targets: the reference the figures are reported against.
TARGET_P50_US, TARGET_P99_US = 300.0, 2000.0
PERP = "BTC-PERPETUAL"


class Probe:
    """Receive stamps of the watched instruments' messages, trigger of each order, send stamps."""

    def __init__(self) -> None:
        self.watch: frozenset[str] = frozenset()
        self.frames = 0
        self.by_identity: dict[int, tuple[object, int]] = {}  # id(message) -> (message, t_ns)
        self.by_key: dict[tuple[str, int], int] = {}  # (instrument, exchange timestamp) -> t_ns
        self.recent: collections.deque[tuple[int, int, tuple[str, int]]] = collections.deque()
        self.triggers: dict[str, object] = {}
        self.received_ns: dict[str, int] = {}  # request_key -> receive stamp of its trigger's frame
        self.sent_ns: dict[str, int] = {}
        self.unmatched: list[tuple[str, object]] = []  # orders whose trigger's frame is not recorded yet

    # Connection link thread, after the frame's messages were published (and any order they led
    # to was written): recording them here is not counted in the latency it measures.
    def received(self, messages: tuple[object, ...], t_ns: int) -> None:
        self.frames += 1
        watch = self.watch
        for message in messages:
            name = getattr(message, "instrument_name", None)
            if name in watch:
                key = (name, getattr(message, "timestamp", 0))
                self.by_identity[id(message)] = (message, t_ns)
                self.by_key.setdefault(key, t_ns)
                self.recent.append((t_ns, id(message), key))
        # Forget what is older than 30 s (a trigger is handled within milliseconds).
        recent = self.recent
        horizon = t_ns - 30_000_000_000
        while recent and recent[0][0] < horizon:
            _, identity, key = recent.popleft()
            self.by_identity.pop(identity, None)
            self.by_key.pop(key, None)
        if self.unmatched:
            self.unmatched = [(key, trigger) for key, trigger in self.unmatched if not self._match(key, trigger)]

    # Connection actor thread.
    def sent(self, command: Any, t_ns: int) -> None:
        self.sent_ns.setdefault(command.request_key, t_ns)

    # Hedger thread.
    def on_order(self, order: Any, trigger: object) -> None:
        # Called once the order went out, while the frame that triggered it is still being
        # published: matched to that frame's stamp when the frame is recorded.
        key = order.request_key
        self.triggers[key] = trigger
        if not isinstance(trigger, str) and not self._match(key, trigger):
            self.unmatched.append((key, trigger))  # its frame is recorded once it was published

    def _match(self, key: str, trigger: object) -> bool:
        hit = self.by_identity.get(id(trigger))
        if hit is not None and hit[0] is trigger:
            self.received_ns[key] = hit[1]
            return True
        if type(trigger).__name__ == "TopOfBook":
            received = self.by_key.get((getattr(trigger, "instrument_name", ""), getattr(trigger, "timestamp", -1)))
            if received is not None:
                self.received_ns[key] = received
                return True
        return False

    def timing(self, request_key: str) -> tuple[int | None, str]:
        """(frame received -> order written, in ns, or None when not timed; what triggered it)."""
        trigger = self.triggers.get(request_key)
        sent = self.sent_ns.get(request_key)
        what = trigger if isinstance(trigger, str) else \
            f"{type(trigger).__name__} {getattr(trigger, 'instrument_name', '')}".strip()
        received = self.received_ns.get(request_key)
        if sent is None or received is None:
            return None, what
        return sent - received, what


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def _start_simulator(chain: str, updates_per_s: float, step_s: float, index_vol: float, jumps_per_year: float
                     ) -> tuple[subprocess.Popen[str], str]:
    """The chain served from a subprocess; index dynamics as given (0: only the bench moves it)."""
    settings = (f"SimSettings.for_account({CLIENT_ID!r}, {CLIENT_SECRET!r}, {{'BTC': 10.0, 'ETH': 100.0}}, "
                f"chain={chain!r}, updates_per_s={updates_per_s!r}, step_s={step_s!r}, index_vol={index_vol!r}, "
                f"jumps_per_year={jumps_per_year!r})")
    code = ("from simulator.cli import serve; from simulator.settings import SimSettings; "
            f"serve(0, 1, {settings})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("simulator listening on "):
        proc.kill()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


class Exchange:
    """The bench's own view of the simulator (not the desk's): trading and reading its state."""

    def __init__(self, url: str) -> None:
        from simulator.client import RpcClient

        self.rpc = RpcClient(url, timeout=10.0)
        self.rpc.login(CLIENT_ID, CLIENT_SECRET)

    def index(self) -> float:
        return float(self.rpc.result("public/get_index_price", {"index_name": "btc_usd"})["index_price"])

    def set_index(self, price: float) -> None:
        """Move the index without waiting for the answer: this thread is the desk's process's,
        and reading the answer during the burst it sets off would take the CPU from the desk
        (the next call skips the answer; ``index()`` confirms the move)."""
        self.rpc.send("simulator/set_index", {"currency": "BTC", "price": price})

    def deltas(self) -> tuple[float, float, float]:
        """(options delta, perpetual delta, one contract) in BTC."""
        book = self.rpc.result("public/get_order_book", {"instrument_name": PERP, "depth": 1})
        mid = 0.5 * (book["bids"][0][0] + book["asks"][0][0])
        options = hedge = 0.0
        for position in self.rpc.result("private/get_positions", {"currency": "BTC"}):
            if position["kind"] == "option":
                delta = self.rpc.result("public/ticker", {"instrument_name": position["instrument_name"]})["greeks"]
                options += position["size"] * delta["delta"]
            elif position["instrument_name"] == PERP:
                hedge += position["size"] / mid
        return options, hedge, 10.0 / mid

    def atm_call(self, min_days: float) -> str:
        from deribit.instruments import parse_instrument_name

        index = self.index()
        now_ms = time.time() * 1000
        calls = [parse_instrument_name(i["instrument_name"]) for i in
                 self.rpc.result("public/get_instruments", {"currency": "BTC", "kind": "option"})
                 if i["option_type"] == "call"]
        eligible = [c for c in calls if (c.expiry_ms or 0) - now_ms > min_days * 86_400_000]
        expiry = min(c.expiry_ms or 0 for c in eligible)
        return min((c for c in eligible if c.expiry_ms == expiry), key=lambda c: abs((c.strike or 0) - index)).name


def _wait(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")


class Session:
    """One simulator subprocess and the whole desk on it, with BTC calls bought and hedging on."""

    def __init__(self, opts: argparse.Namespace, index_vol: float, jumps_per_year: float) -> None:
        import actors.connection as connection_module
        import actors.hedger as hedger_module
        import main
        from config.settings import load_settings
        from messages.hedging import HedgerControl
        from runtime.clock import WallClock
        from runtime.logs import setup_logging

        self.probe = Probe()
        self._modules = (connection_module, hedger_module)
        self.supervisor: Any = None
        self.stop_event = threading.Event()
        self.proc, self.url = _start_simulator(opts.chain, opts.updates_per_s, opts.step_s, index_vol,
                                               jumps_per_year)
        print(f"simulator at {self.url}: {opts.chain} chain, {opts.updates_per_s:g} updates/instrument/s, "
              f"index vol {index_vol:g}", file=sys.stderr)
        connection_module.latency_probe = self.probe
        hedger_module.order_probe = self.probe.on_order
        workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
        self.settings = load_settings(environ={}, cwd=workdir, overrides={
            "deribit.client_id": CLIENT_ID, "deribit.client_secret": CLIENT_SECRET, "data_dir": str(workdir),
            "logging.dir": str(workdir / "logs"), "hedger.currencies": ["BTC"],
            # The scripted path moves the market every second or two: room for an order per move.
            "hedger.max_orders_per_minute": 120,
            **({"deribit.warm_up_ms": opts.warm_up_ms} if opts.warm_up_ms is not None else {})})
        setup_logging(self.settings.logging.dir, "info", console=False, secrets=self.settings.secrets())
        specs = [spec for spec in main.actor_specs(self.settings, url=self.url) if spec.name not in opts.skip_actor]
        if opts.screen:
            specs = [_console_without_terminal(spec) for spec in specs]
        self.supervisor = main.make_supervisor(self.settings, specs, WallClock())
        self.supervisor.start()
        threading.Thread(target=self.supervisor.run, kwargs={"until": self.stop_event}, daemon=True).start()
        _wait(lambda: self.portfolio().reconciled, 60, "the desk to connect and reconcile")
        self.exchange = Exchange(self.url)
        call = self.exchange.atm_call(min_days=3)
        self.exchange.rpc.result("private/buy", {"instrument_name": call, "amount": opts.calls, "type": "market",
                                                 "label": "bench-calls"})
        _wait(lambda: any(p.instrument_name == call for p in self.portfolio().positions), 30, "the option position")
        self.probe.watch = frozenset({call, PERP})
        print(f"bought {opts.calls:g} {call}; letting the subscriptions settle", file=sys.stderr)
        time.sleep(3.0)
        self.supervisor.bus.publish(HedgerControl(action="activate", origin="bench", currency="BTC"))
        # A first order above hedger.confirm_above_usd waits for the plan it states to be confirmed.

        def answered() -> Any:
            status = self.hedger_status()
            return status if status.active or status.plan is not None else None

        status = _wait(answered, 10, "hedging on, or the plan it states")
        if status.plan is not None:
            self.supervisor.bus.publish(HedgerControl(action="confirm", origin="bench", currency="BTC",
                                                      plan_id=status.plan.plan_id))
            _wait(lambda: self.hedger_status().active, 10, "the plan confirmed")
        self.settle()
        self.frames0, self.t0, self.cpu0 = self.probe.frames, time.perf_counter(), time.process_time()
        self.first = len(self.probe.triggers)

    def portfolio(self) -> Any:
        from actors.portfolio import GetPortfolio

        return self.supervisor.refs()["portfolio"].ask(GetPortfolio(), timeout=10)["BTC"]

    def hedger_status(self) -> Any:
        from messages.hedging import HedgerControl

        [status] = self.supervisor.refs()["hedger"].ask(
            HedgerControl(action="status", origin="bench", currency="BTC"), timeout=10)
        return status

    def settle(self, timeout_s: float = 10.0) -> None:
        """Until the hedger has nothing in flight, is not pausing after a rejection (a market
        order the simulator's thin book left unfilled) and sent nothing for 0.3 s."""
        time.sleep(0.2)
        deadline = time.monotonic() + timeout_s
        quiet = 0
        sent = len(self.probe.triggers)
        while time.monotonic() < deadline:
            status = self.hedger_status()
            if status.phase == "idle" and status.code != "cooldown" and len(self.probe.triggers) == sent:
                quiet += 1
                if quiet >= 3:
                    return
            else:
                quiet = 0
            sent = len(self.probe.triggers)
            time.sleep(0.1)
        raise RuntimeError(f"the hedger did not settle within {timeout_s:g} s: {self.hedger_status()}")

    def figures(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        return {"keys": list(self.probe.triggers)[self.first:], "probe": self.probe,
                "frames_per_s": (self.probe.frames - self.frames0) / elapsed,
                "desk_cpu_per_s": (time.process_time() - self.cpu0) / elapsed, "seconds": elapsed}

    def close(self) -> None:
        from runtime.logs import shutdown_logging

        self.stop_event.set()
        try:
            if self.supervisor is not None:
                self.supervisor.stop(reason="bench finished")
        finally:
            for module in self._modules:
                for hook in ("latency_probe", "order_probe"):
                    if hasattr(module, hook):
                        setattr(module, hook, None)
            try:  # anything the supervisor could not stop in time (an actor stopping as we ask can hang stop_all)
                pykka.ActorRegistry.stop_all(timeout=5)
            except pykka.Timeout:
                print("some actors did not stop within 5 s", file=sys.stderr)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutdown_logging()


def _console_without_terminal(spec: Any) -> Any:
    """The Console actor with no terminal thread (the bench's screen asks it for frames)."""
    from actors.console import Console
    from runtime.supervisor import ActorSpec

    if spec.name != "console":
        return spec
    return ActorSpec("console", lambda ctx: Console.start(ctx, stdin=io.StringIO(), interactive=False,
                                                          terminal=False))


class _ScreenBackend:
    """The screen's questions, put to the Console actor as the terminal thread puts them."""

    def __init__(self, session: Session, asked_ms: list[float]) -> None:
        self.session = session
        self.asked_ms = asked_ms  # how long each frame took to come (the actor renders it)

    def frame(self, width: int, height: int) -> Any:
        from console.terminal import GetScreenFrame

        started = time.perf_counter()
        frame = self.session.supervisor.refs()["console"].ask(GetScreenFrame(width, height), timeout=10)
        self.asked_ms.append((time.perf_counter() - started) * 1000)
        return frame

    def move_focus(self, move: Any) -> None:
        from console.terminal import MoveChainFocus

        self.session.supervisor.refs()["console"].ask(MoveChainFocus(move), timeout=10)

    def enter(self, text: str) -> bool:
        return False

    def prompt(self) -> str:
        return "bench> "

    def failed(self, what: str, error: BaseException) -> None:
        print(f"screen: {what} failed: {error!r}", file=sys.stderr)


class ScreenPhases:
    """The desk's full screen (the program's own :class:`~console.screen.DeskScreen`, 120x40 into
    a VT100 output on /dev/null, at its 4 Hz) switched on and off in blocks; what each block saw."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.blocks: list[dict[str, Any]] = []
        self.frame_ms: list[float] = []
        self._mark: tuple[bool, int, int, float, int, int] | None = None
        self._screen: Any = None
        self._thread: threading.Thread | None = None
        self._devnull = open(os.devnull, "w")  # noqa: SIM115  # closed in close()

    def _start(self) -> None:
        from prompt_toolkit.data_structures import Size
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output.vt100 import Vt100_Output

        from console.screen import DeskScreen
        from console.screen_frame import MessageLog
        from console.terminal import Choices, CommandCompleter

        class NoChoices:
            choices = Choices((), (), None, None)
            asking_instrument = False

        inputs = contextlib.ExitStack()
        pipe = inputs.enter_context(create_pipe_input())
        output = Vt100_Output(self._devnull, lambda: Size(rows=40, columns=120), term="xterm", enable_cpr=False)
        screen = DeskScreen(_ScreenBackend(self.session, self.frame_ms), MessageLog(), InMemoryHistory(),
                            CommandCompleter(NoChoices()), input=pipe, output=output)

        def run() -> None:
            try:
                screen.run()
            except EOFError:
                pass
            finally:
                inputs.close()

        self._screen = screen
        self._thread = threading.Thread(target=run, name="bench-screen", daemon=True)
        self._thread.start()
        _wait(lambda: screen.frames > 0, 10, "the screen's first frame")

    def _stop(self) -> None:
        if self._screen is not None and self._thread is not None:
            self._screen.close()
            self._thread.join(timeout=5)
        self._screen = self._thread = None

    def begin(self, on: bool) -> None:
        if on:
            self._start()
        probe = self.session.probe
        self._mark = (on, len(probe.triggers), probe.frames, time.perf_counter(),
                      self._screen.frames if self._screen is not None else 0,
                      self._screen.redraws if self._screen is not None else 0)

    def end(self) -> None:
        assert self._mark is not None
        on, keys0, frames0, t0, asked0, drawn0 = self._mark
        probe = self.session.probe
        self.blocks.append({"on": on, "keys": list(probe.triggers)[keys0:], "frames": probe.frames - frames0,
                            "seconds": time.perf_counter() - t0,
                            "screen_frames": (self._screen.frames - asked0) if self._screen is not None else 0,
                            "screen_redraws": (self._screen.redraws - drawn0) if self._screen is not None else 0})
        self._mark = None
        if on:
            self._stop()

    def close(self) -> None:
        if self._mark is not None:
            self.end()
        self._stop()
        self._devnull.close()


def screen_figures(probe: Probe, blocks: list[dict[str, Any]], frame_ms: list[float]) -> dict[str, Any]:
    """The blocks with the screen against those without: latency, frames/s, and their ratios;
    how long a screen frame took to come from the actor (``frame_ms``)."""
    out: dict[str, Any] = {"frame_ms_p50": round(_percentile(frame_ms, 50), 2),
                           "frame_ms_p99": round(_percentile(frame_ms, 99), 2)}
    for name, on in (("on", True), ("off", False)):
        chosen = [b for b in blocks if b["on"] is on]
        seconds = sum(b["seconds"] for b in chosen)
        figures = stats(probe, [k for b in chosen for k in b["keys"]])
        out[name] = {"p50_us": figures["p50_us"], "p99_us": figures["p99_us"], "max_us": figures["max_us"],
                     "timed_orders": figures["timed_orders"], "blocks": len(chosen), "seconds": round(seconds, 1),
                     "frames_per_s": round(sum(b["frames"] for b in chosen) / seconds) if seconds else None}
        if on:
            for key in ("screen_frames", "screen_redraws"):
                out[name][f"{key}_per_s"] = round(sum(b[key] for b in chosen) / seconds, 2) if seconds else None

    def ratio(key: str) -> float | None:
        on, off = out["on"][key], out["off"][key]
        return round(on / off, 3) if on is not None and off and on == on and off == off else None

    out["p50_ratio"], out["p99_ratio"], out["frames_per_s_ratio"] = (ratio("p50_us"), ratio("p99_us"),
                                                                     ratio("frames_per_s"))
    return out


def scripted_path(session: Session, moves: int, pause_s: float, seed: int,
                  screen: ScreenPhases | None = None, block: int = 3) -> tuple[list[float], float]:
    """Index moves of 0.15-0.6%, each a burst of the whole chain requoted (the perpetual's frames
    first); after each settle, the mismatch from the exchange's own figures."""
    rng = random.Random(seed)
    exchange = session.exchange
    price = start = exchange.index()
    mismatches: list[float] = []
    contract = 0.0
    for n in range(moves):
        if screen is not None and n % block == 0:
            if n:
                screen.end()
            screen.begin(on=(n // block) % 2 == 0)
        size = rng.uniform(0.15, 0.6) / 100.0
        # Biased back toward the start, so that the path oscillates.
        direction = -1.0 if price > start * 1.004 else 1.0 if price < start * 0.996 else rng.choice((-1.0, 1.0))
        price = exchange.index() * (1.0 + direction * size)
        exchange.set_index(price)
        time.sleep(pause_s)
        moved = exchange.index()
        if abs(moved - price) > 0.01:  # the simulator keeps cents
            raise RuntimeError(f"the simulator's index is {moved}, not the {price} the bench set")
        session.settle()
        status = session.hedger_status()
        options, hedge, contract = exchange.deltas()
        mismatches.append(abs(options + hedge))
        print(f"move {n + 1}/{moves}: {direction * size * 100:+.2f}% -> {price:.1f}; "
              f"orders {len(session.probe.triggers) - session.first}; options {options:+.5f} hedge {hedge:+.5f} "
              f"= {options + hedge:+.5f} (the hedger's {status.options_delta:+.5f} {status.hedge_delta:+.5f})",
              file=sys.stderr)
    return mismatches, contract


def stats(probe: Probe, keys: list[str]) -> dict[str, Any]:
    total: list[float] = []
    untimed: collections.Counter[str] = collections.Counter()
    triggers: collections.Counter[str] = collections.Counter()
    for key in keys:
        sent, what = probe.timing(key)
        triggers[what] += 1
        if sent is None:
            untimed[what] += 1
        else:
            total.append(sent / 1000.0)
    return {
        "p50_us": round(_percentile(total, 50), 1),
        "p99_us": round(_percentile(total, 99), 1),
        "max_us": round(max(total), 1) if total else None,
        "mean_us": round(statistics.fmean(total), 1) if total else None,
        "orders": len(keys),
        "timed_orders": len(total),
        "untimed_orders": dict(untimed),
        "triggers": dict(triggers),
    }


def run(args: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench latency")
    parser.add_argument("--moves", type=int, default=30, help="scripted index moves")
    parser.add_argument("--pause-s", type=float, default=1.0, help="time between moves")
    parser.add_argument("--stream-s", type=float, default=40.0,
                        help="seconds of the second run: the simulator's own index diffusion, no scripted moves")
    parser.add_argument("--updates-per-s", type=float, default=2.5, help="simulator updates per instrument per s")
    parser.add_argument("--step-s", type=float, default=0.05, help="simulator market step")
    parser.add_argument("--skip-actor", action="append", default=[], metavar="NAME",
                        help="leave this actor of main.actor_specs out (diagnosis; repeatable)")
    parser.add_argument("--chain", choices=("full", "small"), default="full",
                        help="small: a few instruments, to see the floor without the stream's load")
    parser.add_argument("--calls", type=float, default=3.0, help="BTC of at-the-money calls to hedge")
    parser.add_argument("--switch-interval-us", type=float, default=None,
                        help="sys.setswitchinterval for this run (default: Python's, 5000)")
    parser.add_argument("--warm-up-ms", type=float, default=None,
                        help="deribit.warm_up_ms for this run (default: the program's; 0: no warm-ups)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--screen", action="store_true",
                        help="also measure with the desk's full screen running: on and off in alternate blocks")
    parser.add_argument("--screen-block", type=int, default=3, help="--screen: scripted moves per block")
    parser.add_argument("--screen-block-s", type=float, default=5.0, help="--screen: seconds of the stream per block")
    opts = parser.parse_args(args)
    if opts.screen and "console" in opts.skip_actor:
        parser.error("--screen needs the console actor: do not skip it")
    if sys.stdin.isatty() and "console" not in opts.skip_actor and not opts.screen:
        # The console would take over this terminal; it is not on the hot path.
        print("leaving the console out: standard input is a terminal", file=sys.stderr)
        opts.skip_actor.append("console")
    if opts.switch_interval_us:
        sys.setswitchinterval(opts.switch_interval_us / 1e6)

    # Run 1: the scripted path on a market that only the bench moves, so that the mismatch after
    # each settle measures the hedger, not the market's drift while the bench reads it.
    session = Session(opts, index_vol=0.0, jumps_per_year=0.0)
    path_screen = ScreenPhases(session) if opts.screen else None
    try:
        mismatches, contract = scripted_path(session, opts.moves, opts.pause_s, opts.seed, path_screen,
                                             opts.screen_block)
        if path_screen is not None:
            path_screen.close()
        path = session.figures()
        band = session.settings.hedger.max_delta_mismatch
        warm_up_ms = session.settings.deribit.warm_up_ms
    finally:
        if path_screen is not None:
            path_screen.close()
        session.close()
    # Run 2: the simulator's own index diffusion (60% a year, jumps), no scripted moves: the
    # hedges are triggered by ordinary frames of the stream rather than at the head of a burst.
    stream: dict[str, Any] | None = None
    stream_screen: ScreenPhases | None = None
    if opts.stream_s > 0:
        session = Session(opts, index_vol=0.6, jumps_per_year=25.0)
        stream_screen = ScreenPhases(session) if opts.screen else None
        try:
            print(f"streaming {opts.stream_s:g} s", file=sys.stderr)
            if stream_screen is None:
                time.sleep(opts.stream_s)
            else:
                end, on = time.monotonic() + opts.stream_s, True
                while time.monotonic() < end:
                    stream_screen.begin(on)
                    time.sleep(max(0.0, min(opts.screen_block_s, end - time.monotonic())))
                    stream_screen.end()
                    on = not on
            session.settle()
            stream = session.figures()
        finally:
            if stream_screen is not None:
                stream_screen.close()
            session.close()

    path_stats = stats(path["probe"], path["keys"])
    stream_stats = stats(stream["probe"], stream["keys"]) if stream else None
    merged = Probe()
    for figures in (path, stream):
        if figures is not None:
            for attribute in ("triggers", "received_ns", "sent_ns"):
                getattr(merged, attribute).update(getattr(figures["probe"], attribute))
    everything = stats(merged, path["keys"] + (stream["keys"] if stream else []))
    runs = [f for f in (path, stream) if f is not None]
    screen: dict[str, Any] | None = None
    if opts.screen:
        assert path_screen is not None
        screen = {"path": screen_figures(path["probe"], path_screen.blocks, path_screen.frame_ms)}
        if stream is not None and stream_screen is not None:
            screen["stream"] = screen_figures(stream["probe"], stream_screen.blocks, stream_screen.frame_ms)
            screen.update(screen_figures(merged, path_screen.blocks + stream_screen.blocks,
                                         path_screen.frame_ms + stream_screen.frame_ms))
            # frames/s: the stream's alone (the scripted path's frames come in bursts it sets off).
            screen["frames_per_s_ratio"] = screen["stream"]["frames_per_s_ratio"]
        else:
            screen.update(screen["path"])
    return {
        **({"screen": screen} if screen is not None else {}),
        **everything,
        "p50_to_target": round(everything["p50_us"] / TARGET_P50_US, 3),
        "p99_to_target": round(everything["p99_us"] / TARGET_P99_US, 3),
        "target_p50_us": TARGET_P50_US,
        "target_p99_us": TARGET_P99_US,
        "path": path_stats,
        "stream": stream_stats,
        "moves": opts.moves,
        "stream_s": opts.stream_s,
        "frames_per_s": round(min(f["frames_per_s"] for f in runs)),
        # CPU seconds per second of the desk's process (the simulator's is not counted).
        "desk_cpu_per_s": round(max(f["desk_cpu_per_s"] for f in runs), 2),
        "switch_interval_us": round(sys.getswitchinterval() * 1e6),
        "warm_up_ms": warm_up_ms,
        "skipped_actors": opts.skip_actor,
        "max_abs_mismatch_after_settle": round(max(mismatches), 6),
        "band": band,
        "one_contract": round(contract, 8),
        "within_band_plus_contract": max(mismatches) <= band + contract,
    }
