"""Fidelity: the simulator's frames look like Deribit's (the real capture) and the codec reads them all."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deribit.codec import (
    FrameDecoder,
    Notification,
    RpcResponse,
    UnknownChannel,
    decode_account_summary,
    decode_auth_result,
    decode_open_orders,
    decode_order_result,
    decode_positions,
    decode_subscribed,
)
from deribit.instruments import decode_instruments
from simulator import SimSettings, Simulator, generate_wire_log
from simulator.client import RpcClient
from simulator.listing import expiry_ms
from simulator.market import black76_usd
from tests.support.capture import instruments_path, wire_lines
from tests.support.public_messages import CORPUS_KINDS, public_messages


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list):
        return "list"
    return "object"


def paths(v: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, JSON type) of every value; list items share the path ``[]``."""
    yield prefix, jtype(v)
    if isinstance(v, dict):
        for k, x in v.items():
            yield from paths(x, f"{prefix}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            # Book entries are [action, price, amount]: keep positions apart.
            yield from paths(x, f"{prefix}[{i}]" if prefix.endswith("]") else f"{prefix}[]")


def keysets(v: Any, prefix: str = "") -> Iterator[tuple[str, frozenset[str]]]:
    if isinstance(v, dict):
        yield prefix, frozenset(v)
        for k, x in v.items():
            yield from keysets(x, f"{prefix}.{k}")
    elif isinstance(v, list):
        for x in v:
            yield from keysets(x, f"{prefix}[]")


def kind_of(frame: dict[str, Any]) -> str:
    if frame.get("method") == "subscription":
        data = frame["params"]["data"]
        head = frame["params"]["channel"].split(".")[0]
        return f"{head}.{data['type']}" if head == "book" else head
    return "response"


class Shapes:
    def __init__(self) -> None:
        self.types: dict[tuple[str, str], set[str]] = {}
        self.keys: dict[tuple[str, str], set[frozenset[str]]] = {}

    def add(self, kind: str, frame: dict[str, Any]) -> None:
        for p, t in paths(frame):
            self.types.setdefault((kind, p), set()).add(t)
        for p, ks in keysets(frame):
            self.keys.setdefault((kind, p), set()).add(ks)


def fixture_shapes() -> Shapes:
    shapes = Shapes()
    for line in wire_lines():
        rec = json.loads(line)
        if rec["dir"] == "in":
            frame = json.loads(rec["frame"])
            shapes.add(kind_of(frame), frame)
    for cur in ("BTC", "ETH"):
        resp = json.loads(instruments_path(cur).read_text())
        for inst in resp["result"]:
            shapes.add(f"instrument.{inst['kind']}.{cur}", inst)
    return shapes


# get_instruments fields Deribit has added since the 2021 capture (present in today's answers, e.g.
# BTC_USDC-PERPETUAL's in kostic/gec): checked against the public corpus, not against 2021.
MODERN_INSTRUMENT_FIELDS = frozenset(
    {
        "price_index",
        "rfq",
        "instrument_type",
        "instrument_id",
        "tick_size_steps",
        "settlement_currency",
        "counter_currency",
        "state",
        "future_type",
        "block_trade_min_trade_amount",
        "block_trade_tick_size",
    }
)


def compare(real: Shapes, kind: str, frame: dict[str, Any], modern: frozenset[str] = frozenset()) -> list[str]:
    problems = []
    for p, t in paths(frame):
        want = real.types.get((kind, p))
        if want is None:
            if p.lstrip(".").split(".")[0].split("[")[0] not in modern:
                problems.append(f"{kind}{p}: not in the capture")
        elif t not in want:
            problems.append(f"{kind}{p}: {t}, capture has {sorted(want)}")
    if modern:
        return problems
    for p, ks in keysets(frame):
        want_keys = real.keys.get((kind, p))
        if want_keys is not None and ks not in want_keys:
            problems.append(f"{kind}{p}: keys {sorted(ks)} not as in the capture {sorted(next(iter(want_keys)))}")
    return problems


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(5, SimSettings(chain="small", updates_per_s=20.0, step_s=0.05, public_trades_per_s=1.0))
    s.start_in_thread()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def session(sim: Simulator) -> Iterator[RpcClient]:
    """One connection that does everything the desk does; its frames are what the tests read."""
    c = RpcClient(sim.url)
    c.login()
    names = [
        i["instrument_name"] for cur in ("BTC", "ETH") for i in c.result("public/get_instruments", {"currency": cur})
    ]
    chans = [f"{k}.{n}.raw" for n in names for k in ("book", "ticker")] + [f"quote.{n}" for n in names]
    chans += [f"trades.{n}.100ms" for n in names]
    chans += ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd", "instrument.state.any.any"]
    chans += [
        "user.orders.any.any.raw",
        "user.trades.any.any.raw",
        "user.portfolio.btc",
        "user.orders.future.BTC.100ms",
    ]
    c.result("private/subscribe", {"channels": chans})
    perp = "BTC-PERPETUAL"
    bid = sim.book(perp)[0][0][0]
    rest = c.result("private/buy", {"instrument_name": perp, "amount": 50, "price": bid - 10.0, "label": "fid"})
    c.result("private/edit", {"order_id": rest["order"]["order_id"], "amount": 60, "price": bid - 5.0})
    c.result("private/buy", {"instrument_name": perp, "amount": 100, "type": "market"})
    opt = next(n for n in names if n.startswith("BTC") and n.endswith("-C"))
    c.result("private/buy", {"instrument_name": opt, "amount": 0.5, "type": "market"})
    c.result("private/cancel", {"order_id": rest["order"]["order_id"]})
    c.pump(1.5)
    yield c
    c.close()


def test_notifications_and_answers_match_the_capture(session: RpcClient) -> None:
    real = fixture_shapes()
    seen: set[str] = set()
    problems: list[str] = []
    for raw in session.frames:
        frame = json.loads(raw)
        kind = kind_of(frame)
        channel = frame.get("params", {}).get("channel", "")
        # The capture holds option tickers, raw books and a subscribe answer: compare like with like.
        if kind == "ticker" and channel.count("-") != 3:
            continue
        if kind == "response" and not (
            isinstance(frame.get("result"), list)
            and frame["result"]
            and all(isinstance(x, str) for x in frame["result"])
        ):
            continue
        if kind not in ("ticker", "book.snapshot", "book.change", "response"):
            continue
        seen.add(kind)
        problems += compare(real, kind, frame)
    assert seen == {"ticker", "book.snapshot", "book.change", "response"}
    assert not sorted(set(problems))[:20]


def test_get_instruments_matches_the_capture(session: RpcClient) -> None:
    real = fixture_shapes()
    problems: list[str] = []
    for cur in ("BTC", "ETH"):
        result = session.result("public/get_instruments", {"currency": cur})
        kinds = {i["kind"] for i in result}
        assert kinds == {"option", "future"}
        for inst in result:
            problems += compare(real, f"instrument.{inst['kind']}.{cur}", inst, MODERN_INSTRUMENT_FIELDS)
        assert decode_instruments(json.dumps(result))
    assert not problems[:20]


def test_codec_decodes_every_frame(session: RpcClient) -> None:
    decoder = FrameDecoder()
    channels: set[str] = set()
    for raw in session.frames:
        decoded = decoder.decode(raw)
        assert not isinstance(decoded, UnknownChannel), raw[:200]
        if isinstance(decoded, Notification):
            channels.add(
                decoded.channel.split(".")[0]
                + ("." + decoded.channel.split(".")[1] if decoded.channel.startswith("user") else "")
            )
    assert {
        "book",
        "ticker",
        "quote",
        "trades",
        "deribit_price_index",
        "user.orders",
        "user.trades",
        "user.portfolio",
    } <= channels


def test_codec_decodes_private_answers(sim: Simulator) -> None:
    c = RpcClient(sim.url)
    decoder = FrameDecoder()

    def answer(method: str, params: dict[str, Any]) -> RpcResponse:
        c.call(method, params)
        decoded = decoder.decode(c.frames[-1])
        assert isinstance(decoded, RpcResponse), c.frames[-1]
        return decoded

    auth = decode_auth_result(
        answer(
            "public/auth",
            {
                "grant_type": "client_credentials",
                "client_id": "desk",
                "client_secret": "desk-simulator-secret",
            },
        ).result
    )
    assert auth.access_token
    assert decode_subscribed(answer("public/subscribe", {"channels": ["deribit_price_index.btc_usd"]}).result)
    order, trades = decode_order_result(
        answer("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 20, "type": "market"}).result
    )
    assert order.order_state == "filled" and trades and trades[0].liquidity == "T"
    assert decode_positions(answer("private/get_positions", {"currency": "BTC"}).result)[0]
    summary, _ = decode_account_summary(answer("private/get_account_summary", {"currency": "BTC"}).result)
    assert summary.currency == "BTC"
    decode_open_orders(answer("private/get_open_orders_by_currency", {"currency": "BTC"}).result)
    c.close()


def test_generated_log_decodes_and_keeps_change_ids(tmp_path: Path) -> None:
    """A generated log crossing 08:00 UTC: zero codec errors, continuous change ids, state notices."""
    eight = expiry_ms(__import__("datetime").date(2026, 9, 22)) / 1000
    path = tmp_path / "gen.jsonl"
    counts = generate_wire_log(
        path, 0.5, seed=2, start=eight - 10, settings=SimSettings(chain="small"), updates_per_s=2.0
    )
    assert counts["state"] > 0 and counts["book"] > 0
    decoder = FrameDecoder()
    last: dict[str, int] = {}
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["dir"] == "open" and json.loads(lines[-1])["dir"] == "close"
    assert json.loads(lines[1])["dir"] == "out"
    ts = [json.loads(line)["t"] for line in lines]
    assert ts == sorted(ts)
    for line in lines:
        rec = json.loads(line)
        if rec["dir"] != "in":
            continue
        decoded = decoder.decode(rec["frame"])
        assert not isinstance(decoded, UnknownChannel)
        frame = json.loads(rec["frame"])
        if frame.get("method") == "subscription" and frame["params"]["channel"].startswith("book."):
            data = frame["params"]["data"]
            name = data["instrument_name"]
            if data["type"] == "change":
                assert data["prev_change_id"] == last[name], name
            last[name] = data["change_id"]


def test_tickers_follow_deribit_conventions(session: RpcClient) -> None:
    """Black-76 on underlying_price at mark_iv gives back mark_price (the design's oracle)."""
    checked = 0
    for raw in session.frames:
        frame = json.loads(raw)
        if frame.get("method") != "subscription" or not frame["params"]["channel"].startswith("ticker."):
            continue
        d = frame["params"]["data"]
        parts = d["instrument_name"].split("-")
        if len(parts) != 4:
            continue
        import numpy as np

        from deribit.instruments import parse_instrument_name

        meta = parse_instrument_name(d["instrument_name"])
        assert meta.expiry_ms is not None and meta.strike is not None
        t = (meta.expiry_ms - d["timestamp"]) / 1000 / (365 * 86400)
        f = d["underlying_price"]
        usd = black76_usd(
            np.array([f]),
            np.array([meta.strike]),
            np.array([t]),
            np.array([d["mark_iv"] / 100]),
            np.array([meta.option_type == "call"]),
        )[0]
        price = usd / f
        assert math.isclose(price, d["mark_price"], abs_tol=1e-4) or math.isclose(price, d["mark_price"], rel_tol=5e-4)
        # A bid has an IV unless it is at or below the option's intrinsic value, where none exists
        # (the simulator says 0): a deep in-the-money option hours before its expiry.
        intrinsic = max(f - meta.strike, 0.0) if meta.option_type == "call" else max(meta.strike - f, 0.0)
        if d["best_bid_price"] and d["best_bid_price"] > intrinsic / f + 1e-9:
            assert d["bid_iv"] > 0, (d["instrument_name"], d["best_bid_price"], intrinsic / f)
        checked += 1
    assert checked > 10


# --- the simulator against the public corpus of real Deribit messages (issue 16) -------------------

ANSWER_KINDS = {
    "public/get_instruments": "get_instruments",
    "private/get_positions": "get_positions",
    "private/get_open_orders_by_currency": "get_open_orders",
    "private/get_account_summary": "get_account_summary",
    "private/buy": "order_result",
    "private/sell": "order_result",
    "private/edit": "order_result",
    "private/cancel": "cancel_result",
    "private/get_settlement_history_by_currency": "settlement_history",
    "public/subscribe": "subscribe_result",
    "private/subscribe": "subscribe_result",
}
NOTIFICATION_KINDS = {
    "quote": "quote",
    "trades": "trades",
    "deribit_price_index": "price_index",
    "instrument": "instrument_state",
    "platform_state": "platform_state",
    "deribit_volatility_index": "volatility_index",
    "markprice": "markprice_options",
}
# The new channels the desk's codec reads since issue 16: each decodes to typed messages.
NEW_CHANNELS = ("user.changes", "platform_state", "deribit_volatility_index", "markprice.options")


def notification_kind(channel: str, data: Any) -> str:
    head = channel.split(".")[0]
    if head == "book":
        return f"book_{data['type']}"
    if head == "ticker":
        if data.get("state") == "closed":
            return "ticker_expired"
        name = data["instrument_name"]
        return (
            "ticker_option"
            if name.count("-") == 3
            else "ticker_perpetual"
            if name.endswith("PERPETUAL")
            else "ticker_future"
        )
    if head == "user":
        return f"user_{channel.split('.')[1]}"
    return NOTIFICATION_KINDS[head]


def payload(frame: dict[str, Any]) -> Any:
    """What a message of a kind carries: a notification's data, an answer's result or error (the
    JSON-RPC envelope is the same for every kind and checked against the capture above)."""
    params = frame.get("params")
    if isinstance(params, dict) and "data" in params:
        return params["data"]
    for key in ("result", "error", "data"):
        if key in frame:
            return frame[key]
    return frame


# Kinds whose data is one object on a raw channel and a list of them on an aggregated one: both
# are compared item by item.
ITEM_KINDS = frozenset({"user_orders"})


def shaped(kind: str, p: Any) -> Any:
    """The payload as compared: a list of items for :data:`ITEM_KINDS`."""
    return [p] if kind in ITEM_KINDS and isinstance(p, dict) else p


def kind_paths(v: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every value; a list's items share ``[]``, or ``[future]``/``[option]`` for
    entries that say their kind."""
    yield prefix, v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from kind_paths(x, f"{prefix}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            if prefix.endswith("]") and not isinstance(x, dict | list):
                label = f"[{i}]"  # book entries: [action, price, amount]
            elif isinstance(x, dict) and isinstance(x.get("kind"), str):
                label = f"[{x['kind']}]"
            else:
                label = "[]"
            yield from kind_paths(x, prefix + label)


class RealShapes:
    """What real messages of one kind carry: the JSON types seen at each path, and the keys every
    real object at a path has (Deribit always sends them)."""

    def __init__(self, kind: str, payloads: list[Any]) -> None:
        self.types: dict[str, set[str]] = {}
        self.always: dict[str, frozenset[str]] = {}
        for p in payloads:
            for path, v in kind_paths(shaped(kind, p)):
                self.types.setdefault(path, set()).add(json_type_name(jtype(v)))
                if isinstance(v, dict):
                    ks = frozenset(v)
                    self.always[path] = self.always[path] & ks if path in self.always else ks

    def problems(self, kind: str, sim: Any) -> list[str]:
        out = []
        for path, v in kind_paths(shaped(kind, sim)):
            if isinstance(v, dict) and not path.endswith("_map"):  # a map's keys are data (index names)
                missing = self.always.get(path, frozenset()) - frozenset(v)
                if missing:
                    out.append(f"{kind}{path}: missing {sorted(missing)} (every real message has them)")
            want = self.types.get(path)
            t = json_type_name(jtype(v))
            if t == "str" and v == "market_price" and path.endswith("price"):
                continue  # Deribit's price of an untriggered stop-market order (the corpus's cancel answer)
            if want is None or t == "null" or "null" in want:
                continue  # a key no real message shows, or one that is sometimes null
            if t not in want:
                out.append(f"{kind}{path}: {t}, real messages have {sorted(want)}")
        return out


def json_type_name(t: str) -> str:
    """JSON's own types: a number is a number, whether Deribit wrote 17391 or 17391.5."""
    return "number" if t in ("int", "float") else t


class SimFrames:
    """Every frame of one simulator session, by corpus kind, with the raw text it came as."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[dict[str, Any]]] = {}
        self.raw: list[tuple[str, str]] = []  # (kind, raw frame)

    def add(self, kind: str, raw: str) -> None:
        self.by_kind.setdefault(kind, []).append(json.loads(raw))
        self.raw.append((kind, raw))


@pytest.fixture(scope="module")
def corpus_session() -> Iterator[SimFrames]:
    """A session across 08:00 UTC on the simulator's clock that makes a frame of every kind:
    the whole chain and every private channel subscribed, orders placed, edited, cancelled and
    refused, an index locked and unlocked, an option and a future held through the settlement and
    the daily option's expiry."""
    now = [datetime(2026, 9, 21, 7, 59, 50, tzinfo=UTC).timestamp()]
    sim = Simulator(
        6, SimSettings(chain="small", updates_per_s=5.0, step_s=0.05, public_trades_per_s=0.5), clock=lambda: now[0]
    )
    sim.start_in_thread()
    c = RpcClient(sim.url)
    out = SimFrames()

    def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
        msg = c.call(method, params)
        out.add("error" if "error" in msg else ANSWER_KINDS.get(method, "other"), c.frames[-1])
        return msg

    def advance(seconds: float) -> None:
        for _ in range(int(seconds / 0.1)):
            now[0] += 0.1
            c.pump(0.02)

    try:
        c.login()
        names = [
            i["instrument_name"]
            for cur in ("BTC", "ETH", "USDC")
            for i in answer("public/get_instruments", {"currency": cur})["result"]
        ]
        chans = [f"{k}.{n}.raw" for n in names for k in ("book", "ticker")] + [f"quote.{n}" for n in names]
        chans += [f"trades.{n}.100ms" for n in names]
        chans += [
            "deribit_price_index.btc_usd",
            "deribit_volatility_index.btc_usd",
            "deribit_volatility_index.eth_usd",
            "markprice.options.btc_usd",
            "markprice.options.btc_usdc",
            "instrument.state.any.any",
            "platform_state",
            "user.orders.any.any.raw",
            "user.trades.any.any.raw",
            "user.changes.any.any.raw",
            "user.portfolio.btc",
            "user.portfolio.usdc",
        ]
        answer("private/subscribe", {"channels": chans})
        perp = "BTC-PERPETUAL"
        bid = sim.book(perp)[0][0][0]
        rest = answer("private/buy", {"instrument_name": perp, "amount": 50, "price": bid - 10.0, "label": "fid"})
        oid = rest["result"]["order"]["order_id"]
        answer("private/edit", {"order_id": oid, "amount": 60, "price": bid - 5.0})
        answer("private/buy", {"instrument_name": perp, "amount": 100, "type": "market"})
        answer("private/buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.01, "type": "market"})
        daily = min(
            (n for n in names if n.startswith("BTC-21SEP26-") and n.endswith("-C")),
            key=lambda n: abs(float(n.split("-")[2]) - sim.index("BTC")),
        )
        answer("private/buy", {"instrument_name": daily, "amount": 0.5, "type": "market"})
        # The real cancel answer in the corpus is of an untriggered stop-market order: cancel one of those
        # (its price reads "market_price"); the resting limit goes by its label.
        stop = answer("private/buy", {"instrument_name": perp, "amount": 10, "type": "stop_market",
                                      "trigger": "index_price", "trigger_price": round(sim.index("BTC") * 1.5)})
        answer("private/cancel", {"order_id": stop["result"]["order"]["order_id"]})
        answer("private/cancel_by_label", {"label": "fid"})
        assert oid
        answer("private/get_open_orders_by_currency", {"currency": "BTC"})
        sim.lock_index("eth_usd")
        answer("private/sell", {"instrument_name": "ETH-PERPETUAL", "amount": 1, "type": "market"})
        sim.lock_index("eth_usd", locked=False)
        advance(12.0)  # through 08:00: settlement, the daily expiry, new listings
        answer("private/get_positions", {"currency": "BTC"})
        answer("private/get_positions", {"currency": "USDC"})
        answer("private/get_account_summary", {"currency": "BTC", "extended": True})
        answer("private/get_settlement_history_by_currency", {"currency": "BTC"})
        c.pump(0.5)
        for raw in c.frames:
            frame = json.loads(raw)
            if frame.get("method") == "subscription":
                out.add(notification_kind(frame["params"]["channel"], frame["params"]["data"]), raw)
        yield out
    finally:
        c.close()
        sim.stop()


def test_the_simulator_serves_every_kind(corpus_session: SimFrames) -> None:
    assert sorted(set(CORPUS_KINDS) - set(corpus_session.by_kind)) == []


def test_every_frame_decodes_with_the_desk_codec(corpus_session: SimFrames) -> None:
    """Every notification decodes to typed messages (the new channels too); every answer with the
    desk's decoder of that answer."""
    decoder = FrameDecoder()
    new_seen: set[str] = set()
    for kind, raw in corpus_session.raw:
        decoded = decoder.decode(raw)
        assert not isinstance(decoded, UnknownChannel), raw[:200]
        if isinstance(decoded, Notification):
            assert decoded.messages, raw[:200]
            new_seen |= {ch for ch in NEW_CHANNELS if decoded.channel.startswith(ch)}
        elif kind == "get_positions":
            assert isinstance(decoded, RpcResponse)
            decode_positions(decoded.result)
        elif kind == "get_account_summary":
            assert isinstance(decoded, RpcResponse)
            decode_account_summary(decoded.result)
        elif kind == "get_open_orders":
            assert isinstance(decoded, RpcResponse)
            decode_open_orders(decoded.result)
        elif kind == "order_result":
            assert isinstance(decoded, RpcResponse)
            decode_order_result(decoded.result)
        elif kind == "subscribe_result":
            assert isinstance(decoded, RpcResponse)
            decode_subscribed(decoded.result)
        elif kind == "get_instruments":
            assert isinstance(decoded, RpcResponse)
            assert decode_instruments(bytes(decoded.result))
    assert new_seen == set(NEW_CHANNELS)


def public_corpus(kind: str) -> list[Any]:
    """The payloads of the real messages of ``kind`` (tests/fixtures/public/<kind>/)."""
    real = [payload(m.frame) for m in public_messages(kind)]
    if not real:
        pytest.skip(f"no real {kind} message in the public corpus yet")
    return real


@pytest.mark.parametrize("kind", CORPUS_KINDS)
def test_frames_match_real_messages(corpus_session: SimFrames, kind: str) -> None:
    """The simulator's frames of each kind against every real one: every key Deribit always
    sends is there, and each key carries the JSON type real messages carry, recursively."""
    shapes = RealShapes(kind, public_corpus(kind))
    sims = corpus_session.by_kind.get(kind, [])
    assert sims, f"the simulator sent no {kind}"
    problems: set[str] = set()
    for frame in sims:
        problems.update(shapes.problems(kind, payload(frame)))
    assert not sorted(problems)[:30]
