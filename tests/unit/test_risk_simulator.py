"""The simulator's account greeks as Deribit defines them (its API reference and example answers,
see tests/unit/test_risk.py): options_* the sums of size x greek, delta_total the Net Transaction
Delta (options' delta less their mark value in coin, plus futures), delta_total_map the raw deltas,
projected_delta_total without the nearest expiry held; and desk.risk agreeing with all of it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from desk.risk import OptionMark, currency_risk
from messages.account import Position
from messages.state import PortfolioChanged
from simulator.exchange import Exchange
from simulator.settings import SimAccount, SimSettings

NOW = datetime(2026, 9, 21, 12, 0, tzinfo=UTC).timestamp()
SETTINGS = SimSettings(chain="small", accounts=(SimAccount("alice", "a-secret", (("BTC", 50.0), ("USDC", 1e6))),),
                       public_trades_per_s=0.0)
FIGURES = ("options_delta", "delta_total", "options_gamma", "options_vega", "options_theta")


def _book(ex: Exchange) -> tuple[list[str], str]:
    options = sorted(n for n in ex.instruments if n.startswith("BTC-") and n.count("-") == 3)
    expiries = sorted({ex.instruments[n].expiration_ms for n in options})
    near = [n for n in options if ex.instruments[n].expiration_ms == expiries[0]]
    far = [n for n in options if ex.instruments[n].expiration_ms == expiries[-1]]
    return [near[len(near) // 2], near[len(near) // 2 + 1], far[len(far) // 3], far[-2]], "BTC-PERPETUAL"


def test_the_simulators_account_greeks_follow_deribits_definitions() -> None:
    ex = Exchange(5, SETTINGS, NOW)
    acc = ex.accounts["alice"]
    names, perp = _book(ex)
    sizes = [2.0, -1.0, 0.5, -3.0]
    for name, size in zip(names, sizes, strict=True):
        spec = ex.instruments[name]
        acc.apply_fill(spec, "buy" if size > 0 else "sell", abs(size), ex.marks(spec)[0], 0.0)
    acc.apply_fill(ex.instruments[perp], "sell", 5000.0, ex.marks(ex.instruments[perp])[0], 0.0)
    summary = ex.account_summary("alice", "BTC")
    quotes = {n: ex.market.quote(n) for n in names}
    options_delta = sum(s * quotes[n].exact[0] for n, s in zip(names, sizes, strict=True))
    value = sum(s * quotes[n].mark_price for n, s in zip(names, sizes, strict=True))
    futures = -5000.0 / ex.marks(ex.instruments[perp])[0]
    assert summary["options_delta"] == pytest.approx(options_delta, abs=5e-5)
    assert summary["options_value"] == pytest.approx(value, abs=1e-8)
    assert summary["delta_total"] == pytest.approx(options_delta - value + futures, abs=1e-6)
    assert summary["delta_total_map"]["btc_usd"] == pytest.approx(options_delta + futures, abs=1e-6)
    near = names[:2]
    projected = sum(s * (quotes[n].exact[0] - quotes[n].mark_price)
                    for n, s in zip(names, sizes, strict=True) if n not in near) + futures
    assert summary["projected_delta_total"] == pytest.approx(projected, abs=1e-6)
    for j, figure in ((1, "options_gamma"), (2, "options_vega"), (3, "options_theta")):
        exact = sum(s * quotes[n].exact[j] for n, s in zip(names, sizes, strict=True))
        assert summary[figure] == pytest.approx(exact, abs=6e-6 if j == 1 else 6e-5), figure

    # desk.risk on the same positions and the simulator's tickers agrees within its tolerance.
    marks = {}
    for n in names:
        t = ex.ticker(n)
        marks[n] = OptionMark(instrument_name=n, expiry_ms=ex.instruments[n].expiration_ms,
                              strike=ex.instruments[n].strike, is_call=ex.instruments[n].option_type == "call",
                              forward=t["underlying_price"], mark_iv=t["mark_iv"] / 100.0, mark_price=t["mark_price"],
                              index_price=t["index_price"])
    positions = [Position(instrument_name=n, kind="option", direction="buy" if s > 0 else "sell", size=s)
                 for n, s in zip(names, sizes, strict=True)]
    positions.append(Position(instrument_name=perp, kind="future", direction="sell", size=-5000.0,
                              size_currency=futures))
    picture = PortfolioChanged(currency="BTC", at=NOW, positions=tuple(positions), open_orders=(),
                               **{f: summary[f] for f in FIGURES})
    risk = currency_risk(picture, marks, None, NOW)
    assert not risk.missing
    assert all(c.agrees for c in risk.account), risk.account
