"""Typed settings: defaults (config/default.toml) < settings file < environment < command line.

The constraints are declared on the types (msgspec ``Meta``: positive, at least one, ranges,
choices, patterns); the few that relate two keys are checked in ``__post_init__``. The layers are
merged, remembering which layer set each key, and the result is validated once: an error names
where the bad value came from (the file, the environment variable or the flag), the key and what
was expected. ``config show`` and ``run`` load through the same :func:`load_settings`, so they
refuse the same values.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
import tomli_w
from msgspec import Meta

from deribit.constants import VENUE_URLS
from deribit.instruments import FAMILY_FORMS, family_of
from runtime.secrets import clip, mask_url, mask_value, url_passwords

DEFAULTS_PATH = Path(__file__).with_name("default.toml")

# -- constrained types ---------------------------------------------------------------------------
# Floats are finite: TOML and the flags take `inf` and `nan`, which no setting means (NaN fails
# every comparison, so gt/ge already refuse it; a bound at the largest float refuses infinity).
_LARGEST = sys.float_info.max
Positive = Annotated[float, Meta(gt=0, le=_LARGEST, description="a finite number above 0")]
NonNegative = Annotated[float, Meta(ge=0, le=_LARGEST, description="a finite number, 0 or more")]
Finite = Annotated[float, Meta(ge=-_LARGEST, le=_LARGEST, description="a finite number")]
Count = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535, description="0 (a free loopback port) to 65535")]
#: A currency family: ``BTC``/``ETH`` (inverse, coin-settled) or ``COIN_USDC`` (linear, USDC-settled).
#: Checked by :func:`_family_refusal` (deribit.instruments.family_of says what a family is).
Currency = Annotated[str, Meta(description=FAMILY_FORMS)]
TimeOfDay = Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="a UTC time of day as HH:MM")]
#: A venue's websocket endpoint: empty (the venue's own: deribit.constants.VENUE_URLS, or the embedded
#: simulator) or the URL of any Deribit-compatible venue (a simulator started on its own, a proxy).
VenueURL = Annotated[str, Meta(pattern=r"^(wss?://[^\s/?#@]+(/\S*)?)?$",
                               description="empty (the venue's own) or a websocket URL such as "
                                           "ws://127.0.0.1:8765/ws/api/v2 or wss://HOST/ws/api/v2")]
HedgeInstrument = Annotated[str, Meta(pattern=r"^[^_-]+-[^-]+$",
                                      description="a future or perpetual name such as BTC-PERPETUAL or BTC-24SEP21")]

#: The widest rehedge band, in coins of delta (``hedger.max_delta_mismatch`` and the console's live
#: ``setHedgeDeltaStep``, which the Hedger checks again). One bound for every currency, as the band is
#: one setting for all of them: 5 BTC (about 300,000 USD at 60,000) is already wider than any desk
#: hedges with, while 5 ETH (about 15,000 USD at 3,000) still lets a large ETH book use a wide band.
#: Above it is a typo (``setHedgeDeltaStep:560000``) that would switch hedging off without a word.
MAX_DELTA_MISMATCH = 5.0
MAX_VEGA_BAND_USD = 1e7
VegaBand = Annotated[float, Meta(gt=0, le=MAX_VEGA_BAND_USD,
                                 description=f"above 0, at most {MAX_VEGA_BAND_USD:,.0f} USD per vol point")]
MIN_VEGA_TENOR_DAYS, MAX_VEGA_TENOR_DAYS = 1.0, 400.0
VegaTenor = Annotated[float, Meta(ge=MIN_VEGA_TENOR_DAYS, le=MAX_VEGA_TENOR_DAYS, description="1 to 400 days")]
DeltaBand = Annotated[float, Meta(gt=0, le=MAX_DELTA_MISMATCH,
                                  description=f"above 0 and at most {MAX_DELTA_MISMATCH:g} coins of delta")]
#: The widest ``deribit.replay_max_jump_s``: every minute of a jump is replayed as a tick, so an
#: unbounded one would let one wrong time tick for hours.
MAX_REPLAY_JUMP_S = 31 * 86_400.0
#: The largest console size multiplier (a typo guard: the largest amount, 10,000, times it is 1e9 USD).
MAX_SIZE_MULTIPLIER = 100_000.0


def _refuse(keys: str, text: str) -> ValueError:
    """A ``__post_init__`` error about ``keys`` (comma-separated, of the struct): the loader names
    the first key in the message and the layer that last set any of them as the source."""
    return ValueError(f"{keys}: {text}")


def _family_refusal(currencies: tuple[str, ...]) -> str | None:
    """What is wrong with a list of currency families (an unknown one, one named twice), or None."""
    for name in currencies:
        try:
            family_of(name)
        except ValueError as exc:
            return str(exc)
    twice = sorted({name for name in currencies if currencies.count(name) > 1})
    if twice:
        return f"{', '.join(twice)} named twice; name each family once"
    return None


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class DeribitSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: VenueURL
    client_id: str
    client_secret: str
    auth_method: Literal["client_signature", "client_credentials"]
    book_interval: Literal["100ms", "raw"]
    heartbeat_s: Positive
    subscribe_batch_size: Count
    subscribe_requests_per_s: Positive
    order_requests_per_s: Positive
    order_burst: Count
    settlement_history_delay_s: NonNegative
    reconnect_initial_s: Positive
    reconnect_max_s: Positive
    healthy_after_s: NonNegative
    request_timeout_s: Positive
    cancel_on_disconnect: bool
    safe_shutdown_s: Positive
    record_wire: str
    replay_max_jump_s: Annotated[float, Meta(gt=0, le=MAX_REPLAY_JUMP_S,
                                             description="above 0 and at most 31 days (2678400 s)")]
    warm_up_ms: Annotated[float, Meta(ge=0, le=_LARGEST, description="0 (off) or more")]
    max_clock_ahead_s: Positive

    def __post_init__(self) -> None:
        if self.record_wire:
            _check_place("record_wire", self.record_wire, directory=False)
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise _refuse("reconnect_max_s, reconnect_initial_s",
                          f"must not be below reconnect_initial_s ({self.reconnect_initial_s!r}), "
                          f"got {self.reconnect_max_s!r}")


class SimulatorSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    port: Port
    seed: int
    client_id: str
    client_secret: str
    initial_btc: NonNegative
    initial_eth: NonNegative
    updates_per_s: NonNegative
    option_taker_hits_per_s: NonNegative = 0.2


class DatabaseSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    allow_in_memory: bool

    def __post_init__(self) -> None:
        if self.url:
            refusal = database_url_refusal(self.url, self.allow_in_memory)
            if refusal is not None:
                # An in-memory URL's refusal is also about allow_in_memory: the source named is the
                # last layer that set either.
                raise _refuse("url, allow_in_memory" if "in-memory" in refusal else "url", refusal)


def database_url_refusal(url: str, allow_in_memory: bool = False) -> str | None:
    """Why the program cannot keep its data at ``url``, or None; the text shows the URL masked.
    SQLite: an in-memory database loses everything at exit (refused unless ``allow_in_memory``), a
    file must be one the program can create or write. PostgreSQL: a host (or ``?host=`` socket
    directory) and a database are named, never left to the driver's defaults."""
    # Imported here: most loads have no URL (SQLite under data_dir) and need no SQLAlchemy.
    from sql.engine import DatabaseURLError, check_url

    shown = repr(clip(mask_url(url), SHOWN_CHARS))
    if url.partition("?")[0].count("@") > 1:
        return (f"database URL {shown} holds more than one @: an @ inside the user name or password is "
                f"written %40 (URL-encoded), e.g. postgresql+psycopg2://desk:p%40ss@host/db")
    try:
        parsed = check_url(url)
    except DatabaseURLError as exc:
        return str(exc)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if _in_memory(parsed):
            if allow_in_memory:
                return None
            return (f"database URL {shown} is an in-memory SQLite database: everything recorded is lost at "
                    f"exit; give a file (sqlite:///data/deribit.sqlite3), or set database.allow_in_memory = true "
                    f"to mean it")
        if database.startswith("file:"):
            return None  # a SQLite URI: its path is SQLite's to read
        refusal = path_refusal(Path(database).expanduser(), directory=False)
        return None if refusal is None else f"database URL {shown}: {refusal}"
    if not (parsed.host or parsed.query.get("host")):
        return (f"database URL {shown} names no host: write postgresql+psycopg2://USER@HOST/DATABASE "
                f"(or ?host=/SOCKET/DIR for a local socket)")
    if not parsed.database:
        return f"database URL {shown} names no database: write postgresql+psycopg2://USER@HOST/DATABASE"
    return None


def _in_memory(parsed: Any) -> bool:
    """Whether a parsed SQLite URL (sqlalchemy URL) is an in-memory database: no path, ``:memory:``,
    or a ``file:`` URI of ``:memory:`` or ``mode=memory``."""
    database = parsed.database or ""
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory" or (
        database.startswith("file:") and ":memory:" in database)


#: The most of a value (a path, a URL) an error message quotes.
SHOWN_CHARS = 200


def _check_place(key: str, path: str, *, directory: bool) -> None:
    """Refuse ``key`` (of the struct being checked) when the program could not write at ``path``."""
    refusal = path_refusal(Path(path).expanduser(), directory=directory)
    if refusal is not None:
        raise _refuse(key, refusal)


def _path_limits() -> tuple[int, int]:
    """The system's longest path and longest name in it (POSIX minimums where it does not say)."""
    try:
        return os.pathconf("/", "PC_PATH_MAX"), os.pathconf("/", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096, 255


def path_refusal(path: Path, *, directory: bool) -> str | None:
    """Why the program could not create or write ``path`` (a directory, or a file), or None. Only
    looks (stat, access): nothing is created at load."""
    longest_path, longest_name = _path_limits()
    text = os.fspath(path)
    if "\x00" in text:
        return "the path holds a NUL character"
    if len(os.fsencode(text)) >= longest_path:
        return f"the path is {len(text):,} characters long; this system takes at most {longest_path - 1:,}"
    for name in path.parts:
        if len(os.fsencode(name)) > longest_name:
            return f"a name in the path is {len(name):,} characters long; this system takes at most {longest_name}"
    what = "directory" if directory else "file"
    shown = clip(text, SHOWN_CHARS)
    probe = path
    try:
        while True:
            try:
                mode = os.stat(probe).st_mode
                break
            except (FileNotFoundError, NotADirectoryError):  # not there, or under a file: look above
                if probe.parent == probe:
                    return f"{shown} cannot be created: nothing of it exists"
                probe = probe.parent
        if probe == path:
            if directory and not stat.S_ISDIR(mode):
                return f"{shown} is not a directory"
            if not directory and stat.S_ISDIR(mode):
                return f"{shown} is a directory, not a {what}"
            if not os.access(path, os.W_OK | (os.X_OK if directory else os.R_OK)):
                return f"{shown} is not writable"
            return None
        if not stat.S_ISDIR(mode):
            return f"{shown} cannot be created: {clip(os.fspath(probe), SHOWN_CHARS)} is not a directory"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"{shown} cannot be created: {clip(os.fspath(probe), SHOWN_CHARS)} is not writable"
    except OSError as exc:
        return f"{shown} cannot be used: {exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}"
    return None


class LoggingSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dir: str
    level: Literal["debug", "info", "warning", "error"]
    # A logged text longer than this is cut, its full length noted (runtime/logs.py).
    max_field_chars: Annotated[int, Meta(ge=64, le=10_000_000, description="64 to 10,000,000 characters")]

    def __post_init__(self) -> None:
        _check_place("dir", self.dir, directory=True)


class SupervisorSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_restarts: NonNegativeInt
    restart_window_s: Positive
    backoff_initial_s: Positive
    backoff_max_s: Positive
    rollover_utc: TimeOfDay

    def __post_init__(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise _refuse("backoff_max_s, backoff_initial_s",
                          f"must not be below backoff_initial_s ({self.backoff_initial_s!r}), "
                          f"got {self.backoff_max_s!r}")


class SurfaceSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Literal["essvi", "svi", "linear"]
    tenor_days: Annotated[tuple[Positive, ...], Meta(min_length=1)]
    log_moneyness: tuple[Finite, ...]
    #: the share of listed options with a two-sided book and a ticker below which a minute is
    #: incomplete (its quotes recorded, no surface or index); 0 records every minute with a usable quote
    min_coverage: Annotated[float, Meta(ge=0, le=1, description="a share from 0 to 1")]

    def __post_init__(self) -> None:
        # The 30-day figures (ATM vol beside the variance index) and the ATM term structure are read off the grid.
        if list(self.tenor_days) != sorted(set(self.tenor_days)):
            raise _refuse("tenor_days", f"must be strictly increasing, got {list(self.tenor_days)}")
        if 30 not in self.tenor_days:
            raise _refuse("tenor_days", f"must include 30 (the variance index's tenor), got {list(self.tenor_days)}")
        if list(self.log_moneyness) != sorted(set(self.log_moneyness)) or 0 not in self.log_moneyness:
            raise _refuse("log_moneyness", f"must be strictly increasing and include 0 (ATM), "
                                           f"got {list(self.log_moneyness)}")


class RecorderSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    spool_dir: str
    retry_initial_s: Positive
    retry_max_s: Positive
    sqlite_busy_timeout_s: NonNegative
    connect_timeout_s: Positive
    write_deadline_s: Positive
    # PostgreSQL: days of partitions the Recorder makes ahead beyond today (at start, at each new day)
    partition_days_ahead: Annotated[int, Meta(ge=0, le=366)] = 3
    # The Parquet archive (sql/archive.py): where it is (empty: <data_dir>/archive), what is kept in the
    # database (days before today minus archive_keep_days are archived daily by the Recorder; 0: off)
    # and how long one daily run (finished days ordered, then archived: sql/maintenance.py) may go on
    # before it stops at a day's end
    archive_dir: str = ""
    archive_keep_days: Annotated[int, Meta(ge=0, le=36_500)] = 0
    archive_budget_s: Positive = 1800.0

    def __post_init__(self) -> None:
        if self.spool_dir:
            _check_place("spool_dir", self.spool_dir, directory=True)
        if self.archive_dir:
            _check_place("archive_dir", self.archive_dir, directory=True)
        if self.retry_max_s < self.retry_initial_s:
            raise _refuse("retry_max_s, retry_initial_s",
                          f"must not be below retry_initial_s ({self.retry_initial_s!r}), got {self.retry_max_s!r}")


class BooksSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    publish_option_top: bool
    resync_retry_s: Positive


class PortfolioSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mark_publish_s: NonNegative


class HedgerSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The delta hedger (actors/hedger.py, logic in desk/hedging.py and desk/hedge_decision.py)."""

    active_on_start: bool
    currencies: tuple[Currency, ...]
    instruments: tuple[HedgeInstrument, ...]
    mode: Literal["options_vs_hedge", "net"]
    delta_source: Literal["black76", "premium_adjusted", "exchange"]
    max_delta_mismatch: DeltaBand
    order_type: Literal["market", "limit"]
    reprice_after_s: Positive
    max_reprices: NonNegativeInt
    max_order_usd: Positive
    max_orders_per_minute: Count
    max_daily_volume_usd: Positive
    stale_after_s: Positive
    delta_disagreement_warn: Positive
    fill_wait_s: Positive
    max_rejections: Count
    retry_after_reject_s: NonNegative
    max_index_deviation_pct: Annotated[float, Meta(gt=0, le=50, description="above 0, at most 50 (percent)")]
    max_mark_outside_book_pct: Annotated[float, Meta(gt=0, le=50, description="above 0, at most 50 (percent)")]
    max_iv_pct: Annotated[float, Meta(gt=0, le=100000, description="above 0, at most 100000 (percent)")]
    reverse_after_s: Annotated[float, Meta(ge=0, le=60, description="0 (off) to 60 seconds")]
    # Activation waits for a confirmation when the first order is above this (or the hedge
    # instrument holds a position the hedger did not make); the plan shown expires after confirm_within_s.
    confirm_above_usd: Positive
    confirm_within_s: Annotated[float, Meta(gt=0, le=600, description="seconds, at most 600")]
    # Vega hedging (desk/vega_hedging.py): keeps each hedged currency's option vega (USD per vol
    # point) within vega_band_usd of vega_target_usd with one option (the at-the-money option of the
    # expiry nearest vega_tenor_days), at most vega_max_order_coins an order.
    vega_active_on_start: bool = False
    vega_band_usd: VegaBand = 2000.0
    vega_target_usd: Annotated[float, Meta(ge=-1e9, le=1e9, description="USD per vol point, within +-1e9")] = 0.0
    vega_tenor_days: VegaTenor = 30.0
    vega_min_days: Annotated[float, Meta(ge=0, le=30, description="0 to 30 days")] = 2.0
    vega_max_order_coins: Annotated[float, Meta(gt=0, le=10000, description="above 0, at most 10000 coins")] = 10.0
    vega_max_orders_per_minute: Count = 4
    vega_max_orders_per_day: Count = 200
    vega_max_daily_volume_coins: Annotated[float, Meta(gt=0, le=1e6, description="above 0, at most 1e6 coins")] = 200.0
    vega_max_price_deviation_pct: Annotated[float, Meta(gt=0, le=50,
                                                         description="above 0, at most 50 (percent)")] = 10.0

    def __post_init__(self) -> None:
        refusal = _family_refusal(self.currencies)
        if refusal is not None:
            raise _refuse("currencies", refusal)
        for name in self.currencies:
            if family_of(name).is_linear:
                # The hedge maths (option deltas against an inverse future sized in USD) is inverse
                # only: a linear family is refused here rather than hedged wrongly.
                raise _refuse("currencies", f"hedging {name} is not supported yet: remove it from [hedger] currencies")
        seen: set[str] = set()
        for name in self.instruments:
            currency = name.partition("-")[0]
            if currency in seen:
                raise _refuse("instruments", f"two hedge instruments for {currency}; give one per currency")
            seen.add(currency)

    @staticmethod
    def band_refusal(value: float, unit: str = "coins") -> str | None:
        """Why ``value`` cannot be the rehedge band (the range of :data:`DeltaBand`), or None."""
        if 0 < value <= MAX_DELTA_MISMATCH:  # NaN compares false
            return None
        return f"the band must be above 0 and at most {MAX_DELTA_MISMATCH:g} {unit} of delta, got {value:g}"

    @staticmethod
    def vega_band_refusal(value: float) -> str | None:
        """Why ``value`` cannot be the vega band (the range of :data:`VegaBand`), or None."""
        if 0 < value <= MAX_VEGA_BAND_USD:  # NaN compares false
            return None
        return f"the vega band must be above 0 and at most {MAX_VEGA_BAND_USD:,.0f} USD per vol point, got {value:g}"

    @staticmethod
    def vega_tenor_refusal(value: float) -> str | None:
        """Why ``value`` cannot be the vega hedge option's tenor (the range of :data:`VegaTenor`), or None."""
        if MIN_VEGA_TENOR_DAYS <= value <= MAX_VEGA_TENOR_DAYS:
            return None
        return (f"the vega tenor must be {MIN_VEGA_TENOR_DAYS:g} to {MAX_VEGA_TENOR_DAYS:g} days, got {value:g}")

    def instrument_for(self, currency: str) -> str:
        """The hedge instrument of ``currency``: the one listed in ``instruments``, else its perpetual."""
        for name in self.instruments:
            if name.partition("-")[0] == currency:
                return name
        return f"{currency}-PERPETUAL"


class ConsoleSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The console (actors/console.py; the language in console/grammar.py)."""

    instrument: str
    size_multiplier: Annotated[float, Meta(ge=0, le=MAX_SIZE_MULTIPLIER,
                                           description=f"0: asked at start-up, or above 0 and at most "
                                                       f"{MAX_SIZE_MULTIPLIER:,.0f}")]
    max_notional_usd: Positive
    max_price_deviation_pct: Positive
    max_option_price_deviation_pct: Positive
    max_ladder_orders: Annotated[int, Meta(ge=2)]
    history_file: str
    startup_timeout_s: Positive
    order_wait_s: Positive
    hedger_wait_s: Positive
    #: A piped ``plan`` line, while a plan is being worked, waits this long at most for it to end.
    plan_wait_s: Positive = 600.0
    #: How often a second the console asks the option BookKeepers for its live chain, traded
    #: option and option positions (each keeper answers in its own thread: kept modest).
    refresh_hz: Annotated[float, Meta(ge=0.5, le=20.0, description="0.5 to 20 times a second")]
    #: The chain's strikes shown on each side of the forward.
    chain_strikes: Annotated[int, Meta(ge=1, le=200, description="1 to 200 strikes each side")]
    #: On a terminal, the line console instead of the full-screen desk (--plain).
    plain: bool = False


#: The scenario grid's bounds (``scenario`` and ``plot scenario``): points on each axis, the
#: underlying's move in percent, the vol shift in vol points and the time step in days.
MAX_SPOT_POINTS = 101
MAX_VOL_POINTS = 41
SPOT_MOVE_RANGE_PCT = (-95.0, 500.0)
VOL_SHIFT_RANGE = (-100.0, 300.0)
MAX_SCENARIO_DAYS = 3650.0


def grid_points(low: float, high: float, step: float) -> tuple[float, ...]:
    """``low``, ``low + step``, ... up to ``high`` (included when the step lands on it), each
    rounded to 8 decimals. The caller checked ``low <= high`` and ``step > 0``."""
    count = math.floor((high - low) / step + 1e-9)
    return tuple(round(low + i * step, 8) for i in range(count + 1))


def scenario_range_refusal(what: str, low: float, high: float, step: float, bounds: tuple[float, float],
                           most: int) -> str | None:
    """Why ``low:high:step`` is not a usable axis of the scenario grid, or None."""
    values = (low, high, step)
    if not all(math.isfinite(v) for v in values):
        return f"{what}: the bounds and the step must be finite numbers"
    if low > high:
        return f"{what}: the low bound {low:g} is above the high bound {high:g}"
    if step <= 0:
        return f"{what}: the step must be above 0, got {step:g}"
    if low < bounds[0] or high > bounds[1]:
        return f"{what}: bounds from {bounds[0]:g} to {bounds[1]:g}, got {low:g} to {high:g}"
    if (high - low) / step + 1 > most + 1e-9:
        return f"{what}: at most {most} points, got {int((high - low) / step + 1e-9) + 1}"
    return None


class RiskSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The console's ``risk`` and ``scenario`` (console/risk_view.py): the scenario grid a bare
    ``scenario`` computes: underlying moves in percent and vol shifts in vol points, each from
    low to high by step, the time step in days (``days_to_expiry``: to the next expiry of a held
    option instead) and how vols move with the underlying (sticky ``moneyness`` or ``strike``)."""

    spot_low_pct: Finite
    spot_high_pct: Finite
    spot_step_pct: Positive
    vol_low: Finite
    vol_high: Finite
    vol_step: Positive
    days: Annotated[float, Meta(ge=0, le=MAX_SCENARIO_DAYS, description=f"0 to {MAX_SCENARIO_DAYS:g} days")]
    days_to_expiry: bool = False
    sticky: Literal["moneyness", "strike"] = "moneyness"

    def __post_init__(self) -> None:
        for key, args in (("spot", (self.spot_low_pct, self.spot_high_pct, self.spot_step_pct, SPOT_MOVE_RANGE_PCT,
                                    MAX_SPOT_POINTS)),
                          ("vol", (self.vol_low, self.vol_high, self.vol_step, VOL_SHIFT_RANGE, MAX_VOL_POINTS))):
            refusal = scenario_range_refusal(f"the {key} axis", *args)
            if refusal is not None:
                names = ("low_pct", "high_pct", "step_pct") if key == "spot" else ("low", "high", "step")
                raise _refuse(", ".join(f"{key}_{n}" for n in names), refusal)

    @property
    def spot_moves_pct(self) -> tuple[float, ...]:
        return grid_points(self.spot_low_pct, self.spot_high_pct, self.spot_step_pct)

    @property
    def vol_shifts(self) -> tuple[float, ...]:
        return grid_points(self.vol_low, self.vol_high, self.vol_step)

class ExposureSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The exposure planner (``target``; desk/exposure.py): its limits, tolerances and candidates."""

    max_legs: Annotated[int, Meta(ge=1, le=20, description="1 to 20 legs")]
    max_leg_notional_usd: Positive
    max_notional_usd: Positive
    max_premium_usd: Positive
    tolerance_pct: Annotated[float, Meta(ge=0, le=100, description="0 to 100 (percent of the change asked for)")]
    delta_band: Positive
    gamma_band_usd: Positive
    vega_band_usd: Positive
    theta_band_usd: Positive
    tenor_window_pct: Annotated[float, Meta(gt=0, le=1000, description="above 0, at most 1000 (percent)")]
    max_spread_pct: Annotated[float, Meta(gt=0, le=200, description="above 0, at most 200 (percent of the mid)")]
    max_quote_age_s: Positive
    max_candidates: Annotated[int, Meta(ge=1, le=2000, description="1 to 2000 options")]
    plan_valid_s: Annotated[float, Meta(gt=0, le=600, description="seconds, at most 600")]
    solve_time_s: Annotated[float, Meta(gt=0, le=60, description="seconds, at most 60")]
    quotes_wait_s: Annotated[float, Meta(gt=0, le=30, description="seconds, at most 30")]
    leg_penalty_usd: NonNegative


class Settings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: Literal["simulator", "testnet", "mainnet"]
    live: bool
    paper: bool
    currencies: tuple[Currency, ...]
    data_dir: str
    deribit: DeribitSettings
    simulator: SimulatorSettings
    database: DatabaseSettings
    logging: LoggingSettings
    supervisor: SupervisorSettings
    surface: SurfaceSettings
    recorder: RecorderSettings
    books: BooksSettings
    portfolio: PortfolioSettings
    hedger: HedgerSettings
    console: ConsoleSettings
    risk: RiskSettings
    exposure: ExposureSettings

    def __post_init__(self) -> None:
        refusal = _family_refusal(self.currencies)
        if refusal is not None:
            raise _refuse("currencies", refusal)
        # data_dir holds the SQLite file when no database URL is given (the URL's file is checked
        # with the URL), the spool by default and the console's history.
        _check_place("data_dir", self.data_dir, directory=True)
        if not self.database.url:
            _check_place("data_dir", str(Path(self.data_dir) / "deribit.sqlite3"), directory=False)
        # Deribit's own endpoints belong to their venue: mainnet's URL under another venue name would
        # trade real money without --live.
        host = urlsplit(self.deribit.url).hostname
        for venue, url in VENUE_URLS.items():
            if host is not None and host == urlsplit(url).hostname and venue != self.venue:
                live = " --live to trade" if venue == "mainnet" else ""
                raise _refuse("venue, deribit", f"deribit.url {self.deribit.url!r} is Deribit {venue}: say "
                                                f"venue = \"{venue}\" (--venue {venue}{live}), got {self.venue!r}")

    @property
    def database_url(self) -> str:
        """The effective URL: the configured one, else SQLite under the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.data_dir) / 'deribit.sqlite3'}"

    @property
    def venue_url(self) -> str | None:
        """Where the desk connects: ``deribit.url`` if given, else the venue's own endpoint; None for
        the simulator venue without a URL (the program starts its embedded simulator)."""
        return self.deribit.url or VENUE_URLS.get(self.venue)

    @property
    def can_trade(self) -> bool:
        """Mainnet trading needs the explicit live flag; testnet and the simulator do not."""
        return self.venue != "mainnet" or self.live

    def secrets(self) -> tuple[str, ...]:
        """Values the logs scrub wherever they appear: the client secrets and the database password
        (as written and percent-decoded)."""
        found = (self.deribit.client_secret, self.simulator.client_secret, *url_passwords(self.database.url))
        return tuple(s for s in found if s)


class SettingsError(Exception):
    """A bad settings value; the message names the source, the key and what was expected."""


# Environment variables with well-known names; anything else as DESK__SECTION__KEY.
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "DERIBIT_CLIENT_ID": ("deribit", "client_id"),
    "DERIBIT_CLIENT_SECRET": ("deribit", "client_secret"),
    "DERIBIT_VENUE": ("venue",),
    "DATABASE_URL": ("database", "url"),
    "LOG_LEVEL": ("logging", "level"),
}
ENV_PREFIX = "DESK__"
#: The account's credentials: from the environment (their ENV_NAMES) or a settings file, never from the
#: command line, where they would stay in the shell's history and the process list.
CREDENTIAL_KEYS: tuple[tuple[str, ...], ...] = (("deribit", "client_id"), ("deribit", "client_secret"))

Key = tuple[str, ...]


def credential_refusal(dotted: str) -> str | None:
    """Why the command line may not set ``dotted`` (a credential, or a table holding one), or None.
    The text names the key only, never a value."""
    key = tuple(part.strip() for part in dotted.split("."))
    held = [c for c in CREDENTIAL_KEYS if c[:len(key)] == key]
    if not held:
        return None
    env = " and ".join(name for name, k in ENV_NAMES.items() if k in held)
    names = " and ".join(c[-1] for c in held)
    return (f"{dotted} holds credentials, which are never taken from the command line; set {env} in the "
            f"environment, or {names} under [{held[0][0]}] in a settings file (--config FILE)")


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _nest(path: Key, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


def _leaves(layer: Mapping[str, Any], prefix: Key = ()) -> list[Key]:
    """The keys a layer sets: tables are walked, anything else (arrays too) is one key."""
    keys: list[Key] = []
    for name, value in layer.items():
        if isinstance(value, Mapping):
            keys.extend(_leaves(value, (*prefix, name)))
        else:
            keys.append((*prefix, name))
    return keys


class _Layers:
    """The merged data and, for each key set, the layer (source) that set it last."""

    def __init__(self, defaults: dict[str, Any], source: str) -> None:
        self.data = defaults
        self.sources = [source]
        self.origin: dict[Key, int] = {}

    def add(self, layer: Mapping[str, Any], source: str) -> None:
        self.data = _merge(self.data, layer)
        self.sources.append(source)
        for key in _leaves(layer):
            self.origin[key] = len(self.sources) - 1

    def source_of(self, keys: tuple[Key, ...]) -> str:
        """The last layer that set any of ``keys`` or anything inside or around them; else the defaults."""
        def related(key: Key) -> bool:
            return any(key[:len(k)] == k or k[:len(key)] == key for k in keys)

        return self.sources[max((i for key, i in self.origin.items() if related(key)), default=0)]

    def validate(self) -> Settings:
        try:
            return msgspec.convert(self.data, Settings)
        except msgspec.ValidationError as exc:
            message, keys = _describe(exc)
            raise SettingsError(f"{self.source_of(keys)}: {message}") from None


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_NAMED = re.compile(r"(?P<names>\w+(?:, \w+)*): (?P<text>.*)", re.DOTALL)


def _describe(error: msgspec.ValidationError) -> tuple[str, tuple[Key, ...]]:
    """The message for a validation error and the keys it is about."""
    text = str(error)
    match = _PATH.search(text)
    path = match.group("path") if match else ""
    what = _PATH.sub("", text)
    where: Key = tuple(part for part in re.sub(r"\[\d+\]", "", path).split(".") if part)
    unknown = _UNKNOWN.fullmatch(what)
    if unknown:
        table = f" in [{'.'.join(where)}]" if where else ""
        return (f"unknown key `{unknown['name']}`{table}; remove it or check its spelling",
                ((*where, unknown["name"]),))
    named = _NAMED.fullmatch(what)
    if named and all(_field_type((*where, name)) is not None for name in named["names"].split(", ")):
        # A __post_init__ check (_refuse): about the keys it names, shown under the first.
        keys = tuple((*where, name) for name in named["names"].split(", "))
        return f"{'.'.join(keys[0])}: {named['text']}", keys
    return f"{path or '(top level)'}: {what[0].lower() + what[1:]}{_hint(where)}", (where,)


def _field_type(key: Key) -> Any:
    """The declared type of a dotted key (``Annotated`` kept), or None if there is no such key."""
    struct: Any = Settings
    for part in key:
        struct = _bare(struct)
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            return None
        fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
        if part not in fields:
            return None
        struct = fields[part]
    return struct


def _bare(kind: Any) -> Any:
    """``Annotated[T, ...]`` as ``T``."""
    return kind.__origin__ if get_origin(kind) is Annotated else kind


def _hint(key: Key) -> str:
    """What the key takes, where msgspec's message does not say it plainly: the choices of a
    Literal, or the description declared with the constraint."""
    kind = _field_type(key)
    if get_origin(_bare(kind)) is tuple:
        kind = get_args(_bare(kind))[0]
    metas = get_args(kind)[1:] if get_origin(kind) is Annotated else ()
    described = [m.description for m in metas if isinstance(m, Meta) and m.description]
    if described:
        return f" ({described[0]})"
    if get_origin(_bare(kind)) is Literal:
        return f" (one of: {', '.join(map(str, get_args(_bare(kind))))})"
    return ""


def _is_str_field(key: Key) -> bool:
    kind = _bare(_field_type(key))
    return kind is str or get_origin(kind) is Literal


def _parse_scalar(text: str, source: str) -> Any:
    """An environment or command-line value: a TOML literal if it is one, else the string."""
    try:
        return _parse_toml(f"v = {text}", source)["v"]
    except SettingsError as exc:
        if "nests" in str(exc):
            raise
        return text


#: The largest settings file read (the defaults are 10 KiB): a bigger one is not a settings file.
MAX_FILE_BYTES = 1 << 20
#: The deepest nesting a settings value may have: the schema has tables of keys holding arrays
#: (3); more is not a setting, and parsing it would exhaust the stack.
MAX_DEPTH = 8


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (tables and arrays), counted no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, Mapping | list | tuple):
        return 0
    children = value.values() if isinstance(value, Mapping) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    """``text`` parsed as TOML, refused naming ``source`` if it is not, or nests too deeply."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        data = None
    if data is None or _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise SettingsError(f"{source}: nests tables or arrays more than {MAX_DEPTH} levels deep; "
                            f"settings nest at most 3 (a table's key holding an array)")
    return data


def read_settings_file(path: Path) -> dict[str, Any]:
    """A settings file's TOML; :class:`SettingsError` saying why not for anything but a readable,
    regular UTF-8 file of at most :data:`MAX_FILE_BYTES` (a directory, a device, a FIFO that would
    block, /proc/self/mem, a huge or binary file)."""
    source = f"settings file {clip(os.fspath(path), SHOWN_CHARS)}"
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not hang; only a regular file is read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SettingsError(f"{source} does not exist; give an existing file to --config") from None
    except IsADirectoryError:
        raise SettingsError(f"{source} is a directory; give a settings file (TOML) to --config") from None
    except OSError as exc:
        raise SettingsError(f"{source} cannot be opened: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SettingsError(f"{source} is a directory; give a settings file (TOML) to --config")
        if not stat.S_ISREG(mode):
            raise SettingsError(f"{source} is not a regular file (a device, FIFO or socket); "
                                f"give a settings file (TOML) to --config")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{source} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise SettingsError(f"{source} is larger than {MAX_FILE_BYTES:,} bytes; a settings file is a few KiB of TOML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{source} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                            f"TOML files are UTF-8") from None
    return _parse_toml(text, source)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings. ``overrides`` maps dotted keys (``deribit.heartbeat_s``)
    to values from the command line; ``flags`` says how each was given (``--venue``), for the
    error message (default ``--set KEY``)."""
    environ = os.environ if environ is None else environ
    with open(DEFAULTS_PATH, "rb") as f:
        layers = _Layers(tomllib.load(f), f"defaults {DEFAULTS_PATH}")

    path: Path | None = Path(config_file) if config_file else None
    if path is None:
        candidate = (cwd or Path.cwd()) / "settings.toml"
        path = candidate if candidate.exists() else None
    if path is not None:
        layers.add(read_settings_file(path), f"settings file {clip(os.fspath(path), SHOWN_CHARS)}")

    for name, value in environ.items():
        if name in ENV_NAMES:
            key = ENV_NAMES[name]
        elif name.startswith(ENV_PREFIX):
            key = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        else:
            continue
        source = f"environment variable {name}"
        if len(key) > MAX_DEPTH:
            raise SettingsError(f"{source}: names a key {len(key)} levels deep; settings nest at most 2 "
                                f"(DESK__SECTION__KEY)")
        layers.add(_nest(key, value if _is_str_field(key) else _parse_scalar(value, source)), source)

    for dotted, value in (overrides or {}).items():
        key = tuple(dotted.split("."))
        flag = (flags or {}).get(dotted, f"--set {dotted}")
        source = f"command line ({flag})"
        if len(key) > MAX_DEPTH:
            raise SettingsError(f"{source}: names a key {len(key)} levels deep; settings nest at most 2 "
                                f"(section.key)")
        if isinstance(value, str) and not _is_str_field(key):
            value = _parse_scalar(value, source)
        layers.add(_nest(key, value), source)
    return layers.validate()


def settings_as_dict(settings: Settings, mask: bool = True) -> dict[str, Any]:
    """The settings as plain data; with ``mask``, secrets and the database password hidden."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    if not mask:
        return data

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        return {key: walk(value) if isinstance(value, dict) else mask_value(key, value)
                for key, value in node.items()}

    out = walk(data)
    out["database"]["url"] = mask_url(out["database"]["url"])
    return out


def render_toml(data: Mapping[str, Any]) -> str:
    """The effective settings as TOML (what `config show` prints)."""
    return tomli_w.dumps(data)
