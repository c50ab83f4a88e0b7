"""The exposure planner (desk/exposure.py) against an independent enumeration.

For random chains (hostile quotes among them), random current greeks, targets, holds and limits:
the plan reaches the target within tolerance or says why not; it never exceeds a limit (legs,
displayed size, leg and total notional, premium); its amounts are whole multiples of the minimum
trade amount; the held greeks stay in their bands; no hostile quote is ever a leg; and it costs no
more than any plan of a single option (enumerated here from closed-form Black-76, not the
planner's code) that also reaches the target. When it says why not, no single-option plan exists.
It aims at the target: its deviation from it is never larger than the cheapest plan's (``aim`` off),
the cheapest plan's weight being within the aiming solve's cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from desk.exposure import ExposureLimits, TargetRequest, candidate_names, plan_exposure, screen
from messages.exposure import Greek, GreekFigures
from messages.market import Instrument
from messages.state import OptionQuote

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
GREEKS = (Greek.DELTA, Greek.GAMMA, Greek.VEGA, Greek.THETA)
HOSTILE = ("nan bid", "inf ask", "zero bid", "negative ask", "crossed", "locked", "stale", "old", "one-sided",
           "absurd iv", "zero iv", "nan iv", "zero lot", "nan lot", "forward nan", "forward off index",
           "wide spread", "expired", "nan size", "negative commission", "delta disagrees", "iv disagrees")


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def closed_form(forward: float, strike: float, days: float, iv_pct: float, call: bool) -> tuple[float, GreekFigures]:
    """USD price and per-coin greeks in the risk units, straight from the textbook formulas."""
    t = days / 365.0
    s = iv_pct / 100.0 * math.sqrt(t)
    d1 = math.log(forward / strike) / s + 0.5 * s
    d2 = d1 - s
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    price = forward * _cdf(d1) - strike * _cdf(d2) if call else strike * _cdf(-d2) - forward * _cdf(-d1)
    delta = _cdf(d1) if call else _cdf(d1) - 1.0
    gamma = pdf / (forward * s)
    return price, GreekFigures(delta=delta, gamma=gamma * forward * forward * 0.01,
                               vega=forward * pdf * math.sqrt(t) * 0.01,
                               theta=-forward * pdf * (iv_pct / 100.0) / (2 * math.sqrt(t)) / 365.0)


@dataclass(frozen=True)
class Option:
    quote: OptionQuote
    instrument: Instrument
    hostile: str
    greeks: GreekFigures  # per coin (sane options only)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[Option], float]:
    forward = draw(st.sampled_from([2_000.0, 30_000.0, 100_000.0]))
    lot = draw(st.sampled_from([0.01, 0.1, 1.0]))
    options: list[Option] = []
    for e in range(draw(st.integers(1, 3))):
        days = draw(st.floats(3.0, 90.0))
        expiry = int((NOW + days * 86_400) * 1000)
        for k in range(draw(st.integers(1, 5))):
            strike = round(forward * draw(st.floats(0.7, 1.3)), 0) + k  # distinct strikes
            call = draw(st.booleans())
            iv = draw(st.floats(30.0, 150.0))
            price_usd, greeks = closed_form(forward, strike, days, iv, call)
            mid = price_usd / forward  # the book around the mark (below a tick far out of the money: consistent)
            half = mid * draw(st.floats(0.002, 0.05))
            bid, ask = mid - half, mid + half
            name = f"BTC-E{e}-{int(strike)}-{'C' if call else 'P'}"
            hostile = draw(st.sampled_from(HOSTILE)) if draw(st.integers(0, 5)) == 0 else ""
            if not bid > 0:  # so far out of the money that Black-76 gives nothing: no price to trade at
                hostile = "zero bid"
            quote = dict(instrument_name=name, expiry_ms=expiry, strike=strike, option_type="call" if call else "put",
                         bid=bid, bid_amount=draw(st.sampled_from([0.5, 2.0, 10.0, 40.0])), ask=ask,
                         ask_amount=draw(st.sampled_from([0.5, 2.0, 10.0, 40.0])), mark_price=price_usd / forward,
                         mark_iv=iv, underlying_price=forward, index_price=forward, open_interest=None,
                         delta=greeks.delta, gamma=None, vega=None, theta=None, age_s=1.0, stale=False)
            inst = dict(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                        tick_size=0.0001, contract_size=1.0, min_trade_amount=lot, expiration_timestamp=expiry,
                        creation_timestamp=0, maker_commission=0.0003, taker_commission=0.0003, strike=strike,
                        option_type="call" if call else "put")
            _spoil(hostile, quote, inst, mid)
            options.append(Option(OptionQuote(**quote), Instrument(**inst), hostile, greeks))  # type: ignore[arg-type]
    return options, forward


def _spoil(hostile: str, quote: dict[str, object], inst: dict[str, object], mid: float) -> None:
    nan, inf = math.nan, math.inf
    changes: dict[str, dict[str, object]] = {
        "nan bid": {"bid": nan}, "inf ask": {"ask": inf}, "zero bid": {"bid": 0.0}, "negative ask": {"ask": -mid},
        "crossed": {"bid": mid * 1.05, "ask": mid * 0.95}, "locked": {"bid": mid, "ask": mid},
        "stale": {"stale": True}, "old": {"age_s": 3600.0}, "one-sided": {"bid": None},
        "absurd iv": {"mark_iv": 5000.0}, "zero iv": {"mark_iv": 0.0}, "nan iv": {"mark_iv": nan},
        "forward nan": {"underlying_price": nan}, "forward off index": {"underlying_price": 3.0 * float(
            quote["underlying_price"])},  # type: ignore[arg-type]
        "wide spread": {"bid": mid * 0.5, "ask": mid * 1.5}, "expired": {"expiry_ms": int((NOW - 3600) * 1000)},
        "nan size": {"ask_amount": nan, "bid_amount": nan}, "delta disagrees": {"delta": -2.0},
        "iv disagrees": {"mark_iv": float(quote["mark_iv"]) * 4},  # type: ignore[arg-type]
    }
    quote.update(changes.get(hostile, {}))
    if hostile == "expired":
        inst["expiration_timestamp"] = quote["expiry_ms"]
    inst.update({"zero lot": {"min_trade_amount": 0.0}, "nan lot": {"min_trade_amount": nan},
                 "negative commission": {"taker_commission": -0.01}}.get(hostile, {}))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Option], float, GreekFigures, TargetRequest, ExposureLimits]:
    options, forward = draw(chains())
    # About one coin of an at-the-money option's greeks, in the risk units.
    scale = {Greek.DELTA: 0.5, Greek.GAMMA: forward * 0.02, Greek.VEGA: forward * 0.001,
             Greek.THETA: forward * 0.001}
    before = GreekFigures(**{g.value: draw(st.floats(-50, 50)) * scale[g] for g in GREEKS})
    greek = draw(st.sampled_from(GREEKS))
    change = draw(st.floats(0.2, 15.0)) * draw(st.sampled_from([-1.0, 1.0])) * scale[greek]
    holds = tuple(g for g in GREEKS if g is not greek and draw(st.integers(0, 3)) == 0)
    bands = GreekFigures(**{g.value: draw(st.sampled_from([0.05, 0.3, 2.0])) * scale[g] for g in GREEKS})
    limits = ExposureLimits(max_legs=draw(st.integers(1, 4)),
                            max_leg_notional_usd=forward * draw(st.sampled_from([2.0, 10.0, 50.0])),
                            max_notional_usd=forward * draw(st.sampled_from([5.0, 30.0, 200.0])),
                            max_premium_usd=forward * draw(st.sampled_from([0.5, 5.0, 100.0])),
                            tolerance_pct=draw(st.sampled_from([1.0, 5.0, 20.0])), bands=bands,
                            tenor_window_pct=1000.0, max_spread_pct=15.0, max_quote_age_s=60.0, max_iv_pct=500.0,
                            leg_penalty_usd=draw(st.sampled_from([0.0, 0.0, 1.0, 10.0])) * forward / 1000.0)
    request = TargetRequest("BTC", greek, before.of(greek) + change, None, holds)
    return options, forward, before, request, limits


def single_option_costs(options: list[Option], forward: float, before: GreekFigures, request: TargetRequest,
                        limits: ExposureLimits, tolerance: float) -> list[float]:
    """The cost of every plan of one sane option, some whole number of lots bought or sold, that
    reaches the target and keeps every limit and hold."""
    out = []
    for option in options:
        if option.hostile:
            continue
        q, lot = option.quote, option.instrument.min_trade_amount
        assert q.bid is not None and q.ask is not None
        half = 0.5 * (q.ask - q.bid) * forward
        mid_usd = 0.5 * (q.ask + q.bid) * forward
        for side, shown, price in (("buy", q.ask_amount, q.ask), ("sell", q.bid_amount, q.bid)):
            fee = min(0.0003 * forward, 0.125 * price * forward)
            most = min(math.floor(shown / lot + 1e-9), math.floor(limits.max_leg_notional_usd / (lot * forward) + 1e-9))
            sign = 1 if side == "buy" else -1
            for lots in range(1, most + 1):
                amount = lots * lot
                reached = before.of(request.greek) + sign * amount * option.greeks.of(request.greek)
                if (abs(reached - request.target) <= tolerance * (1 - 1e-6)
                        and all(amount * abs(option.greeks.of(g)) <= limits.bands.of(g) * (1 - 1e-6)
                                for g in request.holds)
                        and amount * forward <= limits.max_notional_usd and amount * mid_usd <= limits.max_premium_usd):
                    out.append(amount * (half + fee))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_plan_reaches_the_target_within_the_limits_or_says_why_not(
        case: tuple[list[Option], float, GreekFigures, TargetRequest, ExposureLimits]) -> None:
    options, forward, before, request, limits = case
    instruments = {o.instrument.instrument_name: o.instrument for o in options}
    plan = plan_exposure([o.quote for o in options], instruments, before, request, limits, NOW, plan_id=7,
                         index_price=forward)
    change = request.target - before.of(request.greek)
    tolerance = max(limits.bands.of(request.greek), abs(change) * limits.tolerance_pct / 100.0)
    assert plan.tolerance == pytest.approx(tolerance)
    singles = single_option_costs(options, forward, before, request, limits, tolerance)
    event("reachable" if plan.reachable else "not reachable: " + plan.reason.partition(":")[0])
    event(f"legs: {len(plan.legs)}; a single option also reaches it: {bool(singles)}")
    if not plan.reachable:
        assert plan.reason and not plan.legs
        assert singles == [], f"{plan.reason}, yet one option reaches it for {min(singles)} USD"
        return
    assert abs(plan.after.of(request.greek) - request.target) <= tolerance * (1 + 1e-6)
    for g in request.holds:
        assert abs(plan.after.of(g) - before.of(g)) <= limits.bands.of(g) * (1 + 1e-6)
    assert len(plan.legs) <= limits.max_legs
    by_name = {o.quote.instrument_name: o for o in options}
    notional = gross_premium = cost = 0.0
    for leg in plan.legs:
        option = by_name[leg.instrument_name]
        assert option.hostile == "", f"hostile quote ({option.hostile}) planned"
        lot = option.instrument.min_trade_amount
        assert leg.amount > 0 and abs(leg.amount / lot - round(leg.amount / lot)) < 1e-9
        shown = option.quote.ask_amount if leg.side == "buy" else option.quote.bid_amount
        assert leg.amount <= shown
        assert leg.amount * forward <= limits.max_leg_notional_usd * (1 + 1e-9)
        sign = 1 if leg.side == "buy" else -1
        for g in GREEKS:
            assert leg.greeks.of(g) == pytest.approx(sign * leg.amount * option.greeks.of(g), rel=1e-6, abs=1e-9)
        notional += leg.amount * forward
        gross_premium += leg.amount * leg.mid * forward
        cost += leg.cost_usd
    assert len({leg.instrument_name for leg in plan.legs}) == len(plan.legs)
    assert notional <= limits.max_notional_usd * (1 + 1e-9)
    assert gross_premium <= limits.max_premium_usd * (1 + 1e-9)
    assert plan.cost_usd == pytest.approx(cost)
    for g in GREEKS:
        assert plan.after.of(g) == pytest.approx(before.of(g) + sum(leg.greeks.of(g) for leg in plan.legs),
                                                 rel=1e-9, abs=1e-9)
    if singles:
        # The solver's optimality gap (1e-7 of its objective: cost plus the legs' weight) is the only slack.
        assert plan.cost_usd <= min(singles) + 1e-6 * (min(singles) + limits.leg_penalty_usd) + 1e-9
    # Aiming never leaves the plan farther from the target than the cheapest plan (the first solve).
    cheapest = plan_exposure([o.quote for o in options], instruments, before, request, replace(limits, aim=False),
                             NOW, plan_id=7, index_price=forward)
    assert cheapest.reachable
    deviation = abs(plan.after.of(request.greek) - request.target)
    event(f"aimed nearer than the cheapest: {deviation < abs(cheapest.after.of(request.greek) - request.target)}")
    assert deviation <= abs(cheapest.after.of(request.greek) - request.target) + 1e-9 * tolerance


def test_the_plan_aims_at_the_target_not_the_tolerance_edge() -> None:
    """Vega +5,000 with 5% tolerance: the cheapest plan stops near 4,750; the aimed one lands within
    a lot of 5,000, at a cost within the cheapest's scaled to the whole change plus the slack."""
    forward, days = 100_000.0, 30.0
    expiry = int((NOW + days * 86_400) * 1000)
    quotes, listing = [], {}
    for strike in (90_000.0, 95_000.0, 100_000.0, 105_000.0, 110_000.0):
        price, greeks = closed_form(forward, strike, days, 60.0, True)
        name = f"BTC-X-{int(strike)}-C"
        quotes.append(OptionQuote(instrument_name=name, expiry_ms=expiry, strike=strike, option_type="call",
                                  bid=price / forward * 0.99, bid_amount=30.0, ask=price / forward * 1.01,
                                  ask_amount=30.0, mark_price=price / forward, mark_iv=60.0, underlying_price=forward,
                                  index_price=forward, open_interest=None, delta=greeks.delta, gamma=None, vega=None,
                                  theta=None, age_s=1.0, stale=False))
        listing[name] = Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                                   tick_size=0.0001, contract_size=1.0, min_trade_amount=0.1,
                                   expiration_timestamp=expiry, creation_timestamp=0, maker_commission=0.0003,
                                   taker_commission=0.0003, strike=strike, option_type="call")
    request = TargetRequest("BTC", Greek.VEGA, 5000.0, 30.0)
    cheapest = plan_exposure(quotes, listing, GreekFigures(), request, ExposureLimits(aim=False), NOW, 1, forward)
    aimed = plan_exposure(quotes, listing, GreekFigures(), request, ExposureLimits(), NOW, 1, forward)
    assert cheapest.reachable and aimed.reachable
    assert cheapest.after.vega == pytest.approx(4750.0, abs=15.0)  # a lot of 0.1 is about 11.4 vega
    lot_vega = max(abs(leg.greeks.vega / leg.amount) * 0.1 for leg in aimed.legs)
    assert abs(aimed.after.vega - 5000.0) <= lot_vega
    legs = ExposureLimits().leg_penalty_usd
    weight = cheapest.cost_usd + legs * len(cheapest.legs)
    assert aimed.cost_usd + legs * len(aimed.legs) <= weight * 5000.0 / cheapest.after.vega * 1.02 + 5.0 + 1e-6


def test_hostile_quotes_are_each_left_out_with_their_reason() -> None:
    forward, days = 100_000.0, 30.0
    expiry = int((NOW + days * 86_400) * 1000)
    price, greeks = closed_form(forward, 100_000.0, days, 60.0, True)
    base = OptionQuote(instrument_name="BTC-X-100000-C", expiry_ms=expiry, strike=100_000.0, option_type="call",
                       bid=price / forward * 0.99, bid_amount=10.0, ask=price / forward * 1.01, ask_amount=10.0,
                       mark_price=price / forward, mark_iv=60.0, underlying_price=forward, index_price=forward,
                       open_interest=None, delta=greeks.delta, gamma=None, vega=None, theta=None, age_s=1.0,
                       stale=False)
    inst = Instrument(instrument_name="BTC-X-100000-C", kind="option", base_currency="BTC", quote_currency="BTC",
                      tick_size=0.0001, contract_size=1.0, min_trade_amount=0.1, expiration_timestamp=expiry,
                      creation_timestamp=0, maker_commission=0.0003, taker_commission=0.0003, strike=100_000.0,
                      option_type="call")
    limits = ExposureLimits()
    assert len(screen([base], {inst.instrument_name: inst}, NOW, 30.0, limits, forward).candidates) == 1
    for hostile in HOSTILE:
        quote, listing = base.__struct_fields__, {}
        q = {f: getattr(base, f) for f in quote}
        i = {f: getattr(inst, f) for f in inst.__struct_fields__}
        _spoil(hostile, q, i, 0.5 * (base.bid + base.ask))  # type: ignore[operator]
        listing = {inst.instrument_name: Instrument(**i)}
        screened = screen([OptionQuote(**q)], listing, NOW, None, limits, forward)
        assert screened.candidates == (), hostile
        assert sum(screened.excluded.values()) == 1, hostile
    # Quoted twice (the second is left out), not listed at all, and a tenor far from its expiry.
    twice = screen([base, base], {inst.instrument_name: inst}, NOW, None, limits, forward)
    assert len(twice.candidates) == 1 and twice.excluded == {"quoted twice": 1}
    assert screen([base], {}, NOW, None, limits, forward).excluded == {"not listed": 1}
    assert screen([base], {inst.instrument_name: inst}, NOW, 90.0, limits, forward).excluded == {
        "not near the tenor": 1}


def test_unreachable_plans_say_why() -> None:
    forward, days = 100_000.0, 30.0
    expiry = int((NOW + days * 86_400) * 1000)
    quotes, listing = [], {}
    for strike in (90_000.0, 100_000.0, 110_000.0):
        price, greeks = closed_form(forward, strike, days, 60.0, True)
        name = f"BTC-X-{int(strike)}-C"
        quotes.append(OptionQuote(instrument_name=name, expiry_ms=expiry, strike=strike, option_type="call",
                                  bid=price / forward * 0.99, bid_amount=5.0, ask=price / forward * 1.01,
                                  ask_amount=5.0, mark_price=price / forward, mark_iv=60.0, underlying_price=forward,
                                  index_price=forward, open_interest=None, delta=greeks.delta, gamma=None, vega=None,
                                  theta=None, age_s=1.0, stale=False))
        listing[name] = Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                                   tick_size=0.0001, contract_size=1.0, min_trade_amount=0.1,
                                   expiration_timestamp=expiry, creation_timestamp=0, maker_commission=0.0003,
                                   taker_commission=0.0003, strike=strike, option_type="call")
    limits = ExposureLimits()
    vega = TargetRequest("BTC", Greek.VEGA, 1000.0, 30.0)
    assert plan_exposure(quotes, listing, GreekFigures(), vega, limits, NOW, 1, forward).reachable
    # 3 options x 5 coins of about 114 USD of vega: 1,700 at most on the screen.
    big = plan_exposure(quotes, listing, GreekFigures(), TargetRequest("BTC", Greek.VEGA, 5000.0, 30.0), limits,
                        NOW, 1, forward)
    assert not big.reachable and big.reason.startswith("not enough liquidity"), big.reason
    one_leg = plan_exposure(quotes, listing, GreekFigures(), vega, ExposureLimits(max_legs=1), NOW, 1, forward)
    assert not one_leg.reachable and "limits" in one_leg.reason and "(at most 1 leg)" in one_leg.reason, one_leg.reason
    held = plan_exposure(quotes, listing, GreekFigures(), TargetRequest("BTC", Greek.VEGA, 1000.0, 30.0,
                                                                        (Greek.GAMMA,)), limits, NOW, 1, forward)
    assert not held.reachable and held.reason.startswith("cannot hold gamma"), held.reason
    nothing = plan_exposure(quotes, listing, GreekFigures(), TargetRequest("BTC", Greek.VEGA, 1000.0, 90.0), limits,
                            NOW, 1, forward)
    assert not nothing.reachable and nothing.reason.startswith("no candidates") and "3 not near the tenor" in (
        nothing.reason)
    there = plan_exposure(quotes, listing, GreekFigures(vega=990.0), vega, limits, NOW, 1, forward)
    assert there.reachable and not there.legs and "already within" in there.reason


def test_candidate_names_are_near_the_tenor_and_nearest_the_money_first() -> None:
    listing = []
    for days in (0.5, 10.0, 30.0, 45.0, 200.0):
        expiry = int((NOW + days * 86_400) * 1000)
        for strike in (50_000.0, 100_000.0, 150_000.0):
            listing.append(Instrument(instrument_name=f"BTC-{int(days * 10)}-{int(strike)}-C", kind="option",
                                      base_currency="BTC", quote_currency="BTC", tick_size=0.0001, contract_size=1.0,
                                      min_trade_amount=0.1, expiration_timestamp=expiry, creation_timestamp=0,
                                      strike=strike, option_type="call"))
    limits = ExposureLimits(tenor_window_pct=50.0, max_candidates=4)
    names = candidate_names(listing, NOW, 30.0, 100_000.0, limits)
    assert set(names) == {"BTC-300-100000-C", "BTC-450-100000-C", "BTC-450-150000-C", "BTC-300-150000-C"}
    assert len(candidate_names(listing, NOW, None, 100_000.0, ExposureLimits())) == 12  # the half-day expiry never


def test_the_candidates_greeks_are_desk_risk_s_one_coin_figures() -> None:
    """The risk units live in desk/risk.py alone: the planner asks it for one coin's greeks (it
    repeated the conversions before: gamma x F^2 x 0.01, Black-76 of its own)."""
    import ast
    from pathlib import Path

    import desk.exposure
    from desk.risk import OptionMark, option_exposure

    tree = ast.parse(Path(desk.exposure.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "quant.black76" not in imported and "desk.risk" in imported
    forward, days = 30_000.0, 20.0
    expiry = int((NOW + days * 86_400) * 1000)
    for strike, call in ((27_000.0, False), (33_000.0, True)):
        price, greeks = closed_form(forward, strike, days, 80.0, call)
        name = f"BTC-X-{int(strike)}-{'C' if call else 'P'}"
        kind: Literal["call", "put"] = "call" if call else "put"
        quote = OptionQuote(instrument_name=name, expiry_ms=expiry, strike=strike, option_type=kind,
                            bid=price / forward * 0.99, bid_amount=10.0, ask=price / forward * 1.01, ask_amount=10.0,
                            mark_price=price / forward, mark_iv=80.0, underlying_price=forward, index_price=forward,
                            open_interest=None, delta=greeks.delta, gamma=None, vega=None, theta=None, age_s=1.0,
                            stale=False)
        inst = Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                          tick_size=0.0001, contract_size=1.0, min_trade_amount=0.1, expiration_timestamp=expiry,
                          creation_timestamp=0, maker_commission=0.0003, taker_commission=0.0003, strike=strike,
                          option_type=quote.option_type)
        (candidate,) = screen([quote], {name: inst}, NOW, None, ExposureLimits(), forward).candidates
        risk = option_exposure(OptionMark(instrument_name=name, expiry_ms=expiry, strike=strike, is_call=call,
                                          forward=forward, mark_iv=0.8), 1.0, NOW)
        assert candidate.greeks == GreekFigures(delta=risk.delta, gamma=risk.gamma_usd_1pct, vega=risk.vega_usd,
                                                theta=risk.theta_usd)
        for g in GREEKS:
            assert candidate.greeks.of(g) == pytest.approx(greeks.of(g), rel=1e-6)
