"""Database helpers of the sql, recorder, plots and minutes tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import numpy as np
from sqlalchemy import Engine, Table, func, select, text

from bench.snapshot import synthetic_chain_snapshot
from desk.surface_snapshot import build_surface_snapshot
from messages.surface import RecorderStatus, SurfaceSnapshot
from sql.engine import make_engine
from sql.tables import option_quotes, surface_points, volatility_index

AT = 1_626_994_800.0  # 2021-07-22 23:00 UTC, a whole minute


@contextlib.contextmanager
def private_schema(server_url: str) -> Iterator[str]:
    """A URL on ``server_url`` whose tables live in a fresh schema, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(server_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def count(engine: Engine, table: Table, **where: object) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


#: What version 5 does not keep of an option quote as it was: the index price of the option's own
#: ticker (the currency's at the minute is kept) and the greeks (the view computes them).
NOT_KEPT = ("index_price", "delta", "gamma", "vega", "theta")


def option_row_kept(columns: list[str], row: tuple[object, ...]) -> tuple[object, ...]:
    """An ``option_quotes`` row as far as version 5 keeps it: without :data:`NOT_KEPT`, numbers as the
    float4 nearest to them (version 5 stores ``real``s), times naive UTC (SQLite reads them naive)."""
    kept: list[object] = []
    for name, value in zip(columns, row, strict=True):
        if name in NOT_KEPT:
            continue
        if isinstance(value, float):
            value = float(np.float32(value))
        elif isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        kept.append(value)
    return tuple(kept)


def small_snapshot(at: float = AT, currency: str = "BTC") -> SurfaceSnapshot:
    chain = synthetic_chain_snapshot(currency=currency, at=at, n_quotes=120, n_expiries=4)
    return build_surface_snapshot(chain)


def assert_each_minute_once(url: str, snapshots: list[SurfaceSnapshot]) -> None:
    eng = make_engine(url)
    try:
        for snap in snapshots:
            minute = dt.datetime.fromtimestamp(snap.at, dt.UTC)
            assert count(eng, option_quotes, minute=minute) == len(snap.quotes)
            assert count(eng, surface_points, minute=minute) == len(snap.points)
            assert count(eng, volatility_index, minute=minute) == 1
        assert count(eng, volatility_index) == len(snapshots)
    finally:
        eng.dispose()


class Bus:
    def __init__(self) -> None:
        self.messages: list[object] = []
        self.lock = threading.Lock()

    def publish(self, message: object) -> None:
        with self.lock:
            self.messages.append(message)

    def statuses(self) -> list[RecorderStatus]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, RecorderStatus)]
