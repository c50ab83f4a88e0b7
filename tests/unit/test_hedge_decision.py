"""The pure hedge decision: both modes, every delta source, the band, rounding to contracts."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit.instruments import parse_instrument_name
from desk.hedge_decision import (
    SECONDS_PER_YEAR,
    HedgePolicy,
    HedgeQuote,
    OptionMark,
    black76_delta,
    decide,
)
from desk.index_level import Underlying
from messages.account import Position
from messages.market import Greeks, Ticker
from quant import black76_greeks

CALL = "BTC-24SEP21-20000-C"
PUT = "BTC-24SEP21-18000-P"
EXPIRY_S = parse_instrument_name(CALL).expiry_ms / 1000  # type: ignore[operator]
NOW = EXPIRY_S - 36.5 * 86400  # a tenth of a year before expiry
PERP = "BTC-PERPETUAL"


def option(name: str, size: float, delta: float | None = None) -> Position:
    return Position(instrument_name=name, kind="option", direction="buy" if size > 0 else "sell", size=size,
                    delta=delta)


def future(name: str, size_usd: float, mark: float | None = None) -> Position:
    return Position(instrument_name=name, kind="future", direction="buy" if size_usd > 0 else "sell",
                    size=size_usd, mark_price=mark)


def mark(name: str, iv: float | None = 60.0, und: float | None = 20000.0, exchange_delta: float | None = None,
         at: float = NOW, price: float = 0.05) -> OptionMark:
    return OptionMark(instrument_name=name, mark_price=price, mark_iv=iv, underlying_price=und,
                      exchange_delta=exchange_delta, received_at=at)


def quote(bid: float = 19995.0, ask: float = 20005.0, at: float = NOW, stale: bool = False) -> HedgeQuote:
    return HedgeQuote(instrument_name=PERP, bid=bid, ask=ask, mark_price=20000.0, received_at=at, stale=stale)


def policy(**kw: object) -> HedgePolicy:
    base: dict[str, object] = dict(instrument=PERP, contract_size=10.0, band=0.0025)
    base.update(kw)
    return HedgePolicy(**base)  # type: ignore[arg-type]


def reference_delta(name: str, und: float, iv: float, now: float) -> tuple[float, float]:
    parsed = parse_instrument_name(name)
    years = (parsed.expiry_ms / 1000 - now) / SECONDS_PER_YEAR  # type: ignore[operator]
    g = black76_greeks(und, parsed.strike, years, iv / 100, parsed.option_type == "call")
    return float(g.delta), float(g.delta_premium_adjusted)


# -- the closed form against the project's vectorized Black-76 ---------------------------------
@given(
    forward=st.floats(100, 200_000),
    moneyness=st.floats(0.2, 5.0),
    years=st.floats(0.0, 3.0),
    # (quant.black76_greeks returns NaN for subnormal vols such as 2e-309; a vol is 0 or real)
    vol=st.one_of(st.just(0.0), st.floats(1e-6, 3.0)),
    is_call=st.booleans(),
)
def test_closed_form_delta_matches_quant_black76(forward: float, moneyness: float, years: float, vol: float,
                                                 is_call: bool) -> None:
    strike = forward * moneyness
    delta, delta_pa = black76_delta(forward, strike, years, vol, is_call)
    ref = black76_greeks(forward, strike, years, vol, is_call)
    assert delta == pytest.approx(float(ref.delta), abs=1e-12)
    assert delta_pa == pytest.approx(float(ref.delta_premium_adjusted), abs=1e-10)


def test_closed_form_at_expiry_is_the_intrinsic_step() -> None:
    assert black76_delta(20000, 19000, 0.0, 0.6, True) == (1.0, 1.0 - 1000 / 20000)
    assert black76_delta(20000, 21000, -1.0, 0.6, True) == (0.0, 0.0)
    assert black76_delta(20000, 21000, 0.0, 0.6, False) == (-1.0, -1.0 - 1000 / 20000)
    assert black76_delta(20000, 20000, 0.5, 0.0, True)[0] == 0.5
    with pytest.raises(ValueError, match="positive forward"):
        black76_delta(0.0, 20000, 0.1, 0.6, True)


# -- the seed's example: 0.25% of the underlying, 50 USD at 20,000 -----------------------------
def test_seed_example_band_of_50_usd_at_20000() -> None:
    # 0.1 BTC of a call with exchange delta 0.03 -> +0.003 BTC = 60 USD at 20,000: outside 50 USD.
    positions = [option(CALL, 0.1)]
    marks = {CALL: mark(CALL, exchange_delta=0.03)}
    d = decide(positions, marks, quote(), policy(delta_source="exchange"), NOW)
    assert d.trade and d.side == "sell" and d.amount == 60.0
    assert d.options_delta == pytest.approx(0.003)
    assert d.hedge_delta == 0.0 and d.mismatch == pytest.approx(0.003)
    assert d.after == pytest.approx(0.0, abs=1e-12)
    assert d.price == 20000.0
    # 0.0024 BTC = 48 USD: inside.
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.024)}, quote(), policy(delta_source="exchange"), NOW)
    assert d.action == "hold" and d.code == "within_band" and d.side is None and d.amount == 0
    # Exactly on the edge (50 USD) is inside: rehedge only when the band is exceeded.
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.025)}, quote(), policy(delta_source="exchange"), NOW)
    assert d.action == "hold"


def test_hedge_position_offsets_the_options() -> None:
    # +0.003 options against -60 USD of perpetual (= -0.003 BTC at 20,000): balanced.
    positions = [option(CALL, 0.1), future(PERP, -60.0)]
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.03)}, quote(), policy(delta_source="exchange"), NOW)
    assert d.action == "hold" and d.mismatch == pytest.approx(0.0, abs=1e-12)
    assert d.hedge_delta == pytest.approx(-0.003)
    # The market rallies: the short perpetual is worth fewer coins, the calls more.
    q = HedgeQuote(instrument_name=PERP, bid=21995, ask=22005, mark_price=22000, received_at=NOW)
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.06)}, q, policy(delta_source="exchange"), NOW)
    assert d.hedge_delta == pytest.approx(-60 / 22000)
    assert d.mismatch == pytest.approx(0.006 - 60 / 22000)
    assert d.trade and d.side == "sell"
    assert d.amount == round((0.006 - 60 / 22000) * 22000 / 10) * 10  # 72 -> 70 USD


@pytest.mark.parametrize(
    ("exchange_delta", "amount", "after"),
    [
        (0.0314, 60.0, 0.00314 - 60 / 20000),  # 62.8 USD -> 6 contracts
        (0.03275, 70.0, 0.003275 - 70 / 20000),  # 65.5 USD -> halves round up: 7 contracts
        (0.0326, 70.0, 0.00326 - 70 / 20000),  # 65.2 USD -> nearest is 70 (|after| 0.00024 < 0.00026)
        (-0.0314, 60.0, -0.00314 + 60 / 20000),  # short delta: buy
    ],
)
def test_order_rounds_to_the_nearest_whole_contract(exchange_delta: float, amount: float, after: float) -> None:
    d = decide([option(CALL, 0.1)], {CALL: mark(CALL, exchange_delta=exchange_delta)}, quote(),
               policy(delta_source="exchange"), NOW)
    assert d.trade and d.amount == amount
    assert d.side == ("sell" if exchange_delta > 0 else "buy")
    assert d.after == pytest.approx(after)
    assert abs(d.after) <= 0.5 * 10 / 20000 + 1e-12  # within half a contract of zero
    assert d.amount % 10 == 0


def test_eth_contract_of_one_usd() -> None:
    call = "ETH-24SEP21-2000-C"
    q = HedgeQuote(instrument_name="ETH-PERPETUAL", bid=1999.5, ask=2000.5, mark_price=2000, received_at=NOW)
    p = HedgePolicy(instrument="ETH-PERPETUAL", contract_size=1.0, band=0.0025, delta_source="exchange")
    d = decide([option(call, 1.0)], {call: mark(call, exchange_delta=0.0123, und=2000)}, q, p, NOW)
    assert d.trade and d.side == "sell" and d.amount == 25.0  # 0.0123 ETH x 2000 = 24.6 USD -> 25


def test_band_smaller_than_half_a_contract_holds() -> None:
    d = decide([option(CALL, 0.1)], {CALL: mark(CALL, exchange_delta=0.002)}, quote(),
               policy(delta_source="exchange", band=0.0001), NOW)
    # 0.0002 BTC = 4 USD: outside the band but the nearest whole contract is none.
    assert d.action == "hold" and d.code == "below_contract" and d.amount == 0


def test_order_capped_at_max_order_usd() -> None:
    d = decide([option(CALL, 10.0)], {CALL: mark(CALL, exchange_delta=0.5)}, quote(),
               policy(delta_source="exchange", max_order_usd=1234.0), NOW)
    assert d.trade and d.amount == 1230.0 and "capped" in d.reason
    assert d.after == pytest.approx(5.0 - 1230 / 20000)


# -- modes -------------------------------------------------------------------------------------
def test_options_vs_hedge_ignores_other_futures_and_net_counts_them() -> None:
    other = "BTC-24SEP21"
    positions = [option(CALL, 1.0), future(PERP, -600.0), future(other, -4000.0, mark=20100.0)]
    marks = {CALL: mark(CALL, exchange_delta=0.3)}
    d = decide(positions, marks, quote(), policy(delta_source="exchange"), NOW)
    assert d.mismatch == pytest.approx(0.3 - 600 / 20000)
    assert [p.instrument_name for p in d.deltas] == [CALL, PERP]
    assert d.trade and d.side == "sell" and d.amount == 5400.0

    net = decide(positions, marks, quote(), policy(delta_source="exchange", mode="net"), NOW)
    assert net.hedge_delta == pytest.approx(-600 / 20000 - 4000 / 20100)
    assert net.mismatch == pytest.approx(0.3 - 600 / 20000 - 4000 / 20100)
    assert [p.instrument_name for p in net.deltas] == [CALL, PERP, other]
    # A live price for the other future beats its position's mark.
    live = decide(positions, marks, quote(), policy(delta_source="exchange", mode="net"), NOW,
                  future_prices={other: 20200.0})
    assert live.hedge_delta == pytest.approx(-600 / 20000 - 4000 / 20200)


def test_net_mode_counts_a_linear_future_in_coin() -> None:
    linear = "BTC_USDC-PERPETUAL"
    positions = [option(CALL, 1.0), Position(instrument_name=linear, kind="future", direction="sell", size=-0.25)]
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.3)}, quote(),
               policy(delta_source="exchange", mode="net"), NOW)
    assert d.hedge_delta == pytest.approx(-0.25) and d.mismatch == pytest.approx(0.05)


def test_net_mode_without_a_price_for_another_future_is_blocked() -> None:
    positions = [option(CALL, 1.0), future("BTC-24SEP21", -4000.0)]
    d = decide(positions, {CALL: mark(CALL, exchange_delta=0.3)}, quote(), policy(mode="net"), NOW)
    assert d.action == "blocked" and d.code == "no_future_price"


# -- delta sources -----------------------------------------------------------------------------
def test_black76_source_uses_mark_iv_and_underlying() -> None:
    positions = [option(CALL, 2.0), option(PUT, -1.5)]
    marks = {CALL: mark(CALL, iv=62.5, und=20150.0), PUT: mark(PUT, iv=71.0, und=20150.0)}
    d = decide(positions, marks, quote(), policy(), NOW)
    call_delta, _ = reference_delta(CALL, 20150.0, 62.5, NOW)
    put_delta, _ = reference_delta(PUT, 20150.0, 71.0, NOW)
    expected = 2.0 * call_delta - 1.5 * put_delta
    assert d.options_delta == pytest.approx(expected, abs=1e-12)
    assert d.ours_options_delta == pytest.approx(expected, abs=1e-12)
    assert [p.delta for p in d.deltas] == pytest.approx([2.0 * call_delta, -1.5 * put_delta], abs=1e-12)
    assert d.trade and d.side == "sell"
    assert d.amount == round(expected * 20000 / 10) * 10


def test_premium_adjusted_source_subtracts_the_premium_in_coin() -> None:
    positions = [option(CALL, 2.0), option(PUT, -1.5)]
    marks = {CALL: mark(CALL, iv=62.5, und=20150.0), PUT: mark(PUT, iv=71.0, und=20150.0)}
    d = decide(positions, marks, quote(), policy(delta_source="premium_adjusted"), NOW)
    _, call_pa = reference_delta(CALL, 20150.0, 62.5, NOW)
    _, put_pa = reference_delta(PUT, 20150.0, 71.0, NOW)
    assert d.options_delta == pytest.approx(2.0 * call_pa - 1.5 * put_pa, abs=1e-10)
    plain = decide(positions, marks, quote(), policy(), NOW)
    assert d.options_delta < plain.options_delta  # long premium (net) lowers the coin delta


def test_time_to_expiry_moves_the_delta() -> None:
    positions = [option(CALL, 1.0)]
    marks = {CALL: mark(CALL, iv=60.0, und=21000.0, at=EXPIRY_S - 3600)}
    late = decide(positions, marks, quote(at=EXPIRY_S - 3600), policy(), EXPIRY_S - 3600)
    early = decide(positions, {CALL: mark(CALL, iv=60.0, und=21000.0)}, quote(), policy(), NOW)
    assert late.options_delta == pytest.approx(reference_delta(CALL, 21000.0, 60.0, EXPIRY_S - 3600)[0])
    assert late.options_delta > early.options_delta  # in the money, closer to expiry: nearer 1


def test_exchange_source_uses_ticker_greeks_else_the_position_delta() -> None:
    positions = [option(CALL, 2.0), option(PUT, -1.0, delta=0.4)]
    marks = {CALL: mark(CALL, exchange_delta=0.55), PUT: mark(PUT, exchange_delta=None)}
    d = decide(positions, marks, quote(), policy(delta_source="exchange"), NOW)
    assert d.options_delta == pytest.approx(2 * 0.55 + 0.4)
    assert d.exchange_options_delta == pytest.approx(1.5)


def test_exchange_source_without_any_delta_is_blocked() -> None:
    d = decide([option(CALL, 2.0)], {CALL: mark(CALL, exchange_delta=None)}, quote(),
               policy(delta_source="exchange"), NOW)
    assert d.action == "blocked" and d.code == "no_option_delta" and CALL in d.reason


def test_black76_source_without_mark_iv_is_blocked_but_exchange_works() -> None:
    marks = {CALL: mark(CALL, iv=None, exchange_delta=0.5)}
    d = decide([option(CALL, 1.0)], marks, quote(), policy(), NOW)
    assert d.action == "blocked" and d.code == "no_option_delta" and "mark IV" in d.reason
    assert decide([option(CALL, 1.0)], marks, quote(), policy(delta_source="exchange"), NOW).trade


def test_disagreement_between_ours_and_the_exchange_warns() -> None:
    ours, _ = reference_delta(CALL, 20000.0, 60.0, NOW)
    close = decide([option(CALL, 1.0)], {CALL: mark(CALL, exchange_delta=ours + 0.001)}, quote(), policy(), NOW)
    assert close.warning == ""
    far = decide([option(CALL, 1.0)], {CALL: mark(CALL, exchange_delta=ours + 0.05)}, quote(), policy(), NOW)
    assert "differ" in far.warning and far.exchange_options_delta == pytest.approx(ours + 0.05)
    assert far.options_delta == pytest.approx(ours)  # the warning does not change the source


def test_deltas_against_deribit_style_ticker() -> None:
    # OptionMark.from_ticker reads what the Connection decodes.
    ticker = Ticker(instrument_name=CALL, timestamp=int(NOW * 1000), state="open", mark_price=0.0521,
                    mark_iv=60.0, underlying_price=20000.0,
                    greeks=Greeks(delta=0.53, gamma=0.0, vega=0.0, theta=0.0))
    m = OptionMark.from_ticker(ticker, NOW)
    assert (m.mark_iv, m.underlying_price, m.exchange_delta, m.received_at) == (60.0, 20000.0, 0.53, NOW)


# -- data that does not allow a decision -------------------------------------------------------
@pytest.mark.parametrize(
    ("hedge", "marks", "code"),
    [
        (None, {CALL: mark(CALL)}, "no_hedge_quote"),
        (quote(stale=True), {CALL: mark(CALL)}, "hedge_book_stale"),
        (quote(at=NOW - 11), {CALL: mark(CALL)}, "stale_hedge_quote"),
        (HedgeQuote(instrument_name=PERP, bid=None, ask=None, mark_price=None, received_at=NOW), {CALL: mark(CALL)},
         "no_hedge_price"),
        (quote(), {}, "no_ticker"),
        (quote(), {CALL: mark(CALL, at=NOW - 10.5)}, "stale_ticker"),
    ],
)
def test_blocked_on_missing_or_stale_data(hedge: HedgeQuote | None, marks: dict[str, OptionMark], code: str) -> None:
    d = decide([option(CALL, 1.0)], marks, hedge, policy(), NOW)
    assert d.action == "blocked" and d.code == code and d.side is None
    assert d.reason  # a readable why


def test_flat_and_unheld_positions_need_no_data() -> None:
    d = decide([option(CALL, 0.0)], {}, quote(), policy(), NOW)
    assert d.action == "hold" and d.mismatch == 0.0


def test_one_sided_hedge_book_falls_back_to_the_mark() -> None:
    q = HedgeQuote(instrument_name=PERP, bid=None, ask=20010.0, mark_price=20002.0, received_at=NOW)
    assert q.price == 20002.0
    assert quote().price == 20000.0


def test_vectorized_reference_agrees_on_a_chain() -> None:
    # Many options at once: the sum of closed-form deltas equals the vectorized figure.
    strikes = np.arange(10000, 40001, 1000)
    names = [f"BTC-24SEP21-{k}-{'C' if k % 2000 else 'P'}" for k in strikes]
    sizes = np.linspace(-3, 3, len(names))
    positions = [option(n, float(s)) for n, s in zip(names, sizes, strict=True) if s != 0]
    marks = {n: mark(n, iv=50 + i, und=20500.0) for i, n in enumerate(names)}
    d = decide(positions, marks, quote(), policy(), NOW)
    ivs = np.array([50 + i for i in range(len(names))]) / 100
    is_call = np.array([n.endswith("C") for n in names])
    g = black76_greeks(20500.0, strikes.astype(float), (EXPIRY_S - NOW) / SECONDS_PER_YEAR, ivs, is_call)
    assert d.options_delta == pytest.approx(float(np.sum(sizes * g.delta)), abs=1e-10)
    assert math.isfinite(d.mismatch or math.nan)


def test_every_leg_is_valued_at_the_newest_index_level() -> None:
    # The ticker came with the index at 20,000 (underlying 20,100); the index is now 20,400 (+2%)
    # and the option's next ticker has not arrived: its forward is carried up by the same 2%, and
    # the hedge leg is valued at its basis times the level, not at its last mid.
    positions = [option(CALL, 1.0), future(PERP, -20000.0)]
    marks = {CALL: OptionMark(instrument_name=CALL, mark_price=0.05, mark_iv=60.0, underlying_price=20100.0,
                              exchange_delta=None, received_at=NOW, index_price=20000.0)}
    level = Underlying(index=20400.0, basis=1.001)
    d = decide(positions, marks, quote(), policy(), NOW, underlying=level)
    assert d.options_delta == pytest.approx(reference_delta(CALL, 20100.0 * 1.02, 60.0, NOW)[0], abs=1e-12)
    assert d.price == pytest.approx(20400.0 * 1.001)
    assert d.hedge_delta == pytest.approx(-20000.0 / (20400.0 * 1.001))
    # The disagreement check and ours_options_delta stay at the ticker's own forward.
    assert d.ours_options_delta == pytest.approx(reference_delta(CALL, 20100.0, 60.0, NOW)[0], abs=1e-12)
    # Without a level, or a ticker without its index, the ticker's forward is used as it is.
    assert decide(positions, marks, quote(), policy(), NOW).options_delta == pytest.approx(
        reference_delta(CALL, 20100.0, 60.0, NOW)[0], abs=1e-12)
    plain = {CALL: mark(CALL, iv=60.0, und=20100.0)}
    assert decide(positions, plain, quote(), policy(), NOW, underlying=level).options_delta == pytest.approx(
        reference_delta(CALL, 20100.0, 60.0, NOW)[0], abs=1e-12)


def test_one_move_seen_in_any_order_gives_one_picture() -> None:
    # A 2% move reaches the desk as the option's ticker (new underlying and index) and the
    # perpetual's quote, in either order. Valued at the newest level, the mismatch is the same
    # whichever came first: the hedger cannot see the move twice and hedge it back.
    positions = [option(CALL, 2.0), future(PERP, -20000.0)]
    before = OptionMark(instrument_name=CALL, mark_price=0.05, mark_iv=60.0, underlying_price=20100.0,
                        exchange_delta=None, received_at=NOW, index_price=20000.0)
    after = msgspec.structs.replace(before, underlying_price=20100.0 * 1.02, index_price=20400.0)
    old_quote = quote()
    new_quote = HedgeQuote(instrument_name=PERP, bid=20399.5, ask=20400.5, mark_price=20400.0, received_at=NOW)
    level = Underlying(index=20400.0, basis=1.0)
    ticker_first = decide(positions, {CALL: after}, old_quote, policy(), NOW, underlying=level)
    quote_first = decide(positions, {CALL: before}, new_quote, policy(), NOW, underlying=level)
    both = decide(positions, {CALL: after}, new_quote, policy(), NOW, underlying=level)
    assert ticker_first.mismatch == pytest.approx(both.mismatch, abs=1e-12)
    assert quote_first.mismatch == pytest.approx(both.mismatch, abs=1e-12)
