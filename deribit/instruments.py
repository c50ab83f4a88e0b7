"""Deribit instrument names and instrument metadata.

Names: options ``BTC-24SEP21-8000-P``, futures ``BTC-24SEP21``, perpetuals ``BTC-PERPETUAL``;
linear (USDC-settled) instruments put the pair first: ``BTC_USDC-PERPETUAL``,
``XRP_USDC-30AUG24-0d625-C`` (a fractional strike writes ``d`` for the decimal point). Dates
are ``{day}{MON}{yy}`` with no leading zero on the day; every expiry is at 08:00 UTC.

Metadata: :func:`identity_of` (what an instrument is, inverse or linear); :class:`Family` (what one
currency setting loads: ``BTC`` inverse, ``SOL_USDC`` linear) and :func:`select_for_family` (which
entries of a list its books take, and why the others are kept out).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any, Literal

import msgspec

from deribit.codec import decode_entries
from messages.market import Instrument, InstrumentsLoaded, TickSizeStep

__all__ = [
    "BOOKED_CLASSES",
    "EXPIRY_HOUR_UTC",
    "FAMILY_FORMS",
    "INVERSE_COINS",
    "LINEAR_SETTLEMENT",
    "Family",
    "FamilySelection",
    "Instrument",
    "InstrumentClass",
    "InstrumentDefect",
    "InstrumentIdentity",
    "InstrumentName",
    "InstrumentNameError",
    "InstrumentsLoaded",
    "LeftOut",
    "Margining",
    "TickSizeStep",
    "amount_step",
    "decode_instrument_list",
    "decode_instruments",
    "expiry_ms",
    "expiry_of",
    "family_name_of",
    "family_of",
    "format_expiry",
    "format_future_name",
    "format_option_name",
    "format_perpetual_name",
    "format_strike",
    "identity_of",
    "instrument_defect",
    "left_out_of",
    "parse_expiry",
    "parse_instrument_name",
    "round_to_contract",
    "round_to_tick",
    "select_for_family",
    "tick_size_at",
]

InstrumentKind = Literal["option", "future", "perpetual"]
RoundingMode = Literal["nearest", "down", "up"]

EXPIRY_HOUR_UTC = 8

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, start=1)}

_EXPECTED_FORMS = (
    "expected CUR-DMMMYY-STRIKE-C|P (option, e.g. BTC-24SEP21-8000-P), "
    "CUR-DMMMYY (future, e.g. BTC-1OCT21) or CUR-PERPETUAL (e.g. BTC-PERPETUAL); "
    "CUR is a coin like BTC or a pair like BTC_USDC"
)
_CURRENCY = re.compile(r"(?P<base>[A-Z0-9]+)(?:_(?P<counter>[A-Z0-9]+))?")
_EXPIRY = re.compile(r"(?P<day>[1-9][0-9]?)(?P<month>[A-Z]{3})(?P<year>[0-9]{2})")
_STRIKE = re.compile(r"(?P<whole>0|[1-9][0-9]*)(?:d(?P<fraction>[0-9]*[1-9]))?")


class InstrumentNameError(ValueError):
    """A text is not a Deribit option, future or perpetual name."""


class InstrumentName(msgspec.Struct, frozen=True, kw_only=True):
    """What an instrument name says.

    ``currency`` is the base coin (``BTC`` also for ``BTC_USDC-...``); ``counter_currency`` is
    the quote of a linear pair (``USDC``) and ``None`` for inverse instruments. ``expiry_ms`` is
    08:00 UTC of the expiry date in milliseconds (``None`` for perpetuals)."""

    name: str
    currency: str
    kind: InstrumentKind
    expiry_ms: int | None = None
    strike: float | None = None
    option_type: Literal["call", "put"] | None = None
    counter_currency: str | None = None

    @property
    def expiry_date(self) -> dt.date | None:
        if self.expiry_ms is None:
            return None
        return dt.datetime.fromtimestamp(self.expiry_ms / 1000, tz=dt.UTC).date()

    @property
    def is_linear(self) -> bool:
        return self.counter_currency is not None


def expiry_ms(expiry: dt.date) -> int:
    """08:00 UTC of ``expiry`` in milliseconds since the epoch."""
    moment = dt.datetime(expiry.year, expiry.month, expiry.day, EXPIRY_HOUR_UTC, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1000


def format_expiry(expiry: dt.date) -> str:
    """Deribit's date: ``1OCT21``, ``24SEP21`` (no leading zero; two-digit year)."""
    if not 2000 <= expiry.year <= 2099:
        raise ValueError(f"Deribit names hold two-digit years 2000-2099, got {expiry.year}")
    return f"{expiry.day}{_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def parse_expiry(text: str) -> dt.date:
    """``24SEP21`` -> 2021-09-24. Raises :class:`InstrumentNameError`."""
    match = _EXPIRY.fullmatch(text)
    month = _MONTH_NUMBER.get(match["month"]) if match else None
    if match is None or month is None:
        raise InstrumentNameError(
            f"bad expiry {text!r}: expected DMMMYY like 24SEP21 or 1OCT21 (day without leading zero)"
        )
    try:
        return dt.date(2000 + int(match["year"]), month, int(match["day"]))
    except ValueError as error:
        raise InstrumentNameError(f"bad expiry {text!r}: {error}") from None


def format_strike(strike: float) -> str:
    """``8000.0`` -> ``8000``; ``0.625`` -> ``0d625`` (Deribit writes ``d`` for the point)."""
    if not (math.isfinite(strike) and strike > 0):
        raise ValueError(f"strike must be a positive finite number, got {strike!r}")
    if strike == int(strike):
        return str(int(strike))
    # repr() is the shortest text that reads back as the same float; Decimal avoids exponents.
    return format(Decimal(repr(strike)), "f").replace(".", "d")


def _parse_strike(text: str, name: str) -> float:
    match = _STRIKE.fullmatch(text)
    if match is None:
        raise InstrumentNameError(
            f"bad strike {text!r} in {name!r}: expected digits, with d for a decimal point (0d625)"
        )
    fraction = match["fraction"]
    strike = float(f"{match['whole']}.{fraction}" if fraction else match["whole"])
    if strike <= 0:
        raise InstrumentNameError(f"bad strike {text!r} in {name!r}: must be positive")
    return strike


def _format_currency(currency: str, counter_currency: str | None) -> str:
    currency = currency.upper()
    if not currency.isalnum():
        raise ValueError(f"bad currency {currency!r}")
    if counter_currency is None:
        return currency
    return f"{currency}_{counter_currency.upper()}"


def format_option_name(
    currency: str,
    expiry: dt.date,
    strike: float,
    option_type: Literal["call", "put"],
    counter_currency: str | None = None,
) -> str:
    """``("BTC", date(2021, 9, 24), 8000, "put")`` -> ``BTC-24SEP21-8000-P``."""
    if option_type not in ("call", "put"):
        raise ValueError(f"option_type must be 'call' or 'put', got {option_type!r}")
    letter = "C" if option_type == "call" else "P"
    prefix = _format_currency(currency, counter_currency)
    return f"{prefix}-{format_expiry(expiry)}-{format_strike(strike)}-{letter}"


def format_future_name(currency: str, expiry: dt.date, counter_currency: str | None = None) -> str:
    """``("BTC", date(2021, 10, 1))`` -> ``BTC-1OCT21``."""
    return f"{_format_currency(currency, counter_currency)}-{format_expiry(expiry)}"


def format_perpetual_name(currency: str, counter_currency: str | None = None) -> str:
    """``"BTC"`` -> ``BTC-PERPETUAL``; with ``"USDC"`` -> ``BTC_USDC-PERPETUAL``."""
    return f"{_format_currency(currency, counter_currency)}-PERPETUAL"


def currency_of(instrument_name: str) -> str:
    """The currency setting (family) an instrument belongs to, which keys its books, account and
    positions: ``BTC`` for ``BTC-24SEP21-8000-P`` and ``BTC-PERPETUAL``, ``BTC_USDC`` for
    ``BTC_USDC-PERPETUAL`` (a linear instrument is margined in USDC's account, never in the coin's).
    Whether an instrument is inverse or linear comes from its metadata, not from here."""
    return instrument_name.partition("-")[0]


def kind_of(instrument_name: str) -> str:
    """Deribit's position ``kind`` from the name's shape: ``option`` (three dashes), else ``future``
    (futures and perpetuals)."""
    return "option" if instrument_name.count("-") == 3 else "future"


def instrument_family(message: Any) -> tuple[str, str]:
    """(currency, "option" or "future") of a market message's ``instrument_name``, from its
    shape alone (three dashes: an option; one: a future or perpetual), with no parsing: the bus
    calls it for every book and ticker message to pick the BookKeeper of that family. The family's
    currency is the whole first segment, so linear ``BTC_USDC-...`` books form families of their
    own and never mix with the inverse ``BTC`` ones. Names of other shapes give ``("", "")``, which
    no family takes."""
    name: str = message.instrument_name
    dashes = name.count("-")
    if dashes == 3:
        return name[:name.index("-")], "option"
    if dashes == 1:
        return name[:name.index("-")], "future"
    return "", ""


def parse_instrument_name(name: str) -> InstrumentName:
    """Read an option, future or perpetual name. Raises :class:`InstrumentNameError` (a
    ``ValueError``) saying which form was expected for anything else (spot pairs, combos,
    lower case, leading zeros)."""
    if not isinstance(name, str):
        raise InstrumentNameError(f"instrument name must be a string, got {type(name).__name__}")
    parts = name.split("-")
    if len(parts) not in (2, 4):
        raise InstrumentNameError(f"unknown instrument name {name!r}: {_EXPECTED_FORMS}")
    currency_match = _CURRENCY.fullmatch(parts[0])
    if currency_match is None:
        raise InstrumentNameError(f"bad currency {parts[0]!r} in {name!r}: {_EXPECTED_FORMS}")
    currency, counter = currency_match["base"], currency_match["counter"]
    if len(parts) == 2:
        if parts[1] == "PERPETUAL":
            return InstrumentName(name=name, currency=currency, kind="perpetual", counter_currency=counter)
        expiry = parse_expiry(parts[1])
        return InstrumentName(
            name=name, currency=currency, kind="future", expiry_ms=expiry_ms(expiry), counter_currency=counter
        )
    expiry = parse_expiry(parts[1])
    strike = _parse_strike(parts[2], name)
    if parts[3] not in ("C", "P"):
        raise InstrumentNameError(f"bad option type {parts[3]!r} in {name!r}: expected C or P")
    return InstrumentName(
        name=name,
        currency=currency,
        kind="option",
        expiry_ms=expiry_ms(expiry),
        strike=strike,
        option_type="call" if parts[3] == "C" else "put",
        counter_currency=counter,
    )


# --- instrument metadata ---------------------------------------------------------------------


class InstrumentClass(enum.StrEnum):
    """What an instrument is, from Deribit's metadata (``kind``, ``settlement_period``)."""

    OPTION = "option"
    FUTURE = "future"
    PERPETUAL = "perpetual"
    COMBO = "combo"  # future_combo, option_combo
    SPOT = "spot"
    OTHER = "other"  # a kind this desk does not know


class Margining(enum.StrEnum):
    """How an instrument's PnL is paid. Inverse (Deribit's ``reversed``): priced in USD (futures)
    or in the coin (options), settled in the coin. Linear: priced and settled in the quote
    currency (USDC), amounts in the coin."""

    INVERSE = "inverse"
    LINEAR = "linear"


class InstrumentIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """What an instrument is and how its money works, from its metadata alone (never from its
    name): ``base_currency`` is the coin it is about, ``settlement_currency`` the one its PnL is
    paid in, ``contract_size`` the amount one contract is (10 USD for an inverse BTC future,
    1 coin for an option)."""

    instrument_name: str
    instrument_class: InstrumentClass
    margining: Margining
    base_currency: str
    quote_currency: str
    settlement_currency: str
    contract_size: float
    expiration_timestamp: int | None = None
    strike: float | None = None
    option_type: Literal["call", "put"] | None = None

    @property
    def is_linear(self) -> bool:
        return self.margining is Margining.LINEAR

    @property
    def is_option(self) -> bool:
        return self.instrument_class is InstrumentClass.OPTION

    @property
    def is_future(self) -> bool:
        """A future or a perpetual (Deribit's position ``kind`` ``future``)."""
        return self.instrument_class in (InstrumentClass.FUTURE, InstrumentClass.PERPETUAL)


def expiry_of(name: str, identity: InstrumentIdentity | None) -> int | None:
    """An instrument's expiry (ms; None: a perpetual or spot): its metadata's, else its name's.
    Raises :class:`InstrumentNameError` when neither is there to read."""
    if identity is not None:
        return identity.expiration_timestamp
    return parse_instrument_name(name).expiry_ms


_CLASS_OF_KIND = {
    "option": InstrumentClass.OPTION,
    "future": InstrumentClass.FUTURE,
    "spot": InstrumentClass.SPOT,
    "future_combo": InstrumentClass.COMBO,
    "option_combo": InstrumentClass.COMBO,
    "combo": InstrumentClass.COMBO,
}


def identity_of(instrument: Instrument) -> InstrumentIdentity:
    """The instrument's identity from its metadata: ``instrument_type`` (``reversed`` or
    ``linear``) where Deribit sends it; otherwise a settlement or counter currency other than
    the base coin makes it linear (older lists, like the 2021 capture, have neither: inverse)."""
    instrument_class = _CLASS_OF_KIND.get(instrument.kind, InstrumentClass.OTHER)
    if instrument_class is InstrumentClass.FUTURE and instrument.settlement_period == "perpetual":
        instrument_class = InstrumentClass.PERPETUAL
    base = instrument.base_currency
    settlement = instrument.settlement_currency or instrument.counter_currency
    if instrument.instrument_type is not None:
        linear = instrument.instrument_type == "linear"
    elif instrument.future_type is not None:
        linear = instrument.future_type == "linear"
    else:
        linear = settlement is not None and settlement != base
    if settlement is None:
        settlement = instrument.quote_currency if linear else base
    expiry = None if instrument_class is InstrumentClass.PERPETUAL else instrument.expiration_timestamp
    return InstrumentIdentity(
        instrument_name=instrument.instrument_name,
        instrument_class=instrument_class,
        margining=Margining.LINEAR if linear else Margining.INVERSE,
        base_currency=base,
        quote_currency=instrument.quote_currency,
        settlement_currency=settlement,
        contract_size=instrument.contract_size,
        expiration_timestamp=expiry,
        strike=instrument.strike,
        option_type=instrument.option_type,
    )


# --- families: what one currency setting loads -----------------------------------------------

#: The currency Deribit settles every linear instrument in, and lists them under in
#: ``public/get_instruments`` (``currency="USDC"``: every coin's linear options, futures and perpetuals).
LINEAR_SETTLEMENT = "USDC"
_FAMILY_NAME = re.compile(rf"(?P<base>[A-Z][A-Z0-9]*)(?:_(?P<quote>{LINEAR_SETTLEMENT}))?")
FAMILY_FORMS = (f"a coin for its inverse family (BTC or ETH: coin-settled) or COIN_{LINEAR_SETTLEMENT} for a "
                f"{LINEAR_SETTLEMENT}-settled linear family (SOL_{LINEAR_SETTLEMENT}, BTC_{LINEAR_SETTLEMENT}, ...)")
#: The coins with inverse (coin-settled) options and futures on Deribit.
INVERSE_COINS = ("BTC", "ETH")
#: What a family books: options, futures and perpetuals (combos, spot and unknown kinds never).
BOOKED_CLASSES = frozenset({InstrumentClass.OPTION, InstrumentClass.FUTURE, InstrumentClass.PERPETUAL})


class Family(msgspec.Struct, frozen=True, kw_only=True):
    """One currency setting: the inverse family of a coin (``BTC``: its coin-settled options,
    futures and perpetuals) or a linear one (``SOL_USDC``: the USDC-settled options, futures and
    perpetuals of SOL). ``name`` is also the first segment of its instruments' names, which the
    bus keys book families by (:func:`instrument_family`)."""

    name: str
    base_currency: str
    margining: Margining

    @property
    def is_linear(self) -> bool:
        return self.margining is Margining.LINEAR

    @property
    def settlement_currency(self) -> str:
        return LINEAR_SETTLEMENT if self.is_linear else self.base_currency

    @property
    def request_currency(self) -> str:
        """The ``currency`` of its ``public/get_instruments``, ``instrument.state`` channels and
        account requests: the coin, or USDC for a linear family (which lists every coin's)."""
        return self.settlement_currency

    @property
    def index_name(self) -> str:
        """Its price index: ``btc_usd`` for BTC, ``sol_usdc`` for SOL_USDC."""
        quote = LINEAR_SETTLEMENT if self.is_linear else "USD"
        return f"{self.base_currency}_{quote}".lower()

    @property
    def option_price_currency(self) -> str:
        """What its option prices are in: the coin (inverse) or USDC (linear)."""
        return LINEAR_SETTLEMENT if self.is_linear else self.base_currency


def family_of(name: str) -> Family:
    """The family a currency setting names (``BTC``, ``SOL_USDC``). Raises ``ValueError`` saying
    what to write for anything else."""
    match = _FAMILY_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"{name!r} is not a currency family: write {FAMILY_FORMS}")
    base, quote = match["base"], match["quote"]
    if quote is None and base not in INVERSE_COINS:
        raise ValueError(f"{name!r} has no inverse (coin-settled) family on Deribit: write one of "
                         f"{', '.join(INVERSE_COINS)}, or {base}_{LINEAR_SETTLEMENT} for its "
                         f"{LINEAR_SETTLEMENT}-settled linear family")
    return Family(name=name, base_currency=base, margining=Margining.LINEAR if quote else Margining.INVERSE)


def family_name_of(identity: InstrumentIdentity) -> str:
    """The family an instrument belongs to, from its metadata: its coin (inverse) or
    ``COIN_SETTLEMENT`` (linear, e.g. ``SOL_USDC``)."""
    if identity.is_linear:
        return f"{identity.base_currency}_{identity.settlement_currency}"
    return identity.base_currency


class LeftOut(enum.StrEnum):
    """Why an entry of an instrument list is kept out of a family's books."""

    COMBO = "combo"
    SPOT = "spot"
    UNKNOWN_KIND = "unknown_kind"
    LINEAR = "linear"  # a linear instrument in an inverse family's list
    INVERSE = "inverse"  # an inverse one in a linear family's list
    OTHER_COIN = "other_coin"  # another coin's (the USDC list holds every coin's)
    NAME_DISAGREES = "name_disagrees"  # its name's family is not its metadata's: books would mix


_LEFT_OUT_OF_CLASS = {InstrumentClass.COMBO: LeftOut.COMBO, InstrumentClass.SPOT: LeftOut.SPOT,
                      InstrumentClass.OTHER: LeftOut.UNKNOWN_KIND}


def request_currency_of(currency: str) -> str:
    """The ``currency`` Deribit's account requests and listings take for a currency setting: the
    coin itself, or USDC for a linear family (``SOL_USDC``); a name that is no family, as given."""
    try:
        return family_of(currency).request_currency
    except ValueError:
        return currency


def in_family(currency: str, instrument_name: str) -> bool:
    """Whether an instrument of an account answer (asked with :func:`request_currency_of`) belongs
    to the currency setting ``currency``: its name's first segment is the family's name."""
    return instrument_name.partition("-")[0] == currency


class FamilySelection(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument list sorted for one family: what its books take, and how many were kept out
    for each reason with the first such name as an example (one log line says it all)."""

    kept: tuple[Instrument, ...]
    left_out: tuple[tuple[LeftOut, int, str], ...] = ()

    @property
    def left_out_count(self) -> int:
        return sum(count for _, count, _ in self.left_out)


def left_out_of(instrument: Instrument, family: Family) -> LeftOut | None:
    """Why ``instrument`` is not one of ``family``'s, from its metadata; None if it is."""
    identity = identity_of(instrument)
    if identity.instrument_class not in BOOKED_CLASSES:
        return _LEFT_OUT_OF_CLASS[identity.instrument_class]
    if identity.margining is not family.margining:
        return LeftOut.LINEAR if identity.is_linear else LeftOut.INVERSE
    if identity.base_currency != family.base_currency or identity.settlement_currency != family.settlement_currency:
        return LeftOut.OTHER_COIN
    if instrument.instrument_name.partition("-")[0] != family.name:
        return LeftOut.NAME_DISAGREES
    return None


def select_for_family(instruments: Iterable[Instrument], family: Family) -> FamilySelection:
    """The entries ``family`` books (see :func:`left_out_of`) and a summary of the rest."""
    kept: list[Instrument] = []
    counts: dict[LeftOut, int] = {}
    examples: dict[LeftOut, str] = {}
    for instrument in instruments:
        why = left_out_of(instrument, family)
        if why is None:
            kept.append(instrument)
        else:
            counts[why] = counts.get(why, 0) + 1
            examples.setdefault(why, instrument.instrument_name)
    return FamilySelection(kept=tuple(kept), left_out=tuple((why, counts[why], examples[why]) for why in counts))



class _InstrumentsResponse(msgspec.Struct):
    result: tuple[Instrument, ...]


_instruments_response_decoder = msgspec.json.Decoder(_InstrumentsResponse)
_instruments_decoder = msgspec.json.Decoder(tuple[Instrument, ...])


def decode_instruments(data: bytes | str) -> tuple[Instrument, ...]:
    """Decode ``public/get_instruments``: a whole JSON-RPC response (``{"result": [...]}``) or
    just its result array. Raises ``msgspec.ValidationError``/``DecodeError`` on bad input."""
    if data.lstrip()[:1] in ("[", b"["):
        return _instruments_decoder.decode(data)
    return _instruments_response_decoder.decode(data).result


class InstrumentDefect(msgspec.Struct, frozen=True, kw_only=True):
    """Why an entry of the instrument list cannot be used: the field, its value as received (text:
    it may be NaN or not a number at all) and what is wrong with it."""

    instrument_name: str
    field: str
    value: str
    problem: str


class _RawInstrumentsResponse(msgspec.Struct):
    result: msgspec.Raw


_raw_instruments_response_decoder = msgspec.json.Decoder(_RawInstrumentsResponse)
#: Every price is put on the tick grid, every amount on the minimum's, every position valued by the
#: contract size: a zero, negative or non-finite one raises or divides by zero wherever it is used.
_POSITIVE_FIELDS = ("tick_size", "contract_size", "min_trade_amount")


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def instrument_defect(instrument: Instrument) -> InstrumentDefect | None:
    """What makes ``instrument`` unusable, or None: its tick size, contract size and minimum
    amount, each of its tick size steps, and an option's strike must be positive finite numbers
    (the price a tick step starts above: finite, not negative)."""

    def defect(field: str, value: object, problem: str) -> InstrumentDefect:
        return InstrumentDefect(instrument_name=instrument.instrument_name, field=field, value=repr(value),
                                problem=problem)

    for name in _POSITIVE_FIELDS:
        value = getattr(instrument, name)
        if not _positive(value):
            return defect(name, value, "must be a positive finite number")
    for i, step in enumerate(instrument.tick_size_steps):
        if not _positive(step.tick_size):
            return defect(f"tick_size_steps[{i}].tick_size", step.tick_size, "must be a positive finite number")
        if not (math.isfinite(step.above_price) and step.above_price >= 0):
            return defect(f"tick_size_steps[{i}].above_price", step.above_price,
                          "must be a finite number, not negative")
    if instrument.kind == "option" and not _positive(instrument.strike):
        return defect("strike", instrument.strike, "an option's strike must be a positive finite number")
    return None


def decode_instrument_list(data: bytes | str) -> tuple[tuple[Instrument, ...], tuple[InstrumentDefect, ...]]:
    """Decode ``public/get_instruments`` (a whole response or its result array) entry by entry:
    the entries that decode, and what is wrong with each that does not (a missing field, a wrong
    type), so that one bad entry never loses the list. Check each instrument's values with
    :func:`instrument_defect`. Raises ``msgspec.ValidationError``/``DecodeError`` only when the
    whole is not a list."""
    raw = data if data.lstrip()[:1] in ("[", b"[") else _raw_instruments_response_decoder.decode(data).result
    # The one rule for lists (deribit.codec.decode_entries), its defects in this module's terms.
    instruments, defects = decode_entries(raw, Instrument, "public/get_instruments")
    return instruments, tuple(InstrumentDefect(instrument_name=d.name, field=d.field, value=d.value, problem=d.problem)
                              for d in defects)


def tick_size_at(instrument: Instrument, price: float) -> float:
    """The tick size that applies at ``price`` (options have coarser ticks above a price,
    listed in ``tick_size_steps``)."""
    tick = instrument.tick_size
    for step in sorted(instrument.tick_size_steps, key=lambda s: s.above_price):
        if price > step.above_price:
            tick = step.tick_size
    return tick


_ROUNDING = {"nearest": ROUND_HALF_UP, "down": ROUND_FLOOR, "up": ROUND_CEILING}
# The float path: values whose steps are exact in a double with room to spare, and fractions of
# a step clear of the points where the exact path's rules (noise snap, halves) apply.
_FAST_LIMIT = 2.0**40
_FAST_MARGIN = 1e-6


def _round_to_step(value: float, step: float, mode: RoundingMode, what: str) -> float:
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"{what} must be a positive finite number, got {step!r}")
    if not math.isfinite(value):
        raise ValueError(f"cannot round {value!r}")
    if step.is_integer() and abs(value) < _FAST_LIMIT:
        # Whole steps (futures contracts: 10 USD, 1 USD) in float, off the hedger's hot path's
        # Decimal set-up, wherever float noise cannot matter: away from an exact multiple
        # and, for "nearest", from a half. Elsewhere the exact way below decides.
        steps_f = value / step
        floor = math.floor(steps_f)
        frac = steps_f - floor
        # Wider than the exact path's noise snap (1e-9 relative) and any float error here.
        margin = _FAST_MARGIN + 2e-9 * abs(steps_f)
        if margin < frac < 1.0 - margin and (mode != "nearest" or abs(frac - 0.5) > margin):
            if mode == "down":
                count_f = floor
            elif mode == "up":
                count_f = floor + 1
            else:  # clear of a half, the nearest is the nearest whatever the sign
                count_f = floor + 1 if frac > 0.5 else floor
            return float(count_f * step)
    # Decimal of repr() is the number as written (0.35 is 0.35, not 0.34999...), so halves
    # and exact multiples behave as a trader expects.
    exact_step = Decimal(repr(step))
    steps = Decimal(repr(value)) / exact_step
    nearest = steps.to_integral_value(ROUND_HALF_UP)
    # Float noise (0.30000000000000004 for 0.3) must not push "up" to the next step.
    if abs(steps - nearest) <= Decimal("1e-9") * max(Decimal(1), abs(steps)):
        count = nearest
    else:
        count = steps.to_integral_value(_ROUNDING[mode])
    return float(count * exact_step)


def round_to_tick(price: float, tick_size: float, mode: RoundingMode = "nearest") -> float:
    """``price`` on the tick grid: ``"nearest"`` (halves away from zero), or ``"down"``/``"up"``
    (toward minus/plus infinity: a buyer who must not pay more rounds down, a seller up)."""
    return _round_to_step(price, tick_size, mode, "tick_size")


def round_to_contract(amount: float, contract_size: float, mode: RoundingMode = "nearest") -> float:
    """``amount`` as a whole number of ``contract_size`` (use :func:`amount_step` for the
    step an instrument's orders need: 10 USD for BTC futures, 0.1 BTC for BTC options)."""
    return _round_to_step(amount, contract_size, mode, "contract_size")


def amount_step(instrument: Instrument) -> float:
    """The granularity of order amounts: Deribit's ``min_trade_amount`` (which for futures
    equals the contract size, and for options is a fraction of one contract)."""
    return instrument.min_trade_amount
