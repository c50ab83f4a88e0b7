"""The record in Parquet: ``python main.py export`` (any database, nothing dropped) and ``python main.py
archive`` (days before a date written out, verified, then dropped from the database).

Layout (Hive-partitioned, what DuckDB, Polars, pyarrow, Spark and Trino read as one table each)::

    <out>/quotes/currency=BTC/date=2026-12-01/part-0.parquet
    <out>/surface_points/currency=BTC/date=2026-12-01/part-0.parquet
    <out>/surface_fits/...   <out>/volatility_index/...   <out>/minute_coverage/...

``--what quotes`` is the option-minutes, ``surface`` the grid points and the fits, ``index`` the
variance index (with DVOL) and each minute's coverage. Each file is zstd-compressed (floats
byte-stream-split), the quotes' rows by instrument then minute (an option's minutes together: they
compress best and one instrument over a day is one run), the others' by minute; ``currency`` and
``date`` are the directory's (not repeated in the file). The quotes
are self-describing: the instrument's name, expiry, strike and type beside the minute's values, the
underlying (the option's ticker's) and index price. Deribit's greeks are not in the file: they are
Black-76 at ``mark_iv`` / 100, F = ``underlying_price``, K = ``strike``, T = (expiry - minute) in years
of 365 days, r = 0 (``quant.black76.black76_greeks``; the file's metadata says so): four more floats
a row would triple the file. Each file's key-value metadata names the dataset, currency, date, rows,
first and last minute, the schema version it came from and the units.

Safety of ``archive``: each file is written under a hidden temporary name beside its place, read
back (row count and metadata against the database's count in the export's snapshot), fsynced and
renamed into place atomically; a day's rows are removed from the database only once every file of
the day (every currency) is in place, in one transaction that first locks the day (PostgreSQL: the
partitioned tables, in the writer's order, with a short ``lock_timeout``; SQLite: ``BEGIN
IMMEDIATE``), counts the rows again and compares them with the files' own counts: PostgreSQL
detaches and drops the day partitions, SQLite deletes the day's rows. A run killed at any point
leaves the database whole (the removal is one transaction) and at most a temporary file, which the
next run removes; run it again and it writes the same files and finishes.

A day archived before that has rows in the database again (a late minute, spooled while the database
was away and written back after the day's partitions were dropped, goes into a new partition) is
archived again into the same files: the files already there merged with the database's rows, each row's
natural key once, so an archive never holds a minute twice (:func:`write_day`). ``export`` into a
directory that holds the day merges the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import structlog
from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    and_,
    cast,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.types import BigInteger, Double, Text

from sql.engine import mask_url
from sql.option_rows import VALUE_FIELDS
from sql.partitions import existing_partitions, partition_name
from sql.tables import (
    FLAG_IN_SURFACE,
    FLAG_STALE,
    PARTITIONED,
    SCHEMA_VERSION,
    chain_minutes,
    expiry_minutes,
    instruments,
    minute_coverage,
    option_minutes,
    schema_version,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.views import _of_instrument

UTC = dt.UTC
DAY = dt.timedelta(days=1)
WHAT = {"quotes": ("quotes",), "surface": ("surface_points", "surface_fits"),
        "index": ("volatility_index", "minute_coverage")}
DATASETS = ("quotes", "surface_points", "surface_fits", "volatility_index", "minute_coverage")
PART = "part-0.parquet"
TIMESTAMP = pa.timestamp("ms", tz="UTC")
#: Rows of a row group (a BTC day is about a million quote rows).
ROW_GROUP = 262_144
ZSTD_LEVEL = 9
#: PostgreSQL: how long the archive waits for the day's tables before it gives up (and tries again,
#: :data:`LOCK_TRIES` times): a minute being written waits at most this long behind it.
LOCK_TIMEOUT_MS = 1000
LOCK_TRIES = 5
GREEKS_NOTE = ("Deribit's greeks are not stored: Black-76 at vol = mark_iv / 100, F = underlying_price, K = strike, "
               "T = (expiry - minute) in years of 365 days, r = 0 (quant.black76.black76_greeks: delta, gamma, "
               "vega per vol point, theta per day)")
UNITS = ("times UTC; vols in percent (vol points); option prices and mark_price in the settlement currency "
         "(the coin for inverse options: USD = price x underlying_price); amounts and open_interest in coins; "
         "underlying_price is the option's ticker's (its expiry's forward), index_price the currency's index")
QUOTE_DESCRIPTIONS = {
    "minute": "the minute tick the row belongs to (UTC)",
    "instrument": "Deribit instrument name", "expiry": "expiry (08:00 UTC)", "strike": "strike",
    "option_type": "call or put", "underlying_price": "the option's ticker's underlying (forward) price",
    "index_price": "the currency's index price at the minute", "bid": "best bid price", "ask": "best ask price",
    "bid_amount": "best bid amount", "ask_amount": "best ask amount", "bid_iv": "bid implied vol (vol points)",
    "ask_iv": "ask implied vol", "mid_iv": "mid implied vol", "mark_price": "Deribit's mark price",
    "mark_iv": "Deribit's mark implied vol", "open_interest": "open interest",
    "stale": "the book was stale at the minute", "in_surface": "the quote was in the surface fit's input",
}


class ArchiveError(Exception):
    """The archive or export cannot go on; the text says why. Nothing was removed from the database."""


class ArgumentError(ArchiveError):
    """A bad date, currency or output directory (exit status 2)."""


# -- the datasets' columns ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Column_:
    name: str
    type: pa.DataType
    expression: Any  # a SQLAlchemy column expression


@dataclass(frozen=True)
class Dataset:
    name: str
    #: the columns for a dialect (postgres: NaN stands for NULL in option_minutes)
    columns: Callable[[bool], list[Column_]]
    #: the FROM and WHERE of a currency-day: (from clause, conditions)
    scope: Callable[[str, dt.datetime, dt.datetime], tuple[Any, list[Any]]]
    #: the file's row order (column names): an instrument's minutes together compress best
    order: tuple[str, ...]
    #: the database table whose rows the dataset's rows are (counted before removal)
    table: str
    #: the natural key of a row (columns): a day's file holds each key once
    key: tuple[str, ...]
    descriptions: dict[str, str] = field(default_factory=dict)


def _nan_null(column: Any, postgres: bool) -> Any:
    return func.nullif(column, literal_column("'NaN'")) if postgres else column


def _real_as_double(column: Any, postgres: bool) -> Any:
    """A real as the decimal it holds (as the view gives it), NULL for NaN."""
    value = _nan_null(column, postgres)
    return cast(cast(value, Text), Double) if postgres else value


def _quote_columns(postgres: bool) -> list[Column_]:
    o, i, e, c = option_minutes.c, instruments.c, expiry_minutes.c, chain_minutes.c
    ref = o.instrument_ref
    return [
        Column_("minute", TIMESTAMP, o.minute),
        Column_("instrument", pa.string(), i.name),
        Column_("expiry", TIMESTAMP, i.expiry),
        Column_("strike", pa.float64(), i.strike),
        Column_("option_type", pa.string(), i.option_type),
        Column_("underlying_price", pa.float64(), e.underlying_price + _real_as_double(o.underlying_offset, postgres)),
        Column_("index_price", pa.float64(), c.index_price),
        *(Column_(name, pa.float32(), _nan_null(o[name], postgres)) for name in VALUE_FIELDS),
        Column_("stale", pa.bool_(), ref.op("&")(literal_column(str(FLAG_STALE))) != 0),
        Column_("in_surface", pa.bool_(), ref.op("&")(literal_column(str(FLAG_IN_SURFACE))) != 0),
    ]


def _quote_scope(currency: str, start: dt.datetime, end: dt.datetime) -> tuple[Any, list[Any]]:
    o, i, e, c = option_minutes.c, instruments.c, expiry_minutes.c, chain_minutes.c
    joined = (option_minutes.join(instruments, _of_instrument(o.instrument_ref, i.id))
              .join(expiry_minutes, and_(e.minute == o.minute, e.currency == i.currency, e.expiry == i.expiry))
              .join(chain_minutes, and_(c.minute == o.minute, c.currency == i.currency)))
    return joined, [i.currency == currency, o.minute >= start, o.minute < end, e.minute >= start, e.minute < end,
                    c.minute >= start, c.minute < end]


def _arrow_type(column: Any) -> pa.DataType:
    if isinstance(column.type, DateTime):
        return TIMESTAMP
    if isinstance(column.type, Boolean):
        return pa.bool_()
    if isinstance(column.type, Integer):
        return pa.int32()
    if isinstance(column.type, Double):
        return pa.float64()
    return pa.string()


def _table_dataset(table: Any, order: Sequence[str], key: Sequence[str]) -> Dataset:
    def columns(_postgres: bool) -> list[Column_]:
        return [Column_(c.name, _arrow_type(c), c) for c in table.columns if c.name != "currency"]

    def scope(currency: str, start: dt.datetime, end: dt.datetime) -> tuple[Any, list[Any]]:
        return table, [table.c.currency == currency, table.c.minute >= start, table.c.minute < end]

    return Dataset(table.name, columns, scope, tuple(order), table.name, tuple(key))


DATASET = {
    "quotes": Dataset("quotes", _quote_columns, _quote_scope, ("instrument", "minute"), "option_minutes",
                      ("instrument", "minute"), QUOTE_DESCRIPTIONS),
    "surface_points": _table_dataset(surface_points, ("minute", "method", "tenor_days", "log_moneyness"),
                                     ("minute", "method", "tenor_days", "log_moneyness")),
    "surface_fits": _table_dataset(surface_fits, ("minute", "expiry"), ("minute", "expiry")),
    "volatility_index": _table_dataset(volatility_index, ("minute",), ("minute",)),
    "minute_coverage": _table_dataset(minute_coverage, ("minute",), ("minute",)),
}


def arrow_schema(dataset: Dataset) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, metadata={"description": dataset.descriptions[c.name]}
                               if c.name in dataset.descriptions else None) for c in dataset.columns(False)])


def _count_query(dataset: Dataset, currency: str, start: dt.datetime, end: dt.datetime) -> Any:
    """The database rows a dataset's file of a currency-day must hold."""
    if dataset.name == "quotes":  # option rows by their instrument's currency (no other join: a lost row shows)
        o, i = option_minutes.c, instruments.c
        return (select(func.count()).select_from(option_minutes.join(instruments, _of_instrument(o.instrument_ref,
                                                                                                   i.id)))
                .where(i.currency == currency, o.minute >= start, o.minute < end))
    from_, where = dataset.scope(currency, start, end)
    return select(func.count()).select_from(from_).where(*where)


# -- days, paths ---------------------------------------------------------------------------------------

def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + DAY


def parse_day(text_: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text_.strip())
    except ValueError:
        raise ArgumentError(f"{flag} {text_!r}: expected a UTC date such as 2026-12-01") from None


def day_dir(out: Path, dataset: str, currency: str, day: dt.date) -> Path:
    return out / dataset / f"currency={currency}" / f"date={day.isoformat()}"


def check_out_dir(out: Path) -> Path:
    """``out`` made if missing, and writable; :class:`ArgumentError` when it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ArgumentError(f"--out {str(out)!r}: cannot write there ({exc.strerror or exc})") from None
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clear_temporaries(directory: Path) -> None:
    for leftover in directory.glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)


# -- reading the database -------------------------------------------------------------------------

def _pg_expression(column: Column_) -> Any:
    """PostgreSQL's COPY text of a column that pyarrow's CSV reader parses exactly: times as unix
    milliseconds, booleans as 0/1."""
    if column.type == TIMESTAMP:
        return cast(func.round(func.extract("epoch", column.expression) * 1000), BigInteger).label(column.name)
    if column.type == pa.bool_():
        return cast(column.expression, Integer).label(column.name)
    return column.expression.label(column.name)


def _csv_type(arrow_type: pa.DataType) -> pa.DataType:
    if arrow_type == TIMESTAMP:
        return pa.int64()
    if arrow_type == pa.bool_():
        return pa.int8()
    if arrow_type == pa.float32():
        return pa.float64()  # the real's shortest decimal, then to float4: the stored value exactly
    return arrow_type


def _as_schema(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = [batch.column(f.name).cast(f.type, safe=False) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _batches_postgres(conn: Connection, dataset: Dataset, currency: str, start: dt.datetime,
                      end: dt.datetime, spill: Path) -> Iterator[pa.Table]:
    columns = dataset.columns(True)
    from_, where = dataset.scope(currency, start, end)
    query = select(*(_pg_expression(c) for c in columns)).select_from(from_).where(*where)
    body = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with spill.open("wb") as sink:
            cursor.copy_expert(f"COPY ({body}) TO STDOUT WITH (FORMAT csv)", sink)
    finally:
        cursor.close()
    if spill.stat().st_size == 0:
        return
    schema = arrow_schema(dataset)
    convert = pacsv.ConvertOptions(column_types={c.name: _csv_type(c.type) for c in columns}, null_values=[""],
                                   strings_can_be_null=True, quoted_strings_can_be_null=False)
    reader = pacsv.open_csv(spill, read_options=pacsv.ReadOptions(column_names=[c.name for c in columns],
                                                                  block_size=8 << 20),
                            convert_options=convert)
    for batch in reader:
        yield _as_schema(batch, schema)


def _batches_sqlite(conn: Connection, dataset: Dataset, currency: str, start: dt.datetime,
                    end: dt.datetime) -> Iterator[pa.Table]:
    columns = dataset.columns(False)
    from_, where = dataset.scope(currency, start, end)
    query = select(*(c.expression.label(c.name) for c in columns)).select_from(from_).where(*where)
    result = conn.execute(query)
    schema = arrow_schema(dataset)
    while rows := result.fetchmany(50_000):
        values = list(zip(*rows, strict=True))
        arrays = []
        for column, vals in zip(columns, values, strict=True):
            if column.type == TIMESTAMP:
                vals = tuple(None if v is None else (v.replace(tzinfo=UTC) if v.tzinfo is None else v) for v in vals)
            elif column.type == pa.bool_():
                vals = tuple(None if v is None else bool(v) for v in vals)
            arrays.append(pa.array(vals, type=pa.float64() if column.type == pa.float32() else column.type))
        yield _as_schema(pa.Table.from_arrays(arrays, names=[c.name for c in columns]), schema)


# -- writing one file -------------------------------------------------------------------------------

@dataclass
class Written:
    dataset: str
    currency: str
    day: dt.date
    path: Path
    #: the database's rows written (what the day's removal counts again)
    rows: int
    bytes: int
    #: the rows the file holds: ``rows`` and those of the day's files already there that the database no
    #: longer holds (a day archived before, a late minute of it written since), each key once
    file_rows: int = -1

    def __post_init__(self) -> None:
        if self.file_rows < 0:
            self.file_rows = self.rows


def _file_metadata(dataset: str, currency: str, day: dt.date, rows: int, first: Any, last: Any,
                   source: str) -> dict[bytes, bytes]:
    meta = {"deribit_desk.dataset": dataset, "deribit_desk.currency": currency, "deribit_desk.date": day.isoformat(),
            "deribit_desk.rows": str(rows), "deribit_desk.first_minute": str(first or ""),
            "deribit_desk.last_minute": str(last or ""), "deribit_desk.schema_version": str(SCHEMA_VERSION),
            "deribit_desk.source": source, "deribit_desk.units": UNITS,
            "deribit_desk.written_at": dt.datetime.now(UTC).isoformat(timespec="seconds")}
    if dataset == "quotes":
        meta["deribit_desk.greeks"] = GREEKS_NOTE
    return {k.encode(): v.encode() for k, v in meta.items()}


def file_rows(path: Path) -> int:
    """The rows a Parquet file says it holds (its footer), checked against its own metadata."""
    meta = pq.read_metadata(path)
    said = (meta.metadata or {}).get(b"deribit_desk.rows")
    if said is None or int(said) != meta.num_rows:
        raise ArchiveError(f"{path}: its metadata says {said!r} rows, its footer {meta.num_rows}")
    return int(meta.num_rows)


def _writer_options(schema: pa.Schema) -> dict[str, Any]:
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    return {"compression": "zstd", "compression_level": ZSTD_LEVEL,
            "use_dictionary": [f.name for f in schema if f.name not in floats],
            "use_byte_stream_split": floats, "write_statistics": True}


def _unique_first(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """``table``'s rows with each ``key`` once: the first of each (in no particular order)."""
    numbered = table.select(list(key)).append_column("_row", pa.array(range(table.num_rows), type=pa.int64()))
    first = numbered.group_by(list(key), use_threads=False).aggregate([("_row", "min")]).column("_row_min")
    return table.take(first)


def _read_parts(parts: list[Path], schema: pa.Schema) -> pa.Table:
    try:
        return pa.concat_tables([_as_schema(pq.read_table(path), schema) for path in parts])
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise ArchiveError(f"{parts[0].parent}: the day's files already there cannot be read as this version's "
                           f"({exc}); nothing removed") from None


def _check_merged(path: Path, database: pa.Table, key: Sequence[str], rows: int) -> None:
    """The file at ``path`` (read back) holds ``rows`` rows, each key once, every one of the database's."""
    keys = pq.read_table(path, columns=list(key))
    if keys.num_rows != rows:
        raise ArchiveError(f"{path}: reads back {keys.num_rows} rows, {rows} were written; nothing removed")
    if keys.group_by(list(key), use_threads=False).aggregate([]).num_rows != rows:
        raise ArchiveError(f"{path}: a key is there twice; nothing removed")
    missing = database.select(list(key)).join(keys, keys=list(key), join_type="left anti", use_threads=False)
    if missing.num_rows:
        raise ArchiveError(f"{path}: {missing.num_rows} of the database's rows are not in it; nothing removed")


def write_day(conn: Connection, dataset: Dataset, currency: str, day: dt.date, out: Path, source: str) -> Written:
    """Write one dataset's currency-day (the rows the connection's transaction sees) to its place,
    atomically; its row count checked against the database's in the same snapshot.

    A day that already has files (archived before: a late minute of it, spooled and written back after
    its partitions were dropped, came into a new partition) keeps them: the file written is their rows
    merged with the database's, each natural key (:attr:`Dataset.key`) once (the file's row where both
    hold it: the first written, as the database keeps the first of a minute written twice), checked when
    read back (its rows, no key twice, every database row there) before it replaces them (renamed into
    part-0, then any other part file of the day removed: a run killed between leaves rows twice, which
    the next run of the day merges away)."""
    start, end = day_bounds(day)
    expected = int(conn.execute(_count_query(dataset, currency, start, end)).scalar_one())
    directory = day_dir(out, dataset.name, currency, day)
    directory.mkdir(parents=True, exist_ok=True)
    _clear_temporaries(directory)
    final = directory / PART
    temporary = directory / f".{PART}.tmp-{os.getpid()}"
    spill = directory / f".spill.csv.tmp-{os.getpid()}"
    schema = arrow_schema(dataset)
    postgres = conn.dialect.name == "postgresql"
    batches = (_batches_postgres(conn, dataset, currency, start, end, spill) if postgres
               else _batches_sqlite(conn, dataset, currency, start, end))
    earlier = sorted(directory.glob("part-*.parquet"))
    try:
        # The day's rows sorted in memory (a currency-day of quotes is about a million rows, some 60 MB):
        # the database is spared an ORDER BY that would spill to disk.
        parts = list(batches)
        database = pa.concat_tables(parts) if parts else schema.empty_table()
        del parts
        if database.num_rows != expected:
            raise ArchiveError(f"{dataset.name} {currency} {day}: read {database.num_rows} rows, the database holds "
                               f"{expected}; nothing removed")
        table = _unique_first(pa.concat_tables([_read_parts(earlier, schema), database]), dataset.key) \
            if earlier else database
        table = table.sort_by([(name, "ascending") for name in dataset.order])
        rows = table.num_rows
        minutes = table.column("minute")
        first = pc.min(minutes).as_py() if rows else None
        last = pc.max(minutes).as_py() if rows else None
        with pq.ParquetWriter(temporary, schema, **_writer_options(schema)) as writer:
            writer.write_table(table, row_group_size=ROW_GROUP)
            writer.add_key_value_metadata(_file_metadata(dataset.name, currency, day, rows, first, last, source))
        del table, minutes
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        written = file_rows(temporary)
        if earlier:
            _check_merged(temporary, database, dataset.key, rows)
        elif written != expected:
            raise ArchiveError(f"{temporary}: reads back {written} rows, the database holds {expected}")
        del database
        os.replace(temporary, final)
        for other in earlier:
            if other != final:
                other.unlink()
        _fsync_dir(directory)
    finally:
        temporary.unlink(missing_ok=True)
        spill.unlink(missing_ok=True)
    return Written(dataset.name, currency, day, final, expected, final.stat().st_size, rows)


# -- export and archive ---------------------------------------------------------------------------

@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction: counts and rows from the same snapshot."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                yield conn
        else:
            with conn.begin():
                yield conn


def check_schema(engine: Engine) -> None:
    """:class:`ArchiveError` unless the database answers and holds this program's schema version."""
    try:
        with engine.connect() as conn:
            version = conn.execute(select(func.max(schema_version.c.version))).scalar()
    except Exception as exc:
        raise ArchiveError(f"cannot read {mask_url(str(engine.url))}: {str(getattr(exc, 'orig', exc)).strip()}"
                           ) from None
    if version != SCHEMA_VERSION:
        raise ArchiveError(f"{mask_url(str(engine.url))} holds schema version {version}, this program writes "
                           f"version {SCHEMA_VERSION}: run `python -m sql.migrate --db URL` first")


def days_recorded(engine: Engine, before: dt.date | None = None, first: dt.date | None = None,
                  currency: str | None = None) -> list[dt.date]:
    """The UTC days with a chain or coverage row (of ``currency``), from ``first`` to before ``before``."""
    days: set[dt.date] = set()
    with engine.connect() as conn:
        for table in (chain_minutes, minute_coverage, volatility_index):
            if conn.dialect.name == "postgresql":
                day = func.date(func.timezone("UTC", table.c.minute))
            else:
                day = func.substr(table.c.minute, 1, 10)
            query = select(day).distinct()
            if before is not None:
                query = query.where(table.c.minute < day_bounds(before)[0])
            if first is not None:
                query = query.where(table.c.minute >= day_bounds(first)[0])
            if currency is not None:
                query = query.where(table.c.currency == currency)
            for value in conn.execute(query).scalars():
                days.add(value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)))
    return sorted(days)


def currencies_of_day(conn: Connection, day: dt.date) -> list[str]:
    start, end = day_bounds(day)
    found: set[str] = set()
    for table in (chain_minutes, minute_coverage, volatility_index):
        found.update(conn.execute(select(table.c.currency).distinct().where(table.c.minute >= start,
                                                                            table.c.minute < end)).scalars())
    return sorted(found)


def export(engine: Engine, out: Path, *, first: dt.date, last: dt.date, currency: str, what: str,
           progress: Callable[[Written], None] | None = None) -> list[Written]:
    """Write ``what`` (quotes, surface or index) of ``currency`` for each recorded day from ``first``
    to ``last`` (both included) into ``out``; nothing is removed from the database."""
    if what not in WHAT:
        raise ArgumentError(f"--what {what!r}: choose one of {', '.join(WHAT)}")
    if last < first:
        raise ArgumentError(f"--to {last} is before --from {first}")
    check_schema(engine)
    out = check_out_dir(out)
    source = mask_url(str(engine.url))
    written = []
    for day in days_recorded(engine, before=last + DAY, first=first, currency=currency):
        with _snapshot(engine) as conn:
            for name in WHAT[what]:
                item = write_day(conn, DATASET[name], currency, day, out, source)
                written.append(item)
                if progress is not None:
                    progress(item)
    return written


@dataclass
class ArchivedDay:
    day: dt.date
    files: list[Written]
    removed_rows: int
    lock_ms: float


def archive(engine: Engine, out: Path, *, before: dt.date, today: dt.date | None = None,
            progress: Callable[[Written], None] | None = None, deadline: float | None = None) -> list[ArchivedDay]:
    """Archive every recorded day before ``before`` (every currency, every dataset), then remove it
    from the database, a day at a time. ``before`` may not be after ``today`` (UTC): today's minutes
    are still being written. ``deadline`` (time.monotonic): no new day is started past it."""
    today = today or dt.datetime.now(UTC).date()
    if before > today:
        raise ArgumentError(f"--before {before}: after today ({today}, UTC), whose minutes are still being written")
    check_schema(engine)
    out = check_out_dir(out)
    source = mask_url(str(engine.url))
    done = []
    for day in days_recorded(engine, before=before):
        if deadline is not None and time.monotonic() > deadline:
            break
        files: list[Written] = []
        with _snapshot(engine) as conn:
            for currency in currencies_of_day(conn, day):
                for name in DATASETS:
                    item = write_day(conn, DATASET[name], currency, day, out, source)
                    files.append(item)
                    if progress is not None:
                        progress(item)
        removed, lock_ms = remove_day(engine, day, files)
        done.append(ArchivedDay(day, files, removed, lock_ms))
        structlog.get_logger().info("archive_day_done", day=day.isoformat(), files=len(files), rows=removed,
                                    lock_ms=round(lock_ms, 1))
    if engine.dialect.name == "postgresql":
        try:
            _drop_empty_partitions(engine, before)
        except Exception as exc:  # held by readers past the lock timeout: they go at the next run
            structlog.get_logger().warning("archive_empty_partitions_left", error=str(getattr(exc, "orig", exc)))
    return done


def _expected(files: list[Written]) -> dict[str, int]:
    """Rows per database table the day's files took from it, each file checked to be the one written
    (its footer's rows, read back)."""
    totals: dict[str, int] = {}
    for item in files:
        if file_rows(item.path) != item.file_rows:
            raise ArchiveError(f"{item.path}: holds {file_rows(item.path)} rows, {item.file_rows} were written "
                               "(replaced meanwhile?); nothing removed")
        table = DATASET[item.dataset].table
        totals[table] = totals.get(table, 0) + item.rows
    return totals


def _day_counts(conn: Connection, day: dt.date) -> dict[str, int]:
    start, end = day_bounds(day)
    tables = {DATASET[name].table for name in DATASETS}
    counts = {}
    for name in tables:
        table = {t.name: t for t in (option_minutes, surface_points, surface_fits, volatility_index,
                                     minute_coverage)}[name]
        counts[name] = int(conn.execute(select(func.count()).select_from(table).where(
            table.c.minute >= start, table.c.minute < end)).scalar_one())
    return counts


def remove_day(engine: Engine, day: dt.date, files: list[Written]) -> tuple[int, float]:
    """Remove ``day`` from the database once its rows are the files' (counted again under a lock);
    returns (rows removed, ms the day's tables were locked). :class:`ArchiveError` (nothing removed)
    when they differ."""
    expected = _expected(files)
    postgres = engine.dialect.name == "postgresql"
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            with engine.connect() as conn:
                if not postgres:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        t0 = time.perf_counter()
                        removed = _remove_sqlite(conn, day, expected)
                        conn.exec_driver_sql("COMMIT")
                    except BaseException:
                        conn.exec_driver_sql("ROLLBACK")
                        raise
                    return removed, (time.perf_counter() - t0) * 1000
                with conn.begin():
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    t0 = time.perf_counter()
                    # The writer's order: a minute being written finishes first, the next waits.
                    conn.exec_driver_sql(f"LOCK TABLE {', '.join(PARTITIONED)} IN ACCESS EXCLUSIVE MODE")
                    removed = _remove_postgres(conn, day, expected)
                return removed, (time.perf_counter() - t0) * 1000
        except ArchiveError:
            raise
        except Exception as exc:
            code = getattr(getattr(exc, "orig", None), "pgcode", None)
            if code == "55P03" and attempt < LOCK_TRIES:  # lock_timeout: readers or a writer held the tables
                time.sleep(0.5 * attempt)
                continue
            raise ArchiveError(f"{day}: cannot remove the archived day: {str(getattr(exc, 'orig', exc)).strip()}; "
                               "the database is unchanged, run the archive again") from None
    raise AssertionError("unreachable")


def _compare(day: dt.date, counts: dict[str, int], expected: dict[str, int]) -> None:
    for table, count in counts.items():
        if count != expected.get(table, 0):
            raise ArchiveError(f"{day}: {table} holds {count} rows of the day, the archive's files "
                               f"{expected.get(table, 0)} (written meanwhile?); nothing removed, run the archive "
                               "again")


def _remove_postgres(conn: Connection, day: dt.date, expected: dict[str, int]) -> int:
    _compare(day, _day_counts(conn, day), expected)
    removed = sum(expected.values())
    for table in PARTITIONED:
        name = partition_name(table, day)
        if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is None:
            continue
        conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {name}")
        conn.exec_driver_sql(f"DROP TABLE {name}")
    return removed


def _remove_sqlite(conn: Connection, day: dt.date, expected: dict[str, int]) -> int:
    _compare(day, _day_counts(conn, day), expected)
    start, end = day_bounds(day)
    for table in (option_minutes, expiry_minutes, chain_minutes, minute_coverage, surface_points, surface_fits,
                  volatility_index):
        conn.execute(table.delete().where(table.c.minute >= start, table.c.minute < end))
    return sum(expected.values())


def _drop_empty_partitions(engine: Engine, before: dt.date) -> None:
    """Partitions of days before ``before`` that hold nothing (made ahead, never written) go too."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
        for table in PARTITIONED:
            for name in existing_partitions(conn, table):
                day = dt.datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
                if day < before and conn.execute(text(f"SELECT NOT EXISTS (SELECT 1 FROM {name})")).scalar():
                    conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {name}")
                    conn.exec_driver_sql(f"DROP TABLE {name}")


def default_archive_dir(data_dir: str, configured: str = "") -> Path:
    return Path(configured) if configured else Path(data_dir) / "archive"
