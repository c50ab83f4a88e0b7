"""The book's risk (desk.risk): against an independent Black-76 written here with math.erf, finite
differences of that formula, Deribit's real tickers and account messages, and hostile marks."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desk.risk import (
    ACCOUNT_TOLERANCE,
    EQUIVALENT_DAYS,
    MAX_IV,
    Exposure,
    OptionMark,
    currency_risk,
    mark_of,
    marks_of,
    option_exposure,
)
from messages.account import Position
from messages.market import Instrument
from messages.state import OptionQuote, PortfolioChanged
from tests.support.fixtures_quant.deribit_tickers import load_tickers
from tests.support.public_messages import public_messages

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY_MS = 86_400_000


# --- an independent Black-76 (r = 0, 365-day years) ------------------------------------------------

def _n(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def b76(f: float, k: float, t: float, v: float, call: bool) -> float:
    if t <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    s = v * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    d2 = d1 - s
    return f * _n(d1) - k * _n(d2) if call else k * _n(-d2) - f * _n(-d1)


def _mark(name: str = "BTC-15DEC23-40000-C", days: float = 30.0, k: float = 40_000.0, call: bool = True,
          f: float = 40_500.0, iv: float = 0.55, mark_price: float | None = None, index: float | None = 40_400.0,
          linear: bool = False) -> OptionMark:
    return OptionMark(instrument_name=name, expiry_ms=int(NOW * 1000 + days * DAY_MS), strike=k, is_call=call,
                      forward=f, mark_iv=iv, mark_price=mark_price, index_price=index, linear=linear)


def _option(name: str, size: float) -> Position:
    return Position(instrument_name=name, kind="option", direction="buy" if size > 0 else "sell", size=size)


def _perp(size_usd: float, mark: float, size_currency: float | None = None, name: str = "BTC-PERPETUAL") -> Position:
    return Position(instrument_name=name, kind="future", direction="buy" if size_usd > 0 else "sell", size=size_usd,
                    mark_price=mark, size_currency=size_currency)


def _portfolio(*positions: Position, currency: str = "BTC", **figures: Any) -> PortfolioChanged:
    return PortfolioChanged(currency=currency, at=NOW, positions=positions, open_orders=(), **figures)


# --- one option against closed forms and finite differences ------------------------------------------

@pytest.mark.parametrize("call", [True, False])
@pytest.mark.parametrize("k", [30_000.0, 40_000.0, 52_000.0])
def test_one_option_against_the_closed_forms(call: bool, k: float) -> None:
    f, days, iv, size, index = 40_500.0, 30.0, 0.55, -2.5, 40_400.0
    t = days / 365.0
    s = iv * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    price = b76(f, k, t, iv, call)
    e = option_exposure(_mark(k=k, call=call), size, NOW)
    delta = _n(d1) if call else _n(d1) - 1.0
    assert e.delta == pytest.approx(size * delta, rel=1e-12, abs=1e-14)
    assert e.delta_pa == pytest.approx(size * (delta - price / f), rel=1e-10, abs=1e-13)
    gamma = _pdf(d1) / (f * s)
    assert e.gamma == pytest.approx(size * gamma, rel=1e-10)
    assert e.gamma_usd_1pct == pytest.approx(size * gamma * f * f / 100.0, rel=1e-10)
    vega = f * _pdf(d1) * math.sqrt(t) / 100.0
    assert e.vega_usd == pytest.approx(size * vega, rel=1e-10)
    assert e.vega_30d_usd == pytest.approx(e.vega_usd * math.sqrt(EQUIVALENT_DAYS / days), rel=1e-12)
    assert e.theta_usd == pytest.approx(-size * f * _pdf(d1) * iv / (2.0 * math.sqrt(t)) / 365.0, rel=1e-10)
    # No mark price sent: the value is the model's, in coin at the index.
    assert e.value_usd == pytest.approx(size * price / f * index, rel=1e-10)


def test_one_option_against_finite_differences_of_the_independent_price() -> None:
    f, k, days, iv = 40_500.0, 43_000.0, 45.0, 0.62
    t = days / 365.0
    e = option_exposure(_mark(k=k, f=f, days=days, iv=iv), 1.0, NOW)
    h = f * 1e-4
    assert e.delta == pytest.approx((b76(f + h, k, t, iv, True) - b76(f - h, k, t, iv, True)) / (2 * h), rel=1e-7)
    h = f * 1e-3
    gamma_fd = (b76(f + h, k, t, iv, True) - 2 * b76(f, k, t, iv, True) + b76(f - h, k, t, iv, True)) / h**2
    assert e.gamma == pytest.approx(gamma_fd, rel=1e-4)
    dv = 1e-4
    vega_fd = (b76(f, k, t, iv + dv, True) - b76(f, k, t, iv - dv, True)) / (2 * dv) / 100.0
    assert e.vega_usd == pytest.approx(vega_fd, rel=1e-7)
    dt = 1e-4 / 365.0
    theta_fd = -(b76(f, k, t + dt, iv, True) - b76(f, k, t - dt, iv, True)) / (2 * dt) / 365.0
    assert e.theta_usd == pytest.approx(theta_fd, rel=1e-6)
    # Premium-adjusted delta is the delta of the option's coin value measured in coin, times F:
    # d(F * price/F)/dF ... i.e. d(coin value)/dF * F = delta - price / F.
    coin = lambda x: b76(x, k, t, iv, True) / x  # noqa: E731
    h = f * 1e-5
    assert e.delta_pa == pytest.approx((coin(f + h) - coin(f - h)) / (2 * h) * f, rel=1e-6)


def test_premium_adjustment_uses_the_exchanges_mark_price_and_none_for_linear_options() -> None:
    e = option_exposure(_mark(mark_price=0.0512), 3.0, NOW)
    assert e.delta - e.delta_pa == pytest.approx(3.0 * 0.0512, rel=1e-12)
    assert e.value_usd == pytest.approx(3.0 * 0.0512 * 40_400.0, rel=1e-12)
    linear = option_exposure(_mark(mark_price=2100.0, linear=True), 3.0, NOW)
    assert linear.delta_pa == linear.delta
    assert linear.value_usd == pytest.approx(3.0 * 2100.0)


@pytest.mark.parametrize("bad", [
    {"forward": math.nan}, {"forward": math.inf}, {"forward": 0.0}, {"forward": -40_000.0},
    {"mark_iv": math.nan}, {"mark_iv": 0.0}, {"mark_iv": -0.5}, {"mark_iv": MAX_IV * 1.01}, {"mark_iv": math.inf},
    {"strike": 0.0}, {"strike": math.nan}, {"mark_price": math.nan}, {"mark_price": -0.01},
    {"index_price": 0.0}, {"index_price": math.inf},
])
def test_hostile_marks_are_refused(bad: dict[str, float]) -> None:
    fields = {"instrument_name": "BTC-15DEC23-40000-C", "expiry_ms": int(NOW * 1000 + 30 * DAY_MS),
              "strike": 40_000.0, "is_call": True, "forward": 40_500.0, "mark_iv": 0.55, **bad}
    mark = OptionMark(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="BTC-15DEC23-40000-C"):
        option_exposure(mark, 1.0, NOW)
    risk = currency_risk(_portfolio(_option(mark.instrument_name, 1.0), _perp(-4000.0, 40_000.0, -0.1)),
                         {mark.instrument_name: mark}, 40_000.0, NOW)
    assert len(risk.missing) == 1 and risk.missing[0].startswith("BTC-15DEC23-40000-C: ")
    assert all(math.isfinite(x) for x in risk.total.astuple())
    assert risk.total.delta == -0.1 and risk.options == Exposure()


def test_expired_unmarked_and_unknown_positions_are_named_and_left_out() -> None:
    live = _mark("BTC-15DEC23-40000-C")
    expired = _mark("BTC-14NOV23-40000-C", days=-0.01)
    book = _portfolio(_option(live.instrument_name, 1.0), _option(expired.instrument_name, 1.0),
                      _option("BTC-15DEC23-45000-C", 2.0), _option("BTC-15DEC23-50000-C", math.nan),
                      Position(instrument_name="BTC-FS-29DEC23_PERP", kind="future_combo", direction="buy", size=10.0),
                      _perp(1000.0, math.nan, None))
    risk = currency_risk(book, {m.instrument_name: m for m in (live, expired, _mark("BTC-15DEC23-50000-C", k=50_000))},
                         None, NOW)
    assert risk.missing == (
        "BTC-14NOV23-40000-C: expired",
        "BTC-15DEC23-45000-C: no mark",
        "BTC-15DEC23-50000-C: size nan is not a number",
        "BTC-FS-29DEC23_PERP: kind 'future_combo' is not modelled",
        "BTC-PERPETUAL: no size in coin and no instrument metadata to compute it",
    )
    assert risk.total == option_exposure(live, 1.0, NOW)


def test_a_nan_index_counts_as_none() -> None:
    m = _mark(mark_price=0.05, index=40_100.0)
    risk = currency_risk(_portfolio(_option(m.instrument_name, 1.0)), {m.instrument_name: m}, math.nan, NOW)
    assert risk.index_price is None
    assert risk.total.value_usd == pytest.approx(0.05 * 40_100.0)


# --- futures: delta in coin from the position or the contract maths -----------------------------------

def _perpetual_instrument(name: str, linear: bool) -> Instrument:
    return Instrument(instrument_name=name, kind="future", base_currency="BTC",
                      quote_currency="USDC" if linear else "USD", settlement_period="perpetual", tick_size=0.5,
                      contract_size=0.001 if linear else 10.0, min_trade_amount=0.001 if linear else 10.0,
                      expiration_timestamp=32_503_708_800_000, creation_timestamp=0,
                      settlement_currency="USDC" if linear else "BTC",
                      instrument_type="linear" if linear else "reversed")


def test_futures_delta_from_size_currency_or_the_contract_maths() -> None:
    inverse = _perpetual_instrument("BTC-PERPETUAL", linear=False)
    linear = _perpetual_instrument("BTC_USDC-PERPETUAL", linear=True)
    instruments = {i.instrument_name: i for i in (inverse, linear)}
    r = currency_risk(_portfolio(_perp(-10_000.0, 40_000.0)), {}, 40_000.0, NOW, instruments)
    assert r.total.delta == pytest.approx(-0.25) and r.total.delta_pa == r.total.delta
    r = currency_risk(_portfolio(_perp(0.75, 40_000.0, name="BTC_USDC-PERPETUAL"), currency="BTC_USDC"), {},
                      40_000.0, NOW, instruments)
    assert r.total.delta == pytest.approx(0.75)
    # The exchange's size_currency wins where sent.
    r = currency_risk(_portfolio(_perp(-10_000.0, 40_000.0, -0.2501)), {}, 40_000.0, NOW, instruments)
    assert r.total.delta == -0.2501
    assert [b.label for b in r.buckets] == ["PERPETUAL"] and r.options == Exposure()


def test_deribits_get_positions_example_delta_is_size_over_mark() -> None:
    """The docs' private/get_positions answer (BTC-PERPETUAL 50 USD at mark 7476.65): Deribit's
    ``delta`` 0.006687487 is our futures delta, from its size_currency and from the contract maths."""
    [raw] = _frame("get_positions", "docs-btc-perpetual")["result"]
    position = Position(instrument_name=raw["instrument_name"], kind=raw["kind"], direction=raw["direction"],
                        size=raw["size"], mark_price=raw["mark_price"], size_currency=raw["size_currency"])
    instruments = {"BTC-PERPETUAL": _perpetual_instrument("BTC-PERPETUAL", linear=False)}
    with_coin = currency_risk(_portfolio(position), {}, raw["index_price"], NOW)
    without = currency_risk(_portfolio(msgspec.structs.replace(position, size_currency=None)), {},
                            raw["index_price"], NOW, instruments)
    assert with_coin.total.delta == raw["delta"]
    assert without.total.delta == pytest.approx(raw["delta"], abs=5e-10)  # Deribit rounds to 9 decimals


def _frame(kind: str, stem: str) -> dict[str, Any]:
    [message] = [m for m in public_messages(kind) if m.name == f"{kind}/{stem}"]
    return message.frame


# --- whole books: buckets, totals, identities ---------------------------------------------------------

expiry_days = st.sampled_from([0.3, 1.0, 7.0, 30.0, 91.0, 365.0])
option_rows = st.tuples(expiry_days, st.floats(0.3, 3.0), st.booleans(), st.floats(0.1, 3.0),
                        st.floats(-50.0, 50.0).filter(lambda x: abs(x) > 1e-6), st.floats(0.0, 1.0))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(option_rows, min_size=1, max_size=25), fut=st.floats(-5e5, 5e5).filter(lambda x: abs(x) >= 1.0))
def test_buckets_sum_to_the_totals_and_the_premium_identity_holds(
        rows: list[tuple[float, float, bool, float, float, float]], fut: float) -> None:
    f = 40_000.0
    marks, positions = {}, []
    for i, (days, moneyness, call, iv, size, mark_fraction) in enumerate(rows):
        name = f"BTC-X{i}-{moneyness * f:.0f}-{'C' if call else 'P'}"
        # The closed form's cancellation can leave a worthless option a hair below 0: a price is never negative.
        model = max(b76(f, moneyness * f, days / 365.0, iv, call) / f, 0.0)
        marks[name] = _mark(name, days=days, k=moneyness * f, call=call, f=f, iv=iv, index=f,
                            mark_price=model if mark_fraction > 0.5 else None)
        positions.append(_option(name, size))
    positions.append(_perp(fut, f, fut / f))
    risk = currency_risk(_portfolio(*positions), marks, f, NOW)
    assert not risk.missing
    by_bucket = np.sum([b.exposure.astuple() for b in risk.buckets], axis=0)
    np.testing.assert_allclose(by_bucket, risk.total.astuple(), rtol=1e-9, atol=1e-9)
    assert sum(b.positions for b in risk.buckets) == len(positions)
    assert risk.buckets[-1].label == "PERPETUAL" and risk.buckets[-1].exposure.delta == pytest.approx(fut / f)
    expiries = [b.expiry_ms or 0 for b in risk.buckets[:-1]]
    assert expiries == sorted(expiries)
    # Options alone plus the future's delta is the total.
    assert risk.total.delta == pytest.approx(risk.options.delta + fut / f, rel=1e-9, abs=1e-9)
    assert risk.total.vega_usd == risk.options.vega_usd
    # Deribit's delta_total: options' delta less their value in coin, plus the futures.
    coin_value = sum(p.size * (marks[p.instrument_name].mark_price or b76(f, marks[p.instrument_name].strike,
                     (marks[p.instrument_name].expiry_ms / 1000 - NOW) / 86400 / 365, marks[p.instrument_name].mark_iv,
                     marks[p.instrument_name].is_call) / f) for p in positions if p.kind == "option")
    assert risk.total.delta_pa == pytest.approx(risk.options.delta - coin_value + fut / f, rel=1e-7, abs=1e-8)
    assert risk.options.value_usd == pytest.approx(coin_value * f, rel=1e-7, abs=1e-6)
    # Each option's exposure adds up to the whole.
    each = [option_exposure(marks[p.instrument_name], p.size, NOW) for p in positions if p.kind == "option"]
    np.testing.assert_allclose(np.sum([e.astuple() for e in each], axis=0), risk.options.astuple(),
                               rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(forward=st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-300, 40_000.0]),
       iv=st.sampled_from([math.nan, math.inf, 0.0, -0.3, 1e-9, 0.5, 9.99, 10.0, 10.5, 1e6]),
       mark_price=st.sampled_from([None, math.nan, -1.0, 0.0, 0.05, math.inf]),
       days=st.sampled_from([-1.0, 0.0, 1e-9, 0.5, 30.0]), size=st.sampled_from([math.nan, math.inf, -1.0, 2.0]))
def test_hostile_inputs_never_give_a_nan_total(forward: float, iv: float, mark_price: float | None, days: float,
                                                 size: float) -> None:
    m = _mark(f=forward, iv=iv, mark_price=mark_price, days=days)
    risk = currency_risk(_portfolio(_option(m.instrument_name, size)), {m.instrument_name: m}, 40_000.0, NOW)
    assert all(math.isfinite(x) for x in risk.total.astuple())
    assert all(math.isfinite(c.ours) for c in risk.account)
    assert risk.missing or risk.total != Exposure()


# --- Deribit as the oracle ------------------------------------------------------------------------------

def _ticker_book() -> tuple[dict[str, OptionMark], list[Position], dict[str, Any], float]:
    """Every option ticker of the real capture as one position (sizes +-1 .. 3) valued at one ``now``:
    each mark's expiry moved by its ticker's distance from ``now``, so every option keeps the time to
    expiry its ticker had. Beside them the account figures the exchange would send for that book
    (sum of size x ticker greek; delta_total: size x (delta - mark price))."""
    t = load_tickers()
    now_ms = int(t.timestamp_ms.max())
    marks, positions = {}, []
    sums: dict[str, Any] = dict.fromkeys(
        ("options_delta", "delta_total", "options_gamma", "options_vega", "options_theta"), 0.0)
    for i, name in enumerate(t.name):
        if not name.startswith("BTC"):
            continue
        size = (1.0 + i % 3) * (1 if i % 2 else -1)
        shift = now_ms - int(t.timestamp_ms[i])
        marks[name] = OptionMark(instrument_name=name, expiry_ms=int(t.expiry_ms[i]) + shift, strike=float(t.strike[i]),
                                 is_call=bool(t.is_call[i]), forward=float(t.underlying_price[i]),
                                 mark_iv=float(t.mark_iv[i]) / 100.0, mark_price=float(t.mark_price[i]),
                                 index_price=float(t.index_price[i]))
        positions.append(_option(name, size))
        sums["options_delta"] += size * t.delta[i]
        sums["delta_total"] += size * (t.delta[i] - t.mark_price[i])
        sums["options_gamma"] += size * t.gamma[i]
        sums["options_vega"] += size * t.vega[i]
        sums["options_theta"] += size * t.theta[i]
    return marks, positions, sums, now_ms / 1000.0


def test_each_option_matches_its_real_deribit_ticker() -> None:
    """Units checked on every ticker of the 2021-07-22 mainnet capture: delta in coin, gamma per USD
    (Deribit rounds it to 5 decimals), vega in USD per vol point, theta in USD per day."""
    t = load_tickers()
    for i, name in enumerate(t.name):
        mark = OptionMark(instrument_name=name, expiry_ms=int(t.expiry_ms[i]), strike=float(t.strike[i]),
                          is_call=bool(t.is_call[i]), forward=float(t.underlying_price[i]),
                          mark_iv=float(t.mark_iv[i]) / 100.0, mark_price=float(t.mark_price[i]))
        e = option_exposure(mark, 1.0, t.timestamp_ms[i] / 1000.0)
        assert e.delta == pytest.approx(t.delta[i], abs=1e-5), name
        assert e.gamma == pytest.approx(t.gamma[i], abs=5.1e-6), name
        assert e.vega_usd == pytest.approx(t.vega[i], rel=1e-3, abs=1e-4), name
        assert e.theta_usd == pytest.approx(t.theta[i], rel=2e-2, abs=1e-4), name  # last day: see test_black76
        assert e.delta - e.delta_pa == pytest.approx(t.mark_price[i], rel=1e-12)


def test_totals_equal_the_account_figures_deribits_tickers_give_within_the_stated_tolerance() -> None:
    marks, positions, sums, now = _ticker_book()
    risk = currency_risk(_portfolio(*positions, **sums), marks, None, now)
    assert not risk.missing
    gross_size = sum(abs(p.size) for p in positions)
    for check in risk.account:
        assert check.exchange == sums[check.name]
        absolute, _ = ACCOUNT_TOLERANCE[check.name]
        assert check.tolerance is not None and check.tolerance > absolute
        if check.name == "options_gamma":
            # The tickers' gammas are rounded to 5 decimals each (an account's sum is rounded once):
            # summed here they carry up to 5e-6 per coin held.
            assert check.difference is not None
            assert abs(check.difference) <= check.tolerance + 5e-6 * gross_size, check
        else:
            assert check.agrees, (check, check.difference)


def test_a_figure_off_by_more_than_the_tolerance_disagrees() -> None:
    marks, positions, _, now = _ticker_book()
    base = currency_risk(_portfolio(*positions), marks, None, now)
    tol = {c.name: c.tolerance or 0.0 for c in base.account}
    ours = {c.name: c.ours for c in base.account}
    sent: dict[str, Any] = {name: ours[name] + 0.9 * tol[name] for name in ours}
    sent["options_vega"] = ours["options_vega"] - 1.1 * tol["options_vega"]
    # An exchange (or simulator) that forgot the premium: delta_total = options' plain delta.
    sent["delta_total"] = ours["options_delta"]
    risk = currency_risk(_portfolio(*positions, **sent), marks, None, now)
    assert {c.name: c.agrees for c in risk.account} == {
        "options_delta": True, "delta_total": False, "options_gamma": True, "options_vega": False,
        "options_theta": True}
    assert currency_risk(_portfolio(*positions), marks, None, now).account[0].agrees is None


@pytest.mark.parametrize("kind,name", [("get_account_summary", "docs-nested-limits"),
                                       ("user_portfolio", "docs-btc")])
def test_deribits_own_account_figures_follow_the_delta_total_we_compute(kind: str, name: str) -> None:
    """Deribit's documented account answers (no positions of the same account are public): its
    ``delta_total`` is the raw deltas (``delta_total_map``) less the options' value in coin, and the
    raw deltas less ``options_delta`` are the futures' (``projected_delta_total``, which leaves out
    the nearest expiry's options): so ``options_delta`` is the plain delta and ``delta_total`` is
    options' delta - options' value + futures, our ``total.delta_pa``."""
    frame = _frame(kind, name)
    body = frame["result"] if "result" in frame else frame["params"]["data"]
    raw = body["delta_total_map"]["btc_usd"]
    assert body["delta_total"] == pytest.approx(raw - body["options_value"], abs=1e-6)
    futures = body["projected_delta_total"]
    assert raw - futures == pytest.approx(body["options_delta"], abs=1e-5)
    # Our figures for a book with those three parts: options' plain delta, value in coin, futures.
    ours = body["options_delta"] - body["options_value"] + futures
    assert ours == pytest.approx(body["delta_total"], abs=1e-5)


def test_an_empty_account_has_zero_risk_like_deribits() -> None:
    """roq's testnet user.portfolio of an account with no position: every greek 0, and ours too."""
    body = _frame("user_portfolio", "roq-btc")["params"]["data"]
    figures = {k: body[k] for k in ("options_delta", "delta_total", "options_gamma", "options_vega", "options_theta")}
    risk = currency_risk(_portfolio(**figures), {}, None, NOW)
    assert risk.total == Exposure() and risk.buckets == ()
    assert all(c.difference == 0.0 and c.agrees for c in risk.account)


# --- mark_of -------------------------------------------------------------------------------------------

def _quote(**kw: object) -> OptionQuote:
    fields: dict[str, object] = dict(
        instrument_name="BTC-15DEC23-40000-C", expiry_ms=int(NOW * 1000 + 30 * DAY_MS), strike=40_000.0,
        option_type="call", bid=0.05, bid_amount=1.0, ask=0.052, ask_amount=1.0, mark_price=0.051, mark_iv=55.0,
        underlying_price=40_500.0, index_price=40_400.0, open_interest=10.0, delta=0.5, gamma=1e-5, vega=40.0,
        theta=-30.0, age_s=1.0, stale=False)
    fields.update(kw)
    return OptionQuote(**fields)  # type: ignore[arg-type]


def test_mark_of_reads_the_quote() -> None:
    m = mark_of(_quote())
    assert m == OptionMark(instrument_name="BTC-15DEC23-40000-C", expiry_ms=int(NOW * 1000 + 30 * DAY_MS),
                           strike=40_000.0, is_call=True, forward=40_500.0, mark_iv=0.55, mark_price=0.051,
                           index_price=40_400.0, linear=False)
    for bad in ({"underlying_price": None}, {"mark_iv": None}, {"mark_iv": math.nan}, {"underlying_price": 0.0},
                {"mark_iv": -1.0}, {"underlying_price": math.inf}):
        assert mark_of(_quote(**bad)) is None, bad
    linear = Instrument(instrument_name="SOL_USDC-15DEC23-60-C", kind="option", base_currency="SOL",
                        quote_currency="USDC", settlement_period="month", tick_size=0.01, contract_size=1.0,
                        min_trade_amount=1.0, expiration_timestamp=int(NOW * 1000 + 30 * DAY_MS),
                        creation_timestamp=0, strike=60.0, option_type="call", settlement_currency="USDC",
                        instrument_type="linear")
    lm = mark_of(_quote(instrument_name="SOL_USDC-15DEC23-60-C"), linear)
    assert lm is not None and lm.linear


def test_marks_of_a_chain_keeps_the_usable_ones() -> None:
    quotes = [_quote(), _quote(instrument_name="BTC-15DEC23-45000-C", strike=45_000.0, mark_iv=None),
              _quote(instrument_name="BTC-15DEC23-35000-P", strike=35_000.0, option_type="put")]
    marks = marks_of(quotes)
    assert sorted(marks) == ["BTC-15DEC23-35000-P", "BTC-15DEC23-40000-C"]
    assert marks["BTC-15DEC23-35000-P"].is_call is False
