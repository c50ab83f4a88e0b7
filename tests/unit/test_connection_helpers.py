"""The Connection's pure helpers: rate limiting, backoff and retry timing, subscription tracking
and the wire log (the [deribit] settings are checked at load: tests/integration/test_settings.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deribit.codec import REDACTED, command_method
from deribit.subscriptions import SubscriptionTracker, currency_channels, market_channels
from messages.commands import CancelAll, CancelByLabel, CancelOrder, EditOrder, PlaceOrder
from messages.market import Instrument
from runtime.throttle import Backoff, TokenBucket, retry_delay, token_refresh_delay
from runtime.wirelog import WireLogError, WireLogWriter, read_wire_log


# -- token bucket ----------------------------------------------------------------------------------------
@given(rate=st.floats(0.5, 50), burst=st.integers(1, 10),
       steps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_burst_plus_rate(rate: float, burst: int, steps: list[float]) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now, taken = 0.0, []
    for step in steps:
        now += step
        if bucket.try_take(now):
            taken.append(now)
    for i, start in enumerate(taken):
        for j in range(i, len(taken)):
            assert j - i + 1 <= burst + rate * (taken[j] - start) + 1e-9


def test_token_bucket_refills_drains_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(2.0, 2, 100.0)
    assert bucket.try_take(100.0) and bucket.try_take(100.0) and not bucket.try_take(100.0)
    assert bucket.wait_time(100.0) == pytest.approx(0.5)
    assert bucket.try_take(100.5) and not bucket.try_take(100.5)
    bucket.drain(110.0)  # however long it was idle: empty after the exchange said "too fast"
    assert not bucket.try_take(110.0) and bucket.try_take(110.5)
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(0.0, 1, 0.0)


# -- backoff and retries --------------------------------------------------------------------------------------
def test_backoff_doubles_with_jitter_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        assert 0.25 <= delay <= min(4.0, 0.5 * 2**attempt)
    assert max(delays[4:]) > 1.0  # it does grow
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(2.0, 1.0)


def test_refresh_and_retry_delays() -> None:
    assert token_refresh_delay(900) == 720.0  # Deribit's usual 15 minutes: renewed 3 minutes early
    assert token_refresh_delay(2) == pytest.approx(1.6)
    assert token_refresh_delay(0) == 0.5
    assert [retry_delay(n, 0.25, 5.0) for n in (1, 2, 3, 4, 5, 6, 50)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


# -- subscriptions ----------------------------------------------------------------------------------------
def _instrument(name: str, kind: str) -> Instrument:
    return Instrument(instrument_name=name, kind=kind, base_currency="BTC", quote_currency="BTC",
                      settlement_period="month", tick_size=0.0005, contract_size=1.0, min_trade_amount=0.1,
                      expiration_timestamp=1, creation_timestamp=0)


def test_channels_for_instruments_and_currencies() -> None:
    chans = market_channels([_instrument("BTC-1JAN30-1000-C", "option"), _instrument("BTC-PERPETUAL", "future"),
                             _instrument("BTC_USDC", "spot")], "100ms")
    assert chans == {"book.BTC-1JAN30-1000-C.100ms", "ticker.BTC-1JAN30-1000-C.100ms", "quote.BTC-PERPETUAL",
                     "ticker.BTC-PERPETUAL.100ms"}
    assert currency_channels("ETH", private=False) == {
        "deribit_price_index.eth_usd", "instrument.state.option.ETH", "instrument.state.future.ETH",
        "platform_state", "deribit_volatility_index.eth_usd"}
    assert currency_channels("ETH", private=True) - currency_channels("ETH", private=False) == {
        "user.orders.any.ETH.raw", "user.trades.any.ETH.raw", "user.changes.any.ETH.raw", "user.portfolio.eth"}


def test_tracker_batches_confirms_retries_and_unsubscribes_dropped() -> None:
    tracker = SubscriptionTracker(batch_size=2)
    assert tracker.want(["c", "a", "b"]) == {"a", "b", "c"} and tracker.want(["a"]) == set()
    first = tracker.next_batch()
    assert first == ("a", "b")
    tracker.sent(1, first)
    assert tracker.next_batch() == ("c",)  # what is in flight is not asked again
    tracker.sent(2, ("c",))
    assert tracker.next_batch() == ()
    assert tracker.answered(1, ["a"]) == (("b",), ())  # b refused
    assert tracker.failures == 1 and tracker.next_batch() == ("b",)
    assert tracker.failed(2) == ("c",) and tracker.failures == 2
    tracker.sent(3, ("b", "c"))
    assert tracker.drop(["c"]) == set()  # dropped while in flight
    assert tracker.answered(3, ["b", "c"]) == ((), ("c",))  # c must be unsubscribed
    assert tracker.failures == 0 and tracker.complete and tracker.counts() == (2, 2)
    assert tracker.drop(["b"]) == {"b"}
    tracker.forget(["a"])
    assert not tracker.complete and tracker.next_batch() == ("a",)
    tracker.reset()
    assert tracker.confirmed == set() and tracker.in_flight == {} and tracker.wanted == {"a"}
    with pytest.raises(ValueError, match="at least 1"):
        SubscriptionTracker(batch_size=0)


# -- wire log ------------------------------------------------------------------------------------------------
def test_wire_log_redacts_flushes_and_reads_back(tmp_path: Path) -> None:
    from deribit.codec import redact_frame

    path = tmp_path / "sub" / "wire.jsonl"
    writer = WireLogWriter(path, redact=redact_frame, flush_after_s=1.0)
    writer.write(10.0, "open")
    auth = b'{"method":"public/auth","params":{"client_secret":"s3cret","grant_type":"client_credentials"}}'
    writer.write(10.1, "out", auth)
    writer.write(10.2, "in", '{"result":{"access_token":"tok-A1","refresh_token":"ref-B2"}}')
    assert path.read_text().count("\n") == 1  # only the open is on disk yet
    writer.write(11.2, "in", '{"method":"heartbeat"}')  # a second of record time later: flushed
    text = path.read_text()
    assert text.count("\n") == 4 and "s3cret" not in text and "tok-A1" not in text and "ref-B2" not in text
    writer.write(11.3, "close")
    writer.close()
    writer.write(12.0, "in", "after close is ignored")
    records = list(read_wire_log(path))
    assert [r.dir for r in records] == ["open", "out", "in", "in", "close"]
    assert records[1].frame == auth.decode().replace("s3cret", REDACTED)
    assert records[0].frame is None and records[0].t == 10.0


def test_wire_log_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1.0, "dir": "open"}\n\n{"t": 2.0, "dir": "sideways"}\n')
    with pytest.raises(WireLogError, match=r"bad.jsonl:3: not a wire-log record"):
        list(read_wire_log(bad))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WireLogError, match=r"cannot create the directory .*--record-wire"):
        WireLogWriter(blocker / "wire.jsonl")


# -- the Connection's small pure pieces ---------------------------------------------------------------------------
def test_command_method_of_each_command() -> None:
    common = {"origin": "t", "request_key": "k"}
    assert command_method(PlaceOrder(instrument_name="X", side="sell", amount=1, price=1.0, **common)) == "private/sell"
    assert command_method(EditOrder(order_id="1", amount=1, **common)) == "private/edit"
    assert command_method(CancelOrder(order_id="1", **common)) == "private/cancel"
    assert command_method(CancelAll(**common)) == "private/cancel_all"
    assert command_method(CancelAll(currency="BTC", **common)) == "private/cancel_all_by_currency"
    assert command_method(CancelAll(instrument_name="X", **common)) == "private/cancel_all_by_instrument"
    assert command_method(CancelByLabel(label="l", **common)) == "private/cancel_by_label"
    with pytest.raises(TypeError):  # moved from tests/integration/test_sql.py (sql/writers' copy is gone)
        command_method("PlaceOrder")  # type: ignore[arg-type]


