"""Structured logging: JSON Lines to ``logs/app-YYYYMMDD.jsonl``, a readable console rendering
when attached to a terminal, and a processor that removes secrets before anything is written.

Every JSON line carries the process's run id and pid (:func:`add_run`): the desk, piped runs and
replays share one daily file and are told apart by them. Fields that hold a time as unix seconds or
epoch milliseconds are written as ISO 8601 UTC by one processor with an explicit list of keys
(:data:`TIME_FIELDS`): the log calls keep logging the values they hold (a minute's ``at``, a
Deribit timestamp), and a suffix rule could not tell ``dvol_at_ms`` (a time) from ``build_ms`` (a
duration).

Everything goes through the stdlib ``logging`` tree (structlog's ProcessorFormatter), so records
from libraries (pykka, websocket-client, sqlalchemy) come out as the same JSON.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import secrets as _random
import sys
import threading
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from runtime.secrets import clip, mask_value, register_secrets, scrub_text

__all__ = ["register_secrets", "run_id", "scrub_text", "setup_logging", "shutdown_logging"]

#: This run's id: short and random, new with each :func:`setup_logging` (a program sets its logs up
#: once: a run of the desk, a piped session, a replay), printed at start, shown by ``status``.
_RUN_ID = _random.token_hex(3)

#: The fields logged with a time in them, by key: (the value's units per second, the key written).
#: ``minute``/``at``: a full minute or an instant in unix seconds (MinuteTick, ChainSnapshot,
#: SurfaceSnapshot); ``timestamp``, ``dvol_at_ms``: Deribit's epoch milliseconds (the DVOL tick's).
TIME_FIELDS: dict[str, tuple[float, str]] = {
    "minute": (1.0, "minute"),
    "at": (1.0, "at"),
    "timestamp": (1000.0, "timestamp"),
    "dvol_at_ms": (1000.0, "dvol_at"),
}

#: Logged texts longer than this are cut (logging.max_field_chars sets it): a 10 MiB channel name
#: from a bad frame must not become a 10 MiB log line.
_max_field_chars = 8192
#: Containers are walked this deep; below, a value is logged as its (scrubbed, cut) text.
_MAX_DEPTH = 6


def _text(value: str) -> str:
    # Scrubbed before it is cut: a secret across the cut must not leave its first half behind.
    return clip(scrub_text(value), _max_field_chars)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth <= _MAX_DEPTH and isinstance(value, dict):
        return {k: _masked(k, v, depth + 1) for k, v in value.items()}
    if depth <= _MAX_DEPTH and isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    # Anything else (bytes, a message, an exception, a container too deep) as the text the JSON
    # renderer would write, so that it is scrubbed and cut like any text.
    return _text(str(value))


def _masked(key: Any, value: Any, depth: int) -> Any:
    """The value masked under a secret-like key, else with registered secrets scrubbed."""
    if isinstance(key, str):
        masked = mask_value(key, value)
        if masked is not value:
            return masked
    return _scrub(value, depth)


def redact_secrets(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask values under secret-like keys and any registered secret."""
    for key in list(event_dict):
        event_dict[key] = _masked(key, event_dict[key], 0)
    return event_dict


def run_id() -> str:
    """This run's id (the same on every line it logs)."""
    return _RUN_ID


def iso_utc(seconds: float) -> str:
    """``seconds`` (unix) as ISO 8601 UTC: ``2026-12-07T08:00:00Z``, with milliseconds when it has any."""
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    millis = round(when.microsecond / 1000)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def add_run(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the run id and the process id, so that runs sharing a file are told apart."""
    event_dict["run_id"] = _RUN_ID
    event_dict["pid"] = os.getpid()
    return event_dict


def iso_times(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the :data:`TIME_FIELDS` that hold a number written as ISO 8601 UTC
    (anything else under those keys, a text or None, is left as it is)."""
    for key, (per_second, written) in TIME_FIELDS.items():
        value = event_dict.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        try:
            text = iso_utc(value / per_second)
        except (OverflowError, OSError, ValueError):  # not a time after all: left as logged
            continue
        if written != key:
            del event_dict[key]
        event_dict[written] = text
    return event_dict


def utc_timestamp(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    now = dt.datetime.now(dt.UTC)
    event_dict["time"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return event_dict


def _rename_event(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # stdlib records from libraries carry no actor; say where they came from instead.
    if "actor" not in event_dict and "logger" in event_dict:
        event_dict["actor"] = event_dict["logger"]
    event_dict.pop("logger", None)
    return event_dict


def _order_fields(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # time, level, actor, event first: the lines read well with `tail -f` and `jq`.
    head = {k: event_dict.pop(k) for k in ("time", "level", "actor", "event", "run_id", "pid") if k in event_dict}
    head.update(event_dict)
    return head


class DailyJsonlHandler(logging.Handler):
    """Appends to ``<dir>/app-YYYYMMDD.jsonl`` (UTC date), switching file at midnight."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._day = ""
        self._stream: Any = None
        self._lock_file = threading.Lock()

    def path_for(self, day: str) -> Path:
        return self.directory / f"app-{day}.jsonl"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
            with self._lock_file:
                if day != self._day or self._stream is None:
                    if self._stream is not None:
                        self._stream.close()
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._stream = open(self.path_for(day), "a", encoding="utf-8")  # noqa: SIM115
                    self._day = day
                self._stream.write(line + "\n")
                self._stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self._lock_file:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        super().close()


_configured_handlers: list[logging.Handler] = []


def setup_logging(
    directory: str | os.PathLike[str] | None = "logs",
    level: str = "info",
    console: bool | None = None,
    secrets: Iterable[str | None] = (),
    console_level: str | None = None,
    max_field_chars: int = 8192,
) -> Path | None:
    """Configure structlog and the stdlib root logger. Returns the JSON log directory.

    ``console=None`` renders to stderr only when stderr is a terminal; otherwise only warnings
    and errors are printed there (as one plain line each), so piped output stays clean.
    """
    global _max_field_chars, _RUN_ID
    _RUN_ID = _random.token_hex(3)
    register_secrets(secrets)
    _max_field_chars = max_field_chars
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        utc_timestamp,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    tail: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _rename_event,
        structlog.processors.format_exc_info,
        iso_times,
        redact_secrets,
    ]
    root = logging.getLogger()
    for handler in _configured_handlers:
        root.removeHandler(handler)
        handler.close()
    _configured_handlers.clear()
    root.setLevel(numeric)

    path: Path | None = None
    if directory is not None:
        path = Path(directory)
        file_handler = DailyJsonlHandler(path)
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[*tail, add_run, _order_fields,
                            structlog.processors.JSONRenderer(default=str, sort_keys=False)],
            )
        )
        _configured_handlers.append(file_handler)

    tty = sys.stderr.isatty() if console is None else console
    stream = logging.StreamHandler(sys.stderr)
    if tty:
        stream.setLevel(logging.getLevelName((console_level or level).upper()))
        renderer: Any = structlog.dev.ConsoleRenderer(colors=True)
    else:
        stream.setLevel(logging.WARNING)
        renderer = structlog.processors.KeyValueRenderer(
            key_order=["time", "level", "actor", "event"], drop_missing=True
        )
    stream.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[*tail, renderer]))
    _configured_handlers.append(stream)
    for handler in _configured_handlers:
        root.addHandler(handler)
    # pykka logs an actor's crash itself; the supervisor's structured actor_failed line says more.
    logging.getLogger("pykka").setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    return path


def shutdown_logging() -> None:
    for handler in _configured_handlers:
        handler.flush()
    logging.shutdown()
