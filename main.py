"""Command line and the wiring of the actors: the one place that knows them all.

    python main.py [run] [options]         the desk (default: embedded simulator, SQLite)
    python main.py replay FILE [options]   drive the actors from a wire log on the replay clock
    python main.py simulator [options]     serve the local Deribit alone, or --generate a wire log
    python main.py config show             the effective settings, secrets masked
    python main.py archive --before DATE   old days to Parquet, then out of the database
    python main.py export --from D --to D --currency C --what quotes|surface|index --out DIR

Exit status: 0 a clean session; 1 a piped session with refused or rejected lines, an unreachable
venue at start-up, or a stop on a failure; 2 bad settings or arguments (an unlisted --instrument).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from config.settings import (
    Settings,
    SettingsError,
    credential_refusal,
    load_settings,
    render_toml,
    settings_as_dict,
)

if TYPE_CHECKING:
    import pykka

    from deribit.shutdown_check import Findings
    from runtime.clock import Clock
    from runtime.supervisor import ActorFactory, ActorSpec, Supervisor, TooManyRestarts
    from simulator import Simulator

COMMANDS = ("run", "replay", "simulator", "plot", "config", "archive", "export")
#: What ``--help`` says of the exit statuses (the README's table says the same).
EXIT_STATUSES = """exit status:
  0  a clean session (quit, end of piped input, a signal)
  1  a piped session had refused or rejected lines (a line the console refused, an order the
     exchange rejected, a line that failed); the venue was not reachable within the start-up
     timeout (console.startup_timeout_s); the desk stopped on a failure; a replay with bad lines
  2  bad settings or arguments, an unlisted --instrument among them"""
ARCHIVE_EXIT_STATUSES = """exit status:
  0  done (also when there was nothing to write)
  1  the database cannot be read, holds another schema version, or a file's rows differ from the
     database's (nothing removed)
  2  bad arguments or settings: a date that is not YYYY-MM-DD, --before after today, --to before
     --from, a database file that does not exist, an --out directory that cannot be written"""
BOOK_KINDS: tuple[Literal["option", "future"], ...] = ("option", "future")


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (file < environment < these flags)")
    group.add_argument("--config", metavar="FILE", help="settings file (default ./settings.toml if present)")
    group.add_argument("--venue", choices=("simulator", "testnet", "mainnet"),
                       help="where to connect (default: the embedded simulator)")
    group.add_argument("--live", action="store_true", default=None, help="allow trading on mainnet")
    group.add_argument("--paper", action="store_true", default=None, help="print orders instead of sending them")
    group.add_argument("--db", metavar="URL", help="database URL (default SQLite in data/)")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    group.add_argument("--currencies", metavar="LIST", help="comma-separated, e.g. BTC,ETH")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="any setting by dotted key, e.g. --set deribit.heartbeat_s=5 (repeatable)")


def _add_run_settings_options(parser: argparse.ArgumentParser) -> None:
    """The settings only `run` uses; `config show` takes them too, so it shows (and refuses) what
    the same `run` command line would."""
    parser.add_argument("--venue-url", metavar="URL",
                        help="connect to this websocket URL of a Deribit-compatible venue, e.g. a simulator "
                             "started with `main.py simulator --port 8765`: ws://127.0.0.1:8765/ws/api/v2 "
                             "(--venue still says what the venue is)")
    parser.add_argument("--record-wire", metavar="FILE", help="write every frame to FILE (JSON Lines, auth redacted)")
    parser.add_argument("--instrument", metavar="NAME", help="the future the console trades, e.g. BTC-PERPETUAL "
                                                             "(default: chosen at start-up)")
    parser.add_argument("--size-multiplier", metavar="X",
                        help="the console's amount multiplier, e.g. 10: a2 buys 20 USD (default: asked at start-up)")
    parser.add_argument("--plain", action="store_true", default=None,
                        help="on a terminal, the line console instead of the full-screen desk (console.plain)")


def _replay_speed(text: str) -> float | None:
    """``--speed``: None for max (as fast as possible), else a finite factor above 0."""
    import math

    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and speed > 0):
        raise argparse.ArgumentTypeError(f"expected max or a finite factor above 0 such as 10, got {text!r}")
    return speed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="A Deribit options desk: live books, IV surface recorder, delta hedger, console.",
        epilog=f"`python main.py [options]` is `python main.py run [options]`.\n\n{EXIT_STATUSES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the desk (the default command)",
                         description="Run the desk: connect, keep the books, record, hedge, take commands.",
                         epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_settings_options(run)
    _add_run_settings_options(run)

    replay = sub.add_parser("replay", help="drive the actors from a wire log",
                            description="Replay a wire log through the same decoder and actors on the replay "
                                        "clock; requests are logged, not sent. Prints one JSON summary line.")
    replay.add_argument("file", metavar="FILE", help="wire log (JSON Lines: t, dir, frame)")
    replay.add_argument("--speed", default=None, type=_replay_speed, metavar="max|N",
                        help="max (as fast as possible, the default) or a finite factor N above 0")
    replay.add_argument("--strict", action="store_true",
                        help="stop at the first bad line (default: count it, skip it and replay the rest)")
    _add_settings_options(replay)

    simulator = sub.add_parser("simulator", help="serve the local Deribit alone, or generate a wire log",
                               description="A local Deribit. Options are those of the simulator; see "
                                           "`main.py simulator --help`.", add_help=False)
    simulator.add_argument("args", nargs=argparse.REMAINDER)  # listed here; main() hands them over

    plot = sub.add_parser("plot", help="draw a smile, the surface or the ATM term structure from the database",
                          description="Draw one recorded minute (the latest, or the latest at or before --at) "
                                      "from the database into a PNG. A minute that is incomplete or has no "
                                      "surface is refused (status 2) with the nearest complete minute named.")
    plot.add_argument("--what", required=True, choices=("smile", "surface", "term", "scenario"),
                      help="smile: bid, ask and mark vols and the fit against strike and delta, per expiry; "
                           "surface: the grid as a heatmap, extrapolated cells hatched; term: ATM term "
                           "structure per expiry and on the grid, the 30-day variance index and DVOL; "
                           "scenario: the console's scenario grid in --grid (PnL over move and vol shift)")
    plot.add_argument("--currency", type=str.upper, help="BTC or ETH (every kind but scenario)")
    plot.add_argument("--grid", metavar="FILE.json", help="scenario only: the grid the console's plot scenario "
                                                          "wrote (under DATA_DIR/plots/)")
    plot.add_argument("--at", metavar="TIME", help="UTC time, ISO 8601 (2021-07-22T22:43) or unix seconds")
    plot.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")
    plot.add_argument("--size", metavar="WxH", help="pixels (default 1200x800; a scenario 1400x700)")
    plot.add_argument("--expiry", metavar="DDMMMYY", help="smile only: that expiry alone (26DEC26)")
    _add_settings_options(plot)

    archive = sub.add_parser(
        "archive", help="write the days before a date to Parquet, verify, then remove them from the database",
        description="Write every recorded day before --before (UTC), every currency, to Parquet (zstd, "
                    "<out>/<dataset>/currency=C/date=D/part-0.parquet: quotes, surface_points, surface_fits, "
                    "volatility_index, minute_coverage), check each file's rows against the database, then "
                    "remove the day from the database (PostgreSQL: its partitions are detached and dropped). "
                    "Interrupted, it leaves the database whole; run it again.",
        epilog=ARCHIVE_EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    archive.add_argument("--before", required=True, metavar="DATE", help="UTC date (2026-12-01): days before it go")
    archive.add_argument("--out", metavar="DIR", help="the archive (default: recorder.archive_dir, "
                                                      "else <data_dir>/archive)")
    _add_settings_options(archive)

    export = sub.add_parser(
        "export", help="write days of the record to Parquet (nothing removed)",
        description="Write --what of --currency for each recorded day from --from to --to (UTC dates, both "
                    "included) to Parquet in the archive's layout, from SQLite or PostgreSQL; nothing is removed.",
        epilog=ARCHIVE_EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--from", dest="first", required=True, metavar="DATE", help="first UTC date (2026-12-01)")
    export.add_argument("--to", dest="last", required=True, metavar="DATE", help="last UTC date, included")
    export.add_argument("--currency", required=True, type=str.upper, help="BTC or ETH")
    export.add_argument("--what", required=True, choices=("quotes", "surface", "index"),
                        help="quotes: the option-minutes; surface: grid points and fits; index: the variance "
                             "index with DVOL, and each minute's coverage")
    export.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    _add_settings_options(export)

    config = sub.add_parser("config", help="settings", description="Inspect the settings.")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser("show", help="print the effective settings with secrets masked",
                                 description="Print the effective settings (TOML) with secrets masked; "
                                             "it refuses what `run` with the same options refuses.")
    _add_settings_options(show)
    _add_run_settings_options(show)
    return parser


# The flags that set one setting each: (argparse attribute, dotted key, the flag as typed).
_FLAG_KEYS = (
    ("venue", "venue", "--venue"), ("live", "live", "--live"), ("paper", "paper", "--paper"),
    ("db", "database.url", "--db"), ("log_level", "logging.level", "--log-level"),
    ("currencies", "currencies", "--currencies"), ("record_wire", "deribit.record_wire", "--record-wire"),
    ("venue_url", "deribit.url", "--venue-url"),
    ("instrument", "console.instrument", "--instrument"), ("size_multiplier", "console.size_multiplier",
                                                           "--size-multiplier"),
    ("plain", "console.plain", "--plain"),
)


def command_line_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the command line gives (dotted key: value) and the flag each came from."""
    out: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--set {_shown(item, item)!r}: expected KEY=VALUE, e.g. --set deribit.heartbeat_s=5")
        refusal = credential_refusal(key.strip())
        if refusal is not None:
            raise SettingsError(f"command line (--set {key.strip()}): {refusal}")
        out[key.strip()] = value.strip()
        flags[key.strip()] = f"--set {key.strip()}={_shown(key.strip(), value.strip())}"
    for attribute, key, flag in _FLAG_KEYS:
        given = value = getattr(args, attribute, None)
        if given is None or given is False or given == "":
            continue
        if attribute == "currencies":
            value = [c.strip().upper() for c in given.split(",") if c.strip()]
        elif attribute == "instrument":
            value = given.strip().upper()
        elif attribute == "size_multiplier":
            value = _size_multiplier_flag(given)
        out[key] = value
        flags[key] = flag if given is True else f"{flag} {_shown(key, str(given))}"
    return out, flags


def _size_multiplier_flag(text: str) -> float:
    """``--size-multiplier X`` read as the console reads the multiplier (ASCII digits, above 0, at
    most the maximum); refused as a settings error, like any bad flag."""
    from console.grammar import ParseError, parse_size_multiplier

    parsed = parse_size_multiplier(text)
    if isinstance(parsed, ParseError):
        raise SettingsError(f"command line (--size-multiplier {text}): console.size_multiplier: {parsed}")
    return parsed


def _shown(key: str, value: str) -> str:
    """A flag's value as an error message may show it: no secret, no database password."""
    from config.settings import SHOWN_CHARS
    from runtime.secrets import clip, mask_url, mask_value

    return clip(str(mask_value(key, mask_url(value))), SHOWN_CHARS)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return command_line_settings(args)[0]


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides, flags = command_line_settings(args)
    return load_settings(getattr(args, "config", None), overrides=overrides, flags=flags)


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """`main.py [options]` means `main.py run [options]`."""
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        return ["run", *argv]
    return argv


# -- the wiring --------------------------------------------------------------------------------
def actor_specs(settings: Settings, *, url: str | None = None, replay_file: str | None = None,
                replay_speed: float | None = None, replay_strict: bool = False,
                stopping: threading.Event | None = None) -> list[ActorSpec]:
    """Every actor of the program, in start order (stopped in reverse). The Connection starts
    first and stops last, so that orders cancelled on the way out still reach the exchange.
    ``stopping``: the supervisor's stop signal (:func:`make_supervisor`), which cuts the
    Recorder's write in flight short."""
    from actors.assistant import Assistant
    from actors.bookkeeper import BookKeeper
    from actors.connection import Connection
    from actors.console import Console
    from actors.hedger import Hedger
    from actors.portfolio import Portfolio
    from actors.recorder import Recorder
    from actors.surface_builder import SurfaceBuilder
    from runtime.supervisor import ActorSpec

    def books(currency: str, kind: Literal["option", "future"]) -> ActorFactory:
        return lambda ctx: BookKeeper.start(ctx, currency=currency, kind=kind)

    return [
        ActorSpec("connection", lambda ctx: Connection.start(ctx, url=url, replay_file=replay_file,
                                                             replay_speed=replay_speed, replay_strict=replay_strict)),
        # The hedger is on the bus before the others: it is the first to hear a ticker.
        ActorSpec("hedger", lambda ctx: Hedger.start(ctx)),
        # Works confirmed exposure plans (post-only option orders labelled plan-<n>-<leg>).
        ActorSpec("assistant", lambda ctx: Assistant.start(ctx)),
        *(ActorSpec(f"books-{currency}-{kind}", books(currency, kind))
          for currency in settings.currencies for kind in BOOK_KINDS),
        ActorSpec("portfolio", lambda ctx: Portfolio.start(ctx)),
        # The recorder starts before the surface builder so that it stops after it: the last
        # minute built on the way out is still written (or spooled).
        ActorSpec("recorder", lambda ctx: Recorder.start(ctx, stopping=stopping)),
        ActorSpec("surface_builder", lambda ctx: SurfaceBuilder.start(ctx)),
        # The console owns standard input; a replay has none (its stdout is the JSON summary).
        *([ActorSpec("console", lambda ctx: Console.start(ctx))] if replay_file is None else []),
    ]


def make_supervisor(settings: Settings, specs: list[ActorSpec], clock: Clock, replay: bool = False,
                    url: str | None = None, stopping: threading.Event | None = None) -> Supervisor:
    """The supervisor of ``specs``; after a fatal failure it makes the account at ``url`` safe
    (:func:`make_account_safe`)."""
    from runtime.bus import Bus
    from runtime.supervisor import RestartPolicy, Supervisor

    sup = settings.supervisor
    return Supervisor(
        specs, bus=Bus(), clock=clock, settings=settings, replay=replay,
        policy=RestartPolicy(sup.backoff_initial_s, sup.backoff_max_s, sup.max_restarts, sup.restart_window_s),
        rollover_utc=sup.rollover_utc, make_safe=functools.partial(make_account_safe, settings, url, replay),
        stopping=stopping,
    )


def make_account_safe(settings: Settings, url: str | None, replay: bool, _fatal: TooManyRestarts,
                      actors: Mapping[str, pykka.ActorRef | None]) -> str:
    """After a fatal failure (the supervisor's MakeSafe): cancel every order and check what is
    still open, through the Connection if it can (it got SafeShutdown), else through a last
    connection made for it; what was found, as the exit message says it. At most
    ``deribit.safe_shutdown_s`` (and a half-second grace to give a stuck last connection up)."""
    from deribit.last_link import LastLink
    from deribit.shutdown_check import Reach, last_link_via, reach_of, report, settled

    reach = reach_of(settings, replay=replay)
    if reach is not Reach.ORDERS or url is None:
        return report(reach, None, venue=settings.venue)
    budget = settings.deribit.safe_shutdown_s
    started = time.monotonic()
    connection = actors.get("connection")
    found = _connection_findings(connection, started + budget / 2) if connection is not None else None
    if not settled(found):
        waited = time.monotonic() - started
        via = last_link_via(found, running=connection is not None, waited_s=round(waited, 1))
        found = LastLink(url, settings.deribit, tuple(settings.currencies), via=via).cancel_and_check(budget - waited)
    return report(reach, found, venue=settings.venue)


def _connection_findings(connection: pykka.ActorRef, deadline: float) -> Findings | None:
    """What the Connection's own cancel and check found, asked until it is done or ``deadline``."""
    import pykka

    from actors.connection import GetShutdownFindings

    while True:
        try:
            found = cast("Findings | None", connection.ask(GetShutdownFindings(),
                                                           timeout=max(0.01, deadline - time.monotonic())))
        except (pykka.ActorDeadError, pykka.Timeout):
            return None
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


def exit_message(supervisor: Supervisor) -> str | None:
    """What the program says when it stops after a fatal failure: what failed, and what the safe
    shutdown found on the account (secrets scrubbed); None after a clean stop."""
    from runtime.logs import scrub_text

    if supervisor.fatal is None:
        return None
    return scrub_text(f"error: {supervisor.fatal}\n{supervisor.safe_report}")


def start_embedded_simulator(settings: Settings) -> tuple[Simulator, Settings]:
    """The local Deribit inside the program, on a free loopback port, with the settings' account;
    the program logs in to it with that account so trading works out of the box."""
    from simulator import Simulator
    from simulator.settings import SimSettings

    sim = settings.simulator
    sim_settings = SimSettings.for_account(sim.client_id, sim.client_secret,
                                           {"BTC": sim.initial_btc, "ETH": sim.initial_eth},
                                           updates_per_s=sim.updates_per_s,
                                           option_taker_hits_per_s=sim.option_taker_hits_per_s)
    simulator = Simulator(seed=sim.seed, settings=sim_settings)
    simulator.start_in_thread(port=sim.port)
    return simulator, with_simulator_account(settings)


def with_simulator_account(settings: Settings) -> Settings:
    """On the simulator venue (embedded, or one at ``deribit.url``) with no account given, the
    simulator's account (``[simulator]`` client_id and client_secret), so that trading works out of
    the box."""
    if settings.venue != "simulator" or settings.deribit.client_id:
        return settings
    import msgspec

    sim = settings.simulator
    return msgspec.structs.replace(
        settings, deribit=msgspec.structs.replace(settings.deribit, client_id=sim.client_id,
                                                  client_secret=sim.client_secret))


def command_run(args: argparse.Namespace) -> int:
    from runtime.clock import WallClock
    from runtime.logs import run_id, setup_logging, shutdown_logging
    from runtime.secrets import mask_url

    settings = settings_from_args(args)
    # With the console on a terminal, it says what matters in its own words: only errors reach the
    # terminal before it is up, none while it is (console/terminal.py); the JSON log has everything.
    setup_logging(settings.logging.dir, settings.logging.level, secrets=settings.secrets(),
                  console_level="error" if sys.stdin.isatty() else None,
                  max_field_chars=settings.logging.max_field_chars)
    import structlog

    log = structlog.get_logger(actor="main")
    simulator = None
    venue_url = settings.venue_url
    if venue_url is None:
        simulator, settings = start_embedded_simulator(settings)
        url = simulator.url
    else:
        url = venue_url
        settings = with_simulator_account(settings)
        if settings.venue == "mainnet" and not settings.live:
            log.warning("read_only", reason="mainnet without --live: market data only, no orders will be sent")
    log.info("starting", venue=settings.venue, url=url, currencies=list(settings.currencies),
             database=mask_url(settings.database_url))
    stopping = threading.Event()
    supervisor = make_supervisor(settings, actor_specs(settings, url=url, stopping=stopping), WallClock(), url=url,
                                 stopping=stopping)

    def on_signal(signum: int, _frame: Any) -> None:
        supervisor.request_stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The run id is on every JSON line of this run: said once, so that its lines can be found.
    print(f"run {run_id()} (pid {os.getpid()}): JSON log in {settings.logging.dir}", file=sys.stderr)
    try:
        supervisor.start()
        if sys.stderr.isatty():
            print(f"running on {settings.venue} ({url}); Ctrl-C stops", file=sys.stderr)
        status = int(supervisor.run())
    finally:
        supervisor.stop()
        if simulator is not None:
            simulator.stop()
    message = exit_message(supervisor)
    if message is not None:
        print(message, file=sys.stderr)
    log.info("stopped", status=status)
    shutdown_logging()
    return status


def command_replay(args: argparse.Namespace) -> int:
    """Status 0: the whole log replayed, no bad line; 1: a bad line (counted, skipped, named in the
    summary and on stderr), an early end or a fatal failure; 2: no log to replay."""
    import json
    import time

    from actors.connection import GetReplaySummary
    from runtime.clock import ReplayClock
    from runtime.logs import setup_logging, shutdown_logging
    from runtime.wirelog import first_time

    settings = settings_from_args(args)
    max_jump_s = settings.deribit.replay_max_jump_s
    try:
        start = first_time(args.file, max_jump_s=max_jump_s)
        summary: dict[str, Any] | None = (None if start is not None
                                          else _bad_lines_only(args.file, max_jump_s, strict=args.strict))
    except OSError as exc:
        print(f"cannot replay {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if summary is not None and summary["bad_lines"] == 0:
        print(f"cannot replay {args.file}: the file holds no records", file=sys.stderr)
        return 2
    supervisor = None
    if start is not None:  # else nothing to replay: the bad lines are the whole summary
        setup_logging(settings.logging.dir, settings.logging.level, secrets=settings.secrets(), console=False)
        stopping = threading.Event()
        specs = actor_specs(settings, replay_file=args.file, replay_speed=args.speed, replay_strict=args.strict,
                            stopping=stopping)
        supervisor = make_supervisor(settings, specs, ReplayClock(start), replay=True, stopping=stopping)
        supervisor.start()
        try:
            while summary is None:
                ref = supervisor.refs()["connection"]
                summary = cast("dict[str, Any] | None",
                               ref.ask(GetReplaySummary(), timeout=30) if ref is not None else None)
                if summary is None:
                    time.sleep(0.05)
            supervisor.drain()
            ref = supervisor.refs()["connection"]
            if ref is not None:  # the summary again, now that every actor handled the whole log
                summary = cast("dict[str, Any]", ref.ask(GetReplaySummary(), timeout=30))
        finally:
            supervisor.stop(reason="replay finished")
            shutdown_logging()
    assert summary is not None
    if supervisor is not None:  # the replay's lines in the JSON log carry it
        from runtime.logs import run_id

        summary = {**summary, "run_id": run_id()}
    print(json.dumps(summary))
    _say_bad_lines(args.file, summary)
    message = exit_message(supervisor) if supervisor is not None else None
    if message is not None:
        print(message, file=sys.stderr)
    failed = supervisor is not None and supervisor.fatal is not None
    return 1 if failed or summary["bad_lines"] or not summary["complete"] else 0


def _bad_lines_only(path: str, max_jump_s: float, *, strict: bool) -> dict[str, Any]:
    """The summary of a log with no good record: its bad lines (none: the file is empty)."""
    from deribit.link import LinkStats
    from runtime.wirelog import BadLine, scan_wire_log

    stats = LinkStats()
    for bad in scan_wire_log(path, max_jump_s=max_jump_s):
        assert isinstance(bad, BadLine)  # first_time found no good record
        stats.bad_line(bad)
        if strict:
            stats.complete = False
            stats.failure = f"line {bad.line} is bad (--strict: the replay stops at the first)"
            break
    return stats.replay_summary(resyncs=0, minutes=0)


def _say_bad_lines(path: str, summary: Mapping[str, Any]) -> None:
    """The replay's bad lines and early end on stderr, one line each (the summary names the first)."""
    named = summary["first_bad_lines"]
    for bad in named:
        print(f"{path}:{bad['line']}: {bad['reason']}", file=sys.stderr)
    if summary["bad_lines"] > len(named):
        print(f"{path}: ... and {summary['bad_lines'] - len(named)} more bad lines", file=sys.stderr)
    if not summary["complete"]:
        print(f"{path}: the replay ended early: {summary.get('failure', 'stopped')}", file=sys.stderr)
    elif summary["bad_lines"]:
        print(f"{path}: {summary['bad_lines']} bad line(s) skipped, every other line replayed", file=sys.stderr)


def command_plot(args: argparse.Namespace) -> int:
    from deribit.instruments import InstrumentNameError, parse_expiry
    from sql.archive import default_archive_dir
    from sql.plots import PlotError, parse_size, parse_time, plot_from_database

    if args.what == "scenario" or args.grid:
        return _plot_scenario(args)
    if not args.currency:
        print("cannot plot: --currency is needed (BTC or ETH)", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    try:
        expiry = parse_expiry(args.expiry.upper()) if args.expiry else None
    except InstrumentNameError as exc:
        print(f"cannot plot: --expiry: {exc}", file=sys.stderr)
        return 2
    try:
        path, minute = plot_from_database(settings.database_url, what=args.what, currency=args.currency, out=args.out,
                                          at=parse_time(args.at) if args.at else None,
                                          size=parse_size(args.size or "1200x800"), expiry=expiry,
                                          archive_dir=default_archive_dir(settings.data_dir,
                                                                          settings.recorder.archive_dir))
    except PlotError as exc:
        print(f"cannot plot: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {args.what} of {args.currency} at {minute:%Y-%m-%d %H:%M} UTC")
    return 0


def _archive_engine(settings: Settings) -> Any:
    """The database's engine for archive and export; ArgumentError for a SQLite file that is not there."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from sql.archive import ArgumentError
    from sql.engine import make_engine

    url = settings.database_url
    if url.startswith("sqlite"):
        database = make_url(url).database
        if not database or database == ":memory:" or not Path(database).exists():
            raise ArgumentError(f"database file {database} does not exist; give the desk's database with --db")
    return make_engine(url, connect_timeout_s=settings.recorder.connect_timeout_s)


def _say_written(item: Any) -> None:
    print(f"{item.path}: {item.rows} rows, {item.bytes} bytes")


def command_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sql.archive import ArchiveError, ArgumentError, archive, default_archive_dir, parse_day

    settings = settings_from_args(args)
    try:
        before = parse_day(args.before, "--before")
        out = Path(args.out) if args.out else default_archive_dir(settings.data_dir, settings.recorder.archive_dir)
        engine = _archive_engine(settings)
        try:
            days = archive(engine, out, before=before, progress=_say_written)
        finally:
            engine.dispose()
    except ArgumentError as exc:
        print(f"cannot archive: {exc}", file=sys.stderr)
        return 2
    except ArchiveError as exc:
        print(f"cannot archive: {exc}", file=sys.stderr)
        return 1
    for day in days:
        print(f"{day.day}: {len(day.files)} files, {day.removed_rows} rows removed from the database")
    if not days:
        print(f"nothing recorded before {before}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sql.archive import ArchiveError, ArgumentError, export, parse_day

    settings = settings_from_args(args)
    try:
        first, last = parse_day(args.first, "--from"), parse_day(args.last, "--to")
        engine = _archive_engine(settings)
        try:
            written = export(engine, Path(args.out), first=first, last=last, currency=args.currency,
                             what=args.what, progress=_say_written)
        finally:
            engine.dispose()
    except ArgumentError as exc:
        print(f"cannot export: {exc}", file=sys.stderr)
        return 2
    except ArchiveError as exc:
        print(f"cannot export: {exc}", file=sys.stderr)
        return 1
    if not written:
        print(f"nothing of {args.currency} recorded from {first} to {last}")
    return 0


def _plot_scenario(args: argparse.Namespace) -> int:
    """``plot --what scenario --grid FILE``: the grid the console wrote, from the file alone."""
    from sql.plots import PlotError, parse_size
    from sql.scenario_plot import DEFAULT_SIZE, ScenarioFileError, plot_scenario_file, read_scenario_file

    if args.what != "scenario" or not args.grid:
        print("cannot plot: --grid goes with --what scenario, and --what scenario needs --grid FILE.json",
              file=sys.stderr)
        return 2
    try:
        size = parse_size(args.size) if args.size else DEFAULT_SIZE
        path = plot_scenario_file(args.grid, args.out, size)
        grid = read_scenario_file(args.grid)
    except (PlotError, ScenarioFileError) as exc:
        print(f"cannot plot: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: scenario of {grid.currency} ({len(grid.vol_shifts)} vol shifts x {len(grid.spot_moves_pct)} "
          f"moves)")
    return 0


def command_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    sys.stdout.write(render_toml(settings_as_dict(settings, mask=True)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        # The simulator has its own parser; argparse's REMAINDER would refuse a leading option.
        from simulator.cli import run_simulator_cli

        return run_simulator_cli(argv[1:])
    parser = build_parser()
    args = parser.parse_args(normalise_argv(argv))
    handlers = {"run": command_run, "replay": command_replay, "plot": command_plot, "config": command_config,
                "archive": command_archive, "export": command_export}
    try:
        return handlers[args.command](args)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    assert threading.current_thread() is threading.main_thread()
    sys.exit(main())
