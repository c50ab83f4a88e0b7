"""Shared fixtures. PostgreSQL tests never skip: if no server can be found or started they fail.

Everything a run writes is its own, so that two runs on one machine never collide: its PostgreSQL
database (created here, dropped at the end), its working directory (the program's relative data/
and logs/), hypothesis's files (no example database, its cache in a temporary directory), pytest's
temporary directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.support.desk import sim_desk  # noqa: F401  (the desk-on-simulator fixture, for every test)
from tests.support.paths import capture

if TYPE_CHECKING:
    from tests.support.postgres import ThrowawayCluster

# Hypothesis's "ci" profile: derandomised, no deadline (a loaded machine is not a bug), and no example
# database, which would otherwise be .hypothesis/ in the repository, shared by concurrent runs.
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="desk-hypothesis-"))


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (a timeout, a closed CI job) still runs session teardown, like Ctrl-C,
    # so its database is dropped and its throwaway server stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    # Hypothesis's own files (its cache of the code's constants) go to the run's directory, not .hypothesis/.
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def run_cwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole run works in a directory of its own, so that code writing to relative paths (the
    settings' default data/ and logs/) never writes into the repository or into another run's files."""
    before = Path.cwd()
    here = tmp_path_factory.mktemp("cwd")
    os.chdir(here)
    try:
        yield here
    finally:
        os.chdir(before)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this run's own (``deskt_<pid>_<random>``), on TEST_DATABASE_URL's server,
    127.0.0.1:5432 or a throwaway cluster; dropped when the run ends, also after failures or Ctrl-C."""
    from tests.support.postgres import run_database

    with run_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test's own database, once on SQLite (a file) and once on PostgreSQL (a private schema)."""
    from tests.support.sql import private_schema

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'desk.sqlite3'}"
        return
    with private_schema(request.getfixturevalue("pg_url")) as url:
        yield url


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster of the module's own, to stop or hang (never the shared server)."""
    from tests.support.postgres import ThrowawayCluster

    c = ThrowawayCluster().start()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture
def fixtures_dir() -> Path:
    """The real Deribit capture's directory; the test fails, saying where it should be, if it is missing."""
    return capture()


@pytest.fixture
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary directory, so that the program's relative data/ and logs/ (SQLite file,
    spool, console history) land there and not in the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
