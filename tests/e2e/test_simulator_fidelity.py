"""Fidelity: the simulator's frames look like Deribit's (the real capture) and the codec reads them all."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
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


def compare(real: Shapes, kind: str, frame: dict[str, Any]) -> list[str]:
    problems = []
    for p, t in paths(frame):
        want = real.types.get((kind, p))
        if want is None:
            problems.append(f"{kind}{p}: not in the capture")
        elif t not in want:
            problems.append(f"{kind}{p}: {t}, capture has {sorted(want)}")
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
            problems += compare(real, f"instrument.{inst['kind']}.{cur}", inst)
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
