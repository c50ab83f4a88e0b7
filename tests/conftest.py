"""Shared fixtures. PostgreSQL tests never skip: if no server can be found or started they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import SHARED_FIXTURES as FIXTURES

os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The shared PostgreSQL test server (TEST_DATABASE_URL, 127.0.0.1:5432, or a throwaway)."""
    from tests.support.postgres import server_url

    url, cluster = server_url()
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.destroy()


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.exists():
        pytest.fail(f"the real Deribit capture is missing: {FIXTURES} (shared/ must sit beside the repo)")
    return FIXTURES


@pytest.fixture
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary directory, so that the program's relative data/ and logs/ (SQLite file,
    spool, console history) land there and not in the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
