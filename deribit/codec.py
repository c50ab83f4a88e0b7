"""Deribit JSON-RPC frames in and out.

Decoding is two-stage msgspec: an envelope whose ``params.data`` (or ``result``) stays raw
bytes, then one prebuilt decoder per channel family that turns the data straight into message
types (``messages.market``, ``messages.account``). Nothing goes through dicts, which is what
makes this faster than ``json.loads``.

Lists (public and private trades, aggregated orders, ``user.changes``' lists, positions, open
orders, settlements, instruments) follow one rule, :func:`decode_entries`: the whole list in one
decode; only when that fails, entry by entry, each bad entry left out and named by an
:class:`EntryDefect` that the caller logs.

Encoding turns commands (``messages.commands``) and the Connection's own requests (auth,
heartbeat, subscribe, instruments, reconcile) into ``(method, params)`` and then into request
frames with increasing integer ids. :func:`redact_frame` strips secrets from frames before
anyone writes them down.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import msgspec

from deribit.channels import channel_prefix, is_private
from messages.account import (
    AccountLimits,
    AccountSummary,
    OrderUpdate,
    PortfolioUpdate,
    Position,
    RateLimit,
    Settlement,
    SettlementHistory,
    UserChanges,
    UserTrade,
)
from messages.base import Message
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    ExchangeCommand,
    PlaceOrder,
    check_command,
)
from messages.market import (
    BookChange,
    BookSnapshot,
    IndexPrice,
    InstrumentState,
    OptionMark,
    OptionMarks,
    PlatformState,
    Quote,
    Ticker,
    Trade,
    VolatilityIndex,
)
from runtime.secrets import SECRET_KEY_NAMES, register_secrets, scrub_text

#: Longest excerpt of a bad frame kept in a :class:`FrameError`.
EXCERPT_CHARS = 200
#: Deribit refuses heartbeat intervals below this many seconds.
MIN_HEARTBEAT_INTERVAL_S = 10
#: Methods whose result is an order (cancel) or ``{"order": ..., "trades": [...]}``.
ORDER_METHODS: frozenset[str] = frozenset({"private/buy", "private/sell", "private/edit", "private/cancel"})

_NO_DATA = msgspec.Raw(b"")


# --- what a frame decodes to -----------------------------------------------------------------


class FrameError(ValueError):
    """A frame that is not valid JSON or not the shape Deribit sends. ``excerpt`` is at most
    :data:`EXCERPT_CHARS` characters of the frame, with secrets redacted."""

    def __init__(self, reason: str, frame: bytes | str) -> None:
        self.reason = reason
        self.excerpt = excerpt(frame)
        super().__init__(f"{reason}; frame: {self.excerpt}")


class EntryDefect(msgspec.Struct, frozen=True, kw_only=True):
    """Why one entry of a list Deribit sent was skipped: where it was (``where``: the channel or
    method and the entry's index, e.g. ``trades.BTC-PERPETUAL.100ms[3]``), what it was about
    (``name``: its instrument and its order or trade id, as far as it says), the field, its value as received
    (JSON text, cut to 80 characters) and what was wrong with it."""

    where: str
    name: str
    field: str
    value: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where} ({self.name}): {self.field} = {self.value}: {self.problem}"


class Notification(msgspec.Struct, frozen=True, gc=False):
    """A subscription notification: the channel and its data as typed messages (one for most
    channels; any number for ``trades.*``, ``user.trades.*`` and aggregated ``user.orders.*``).
    ``defects`` names the entries of a list that could not be decoded and were left out (the
    receiver logs each once); the rest are in ``messages``."""

    channel: str
    messages: tuple[Message, ...]
    defects: tuple[EntryDefect, ...] = ()


class RpcResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to request ``id``. ``result`` is still raw JSON: the caller knows which
    request it answers and decodes it with the right type (see the ``decode_*`` functions).
    ``us_in``/``us_out`` are Deribit's receive/send times in microseconds."""

    id: int
    result: msgspec.Raw
    us_in: int | None = None
    us_out: int | None = None
    us_diff: int | None = None
    testnet: bool | None = None

    @property
    def result_text(self) -> str:
        return bytes(self.result).decode()


class RpcError(msgspec.Struct, frozen=True, kw_only=True):
    """Request ``id`` failed (``id`` is ``None`` when Deribit could not read the request).
    ``data`` is the JSON text of the error's ``data`` (often the offending parameter), or
    empty."""

    id: int | None
    code: int
    message: str
    data: str = ""
    us_in: int | None = None
    us_out: int | None = None
    testnet: bool | None = None


class Heartbeat(msgspec.Struct, frozen=True):
    """Deribit's periodic heartbeat: the link is alive. Nothing to answer."""


class TestRequest(msgspec.Struct, frozen=True):
    """Deribit asks for proof of life: answer with ``public/test`` (:func:`answer_test_request`) or
    the server closes the connection."""

    __test__: ClassVar[bool] = False  # not a pytest test class


class UnknownChannel(msgspec.Struct, frozen=True):
    """A notification on a channel this codec has no message type for (log it once)."""

    channel: str
    data: msgspec.Raw


Decoded = Notification | RpcResponse | RpcError | Heartbeat | TestRequest | UnknownChannel


# --- the envelope ----------------------------------------------------------------------------


class _Params(msgspec.Struct):
    channel: str | None = None
    data: msgspec.Raw = _NO_DATA
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    code: int
    message: str = ""
    data: msgspec.Raw = _NO_DATA


class _Envelope(msgspec.Struct):
    """Every frame Deribit sends: a notification (method + params), a response (id + result)
    or an error (id + error). ``jsonrpc`` is not checked, so not declared."""

    method: str | None = None
    params: _Params | None = None
    id: int | None = None
    result: msgspec.Raw = _NO_DATA
    error: _ErrorBody | None = None
    us_in: int | None = msgspec.field(default=None, name="usIn")
    us_out: int | None = msgspec.field(default=None, name="usOut")
    us_diff: int | None = msgspec.field(default=None, name="usDiff")
    testnet: bool | None = None


#: msgspec's errors, and the RecursionError it raises for absurdly nested input.
_DECODE_ERRORS = (msgspec.MsgspecError, RecursionError)
_HEARTBEAT = Heartbeat()
_TEST_REQUEST = TestRequest()

#: Decodes a notification's raw data into its messages; ``None`` for a channel we do not read.
_ChannelDecoder = Callable[[msgspec.Raw], "tuple[Message, ...] | None"]


class FrameDecoder:
    """Decodes frames from Deribit (``str`` or ``bytes``) into :data:`Decoded` values.

    Reuses its msgspec decoders and remembers each channel's decoder, so a frame costs one
    envelope decode, one dict lookup and one typed decode. Not shared between threads: the
    Connection owns one."""

    #: Bound on remembered channels; past it the cache restarts (a run subscribes far fewer).
    MAX_CACHED_CHANNELS = 100_000

    def __init__(self) -> None:
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._book = msgspec.json.Decoder(BookSnapshot | BookChange)
        self._book_snapshot = msgspec.json.Decoder(BookSnapshot)
        self._book_change = msgspec.json.Decoder(BookChange)
        self._book_kind = msgspec.json.Decoder(_BookKind)
        self._ticker = msgspec.json.Decoder(Ticker)
        self._quote = msgspec.json.Decoder(Quote)
        self._index = msgspec.json.Decoder(IndexPrice)
        self._instrument_state = msgspec.json.Decoder(InstrumentState)
        self._orders = msgspec.json.Decoder(OrderUpdate | tuple[OrderUpdate, ...])
        self._portfolio = msgspec.json.Decoder(PortfolioUpdate)
        self._changes = msgspec.json.Decoder(UserChanges)
        self._platform_state = msgspec.json.Decoder(PlatformState)
        self._volatility_index = msgspec.json.Decoder(VolatilityIndex)
        self._by_prefix: dict[str, _ChannelDecoder] = {
            "ticker": lambda raw: (self._ticker.decode(raw),),
            "quote": lambda raw: (self._quote.decode(raw),),
            "deribit_price_index": lambda raw: (self._index.decode(raw),),
            "instrument.state": lambda raw: (self._instrument_state.decode(raw),),
            "trades": _list_decoder(Trade),
            "user.orders": self._decode_orders,
            "user.trades": _list_decoder(UserTrade),
            "user.portfolio": lambda raw: (self._portfolio.decode(raw),),
            "user.changes": self._decode_changes,
            # platform_state and platform_state.public_methods_state: one type, fields optional.
            "platform_state": lambda raw: (self._platform_state.decode(raw),),
            "deribit_volatility_index": lambda raw: (self._volatility_index.decode(raw),),
        }
        self._by_channel: dict[str, _ChannelDecoder] = {}

    def decode(self, frame: bytes | str) -> Decoded:
        """Decode one frame. Raises :class:`FrameError` for bad JSON, a wrong field type or a
        frame that is neither a notification, a heartbeat, a response nor an error."""
        try:
            envelope = self._envelope.decode(frame)
        except _DECODE_ERRORS as error:
            raise FrameError(f"not a Deribit frame ({error})", frame) from None
        method = envelope.method
        if method == "subscription":
            return self._notification(envelope.params, frame)
        if method == "heartbeat":
            params = envelope.params
            return _TEST_REQUEST if params is not None and params.type == "test_request" else _HEARTBEAT
        if envelope.error is not None:
            error_body = envelope.error
            return RpcError(
                id=envelope.id,
                code=error_body.code,
                # An exchange (or a proxy) may echo a token or signature back: masked on arrival, so
                # that no console line, log or audit row built from the error holds it.
                message=scrub_text(error_body.message),
                data=scrub_text(bytes(error_body.data).decode()) if error_body.data else "",
                us_in=envelope.us_in,
                us_out=envelope.us_out,
                testnet=envelope.testnet,
            )
        if envelope.id is not None and envelope.result:
            return RpcResponse(
                id=envelope.id,
                result=envelope.result,
                us_in=envelope.us_in,
                us_out=envelope.us_out,
                us_diff=envelope.us_diff,
                testnet=envelope.testnet,
            )
        raise FrameError(f"unexpected frame (method {method!r}, no result or error)", frame)

    def _notification(self, params: _Params | None, frame: bytes | str) -> Notification | UnknownChannel:
        if params is None or params.channel is None or not params.data:
            raise FrameError("subscription notification without channel or data", frame)
        channel = params.channel
        channel_decoder = self._by_channel.get(channel)
        if channel_decoder is None:
            channel_decoder = self._channel_decoder(channel)
        try:
            messages = channel_decoder(params.data)
        except _DECODE_ERRORS as error:
            raise FrameError(f"bad data on {channel} ({error})", frame) from None
        except _PartList as part:  # rare: a list with entries that could not be decoded
            defects = tuple(msgspec.structs.replace(d, where=channel + d.where) for d in part.defects)
            return Notification(channel, part.messages, defects)
        if messages is None:
            return UnknownChannel(channel, params.data)
        return Notification(channel, messages)

    def _channel_decoder(self, channel: str) -> _ChannelDecoder:
        prefix = channel_prefix(channel)
        if prefix == "book":
            # book.{instrument}.{interval} is incremental; the grouped form
            # book.{instrument}.{group}.{depth}.{interval} has other levels and is not read.
            decoder: _ChannelDecoder = self._decode_book if channel.count(".") == 2 else _unknown
        elif prefix == "markprice.options":
            decoder = _marks_decoder(channel.partition("markprice.options.")[2])
        else:
            decoder = self._by_prefix.get(prefix, _unknown)
        if len(self._by_channel) >= self.MAX_CACHED_CHANNELS:
            self._by_channel.clear()
        self._by_channel[channel] = decoder
        return decoder

    def _decode_book(self, raw: msgspec.Raw) -> tuple[Message, ...]:
        try:
            return (self._book.decode(raw),)
        except msgspec.ValidationError:
            if b'"type"' in bytes(raw):
                raise
        # Older feeds omit "type". Deribit: "every message except the first also contains
        # prev_change_id"; the first is the whole book. So a change is one that names a previous
        # change: prev_change_id absent, null or 0 makes the snapshot.
        if self._book_kind.decode(raw).prev_change_id:
            return (self._book_change.decode(raw),)
        return (self._book_snapshot.decode(raw),)

    def _decode_orders(self, raw: msgspec.Raw) -> tuple[Message, ...]:
        # raw interval: one order per notification; aggregated intervals: a list.
        try:
            orders = self._orders.decode(raw)
        except msgspec.ValidationError:
            if bytes(raw).lstrip()[:1] != b"[":
                raise  # one order, and it is unreadable: nothing to keep
            raise _PartList(*decode_each(raw, OrderUpdate)) from None
        return (orders,) if isinstance(orders, OrderUpdate) else orders

    def _decode_changes(self, raw: msgspec.Raw) -> tuple[Message, ...]:
        try:
            return (self._changes.decode(raw),)
        except msgspec.ValidationError:
            changes, defects = _decode_changes_each(raw)
        raise _PartList((changes,), defects)


def _unknown(_raw: msgspec.Raw) -> tuple[Message, ...] | None:
    return None


class _BookKind(msgspec.Struct):
    prev_change_id: int | None = None


class _PartList(Exception):
    """A list decoded entry by entry: the messages of the entries that decoded and what was wrong
    with the others. Raised by a channel decoder only when the whole list failed to decode, so the
    common case pays nothing for it."""

    def __init__(self, messages: tuple[Message, ...], defects: tuple[EntryDefect, ...]) -> None:
        super().__init__(f"{len(defects)} entries left out")
        self.messages = messages
        self.defects = defects


def _list_decoder(entry_type: type[Message]) -> _ChannelDecoder:
    """A channel decoder for a list of ``entry_type``: the whole list in one decode, entry by entry
    only when that fails (:func:`decode_each`)."""
    whole = _decoders(entry_type)[0]

    def decode(raw: msgspec.Raw) -> tuple[Message, ...]:
        try:
            messages: tuple[Message, ...] = whole.decode(raw)
        except msgspec.ValidationError:
            raise _PartList(*decode_each(raw, entry_type)) from None
        return messages

    return decode


def _marks_decoder(index_name: str) -> _ChannelDecoder:
    """``markprice.options.{index_name}``: the data is a list of marks; the index is the channel's."""

    def decode(raw: msgspec.Raw) -> tuple[Message, ...]:
        marks, defects = decode_entries(raw, OptionMark)
        message = OptionMarks(index_name=index_name, marks=marks)
        if defects:
            raise _PartList((message,), defects)
        return (message,)

    return decode


class _RawUserChanges(msgspec.Struct):
    instrument_name: str
    orders: tuple[msgspec.Raw, ...] = ()
    trades: tuple[msgspec.Raw, ...] = ()
    positions: tuple[msgspec.Raw, ...] = ()


_raw_user_changes = msgspec.json.Decoder(_RawUserChanges)


def _decode_changes_each(raw: msgspec.Raw) -> tuple[UserChanges, tuple[EntryDefect, ...]]:
    """``user.changes`` whose inner lists did not decode whole: each list entry by entry."""
    parts = _raw_user_changes.decode(raw)
    orders, order_defects = _decode_raw_entries(parts.orders, OrderUpdate, " orders")
    trades, trade_defects = _decode_raw_entries(parts.trades, UserTrade, " trades")
    positions, position_defects = _decode_raw_entries(parts.positions, Position, " positions")
    changes = UserChanges(instrument_name=parts.instrument_name, orders=orders, trades=trades, positions=positions)
    return changes, order_defects + trade_defects + position_defects


# --- lists decoded entry by entry --------------------------------------------------------------

EntryT = TypeVar("EntryT")
#: The entries of a list that decoded, and what was wrong with each that did not.
Entries = tuple[tuple[EntryT, ...], tuple[EntryDefect, ...]]

_raw_entries = msgspec.json.Decoder(tuple[msgspec.Raw, ...])
_entry_decoders: dict[Any, tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]] = {}
_ERROR_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]*)`")
_PATH_PART = re.compile(r"[^.\[\]]+|\[(\d+)\]")
#: Keys that say what an entry is about, in order of preference.
_NAME_KEYS = ("instrument_name", "order_id", "trade_id")
VALUE_CHARS = 80


def _decoders(entry_type: Any) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]:
    decoders = _entry_decoders.get(entry_type)
    if decoders is None:
        decoders = _entry_decoders[entry_type] = (
            msgspec.json.Decoder(tuple[entry_type, ...]),
            msgspec.json.Decoder(entry_type),
        )
    return decoders


def decode_entries(raw: msgspec.Raw | bytes | str, entry_type: type[EntryT], where: str = "") -> Entries[EntryT]:
    """A JSON list of ``entry_type``: in one decode when every entry is good, else entry by entry
    (:func:`decode_each`). The one rule for every list Deribit sends (instruments, trades, orders,
    positions, settlements): one bad entry is reported and skipped, the rest used. Raises
    ``msgspec.DecodeError``/``ValidationError`` only when ``raw`` is not a JSON list."""
    whole, _one = _decoders(entry_type)
    try:
        return whole.decode(raw), ()
    except msgspec.ValidationError:
        return decode_each(raw, entry_type, where)


def decode_each(raw: msgspec.Raw | bytes | str, entry_type: type[EntryT], where: str = "") -> Entries[EntryT]:
    """A JSON list decoded entry by entry: the entries that decode, and an :class:`EntryDefect` for
    each that does not (``where`` and the entry's index say where it was)."""
    return _decode_raw_entries(_raw_entries.decode(raw), entry_type, where)


def _decode_raw_entries(entries: tuple[msgspec.Raw, ...], entry_type: type[EntryT], where: str) -> Entries[EntryT]:
    _whole, one = _decoders(entry_type)
    items: list[EntryT] = []
    defects: list[EntryDefect] = []
    for index, entry in enumerate(entries):
        try:
            items.append(one.decode(entry))
        except msgspec.ValidationError as error:
            defects.append(entry_defect(entry, error, f"{where}[{index}]"))
    return tuple(items), tuple(defects)


def entry_defect(entry: msgspec.Raw | bytes | str, error: msgspec.ValidationError, where: str) -> EntryDefect:
    """What msgspec's ``error`` says is wrong with ``entry``: the field's path, its value as received
    and the problem, and the instrument (or order, or trade) the entry is about."""
    fields: Any = msgspec.json.decode(entry)
    text = str(error)
    found = _ERROR_PATH.search(text)
    missing = _MISSING.search(text)
    path = found["path"] if found and found["path"] else ""
    path = f"{path}.{missing['name']}".lstrip(".") if missing else path
    value: Any = fields if path else _ABSENT
    for part in _PATH_PART.finditer(path):
        if part[1] is not None:
            index = int(part[1])
            value = value[index] if isinstance(value, list) and index < len(value) else _ABSENT
        else:
            value = value.get(part[0], _ABSENT) if isinstance(value, dict) else _ABSENT
    shown = "(none)" if value is _ABSENT else msgspec.json.encode(value).decode()[:VALUE_CHARS]
    # The instrument and the order's or trade's id, as far as the entry says.
    names = [str(fields[key]) for key in _NAME_KEYS if key in fields][:2] if isinstance(fields, dict) else []
    name = " ".join(names) or "(no name)"
    return EntryDefect(where=where, name=name, field=path or "(the entry)", value=shown,
                       problem=_ERROR_PATH.sub("", text))


_ABSENT = object()


# --- results of requests ---------------------------------------------------------------------


class AuthResult(msgspec.Struct, frozen=True, kw_only=True):
    """The result of ``public/auth``. Its repr hides the tokens so that it cannot leak them
    into a log line or an exception text."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: str = ""
    token_type: str = "bearer"

    def __repr__(self) -> str:
        return f"AuthResult(expires_in={self.expires_in}, scope={self.scope!r}, tokens=<redacted>)"


class _OrderWithTrades(msgspec.Struct):
    order: OrderUpdate
    trades: tuple[UserTrade, ...] = ()


_order_with_trades = msgspec.json.Decoder(_OrderWithTrades)
_order = msgspec.json.Decoder(OrderUpdate)
_result_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])
_account_summary = msgspec.json.Decoder(AccountSummary)
_auth = msgspec.json.Decoder(AuthResult)
_channels = msgspec.json.Decoder(tuple[str, ...])
_cancelled = msgspec.json.Decoder(int)
_result_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


ResultT = TypeVar("ResultT")


def decode_result(raw: msgspec.Raw | bytes | str, result_type: type[ResultT]) -> ResultT:
    """Decode a response's raw ``result`` as ``result_type`` (decoders are cached by type)."""
    decoder = _result_decoders.get(result_type)
    if decoder is None:
        decoder = _result_decoders[result_type] = msgspec.json.Decoder(result_type)
    return decoder.decode(raw)


def decode_order_result(raw: msgspec.Raw | bytes | str) -> tuple[OrderUpdate, tuple[UserTrade, ...]]:
    """The result of buy/sell/edit (``{"order": ..., "trades": [...]}``) or cancel (an order)."""
    if "order" in _result_keys.decode(raw):
        decoded = _order_with_trades.decode(raw)
        return decoded.order, decoded.trades
    return _order.decode(raw), ()


def decode_positions(raw: msgspec.Raw | bytes | str) -> Entries[Position]:
    """The result of ``private/get_positions``: the positions, and any entry left out."""
    return decode_entries(raw, Position, "private/get_positions")


def decode_open_orders(raw: msgspec.Raw | bytes | str) -> Entries[OrderUpdate]:
    """The result of ``private/get_open_orders_by_currency`` (or ``..._by_instrument``): the orders,
    and any entry left out (an order that is open all the same: a caller that must know every open
    order treats a defect as not knowing)."""
    return decode_entries(raw, OrderUpdate, "private/get_open_orders")


class _SettlementPage(msgspec.Struct):
    settlements: msgspec.Raw
    continuation: str | None = None


_settlement_page = msgspec.json.Decoder(_SettlementPage)


def decode_settlement_history(
    raw: msgspec.Raw | bytes | str, currency: str = "", at: float = 0.0
) -> tuple[SettlementHistory, tuple[EntryDefect, ...]]:
    """The result of ``private/get_settlement_history_by_currency`` (``{"settlements": [...],
    "continuation": ...}``) as the :class:`SettlementHistory` of ``currency`` received at ``at``,
    and any entry left out. Deribit's ``continuation`` is ``"none"`` on the last page: kept as sent."""
    page = _settlement_page.decode(raw)
    settlements, defects = decode_entries(page.settlements, Settlement, "private/get_settlement_history_by_currency")
    history = SettlementHistory(currency=currency, settlements=settlements, at=at, continuation=page.continuation)
    return history, defects


_limits_free_summary = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_encoder = msgspec.json.Encoder()
_limit_fields = msgspec.json.Decoder(dict[str, Any])
_rate_limit_keys = frozenset({"rate", "burst"})


def decode_account_summary(raw: msgspec.Raw | bytes | str) -> tuple[AccountSummary, tuple[EntryDefect, ...]]:
    """The result of ``private/get_account_summary``. Its ``limits`` are read by
    :func:`decode_account_limits`, in any of the shapes Deribit has sent; limits of a shape not
    known leave ``limits`` None and are reported as a defect, never failing the summary."""
    fields = _limits_free_summary.decode(raw)
    limits_raw = fields.pop("limits", None)
    summary = _account_summary.decode(_raw_encoder.encode(fields))
    if limits_raw is None:
        return summary, ()
    limits, defects = decode_account_limits(limits_raw)
    return msgspec.structs.replace(summary, limits=limits), defects


def decode_account_limits(raw: msgspec.Raw | bytes | str) -> tuple[AccountLimits | None, tuple[EntryDefect, ...]]:
    """``limits`` of ``private/get_account_summary``. Deribit has sent three shapes:

    - nested (the documentation's current example): ``matching_engine`` holds ``trading.total``
      (orders), ``cancel_all``, ``spot``, ``quotes``, ... each ``{"rate", "burst"}``; the order
      limit is ``trading.total``;
    - flat: ``matching_engine`` and ``non_matching_engine`` each ``{"rate", "burst"}``;
    - numbers: ``matching_engine`` (rate) beside ``matching_engine_burst``.

    Another shape gives ``(None, (defect,))``."""
    try:
        fields = _limit_fields.decode(raw)
    except msgspec.DecodeError as error:
        return None, (_limits_defect("(the entry)", str(error), "not JSON"),)
    if not isinstance(fields, dict):
        return None, (_limits_defect("(the entry)", msgspec.json.encode(fields).decode()[:VALUE_CHARS],
                                     "not an object"),)
    per_currency = fields.get("limits_per_currency", False)
    if not isinstance(per_currency, bool):
        return None, (_limits_defect("limits_per_currency", repr(per_currency), "expected a boolean"),)
    matching = _rate_limit(fields, "matching_engine", ("trading", "total"))
    if isinstance(matching, str):
        return None, (_limits_defect("matching_engine", _shown(fields, "matching_engine"), matching),)
    non_matching = _rate_limit(fields, "non_matching_engine", ())
    if isinstance(non_matching, str):
        return None, (_limits_defect("non_matching_engine", _shown(fields, "non_matching_engine"), non_matching),)
    return AccountLimits(limits_per_currency=per_currency, matching_engine=matching,
                         non_matching_engine=non_matching), ()


def _shown(fields: dict[str, Any], name: str) -> str:
    return msgspec.json.encode(fields.get(name)).decode()[:VALUE_CHARS]


def _rate_limit(fields: dict[str, Any], name: str, nested: tuple[str, ...]) -> RateLimit | str | None:
    """The limit ``name`` of ``fields`` in any of Deribit's shapes; None when absent; a text saying
    what is wrong when its shape is not known."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        burst = fields.get(f"{name}_burst", value)
        value = {"rate": value, "burst": burst}
    if isinstance(value, dict) and not _rate_limit_keys <= value.keys() and nested:
        for key in nested:
            value = value.get(key) if isinstance(value, dict) else None
    if not (isinstance(value, dict) and _rate_limit_keys <= value.keys()):
        return "not a known shape of limits (rate and burst, flat or under trading.total)"
    try:
        return msgspec.convert({"rate": value["rate"], "burst": value["burst"]}, RateLimit)
    except msgspec.ValidationError as error:
        return str(error)


def _limits_defect(field: str, value: str, problem: str) -> EntryDefect:
    return EntryDefect(where="private/get_account_summary limits", name="(the account)", field=field,
                       value=value, problem=problem)


def decode_auth_result(raw: msgspec.Raw | bytes | str) -> AuthResult:
    """The result of ``public/auth``."""
    return _auth.decode(raw)


def decode_subscribed(raw: msgspec.Raw | bytes | str) -> tuple[str, ...]:
    """The result of ``public/subscribe``/``private/subscribe``: the channels now subscribed."""
    return _channels.decode(raw)


def decode_cancelled(raw: msgspec.Raw | bytes | str) -> int:
    """The result of ``private/cancel_all`` (and the other mass cancels, not ``detailed``): how many
    orders it cancelled."""
    return _cancelled.decode(raw)


def command_result(command: ExchangeCommand, method: str, response: RpcResponse) -> CommandResult:
    """The answer to ``command`` once ``response`` arrived. For order methods the order and
    fills are decoded too; should that fail, they are left empty and ``result`` still holds
    the exchange's text, so the sender always hears back."""
    order: OrderUpdate | None = None
    trades: tuple[UserTrade, ...] = ()
    if method in ORDER_METHODS:
        try:
            order, trades = decode_order_result(response.result)
        except msgspec.MsgspecError:
            order, trades = None, ()
    return CommandResult(
        request_key=command.request_key,
        origin=command.origin,
        method=method,
        result=response.result_text,
        order=order,
        trades=trades,
    )


def command_failed(command: ExchangeCommand, method: str, error: RpcError) -> CommandFailed:
    """The answer to ``command`` when Deribit returned an error."""
    return CommandFailed(
        request_key=command.request_key,
        origin=command.origin,
        method=method,
        code=error.code,
        message=error.message,
        data=error.data,
    )


# --- requests --------------------------------------------------------------------------------

Request = tuple[str, dict[str, Any]]


class _RequestFrame(msgspec.Struct):
    jsonrpc: str
    id: int
    method: str
    params: dict[str, Any]


class RequestEncoder:
    """Numbers and encodes JSON-RPC requests. Ids increase from ``first_id``; ``next_id`` is
    safe to call from several threads (``itertools.count`` is atomic under the GIL).

    Once given an access token (:meth:`set_access_token`), it adds it to every ``private/*``
    request: a connection-scoped session may otherwise be refused. Frames holding it must go
    through :func:`redact_frame` before they are logged."""

    def __init__(self, first_id: int = 1) -> None:
        self._ids = itertools.count(first_id)
        self._encoder = msgspec.json.Encoder()
        self._access_token: str | None = None

    def next_id(self) -> int:
        return next(self._ids)

    def set_access_token(self, access_token: str | None) -> None:
        """Use ``access_token`` on private requests from now on (``None``: stop, e.g. after a
        disconnect)."""
        self._access_token = access_token

    def encode(
        self, method: str, params: dict[str, Any] | None = None, request_id: int | None = None
    ) -> tuple[int, bytes]:
        """``(id, frame)`` for ``method``. Top-level ``None`` params are left out (Deribit
        treats a missing optional parameter as its default, but may refuse ``null``)."""
        if request_id is None:
            request_id = self.next_id()
        clean = {key: value for key, value in (params or {}).items() if value is not None}
        if self._access_token is not None and method.startswith("private/"):
            clean.setdefault("access_token", self._access_token)
        return request_id, self._encoder.encode(_RequestFrame("2.0", request_id, method, clean))

    def encode_request(self, request: Request, request_id: int | None = None) -> tuple[int, bytes]:
        """Encode a ``(method, params)`` pair as built by the functions of this module."""
        return self.encode(request[0], request[1], request_id)


def command_method(command: ExchangeCommand) -> str:
    """The Deribit method ``command`` becomes, without checking it (a refusal names it too).
    The one mapping from commands to methods: the request builders below use it."""
    match command:
        case PlaceOrder():
            return f"private/{command.side}"
        case EditOrder():
            return "private/edit"
        case CancelOrder():
            return "private/cancel"
        case CancelAll():
            if command.instrument_name is not None:
                return "private/cancel_all_by_instrument"
            return "private/cancel_all_by_currency" if command.currency is not None else "private/cancel_all"
        case CancelByLabel():
            return "private/cancel_by_label"
    raise TypeError(f"{type(command).__name__} is not an exchange command")


def place_order_request(command: PlaceOrder) -> Request:
    """``private/buy`` or ``private/sell``."""
    params: dict[str, Any] = {
        "instrument_name": command.instrument_name,
        "amount": command.amount,
        "type": command.type,
        "price": command.price,
        "time_in_force": command.time_in_force,
        "post_only": command.post_only,
        "reduce_only": command.reduce_only,
        "trigger": command.trigger,
        "trigger_price": command.trigger_price,
    }
    if command.label:
        params["label"] = command.label
    return command_method(command), _without_none(params)


def edit_order_request(command: EditOrder) -> Request:
    params = {
        "order_id": command.order_id,
        "amount": command.amount,
        "price": command.price,
        "post_only": command.post_only,
        "reduce_only": command.reduce_only,
        "trigger_price": command.trigger_price,
    }
    return command_method(command), _without_none(params)


def cancel_order_request(command: CancelOrder) -> Request:
    return command_method(command), {"order_id": command.order_id}


def cancel_all_request(command: CancelAll) -> Request:
    method = command_method(command)
    if command.instrument_name is not None:
        return method, {"instrument_name": command.instrument_name}
    if command.currency is not None:
        return method, _without_none({"currency": command.currency, "kind": command.kind})
    return method, {}


def cancel_by_label_request(command: CancelByLabel) -> Request:
    return command_method(command), _without_none({"label": command.label, "currency": command.currency})


def command_request(command: ExchangeCommand) -> Request:
    """``(method, params)`` for any exchange command. Raises
    :class:`messages.commands.InvalidCommand` (a ``ValueError``) for a command that must not
    be sent, and ``TypeError`` for a message that is not an exchange command."""
    check_command(command)
    match command:
        case PlaceOrder():
            return place_order_request(command)
        case EditOrder():
            return edit_order_request(command)
        case CancelOrder():
            return cancel_order_request(command)
        case CancelAll():
            return cancel_all_request(command)
        case CancelByLabel():
            return cancel_by_label_request(command)
    raise TypeError(f"{type(command).__name__} is not an exchange command")


def subscribe_request(channels: Iterable[str], private: bool | None = None) -> Request:
    """``public/subscribe``, or ``private/subscribe`` when any channel is private (or
    ``private`` says so: an authenticated connection gets raw intervals only that way)."""
    names = list(channels)
    use_private = any(is_private(name) for name in names) if private is None else private
    return ("private/subscribe" if use_private else "public/subscribe"), {"channels": names}


def unsubscribe_request(channels: Iterable[str], private: bool | None = None) -> Request:
    names = list(channels)
    use_private = any(is_private(name) for name in names) if private is None else private
    return ("private/unsubscribe" if use_private else "public/unsubscribe"), {"channels": names}


def auth_client_credentials_request(client_id: str, client_secret: str, scope: str | None = None) -> Request:
    """``public/auth`` with the secret itself (only over TLS; the wire log redacts it)."""
    params = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
        "scope": scope,
    }
    return "public/auth", _without_none(params)


def client_signature(client_secret: str, timestamp_ms: int, nonce: str, data: str = "") -> str:
    """Deribit's signature: hex HMAC-SHA256 keyed by the secret over
    ``"{timestamp}\\n{nonce}\\n{data}"``."""
    message = f"{timestamp_ms}\n{nonce}\n{data}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


def auth_client_signature_request(
    client_id: str,
    client_secret: str,
    timestamp_ms: int,
    nonce: str | None = None,
    data: str = "",
    scope: str | None = None,
) -> Request:
    """``public/auth`` proving knowledge of the secret without sending it. ``timestamp_ms``
    must be close to Deribit's clock (it rejects stale signatures)."""
    nonce = new_nonce() if nonce is None else nonce
    signature = client_signature(client_secret, timestamp_ms, nonce, data)
    register_secrets((signature,), transient=True)
    params = {
        "grant_type": "client_signature",
        "client_id": client_id,
        "timestamp": timestamp_ms,
        "signature": signature,
        "nonce": nonce,
        "data": data,
        "scope": scope,
    }
    return "public/auth", _without_none(params)


def auth_refresh_request(refresh_token: str) -> Request:
    """``public/auth`` renewing the session before its ``expires_in`` runs out."""
    return "public/auth", {"grant_type": "refresh_token", "refresh_token": refresh_token}


def set_heartbeat_request(interval_s: int) -> Request:
    """Ask Deribit for a heartbeat every ``interval_s`` seconds (>= 10); it then sends
    ``test_request`` heartbeats that must be answered with :func:`answer_test_request`."""
    if interval_s < MIN_HEARTBEAT_INTERVAL_S:
        raise ValueError(f"Deribit's heartbeat interval is at least {MIN_HEARTBEAT_INTERVAL_S} s")
    return "public/set_heartbeat", {"interval": interval_s}


def answer_test_request() -> Request:
    """``public/test``: the answer to a heartbeat ``test_request``."""
    return "public/test", {}


def enable_cancel_on_disconnect_request(scope: str = "connection") -> Request:
    """Have Deribit cancel our orders if this connection drops (``scope`` ``connection`` or
    ``account``)."""
    return "private/enable_cancel_on_disconnect", {"scope": scope}


def get_instruments_request(currency: str, kind: str | None = None, expired: bool = False) -> Request:
    return "public/get_instruments", _without_none({"currency": currency, "kind": kind, "expired": expired})


def get_positions_request(currency: str, kind: str | None = None) -> Request:
    return "private/get_positions", _without_none({"currency": currency, "kind": kind})


def get_open_orders_request(currency: str, kind: str | None = None) -> Request:
    return "private/get_open_orders_by_currency", _without_none({"currency": currency, "kind": kind})


def get_account_summary_request(currency: str, extended: bool = False) -> Request:
    return "private/get_account_summary", {"currency": currency, "extended": extended}


def get_settlement_history_request(currency: str, type: str | None = None, count: int | None = None) -> Request:
    """``private/get_settlement_history_by_currency``; ``type`` ``settlement``, ``delivery`` or
    ``bankruptcy`` (all when None); ``count`` up to 1000 (Deribit's default 20)."""
    params = {"currency": currency, "type": type, "count": count}
    return "private/get_settlement_history_by_currency", _without_none(params)


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


# --- redaction -------------------------------------------------------------------------------

#: Keys whose string values are secrets: any key holding one of runtime.secrets' names.
_KEYS = r"[\w-]*(?:" + "|".join(re.escape(name) for name in SECRET_KEY_NAMES) + r")[\w-]*"
#: In a frame: a JSON string value (escapes included), or one cut off by truncation.
_SECRET_IN_FRAME = re.compile(
    r'"(?P<key>' + _KEYS + r')"(?P<colon>\s*:\s*)"(?:[^"\\]|\\.)*(?:"|$)', re.DOTALL
)
#: In a JSON string that holds a frame (a log line): quotes appear escaped as \".
_SECRET_IN_STRING = re.compile(r'\\"(?P<key>' + _KEYS + r')\\"(?P<colon>\s*:\s*)\\".*?(?:\\"|$)', re.DOTALL)
REDACTED = "<redacted>"


def redact_frame(frame: bytes | str) -> str:
    """The frame's text with the values of secret keys (client_secret, signature, access_token,
    refresh_token, ...) replaced by ``<redacted>`` and any secret registered with the masker
    (runtime.secrets) by its mask; every other character unchanged. Also works on
    a truncated frame and on a frame quoted inside another JSON string."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes | bytearray | memoryview) else frame
    # Any registered secret (a token echoed in an error text, a signature) wherever it stands.
    text = scrub_text(text)
    if not any(name in text for name in SECRET_KEY_NAMES):
        return text  # the common case: no auth frame, no regex
    text = _SECRET_IN_FRAME.sub(lambda m: f'"{m["key"]}"{m["colon"]}"{REDACTED}"', text)
    return _SECRET_IN_STRING.sub(lambda m: f'\\"{m["key"]}\\"{m["colon"]}\\"{REDACTED}\\"', text)


def excerpt(frame: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of a frame, redacted, for error texts and logs."""
    if isinstance(frame, bytes | bytearray | memoryview):
        # A character is at most 4 bytes; a secret cut at the end is still redacted.
        frame = bytes(frame[: limit * 4]).decode("utf-8", "replace")
    text = redact_frame(frame)
    return text if len(text) <= limit else text[: limit - 3] + "..."
