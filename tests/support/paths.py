"""Where the repository and the shared real-Deribit capture are, for every test.

Only paths here: nothing is read at import, so a missing ``../shared`` fails the tests that need
the capture (with :func:`capture`'s message), not the collection of every module that names it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "deribit"
WIRE_SAMPLE = SHARED_FIXTURES / "wire-2021-07-22-options-sample.jsonl"
QUANT_FIXTURES = Path(__file__).resolve().parent / "fixtures_quant"


def capture(name: str = "") -> Path:
    """The capture's directory, or one file in it; fails the calling test, saying what is missing
    and where it should be, when it is not there."""
    path = SHARED_FIXTURES / name if name else SHARED_FIXTURES
    if not path.exists():
        pytest.fail(f"the real Deribit capture is missing: {path} (shared/ must sit beside the repo, "
                    f"at {REPO.parent / 'shared'})", pytrace=False)
    return path
