"""One minute of a full chain into the database: ``python -m bench snapshot [--json] [options]``.

Input: a synthetic BTC :class:`ChainSnapshot` of 1,500 options over 20 expiries (quant.synthetic:
an arbitrage-free SSVI surface, Deribit-like strikes, quotes rounded to the 0.0005 BTC tick), as the
BookKeepers publish on a minute tick. Timed per minute, each repetition a new minute:

- ours: ``build_surface_snapshot`` (bid, ask, mid and mark vols of every quote in one vectorized call,
  SVI fits, the grid, ATM/RR25/BF25, the variance index) then ``MinuteStore.record`` (one transaction,
  batched ``INSERT ... ON CONFLICT DO NOTHING`` into the four minute tables, committed), on SQLite (WAL)
  and on PostgreSQL;
- the reference, the seed program's way, on PostgreSQL in the same run with the same rows: a pandas
  DataFrame of the chain, a per-row scalar implied-vol solve of bid, ask, mid and mark with vollib's
  ``black.implied_volatility`` (Jaeckel's Let's Be Rational in pure Python, the usual scalar library;
  faster than a scipy brentq per row, so the speedup is if anything understated), the seed's linear
  smiles interpolated onto the same grid, and ``DataFrame.to_sql`` of the quotes and the grid.

PostgreSQL: ``--pg-url URL``, else ``TEST_DATABASE_URL``, else 127.0.0.1:5432/test, else a
throwaway cluster (tests.support.postgres). Everything is written into a private schema that is dropped at
the end. Progress goes to stderr; the runner prints the result as the last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from messages.state import ChainSnapshot, OptionQuote
from quant import SurfaceGrid, black76_greeks, implied_vol
from quant.surface import MS_PER_YEAR
from quant.synthetic import synthetic_chain

TARGET_POSTGRES_MS = 100.0
TARGET_SPEEDUP = 5.0
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def instrument_name(currency: str, expiry_ms: int, strike: float, is_call: bool) -> str:
    day = dt.datetime.fromtimestamp(expiry_ms / 1000, dt.UTC)
    strike_text = f"{strike:.0f}" if float(strike).is_integer() else f"{strike:g}".replace(".", "d")
    return f"{currency}-{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}-{strike_text}-{'C' if is_call else 'P'}"


def synthetic_chain_snapshot(
    *, currency: str = "BTC", at: float = 1_626_994_800.0, n_quotes: int = 1500, n_expiries: int = 20,
    forward: float = 32_000.0, seed: int = 0,
) -> ChainSnapshot:
    """A BookKeeper-like option ChainSnapshot from ``quant.synthetic``: books from the synthetic bid and
    ask, tickers with the mark, Deribit's rounded mark vol and Black-76 greeks."""
    now_ms = int(at * 1000)
    chain, _, _ = synthetic_chain(now_ms=now_ms, n_expiries=n_expiries, n_quotes=n_quotes, forward=forward, seed=seed)
    years = (chain.expiry_ms - now_ms) / MS_PER_YEAR
    mark_usd = chain.mark * chain.underlying_price
    mark_vol = np.asarray(implied_vol(mark_usd, chain.underlying_price, chain.strike, years, chain.is_call))
    greeks = black76_greeks(chain.underlying_price, chain.strike, years, mark_vol, chain.is_call)
    rng = np.random.default_rng(seed)
    amounts = np.round(rng.uniform(0.1, 30.0, (2, len(chain))), 1)
    options = []
    for i in range(len(chain)):
        bid = float(chain.bid[i])
        options.append(OptionQuote(
            instrument_name=instrument_name(currency, int(chain.expiry_ms[i]), float(chain.strike[i]),
                                            bool(chain.is_call[i])),
            expiry_ms=int(chain.expiry_ms[i]), strike=float(chain.strike[i]),
            option_type="call" if chain.is_call[i] else "put",
            bid=bid if bid > 0 else None, bid_amount=float(amounts[0, i]) if bid > 0 else 0.0,
            ask=float(chain.ask[i]), ask_amount=float(amounts[1, i]),
            mark_price=round(float(chain.mark[i]), 8),
            mark_iv=round(float(mark_vol[i]) * 100, 2) if math.isfinite(mark_vol[i]) else None,
            underlying_price=float(chain.underlying_price[i]), index_price=forward,
            open_interest=float(np.round(rng.uniform(0, 500), 1)),
            delta=round(float(greeks.delta[i]), 5), gamma=round(float(greeks.gamma[i]), 5),
            vega=round(float(greeks.vega[i]), 5), theta=round(float(greeks.theta[i]), 5),
            age_s=float(rng.uniform(0, 60)), stale=False,
        ))
    return ChainSnapshot(currency=currency, kind="option", at=at, index_price=forward, options=tuple(options))


# -- the seed program's way ----------------------------------------------------------------------------
def reference_minute(chain: ChainSnapshot, engine: Any, grid: SurfaceGrid) -> int:
    """Per-row scalar vol solves in a pandas frame, linear smiles on the grid, ``to_sql``. Rows written."""
    import pandas as pd
    from vollib.black.implied_volatility import implied_volatility

    frame = pd.DataFrame([{
        "minute": dt.datetime.fromtimestamp(chain.at, dt.UTC), "instrument": o.instrument_name,
        "expiry_ms": o.expiry_ms, "strike": o.strike, "option_type": o.option_type, "bid": o.bid, "ask": o.ask,
        "bid_amount": o.bid_amount, "ask_amount": o.ask_amount, "mark_price": o.mark_price,
        "underlying_price": o.underlying_price, "index_price": o.index_price, "open_interest": o.open_interest,
        "delta": o.delta, "gamma": o.gamma, "vega": o.vega, "theta": o.theta,
    } for o in chain.options])
    frame = frame[(frame["bid"].fillna(0) > 0) | (frame["ask"].fillna(0) > 0)].copy()
    frame["years"] = (frame["expiry_ms"] - chain.at * 1000) / MS_PER_YEAR
    frame["mid"] = (frame["bid"] + frame["ask"]) / 2

    def solve(row: pd.Series, column: str) -> float:
        price = row[column]
        if price is None or not price > 0:
            return math.nan
        try:
            f = row["underlying_price"]
            return 100 * implied_volatility(price * f, f, row["strike"], 0.0, row["years"],
                                            "c" if row["option_type"] == "call" else "p")
        except Exception:
            return math.nan

    for column in ("bid", "ask", "mid", "mark_price"):
        frame[f"{column}_iv"] = frame.apply(solve, axis=1, args=(column,))

    # The seed's surface: out-of-the-money quotes, vol linear in K/F per expiry, linear in time.
    frame["moneyness"] = frame["strike"] / frame["underlying_price"]
    otm = frame[np.where(frame["option_type"] == "call", frame["moneyness"] >= 1, frame["moneyness"] < 1)].copy()
    otm["vol"] = otm["mid_iv"].fillna(otm["mark_price_iv"])
    otm = otm.dropna(subset=["vol"])
    grid_m = np.exp(np.asarray(grid.log_moneyness))
    smiles = {
        years: np.interp(grid_m, part.sort_values("moneyness")["moneyness"], part.sort_values("moneyness")["vol"])
        for years, part in otm.groupby("years") if years > 0
    }
    expiries = np.array(sorted(smiles))
    table = np.array([smiles[t] for t in expiries])
    points = []
    for tenor in grid.tenor_days:
        tau = tenor / 365.0
        for j, k in enumerate(grid.log_moneyness):
            points.append({"minute": frame["minute"].iloc[0], "tenor_days": tenor, "log_moneyness": k,
                           "iv": float(np.interp(tau, expiries, table[:, j]))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.drop(columns=["moneyness"]).to_sql("reference_option_quotes", engine, if_exists="append", index=False)
        pd.DataFrame(points).to_sql("reference_surface_points", engine, if_exists="append", index=False)
    return len(frame) + len(points)


# -- running -------------------------------------------------------------------------------------------
def _median_ms(fn: Callable[[int], Any], repeat: int) -> float:
    fn(-1)  # warm-up (first connection, schema, caches)
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _pg_base_url(explicit: str | None) -> tuple[str, Any]:
    if explicit:
        return explicit, None
    from tests.support.postgres import server_url

    return server_url()


def run(args: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench snapshot")
    parser.add_argument("--quotes", type=int, default=1500)
    parser.add_argument("--expiries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20, help="minutes timed per database (ours)")
    parser.add_argument("--reference-repeat", type=int, default=5, help="minutes timed the seed's way")
    parser.add_argument("--pg-url", help="PostgreSQL server to use (default: the tests' server)")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(args)

    from sqlalchemy import text

    from desk.surface_snapshot import build_surface_snapshot
    from sql.engine import make_engine
    from sql.store import MinuteStore, snapshot_record

    grid = SurfaceGrid()
    chain = synthetic_chain_snapshot(n_quotes=opts.quotes, n_expiries=opts.expiries, seed=opts.seed)
    start = chain.at
    print(f"snapshot: {len(chain.options)} options, {opts.expiries} expiries; ours x{opts.repeat} per database, "
          f"reference x{opts.reference_repeat}", file=sys.stderr)

    def at_minute(i: int) -> ChainSnapshot:
        import msgspec

        return msgspec.structs.replace(chain, at=start + 60.0 * (i + 1))

    chains = {i: at_minute(i) for i in range(-1, opts.repeat)}
    stats: dict[str, Any] = {}

    def ours(store: MinuteStore) -> Callable[[int], None]:
        def minute(i: int) -> None:
            snap = build_surface_snapshot(chains[i], grid=grid, method="svi")
            if not store.record(snapshot_record(snap)):
                raise RuntimeError(f"the minute was not committed: {store.last_error}")
            stats["rows"] = len(snap.quotes) + len(snap.points) + len(snap.fits) + 1
        return minute

    tmp = tempfile.mkdtemp(prefix="bench-snapshot-")
    base_url, cluster = _pg_base_url(opts.pg_url or os.environ.get("TEST_DATABASE_URL"))
    schema = f"bench_snapshot_{os.getpid()}"
    admin = make_engine(base_url)
    try:
        store = MinuteStore(f"sqlite:///{tmp}/bench.sqlite3", f"{tmp}/spool-sqlite")
        print("ours on SQLite ...", file=sys.stderr)
        sqlite_ms = _median_ms(ours(store), opts.repeat)
        store.close()

        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in base_url else "?"
        pg_url = f"{base_url}{sep}options=-csearch_path%3D{schema}"
        store = MinuteStore(pg_url, f"{tmp}/spool-pg")
        print("ours on PostgreSQL ...", file=sys.stderr)
        postgres_ms = _median_ms(ours(store), opts.repeat)
        store.close()

        pg = make_engine(pg_url)
        print("the seed's way on PostgreSQL ...", file=sys.stderr)
        reference_ms = _median_ms(lambda i: stats.__setitem__("reference_rows", reference_minute(chains[i], pg, grid)),
                                  opts.reference_repeat)
        pg.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    speedup = reference_ms / postgres_ms
    return {
        "n_options": len(chain.options),
        "rows_per_minute": stats.get("rows"),
        "reference_rows_per_minute": stats.get("reference_rows"),
        "median_ms": round(postgres_ms, 3),
        "postgres_median_ms": round(postgres_ms, 3),
        "sqlite_median_ms": round(sqlite_ms, 3),
        "reference_median_ms": round(reference_ms, 3),
        "reference": "pandas DataFrame + vollib.black.implied_volatility per row + DataFrame.to_sql (PostgreSQL)",
        "speedup": round(speedup, 2),
        "target_postgres_ms": TARGET_POSTGRES_MS,
        "target_speedup": TARGET_SPEEDUP,
    }
