"""Wire logs: every frame of a connection as JSON Lines, and reading them back for replay.

One line a frame: ``{"t": <unix seconds>, "dir": "in"|"out"|"open"|"close", "frame": "<raw>"}``
(``frame`` absent for open and close). Writers redact auth frames before anything touches disk.
"""

from __future__ import annotations

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


def read_wire_log(path: str | Path) -> Iterator[WireRecord]:
    """Records in file order. A line that is not a wire record is an error naming the line."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield _decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise WireLogError(f"{path}:{number}: not a wire-log record ({exc})") from None
