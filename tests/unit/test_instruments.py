"""Instrument names, the instrument list of public/get_instruments, tick and amount rounding."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit import instruments
from deribit.instruments import (
    Instrument,
    InstrumentName,
    InstrumentNameError,
    TickSizeStep,
    amount_step,
    decode_instrument_list,
    decode_instruments,
    expiry_ms,
    format_expiry,
    format_future_name,
    format_option_name,
    format_perpetual_name,
    format_strike,
    instrument_defect,
    instrument_family,
    parse_instrument_name,
    round_to_contract,
    round_to_tick,
    tick_size_at,
)
from tests.support.capture import instruments_path
from tests.support.scripted_server import tiny_instruments

INSTRUMENT_COUNTS = {"BTC": (390, 8), "ETH": (418, 8)}  # options, futures in the capture's listing


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "BTC-24SEP21-8000-P",
            InstrumentName(
                name="BTC-24SEP21-8000-P",
                currency="BTC",
                kind="option",
                expiry_ms=1632470400000,
                strike=8000.0,
                option_type="put",
            ),
        ),
        (
            "ETH-1OCT21-3200-C",
            InstrumentName(
                name="ETH-1OCT21-3200-C",
                currency="ETH",
                kind="option",
                expiry_ms=1633075200000,
                strike=3200.0,
                option_type="call",
            ),
        ),
        (
            "BTC-24SEP21",
            InstrumentName(name="BTC-24SEP21", currency="BTC", kind="future", expiry_ms=1632470400000),
        ),
        ("BTC-PERPETUAL", InstrumentName(name="BTC-PERPETUAL", currency="BTC", kind="perpetual")),
        (
            "BTC_USDC-PERPETUAL",
            InstrumentName(
                name="BTC_USDC-PERPETUAL", currency="BTC", kind="perpetual", counter_currency="USDC"
            ),
        ),
        (
            "XRP_USDC-30AUG24-0d625-C",
            InstrumentName(
                name="XRP_USDC-30AUG24-0d625-C",
                currency="XRP",
                kind="option",
                expiry_ms=1725004800000,
                strike=0.625,
                option_type="call",
                counter_currency="USDC",
            ),
        ),
    ],
)
def test_parse_known_names(name: str, expected: InstrumentName) -> None:
    assert parse_instrument_name(name) == expected


def test_expiry_is_0800_utc() -> None:
    parsed = parse_instrument_name("BTC-24SEP21-8000-P")
    assert parsed.expiry_date == dt.date(2021, 9, 24)
    assert parsed.expiry_ms == int(dt.datetime(2021, 9, 24, 8, tzinfo=dt.UTC).timestamp() * 1000)
    assert parse_instrument_name("BTC-PERPETUAL").expiry_date is None


def test_format_uses_days_without_leading_zero() -> None:
    assert format_future_name("BTC", dt.date(2021, 10, 1)) == "BTC-1OCT21"
    assert format_option_name("BTC", dt.date(2021, 9, 24), 8000, "put") == "BTC-24SEP21-8000-P"
    assert format_option_name("eth", dt.date(2022, 3, 5), 2500.0, "call") == "ETH-5MAR22-2500-C"
    xrp_name = format_option_name("XRP", dt.date(2024, 8, 30), 0.625, "call", "USDC")
    assert xrp_name == "XRP_USDC-30AUG24-0d625-C"
    assert format_perpetual_name("BTC") == "BTC-PERPETUAL"
    assert format_perpetual_name("ETH", "USDC") == "ETH_USDC-PERPETUAL"
    assert format_strike(300000.0) == "300000"
    assert format_strike(1.5) == "1d5"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("", "expected CUR-DMMMYY-STRIKE-C|P"),
        ("BTC", "expected CUR-DMMMYY-STRIKE-C|P"),
        ("BTC_USDC", "CUR-PERPETUAL"),  # spot pair
        ("BTC-FS-24SEP21_PERP", "expected"),  # combo
        ("btc-PERPETUAL", "bad currency"),
        ("BTC-01OCT21", "day without leading zero"),
        ("BTC-24Sep21", "expected DMMMYY"),
        ("BTC-24SPT21", "expected DMMMYY"),
        ("BTC-31FEB21", "day is out of range"),
        ("BTC-24SEP2021", "expected DMMMYY"),
        ("BTC-24SEP21-8000-X", "expected C or P"),
        ("BTC-24SEP21-08000-P", "bad strike"),
        ("BTC-24SEP21-0-P", "must be positive"),
        ("BTC-24SEP21-8000.5-P", "bad strike"),
        ("BTC-24SEP21-1d50-C", "bad strike"),
        ("BTC-24SEP21-8000", "expected"),
        ("BTC-24SEP21-8000-P-X", "expected"),
    ],
)
def test_unknown_forms_raise_a_clear_error(bad: str, fragment: str) -> None:
    with pytest.raises(InstrumentNameError) as raised:
        parse_instrument_name(bad)
    assert fragment in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_format_refuses_what_deribit_cannot_name() -> None:
    with pytest.raises(ValueError):
        format_option_name("BTC", dt.date(2021, 9, 24), 0.0, "put")
    with pytest.raises(ValueError):
        format_option_name("BTC", dt.date(2021, 9, 24), 8000, "straddle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        format_expiry(dt.date(2100, 1, 1))


dates = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
whole_strikes = st.integers(min_value=1, max_value=10_000_000).map(float)
fractional_strikes = st.integers(min_value=1, max_value=99_999).map(lambda n: n / 10_000)
currencies = st.sampled_from(["BTC", "ETH", "SOL", "XRP"])
counters = st.sampled_from([None, "USDC", "USDT"])


@given(currencies, dates, whole_strikes | fractional_strikes, st.sampled_from(["call", "put"]), counters)
def test_option_names_round_trip(
    currency: str, expiry: dt.date, strike: float, option_type: str, counter: str | None
) -> None:
    name = format_option_name(currency, expiry, strike, option_type, counter)  # type: ignore[arg-type]
    parsed = parse_instrument_name(name)
    assert (parsed.currency, parsed.kind, parsed.strike, parsed.option_type) == (
        currency,
        "option",
        strike,
        option_type,
    )
    assert parsed.counter_currency == counter
    assert parsed.expiry_date == expiry
    assert parsed.expiry_ms == expiry_ms(expiry)
    assert format_option_name(currency, expiry, strike, option_type, counter) == parsed.name  # type: ignore[arg-type]


@given(currencies, dates, counters)
def test_future_names_round_trip(currency: str, expiry: dt.date, counter: str | None) -> None:
    name = format_future_name(currency, expiry, counter)
    parsed = parse_instrument_name(name)
    assert (parsed.kind, parsed.currency, parsed.expiry_date, parsed.counter_currency) == (
        "future",
        currency,
        expiry,
        counter,
    )
    assert not name.split("-")[1].startswith("0")


# --- the instrument list ---------------------------------------------------------------------


@pytest.mark.parametrize("currency", sorted(INSTRUMENT_COUNTS))
def test_decode_fixture_instruments(currency: str) -> None:
    n_options, n_futures = INSTRUMENT_COUNTS[currency]
    text = instruments_path(currency).read_text()
    instruments = decode_instruments(text)
    assert sum(i.kind == "option" for i in instruments) == n_options
    assert sum(i.kind == "future" for i in instruments) == n_futures
    raw = json.loads(text)["result"]
    assert len(instruments) == len(raw)
    for instrument, entry in zip(instruments, raw, strict=True):
        for key, value in entry.items():
            assert getattr(instrument, key) == value, (instrument.instrument_name, key)
        # Every name in Deribit's own list parses, and agrees with the metadata.
        name = parse_instrument_name(instrument.instrument_name)
        assert name.currency == instrument.base_currency == currency
        if instrument.kind == "option":
            assert name.kind == "option"
            assert name.strike == instrument.strike
            assert name.option_type == instrument.option_type
            assert name.expiry_ms == instrument.expiration_timestamp
        elif instrument.settlement_period == "perpetual":
            assert name.kind == "perpetual"
        else:
            assert name.kind == "future"
            assert name.expiry_ms == instrument.expiration_timestamp
    # A bare result array decodes too, as do bytes.
    assert decode_instruments(json.dumps(raw).encode()) == instruments


def test_decode_instruments_rejects_wrong_types() -> None:
    entry = json.loads(instruments_path("BTC").read_text())["result"][0]
    with pytest.raises(msgspec.ValidationError):
        decode_instruments(json.dumps({"result": [{**entry, "tick_size": "0.0005"}]}))
    missing = {k: v for k, v in entry.items() if k != "tick_size"}
    with pytest.raises(msgspec.ValidationError):
        decode_instruments(json.dumps([missing]))


# --- rounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "tick", "mode", "expected"),
    [
        (0.00149, 0.0005, "nearest", 0.0015),
        (0.00175, 0.0005, "nearest", 0.002),  # halves away from zero
        (0.0016, 0.0005, "up", 0.002),
        (0.0019, 0.0005, "down", 0.0015),
        (0.0015, 0.0005, "down", 0.0015),
        (0.1 + 0.2, 0.1, "up", 0.3),  # float noise does not push to the next tick
        (34567.3, 0.5, "down", 34567.0),
        (34567.3, 0.5, "up", 34567.5),
        (2001.37, 0.05, "nearest", 2001.35),
    ],
)
def test_round_to_tick(price: float, tick: float, mode: str, expected: float) -> None:
    assert round_to_tick(price, tick, mode) == expected  # type: ignore[arg-type]


def test_round_to_contract() -> None:
    assert round_to_contract(123.0, 10.0) == 120.0
    assert round_to_contract(125.0, 10.0) == 130.0
    assert round_to_contract(-125.0, 10.0) == -130.0
    assert round_to_contract(129.0, 10.0, "down") == 120.0
    assert round_to_contract(0.35, 0.1) == 0.4
    assert round_to_contract(0.3, 0.1, "down") == 0.3
    assert round_to_contract(0.04, 0.1) == 0.0
    with pytest.raises(ValueError):
        round_to_contract(1.0, 0.0)
    with pytest.raises(ValueError):
        round_to_tick(float("nan"), 0.5)


@given(
    st.integers(min_value=-10_000_000, max_value=10_000_000),
    st.sampled_from([0.0005, 0.0001, 0.5, 0.05, 1.0]),
)
def test_on_grid_prices_are_unchanged(ticks: int, tick: float) -> None:
    price = round(ticks * tick, 6)
    for mode in ("nearest", "down", "up"):
        assert round_to_tick(price, tick, mode) == pytest.approx(price, abs=1e-12)  # type: ignore[arg-type]


def test_tick_size_steps_and_amount_step() -> None:
    option = Instrument(
        instrument_name="BTC-24SEP21-8000-P",
        kind="option",
        base_currency="BTC",
        quote_currency="BTC",
        settlement_period="month",
        tick_size=0.0001,
        contract_size=1.0,
        min_trade_amount=0.1,
        expiration_timestamp=1632470400000,
        creation_timestamp=1606129458000,
        tick_size_steps=(TickSizeStep(above_price=0.005, tick_size=0.0005),),
    )
    assert tick_size_at(option, 0.004) == 0.0001
    assert tick_size_at(option, 0.02) == 0.0005
    assert amount_step(option) == 0.1


# -- the float path for whole steps agrees with the exact (Decimal) one ---------------------------
@given(
    step=st.sampled_from([1.0, 5.0, 10.0, 100.0]),
    whole=st.integers(-100_000, 100_000),
    offset=st.one_of(st.floats(-1.0, 1.0), st.sampled_from([0.0, 0.5, -0.5, 1e-12, -1e-12, 0.4999999, 0.5000001])),
    mode=st.sampled_from(["nearest", "down", "up"]),
)
def test_whole_step_rounding_matches_the_exact_path(step: float, whole: int, offset: float, mode: str) -> None:
    value = whole * step + offset * step
    fast = instruments._round_to_step(value, step, mode, "step")  # type: ignore[arg-type]
    saved = instruments._FAST_LIMIT
    instruments._FAST_LIMIT = -1.0  # every value takes the Decimal path
    try:
        exact = instruments._round_to_step(value, step, mode, "step")  # type: ignore[arg-type]
    finally:
        instruments._FAST_LIMIT = saved
    assert fast == exact


# -- the bus's family key agrees with the parser ---------------------------------------------------
@pytest.mark.parametrize("currency", sorted(INSTRUMENT_COUNTS))
def test_instrument_family_agrees_with_the_parser_on_every_listed_name(currency: str) -> None:
    names = [i.instrument_name for i in decode_instruments(instruments_path(currency).read_bytes())]
    assert len(names) > 300
    for name in [*names, f"{currency}-PERPETUAL"]:
        parsed = parse_instrument_name(name)
        kind = "option" if parsed.kind == "option" else "future"
        assert instrument_family(SimpleNamespace(instrument_name=name)) == (parsed.currency, kind)


@pytest.mark.parametrize("name", ["BTC", "BTC-FS-27DEC26_PERP-X-Y", "BTC_USDC", ""])
def test_instrument_family_of_other_shapes_is_nobodys(name: str) -> None:
    assert instrument_family(SimpleNamespace(instrument_name=name)) == ("", "")


# --- an instrument's metadata is usable, or it is refused at load ---------------------------------


def _listed(**fields: object) -> Instrument:
    """The perpetual of the scripted server's list, with ``fields`` changed."""
    entry = {**tiny_instruments()["BTC"][0], **fields}
    return msgspec.convert(entry, Instrument)


def _option(**fields: object) -> Instrument:
    return msgspec.convert({**tiny_instruments()["BTC"][1], **fields}, Instrument)


def test_a_sound_instrument_has_no_defect() -> None:
    assert instrument_defect(_listed()) is None
    assert instrument_defect(_option()) is None
    steps = (TickSizeStep(above_price=0.005, tick_size=0.0005),)
    assert instrument_defect(_option(tick_size_steps=steps)) is None


@pytest.mark.parametrize("field", ["tick_size", "contract_size", "min_trade_amount"])
@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf")])
def test_a_tick_size_contract_size_or_minimum_that_is_not_positive_and_finite_is_named(field: str,
                                                                                       value: float) -> None:
    defect = instrument_defect(_listed(**{field: value}))
    assert defect is not None
    assert (defect.instrument_name, defect.field, defect.value) == ("BTC-PERPETUAL", field, repr(value))
    assert defect.problem == "must be a positive finite number"


def test_tick_size_steps_and_an_options_strike_are_checked_too() -> None:
    bad_step = (TickSizeStep(above_price=0.005, tick_size=0.0005), TickSizeStep(above_price=0.1, tick_size=0.0))
    defect = instrument_defect(_option(tick_size_steps=bad_step))
    assert defect is not None and (defect.field, defect.value) == ("tick_size_steps[1].tick_size", "0.0")
    defect = instrument_defect(_option(tick_size_steps=(TickSizeStep(above_price=-1.0, tick_size=0.001),)))
    assert defect is not None and defect.field == "tick_size_steps[0].above_price"
    defect = instrument_defect(_option(strike=0.0))
    assert defect is not None and (defect.instrument_name, defect.field) == ("BTC-1JAN00-60000-C", "strike")


def test_the_list_is_decoded_entry_by_entry_and_a_bad_entry_loses_only_itself() -> None:
    good = tiny_instruments()["BTC"]
    wrong_type = {**good[1], "tick_size": "0.0005"}
    missing = {k: v for k, v in good[2].items() if k != "min_trade_amount"}
    decoded, defects = decode_instrument_list(json.dumps({"result": [good[0], wrong_type, missing, 7]}))
    assert [i.instrument_name for i in decoded] == ["BTC-PERPETUAL"]
    assert [(d.instrument_name, d.field, d.value) for d in defects] == [
        ("BTC-1JAN00-60000-C", "tick_size", '"0.0005"'), ("BTC-1JAN00-60000-P", "min_trade_amount", "(none)"),
        ("(no name)", "(the entry)", "(none)")]
    assert "Expected `float`, got `str`" in defects[0].problem
    assert decode_instrument_list(json.dumps(good)) == (decode_instruments(json.dumps(good)), ())
    with pytest.raises(msgspec.ValidationError):
        decode_instrument_list(json.dumps({"result": 5}))


def test_every_instrument_of_the_capture_is_usable() -> None:
    for currency in sorted(INSTRUMENT_COUNTS):
        decoded, defects = decode_instrument_list(instruments_path(currency).read_bytes())
        assert defects == () and [instrument_defect(i) for i in decoded] == [None] * len(decoded)
