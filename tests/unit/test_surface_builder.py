"""SurfaceBuilder: ChainSnapshot -> SurfaceSnapshot (desk.surface_snapshot) and the actor around it."""

from __future__ import annotations

import json
import math
import threading

import msgspec
import numpy as np
import pytest

import desk.surface_snapshot as surface_snapshot_module
from actors.surface_builder import SurfaceBuilder
from bench.snapshot import synthetic_chain_snapshot
from desk.surface_snapshot import build_surface_snapshot
from messages.state import ChainSnapshot, OptionQuote
from messages.surface import SurfaceSnapshot
from quant import ChainInputs, SurfaceGrid, black76_price, build_surface
from quant.surface import MS_PER_YEAR
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from tests.support.capture import wire_lines
from tests.support.fixtures_quant.deribit_tickers import parse_option_name
from tests.support.settings import make_settings

AT = 1_626_994_800.0  # 2021-07-22 23:00 UTC


@pytest.fixture(scope="module")
def chain() -> ChainSnapshot:
    return synthetic_chain_snapshot(at=AT, n_quotes=400, n_expiries=8)


def _price_of(vol_percent: float, q: OptionQuote, at: float) -> float:
    years = (q.expiry_ms - at * 1000) / MS_PER_YEAR
    assert q.underlying_price is not None
    usd = black76_price(q.underlying_price, q.strike, years, vol_percent / 100.0, q.option_type == "call")
    return float(usd) / q.underlying_price


def test_every_quoted_option_gets_a_row_with_vols_that_reprice_its_book(chain: ChainSnapshot) -> None:
    snap = build_surface_snapshot(chain)
    quoted = [o for o in chain.options if (o.bid or 0) > 0 or (o.ask or 0) > 0]
    assert [q.instrument_name for q in snap.quotes] == [o.instrument_name for o in quoted]
    assert snap.n_unquoted == len(chain.options) - len(quoted)
    assert snap.currency == "BTC" and snap.at == AT
    by_name = {o.instrument_name: o for o in chain.options}
    solved = 0
    for q in snap.quotes:
        o = by_name[q.instrument_name]
        assert (q.bid, q.ask, q.mark_price, q.delta, q.open_interest) == (o.bid, o.ask, o.mark_price, o.delta,
                                                                           o.open_interest)
        for side, vol in (("bid", q.bid_iv), ("ask", q.ask_iv)):
            price = getattr(o, side)
            if vol is None:
                continue
            solved += 1
            # Percent, and Black-76 at that vol gives the book's price back.
            assert 1.0 < vol < 500.0
            assert _price_of(vol, o, AT) == pytest.approx(price, rel=1e-7, abs=1e-10)
        if q.bid_iv is not None and q.ask_iv is not None:
            assert q.bid_iv <= q.mid_iv <= q.ask_iv  # type: ignore[operator]
        assert q.mark_iv == o.mark_iv  # Deribit's own mark vol is kept
    assert solved > 0.8 * len(snap.quotes)


def test_our_vols_match_deribits_on_the_real_capture() -> None:
    # Every ticker of the capture as a one-option chain at its own timestamp (the years count from it).
    bid_err, ask_err = [], []
    for line in wire_lines():
        frame = json.loads(line).get("frame") or ""
        if '"channel":"ticker.' not in frame:
            continue
        d = json.loads(frame)["params"]["data"]
        currency, _, strike, kind = d["instrument_name"].split("-")
        _, expiry_ms, _, _ = parse_option_name(d["instrument_name"])
        option = OptionQuote(
            instrument_name=d["instrument_name"], expiry_ms=expiry_ms, strike=float(strike),
            option_type="call" if kind == "C" else "put",
            bid=d["best_bid_price"] or None, bid_amount=d["best_bid_amount"],
            ask=d["best_ask_price"] or None, ask_amount=d["best_ask_amount"],
            mark_price=d["mark_price"], mark_iv=d["mark_iv"], underlying_price=d["underlying_price"],
            index_price=d["index_price"], open_interest=d["open_interest"], delta=d["greeks"]["delta"],
            gamma=d["greeks"]["gamma"], vega=d["greeks"]["vega"], theta=d["greeks"]["theta"], age_s=0.0, stale=False,
        )
        if option.bid is None and option.ask is None:
            continue
        chain = ChainSnapshot(currency=currency, kind="option", at=d["timestamp"] / 1000.0,
                              index_price=d["index_price"], options=(option,))
        (q,) = build_surface_snapshot(chain).quotes
        if q.bid_iv is not None:
            bid_err.append(abs(q.bid_iv - d["bid_iv"]))
        if q.ask_iv is not None:
            ask_err.append(abs(q.ask_iv - d["ask_iv"]))
    assert len(bid_err) > 20 and len(ask_err) > 20
    assert np.median(bid_err) <= 0.01 and np.median(ask_err) <= 0.01


def test_surface_grid_fits_and_figures_are_build_surfaces_in_percent(chain: ChainSnapshot) -> None:
    grid = SurfaceGrid()
    snap = build_surface_snapshot(chain, grid=grid, method="essvi")
    assert snap.surface_ok and snap.method == "essvi"
    assert len(snap.points) == len(grid.tenor_days) * len(grid.log_moneyness)
    assert {(p.tenor_days, p.log_moneyness) for p in snap.points} == {
        (float(t), float(k)) for t in grid.tenor_days for k in grid.log_moneyness}
    # The same numbers as quant.build_surface on the same quotes, times 100.
    o = chain.options
    ref = build_surface(ChainInputs(
        expiry_ms=[x.expiry_ms for x in o], strike=[x.strike for x in o], is_call=[x.option_type == "call" for x in o],
        bid=[x.bid or np.nan for x in o], ask=[x.ask or np.nan for x in o], mark=[x.mark_price for x in o],
        underlying_price=[x.underlying_price for x in o]), AT * 1000.0, grid=grid)
    expected = {(t, k): v * 100 for t, k, v in ref.grid_points()}
    for p in snap.points:
        assert p.iv == pytest.approx(expected[(p.tenor_days, p.log_moneyness)], rel=1e-9)
    assert snap.variance_index == pytest.approx(ref.variance_index.value, rel=1e-12)
    i30 = list(ref.tenor_days).index(30.0)
    assert snap.atm_iv_30d == pytest.approx(ref.atm_iv[i30] * 100, rel=1e-9)
    assert snap.rr25_30d == pytest.approx(ref.rr25[i30] * 100, rel=1e-9)
    assert [t.tenor_days for t in snap.tenors] == list(grid.tenor_days)
    assert len(snap.fits) == len(ref.expiries)
    for fit, e in zip(snap.fits, ref.expiries, strict=True):
        assert fit.expiry_ms == e.expiry_ms and fit.method == e.method
        assert len(fit.parameters) == (5 if e.method in ("svi", "essvi") else 0)
        assert fit.butterfly_ok == e.butterfly_ok and fit.calendar_ok == e.calendar_ok
    # No NaN anywhere: the message must survive JSON (NaN would come back as null and fail).
    assert msgspec.json.decode(msgspec.json.encode(snap), type=SurfaceSnapshot) == snap


def test_in_the_money_side_is_recorded_but_left_out_of_the_surface(chain: ChainSnapshot) -> None:
    snap = build_surface_snapshot(chain)
    for q in snap.quotes:
        assert q.underlying_price is not None
        otm = q.strike >= q.underlying_price if q.option_type == "call" else q.strike < q.underlying_price
        assert q.in_surface == otm, q.instrument_name
    assert any(not q.in_surface for q in snap.quotes) and any(q.in_surface for q in snap.quotes)


def test_options_without_bid_and_ask_are_dropped(chain: ChainSnapshot) -> None:
    emptied = tuple(msgspec.structs.replace(o, bid=None, ask=None, bid_amount=0.0, ask_amount=0.0) if i % 3 == 0
                    else o for i, o in enumerate(chain.options))
    snap = build_surface_snapshot(msgspec.structs.replace(chain, options=emptied))
    assert snap.n_unquoted == sum(1 for o in emptied if o.bid is None and o.ask is None)
    assert len(snap.quotes) == len(emptied) - snap.n_unquoted
    assert all(q.bid is not None or q.ask is not None for q in snap.quotes)


def test_stale_books_are_flagged_keep_their_vols_and_stay_out_of_the_fit(chain: ChainSnapshot) -> None:
    fresh = build_surface_snapshot(chain)
    # Make every OTM quote of one expiry stale, with a wild price: the surface must not move.
    expiry = sorted({o.expiry_ms for o in chain.options})[3]
    stale_names = {o.instrument_name for o in chain.options if o.expiry_ms == expiry}
    options = tuple(
        msgspec.structs.replace(o, stale=True, bid=None if o.bid is None else o.bid * 3, ask=(o.ask or 0) * 3)
        if o.instrument_name in stale_names else o for o in chain.options)
    snap = build_surface_snapshot(msgspec.structs.replace(chain, options=options))
    assert snap.n_stale == len(stale_names)
    by_name = {o.instrument_name: o for o in options}
    for q in snap.quotes:
        assert q.stale == (q.instrument_name in stale_names)
        if q.stale:
            assert not q.in_surface
            o = by_name[q.instrument_name]
            if q.ask_iv is not None:  # the vol of the (stale) book's own price
                assert _price_of(q.ask_iv, o, AT) == pytest.approx(o.ask, rel=1e-7)
    assert not any(f.expiry_ms == expiry for f in snap.fits)  # no usable quote left there
    assert snap.variance_index == pytest.approx(
        build_surface_snapshot(msgspec.structs.replace(chain, options=tuple(
            o for o in chain.options if o.instrument_name not in stale_names))).variance_index, rel=1e-12)
    assert fresh.variance_index != snap.variance_index or fresh.fits != snap.fits


def test_a_failing_surface_still_records_the_quotes_with_vols(chain: ChainSnapshot,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise FloatingPointError("synthetic failure")

    monkeypatch.setattr(surface_snapshot_module, "build_surface", broken)
    snap = build_surface_snapshot(chain)
    assert not snap.surface_ok and snap.points == () and snap.fits == ()
    assert "synthetic failure" in snap.notes[0]
    monkeypatch.undo()
    reference = {q.instrument_name: q for q in build_surface_snapshot(chain).quotes}
    for q in snap.quotes:
        ref = reference[q.instrument_name]
        for got, want in ((q.bid_iv, ref.bid_iv), (q.ask_iv, ref.ask_iv), (q.mid_iv, ref.mid_iv)):
            assert (got is None and want is None) or got == pytest.approx(want, rel=1e-12)


def test_missing_ticker_figures_give_no_vol_rather_than_a_wrong_one(chain: ChainSnapshot) -> None:
    first = msgspec.structs.replace(chain.options[0], underlying_price=None, mark_price=None, mark_iv=None)
    snap = build_surface_snapshot(msgspec.structs.replace(chain, options=(first, *chain.options[1:])))
    q = snap.quotes[0]
    assert q.instrument_name == first.instrument_name
    assert (q.bid_iv, q.ask_iv, q.mid_iv, q.mark_iv, q.in_surface) == (None, None, None, None, False)


def test_linear_method_and_expired_options() -> None:
    chain = synthetic_chain_snapshot(at=AT, n_quotes=200, n_expiries=4)
    snap = build_surface_snapshot(chain, method="linear")
    assert snap.method == "linear" and all(f.method == "linear" and f.parameters == () for f in snap.fits)
    later = msgspec.structs.replace(chain, at=max(o.expiry_ms for o in chain.options) / 1000 + 60)
    expired = build_surface_snapshot(later)
    assert expired.fits == () and all(p.iv is None for p in expired.points)
    assert all(q.bid_iv is None and q.ask_iv is None for q in expired.quotes)
    assert expired.variance_index is None


# -- the actor ------------------------------------------------------------------------------------------
def test_the_actor_publishes_one_snapshot_per_option_chain_and_ignores_futures(chain: ChainSnapshot) -> None:
    published: list[object] = []
    lock = threading.Lock()

    def publish(message: object) -> None:
        with lock:
            published.append(message)

    settings = make_settings({"surface.method": "linear"})
    context = ActorContext(name="surface_builder", clock=ReplayClock(AT), settings=settings, publish=publish)
    ref = SurfaceBuilder.start(context)
    try:
        futures = ChainSnapshot(currency="BTC", kind="future", at=AT, index_price=32000.0)
        assert ref.ask(futures, timeout=10) is None
        unquoted = msgspec.structs.replace(chain, options=tuple(
            msgspec.structs.replace(o, bid=None, ask=None) for o in chain.options))
        # Nothing quoted: an incomplete minute (no quote rows, no surface), said so rather than skipped.
        empty = ref.ask(unquoted, timeout=10)
        assert isinstance(empty, SurfaceSnapshot)
        assert (empty.complete, empty.surface_ok, empty.coverage, empty.listed, empty.quotes) == (
            False, False, 0.0, len(chain.options), ())
        assert ref.ask(msgspec.structs.replace(chain, options=()), timeout=10) is None  # nothing listed
        snap = ref.ask(chain, timeout=30)
    finally:
        ref.stop()
    assert isinstance(snap, SurfaceSnapshot) and snap.method == "linear" and snap.complete
    assert published == [empty, snap]
    assert SurfaceBuilder.subscriptions() == (ChainSnapshot,)
    assert math.isfinite(snap.variance_index or math.nan)


# -- honest minutes ---------------------------------------------------------------------------------------
def _no_ticker_yet(chain: ChainSnapshot) -> ChainSnapshot:
    """The first minute after a start: every book is in, no ticker has come yet (no mark, no
    underlying price, no greeks): what the real capture's first BTC minute recorded as good data."""
    return msgspec.structs.replace(chain, options=tuple(
        msgspec.structs.replace(o, mark_price=None, mark_iv=None, underlying_price=None, index_price=None, delta=None,
                                gamma=None, vega=None, theta=None, open_interest=None) for o in chain.options))


def test_the_first_minute_after_a_start_is_incomplete_and_leaves_no_surface(chain: ChainSnapshot) -> None:
    first = _no_ticker_yet(chain)
    snap = build_surface_snapshot(first)
    quoted = [o for o in first.options if (o.bid or 0) > 0 or (o.ask or 0) > 0]
    # Its quotes are recorded (and marked incomplete), nothing else is.
    assert [q.instrument_name for q in snap.quotes] == [o.instrument_name for o in quoted]
    assert (snap.complete, snap.surface_ok, snap.coverage, snap.usable, snap.listed) == (
        False, False, 0.0, 0, len(first.options))
    assert snap.points == () and snap.fits == () and snap.tenors == ()
    assert (snap.variance_index, snap.atm_iv_30d, snap.rr25_30d, snap.bf25_30d) == (None, None, None, None)
    assert "incomplete minute" in snap.notes[0]


def test_coverage_is_the_share_of_listed_options_two_sided_with_a_ticker(chain: ChainSnapshot) -> None:
    options = list(chain.options)
    usable = [i for i, o in enumerate(options) if o.bid and o.ask and o.mark_price is not None and not o.stale]
    assert len(usable) > 0.6 * len(options)
    # Take the ticker from some, one side from others, mark a few stale: each stops counting.
    lost = usable[:len(options) // 4]
    for n, i in enumerate(lost):
        change = ({"mark_price": None}, {"bid": None}, {"ask": None}, {"stale": True})[n % 4]
        options[i] = msgspec.structs.replace(options[i], **change)  # type: ignore[arg-type]
    changed = msgspec.structs.replace(chain, options=tuple(options))
    expected = (len(usable) - len(lost)) / len(options)
    snap = build_surface_snapshot(changed, min_coverage=expected)
    assert snap.coverage == pytest.approx(expected) and snap.usable == len(usable) - len(lost)
    assert snap.complete and snap.surface_ok and snap.points
    # A minimum just above it: the same minute is incomplete, its quotes kept with their vols.
    below = build_surface_snapshot(changed, min_coverage=expected + 1e-9)
    assert not below.complete and not below.surface_ok and below.points == ()
    assert [(q.instrument_name, q.bid_iv, q.ask_iv) for q in below.quotes] == [
        (q.instrument_name, q.bid_iv, q.ask_iv) for q in snap.quotes]


def test_nothing_to_fit_is_not_a_good_surface() -> None:
    chain = synthetic_chain_snapshot(at=AT, n_quotes=200, n_expiries=4)
    # Every option expired a minute ago: books and tickers still there (complete), nothing to fit.
    later = msgspec.structs.replace(chain, at=max(o.expiry_ms for o in chain.options) / 1000 + 60)
    snap = build_surface_snapshot(later)
    assert snap.complete and snap.fits == ()
    assert not snap.surface_ok


def _known_chain() -> ChainSnapshot:
    """Two expiries, 7 days quoted on ln(K/F) in [-0.2, 0.2] and 60 days on [-0.4, 0.3], both
    sides at every strike, priced at a flat 60% with a 1-vol-point spread."""
    forward = 30_000.0
    options = []
    for days, ks in ((7, np.round(np.arange(-0.2, 0.2001, 0.05), 4)), (60, np.round(np.arange(-0.4, 0.3001, 0.05), 4))):
        expiry_ms = int((AT + days * 86_400) * 1000)
        years = (expiry_ms - AT * 1000) / MS_PER_YEAR
        for k in ks.tolist():
            strike = forward * math.exp(k)
            for kind in ("call", "put"):
                def coin(vol: float, strike: float = strike, kind: str = kind, years: float = years) -> float:
                    return float(black76_price(forward, strike, years, vol, kind == "call")) / forward
                options.append(OptionQuote(
                    instrument_name=f"BTC-{days}D-{strike:.2f}-{kind[0].upper()}", expiry_ms=expiry_ms, strike=strike,
                    option_type=kind, bid=coin(0.595), bid_amount=1.0, ask=coin(0.605),  # type: ignore[arg-type]
                    ask_amount=1.0, mark_price=coin(0.60), mark_iv=60.0, underlying_price=forward,
                    index_price=forward, open_interest=1.0, delta=None, gamma=None, vega=None, theta=None, age_s=1.0,
                    stale=False))
    return ChainSnapshot(currency="BTC", kind="option", at=AT, index_price=forward, options=tuple(options))


def test_grid_points_say_whether_they_are_data_or_extrapolation() -> None:
    grid = SurfaceGrid(tenor_days=(1.0, 7.0, 30.0, 60.0, 90.0), log_moneyness=(-0.5, -0.3, -0.2, 0.0, 0.2, 0.25, 0.3))
    snap = build_surface_snapshot(_known_chain(), grid=grid)
    assert snap.complete and snap.surface_ok and len(snap.fits) == 2
    flags = {(p.tenor_days, p.log_moneyness): p.extrapolated for p in snap.points}
    assert len(flags) == 35 and all(isinstance(v, bool) for v in flags.values())
    inside = {key for key, extrapolated in flags.items() if not extrapolated}
    # 7 days: [-0.2, 0.2]; 60 days: [-0.4, 0.3]; 30 days (23/53 of the way): [-0.287, 0.243].
    # Before the first (1 day) and after the last expiry (90 days): all extrapolated.
    assert inside == {(7.0, k) for k in (-0.2, 0.0, 0.2)} | {(30.0, k) for k in (-0.2, 0.0, 0.2)} | {
        (60.0, k) for k in (-0.3, -0.2, 0.0, 0.2, 0.25, 0.3)}
