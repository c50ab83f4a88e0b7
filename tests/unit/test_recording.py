"""sql.recording and the settlement rows: the DVOL at a minute (the latest at or before it, missing when
stale), and each settlement-history entry handed on once.

Real messages: Deribit's documentation examples of a DVOL notification and of settlement-history
entries (tests/support/recorder_messages.py names the sources).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.account import Settlement, SettlementHistory
from messages.market import VolatilityIndex
from sql.recording import DVOL_STALE_AFTER_S, DvolAtMinute, SettlementsSeen, coin_of
from sql.spool import Spool
from sql.store import snapshot_record
from sql.writers import DvolReading, minute_rows, settlement_key, settlement_rows
from tests.support.recorder_messages import DOCS_SETTLEMENTS, docs_dvol, docs_settlements
from tests.support.sql import AT, small_snapshot


def dvol(at_ms: int, value: float = 50.0, index_name: str = "btc_usd") -> VolatilityIndex:
    return VolatilityIndex(index_name=index_name, volatility=value, timestamp=at_ms)


MINUTE_MS = int(AT * 1000)
STALE_MS = int(DVOL_STALE_AFTER_S * 1000)


# -- DVOL at the minute -----------------------------------------------------------------------------------
def test_coin_of_index_names_and_currencies() -> None:
    assert [coin_of(n) for n in ("btc_usd", "eth_usd", "BTC", "ETH", "BTC_USDC")] == ["BTC", "ETH", "BTC", "ETH",
                                                                                     "BTC"]


def test_the_docs_notification_is_the_dvol_of_its_minute() -> None:
    message = docs_dvol()
    keeper = DvolAtMinute()
    assert keeper.update(message)
    minute = (message.timestamp // 60_000 + 1) * 60.0  # the next whole minute, 54 s later
    assert keeper.at_minute("BTC", minute) == DvolReading(value=message.volatility, timestamp=message.timestamp)
    assert keeper.at_minute("ETH", minute) is None  # another coin's index says nothing of ETH


def test_the_latest_at_or_before_the_minute_is_taken_not_a_later_one() -> None:
    keeper = DvolAtMinute()
    for offset_ms, value in ((-2_000, 40.0), (-1_000, 41.0), (0, 42.0), (1_000, 43.0)):
        keeper.update(dvol(MINUTE_MS + offset_ms, value))
    assert keeper.at_minute("BTC", AT) == DvolReading(value=42.0, timestamp=MINUTE_MS)
    assert keeper.at_minute("BTC", AT - 1.5) == DvolReading(value=40.0, timestamp=MINUTE_MS - 2_000)
    assert keeper.at_minute("BTC", AT - 3.0) is None  # nothing known yet at that minute


def test_a_dvol_older_than_the_limit_at_the_minute_is_missing() -> None:
    keeper = DvolAtMinute()
    keeper.update(dvol(MINUTE_MS - STALE_MS))
    assert keeper.at_minute("BTC", AT) == DvolReading(value=50.0, timestamp=MINUTE_MS - STALE_MS)  # just in time
    assert keeper.at_minute("BTC", AT + 0.001) is None
    assert keeper.at_minute("BTC", AT + 60) is None
    keeper.update(dvol(MINUTE_MS + 59_000, 55.0))  # the feed is back
    assert keeper.at_minute("BTC", AT + 60) == DvolReading(value=55.0, timestamp=MINUTE_MS + 59_000)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -5.0])
def test_an_implausible_dvol_is_not_kept(value: float) -> None:
    keeper = DvolAtMinute()
    keeper.update(dvol(MINUTE_MS - 5_000, 60.0))
    assert keeper.update(dvol(MINUTE_MS - 1_000, value)) is False
    assert keeper.at_minute("BTC", AT) == DvolReading(value=60.0, timestamp=MINUTE_MS - 5_000)


def test_a_notification_older_than_the_last_kept_is_ignored() -> None:
    keeper = DvolAtMinute()
    assert keeper.update(dvol(MINUTE_MS - 1_000, 60.0))
    assert keeper.update(dvol(MINUTE_MS - 2_000, 10.0)) is False
    assert keeper.update(dvol(MINUTE_MS - 1_000, 11.0)) is False
    assert keeper.at_minute("BTC", AT) == DvolReading(value=60.0, timestamp=MINUTE_MS - 1_000)


@given(st.lists(st.integers(min_value=-400_000, max_value=100_000), max_size=40),
       st.integers(min_value=-300_000, max_value=60_000))
def test_the_minute_gets_the_newest_kept_reading_at_or_before_it_within_the_limit(
        offsets: list[int], minute_offset_ms: int) -> None:
    keeper = DvolAtMinute(kept=1_000)
    kept: list[int] = []
    for i, offset in enumerate(offsets):
        if keeper.update(dvol(MINUTE_MS + offset, 30.0 + i)):
            kept.append(MINUTE_MS + offset)
    assert kept == sorted(set(kept))  # only ever forward
    minute_ms = MINUTE_MS + minute_offset_ms
    found = keeper.at_minute("BTC", minute_ms / 1000)
    before = [t for t in kept if t <= minute_ms]
    if not before or minute_ms - before[-1] > STALE_MS:
        assert found is None
    else:
        assert found is not None and found.timestamp == before[-1]


def test_only_the_last_readings_are_kept() -> None:
    keeper = DvolAtMinute(kept=3)
    for i in range(5):
        keeper.update(dvol(MINUTE_MS - 5_000 + i * 1_000, 40.0 + i))
    assert keeper.at_minute("BTC", AT - 2.5) == DvolReading(value=42.0, timestamp=MINUTE_MS - 3_000)
    assert keeper.at_minute("BTC", AT - 3.5) is None  # that one is no longer kept: missing, never a guess


# -- the minute's index row ---------------------------------------------------------------------------------
def test_the_index_row_holds_the_dvol_and_its_own_time_or_nothing() -> None:
    snap = small_snapshot()
    reading = DvolReading(value=61.5, timestamp=MINUTE_MS - 700)
    row = minute_rows(snap, reading)[-1]
    assert row.table.name == "volatility_index"
    values = dict(zip(row.columns, row.rows[0], strict=True))
    assert (values["dvol"], values["dvol_at"]) == (61.5, dt.datetime.fromtimestamp((MINUTE_MS - 700) / 1000, dt.UTC))
    assert values["value"] == snap.variance_index
    missing = dict(zip(row.columns, minute_rows(snap)[-1].rows[0], strict=True))
    assert (missing["dvol"], missing["dvol_at"]) == (None, None)
    nan = dict(zip(row.columns, minute_rows(snap, DvolReading(value=float("nan"), timestamp=MINUTE_MS))[-1].rows[0],
                   strict=True))
    assert (nan["dvol"], nan["dvol_at"]) == (None, None)


# -- settlements --------------------------------------------------------------------------------------------
def test_the_docs_settlements_become_rows_field_by_field() -> None:
    entries = docs_settlements()
    history = SettlementHistory(currency="BTC", settlements=entries, at=AT)
    rows = settlement_rows(history)
    raw = msgspec.json.decode(DOCS_SETTLEMENTS)
    assert len(rows) == len(raw) == 2
    for row, source in zip(rows, raw, strict=True):
        assert row["instrument"] == source["instrument_name"] and row["type"] == source["type"]
        assert row["settled_at"] == dt.datetime.fromtimestamp(source["timestamp"] / 1000, dt.UTC)
        for field in ("position", "mark_price", "index_price", "profit_loss", "session_profit_loss"):
            assert row[field] == source[field], field
        assert row["funding"] is None and row["funded"] is None  # not sent: not claimed
        assert row["recorded_at"] == dt.datetime.fromtimestamp(AT, dt.UTC)


def test_a_bankruptcy_without_instrument_has_a_key_all_the_same() -> None:
    bankruptcy = Settlement(type="bankruptcy", timestamp=1550475692526, session_bankruptcy=0.5, funded=0.1)
    history = SettlementHistory(currency="BTC", settlements=(bankruptcy, bankruptcy), at=AT)
    rows = settlement_rows(history)
    assert len(rows) == 1 and rows[0]["instrument"] == "" and rows[0]["session_bankruptcy"] == 0.5
    assert settlement_key("BTC", bankruptcy) == ("BTC", "", "bankruptcy", 1550475692526)


def test_a_history_seen_again_hands_on_only_what_is_new() -> None:
    first, second = docs_settlements()
    seen = SettlementsSeen()
    history = SettlementHistory(currency="BTC", settlements=(first,), at=AT)
    assert seen.new_entries(history) == history
    assert seen.new_entries(msgspec.structs.replace(history, at=AT + 60)) is None
    later = SettlementHistory(currency="BTC", settlements=(second, first), at=AT + 86_400)
    fresh = seen.new_entries(later)
    assert fresh is not None and fresh.settlements == (second,) and fresh.at == AT + 86_400
    # The same entry in another currency's history is another entry.
    assert seen.new_entries(msgspec.structs.replace(history, currency="ETH")) is not None


def test_a_spooled_minute_replays_the_same_rows_coverage_flags_and_difference_included(tmp_path: Path) -> None:
    snap = small_snapshot()
    assert snap.coverage is not None and {p.extrapolated for p in snap.points} == {True, False}
    incomplete = msgspec.structs.replace(snap, at=AT + 60, complete=False, coverage=0.2, usable=24, points=(),
                                         fits=(), tenors=(), variance_index=None, surface_ok=False)
    reading = DvolReading(value=60.5, timestamp=int(AT * 1000))
    spool = Spool(tmp_path / "spool")
    for original in (snap, incomplete):
        spool.append(snapshot_record(original, reading))
        head = spool.peek()
        assert head is not None
        path, record = head
        assert record.snapshot == original and record.dvol == reading
        assert minute_rows(record.snapshot, record.dvol) == minute_rows(original, reading)
        spool.remove(path)
    complete_rows = {part.table.name: part.rows for part in minute_rows(snap, reading)}
    assert complete_rows["minute_coverage"] == [(complete_rows["option_quotes"][0][0], "BTC", snap.coverage, True,
                                                 snap.listed, snap.usable)]
    assert snap.variance_index is not None
    assert complete_rows["volatility_index"][0][-1] == pytest.approx(60.5 - snap.variance_index)
    incomplete_rows = {part.table.name: len(part.rows) for part in minute_rows(incomplete, reading)}
    assert incomplete_rows == {"option_quotes": len(snap.quotes), "minute_coverage": 1, "surface_points": 0,
                               "surface_fits": 0, "volatility_index": 0}
