"""The exposure planner (pure): which listed options, and how much of each, take one currency's
greek to a target while the greeks it is asked to hold stay where they are, at the least expected
cost. ``target vega 5000 BTC 30d hold gamma`` in the console; the Assistant works the plan.

The candidates are the options of the console's live answer (:class:`~messages.state.OptionQuote`)
with their instrument metadata. Only options fit to compute an order from take part: listed,
expiring at least a day out and (with a tenor) near it, two-sided, fresh and not stale, finite
positive prices with bid below ask, a plausible forward and mark IV whose Black-76 value agrees
with the book and the ticker's delta, a narrow spread, a positive minimum trade amount and sane
commissions. Everything else is counted, by why, and never planned.

Greeks are the risk units, computed by :func:`desk.risk.per_coin_exposures` (the one place for
them; :class:`~messages.exposure.GreekFigures`): delta in coin (plain Black-76), gamma in USD per 1%
move, vega in USD per vol point, theta in USD per day, each from Black-76 at the option's mark IV
and forward (the ticker's ``underlying_price``), T = (expiry - now) in 365-day years.

The choice is a mixed-integer programme (:func:`scipy.optimize.milp`, HiGHS): per option an
integer number of minimum trade amounts bought and one sold, and a binary "this option is a leg";
the target greek within the tolerance of the target, each held greek within its band of where it
is, at most ``max_legs`` legs, each leg within the displayed size on its side and the per-leg
notional limit, the plan's gross notional and gross premium within their limits; the least cost plus
``leg_penalty_usd`` a leg (so never more than any single-option plan that reaches it). The cheapest
plan lands at the tolerance's near edge; a second solve (``aim``) then takes, under every same
constraint and a weight at most the cheapest's scaled to the whole change asked plus a small slack
(never above the cheapest single-option plan's), the plan nearest the target, so ``after`` is the
target within lot rounding in the common case. The cost of a
coin of option is half the spread (against the mid) plus the fee (Deribit's: the commission times
the forward, at most 12.5% of the option's price). When nothing fits, relaxed programmes say why:
not enough displayed liquidity, which limit, the holds, or minimum trade amounts too coarse.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from msgspec.structs import replace as amend
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array, hstack, vstack
from scipy.sparse import diags_array as diags

from desk.risk import Exposure, per_coin_exposures
from messages.exposure import ExposurePlan, Greek, GreekFigures, PlanLeg
from messages.market import Instrument
from messages.state import OptionQuote

#: No option expiring within this many days is planned (its greeks change by the hour).
MIN_DAYS_TO_EXPIRY = 1.0
#: Deribit caps an option's fee at this share of its price.
FEE_CAP = 0.125
#: The lowest mark IV (percent) taken as real; below it the greeks blow up.
MIN_IV_PCT = 1.0
#: The widest commission taken as real (Deribit's is 0.0003 of the underlying).
MAX_COMMISSION = 0.01
#: The Black-76 value at the mark IV may lie this share of the mid outside the book.
MODEL_OUTSIDE_BOOK = 0.5
#: The ticker's delta (when sent) and ours at the mark IV may differ by this much.
DELTA_AGREEMENT = 0.05
#: A leg's amount bound where neither displayed size nor a limit bounds it (relaxed re-solves only;
#: HiGHS let a 100,000 bound run past its time limit on a thin slab of held greeks).
UNBOUNDED_LOTS = 10_000
#: The solver's relative optimality gap (the plan is this close to the cheapest).
MIP_GAP = 1e-7
#: The second (aiming) solve: a deviation below this share of the tolerance is on target, and the
#: deviation found is within this relative gap of the least.
AIM_FLOOR = 0.01
AIM_GAP = 0.01
#: The greeks' default bands (coin; USD per 1% move; USD per vol point; USD per day).
DEFAULT_BANDS = GreekFigures(delta=0.5, gamma=1000.0, vega=100.0, theta=100.0)
_GREEKS = (Greek.DELTA, Greek.GAMMA, Greek.VEGA, Greek.THETA)


@dataclass(frozen=True, slots=True)
class ExposureLimits:
    """What a plan may be (``[exposure]`` settings). Amounts in USD are notional at the forward;
    ``bands`` the absolute tolerance of each greek in its units: a held greek stays within its band,
    the target within the larger of its band and ``tolerance_pct`` of the change asked for."""

    max_legs: int = 4
    max_leg_notional_usd: float = 2_500_000.0
    max_notional_usd: float = 10_000_000.0
    max_premium_usd: float = 1_000_000.0
    tolerance_pct: float = 5.0
    bands: GreekFigures = DEFAULT_BANDS
    tenor_window_pct: float = 35.0
    max_spread_pct: float = 15.0
    max_quote_age_s: float = 60.0
    max_iv_pct: float = 500.0
    max_index_deviation_pct: float = 10.0
    max_candidates: int = 300
    valid_s: float = 60.0
    time_limit_s: float = 5.0
    #: What each leg weighs in the choice besides its cost (USD; not in the cost shown): a leg is
    #: one more order to work. A plan still never costs more than a single-option plan.
    leg_penalty_usd: float = 10.0
    #: Aim at the target: a second solve takes, of the plans costing (with the legs' weight) at most
    #: the cheapest's scaled to the whole change asked (it stops short by up to the tolerance) x (1 +
    #: ``aim_slack_pct`` %) + ``aim_slack_usd``, and never more than the cheapest single-option plan,
    #: the one nearest the target (False: the cheapest, at the tolerance's near edge).
    aim: bool = True
    aim_slack_pct: float = 2.0
    aim_slack_usd: float = 5.0
    #: The second solve's own time (within ``time_limit_s`` overall); past it the cheapest plan, or
    #: the nearest found so far, is proposed.
    aim_time_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TargetRequest:
    """``target <greek> <target> <currency> [<tenor>] [hold ...]``: the currency's total ``greek``
    to reach; ``tenor_days`` None: any expiry."""

    currency: str
    greek: Greek
    target: float
    tenor_days: float | None = None
    holds: tuple[Greek, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """An option fit to plan with, per coin: its greeks (risk units), the USD price of its mid,
    half its spread and the fee of a buy and of a sell."""

    quote: OptionQuote
    lot: float  # the minimum trade amount, coins
    greeks: GreekFigures  # per coin
    mid: float
    mid_usd: float
    half_spread_usd: float
    fee_buy_usd: float
    fee_sell_usd: float
    forward: float
    buy_lots: int  # the most that may be bought (displayed ask size, per-leg limit), in lots
    sell_lots: int


@dataclass(frozen=True, slots=True)
class Screened:
    """The candidates and, by why, the options left out."""

    candidates: tuple[Candidate, ...]
    excluded: Counter[str] = field(default_factory=Counter)

    def describe_excluded(self) -> str:
        return ", ".join(f"{n} {why}" for why, n in self.excluded.most_common()) or "none"


def _finite_pos(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def days_to(expiry_ms: int, now: float) -> float:
    return (expiry_ms / 1000.0 - now) / 86_400.0


def near_tenor(days: float, tenor_days: float | None, limits: ExposureLimits) -> bool:
    """Whether an expiry ``days`` out may be planned for ``tenor_days`` (None: any)."""
    if not days >= MIN_DAYS_TO_EXPIRY:
        return False
    return tenor_days is None or abs(days - tenor_days) <= tenor_days * limits.tenor_window_pct / 100.0


def candidate_names(instruments: Iterable[Instrument], now: float, tenor_days: float | None,
                    index_price: float | None, limits: ExposureLimits) -> tuple[str, ...]:
    """The listed options worth asking live quotes for: near the tenor, at most
    ``limits.max_candidates`` of them, the nearest the money (in standard-deviation-like units,
    ``|ln(K / index)| / sqrt(days)``) first when there are more."""
    chosen = [i for i in instruments if i.kind == "option" and i.strike is not None and _finite_pos(i.strike)
              and near_tenor(days_to(i.expiration_timestamp, now), tenor_days, limits)]
    if len(chosen) > limits.max_candidates and _finite_pos(index_price):
        assert index_price is not None
        chosen.sort(key=lambda i: abs(math.log(float(i.strike or 1.0) / index_price))
                    / math.sqrt(days_to(i.expiration_timestamp, now)))
    chosen = chosen[:limits.max_candidates]
    return tuple(sorted(i.instrument_name for i in chosen))


def screen(quotes: Iterable[OptionQuote], instruments: Mapping[str, Instrument], now: float,
           tenor_days: float | None, limits: ExposureLimits, index_price: float | None = None,
           linear: bool = False) -> Screened:
    """The options fit to plan with (see the module doc), and why the others are not."""
    excluded: Counter[str] = Counter()
    kept: list[tuple[OptionQuote, Instrument, float]] = []
    seen: set[str] = set()
    for quote in quotes:
        why = "quoted twice" if quote.instrument_name in seen else _quote_fault(
            quote, instruments.get(quote.instrument_name), now, tenor_days, limits, index_price)
        seen.add(quote.instrument_name)
        if why:
            excluded[why] += 1
            continue
        instrument = instruments[quote.instrument_name]
        kept.append((quote, instrument, days_to(quote.expiry_ms, now)))
    if not kept:
        return Screened((), excluded)
    forward = np.array([q.underlying_price for q, _, _ in kept], dtype=float)
    # One coin of each in the risk units, by desk.risk (the one place for them).
    rows = per_coin_exposures(
        forward, np.array([q.strike for q, _, _ in kept], dtype=float),
        np.array([q.expiry_ms for q, _, _ in kept], dtype=np.int64),
        np.array([(q.mark_iv or 0.0) / 100.0 for q, _, _ in kept], dtype=float),
        np.array([q.option_type == "call" for q, _, _ in kept]), linear, now)
    out: list[Candidate] = []
    for k, (quote, instrument, _) in enumerate(kept):
        f = float(forward[k])
        unit = Exposure(*(float(x) for x in rows[k]))
        figures = GreekFigures(delta=unit.delta, gamma=unit.gamma_usd_1pct, vega=unit.vega_usd, theta=unit.theta_usd)
        why = _model_fault(quote, figures, unit.value_usd, f, linear)
        if why:
            excluded[why] += 1
            continue
        candidate = _candidate(quote, instrument, figures, f, linear, limits)
        if candidate is None:
            excluded["smaller than the minimum trade amount"] += 1
            continue
        out.append(candidate)
    return Screened(tuple(out), excluded)


def _quote_fault(q: OptionQuote, inst: Instrument | None, now: float, tenor_days: float | None,
                 limits: ExposureLimits, index_price: float | None) -> str:
    """Why the quote cannot be planned with ('' when it can), before any maths."""
    if inst is None or inst.kind != "option" or inst.instrument_name != q.instrument_name:
        return "not listed"
    if inst.expiration_timestamp != q.expiry_ms or not _finite_pos(q.strike) or q.strike != inst.strike:
        return "quote disagrees with the listing"
    if not near_tenor(days_to(q.expiry_ms, now), tenor_days, limits):
        return "not near the tenor"
    if not (_finite_pos(inst.min_trade_amount) and inst.min_trade_amount <= 1e6 and _finite_pos(inst.tick_size)):
        return "bad minimum trade amount or tick size"
    if not all(isinstance(c, (int, float)) and 0.0 <= c <= MAX_COMMISSION
               for c in (inst.maker_commission, inst.taker_commission)):
        return "bad commission"
    if q.stale:
        return "stale book"
    if not (isinstance(q.age_s, (int, float)) and 0.0 <= q.age_s <= limits.max_quote_age_s):
        return "quote too old"
    if q.bid is None or q.ask is None:
        return "one-sided"
    if not (_finite_pos(q.bid) and _finite_pos(q.ask) and _finite_pos(q.bid_amount) and _finite_pos(q.ask_amount)):
        return "bad price or size"
    if not q.bid < q.ask:
        return "crossed or locked"
    mid = 0.5 * (q.bid + q.ask)
    if not (q.ask - q.bid) / mid <= limits.max_spread_pct / 100.0:
        return "spread too wide"
    if not _finite_pos(q.underlying_price):
        return "no forward"
    if _finite_pos(index_price) and not abs(q.underlying_price / index_price - 1.0) <= (  # type: ignore[operator]
            limits.max_index_deviation_pct / 100.0):
        return "forward far from the index"
    if q.mark_iv is None or not (isinstance(q.mark_iv, (int, float)) and MIN_IV_PCT <= q.mark_iv <= limits.max_iv_pct):
        return "implausible mark IV"
    return ""


def _model_fault(q: OptionQuote, figures: GreekFigures, model_usd: float, forward: float, linear: bool) -> str:
    """Why the option's Black-76 figures at its mark IV cannot be trusted ('' when they can)."""
    if not all(math.isfinite(x) for x in (figures.delta, figures.gamma, figures.vega, figures.theta, model_usd)):
        return "greeks not finite"
    if figures.gamma < 0 or figures.vega < 0:
        return "greeks not finite"
    assert q.bid is not None and q.ask is not None
    model = model_usd if linear else model_usd / forward
    slack = MODEL_OUTSIDE_BOOK * 0.5 * (q.bid + q.ask)
    if not q.bid - slack <= model <= q.ask + slack:
        return "mark IV disagrees with the book"
    if q.delta is not None and math.isfinite(q.delta) and abs(q.delta - figures.delta) > DELTA_AGREEMENT:
        return "ticker delta disagrees"
    if q.delta is not None and not math.isfinite(q.delta):
        return "ticker delta disagrees"
    return ""


def _candidate(q: OptionQuote, inst: Instrument, figures: GreekFigures, forward: float, linear: bool,
               limits: ExposureLimits) -> Candidate | None:
    assert q.bid is not None and q.ask is not None
    usd = 1.0 if linear else forward
    lot = float(inst.min_trade_amount)
    mid = 0.5 * (q.bid + q.ask)
    commission = max(inst.maker_commission, inst.taker_commission) * forward
    leg_lots = math.floor(limits.max_leg_notional_usd / (lot * forward) + 1e-9)
    buy_lots = min(math.floor(q.ask_amount / lot + 1e-9), leg_lots)
    sell_lots = min(math.floor(q.bid_amount / lot + 1e-9), leg_lots)
    if buy_lots < 1 and sell_lots < 1:
        return None
    return Candidate(quote=q, lot=lot, greeks=figures, mid=mid, mid_usd=mid * usd,
                     half_spread_usd=0.5 * (q.ask - q.bid) * usd,
                     fee_buy_usd=min(commission, FEE_CAP * q.ask * usd),
                     fee_sell_usd=min(commission, FEE_CAP * q.bid * usd), forward=forward,
                     buy_lots=max(buy_lots, 0), sell_lots=max(sell_lots, 0))


# -- the programme --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Relax:
    """Which bounds a re-solve lifts (to say why the full programme has no solution)."""

    display: bool = False  # the displayed sizes
    legs: bool = False
    leg_size: bool = False
    notional: bool = False
    premium: bool = False
    holds: bool = False


@dataclass(frozen=True, slots=True)
class _Solution:
    buys: tuple[int, ...]
    sells: tuple[int, ...]
    optimal: bool = True  # False: the solver's time ran out with this plan in hand


def _lots(c: Candidate, side: str, limits: ExposureLimits, relax: _Relax) -> int:
    shown = c.quote.ask_amount if side == "buy" else c.quote.bid_amount
    display = UNBOUNDED_LOTS if relax.display else math.floor(shown / c.lot + 1e-9)
    leg = UNBOUNDED_LOTS if relax.leg_size else math.floor(limits.max_leg_notional_usd / (c.lot * c.forward) + 1e-9)
    return max(0, min(display, leg, UNBOUNDED_LOTS))


def _solve(cands: Sequence[Candidate], request: TargetRequest, before: GreekFigures, tolerance: float,
           limits: ExposureLimits, relax: _Relax, deadline: float, cap: float | None = None) -> _Solution | str | None:
    """The cheapest plan (None: none exists; a text: the solver gave up, and why); with ``cap``,
    the plan nearest the target among those whose weight (cost plus the legs') is at most ``cap``."""
    n = len(cands)
    lot = np.array([c.lot for c in cands])
    rows, lower, upper = [], [], []
    need = request.target - before.of(request.greek)
    per_lot = {g: np.array([c.greeks.of(g) for c in cands]) * lot for g in _GREEKS}
    rows.append(per_lot[request.greek])
    lower.append(need - tolerance)
    upper.append(need + tolerance)
    if not relax.holds:
        for g in request.holds:
            band = limits.bands.of(g)
            rows.append(per_lot[g])
            lower.append(-band)
            upper.append(band)
    signed = csr_array(np.array(rows))
    greek_rows = hstack([signed, -signed, csr_array((len(rows), n))])
    blocks = [greek_rows]
    lbs, ubs = [np.array(lower)], [np.array(upper)]
    notional = lot * np.array([c.forward for c in cands])
    premium = lot * np.array([c.mid_usd for c in cands])
    money = []
    if not relax.notional:
        money.append((notional, limits.max_notional_usd))
    if not relax.premium:
        money.append((premium, limits.max_premium_usd))
    for row, limit in money:
        blocks.append(csr_array(np.concatenate([row, row, np.zeros(n)])[None, :]))
        lbs.append(np.array([-np.inf]))
        ubs.append(np.array([limit]))
    buy_ub = np.array([_lots(c, "buy", limits, relax) for c in cands], dtype=float)
    sell_ub = np.array([_lots(c, "sell", limits, relax) for c in cands], dtype=float)
    eye = diags(np.ones(n), format="csr")
    zero = csr_array((n, n))
    blocks.append(hstack([eye, zero, diags(-buy_ub, format="csr")]))  # buy <= bound * used
    blocks.append(hstack([zero, eye, diags(-sell_ub, format="csr")]))  # sell <= bound * used
    lbs += [np.full(2 * n, -np.inf)]
    ubs += [np.zeros(2 * n)]
    if not relax.legs:
        blocks.append(csr_array(np.concatenate([np.zeros(2 * n), np.ones(n)])[None, :]))
        lbs.append(np.array([-np.inf]))
        ubs.append(np.array([float(limits.max_legs)]))
    cost_buy = lot * np.array([c.half_spread_usd + c.fee_buy_usd for c in cands])
    cost_sell = lot * np.array([c.half_spread_usd + c.fee_sell_usd for c in cands])
    objective = np.concatenate([cost_buy, cost_sell, np.full(n, max(limits.leg_penalty_usd, 0.0))])
    integrality = np.ones(3 * n)
    low_x, high_x = np.zeros(3 * n), np.concatenate([buy_ub, sell_ub, np.ones(n)])
    matrix = vstack(blocks, format="csr")
    if cap is not None:
        # One more, continuous variable: the deviation |change - need| >= either signed difference;
        # the weight at most ``cap``; the least deviation (the cost breaks ties, at a weight far
        # below any lot's worth of the greek).
        target_row = greek_rows.tocsr()[[0], :]
        matrix = vstack([hstack([matrix, csr_array((matrix.shape[0], 1))]),
                         hstack([target_row, csr_array(np.array([[-1.0]]))]),
                         hstack([target_row, csr_array(np.array([[1.0]]))]),
                         csr_array(np.concatenate([objective, [0.0]])[None, :])], format="csr")
        lbs += [np.array([-np.inf, need, -np.inf])]
        ubs += [np.array([need, np.inf, cap])]
        objective = np.concatenate([objective * (1e-6 * tolerance / max(cap, 1.0)), [1.0]])
        integrality = np.concatenate([integrality, [0.0]])
        # Nearer than AIM_FLOOR of the tolerance counts as on target: without a floor the solver
        # spends its whole time proving a deviation of 0.0001 beats 0.0002.
        low_x, high_x = np.concatenate([low_x, [AIM_FLOOR * tolerance]]), np.concatenate([high_x, [np.inf]])
    left = deadline - time.monotonic()
    if left <= 0:
        return "the time allowed for planning ran out"
    result = milp(objective, integrality=integrality, bounds=Bounds(low_x, high_x),
                  constraints=LinearConstraint(matrix, np.concatenate(lbs), np.concatenate(ubs)),
                  options={"time_limit": left, "mip_rel_gap": MIP_GAP if cap is None else AIM_GAP,
                           "presolve": True})
    if result.status == 2:  # infeasible
        return None
    if result.x is None:
        return f"the solver found no plan in time ({result.message})"
    x = np.rint(result.x).astype(int)
    return _Solution(tuple(int(v) for v in x[:n]), tuple(int(v) for v in x[n:2 * n]), optimal=result.status == 0)


# -- the plan -------------------------------------------------------------------------------------
def plan_exposure(quotes: Iterable[OptionQuote], instruments: Mapping[str, Instrument], before: GreekFigures,
                  request: TargetRequest, limits: ExposureLimits, now: float, plan_id: int,
                  index_price: float | None = None, linear: bool = False) -> ExposurePlan:
    """The cheapest plan that takes ``request.greek`` from ``before`` to ``request.target`` (see
    the module doc), or an unreachable plan saying why."""
    change = request.target - before.of(request.greek)
    tolerance = max(limits.bands.of(request.greek), abs(change) * limits.tolerance_pct / 100.0)
    holds = tuple(dict.fromkeys(g for g in request.holds if g is not request.greek))
    request = replace(request, holds=holds)
    base = ExposurePlan(plan_id=plan_id, currency=request.currency, greek=request.greek, target=request.target,
                        at=now, expires_at=now + limits.valid_s, tenor_days=request.tenor_days, holds=holds,
                        tolerance=tolerance, before=before, after=before)
    if not all(math.isfinite(v) for v in (request.target, *(before.of(g) for g in _GREEKS))):
        return amend(base, reachable=False, reason="the target or the current greeks are not finite numbers")
    if abs(change) <= tolerance:
        return amend(base, reason=f"already within {tolerance:,.4g} of the target: nothing to trade")
    screened = screen(quotes, instruments, now, request.tenor_days, limits, index_price, linear)
    cands = screened.candidates
    if not cands:
        near = f" near {request.tenor_days:g} days" if request.tenor_days is not None else ""
        return amend(base, reachable=False,
                       reason=f"no candidates: no liquid option{near} to plan with (left out: "
                              f"{screened.describe_excluded()})")
    deadline = time.monotonic() + limits.time_limit_s
    found = _solve(cands, request, before, tolerance, limits, _Relax(), deadline)
    # The best plan of one option, in closed form: what the solver must beat, and what is proposed
    # should the solver give up (or fail to beat it).
    single = _best_single(cands, request, before, tolerance, limits)
    if single is not None and (not isinstance(found, _Solution)
                               or _weight(cands, single, limits) < _weight(cands, found, limits)):
        found = replace(single, optimal=isinstance(found, _Solution) and found.optimal)
    if isinstance(found, str):
        return amend(base, reachable=False, reason=found)
    if found is None:
        return amend(base, reachable=False, reason=_why_not(cands, request, before, tolerance, limits, deadline))
    plan = _plan_of(base, cands, found, request, tolerance, limits)
    if plan is None:  # the solver's answer does not hold in exact arithmetic: nothing is proposed
        return amend(base, reachable=False, reason="the solver's plan misses the target or a limit after rounding")
    if limits.aim and plan.legs:
        plan = _aimed(plan, base, cands, found, request, before, tolerance, limits, single, deadline)
    return plan


def _aimed(cheapest: ExposurePlan, base: ExposurePlan, cands: Sequence[Candidate], found: _Solution,
           request: TargetRequest, before: GreekFigures, tolerance: float, limits: ExposureLimits,
           single: _Solution | None, deadline: float) -> ExposurePlan:
    """The plan nearest the target whose weight is at most the cheapest's, scaled to the whole change
    asked, x (1 + slack) + a few USD, and never above the cheapest single-option plan's (so no plan
    costs more than one of a single option that also reaches the target); ``cheapest`` itself when
    the second solve fails, runs out of time or does not get nearer in exact arithmetic."""
    weight = _weight(cands, found, limits)
    # The cheapest plan's weight per unit of the greek, paid on the whole change asked (it stops
    # short by up to the tolerance), plus the slack.
    asked = abs(request.target - before.of(request.greek))
    reached = abs(cheapest.after.of(request.greek) - before.of(request.greek))
    scale = max(1.0, asked / reached) if reached > 0 else 1.0
    cap = weight * scale * (1.0 + max(limits.aim_slack_pct, 0.0) / 100.0) + max(limits.aim_slack_usd, 0.0)
    if single is not None:
        cap = min(cap, _weight(cands, single, limits))
    cap = max(cap, weight)  # the cheapest is always within it
    aimed = _solve(cands, request, before, tolerance, limits, _Relax(),
                   min(deadline, time.monotonic() + max(limits.aim_time_s, 0.0)), cap=cap)
    if not isinstance(aimed, _Solution) or _weight(cands, aimed, limits) > cap * (1 + 1e-12) + 1e-9:
        return cheapest
    plan = _plan_of(base, cands, replace(aimed, optimal=found.optimal), request, tolerance, limits)
    if plan is None or not (abs(plan.after.of(request.greek) - request.target)
                            <= abs(cheapest.after.of(request.greek) - request.target)):
        return cheapest
    return plan


def _weight(cands: Sequence[Candidate], plan: _Solution, limits: ExposureLimits) -> float:
    """The solver's objective of ``plan``: its expected cost plus the legs' weight."""
    total = 0.0
    for c, b, s in zip(cands, plan.buys, plan.sells, strict=True):
        total += c.lot * (b * (c.half_spread_usd + c.fee_buy_usd) + s * (c.half_spread_usd + c.fee_sell_usd))
        total += limits.leg_penalty_usd if b or s else 0.0
    return total


def _best_single(cands: Sequence[Candidate], request: TargetRequest, before: GreekFigures, tolerance: float,
                 limits: ExposureLimits) -> _Solution | None:
    """The cheapest plan of one option (the fewest lots of it that reach the target within every
    limit and hold), or None."""
    if limits.max_legs < 1:
        return None
    need = request.target - before.of(request.greek)
    best: tuple[float, int, str, int] | None = None
    for i, c in enumerate(cands):
        per_lot = c.greeks.of(request.greek) * c.lot
        for side, most, fee in (("buy", c.buy_lots, c.fee_buy_usd), ("sell", c.sell_lots, c.fee_sell_usd)):
            signed = per_lot if side == "buy" else -per_lot
            if signed == 0 or most < 1:
                continue
            low, high = sorted(((need - tolerance) / signed, (need + tolerance) / signed))
            fewest = max(1, math.ceil(low - 1e-9))
            limit = min(most, math.floor(high + 1e-9),
                        math.floor(limits.max_notional_usd / (c.lot * c.forward) + 1e-9),
                        math.floor(limits.max_premium_usd / (c.lot * c.mid_usd) + 1e-9) if c.mid_usd > 0 else most)
            for g in request.holds:
                moved = abs(c.greeks.of(g) * c.lot)
                if moved > 0:
                    limit = min(limit, math.floor(limits.bands.of(g) / moved + 1e-9))
            if fewest <= limit:
                cost = fewest * c.lot * (c.half_spread_usd + fee)
                if best is None or cost < best[0]:
                    best = (cost, i, side, fewest)
    if best is None:
        return None
    _, at, side, lots = best
    buys = tuple(lots if k == at and side == "buy" else 0 for k in range(len(cands)))
    sells = tuple(lots if k == at and side == "sell" else 0 for k in range(len(cands)))
    return _Solution(buys, sells)


def _why_not(cands: Sequence[Candidate], request: TargetRequest, before: GreekFigures, tolerance: float,
             limits: ExposureLimits, deadline: float) -> str:
    """Why no plan fits: each relaxed programme that has a solution points at what is short."""

    timed_out = []

    def feasible(relax: _Relax) -> bool:
        found = _solve(cands, request, before, tolerance, limits, relax, deadline)
        if isinstance(found, str):
            timed_out.append(found)
        return isinstance(found, _Solution)

    how = f"{request.greek.value} {request.target:,.6g} (now {before.of(request.greek):,.6g})"
    legs = f"at most {limits.max_legs} leg{'s' if limits.max_legs != 1 else ''}"
    names = {"legs": legs, "leg_size": f"{limits.max_leg_notional_usd:,.0f} USD notional a leg",
             "notional": f"{limits.max_notional_usd:,.0f} USD notional in all",
             "premium": f"{limits.max_premium_usd:,.0f} USD premium in all"}
    limits_off = _Relax(legs=True, leg_size=True, notional=True, premium=True)
    liquidity = feasible(_Relax(display=True))
    alone = [text for key, text in names.items() if feasible(_Relax(**{key: True}))]
    if liquidity and alone:
        return (f"not enough liquidity or limits: {how} needs more displayed size than {len(cands)} candidates "
                f"show, or more than the limits allow ({', '.join(alone)})")
    if liquidity:
        return (f"not enough liquidity: the displayed sizes of {len(cands)} candidates cannot reach {how}; "
                "a smaller target or another tenor may")
    if alone:
        return f"limits: {how} needs more than the exposure limits allow ({', '.join(alone)})"
    if feasible(limits_off):
        return f"limits: {how} needs more than the exposure limits allow (several of: {', '.join(names.values())})"
    if feasible(replace(limits_off, display=True)):
        return (f"not enough liquidity within the limits: neither the displayed sizes nor the limits let {how} "
                "be reached")
    if request.holds and feasible(replace(limits_off, display=True, holds=True)):
        held = ", ".join(g.value for g in request.holds)
        return f"cannot hold {held} within their bands while reaching {how} with these {len(cands)} candidates"
    if timed_out:
        return (f"no plan reaches {how} within the limits and displayed sizes; why could not be told within "
                f"{limits.time_limit_s:g} s")
    return (f"the minimum trade amounts are too coarse: no whole number of them reaches {how} within "
            f"{tolerance:,.4g}")


def _plan_of(base: ExposurePlan, cands: Sequence[Candidate], found: _Solution, request: TargetRequest,
             tolerance: float, limits: ExposureLimits) -> ExposurePlan | None:
    legs: list[tuple[Candidate, str, int]] = []
    for c, b, s in zip(cands, found.buys, found.sells, strict=True):
        net = b - s  # a buy and a sell of one option cancel: only the difference is traded
        if net:
            legs.append((c, "buy" if net > 0 else "sell", abs(net)))
    legs.sort(key=lambda leg: (leg[0].quote.expiry_ms, leg[0].quote.strike, leg[0].quote.option_type))
    after = {g: base.before.of(g) for g in _GREEKS}
    out: list[PlanLeg] = []
    cost = premium = notional = gross_premium = 0.0
    for number, (c, side, lots) in enumerate(legs, start=1):
        amount = round(lots * c.lot, 10)
        sign = 1.0 if side == "buy" else -1.0
        greeks = GreekFigures(**{g.value: sign * amount * c.greeks.of(g) for g in _GREEKS})
        for g in _GREEKS:
            after[g] += greeks.of(g)
        fee = amount * (c.fee_buy_usd if side == "buy" else c.fee_sell_usd)
        leg_cost = amount * c.half_spread_usd + fee
        cost += leg_cost
        premium += sign * amount * c.mid_usd
        gross_premium += amount * c.mid_usd
        notional += amount * c.forward
        shown = c.quote.ask_amount if side == "buy" else c.quote.bid_amount
        if amount > shown * (1 + 1e-9) or amount * c.forward > limits.max_leg_notional_usd * (1 + 1e-9):
            return None
        assert c.quote.bid is not None and c.quote.ask is not None
        out.append(PlanLeg(leg=number, instrument_name=c.quote.instrument_name, side=side,  # type: ignore[arg-type]
                           amount=amount, bid=c.quote.bid, ask=c.quote.ask, mid=c.mid,
                           underlying_price=c.forward, greeks=greeks, cost_usd=leg_cost, fee_usd=fee))
    slack = 1e-6
    ok = (len(out) <= limits.max_legs
          and abs(after[request.greek] - request.target) <= tolerance * (1 + slack)
          and all(abs(after[g] - base.before.of(g)) <= limits.bands.of(g) * (1 + slack) for g in request.holds)
          and notional <= limits.max_notional_usd * (1 + 1e-9)
          and gross_premium <= limits.max_premium_usd * (1 + 1e-9))
    if not ok:
        return None
    return amend(base, legs=tuple(out), after=GreekFigures(**{g.value: v for g, v in after.items()}),
                 cost_usd=cost, premium_usd=premium,
                 reason="" if found.optimal else "the solver's time ran out: a cheaper plan may exist")
