"""Typed settings: defaults (config/default.toml) < settings file < environment < command line.

Each layer is validated as it is applied, so an error names where the bad value came from
(the file, the environment variable or the flag), the key and what was expected.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

DEFAULTS_PATH = Path(__file__).with_name("default.toml")
MASK = "***"


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class DeribitSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: str
    client_secret: str
    auth_method: Literal["client_signature", "client_credentials"]
    book_interval: Literal["100ms", "raw"]
    heartbeat_s: float
    subscribe_batch_size: int
    subscribe_requests_per_s: float
    order_requests_per_s: float
    order_burst: int
    reconnect_initial_s: float
    reconnect_max_s: float
    healthy_after_s: float
    request_timeout_s: float
    cancel_on_disconnect: bool
    record_wire: str
    warm_up_ms: float


class SimulatorSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    port: int
    seed: int
    client_id: str
    client_secret: str
    initial_btc: float
    initial_eth: float
    updates_per_s: float


class DatabaseSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str


class LoggingSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dir: str
    level: Literal["debug", "info", "warning", "error"]


class SupervisorSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_restarts: int
    restart_window_s: float
    backoff_initial_s: float
    backoff_max_s: float
    rollover_utc: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.rollover_utc):
            raise ValueError(f"expected a UTC time of day as HH:MM, got {self.rollover_utc!r}")


class SurfaceSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    method: Literal["svi", "linear"]
    tenor_days: tuple[float, ...]
    log_moneyness: tuple[float, ...]

    def __post_init__(self) -> None:
        # The 30-day figures (ATM vol beside the variance index) and the ATM term structure are read off the grid.
        if not self.tenor_days or any(t <= 0 for t in self.tenor_days) or list(self.tenor_days) != sorted(
                set(self.tenor_days)):
            raise ValueError(f"tenor_days must be positive and strictly increasing, got {list(self.tenor_days)}")
        if 30 not in self.tenor_days:
            raise ValueError(f"tenor_days must include 30 (the variance index's tenor), got {list(self.tenor_days)}")
        if list(self.log_moneyness) != sorted(set(self.log_moneyness)) or 0 not in self.log_moneyness:
            raise ValueError(f"log_moneyness must be strictly increasing and include 0 (ATM), "
                             f"got {list(self.log_moneyness)}")


class RecorderSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    spool_dir: str
    retry_initial_s: float
    retry_max_s: float
    sqlite_busy_timeout_s: float
    connect_timeout_s: float

    def __post_init__(self) -> None:
        if not 0 < self.retry_initial_s <= self.retry_max_s:
            raise ValueError(f"expected 0 < retry_initial_s <= retry_max_s, got {self.retry_initial_s} "
                             f"and {self.retry_max_s}")
        if self.sqlite_busy_timeout_s < 0 or self.connect_timeout_s <= 0:
            raise ValueError("sqlite_busy_timeout_s must be >= 0 and connect_timeout_s > 0")


class BooksSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    publish_option_top: bool
    resync_retry_s: float

    def __post_init__(self) -> None:
        if not self.resync_retry_s > 0:
            raise ValueError(f"resync_retry_s must be positive, got {self.resync_retry_s}")


class PortfolioSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mark_publish_s: float

    def __post_init__(self) -> None:
        if self.mark_publish_s < 0:
            raise ValueError(f"mark_publish_s must be >= 0, got {self.mark_publish_s}")


class Settings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: Literal["simulator", "testnet", "mainnet"]
    live: bool
    paper: bool
    currencies: tuple[Literal["BTC", "ETH"], ...]
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

    @property
    def database_url(self) -> str:
        """The effective URL: the configured one, else SQLite under the data directory."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.data_dir) / 'deribit.sqlite3'}"

    @property
    def can_trade(self) -> bool:
        """Mainnet trading needs the explicit live flag; testnet and the simulator do not."""
        return self.venue != "mainnet" or self.live

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.deribit.client_secret, self.simulator.client_secret) if s)


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


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`")


def _describe(error: msgspec.ValidationError) -> str:
    text = str(error)
    match = _PATH.search(text)
    where = match.group("path") if match else ""
    what = _PATH.sub("", text)
    what = what.replace("Object contains unknown field", "unknown key")
    if what.startswith("unknown key"):
        known = ""
        return f"{what}{' in [' + where + ']' if where else ''}{known}; remove it or check its spelling"
    choices = _literal_choices(tuple(where.split("."))) if where else ()
    hint = f" (one of: {', '.join(map(str, choices))})" if choices else ""
    return f"{where or '(top level)'}: {what[0].lower() + what[1:]}{hint}"


def _literal_choices(key: tuple[str, ...]) -> tuple[Any, ...]:
    struct: Any = Settings
    for part in key:
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            return ()
        fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
        if part not in fields:
            return ()
        struct = fields[part]
    if getattr(struct, "__origin__", None) is tuple:
        struct = struct.__args__[0]
    return tuple(struct.__args__) if getattr(struct, "__origin__", None) is Literal else ()


def _validate(data: dict[str, Any], source: str, strict: bool = True) -> Settings:
    try:
        return msgspec.convert(data, Settings, strict=strict)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{source}: {_describe(exc)}") from None


def _parse_scalar(text: str) -> Any:
    """An environment or command-line value: a TOML literal if it is one, else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build the effective settings. ``overrides`` maps dotted keys (``deribit.heartbeat_s``)
    to values from the command line."""
    environ = os.environ if environ is None else environ
    with open(DEFAULTS_PATH, "rb") as f:
        data = tomllib.load(f)
    _validate(data, f"defaults {DEFAULTS_PATH}")

    path: Path | None = Path(config_file) if config_file else None
    if path is None:
        candidate = (cwd or Path.cwd()) / "settings.toml"
        path = candidate if candidate.exists() else None
    elif not path.exists():
        raise SettingsError(f"settings file {path} does not exist; give an existing file to --config")
    if path is not None:
        try:
            with open(path, "rb") as f:
                layer = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path}: not valid TOML ({exc})") from None
        data = _merge(data, layer)
        _validate(data, f"settings file {path}")

    for name, value in environ.items():
        if name in ENV_NAMES:
            key = ENV_NAMES[name]
        elif name.startswith(ENV_PREFIX):
            key = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        else:
            continue
        as_str = _is_str_field(key)
        data = _merge(data, _nest(key, value if as_str else _parse_scalar(value)))
        _validate(data, f"environment variable {name}")

    for dotted, value in (overrides or {}).items():
        key = tuple(dotted.split("."))
        if isinstance(value, str) and not _is_str_field(key):
            value = _parse_scalar(value)
        data = _merge(data, _nest(key, value))
        _validate(data, f"command line ({dotted})")
    return _validate(data, "settings")


def _is_str_field(key: tuple[str, ...]) -> bool:
    struct: Any = Settings
    for part in key:
        if not (isinstance(struct, type) and issubclass(struct, msgspec.Struct)):
            return False
        fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
        if part not in fields:
            return False
        struct = fields[part]
    return struct is str or getattr(struct, "__origin__", None) is Literal


def settings_as_dict(settings: Settings, mask: bool = True) -> dict[str, Any]:
    data = msgspec.to_builtins(settings)

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out[key] = walk(value)
            elif mask and re.search(r"secret|token|password", key) and value:
                out[key] = MASK
            else:
                out[key] = value
        return out

    out = walk(data)
    if mask and "database" in out and out["database"].get("url"):
        out["database"]["url"] = re.sub(r"://([^:/@]+):([^@]+)@", r"://\1:" + MASK + "@", out["database"]["url"])
    return out


def render_toml(data: Mapping[str, Any]) -> str:
    """The effective settings as TOML (what `config show` prints)."""
    lines: list[str] = []
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    for key, value in data.items():
        if not isinstance(value, Mapping):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append("")
        lines.append(f"[{key}]")
        for k, v in table.items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class HedgerSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The delta hedger (actors/hedger.py, logic in desk/hedging.py and desk/hedge_decision.py)."""

    active_on_start: bool
    currencies: tuple[Literal["BTC", "ETH"], ...]
    instruments: tuple[str, ...]
    mode: Literal["options_vs_hedge", "net"]
    delta_source: Literal["black76", "premium_adjusted", "exchange"]
    max_delta_mismatch: float
    order_type: Literal["market", "limit"]
    reprice_after_s: float
    max_reprices: int
    max_order_usd: float
    max_orders_per_minute: int
    max_daily_volume_usd: float
    stale_after_s: float
    delta_disagreement_warn: float
    fill_wait_s: float
    max_rejections: int
    retry_after_reject_s: float

    def __post_init__(self) -> None:
        positive = {name: getattr(self, name) for name in (
            "max_delta_mismatch", "reprice_after_s", "max_order_usd", "max_daily_volume_usd",
            "stale_after_s", "delta_disagreement_warn", "fill_wait_s")}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"hedger.{name} must be positive, got {value!r}")
        for name in ("max_orders_per_minute", "max_rejections"):
            if getattr(self, name) < 1:
                raise ValueError(f"hedger.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_reprices < 0 or self.retry_after_reject_s < 0:
            raise ValueError("hedger.max_reprices and hedger.retry_after_reject_s must not be negative")
        seen: set[str] = set()
        for name in self.instruments:
            currency, _, rest = name.partition("-")
            if not rest or "_" in currency or rest.count("-") > 0:
                raise ValueError(f"hedger.instruments: {name!r} is not a future or perpetual name "
                                 "such as BTC-PERPETUAL or BTC-24SEP21")
            if currency in seen:
                raise ValueError(f"hedger.instruments: two hedge instruments for {currency}; give one per currency")
            seen.add(currency)

    def instrument_for(self, currency: str) -> str:
        """The hedge instrument of ``currency``: the one listed in ``instruments``, else its perpetual."""
        for name in self.instruments:
            if name.partition("-")[0] == currency:
                return name
        return f"{currency}-PERPETUAL"


class ConsoleSettings(Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The console (actors/console.py; the language in console/grammar.py)."""

    instrument: str
    size_multiplier: float
    max_notional_usd: float
    max_price_deviation_pct: float
    max_option_price_deviation_pct: float
    max_ladder_orders: int
    history_file: str
    startup_timeout_s: float
    order_wait_s: float
    hedger_wait_s: float

    def __post_init__(self) -> None:
        for name in ("max_notional_usd", "max_price_deviation_pct", "max_option_price_deviation_pct",
                     "startup_timeout_s", "order_wait_s", "hedger_wait_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"console.{name} must be positive, got {getattr(self, name)!r}")
        if self.size_multiplier < 0:
            raise ValueError(f"console.size_multiplier must be positive (or 0: ask), got {self.size_multiplier!r}")
        if self.max_ladder_orders < 2:
            raise ValueError(f"console.max_ladder_orders must be at least 2, got {self.max_ladder_orders!r}")
