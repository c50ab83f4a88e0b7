"""Wire logs: every frame of a connection as JSON Lines, and reading them back for replay.

One line a frame: ``{"t": <unix seconds>, "dir": "in"|"out"|"open"|"close", "frame": "<raw>"}``
(``frame`` absent for open and close). Writers redact auth frames before anything touches disk.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal

import msgspec

Direction = Literal["in", "out", "open", "close"]


class WireRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    t: float
    dir: Direction
    frame: str | None = None


class WireLogError(ValueError):
    """A wire log that cannot be written or read; the text names the file (and line)."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireRecord)


class WireLogWriter:
    """Thread-safe appender (the reader thread writes ``in``, the actor thread ``out``).

    ``redact`` is applied to every frame text before it is written. Lines reach the disk every
    ``flush_every`` lines or ``flush_after_s`` seconds of record time, whichever comes first, and
    at every open and close, so a crash loses at most about a second of frames."""

    def __init__(self, path: str | Path, redact: Callable[[str], str] | None = None, flush_every: int = 256,
                 flush_after_s: float = 1.0) -> None:
        self.path = Path(path)
        hint = "give a writable path (deribit.record_wire / --record-wire)"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WireLogError(f"cannot write the wire log {self.path}: cannot create the directory "
                               f"{self.path.parent} ({exc.strerror or exc}); {hint}") from None
        try:
            self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise WireLogError(f"cannot write the wire log {self.path}: {exc.strerror or exc}; {hint}") from None
        self._redact = redact
        self._lock = threading.Lock()
        self._pending = 0
        self._flush_every = flush_every
        self._flush_after_s = flush_after_s
        self._flushed_at: float | None = None

    def write(self, t: float, direction: Direction, frame: str | bytes | None = None) -> None:
        text: str | None
        if frame is None:
            text = None
        else:
            text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
            if self._redact is not None:
                text = self._redact(text)
        line = _encoder.encode(WireRecord(t=t, dir=direction, frame=text)) + b"\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._pending += 1
            if self._flushed_at is None:
                self._flushed_at = t
            if (self._pending >= self._flush_every or direction in ("open", "close")
                    or t - self._flushed_at >= self._flush_after_s):
                self._file.flush()
                self._pending = 0
                self._flushed_at = t

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                self._pending = 0

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


#: The longest line a reader takes (a real frame is at most a few MB: the largest answers list
#: every instrument of a currency); a longer line is a bad line, skipped without being held whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: The latest time a wire log may hold: the last second of the year 9999, the latest a date can
#: show (a time in milliseconds by mistake is past it).
LATEST_TIME = 253_402_300_799.0
#: The default of ``deribit.replay_max_jump_s``: a timestamp this far from the line before is bad.
DEFAULT_MAX_JUMP_S = 86_400.0
#: How many records of mutually distant times a reader holds at the start of a log before it takes
#: the first of them as the log's time (see :func:`scan_wire_log`).
_UNCONFIRMED_MAX = 8


class BadLine(msgspec.Struct, frozen=True):
    """A line of a wire log that is no usable record: its number (from 1) and why."""

    line: int
    reason: str


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(number, line) in file order; None for a line longer than MAX_LINE_BYTES, which is read past
    in slices, never held whole."""
    number = 0
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, line


def _record_fault(record: WireRecord) -> str | None:
    """What makes a decoded record unusable on its own (its time, a data record without its frame)."""
    t = record.t
    if not math.isfinite(t) or t <= 0:
        return f"t {t!r} is not a finite positive time"
    if t > LATEST_TIME:
        return f"t {t!r} is past the year 9999 (unix seconds expected)"
    if record.dir in ("in", "out") and record.frame is None:
        return f"a {record.dir!r} record without its frame"
    return None


def _jump(t: float, last: float, max_jump_s: float) -> str | None:
    if abs(t - last) <= max_jump_s:
        return None
    return f"t {t!r} jumps {t - last:+.0f} s from the last good line's {last!r} (at most {max_jump_s:g} s either way)"


def scan_wire_log(path: str | Path, *, max_jump_s: float = DEFAULT_MAX_JUMP_S) -> Iterator[WireRecord | BadLine]:
    """Every record of the log in file order, and a :class:`BadLine` for every line that is no
    usable record: not a wire record (bad JSON, a missing or mistyped field, a frame that is not
    text), longer than MAX_LINE_BYTES, a time that is not finite, positive and before the year
    10000, or a time more than ``max_jump_s`` from the last good record's, either way. Blank lines
    are skipped. A bad line costs nothing but itself: the records after it are read on.

    A log's first time must be confirmed by a later record within ``max_jump_s`` of it: a first
    line with a wrong but possible time would otherwise make every good line after it a jump. Until
    then the records are held (at most a few, and only while their times disagree with each other);
    at the end of the log, or past that few, the first held is taken. The bad lines among the
    held ones are reported when this is decided, so bad lines may come out of line order (never the
    records)."""
    with open(path, "rb") as f:
        last: float | None = None  # the last good record's time, once the log's time is confirmed
        held: list[tuple[int, WireRecord]] = []

        def judged(records: list[tuple[int, WireRecord]]) -> Iterator[WireRecord | BadLine]:
            nonlocal last
            for number, record in records:
                fault = None if last is None else _jump(record.t, last, max_jump_s)
                if fault is not None:
                    yield BadLine(number, fault)
                else:
                    last = record.t
                    yield record

        for number, line in _lines(f):
            if line is None:
                yield BadLine(number, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except msgspec.DecodeError as exc:
                yield BadLine(number, f"not a wire-log record ({exc})")
                continue
            fault = _record_fault(record)
            if fault is not None:
                yield BadLine(number, fault)
            elif last is not None:
                jump = _jump(record.t, last, max_jump_s)
                if jump is not None:
                    yield BadLine(number, jump)
                else:
                    last = record.t
                    yield record
            else:
                agreeing = next((i for i, (_, h) in enumerate(held) if abs(record.t - h.t) <= max_jump_s), None)
                if agreeing is not None:
                    for bad_number, bad in held[:agreeing]:
                        yield BadLine(bad_number, f"t {bad.t!r} disagrees with the log's time (more than "
                                                  f"{max_jump_s:g} s from the records after it)")
                    yield from judged([*held[agreeing:], (number, record)])
                    held = []
                else:
                    held.append((number, record))
                    if len(held) > _UNCONFIRMED_MAX:
                        yield from judged(held)
                        held = []
        yield from judged(held)


def read_wire_log(path: str | Path, *, max_jump_s: float = DEFAULT_MAX_JUMP_S) -> Iterator[WireRecord]:
    """Records in file order; the first bad line (see :func:`scan_wire_log`) is an error naming it."""
    for item in scan_wire_log(path, max_jump_s=max_jump_s):
        if isinstance(item, BadLine):
            raise WireLogError(f"{path}:{item.line}: {item.reason}")
        yield item


def first_time(path: str | Path, *, max_jump_s: float = DEFAULT_MAX_JUMP_S) -> float | None:
    """The time of the log's first good record (where a replay's clock starts), None if it has none."""
    return next((item.t for item in scan_wire_log(path, max_jump_s=max_jump_s) if isinstance(item, WireRecord)),
                None)
