"""The market feed's hot path: frames through decode and the BookKeepers' apply.

A simulator-generated wire log of the full BTC and ETH chain (every option book and ticker,
futures books, quotes and tickers, index prices) is written once (cached in the temp directory,
generated in a subprocess so that the simulator's memory is not counted), its incoming frames
extracted one per line. Then, in the same run, best of several passes each:

- ``frames_per_s``: ``deribit.codec.FrameDecoder`` and the owning family's
  ``desk.book_family.BookFamily`` (L2 apply, top of book, tickers), as one BookKeeper runs it;
- ``all_keepers_frames_per_s``: the same, but every message offered to all four families, as
  the bus does (each keeper ignores other families' instruments with one lookup);
- ``reference_frames_per_s``: ``json.loads`` and a plain dict-of-levels book whose best bid and
  ask are ``max``/``min`` over the levels after each update (the seed program's way);
- ``rss_mb``: the process's resident memory with the whole chain loaded in the four families;
- ``bus_frames_per_s`` / ``bus_owner_frames_per_s`` (unless ``--no-actors``): decoded messages
  published through the real bus into four BookKeeper actors as the program runs them (keyed by
  family, handled immediately in the publishing thread), against a plain ``tell`` to the owning
  keeper's own thread (a queue and a thread switch per message).

``python -m bench feed [--frames 200000] [--passes 3] [--no-actors] [--json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from deribit.codec import FrameDecoder, Notification
from deribit.instruments import InstrumentNameError, parse_instrument_name
from desk.book_family import BookFamily
from messages.base import Message
from messages.market import BookChange, BookSnapshot, IndexPrice, Quote, Ticker

CURRENCIES = ("BTC", "ETH")
KINDS: tuple[Literal["option", "future"], ...] = ("option", "future")
#: Per-instrument update rate of the generated log: about 2,600 frames per simulated second.
UPDATES_PER_S = 1.0
START = 1_795_168_800.0  # a fixed Friday 10:00 UTC: the same log every run


def _generate(path: str, minutes: float) -> None:
    from simulator.generate import generate_wire_log

    generate_wire_log(path, minutes, seed=1, start=START, updates_per_s=UPDATES_PER_S)


def frames_file(frames: int) -> Path:
    """A file of at least ``frames`` incoming frames, one per line (made once, then cached)."""
    minutes = max(0.5, frames / 2_400 / 60)
    cache = Path(tempfile.gettempdir()) / "deribit-desk-bench"
    cache.mkdir(exist_ok=True)
    out = cache / f"feed-{minutes:.2f}min.frames"
    if out.exists():
        return out
    log = cache / f"feed-{minutes:.2f}min.jsonl"
    started = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=_generate, args=(str(log), minutes))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"generating the wire log failed (exit code {process.exitcode})")
    tmp = out.with_suffix(".tmp")
    with open(log, encoding="utf-8") as source, open(tmp, "w", encoding="utf-8") as target:
        for line in source:
            record = json.loads(line)
            if record.get("dir") == "in" and record.get("frame"):
                target.write(record["frame"])
                target.write("\n")
    tmp.rename(out)
    log.unlink()
    print(f"generated {minutes:.2f} simulated minutes in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def read_frames(path: Path, limit: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for count, line in enumerate(f):
            if count >= limit:
                return
            yield line


# -- the desk's path --------------------------------------------------------------------------------


def new_families() -> dict[tuple[str, str], BookFamily]:
    return {(c, k): BookFamily(c, k, publish_top=k == "future") for c in CURRENCIES for k in KINDS}


def owner_finder(families: dict[tuple[str, str], BookFamily]) -> Callable[[str], BookFamily | None]:
    owners: dict[str, BookFamily | None] = {}

    def owner(name: str) -> BookFamily | None:
        found = owners.get(name, False)
        if found is False:
            try:
                parsed = parse_instrument_name(name)
                kind = "option" if parsed.kind == "option" else "future"
                found = families.get((parsed.currency, kind))
            except InstrumentNameError:
                found = None
            owners[name] = found
        return found  # type: ignore[return-value]

    return owner


def desk_pass(path: Path, limit: int, every_family: bool) -> tuple[int, float, dict[tuple[str, str], BookFamily]]:
    """Decode every frame and apply it to the owning family (or offer it to every family)."""
    decoder = FrameDecoder()
    families = new_families()
    owner = owner_finder(families)
    everyone = tuple(families.values())
    now = START
    frames = 0
    started = time.perf_counter()
    for frame in read_frames(path, limit):
        frames += 1
        decoded = decoder.decode(frame)
        if decoded.__class__ is not Notification:
            continue
        message: Any  # dispatched on its exact class below, as the keepers do (no isinstance per message)
        for message in decoded.messages:
            cls = message.__class__
            if cls is IndexPrice:
                for family in everyone:
                    family.on_index(message)
                continue
            targets = everyone if every_family else (owner(message.instrument_name),)
            for target in targets:
                if target is None:
                    continue
                if cls is BookChange:
                    target.on_change(message, now)
                elif cls is Ticker:
                    target.on_ticker(message, now)
                elif cls is BookSnapshot:
                    target.on_snapshot(message, now)
                elif cls is Quote:
                    target.on_quote(message, now)
    return frames, time.perf_counter() - started, families


# -- the seed's way -----------------------------------------------------------------------------------


def reference_pass(path: Path, limit: int) -> tuple[int, float, dict[str, Any]]:
    """``json.loads`` and dict books, best bid/ask by max/min after every update."""
    books: dict[str, dict[str, Any]] = {}
    tickers: dict[str, Any] = {}
    tops: dict[str, tuple[Any, Any]] = {}
    frames = 0
    started = time.perf_counter()
    for frame in read_frames(path, limit):
        frames += 1
        message = json.loads(frame)
        params = message.get("params")
        if params is None:
            continue
        channel: str = params["channel"]
        data = params["data"]
        if channel.startswith("book."):
            name = data["instrument_name"]
            book = books.get(name)
            if data.get("type") == "snapshot" or book is None:
                book = books[name] = {"bids": {}, "asks": {}, "change_id": data["change_id"], "stale": False}
                for side in ("bids", "asks"):
                    book[side] = {price: amount for _action, price, amount in data[side]}
            elif data["prev_change_id"] != book["change_id"]:
                book["stale"] = True
                continue
            else:
                for side in ("bids", "asks"):
                    levels = book[side]
                    for action, price, amount in data[side]:
                        if action == "delete":
                            levels.pop(price, None)
                        else:
                            levels[price] = amount
                book["change_id"] = data["change_id"]
            bids, asks = book["bids"], book["asks"]
            tops[name] = (max(bids) if bids else None, min(asks) if asks else None)
        elif channel.startswith("ticker."):
            tickers[data["instrument_name"]] = data
        elif channel.startswith("quote."):
            tops[data["instrument_name"]] = (data.get("best_bid_price"), data.get("best_ask_price"))
    return frames, time.perf_counter() - started, books


# -- through the bus into actors ------------------------------------------------------------------------


def bus_pass(path: Path, limit: int, owner_only: bool) -> tuple[int, float]:
    """Decoded messages into four BookKeeper actors through the real bus (or a tell, queued, to
    the owning keeper only); timed until every keeper handled everything."""
    import pykka

    from actors.bookkeeper import BookKeeper, GetBookStats
    from config.settings import load_settings
    from runtime.actor import ActorContext
    from runtime.bus import Bus
    from runtime.clock import ReplayClock

    settings = load_settings(environ={}, cwd=Path(tempfile.gettempdir()))
    decoded_messages: list[Message] = []
    decoder = FrameDecoder()
    frames = 0
    for frame in read_frames(path, limit):
        frames += 1
        decoded = decoder.decode(frame)
        if decoded.__class__ is Notification:
            decoded_messages.extend(decoded.messages)
    bus = Bus()
    clock = ReplayClock(START)
    refs = {}
    for currency in CURRENCIES:
        for kind in KINDS:
            name = f"books-{currency}-{kind}"
            context = ActorContext(name=name, clock=clock, settings=settings, publish=lambda _m: None)
            ref = BookKeeper.start(context, currency=currency, kind=kind)
            bus.register(name, ref, BookKeeper.subscriptions())
            refs[(currency, kind)] = ref
    try:
        owners: dict[str, Any] = {}
        started = time.perf_counter()
        if owner_only:
            for message in decoded_messages:
                instrument = getattr(message, "instrument_name", None)
                if instrument is None:
                    continue
                keeper = owners.get(instrument)
                if keeper is None:
                    family: Literal["option", "future"] = "option" if instrument.count("-") == 3 else "future"
                    keeper = owners[instrument] = refs[(instrument.split("-", 1)[0], family)]
                keeper.tell(message)
        else:
            publish = bus.publish
            for message in decoded_messages:
                publish(message)
        for ref in refs.values():
            ref.ask(GetBookStats(), timeout=600)
        return frames, time.perf_counter() - started
    finally:
        for ref in refs.values():
            ref.stop()
        pykka.ActorRegistry.stop_all()


# -- the run --------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _best(run: Callable[[], tuple[int, float, Any]], passes: int) -> tuple[float, Any]:
    best_rate, kept = 0.0, None
    for _ in range(passes):
        kept = None
        gc.collect()
        frames, seconds, kept = run()
        best_rate = max(best_rate, frames / seconds)
    return best_rate, kept


def run(args: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench feed", description=__doc__)
    parser.add_argument("--frames", type=int, default=200_000, help="frames per pass (at least 200,000 by default)")
    parser.add_argument("--passes", type=int, default=3, help="passes per path; the fastest counts")
    parser.add_argument("--no-actors", action="store_true", help="skip the bus/actor measurement")
    options = parser.parse_args(args)
    if options.frames < 1 or options.passes < 1:
        parser.error("--frames and --passes must be positive")

    path = frames_file(options.frames)
    base_mb = rss_mb()
    desk_rate, families = _best(lambda: desk_pass(path, options.frames, every_family=False), options.passes)
    frames = sum(1 for _ in read_frames(path, options.frames))
    if frames < options.frames:
        raise SystemExit(f"{path} holds {frames} frames, fewer than --frames {options.frames}: delete it to "
                         "have a longer log generated")
    loaded_mb = rss_mb()
    books = sum(len(f.books()) for f in families.values())
    instruments = sum(len(f.entries) for f in families.values())
    gaps = sum(f.stats.gaps for f in families.values())
    print(f"desk:      {desk_rate:,.0f} frames/s ({instruments} instruments, {books} books, "
          f"{loaded_mb:.0f} MB resident)", file=sys.stderr)
    del families
    all_rate, _ = _best(lambda: desk_pass(path, options.frames, every_family=True), options.passes)
    print(f"all four:  {all_rate:,.0f} frames/s", file=sys.stderr)
    reference_rate, _ = _best(lambda: reference_pass(path, options.frames), options.passes)
    print(f"reference: {reference_rate:,.0f} frames/s", file=sys.stderr)
    result: dict[str, Any] = {
        "frames": frames,
        "instruments": instruments,
        "books": books,
        "gaps": gaps,
        "frames_per_s": round(desk_rate),
        "all_keepers_frames_per_s": round(all_rate),
        "reference_frames_per_s": round(reference_rate),
        "ratio": round(desk_rate / reference_rate, 3),
        "rss_mb": round(loaded_mb, 1),
        "rss_before_load_mb": round(base_mb, 1),
        "passes": options.passes,
    }
    if not options.no_actors:
        bus_rate, _ = _best(lambda: (*bus_pass(path, options.frames, owner_only=False), None), 1)
        owner_rate, _ = _best(lambda: (*bus_pass(path, options.frames, owner_only=True), None), 1)
        print(f"bus to 4 keepers: {bus_rate:,.0f} frames/s; owner only: {owner_rate:,.0f}", file=sys.stderr)
        result["bus_frames_per_s"] = round(bus_rate)
        result["bus_owner_frames_per_s"] = round(owner_rate)
    return result
