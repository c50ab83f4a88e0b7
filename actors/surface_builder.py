"""The SurfaceBuilder: each minute's option ChainSnapshot into quotes with implied vols and the
volatility surface (:class:`SurfaceSnapshot`), for the Recorder and the Console.

A thin shell: the work is :func:`desk.surface_snapshot.build_surface_snapshot` (see there for the
filters and the maths). Futures snapshots are not its business; a chain that lists no option
publishes nothing. A chain whose coverage is below ``surface.min_coverage`` (the first minute after
a start: books in, tickers not yet; or no bid or ask at all) is published as an incomplete minute:
its quotes, no surface.
"""

from __future__ import annotations

import time

from desk.surface_snapshot import build_surface_snapshot
from messages.state import ChainSnapshot
from messages.surface import SurfaceSnapshot
from quant import SurfaceGrid
from runtime.actor import Actor, ActorContext, handles


class SurfaceBuilder(Actor):
    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        surface = context.settings.surface
        self.method = surface.method
        self.grid = SurfaceGrid(tenor_days=tuple(surface.tenor_days), log_moneyness=tuple(surface.log_moneyness))
        self.min_coverage = surface.min_coverage
        #: Each currency's last complete minute's eSSVI slices (raw SVI by expiry_ms): a thin expiry
        #: is held towards them rather than re-fitted freely.
        self.previous: dict[str, dict[int, tuple[float, ...]]] = {}

    @handles(ChainSnapshot)
    def on_chain(self, chain: ChainSnapshot) -> SurfaceSnapshot | None:
        if chain.kind != "option":
            return None
        if not chain.options:
            self.log.warning("no_listed_options", currency=chain.currency, minute=chain.at)
            return None
        started = time.perf_counter()  # how long the build took, not business time
        snapshot = build_surface_snapshot(chain, grid=self.grid, method=self.method, min_coverage=self.min_coverage,
                                          previous=self.previous.get(chain.currency))
        if snapshot.complete and snapshot.surface_ok:
            self.previous[chain.currency] = {f.expiry_ms: f.parameters for f in snapshot.fits
                                             if f.method == "essvi" and len(f.parameters) == 5}
        if not snapshot.complete:
            self.log.warning("incomplete_minute", currency=chain.currency, minute=chain.at, listed=snapshot.listed,
                             usable=snapshot.usable, coverage=snapshot.coverage, min_coverage=self.min_coverage)
        self.publish(snapshot)
        self.log.info("surface_built", currency=chain.currency, minute=chain.at, quotes=len(snapshot.quotes),
                      price_currency=snapshot.price_currency,
                      unquoted=snapshot.n_unquoted, stale=snapshot.n_stale, expiries=len(snapshot.fits),
                      surface_ok=snapshot.surface_ok, complete=snapshot.complete, coverage=snapshot.coverage,
                      variance_index=snapshot.variance_index,
                      atm_iv_30d=snapshot.atm_iv_30d, build_ms=round((time.perf_counter() - started) * 1e3, 1),
                      notes=list(snapshot.notes))
        return snapshot
