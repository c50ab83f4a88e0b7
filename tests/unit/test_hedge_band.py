"""The hedger's band (``hedger.max_delta_mismatch``, the console's live ``setHedgeDeltaStep``) has
one range, declared with the settings (:data:`config.settings.MAX_DELTA_MISMATCH`): the settings,
the console's grammar and the Hedger refuse the same values, each saying what is allowed."""

from __future__ import annotations

import pytest

from config.settings import MAX_DELTA_MISMATCH, SettingsError
from console.grammar import ParseError, SetHedgeStep, parse_line
from messages.hedging import SetHedgeBand
from tests.support.hedge_rig import Rig
from tests.support.settings import make_settings

# Zero and below, not a number, past the bound by a hair, the 560000, and 10 coins (an
# absurd band for BTC).
OUT_OF_RANGE = [0.0, -0.01, float("nan"), float("inf"), MAX_DELTA_MISMATCH * (1 + 1e-9), 560_000.0, 10.0]


def test_the_widest_band_is_a_few_coins_of_delta() -> None:
    assert 1.0 <= MAX_DELTA_MISMATCH < 10.0


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_the_settings_refuse_a_band_out_of_its_range(value: float) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings({"hedger.max_delta_mismatch": value})
    assert "hedger.max_delta_mismatch" in str(info.value)
    assert f"(above 0 and at most {MAX_DELTA_MISMATCH:g} coins of delta)" in str(info.value)
    assert make_settings({"hedger.max_delta_mismatch": MAX_DELTA_MISMATCH}).hedger.max_delta_mismatch == 5.0


@pytest.mark.parametrize("text", ["560000", "0", "0.0", "5.00000001", "10"])
def test_the_console_refuses_a_delta_step_out_of_its_range(text: str) -> None:
    result = parse_line(f"setHedgeDeltaStep:{text}")
    assert isinstance(result, ParseError), result
    assert (f"setHedgeDeltaStep needs a number of coins of delta above 0 and at most {MAX_DELTA_MISMATCH:g}, "
            f"got '{text}'") in str(result)
    assert "setHedgeDeltaStep:0.01" in result.hint


def test_the_console_takes_a_delta_step_up_to_the_bound() -> None:
    assert parse_line(f"setHedgeDeltaStep:{MAX_DELTA_MISMATCH:g}") == SetHedgeStep(MAX_DELTA_MISMATCH)
    assert parse_line("setHedgeDeltaStep:0.00000001") == SetHedgeStep(1e-8)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_the_hedger_refuses_a_band_out_of_its_range_and_keeps_its_own(value: float) -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.0)
    before = rig.h.band
    rig.h.on_set_band(SetHedgeBand(max_delta_mismatch=value, origin="console", request_key="k1"), rig.now)
    status = rig.last_status()
    assert rig.h.band == before == status.band and status.request_key == "k1"
    assert "band refused: the band must be above 0 and at most 5 BTC of delta" in status.message
    assert "hedge_band_refused" in rig.log.names("warning")


def test_the_hedger_takes_a_band_up_to_the_bound() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.0)
    rig.h.on_set_band(SetHedgeBand(max_delta_mismatch=MAX_DELTA_MISMATCH, origin="console"), rig.now)
    assert rig.h.band == MAX_DELTA_MISMATCH and rig.last_status().band == MAX_DELTA_MISMATCH
