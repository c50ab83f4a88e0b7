"""The simulator's listing schedule and market model: Deribit's calendar, specs and conventions."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from deribit.instruments import parse_instrument_name
from simulator.exchange import Exchange
from simulator.listing import build_listing, expiries, last_friday, strike_grid
from simulator.market import MarketModel, black76_usd, deribit_theta, implied_vol_coin
from simulator.settings import SimSettings
from tests.support.capture import instruments_path, wire_lines

NOW = datetime(2021, 7, 22, 22, 42, tzinfo=UTC).timestamp()  # the capture's moment


def test_expiry_calendar() -> None:
    ex = expiries(NOW)
    days = [e.day for e in ex]
    assert days == sorted(set(days))
    assert days[0] == date(2021, 7, 23)  # 22:42 UTC: today's 08:00 has passed
    for e in ex:
        if e.period == "week":
            assert e.day.weekday() == 4 and last_friday(e.day.year, e.day.month) != e.day
        if e.period == "month":
            assert e.day == last_friday(e.day.year, e.day.month)
    # Dailies for the next days, Friday weeklies, last-Friday monthlies and four quarterlies.
    assert date(2021, 7, 24) in days and date(2021, 8, 6) in days and date(2021, 8, 27) in days
    quarterlies = [d for d in days if d.month % 3 == 0 and d == last_friday(d.year, d.month)]
    assert len(quarterlies) >= 4
    assert date(2022, 6, 24) in days
    # Before 08:00 today's expiry is still live.
    assert expiries(datetime(2021, 7, 23, 7, 59, tzinfo=UTC).timestamp())[0].day == date(2021, 7, 23)


def test_listing_specs_match_the_capture() -> None:
    listing = build_listing(NOW, {"BTC": 32200.0, "ETH": 2006.0})
    real = {}
    for cur in ("BTC", "ETH"):
        for inst in json.loads(instruments_path(cur).read_text())["result"]:
            real[(cur, inst["kind"])] = inst
    for spec in listing:
        want = real[(spec.currency, spec.kind)]
        got = spec.to_json()
        for field in (
            "tick_size",
            "contract_size",
            "min_trade_amount",
            "taker_commission",
            "quote_currency",
            "block_trade_commission",
        ):
            assert got[field] == want[field] and type(got[field]) is type(want[field]), (spec.name, field)
        assert got["expiration_timestamp"] % 86_400_000 == 8 * 3_600_000 or spec.is_perpetual
        meta = parse_instrument_name(spec.name)
        assert meta.currency == spec.currency
        if spec.is_option:
            assert meta.strike == spec.strike and meta.expiry_ms == spec.expiration_ms
    per_currency = {c: sum(1 for s in listing if s.currency == c and s.is_option) for c in ("BTC", "ETH")}
    assert all(300 <= n <= 900 for n in per_currency.values()), per_currency
    futures = {s.name for s in listing if not s.is_option and s.currency == "BTC"}
    assert {"BTC-PERPETUAL", "BTC-30JUL21", "BTC-24SEP21", "BTC-31DEC21"} <= futures


def test_strike_grid_is_finer_near_the_money() -> None:
    grid = strike_grid(32000.0, 30 / 365)
    steps = np.diff(grid)
    atm = min(range(len(grid)), key=lambda i: abs(grid[i] - 32000.0))
    assert steps[atm] <= steps[0] and steps[atm] <= steps[-1]
    assert grid[0] < 32000.0 * 0.7 and grid[-1] > 32000.0 * 1.4
    assert all(k == int(k) for k in grid)


def test_marks_and_greeks_follow_deribit_conventions() -> None:
    ex = Exchange(1, SimSettings(), NOW)
    m = ex.market
    checked = 0
    for spec in list(ex.instruments.values())[::17]:
        if not spec.is_option:
            continue
        q = m.quote(spec.name)
        t = (spec.expiration_ms / 1000 - NOW) / (365 * 86400)
        f = q.underlying_price
        sigma = q.mark_iv / 100
        call = spec.option_type == "call"
        usd = black76_usd(np.array([f]), np.array([spec.strike]), np.array([t]), np.array([sigma]), np.array([call]))
        # Inverse options are priced in the coin, linear (USDC) options in USDC.
        unit = 1.0 if spec.is_linear else f
        assert usd[0] / unit == pytest.approx(q.mark_price, abs=1e-4 * f / unit, rel=5e-4)
        # Delta and vega against bumps of the Black-76 value.
        h = f * 1e-4
        up = black76_usd(np.array([f + h]), np.array([spec.strike]), np.array([t]), np.array([sigma]), np.array([call]))
        dn = black76_usd(np.array([f - h]), np.array([spec.strike]), np.array([t]), np.array([sigma]), np.array([call]))
        assert (up[0] - dn[0]) / (2 * h) == pytest.approx(q.delta, abs=2e-4)
        v_up = black76_usd(
            np.array([f]), np.array([spec.strike]), np.array([t]), np.array([sigma + 0.005]), np.array([call])
        )
        v_dn = black76_usd(
            np.array([f]), np.array([spec.strike]), np.array([t]), np.array([sigma - 0.005]), np.array([call])
        )
        assert v_up[0] - v_dn[0] == pytest.approx(q.vega, rel=1e-2, abs=1e-3)
        assert q.theta <= 0
        checked += 1
    assert checked > 20


def test_implied_vol_inverts_black76() -> None:
    f = np.full(5, 30000.0)
    k = np.array([20000.0, 28000.0, 30000.0, 33000.0, 50000.0])
    t = np.full(5, 0.1)
    call = np.array([False, False, True, True, True])
    sigma = np.array([0.9, 0.75, 0.7, 0.72, 1.1])
    coin = black76_usd(f, k, t, sigma, call) / f
    got = implied_vol_coin(coin, f, k, t, call, np.full(5, 0.5))
    assert np.allclose(got, sigma, atol=1e-6)
    assert implied_vol_coin(np.array([0.0]), f[:1], k[:1], t[:1], call[:1], sigma[:1])[0] == 0.0


def test_market_is_seeded_and_reproducible() -> None:
    def path(seed: int) -> list[float]:
        m = MarketModel(seed, SimSettings(), NOW)
        out = []
        for i in range(50):
            m.advance(NOW + i * 60.0)
            out.append(m.index("BTC"))
        return out

    assert path(7) == path(7)
    assert path(7) != path(8)
    moves = np.diff(np.log(path(7)))
    # About 60% a year: a minute's moves are around 0.06 / sqrt(525600) ~ 0.0008.
    assert 0.0002 < float(np.std(moves)) < 0.005


def test_futures_basis_and_book_spreads() -> None:
    ex = Exchange(2, SimSettings(), NOW)
    index = ex.index_price("BTC")
    dated = sorted(
        (s for s in ex.instruments.values() if s.currency == "BTC" and s.kind == "future" and not s.is_perpetual),
        key=lambda s: s.expiration_ms,
    )
    assert ex.mark_price(dated[-1]) > index  # contango
    for spec in dated:
        bb, _, ba, _ = ex.books[spec.name].top()
        assert 0 < ba - bb <= 5 * spec.tick_size
    for name, book in list(ex.books.items())[::25]:
        bids, asks = book.depth(100)
        tick = book.tick
        for p, a in bids + asks:
            assert math.isclose(p / tick, round(p / tick), abs_tol=1e-6) and a > 0
        assert len(asks) >= 3, name


def capture_option_tickers() -> list[dict]:
    out = []
    for line in wire_lines():
        rec = json.loads(line)
        if rec["dir"] != "in":
            continue
        frame = json.loads(rec["frame"])
        if frame.get("method") == "subscription" and frame["params"]["channel"].startswith("ticker."):
            out.append(frame["params"]["data"])
    return out


def test_theta_follows_deribit_on_the_capture() -> None:
    """Deribit's theta on every ticker of the real capture: the Black-76 rate, and minus the
    remaining time value in the last day (ETH-23JUL21-2300-C at 0.39 days)."""
    final_day = 0
    for d in capture_option_tickers():
        meta = parse_instrument_name(d["instrument_name"])
        assert meta.expiry_ms is not None and meta.strike is not None
        t = (meta.expiry_ms - d["timestamp"]) / 1000 / (365 * 86400)
        f, k, tt, sigma = (np.array([x]) for x in (d["underlying_price"], meta.strike, t, d["mark_iv"] / 100))
        theta = deribit_theta(f, k, tt, sigma, np.array([meta.option_type == "call"]))[0]
        assert theta == pytest.approx(d["greeks"]["theta"], abs=2e-3, rel=2e-3), d["instrument_name"]
        final_day += t * 365 < 1
    assert final_day > 0


def test_final_day_theta_is_minus_the_time_value() -> None:
    ex = Exchange(1, SimSettings(chain="small"), datetime(2021, 7, 23, 0, 0, tzinfo=UTC).timestamp())
    m = ex.market
    seen = 0
    for spec in ex.instruments.values():
        if not spec.is_option or spec.is_linear:
            continue
        q = m.quote(spec.name)
        t = (spec.expiration_ms / 1000 - m.now_s) / (365 * 86400)
        if t * 365 >= 1:
            continue
        f, k = q.underlying_price, spec.strike
        call = spec.option_type == "call"
        value = black76_usd(np.array([f]), np.array([k]), np.array([t]), np.array([q.mark_iv / 100]), np.array([call]))
        intrinsic = max(f - k, 0.0) if call else max(k - f, 0.0)
        # underlying_price is rounded to 0.01: a relative tolerance.
        assert q.theta == pytest.approx(-(max(float(value[0]), intrinsic) - intrinsic), rel=1e-4, abs=1e-5)
        seen += 1
    assert seen > 0
