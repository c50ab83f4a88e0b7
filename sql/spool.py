"""The Recorder's spool: what the database could not take yet, one fsync'd file per batch, in order.

A batch is one currency-minute (a :class:`SurfaceSnapshot`, with the DVOL at the minute), one
order-audit entry or the new entries of one settlement history, encoded with msgspec (MessagePack).
Files are named ``<sequence>-<what>.msgpack``; the sequence continues across restarts, so batches
are written back in the order they arrived. A file is written beside its final name, fsync'd,
renamed into place and the directory fsync'd: a batch the spool accepted survives a crash of the
program or of the machine. It is deleted only after its transaction committed; a crash
in between writes it again, which the inserts' conflict handling ignores.
"""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path

import msgspec

from messages.account import SettlementHistory
from messages.commands import ANSWER_LOST
from messages.surface import SurfaceSnapshot
from sql.writers import DvolReading, OrderAuditEvent, legacy_audit_event

_NAME = re.compile(r"^(\d{12})-(minute|audit|settlements)-[\w.-]*\.msgpack$")


class SpoolRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One spooled batch: exactly one of ``snapshot``, ``audit`` and ``settlements`` is set;
    ``dvol`` goes with a snapshot (None: no current DVOL at the minute). A file written before
    ``dvol`` and ``settlements`` existed reads back with them None."""

    snapshot: SurfaceSnapshot | None = None
    dvol: DvolReading | None = None
    audit: OrderAuditEvent | None = None
    settlements: SettlementHistory | None = None

    @property
    def kind(self) -> str:
        if self.snapshot is not None:
            return "minute"
        return "audit" if self.audit is not None else "settlements"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:32]


class SpoolError(Exception):
    """A spool file that cannot be read back (moved aside to ``rejected/``)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpoolRecord)


class Spool:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):  # a write cut short by a crash: never acknowledged
            leftover.unlink(missing_ok=True)
        kinds = {p.name: m.group(2) for p in self.directory.iterdir() if (m := _NAME.match(p.name))}
        names = sorted(kinds)
        self._pending: deque[Path] = deque(self.directory / n for n in names)
        self._minutes = list(kinds.values()).count("minute")
        self._next = int(names[-1][:12]) + 1 if names else 1

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def minutes(self) -> int:
        """Currency-minutes waiting."""
        return self._minutes

    def append(self, record: SpoolRecord) -> Path:
        """Write ``record`` durably; returns its file."""
        if record.snapshot is not None:
            snap = record.snapshot
            label = f"minute-{snap.currency}-{int(snap.at)}"
        elif record.audit is not None:
            label = f"audit-{_safe(record.audit.origin)}"
        elif record.settlements is not None:
            label = f"settlements-{_safe(record.settlements.currency)}"
        else:
            raise ValueError("a spool record holds a snapshot, an audit entry or settlements")
        name = f"{self._next:012d}-{label}.msgpack"
        final = self.directory / name
        temp = self.directory / f".{name}.tmp"
        data = _encoder.encode(record)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        self._fsync_directory()
        self._next += 1
        self._pending.append(final)
        if record.snapshot is not None:
            self._minutes += 1
        return final

    def oldest(self) -> Path | None:
        return self._pending[0] if self._pending else None

    def peek(self) -> tuple[Path, SpoolRecord] | None:
        """The oldest batch, or None. :class:`SpoolError` if its file cannot be decoded."""
        if not self._pending:
            return None
        path = self._pending[0]
        try:
            data = path.read_bytes()
            try:
                record = _decoder.decode(data)
                if record.audit is not None and record.audit.error_code == ANSWER_LOST:
                    # schema version 2 spooled a lost answer as refused: it is unknown
                    record = SpoolRecord(audit=legacy_audit_event(msgspec.to_builtins(record.audit)))
                return path, record
            except msgspec.ValidationError:
                # An audit entry spooled by schema version 2 (outcome "accepted"): in today's outcomes.
                audit = msgspec.msgpack.decode(data).get("audit")
                if not isinstance(audit, dict):
                    raise
                return path, SpoolRecord(audit=legacy_audit_event(audit))
        except (OSError, msgspec.DecodeError, ValueError) as exc:
            raise SpoolError(f"spool file {path} cannot be read: {exc}") from exc

    def remove(self, path: Path) -> None:
        """The oldest batch was committed: forget it."""
        assert self._pending and self._pending[0] == path, "batches leave the spool in order"
        self._pending.popleft()
        if _NAME.match(path.name).group(2) == "minute":  # type: ignore[union-attr]
            self._minutes -= 1
        path.unlink(missing_ok=True)

    def reject(self, path: Path, reason: str) -> Path:
        """Move the oldest batch aside (it can never be written); a note beside it says why."""
        assert self._pending and self._pending[0] == path, "batches leave the spool in order"
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        target = rejected / path.name
        os.replace(path, target)
        target.with_suffix(".reason.txt").write_text(reason + "\n", encoding="utf-8")
        self._pending.popleft()
        if _NAME.match(path.name).group(2) == "minute":  # type: ignore[union-attr]
            self._minutes -= 1
        return target

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
