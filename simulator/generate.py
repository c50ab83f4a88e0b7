"""Wire logs of simulated full-chain market data on a virtual clock, as fast as the CPU allows.

The log has the DESIGN's format, one JSON object a line: ``{"t", "dir", "frame"}`` with ``open``
first, the subscribe requests (``out``) and their answers, every book's snapshot, then the stream:
book changes (``prev_change_id`` continuous), tickers, futures quotes and index prices for every
instrument of both currencies. The same seed, start and settings give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import IO, Any

from simulator import frames
from simulator.exchange import Exchange
from simulator.settings import SimSettings

# Per-instrument updates per second in a generated log: 3 minutes of the full chain stay ~50 MB.
GENERATE_UPDATES_PER_S = 0.15
SUBSCRIBE_BATCH = 500


def _line(out: IO[str], t: float, direction: str, frame: bytes | None = None) -> None:
    rec: dict[str, Any] = {"t": round(t, 6), "dir": direction}
    if frame is not None:
        rec["frame"] = frame.decode()
    out.write(json.dumps(rec, separators=(", ", ": ")))
    out.write("\n")


def channels_for(ex: Exchange) -> list[str]:
    """The full chain: every book and ticker, futures quotes, indices and instrument states."""
    chans: list[str] = []
    for name, spec in ex.instruments.items():
        chans.append(f"book.{name}.100ms")
        chans.append(f"ticker.{name}.100ms")
        if not spec.is_option:
            chans.append(f"quote.{name}")
    for cur in ex.settings.currencies:
        chans.append(f"deribit_price_index.{cur.lower()}_usd")
    chans.append("instrument.state.any.any")
    return chans


def generate_wire_log(
    path: str | Path,
    minutes: float,
    seed: int = 1,
    start: float | None = None,
    settings: SimSettings | None = None,
    updates_per_s: float | None = None,
) -> dict[str, Any]:
    """Write ``minutes`` of simulated market data to ``path``; returns counts for the caller to print.

    ``start`` is the virtual clock's first second (default: now, floored to the minute);
    ``updates_per_s`` is each instrument's book/ticker update rate (default 0.15: a small log).
    """
    base = settings or SimSettings()
    rate = updates_per_s if updates_per_s is not None else GENERATE_UPDATES_PER_S
    st = dataclasses.replace(base, updates_per_s=rate)
    t = float(start) if start is not None else float(int(time.time()) // 60 * 60)
    ex = Exchange(seed, st, t)
    counts = {"frames": 0, "book": 0, "ticker": 0, "quote": 0, "index": 0, "state": 0}
    with open(path, "w", encoding="utf-8") as out:
        _line(out, t, "open")
        chans = channels_for(ex)
        us = int(t * 1e6)
        req_id = 1
        for i in range(0, len(chans), SUBSCRIBE_BATCH):
            batch = chans[i : i + SUBSCRIBE_BATCH]
            req = {
                "jsonrpc": "2.0",
                "id": req_id,
                "method": "public/subscribe",
                "params": {"channels": batch},
            }
            _line(out, t, "out", frames.encode(req))
            t += 0.05
            _line(out, t, "in", frames.result(req_id, batch, us, us + 500, st.testnet))
            req_id += 1
        ex.now_s = t
        subscribed: set[str] = set()
        sent_change: dict[str, int] = {}

        def snapshot(name: str) -> None:
            book = ex.books[name]
            bids, asks = book.snapshot()
            data = frames.book_snapshot(name, book.change_id, bids, asks, ex.now_ms)
            _line(out, t, "in", frames.notification_raw(f"book.{name}.100ms".encode(), data))
            _line(out, t, "in", frames.notification(f"ticker.{name}.100ms", ex.ticker(name)))
            counts["book"] += 1
            counts["ticker"] += 1
            subscribed.add(name)
            sent_change[name] = book.change_id

        for name in ex.books:
            snapshot(name)
        end = t + minutes * 60.0
        step = st.step_s
        while t < end:
            t = round(t + step, 6)
            ex.step(t)
            events, ex.events = ex.events, []
            for ev in events:
                kind = ev[0]
                if kind in ("book", "ticker") and ev[1] not in subscribed:
                    continue
                if kind == "book":
                    _, name, prev, cid, bids, asks, ts = ev
                    if cid <= sent_change[name]:
                        continue  # already inside a snapshot taken later in this step
                    sent_change[name] = cid
                    data = frames.book_change(name, prev, cid, bids, asks, ts)
                    _line(out, t, "in", frames.notification_raw(f"book.{name}.100ms".encode(), data))
                    counts["book"] += 1
                elif kind == "ticker":
                    name = ev[1]
                    _line(out, t, "in", frames.notification(f"ticker.{name}.100ms", ex.ticker(name)))
                    counts["ticker"] += 1
                    if not ex.instruments[name].is_option:
                        _line(out, t, "in", frames.notification(f"quote.{name}", ex.quote(name)))
                        counts["quote"] += 1
                elif kind == "ticker_closed" and ev[1] in subscribed:
                    # The expiring instrument's last ticker ("state": "closed", its delivery price).
                    _line(out, t, "in", frames.notification(f"ticker.{ev[1]}.100ms", ev[2]))
                    counts["ticker"] += 1
                elif kind == "index":
                    cur = ev[1]
                    data_i = {
                        "timestamp": ex.now_ms,
                        "price": ex.index_price(cur),
                        "index_name": f"{cur.lower()}_usd",
                    }
                    _line(out, t, "in", frames.notification(f"deribit_price_index.{cur.lower()}_usd", data_i))
                    counts["index"] += 1
                elif kind == "state":
                    _, spec, state, ts = ev
                    data_s = {"timestamp": ts, "state": state, "instrument_name": spec.name}
                    _line(out, t, "in", frames.notification("instrument.state.any.any", data_s))
                    counts["state"] += 1
                    if state == "started" and spec.name in ex.books:
                        # What a client does on a new listing: subscribe it, then read its snapshot.
                        new = [f"book.{spec.name}.100ms", f"ticker.{spec.name}.100ms"]
                        if not spec.is_option:
                            new.append(f"quote.{spec.name}")
                        req = {
                            "jsonrpc": "2.0",
                            "id": req_id,
                            "method": "public/subscribe",
                            "params": {"channels": new},
                        }
                        _line(out, t, "out", frames.encode(req))
                        us = int(t * 1e6)
                        _line(out, t, "in", frames.result(req_id, new, us, us + 300, st.testnet))
                        req_id += 1
                        snapshot(spec.name)
        _line(out, t, "close")
    counts["frames"] = counts["book"] + counts["ticker"] + counts["quote"] + counts["index"] + counts["state"]
    counts["instruments"] = len(ex.instruments)
    return counts
