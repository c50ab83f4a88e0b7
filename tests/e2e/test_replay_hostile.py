"""Hostile wire logs through `python main.py replay` (issue 17): each bad line is counted with its
line number and skipped, the rest of the log replayed, and the program ends with a summary naming
the bad lines and status 1 (--strict: stops at the first); a log, a file or a --speed that cannot be
replayed at all is status 2 with a message. The 10 s bound is the issue's acceptance bound (before,
a first "t": 0 ticked every minute since 1970 for about 10 hours)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deribit.link import BAD_LINES_NAMED
from runtime.wirelog import MAX_LINE_BYTES
from tests.support.capture import wire_lines
from tests.support.replay import counts_in_file, replay_cli

#: The issue's acceptance bound for the replay of a hostile log, start to exit.
ACCEPTANCE_S = 10.0
DAY = 86_400.0


def t_of(text: str) -> float:
    return float(json.loads(text)["t"])


def at(t: object, text: str | None = None) -> str:
    """A record of the capture (default its first) with its time replaced (written as json writes it)."""
    record = json.loads(text if text is not None else wire_lines()[0])
    record["t"] = t
    return json.dumps(record)


def inserted(extra: dict[int, list[str]]) -> tuple[list[str], list[int]]:
    """The capture with ``extra`` lines inserted before its line i (0-based; len: at the end);
    (the lines, the inserted lines' numbers)."""
    capture = list(wire_lines())
    lines: list[str] = []
    numbers: list[int] = []
    for i in range(len(capture) + 1):
        for text in extra.get(i, []):
            lines.append(text)
            numbers.append(len(lines))
        if i < len(capture):
            lines.append(capture[i])
    return lines, numbers


def middle() -> int:
    return len(wire_lines()) // 2


HOSTILE: dict[str, Callable[[], dict[int, list[str]]]] = {
    "bad JSON in the middle": lambda: {middle(): ["{this is no record"]},
    "a first record at t 0": lambda: {0: [at(0)]},
    "a first record at t 1e300": lambda: {0: [at(1e300)]},
    "a first record at a negative t": lambda: {0: [at(-1e12)]},
    "NaN and infinite times": lambda: {0: [at(math.nan)], middle(): [at(math.inf), at(-math.inf),
                                                                      '{"t": 1e999, "dir": "open"}']},
    "a jump of more than a day forward and back": lambda: {
        middle(): [at(t_of(wire_lines()[middle()]) + DAY + 60, wire_lines()[middle()]),
                   at(t_of(wire_lines()[middle()]) - DAY - 60, wire_lines()[middle()])]},
    "a first record days ahead of the log": lambda: {0: [at(t_of(wire_lines()[0]) + 5 * DAY)]},
    "frames that are not text": lambda: {middle(): [
        json.dumps({"t": t_of(wire_lines()[middle()]), "dir": "in", "frame": {"jsonrpc": "2.0"}}),
        json.dumps({"t": t_of(wire_lines()[middle()]), "dir": "in", "frame": 42}),
        json.dumps({"t": t_of(wire_lines()[middle()]), "dir": "in"})]},
    "a line longer than the limit": lambda: {middle(): [
        json.dumps({"t": t_of(wire_lines()[middle()]), "dir": "in", "frame": "x" * (MAX_LINE_BYTES + 1)})]},
    "bad lines by the thousand": lambda: {middle(): ["][" for _ in range(3000)]},
}


def replay_within_bound(path: Path, tmp_path: Path, *options: str) -> tuple[int, dict[str, Any] | None, str]:
    started = time.monotonic()
    status, summary, stderr = replay_cli(path, tmp_path, *options, timeout_s=60)
    elapsed = time.monotonic() - started
    assert elapsed < ACCEPTANCE_S, f"the replay took {elapsed:.1f} s"
    return status, summary, stderr


def assert_names(summary: dict[str, Any], stderr: str, path: Path, bad: list[int]) -> None:
    """The summary counts every bad line and names the first (by number); stderr names them too."""
    assert summary["bad_lines"] == len(bad)
    named = [entry["line"] for entry in summary["first_bad_lines"]]
    assert named == bad[:BAD_LINES_NAMED]
    for number in named:
        assert f"{path}:{number}: " in stderr
    if len(bad) > BAD_LINES_NAMED:
        assert f"and {len(bad) - BAD_LINES_NAMED} more bad lines" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_log_is_replayed_past_its_bad_lines(case: str, tmp_path: Path) -> None:
    lines, bad = inserted(HOSTILE[case]())
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    status, summary, stderr = replay_within_bound(path, tmp_path)
    assert status == 1, stderr
    assert summary is not None
    assert_names(summary, stderr, path, bad)
    assert summary["complete"] is True
    # Everything else was replayed: the capture's own counts, no minute outside its real span.
    clean = counts_in_file(clean_log(tmp_path))
    assert summary["in_frames"] == clean["in_frames"]
    assert summary["notifications"] == clean["notifications"]
    assert summary["responses"] == clean["responses"]
    assert summary["malformed"] == 0
    assert summary["errors"] == len(bad)
    times = [t_of(text) for text in wire_lines()]
    assert summary["minutes"] == math.floor(max(times) / 60) - math.floor(times[0] / 60)


def clean_log(tmp_path: Path) -> Path:
    """The capture as it is."""
    path = tmp_path / "clean.jsonl"
    path.write_text("\n".join(wire_lines()) + "\n")
    return path


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    lines, bad = inserted({middle(): ["{this is no record"], middle() + 5: [at(0)]})
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    status, summary, stderr = replay_within_bound(path, tmp_path, "--strict")
    assert status == 1 and summary is not None
    assert_names(summary, stderr, path, bad[:1])
    assert summary["complete"] is False and f"line {bad[0]} is bad" in summary["failure"]
    before = tmp_path / "before.jsonl"
    before.write_text("\n".join(lines[:bad[0] - 1]) + "\n")
    whole = counts_in_file(clean_log(tmp_path))["in_frames"]
    assert summary["in_frames"] == counts_in_file(before)["in_frames"] < whole
    assert "the replay ended early" in stderr


def test_a_jump_within_the_setting_ticks_its_minutes_and_one_beyond_is_bad(tmp_path: Path) -> None:
    """deribit.replay_max_jump_s set to 600: the log's second half 500 s later is replayed (its minutes
    ticked, those of the real span only); a line 700 s past its neighbour is bad."""
    capture = list(wire_lines())
    half = middle()
    later = [at(t_of(text) + 500, text) for text in capture[half:]]
    beyond = at(t_of(capture[half]) + 500 + 700, capture[half])
    lines = [*capture[:half], *later[:3], beyond, *later[3:]]
    path = tmp_path / "jumps.jsonl"
    path.write_text("\n".join(lines) + "\n")
    status, summary, stderr = replay_within_bound(path, tmp_path, "--set", "deribit.replay_max_jump_s=600")
    assert status == 1 and summary is not None
    assert_names(summary, stderr, path, [half + 4])
    good = [t_of(text) for text in [*capture[:half], *later]]
    assert summary["minutes"] == math.floor(max(good) / 60) - math.floor(good[0] / 60) > 0
    assert summary["in_frames"] == counts_in_file(clean_log(tmp_path))["in_frames"]


def test_a_log_of_bad_lines_only_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([at(0), "", "garbage", at(-5)]) + "\n")
    status, summary, stderr = replay_within_bound(path, tmp_path)
    assert status == 1 and summary is not None
    assert_names(summary, stderr, path, [1, 3, 4])
    assert summary["in_frames"] == 0 and summary["minutes"] == 0 and summary["complete"] is True


@pytest.mark.parametrize("speed", ["nan", "0", "-1", "inf", "-inf", "fast"])
def test_a_speed_that_is_no_finite_positive_factor_is_refused(speed: str, tmp_path: Path) -> None:
    status, summary, stderr = replay_within_bound(clean_log(tmp_path), tmp_path, f"--speed={speed}")
    assert status == 2 and summary is None
    assert f"argument --speed: expected max or a finite factor above 0 such as 10, got {speed!r}" in stderr


def test_a_finite_speed_paces_the_log(tmp_path: Path) -> None:
    path = clean_log(tmp_path)
    status, summary, stderr = replay_within_bound(path, tmp_path, "--speed", "1000")
    assert status == 0 and summary is not None, stderr
    assert summary["bad_lines"] == 0 and summary["in_frames"] == counts_in_file(path)["in_frames"]


@pytest.mark.parametrize("kind", ["empty", "blank lines", "directory", "missing"])
def test_a_file_with_nothing_to_replay_is_status_2(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    expected = {"empty": "the file holds no records", "blank lines": "the file holds no records",
                "directory": "Is a directory", "missing": "No such file or directory"}[kind]
    if kind == "empty":
        path.write_text("")
    elif kind == "blank lines":
        path.write_text("\n  \n\n")
    elif kind == "directory":
        path.mkdir()
    status, summary, stderr = replay_within_bound(path, tmp_path)
    assert status == 2 and summary is None
    assert f"cannot replay {path}: {expected}" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "3000000"])
def test_the_jump_setting_is_refused_out_of_its_range(value: str, tmp_path: Path) -> None:
    status, summary, stderr = replay_within_bound(clean_log(tmp_path), tmp_path, "--set",
                                                  f"deribit.replay_max_jump_s={value}")
    assert status == 2 and summary is None
    assert "deribit.replay_max_jump_s: expected `float`" in stderr
    assert "above 0 and at most 31 days" in stderr and "Traceback" not in stderr
