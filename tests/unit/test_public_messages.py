"""Real Deribit messages from public sources (tests/fixtures/public, see its SOURCES.md), each decoded
with the desk's codec and compared field by field with the JSON it came from: every field of the typed
result (nested structs and tuples too) equals the JSON value (``"expired"``, ``null`` and all), every
field the JSON lacks keeps its default, and the keys the types do not declare are listed (counted,
allowed). :func:`corpus_report` gives the numbers for the issue's closing note.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from deribit.channels import channel_prefix
from deribit.codec import (
    FrameDecoder,
    Notification,
    RpcError,
    RpcResponse,
    decode_account_summary,
    decode_open_orders,
    decode_order_result,
    decode_positions,
    decode_settlement_history,
    decode_subscribed,
)
from deribit.instruments import decode_instrument_list
from messages.market import OptionMarks
from tests.support.public_messages import NOTIFICATION_KINDS, PublicMessage, public_kinds, public_messages

#: Answers: how each kind's ``result`` is decoded, to the value compared with it.
RESULT_KINDS = {
    "get_instruments", "get_positions", "get_open_orders", "get_account_summary", "order_result",
    "cancel_result", "settlement_history", "subscribe_result",
}
_RATE_LIMIT = {"rate", "burst"}


@dataclass
class Comparison:
    """What comparing one decoded message with its JSON found."""

    mismatches: list[str] = field(default_factory=list)
    undeclared: Counter[str] = field(default_factory=Counter)
    fields: int = 0
    envelope_checked: bool = True

    def same(self, decoded: Any, raw: Any, path: str) -> None:
        if isinstance(raw, dict):
            if not isinstance(decoded, msgspec.Struct):
                self.mismatches.append(f"{path}: {decoded!r} is not a struct")
                return
            config = decoded.__struct_config__
            by_wire_name = dict(zip(decoded.__struct_encode_fields__, decoded.__struct_fields__, strict=True))
            for key, value in raw.items():
                if key == config.tag_field:
                    self.fields += 1
                    if value != config.tag:
                        self.mismatches.append(f"{path}.{key}: tag {config.tag!r} != {value!r}")
                elif key in by_wire_name:
                    self.same(getattr(decoded, by_wire_name[key]), value, f"{path}.{key}")
                else:
                    self.undeclared[f"{type(decoded).__name__}.{key}"] += 1
            for struct_field in msgspec.structs.fields(decoded):
                if struct_field.encode_name not in raw:
                    if struct_field.required:
                        self.mismatches.append(f"{path}.{struct_field.name}: required but absent")
                    elif getattr(decoded, struct_field.name) != struct_field.default:
                        self.mismatches.append(f"{path}.{struct_field.name}: absent but not the default")
        elif isinstance(raw, list):
            if not isinstance(decoded, tuple) or len(decoded) != len(raw):
                self.mismatches.append(f"{path}: {decoded!r} is not a tuple of {len(raw)}")
                return
            for index, (item, raw_item) in enumerate(zip(decoded, raw, strict=True)):
                self.same(item, raw_item, f"{path}[{index}]")
        else:
            self.fields += 1
            same_type = type(decoded) is type(raw) or {type(decoded), type(raw)} == {int, float}
            if decoded != raw or not same_type:
                self.mismatches.append(f"{path}: {decoded!r} != {raw!r}")


def _expected_limits(raw: dict[str, Any]) -> dict[str, Any]:
    """The account's limits as the desk keeps them, read off the JSON by hand: an engine's limit is
    its own ``{rate, burst}`` or (nested shape) its ``trading.total``."""
    out: dict[str, Any] = {"limits_per_currency": raw.get("limits_per_currency", False)}
    for name in ("matching_engine", "non_matching_engine"):
        value = raw.get(name)
        if isinstance(value, dict) and not value.keys() >= _RATE_LIMIT:
            value = value["trading"]["total"]
        out[name] = None if value is None else {"rate": value["rate"], "burst": value["burst"]}
    return out


def compare(message: PublicMessage) -> Comparison:
    """Decode ``message`` as the desk does and compare it with its JSON."""
    result = Comparison()
    frame = message.frame
    decoded = FrameDecoder().decode(message.text) if isinstance(frame.get("id", 0), int) else None
    if message.kind in NOTIFICATION_KINDS:
        assert isinstance(decoded, Notification), f"{message.name}: {decoded!r}"
        params = frame["params"]
        result.same(decoded.channel, params["channel"], "$.params.channel")
        if decoded.defects:
            result.mismatches.extend(f"entry left out: {d}" for d in decoded.defects)
        data = params["data"]
        if channel_prefix(decoded.channel) == "markprice.options":
            (marks,) = decoded.messages
            assert isinstance(marks, OptionMarks)
            result.same(marks.index_name, params["channel"].rpartition(".")[2], "$.params.channel(index)")
            result.same(marks.marks, data, "$.params.data")
        elif isinstance(data, list):
            result.same(decoded.messages, data, "$.params.data")
        else:
            result.same(decoded.messages, [data], "$.params.data")
        return result
    if message.kind == "error":
        if decoded is None:  # a client's string id: the error as the desk's envelope reads it
            result.envelope_checked = False
            decoded = FrameDecoder().decode(json.dumps({"jsonrpc": "2.0", "id": None, "error": frame["error"]}))
        else:
            result.same(decoded.id, frame["id"], "$.id")
        assert isinstance(decoded, RpcError), f"{message.name}: {decoded!r}"
        result.same(decoded.code, frame["error"]["code"], "$.error.code")
        result.same(decoded.message, frame["error"]["message"], "$.error.message")
        result.fields += 1  # data: any JSON, kept as its text
        if (json.loads(decoded.data) if decoded.data else None) != frame["error"].get("data"):
            result.mismatches.append(f"$.error.data: {decoded.data!r} != {frame['error'].get('data')!r}")
        return result
    assert message.kind in RESULT_KINDS, f"{message.name}: no rule for kind {message.kind!r}"
    if decoded is None:
        result.envelope_checked = False
    else:
        assert isinstance(decoded, RpcResponse), f"{message.name}: {decoded!r}"
        result.same(decoded.id, frame["id"], "$.id")
        for key, name in (("usIn", "us_in"), ("usOut", "us_out"), ("usDiff", "us_diff"), ("testnet", "testnet")):
            if key in frame:
                result.same(getattr(decoded, name), frame[key], f"$.{key}")
        if json.loads(decoded.result_text) != frame["result"]:
            result.mismatches.append("$.result: the raw result kept is not the one sent")
    _compare_result(message.kind, json.dumps(frame["result"]), frame["result"], result)
    return result


def _compare_result(kind: str, text: str, raw: Any, result: Comparison) -> None:
    path = "$.result"
    match kind:
        case "get_instruments":
            instruments, instrument_defects = decode_instrument_list(text)
            result.mismatches.extend(f"entry left out: {d}" for d in instrument_defects)
            result.same(instruments, raw, path)
        case "get_positions" | "get_open_orders":
            decode = decode_positions if kind == "get_positions" else decode_open_orders
            items, defects = decode(text)
            result.mismatches.extend(f"entry left out: {d}" for d in defects)
            result.same(items, raw, path)
        case "get_account_summary":
            summary, defects = decode_account_summary(text)
            result.mismatches.extend(f"limits: {d}" for d in defects)
            # The limits are compared below, in the desk's shape; the rest field by field.
            rest = {key: value for key, value in raw.items() if key != "limits"}
            result.same(msgspec.structs.replace(summary, limits=None), rest, path)
            if "limits" in raw:
                result.same(summary.limits, _expected_limits(raw["limits"]), f"{path}.limits")
                result.undeclared["AccountSummary.limits(shape)"] += 1
        case "order_result" | "cancel_result":
            order, trades = decode_order_result(text)
            if "order" in raw:
                result.same(order, raw["order"], f"{path}.order")
                result.same(trades, raw.get("trades", []), f"{path}.trades")
            else:
                result.same(order, raw, path)
                result.same(trades, [], f"{path}(no trades)")
        case "settlement_history":
            history, defects = decode_settlement_history(text)
            result.mismatches.extend(f"entry left out: {d}" for d in defects)
            result.same(history.settlements, raw["settlements"], f"{path}.settlements")
            result.same(history.continuation, raw.get("continuation"), f"{path}.continuation")
        case "subscribe_result":
            result.same(decode_subscribed(text), raw, path)


def corpus_report() -> dict[str, Any]:
    """How many kinds and messages the corpus holds, how many agree field by field, how many fields
    were compared, and which JSON keys the types do not declare (with counts)."""
    messages = public_messages()
    comparisons = {m.name: compare(m) for m in messages}
    undeclared: Counter[str] = Counter()
    for comparison in comparisons.values():
        undeclared.update(comparison.undeclared)
    agreeing = [name for name, c in comparisons.items() if not c.mismatches]
    return {
        "kinds": len(public_kinds()),
        "messages": len(messages),
        "agree": len(agreeing),
        "fields_compared": sum(c.fields for c in comparisons.values()),
        "envelope_not_checked": sorted(n for n, c in comparisons.items() if not c.envelope_checked),
        "disagree": {n: c.mismatches for n, c in comparisons.items() if c.mismatches},
        "undeclared_keys": dict(sorted(undeclared.items())),
    }


# --- the tests ------------------------------------------------------------------------------------


def test_the_corpus_covers_every_kind_the_desk_reads() -> None:
    kinds = set(public_kinds())
    wanted = (set(NOTIFICATION_KINDS) - {"ticker_future"}) | RESULT_KINDS | {"error"}
    assert wanted <= kinds, f"kinds without a real message: {sorted(wanted - kinds)}"
    for message in public_messages():
        assert message.source and message.frame.get("jsonrpc") == "2.0", message.name


@pytest.mark.parametrize("message", public_messages(), ids=lambda m: m.name)
def test_every_field_equals_the_json_it_came_from(message: PublicMessage) -> None:
    comparison = compare(message)
    assert comparison.mismatches == [], f"{message.name} ({message.source})"
    assert comparison.fields > 0


def test_corpus_report_all_agree() -> None:
    report = corpus_report()
    summary = (f"{report['kinds']} kinds, {report['messages']} messages, {report['agree']} agree field by field "
               f"({report['fields_compared']} fields); undeclared keys: {report['undeclared_keys']}")
    print(summary)
    assert report["agree"] == report["messages"], summary + f"; disagree: {report['disagree']}"


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("ticker_expired", lambda m: m.estimated_delivery_price == "expired"),
        ("get_positions", lambda m: isinstance(m.leverage, float)),
    ],
)
def test_the_messages_issue_16_names_decode_as_deribit_means_them(kind: str, check: Any) -> None:
    decoder = FrameDecoder()
    for message in public_messages(kind):
        if "params" in message.frame:
            decoded = decoder.decode(message.text)
            assert isinstance(decoded, Notification)
            assert all(check(m) for m in decoded.messages), message.name
        else:
            positions, _ = decode_positions(json.dumps(message.frame["result"]))
            assert all(check(p) for p in positions), message.name
