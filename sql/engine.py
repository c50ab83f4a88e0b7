"""Engines from a URL, and the schema created idempotently with its version recorded.

- SQLite (``sqlite:///data/deribit.sqlite3``): the file's directory is created, the journal is WAL
  (readers such as ``main.py plot`` never block the Recorder) and a write waits ``busy_timeout_s``
  for a lock before failing (the Recorder then spools the minute).
- PostgreSQL (``postgresql+psycopg2://user@host/db``): a connection attempt gives up after
  ``connect_timeout_s`` and pooled connections are checked before use, so a restarted server is
  picked up again. With ``statement_timeout_s`` (the Recorder's write deadline) the server ends a
  statement that runs longer (``statement_timeout``) or waits for a lock longer than half of it
  (``lock_timeout``); TCP keepalives notice a peer that is gone; JIT compilation is off. A server that stopped answering
  altogether is noticed only by the caller's own deadline (:mod:`sql.deadline`), which then
  :func:`abort_connections`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from runtime.secrets import mask_url
from sql.inserts import insert_ignoring_conflicts
from sql.migrations import migrate
from sql.tables import SCHEMA_VERSION, metadata, schema_version
from sql.views import create_views

URL_HELP = "expected sqlite:///path/to/file.sqlite3 or postgresql+psycopg2://user[:password]@host[:port]/database"


class DatabaseURLError(ValueError):
    """A database URL this program cannot use; the text says why and what is expected."""


class SchemaVersionError(RuntimeError):
    """The database was created by a newer version of the program."""


def check_url(url: str) -> URL:
    """The parsed URL if this program can use it (SQLite, or PostgreSQL through psycopg2);
    :class:`DatabaseURLError` saying why not. The settings check it at load, the engine again."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"database URL {mask_url(url)!r} cannot be parsed; {URL_HELP}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.get_driver_name() not in ("psycopg2", "postgresql"):
        raise DatabaseURLError(f"database URL {mask_url(url)!r}: PostgreSQL is used through psycopg2; {URL_HELP}")
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseURLError(f"database URL {mask_url(url)!r}: unsupported database {backend!r}; {URL_HELP}")
    return parsed


def make_engine(url: str, *, busy_timeout_s: float = 2.0, connect_timeout_s: float = 3.0,
                statement_timeout_s: float | None = None) -> Engine:
    """An engine for SQLite or PostgreSQL; :class:`DatabaseURLError` for anything else."""
    parsed = check_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_s)
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout_s)),
                                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                    "keepalives_count": 3}
    # Beside any options the URL gives (a search_path, say), which connect_args replace (the URL keeps
    # them: an engine's url makes another engine on the same schema). No JIT: it
    # compiles option_quotes' greeks for 200 to 800 ms on reads that take less (one instrument over a month
    # through the view: 634 ms with it, 386 without), and never pays back on the desk's queries.
    given = parsed.query.get("options", ())
    options = [given] if isinstance(given, str) else list(given)
    options.append("-c jit=off")
    if statement_timeout_s is not None:
        ms = max(1, round(statement_timeout_s * 1000))
        options.append(f"-c statement_timeout={ms} -c lock_timeout={max(1, ms // 2)}")
    connect_args["options"] = " ".join(options)
    return create_engine(parsed.set(drivername="postgresql+psycopg2"), pool_pre_ping=True, pool_size=2,
                         max_overflow=2, connect_args=connect_args)


def track_connections(engine: Engine) -> dict[int, Any]:
    """The engine's open driver connections (by id), kept up to date: what
    :func:`abort_connections` ends."""
    live: dict[int, Any] = {}

    @event.listens_for(engine, "connect")
    def _opened(dbapi_connection: Any, _record: Any) -> None:
        live[id(dbapi_connection)] = dbapi_connection

    @event.listens_for(engine, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        live.pop(id(dbapi_connection), None)

    @event.listens_for(engine, "close_detached")
    def _closed_detached(dbapi_connection: Any) -> None:
        live.pop(id(dbapi_connection), None)

    return live


def abort_connections(engine: Engine, live: dict[int, Any]) -> None:
    """End whatever a thread is blocked on in ``live``'s connections, from another thread: a
    PostgreSQL connection's socket is shut down (the blocked ``recv`` returns at once and the
    server rolls the transaction back when it runs again), a SQLite statement is interrupted.
    The pool is then emptied so that the next write opens a new connection."""
    for dbapi_connection in list(live.values()):
        try:
            if hasattr(dbapi_connection, "interrupt"):  # sqlite3
                dbapi_connection.interrupt()
            else:
                with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # closed meanwhile (nothing to end), or a driver error: the deadline stands
            pass
    live.clear()
    engine.dispose()


def _sqlite_engine(parsed: URL, busy_timeout_s: float) -> Engine:
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # The sqlite3 module's own busy wait is the timeout argument (seconds).
    # Writes run in a thread of their own (sql.deadline): a pooled connection moves between threads.
    engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL is durable against a crash of the program (not of the OS)
        # and lets a minute commit without an fsync per transaction.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("SELECT exp(0), ln(1), sqrt(1)")
        except sqlite3.OperationalError:  # a SQLite built without its math functions: the view needs them
            for name, function in (("exp", math.exp), ("ln", math.log), ("sqrt", math.sqrt)):
                dbapi_connection.create_function(name, 1, function, deterministic=True)
        cursor.close()

    return engine


#: PostgreSQL advisory lock held while the schema is created or migrated: programs starting at once
#: against one database take turns (the second finds the work done).
SCHEMA_LOCK = 0x6465736B  # "desk"


def create_schema(engine: Engine) -> int:
    """Create every missing table, take an older database forward (:mod:`sql.migrations`) and record
    the schema version; safe to call on every start.

    Returns the database's schema version; :class:`SchemaVersionError` when the database is newer
    than this program."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A migration may outlast a minute's write deadline (the session's statement and lock
            # timeouts); the caller's own, longer deadline bounds it (sql.store.SCHEMA_DEADLINE_S).
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn, checkfirst=True)
        recorded = conn.execute(select(func.max(schema_version.c.version))).scalar()
        if recorded is None:
            # Two programs starting at once may both get here: the second insert is ignored.
            conn.execute(insert_ignoring_conflicts(schema_version, conn.dialect.name),
                         [{"version": SCHEMA_VERSION, "applied_at": dt.datetime.now(dt.UTC)}])
            create_views(conn)
            return SCHEMA_VERSION
        if recorded > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the database's schema is version {recorded}, this program knows version {SCHEMA_VERSION}: "
                "run a newer version of the program, or point --db at another database")
        migrate(conn, int(recorded))
        create_views(conn)
        return SCHEMA_VERSION
