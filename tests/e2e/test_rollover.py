"""The daily rollover in a replay: a generated wire log across 08:00 UTC through the whole
program drops the expired instruments' books and picks up the new listings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from actors.bookkeeper import GetBookStats, GetTops
from desk.book_family import BookFamily
from messages.market import BookSnapshot
from messages.state import ChainSnapshot
from runtime.actor import Actor, handles
from runtime.supervisor import ActorSpec
from simulator.generate import generate_wire_log
from simulator.settings import SimSettings
from tests.support.replay import replay_summary, replayed_program
from tests.support.settings import make_settings

pytestmark = pytest.mark.usefixtures("isolated_cwd")  # the program's data/ goes to a temp dir

ROLLOVER = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC).timestamp()
EXPIRING, LISTED = "20NOV26", "21NOV26"


class ChainCollector(Actor):
    @handles(ChainSnapshot)
    def on_chain(self, chain: ChainSnapshot) -> None:
        self.chains = [*getattr(self, "chains", []), chain]

    @handles(str)
    def on_ask(self, _what: str) -> list[ChainSnapshot]:
        return list(getattr(self, "chains", []))


@pytest.fixture(scope="module")
def wire_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rollover") / "wire.jsonl"
    counts = generate_wire_log(path, minutes=4, start=ROLLOVER - 120, settings=SimSettings(chain="small"),
                               updates_per_s=1.0)
    assert counts["state"] > 0, "the generator must emit instrument.state across 08:00"
    return path


def test_replay_across_0800_drops_expired_books_and_picks_up_new_listings(wire_log: Path, tmp_path: Path) -> None:
    settings = make_settings(currencies=["BTC", "ETH"])
    chain_collector = ActorSpec("chains", lambda ctx: ChainCollector.start(ctx))
    with replayed_program(settings, wire_log, tmp_path / "logs", extra_specs=[chain_collector]) as supervisor:
        summary = replay_summary(supervisor, timeout_s=120)
        assert summary["resyncs"] == 0 and summary["errors"] == 0
        assert summary["minutes"] == 4
        for currency in ("BTC", "ETH"):
            keeper = supervisor.refs()[f"books-{currency}-option"]
            tops: dict[str, Any] = keeper.ask(GetTops(), timeout=10)
            stats = keeper.ask(GetBookStats(), timeout=10)
            assert not [n for n in tops if EXPIRING in n], "expired books are still kept"
            listed = [n for n in tops if LISTED in n]
            assert len(listed) == 5 * 2, listed  # the small chain lists 5 strikes x call/put
            assert stats["stats"].dropped == 10 and stats["stats"].gaps == 0 and stats["stats"].resubscribes == 0
            # The log ends with the link's close: from then on no book is known to be the exchange's.
            assert sorted(stats["stale"]) == sorted(tops)
        chains: list[ChainSnapshot] = supervisor.refs()["chains"].ask("chains", timeout=10)
        by_minute = {(c.currency, c.kind, c.at): c for c in chains}
        before = by_minute[("BTC", "option", ROLLOVER - 60)]
        after = by_minute[("BTC", "option", ROLLOVER + 60)]
        assert any(EXPIRING in q.instrument_name for q in before.options)
        assert not any(LISTED in q.instrument_name for q in before.options)
        assert not any(EXPIRING in q.instrument_name for q in after.options)
        assert sum(LISTED in q.instrument_name for q in after.options) == 10
        assert all(not q.stale and q.bid is not None for q in after.options if LISTED in q.instrument_name)
        assert all(not q.stale for c in chains if c.kind == "option" for q in c.options)
        assert [q.expiry_ms for q in after.options] == sorted(q.expiry_ms for q in after.options)
        assert {c.kind for c in chains} == {"option", "future"}
        assert all(c.futures and not c.options for c in chains if c.kind == "future")


def test_the_rollover_alone_drops_expired_books() -> None:
    """Without instrument.state notifications (a missed one), the 08:00 rollover still drops
    what expired, and a late message for an expired instrument does not bring it back."""
    family = BookFamily("BTC", "option")
    for name in (f"BTC-{EXPIRING}-60000-C", f"BTC-{LISTED}-60000-C"):
        family.on_snapshot(BookSnapshot(instrument_name=name, timestamp=1, change_id=1,
                                        bids=(("new", 0.01, 1.0),), asks=(("new", 0.02, 1.0),)), ROLLOVER - 10)
    assert family.drop_expired(ROLLOVER) == [f"BTC-{EXPIRING}-60000-C"]
    late = BookSnapshot(instrument_name=f"BTC-{EXPIRING}-60000-C", timestamp=2, change_id=2)
    assert family.on_snapshot(late, ROLLOVER + 1) == ()
    assert set(family.entries) == {f"BTC-{LISTED}-60000-C"}
    # A settled notification drops a book too; a listing creates one that waits for its snapshot.
    assert family.instrument_state(f"BTC-{LISTED}-60000-C", "settled", ROLLOVER + 2)
    family.instrument_state("BTC-22NOV26-60000-C", "started", ROLLOVER + 3)
    assert family.stale_names() == ["BTC-22NOV26-60000-C"]
    assert not family.instrument_state("ETH-22NOV26-3000-C", "started", ROLLOVER + 3)
    assert "ETH-22NOV26-3000-C" not in family.entries
