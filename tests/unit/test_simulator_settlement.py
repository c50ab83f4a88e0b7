"""Deribit's position and PnL definitions in the simulator: the daily 08:00 UTC settlement, expiry
and delivery, the settlement history, platform locks, DVOL, the option marks and the USDC linear
instruments. Figures from real Deribit messages are quoted from issue 16 (a trader's account)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.accounts import Account, last_settlement_s
from simulator.errors import LOCKED_BY_ADMIN, RpcError
from simulator.exchange import Exchange
from simulator.listing import InstrumentSpec
from simulator.market import black76_usd, variance_swap_vol
from simulator.settings import SimAccount, SimSettings

# 2026-09-21 07:30 UTC, a Monday: half an hour before a settlement and the daily expiry.
BEFORE_EIGHT = datetime(2026, 9, 21, 7, 30, tzinfo=UTC).timestamp()
EIGHT = datetime(2026, 9, 21, 8, 0, tzinfo=UTC).timestamp()
SETTINGS = SimSettings(
    chain="small",
    accounts=(SimAccount("alice", "a-secret", (("BTC", 50.0), ("ETH", 500.0), ("USDC", 1e6))),),
    public_trades_per_s=0.0,
)


def exchange(now: float = BEFORE_EIGHT) -> Exchange:
    return Exchange(4, SETTINGS, now)


def spec_of(ex: Exchange, name: str) -> InstrumentSpec:
    return ex.instruments[name]


def test_last_settlement_is_the_latest_eight_utc() -> None:
    assert last_settlement_s(EIGHT) == EIGHT
    assert last_settlement_s(EIGHT - 1) == EIGHT - 86_400
    assert last_settlement_s(EIGHT + 86_399) == EIGHT


def test_inverse_perpetual_figures_of_a_real_position() -> None:
    """Issue 16's BTC-PERPETUAL: 40 USD at average 112,585.87, mark 109,266.97, last settlement
    109,351.31: Deribit's floating_profit_loss -2.82e-7 BTC (since the settlement) and
    total_profit_loss 40 (1/112,585.87 - 1/109,266.97) (against the average)."""
    ex = exchange()
    spec = spec_of(ex, "BTC-PERPETUAL")
    acc = ex.accounts["alice"]
    acc.apply_fill(spec, "buy", 40.0, 112_585.87, 0.0)
    acc.settle_position(spec, 109_351.31, 109_300.0, 0)
    pos = acc.positions[spec.name]
    assert pos.average_price == pytest.approx(112_585.87, rel=1e-12)
    assert round(pos.floating_pnl(109_266.97), 10) == pytest.approx(-2.82e-7, abs=5e-10)
    assert pos.total_pnl(109_266.97) == pytest.approx(40 * (1 / 112_585.87 - 1 / 109_266.97), rel=1e-12)


def test_deribits_own_user_changes_example() -> None:
    """Deribit's user.changes example (docs.deribit.com, user.changes.(kind).(currency).(interval)):
    a BTC-PERPETUAL long at average 15,000, last settlement 16,025.83, sells 10 USD at 17,391
    (mark 17,391) and keeps 185,160 USD. Deribit's own figures: the trade's profit_loss 0.00004898
    (against the settlement price), floating_profit_loss 0.906961435 (since the settlement),
    total_profit_loss 1.69711368 (against the average), size_currency 10.646886321."""
    ex = exchange()
    spec = spec_of(ex, "BTC-PERPETUAL")
    acc = ex.accounts["alice"]
    acc.apply_fill(spec, "buy", 185_170.0, 15_000.0, 0.0)
    acc.settle_position(spec, 16_025.83, 16_000.0, 0)
    realized = acc.apply_fill(spec, "sell", 10.0, 17_391.0, 0.0)
    pos = acc.positions[spec.name]
    assert pos.size == 185_160 and pos.average_price == pytest.approx(15_000.0, rel=1e-12)
    assert realized == pytest.approx(0.00004898, abs=5e-9)
    assert pos.floating_pnl(17_391.0) == pytest.approx(0.906961435, abs=5e-9)
    assert pos.total_pnl(17_391.0) == pytest.approx(1.69711368, abs=5e-8)
    assert pos.size / 17_391.0 == pytest.approx(10.646886321, abs=5e-9)


def test_linear_perpetual_figures_of_real_fills() -> None:
    """Issue 16's ETH_USDC-PERPETUAL: buys of 0.001 at 2,973.55 and 3,067.2 give average 3,020.375
    (arithmetic) and delta 0.002 ETH; PnL in USDC."""
    ex = exchange()
    spec = spec_of(ex, "ETH_USDC-PERPETUAL")
    acc = ex.accounts["alice"]
    acc.apply_fill(spec, "buy", 0.001, 2973.55, 0.0)
    acc.apply_fill(spec, "buy", 0.001, 3067.2, 0.0)
    pos = acc.positions[spec.name]
    assert pos.average_price == pytest.approx(3020.375, rel=1e-12)
    d = ex.position_json("alice", pos)
    assert d["delta"] == pytest.approx(0.002) and d["size_currency"] == pytest.approx(0.002)
    mark = d["mark_price"]
    assert d["total_profit_loss"] == pytest.approx(0.002 * (mark - 3020.375), abs=1e-8)
    assert ex.account_summary("alice", "USDC")["delta_total"] == pytest.approx(0.002)


@settings(max_examples=60, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 20), st.integers(-500, 500)), min_size=1, max_size=8
    ),
    settle_after=st.integers(0, 8),
    move=st.integers(-800, 800),
)
def test_session_pnl_adds_up_across_a_settlement(
    fills: list[tuple[str, int, int]], settle_after: int, move: int
) -> None:
    """Whatever the fills and wherever 08:00 falls among them, what the settlement moved into the
    balance plus the session's realised and floating PnL after it equal the PnL of the fills at the
    mark (inverse or linear maths): no PnL is lost or counted twice."""
    for name, base, step in (("BTC-PERPETUAL", 60_000.0, 10.0), ("BTC_USDC-PERPETUAL", 60_000.0, 0.001)):
        ex = exchange()
        spec = spec_of(ex, name)
        acc = Account("x", "", {"BTC": 0.0, "USDC": 0.0})
        cur = spec.settlement_currency
        mark = base + move
        whole = 0.0
        for i, (side, n, dp) in enumerate(fills):
            if i == settle_after:
                acc.settle_position(spec, base + move / 2, base, 0)
            price = base + dp
            acc.apply_fill(spec, side, n * step, price, 0.0)
            signed = n * step if side == "buy" else -n * step
            whole += signed * (mark - price) if spec.is_linear else signed * (1 / price - 1 / mark)
        pos = acc.positions.get(name)
        session = (pos.session_rpl + pos.floating_pnl(mark)) if pos else 0.0
        # The balance is kept to 1e-10, as the simulator rounds it.
        assert acc.balances[cur] + session == pytest.approx(whole, rel=1e-9, abs=1e-9)


def test_eight_utc_settles_every_position_and_expiry_delivers() -> None:
    ex = exchange()
    acc = ex.accounts["alice"]
    daily = min(
        (s for s in ex.instruments.values() if s.is_option and s.currency == "BTC" and not s.is_linear),
        key=lambda s: (s.expiration_ms, abs(s.strike - ex.index_price("BTC"))),
    )
    assert daily.expiration_ms == EIGHT * 1000
    perp = spec_of(ex, "BTC-PERPETUAL")
    ex.place("alice", "buy", {"instrument_name": perp.name, "amount": 1000, "type": "market"})
    ex.place("alice", "buy", {"instrument_name": daily.name, "amount": 1.0, "type": "market"})
    balance_before = acc.balances["BTC"]
    session_before = acc.positions[perp.name].session_rpl
    ex.events.clear()
    ex.step(EIGHT + 1.0)
    # The perpetual: settled at its mark, the session PnL in the balance, floating PnL from zero.
    mark = ex.settlement[perp.name]
    entries = acc.settlements["BTC"]
    settled = [e for e in entries if e["type"] == "settlement" and e["instrument_name"] == perp.name]
    assert len(settled) == 1 and settled[0]["mark_price"] == mark and settled[0]["timestamp"] == EIGHT * 1000
    assert settled[0]["position"] == 1000 and "funding" in settled[0]
    assert ex.ticker(perp.name)["settlement_price"] == mark
    pos = acc.positions[perp.name]
    assert pos.floating_pnl(mark) == pytest.approx(0.0, abs=1e-15)
    assert pos.session_rpl == 0.0
    # The option: delivered at the index, paid its value at expiry, gone from the positions.
    delivered = [e for e in entries if e["type"] == "delivery"]
    assert [e["instrument_name"] for e in delivered] == [daily.name]
    delivery = delivered[0]["index_price"]
    k = daily.strike
    value = (max(delivery - k, 0.0) if daily.option_type == "call" else max(k - delivery, 0.0)) / delivery
    assert delivered[0]["mark_price"] == pytest.approx(value, abs=1e-9)
    assert daily.name not in acc.positions and daily.name not in ex.instruments
    moved = settled[0]["session_profit_loss"] + value * 1.0
    assert acc.balances["BTC"] == pytest.approx(balance_before + moved, abs=1e-8)
    assert settled[0]["session_profit_loss"] == pytest.approx(session_before + settled[0]["profit_loss"], abs=1e-9)
    # Its last ticker and the instrument states, in Deribit's order.
    closing = [e[2] for e in ex.events if e[0] == "ticker_closed" and e[1] == daily.name]
    assert len(closing) == 1
    last = closing[0]
    assert last["state"] == "closed" and last["estimated_delivery_price"] == "expired"
    assert last["delivery_price"] == delivery and last["greeks"]["delta"] == 0.0
    states = [e[2] for e in ex.events if e[0] == "state" and e[1].name == daily.name]
    assert states == ["closed", "settled", "terminated"]


def test_settlement_history_filters_and_pages() -> None:
    ex = exchange()
    acc = ex.accounts["alice"]
    perp = spec_of(ex, "BTC-PERPETUAL")
    ex.place("alice", "buy", {"instrument_name": perp.name, "amount": 100, "type": "market"})
    for day in range(5):
        ex.step(EIGHT + day * 86_400 + 1.0, requote=False)
    history = ex.settlement_history("alice", "BTC", None, 2, None)
    assert len(history["settlements"]) == 2 and history["continuation"] is not None
    stamps = [e["timestamp"] for e in history["settlements"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as Deribit lists them
    rest = ex.settlement_history("alice", "BTC", None, 10, history["continuation"])
    assert len(history["settlements"]) + len(rest["settlements"]) == len(acc.settlements["BTC"])
    assert rest["continuation"] is None
    assert ex.settlement_history("alice", "BTC", "delivery", 10, None)["settlements"] == []
    assert all(
        e["type"] == "settlement" for e in ex.settlement_history("alice", "BTC", "settlement", 10, None)["settlements"]
    )
    with pytest.raises(RpcError):
        ex.settlement_history("alice", "BTC", "funding", 10, None)


def test_a_locked_index_refuses_orders_and_says_so() -> None:
    ex = exchange()
    ex.lock_index("btc_usd", True)
    assert ("platform_state", "btc_usd", True) in ex.events
    with pytest.raises(RpcError) as e:
        ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"})
    assert e.value.code == LOCKED_BY_ADMIN
    # Other indices trade on: the USDC perpetual is on btc_usdc, ETH on eth_usd.
    ex.place("alice", "buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.001, "type": "market"})
    ex.place("alice", "buy", {"instrument_name": "ETH-PERPETUAL", "amount": 1, "type": "market"})
    ex.lock_index("btc_usd", False)
    assert ("platform_state", "btc_usd", False) in ex.events
    ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"})


def flat(vol: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda k: np.full_like(k, vol)


def test_variance_swap_of_a_flat_smile_is_its_vol() -> None:
    for vol in (0.3, 0.8, 1.5):
        got = variance_swap_vol(60_000.0, 30 / 365, flat(vol))
        assert got == pytest.approx(vol, rel=2e-3)


def test_dvol_comes_from_the_smile() -> None:
    ex = exchange()
    m = ex.market
    st_ = m.state["BTC"]
    t = 30 / 365
    atm = float(m.atm_vol("BTC", np.array([t]))[0])
    dvol = m.volatility_index("BTC")
    # A smile with curvature: the variance swap is above the at-the-money vol.
    assert st_.smile > 0 and dvol > 100 * atm
    st_.skew, st_.smile = 0.0, 0.0
    assert m.volatility_index("BTC") == pytest.approx(100 * atm, abs=0.2)


def test_option_marks_of_an_index() -> None:
    ex = exchange()
    marks = ex.option_marks("btc_usd")
    names = {s.name for s in ex.instruments.values() if s.is_option and s.price_index == "btc_usd"}
    assert {m["instrument_name"] for m in marks} == names
    for m in marks:
        q = ex.market.quote(m["instrument_name"])
        assert m["mark_price"] == q.mark_price and m["iv"] == pytest.approx(q.mark_iv / 100)
    linear = ex.option_marks("btc_usdc")
    assert linear and all("_USDC-" in m["instrument_name"] for m in linear)


def test_usdc_instruments_are_listed_as_deribit_lists_them() -> None:
    ex = exchange()
    listed = {i["instrument_name"]: i for i in ex.instruments_json("USDC")}
    perp = listed["BTC_USDC-PERPETUAL"]
    # public/get_instrument of BTC_USDC-PERPETUAL (kostic/gec, 2025).
    want: dict[str, Any] = {
        "kind": "future",
        "instrument_type": "linear",
        "future_type": "linear",
        "settlement_currency": "USDC",
        "quote_currency": "USDC",
        "counter_currency": "USDC",
        "base_currency": "BTC",
        "price_index": "btc_usdc",
        "contract_size": 0.001,
        "min_trade_amount": 0.001,
        "tick_size": 1,
        "maker_commission": 0,
        "taker_commission": 0.0005,
        "settlement_period": "perpetual",
        "expiration_timestamp": 32503708800000,
        "max_leverage": 50,
        "max_liquidation_commission": 0.0075,
    }
    for key, value in want.items():
        assert perp[key] == value and type(perp[key]) is type(value), key
    options = [i for i in listed.values() if i["kind"] == "option"]
    assert options and all(i["instrument_type"] == "linear" and i["quote_currency"] == "USDC" for i in options)
    assert all(i["instrument_name"].startswith("BTC_USDC-") for i in options)
    # Nothing linear among the coin-settled lists, nothing inverse among the USDC one.
    assert all(i["instrument_type"] == "reversed" for i in ex.instruments_json("BTC"))


def test_a_usdc_option_trades_in_usdc() -> None:
    ex = exchange()
    acc = ex.accounts["alice"]
    spec = next(s for s in ex.instruments.values() if s.is_option and s.is_linear)
    before = acc.balances["USDC"]
    res = ex.place("alice", "buy", {"instrument_name": spec.name, "amount": 0.1, "type": "market"})
    trade = res["trades"][0]
    assert trade["fee_currency"] == "USDC"
    assert acc.balances["USDC"] == pytest.approx(before - 0.1 * trade["price"] - trade["fee"], abs=1e-8)
    q = ex.market.quote(spec.name)
    f, t = q.underlying_price, ex.market.years_to(spec.expiration_ms)
    usd = black76_usd(
        np.array([f]),
        np.array([spec.strike]),
        np.array([t]),
        np.array([q.mark_iv / 100]),
        np.array([spec.option_type == "call"]),
    )[0]
    assert q.mark_price == pytest.approx(usd, abs=1e-3 + 1e-4 * f)  # priced in USDC, not in the coin
    pos = ex.positions_json("alice", "USDC")
    assert [p["instrument_name"] for p in pos] == [spec.name]
    assert pos[0]["total_profit_loss"] == pytest.approx(0.1 * (q.mark_price - trade["price"]), abs=1e-8)


def test_user_changes_carry_orders_trades_and_the_position_at_once() -> None:
    ex = exchange()
    ex.events.clear()
    res = ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 50, "type": "market"})
    changes = [e for e in ex.events if e[0] == "changes"]
    assert len(changes) == 1
    _, cid, spec, orders, trades, positions = changes[0]
    assert cid == "alice" and spec.name == "BTC-PERPETUAL"
    assert [o["order_id"] for o in orders] == [res["order"]["order_id"]]
    assert [t["trade_id"] for t in trades] == [t["trade_id"] for t in res["trades"]]
    assert positions[0]["size"] == 50 and positions[0]["instrument_name"] == "BTC-PERPETUAL"
    # A resting order alone: orders, no trades, the position as it stands.
    ex.events.clear()
    bid = ex.books["BTC-PERPETUAL"].top()[0]
    ex.place("alice", "buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": bid - 50})
    changes = [e for e in ex.events if e[0] == "changes"]
    assert len(changes) == 1 and changes[0][4] == [] and changes[0][3][0]["order_state"] == "open"


def test_account_limits_in_the_summary() -> None:
    limits = exchange().account_summary("alice", "BTC")["limits"]
    assert limits["limits_per_currency"] is False
    assert set(limits["non_matching_engine"]) == {"burst", "rate"}
    assert math.isfinite(limits["matching_engine"]["trading"]["total"]["rate"])
