"""Reading a wire log for replay (issue 17): a bad line is named and skipped, the lines after it
are read on; a time that is not finite, positive and before the year 10000, or that jumps more
than the setting from the last good line, is a bad line; a wrong first time is found by the
records after it."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import wirelog
from runtime.wirelog import (
    LATEST_TIME,
    BadLine,
    WireLogError,
    WireRecord,
    first_time,
    read_wire_log,
    scan_wire_log,
)

T0 = 1_626_993_723.0  # the real capture's first second (2021-07-22 22:42:03 UTC)
DAY = 86_400.0


def line(t: object, number: int, direction: str = "in") -> str:
    """A record whose frame is its own line number (so a test can tell which lines came out)."""
    return json.dumps({"t": t, "dir": direction, "frame": str(number)})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def scanned(path: Path, max_jump_s: float = DAY) -> tuple[list[int], dict[int, str]]:
    """(the line numbers of the records that came out, in order; {bad line number: reason})."""
    records: list[int] = []
    bad: dict[int, str] = {}
    for item in scan_wire_log(path, max_jump_s=max_jump_s):
        if isinstance(item, BadLine):
            assert item.line not in bad
            bad[item.line] = item.reason
        else:
            assert item.frame is not None
            records.append(int(item.frame))
    return records, bad


def test_every_kind_of_bad_line_is_named_and_the_rest_is_read(tmp_path: Path) -> None:
    texts = [
        line(T0, 1),
        "{this is no record",                                        # 2: not JSON
        json.dumps({"t": T0 + 1, "dir": "in", "frame": 42}),         # 3: a frame that is not text
        json.dumps({"t": T0 + 1, "dir": "sideways"}),                # 4: no such direction
        json.dumps({"t": T0 + 1, "dir": "in"}),                      # 5: an in record without its frame
        line(0, 6), line(-1e12, 7),                                  # not positive
        '{"t": NaN, "dir": "open"}', '{"t": Infinity, "dir": "open"}',  # 8, 9: not JSON numbers
        '{"t": 1e999, "dir": "open"}',                               # 10: a JSON number too large: infinite
        line(1e300, 11), line(T0 * 1000, 12),                        # past the year 9999 (12: milliseconds)
        line(T0 + DAY + 1, 13), line(T0 - DAY - 1, 14),              # a jump of more than a day
        "",                                                          # 15: blank, skipped
        line(T0 + 2, 16), line(T0 + DAY, 17), line(T0, 18),         # within a day of the line before
        # 19 (below): a frame that is not UTF-8
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(("\n".join(texts) + "\n").encode() + b'{"t": 1626993724.0, "dir": "in", "frame": "\xff"}\n')
    records, bad = scanned(path)
    assert records == [1, 16, 17, 18]
    assert sorted(bad) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 19]
    assert bad[3].startswith("not a wire-log record") and "$.frame" in bad[3]
    assert bad[5] == "a 'in' record without its frame"
    assert "not a finite positive time" in bad[6] and "not a finite positive time" in bad[7]
    assert "not a wire-log record" in bad[8] and "out of range" in bad[10]
    assert "past the year 9999" in bad[11] and "past the year 9999" in bad[12]
    assert "jumps +86401 s" in bad[13] and "jumps -86401 s" in bad[14]


def test_the_jump_is_a_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "w.jsonl", [line(T0, 1), line(T0 + 600, 2), line(T0 + 1300, 3), line(T0 + 1200, 4)])
    records, bad = scanned(path, max_jump_s=650)
    assert records == [1, 2, 4] and list(bad) == [3] and "at most 650 s either way" in bad[3]
    assert scanned(path, max_jump_s=700)[0] == [1, 2, 3, 4]


def test_a_wrong_first_time_is_the_bad_line_not_every_line_after_it(tmp_path: Path) -> None:
    path = write(tmp_path / "w.jsonl", [line(T0 + 5 * DAY, 1), *(line(T0 + i, i) for i in range(2, 6))])
    records, bad = scanned(path)
    assert records == [2, 3, 4, 5] and list(bad) == [1]
    assert "disagrees with the log's time" in bad[1]
    assert first_time(path) == T0 + 2


def test_an_outlier_second_line_does_not_condemn_the_first(tmp_path: Path) -> None:
    path = write(tmp_path / "w.jsonl", [line(T0, 1), line(T0 + 5 * DAY, 2), line(T0 + 2, 3), line(T0 + 3, 4)])
    records, bad = scanned(path)
    assert records == [1, 3, 4] and list(bad) == [2]
    assert first_time(path) == T0


def test_times_that_never_agree_take_the_first(tmp_path: Path) -> None:
    count = wirelog._UNCONFIRMED_MAX + 3
    path = write(tmp_path / "w.jsonl", [line(T0 + i * 2 * DAY, i) for i in range(1, count + 1)])
    records, bad = scanned(path)
    assert records == [1] and sorted(bad) == list(range(2, count + 1))
    one = write(tmp_path / "one.jsonl", [line(T0, 1)])
    assert scanned(one) == ([1], {})


def test_a_line_longer_than_the_limit_is_skipped_without_being_held(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wirelog, "MAX_LINE_BYTES", 200)
    fits = json.dumps({"t": T0 + 1, "dir": "in", "frame": "2"})
    fits = fits[:-1] + " " * (200 - 1 - len(fits)) + "}"  # 199 bytes and its newline: exactly the limit
    huge = json.dumps({"t": T0 + 2, "dir": "in", "frame": "x" * 5000})
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join([line(T0, 1), fits, huge, line(T0 + 3, 4), huge]))  # the last without a newline
    records, bad = scanned(path)
    assert records == [1, 2, 4]
    assert bad == {3: "longer than 200 bytes", 5: "longer than 200 bytes"}


def test_first_time_and_the_strict_reader(tmp_path: Path) -> None:
    path = write(tmp_path / "w.jsonl", [line(0, 1), "junk", line(T0, 3), line(T0 + 1, 4)])
    assert first_time(path) == T0
    with pytest.raises(WireLogError, match=r"w.jsonl:1: t 0.0 is not a finite positive time"):
        list(read_wire_log(path))
    none = write(tmp_path / "none.jsonl", [line(0, 1), "junk"])
    assert first_time(none) is None
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert first_time(empty) is None and list(scan_wire_log(empty)) == []


times = st.one_of(
    st.floats(min_value=T0 - 3 * DAY, max_value=T0 + 3 * DAY),  # near the log's time: jumps of every size
    st.floats(allow_nan=True, allow_infinity=True),              # anything at all
    st.sampled_from([0.0, -1.0, 1e300, LATEST_TIME, LATEST_TIME + 1]),
)
lines = st.one_of(times.map(lambda t: ("record", t)), st.sampled_from([("junk", 0.0), ("blank", 0.0)]))


@given(st.lists(lines, max_size=40), st.sampled_from([60.0, 3600.0, DAY]))
def test_every_line_is_a_record_or_a_bad_line_and_good_times_never_jump(tmp_path_factory: pytest.TempPathFactory,
                                                                          spec: list[tuple[str, float]],
                                                                          max_jump_s: float) -> None:
    texts = []
    for number, (kind, t) in enumerate(spec, 1):
        if kind == "record":
            # json.dumps writes NaN and Infinity, which are not JSON: those lines are bad too.
            texts.append(line(t, number))
        else:
            texts.append("" if kind == "blank" else "}{")
    path = tmp_path_factory.mktemp("prop") / "w.jsonl"
    path.write_text("".join(text + "\n" for text in texts))
    records = [item for item in scan_wire_log(path, max_jump_s=max_jump_s) if isinstance(item, WireRecord)]
    numbers, bad = scanned(path, max_jump_s)
    # Each line that is not blank comes out exactly once, as a record or as a bad line; records in order.
    assert sorted([*numbers, *bad]) == [n for n, text in enumerate(texts, 1) if text]
    assert numbers == sorted(numbers)
    # Good times are finite, positive and before 10000, and each is within the jump of the one before:
    # the replay clock (the latest good time) never steps further, so the minute schedule covers the
    # log's real span only.
    good = [r.t for r in records]
    assert all(math.isfinite(t) and 0 < t <= LATEST_TIME for t in good)
    assert all(abs(b - a) <= max_jump_s for a, b in itertools.pairwise(good))
    # A log whose times all agree loses nothing.
    valid = [t for kind, t in spec if kind == "record" and math.isfinite(t) and 0 < t <= LATEST_TIME]
    if spec and len(valid) == len(spec) and max(valid) - min(valid) <= max_jump_s:
        assert not bad
