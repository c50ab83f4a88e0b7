"""The option keeper's live answer to the console: ``python -m bench chain_view [--json] [options]``.

A BTC option family of 1,200 synthetic options over 20 expiries (bench.snapshot's chain), every
book snapshotted and every ticker in, as a BookKeeper holds it. Timed per call, best of five runs:
``BookFamily.chain_view`` for the counts only (no expiry, no names: what each refresh costs a
family the console does not show), for one expiry (60 options) and four named options (what the
focused family costs, held under the keeper's state lock, so the link thread may wait that long),
and the minute's whole ``chain_snapshot`` for comparison.
"""

from __future__ import annotations

import argparse
import timeit

from bench.snapshot import synthetic_chain_snapshot
from desk.book_family import BookFamily
from messages.market import BookSnapshot, Greeks, Ticker, TickerStats
from messages.state import ChainViewRequest

AT = 1_626_994_800.0


def family(n_options: int, n_expiries: int) -> BookFamily:
    chain = synthetic_chain_snapshot(n_quotes=n_options, n_expiries=n_expiries, at=AT)
    books = BookFamily("BTC", "option", publish_top=False)
    stamp = int(AT * 1000)
    for i, q in enumerate(chain.options):
        books.on_snapshot(BookSnapshot(instrument_name=q.instrument_name, timestamp=stamp, change_id=i + 1,
                                       bids=((("new", q.bid, 1.0),) if q.bid else ()),
                                       asks=((("new", q.ask, 1.0),) if q.ask else ())),
                          AT)
        books.on_ticker(Ticker(instrument_name=q.instrument_name, timestamp=stamp, state="open",
                               mark_price=q.mark_price or 0.0, index_price=32_000.0,
                               underlying_price=q.underlying_price, mark_iv=q.mark_iv, bid_iv=50.0, ask_iv=60.0,
                               greeks=Greeks(delta=0.5, gamma=0.0001, vega=10.0, theta=-5.0),
                               stats=TickerStats(volume=3.0)), AT)
    return books


def _per_call_us(call: object, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def run(args: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench chain_view")
    parser.add_argument("--options", type=int, default=1200)
    parser.add_argument("--expiries", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    opts = parser.parse_args(args)
    books = family(opts.options, opts.expiries)
    expiries = sorted({entry.expiry_ms for entry in books.entries.values()})
    names = tuple(sorted(books.entries)[::max(1, len(books.entries) // 4)])[:4]
    counts = ChainViewRequest(currency="BTC", expiry_ms=None)
    focused = ChainViewRequest(currency="BTC", expiry_ms=expiries[len(expiries) // 4], names=names)
    shown = len(books.chain_view(focused, AT + 1).options)
    return {
        "options": len(books.entries),
        "expiries": len(expiries),
        "focused_options": shown,
        "counts_only_us": round(_per_call_us(lambda: books.chain_view(counts, AT + 1), opts.calls), 1),
        "focused_us": round(_per_call_us(lambda: books.chain_view(focused, AT + 1), opts.calls), 1),
        "minute_snapshot_us": round(_per_call_us(lambda: books.chain_snapshot(AT, AT + 1), 20), 1),
    }
