"""What a currency family takes, subscribes and books, decided by instrument metadata: the inverse
family of a coin (BTC) and USDC-settled linear ones (SOL_USDC, BTC_USDC); a linear family's implied
vols. The Session's loading of them is tested in test_session.py. Real entries:
tests/support/public_instruments.py (tests/fixtures/public_instruments/SOURCES.md)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.snapshot import synthetic_chain_snapshot
from deribit.instruments import (
    Family,
    InstrumentClass,
    LeftOut,
    Margining,
    family_name_of,
    family_of,
    identity_of,
    select_for_family,
)
from deribit.subscriptions import currency_channels
from desk.book_family import BookFamily
from desk.surface_snapshot import build_surface_snapshot
from messages.market import IndexPrice, Ticker
from messages.state import ChainSnapshot, OptionQuote
from quant import black76_price
from quant.surface import MS_PER_YEAR
from tests.support.public_instruments import as_instrument, public_entries

AT = 1_782_000_000.0  # 2026-06-21, before the fixtures' 26JUN26 expiry


# -- identity and families --------------------------------------------------------------------------------
def test_the_real_entries_identities_come_from_their_metadata() -> None:
    e = public_entries()
    perpetual = identity_of(as_instrument(e["btc_usdc_perpetual"]))
    assert (perpetual.instrument_class, perpetual.margining, perpetual.base_currency, perpetual.settlement_currency,
            perpetual.contract_size) == (InstrumentClass.PERPETUAL, Margining.LINEAR, "BTC", "USDC", 0.001)
    assert family_name_of(perpetual) == "BTC_USDC"
    option = identity_of(as_instrument(e["inverse_option"]))
    assert (option.instrument_class, option.margining, family_name_of(option)) == (
        InstrumentClass.OPTION, Margining.INVERSE, "BTC")
    for combo in (*e["option_combos"], *e["future_combos"]):
        assert identity_of(as_instrument(combo)).instrument_class is InstrumentClass.COMBO
    assert identity_of(as_instrument(e["spot"])).instrument_class is InstrumentClass.SPOT
    xrp = identity_of(as_instrument(e["xrp_call"]))
    assert (xrp.strike, family_name_of(xrp)) == (0.625, "XRP_USDC")


@pytest.mark.parametrize(("name", "base", "margining", "listed_under", "index"), [
    ("BTC", "BTC", Margining.INVERSE, "BTC", "btc_usd"),
    ("ETH", "ETH", Margining.INVERSE, "ETH", "eth_usd"),
    ("SOL_USDC", "SOL", Margining.LINEAR, "USDC", "sol_usdc"),
    ("BTC_USDC", "BTC", Margining.LINEAR, "USDC", "btc_usdc"),
])
def test_a_family_says_where_it_is_listed_and_its_index(name: str, base: str, margining: Margining,
                                                        listed_under: str, index: str) -> None:
    family = family_of(name)
    assert (family.base_currency, family.margining, family.request_currency, family.index_name) == (
        base, margining, listed_under, index)
    assert family.option_price_currency == ("USDC" if margining is Margining.LINEAR else base)


@pytest.mark.parametrize("name", ["SOL", "btc", "SOL_USDT", "SOL-USDC", "", "_USDC", "BTC_USDC_X"])
def test_anything_else_is_no_family_and_the_refusal_says_what_to_write(name: str) -> None:
    with pytest.raises(ValueError, match="USDC") as refused:
        family_of(name)
    assert repr(name) in str(refused.value)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.abc ", max_size=12))
def test_a_family_name_is_a_known_coin_or_coin_usdc_and_reads_back_as_itself(name: str) -> None:
    base, _, quote = name.partition("_")
    wellformed = base[:1].isalpha() and base.isalnum() and base.isupper() and quote in ("", "USDC") and (
        quote == "" or name.endswith("_USDC"))
    expected = wellformed and (quote == "USDC" or base in ("BTC", "ETH"))
    try:
        family = family_of(name)
    except ValueError as exc:
        assert not expected, name
        assert "USDC" in str(exc)  # it says what to write
    else:
        assert expected, name
        assert family.name == name and family.base_currency == base
        assert family.is_linear == (quote == "USDC")


def test_a_family_keeps_its_own_options_futures_and_perpetuals_and_counts_the_rest() -> None:
    e = public_entries()
    btc_list = [as_instrument(x) for x in (e["inverse_option"], e["btc_usdc_perpetual"], e["spot"],
                                         *e["option_combos"], *e["future_combos"])]
    btc = select_for_family(btc_list, family_of("BTC"))
    assert [i.instrument_name for i in btc.kept] == ["BTC-26JUN26-100000-C"]
    assert {why: (count, example) for why, count, example in btc.left_out} == {
        LeftOut.LINEAR: (1, "BTC_USDC-PERPETUAL"), LeftOut.SPOT: (1, "BTC_USDC"),
        LeftOut.COMBO: (12, "BTC-STRG-19MAY26-74000_79000")}
    usdc_list = [as_instrument(e[k]) for k in ("btc_usdc_perpetual", "sol_usdc_perpetual", "sol_call", "sol_put",
                                             "xrp_call", "btc_usdc_call", "inverse_option")]
    sol = select_for_family(usdc_list, family_of("SOL_USDC"))
    assert [i.instrument_name for i in sol.kept] == ["SOL_USDC-PERPETUAL", "SOL_USDC-26JUN26-150-C",
                                                     "SOL_USDC-26JUN26-140-P"]
    assert {why: count for why, count, _ in sol.left_out} == {LeftOut.OTHER_COIN: 3, LeftOut.INVERSE: 1}
    btc_usdc = select_for_family(usdc_list, family_of("BTC_USDC"))
    assert [i.instrument_name for i in btc_usdc.kept] == ["BTC_USDC-PERPETUAL", "BTC_USDC-26JUN26-110000-C"]


def test_an_entry_whose_name_and_metadata_disagree_is_kept_out() -> None:
    # Linear metadata under an inverse-shaped name would be booked with the inverse BTC books.
    odd = as_instrument({**public_entries()["btc_usdc_call"], "instrument_name": "BTC-26JUN26-110000-C"})
    [(why, count, example)] = select_for_family([odd], family_of("BTC_USDC")).left_out
    assert (why, count, example) == (LeftOut.NAME_DISAGREES, 1, "BTC-26JUN26-110000-C")


def test_a_linear_familys_channels_are_its_index_and_the_usdc_listings() -> None:
    # SOL has no DVOL; BTC_USDC shares BTC's.
    assert currency_channels("SOL_USDC", private=False) == {
        "deribit_price_index.sol_usdc", "instrument.state.option.USDC", "instrument.state.future.USDC",
        "platform_state"}
    assert "deribit_volatility_index.btc_usd" in currency_channels("BTC_USDC", private=False)
    assert currency_channels("SOL_USDC", private=True) - currency_channels("SOL_USDC", private=False) == {
        "user.orders.any.USDC.raw", "user.trades.any.USDC.raw", "user.changes.any.USDC.raw", "user.portfolio.usdc"}
    assert "deribit_price_index.btc_usd" in currency_channels("BTC", private=False)


# -- books ------------------------------------------------------------------------------------------------
def test_linear_books_are_a_family_of_their_own() -> None:
    e = public_entries()
    listed = tuple(as_instrument(e[k]) for k in ("sol_usdc_perpetual", "sol_call", "sol_put", "btc_usdc_call",
                                               "inverse_option"))
    sol = BookFamily("SOL_USDC", "option")
    sol.listed(listed, AT)
    assert sorted(sol.entries) == ["SOL_USDC-26JUN26-140-P", "SOL_USDC-26JUN26-150-C"]
    assert sol.entries["SOL_USDC-26JUN26-150-C"].strike == 150.0
    btc = BookFamily("BTC", "option")
    btc.listed(listed, AT)
    assert sorted(btc.entries) == ["BTC-26JUN26-100000-C"]  # no BTC_USDC option among the inverse ones
    sol_futures = BookFamily("SOL_USDC", "future")
    sol_futures.listed(listed, AT)
    assert sorted(sol_futures.entries) == ["SOL_USDC-PERPETUAL"]
    sol.on_index(IndexPrice(index_name="sol_usdc", price=151.0, timestamp=int(AT * 1000)))
    sol.on_index(IndexPrice(index_name="sol_usd", price=1.0, timestamp=int(AT * 1000)))
    chain = sol.chain_snapshot(AT, AT)
    assert (chain.currency, chain.price_currency, chain.index_price) == ("SOL_USDC", "USDC", 151.0)
    assert btc.chain_snapshot(AT, AT).price_currency == "BTC"
    # A book message of another family's name is never taken (the bus keys by the name's first segment).
    assert btc.on_ticker(_ticker("BTC_USDC-26JUN26-110000-C"), AT) == ()
    assert "BTC_USDC-26JUN26-110000-C" not in btc.entries


def _ticker(name: str) -> Ticker:
    return msgspec.convert({"instrument_name": name, "timestamp": int(AT * 1000), "mark_price": 1.0,
                            "index_price": 100_000.0, "best_bid_price": 0.0, "best_ask_price": 0.0,
                            "best_bid_amount": 0.0, "best_ask_amount": 0.0, "state": "open"}, Ticker)


# -- implied vols of a linear family ----------------------------------------------------------------------
def _linear_quote(strike: float, option_type: str, usdc: float, forward: float, expiry_ms: int) -> OptionQuote:
    return OptionQuote(instrument_name=f"SOL_USDC-26JUN26-{strike:g}-{option_type[0].upper()}", expiry_ms=expiry_ms,
                       strike=strike, option_type=option_type,  # type: ignore[arg-type]
                       bid=usdc, bid_amount=10.0, ask=None, ask_amount=0.0, mark_price=usdc, mark_iv=None,
                       underlying_price=forward, index_price=forward, open_interest=None, delta=None, gamma=None,
                       vega=None, theta=None, age_s=0.0, stale=False)


@pytest.mark.parametrize(("strike", "option_type", "vol"), [(150.0, "call", 0.80), (140.0, "put", 0.65),
                                                             (170.0, "call", 1.20)])
def test_a_linear_options_usdc_price_gives_back_the_vol_it_was_priced_at(strike: float, option_type: str,
                                                                         vol: float) -> None:
    forward, expiry_ms = 151.3, int((AT + 5 * 86_400) * 1000)
    years = (expiry_ms - AT * 1000) / MS_PER_YEAR
    usdc = float(black76_price(forward, strike, years, vol, option_type == "call"))  # USDC: F and K in USDC
    chain = ChainSnapshot(currency="SOL_USDC", kind="option", at=AT, index_price=forward, price_currency="USDC",
                          options=(_linear_quote(strike, option_type, usdc, forward, expiry_ms),))
    snap = build_surface_snapshot(chain)
    [row] = snap.quotes
    assert row.bid == usdc and snap.price_currency == "USDC"  # the exchange's USDC price, its unit named
    assert row.bid_iv == pytest.approx(vol * 100.0, abs=1e-6)
    assert row.mark_iv == pytest.approx(vol * 100.0, abs=1e-6)
    # The same number read as a coin price (the inverse maths) is no vol at all, or a wrong one.
    as_coin = build_surface_snapshot(msgspec.structs.replace(chain, price_currency="SOL")).quotes[0].bid_iv
    assert as_coin is None or abs(as_coin - vol * 100.0) > 10.0
    # A chain that does not say its unit is read in its family's: SOL_USDC's are USDC.
    unsaid = build_surface_snapshot(msgspec.structs.replace(chain, price_currency=""))
    assert unsaid.price_currency == "USDC" and unsaid.quotes[0].bid_iv == row.bid_iv


def test_a_linear_chain_gets_the_same_vols_and_surface_as_the_same_chain_in_coin() -> None:
    coin = synthetic_chain_snapshot(n_quotes=300, n_expiries=6)
    to_usdc = lambda price, o: None if price is None else price * o.underlying_price  # noqa: E731
    linear = ChainSnapshot(
        currency="BTC_USDC", kind="option", at=coin.at, index_price=coin.index_price, price_currency="USDC",
        options=tuple(msgspec.structs.replace(o, bid=to_usdc(o.bid, o), ask=to_usdc(o.ask, o),
                                              mark_price=to_usdc(o.mark_price, o)) for o in coin.options))
    a, b = build_surface_snapshot(coin), build_surface_snapshot(linear)
    assert a.price_currency == "BTC" and b.price_currency == "USDC"
    assert len(a.quotes) == len(b.quotes) > 100
    for qa, qb in zip(a.quotes, b.quotes, strict=True):
        for field in ("bid_iv", "ask_iv", "mid_iv", "mark_iv"):
            va, vb = getattr(qa, field), getattr(qb, field)
            assert (va is None) == (vb is None) and (va is None or vb == pytest.approx(va, abs=1e-6)), field
    assert a.surface_ok and b.surface_ok
    assert b.atm_iv_30d == pytest.approx(a.atm_iv_30d, abs=1e-6)
    assert np.allclose([p.iv or 0.0 for p in b.points], [p.iv or 0.0 for p in a.points], atol=1e-6)


def test_family_is_frozen() -> None:
    family = family_of("SOL_USDC")
    assert isinstance(family, Family)
    with pytest.raises(AttributeError):
        family.name = "BTC"  # type: ignore[misc]
