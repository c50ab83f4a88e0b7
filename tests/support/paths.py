"""Where the repository and the shared real-Deribit capture are, for every test."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "deribit"
WIRE_SAMPLE = SHARED_FIXTURES / "wire-2021-07-22-options-sample.jsonl"
QUANT_FIXTURES = Path(__file__).resolve().parent / "fixtures_quant"
