"""Command line and the wiring of the actors: the one place that knows them all.

    python main.py [run] [options]      the desk (default: embedded simulator, SQLite)
    python main.py config show          the effective settings, secrets masked
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from config.settings import Settings, SettingsError, load_settings, render_toml, settings_as_dict

COMMANDS = ("run", "config")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="A Deribit options desk: live books, IV surface recorder, delta hedger, console.",
        epilog="`python main.py [options]` is `python main.py run [options]`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the desk (the default command)",
                         description="Run the desk: connect, keep the books, record, hedge, take commands.")
    _add_settings_options(run)

    config = sub.add_parser("config", help="settings", description="Inspect the settings.")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser("show", help="print the effective settings with secrets masked",
                                 description="Print the effective settings (TOML) with secrets masked.")
    _add_settings_options(show)
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set deribit.heartbeat_s=5")
        out[key.strip()] = value.strip()
    if getattr(args, "venue", None):
        out["venue"] = args.venue
    if getattr(args, "live", None):
        out["live"] = True
    if getattr(args, "paper", None):
        out["paper"] = True
    if getattr(args, "db", None):
        out["database.url"] = args.db
    if getattr(args, "log_level", None):
        out["logging.level"] = args.log_level
    if getattr(args, "currencies", None):
        out["currencies"] = [c.strip().upper() for c in args.currencies.split(",") if c.strip()]
    return out


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), overrides=overrides_from_args(args))


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """`main.py [options]` means `main.py run [options]`."""
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        return ["run", *argv]
    return argv


# -- the wiring --------------------------------------------------------------------------------
def actor_specs(settings: Settings) -> list[Any]:
    """Every actor of the program, in start order (stopped in reverse)."""
    return []


def command_run(args: argparse.Namespace) -> int:
    from runtime.bus import Bus
    from runtime.clock import WallClock
    from runtime.logs import setup_logging, shutdown_logging
    from runtime.supervisor import RestartPolicy, Supervisor

    settings = settings_from_args(args)
    setup_logging(settings.logging.dir, settings.logging.level, secrets=settings.secrets())
    import structlog

    log = structlog.get_logger().bind(actor="main")
    log.info("starting", venue=settings.venue, currencies=list(settings.currencies),
             database=settings_as_dict(settings)["database"]["url"] or settings.database_url)
    sup_settings = settings.supervisor
    supervisor = Supervisor(
        actor_specs(settings),
        bus=Bus(),
        clock=WallClock(),
        settings=settings,
        policy=RestartPolicy(sup_settings.backoff_initial_s, sup_settings.backoff_max_s,
                             sup_settings.max_restarts, sup_settings.restart_window_s),
        rollover_utc=sup_settings.rollover_utc,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        supervisor.request_stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start()
    if sys.stderr.isatty():
        print("running; Ctrl-C stops", file=sys.stderr)
    status = supervisor.run()
    if supervisor.fatal is not None:
        print(f"error: {supervisor.fatal}", file=sys.stderr)
    log.info("stopped", status=status)
    shutdown_logging()
    return status


def command_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    sys.stdout.write(render_toml(settings_as_dict(settings, mask=True)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    handlers = {"run": command_run, "config": command_config}
    try:
        return handlers[args.command](args)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    assert threading.current_thread() is threading.main_thread()
    sys.exit(main())
