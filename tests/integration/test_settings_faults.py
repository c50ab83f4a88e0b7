"""Issue 17, settings and URLs: every bad file, value or URL is refused at load with status 2 and a
message naming the file, variable or flag and saying why; never a traceback, never a silent start.

The table runs ``main.py config show`` in-process (the same load as ``run``: a case that wrongly
passed would otherwise start a desk); a subprocess test shows ``run`` itself exits 2 the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from main import main
from runtime.secrets import MASK, mask_url, url_password, url_passwords
from tests.support.paths import REPO

PASSWORD = "pw@with-at-9"


@dataclass(frozen=True)
class Case:
    """``args`` after ``config show`` (``{tmp}`` is the test's directory), the environment added,
    what the message must say: where the value came from and why it is refused."""

    args: tuple[str, ...]
    source: str
    says: str
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "fifo.toml")


DEEP_ARRAYS = b"currencies = " + b"[" * 5000 + b"]" * 5000 + b"\n"  # past the parser's recursion
DEEP_TABLES = b"[deribit]\nheartbeat_s = " + b"{a = " * 9 + b"1" + b"}" * 9 + b"\n"  # parsed, then too deep
LONG_PATH = "/tmp/" + "d/" * 3000 + "x.db"

CASES: dict[str, Case] = {
    # -- settings files ------------------------------------------------------------------------------
    "file not UTF-8": Case(("--config", "{tmp}/latin1.toml"), "settings file {tmp}/latin1.toml",
                           "is not UTF-8 text (byte 0xe9 at offset 10); TOML files are UTF-8",
                           prepare=_write("latin1.toml", b'venue = "r\xe9seau"\n')),
    "file is a directory": Case(("--config", "{tmp}"), "settings file {tmp}",
                                "is a directory; give a settings file (TOML) to --config"),
    "file nests past the parser": Case(("--config", "{tmp}/deep.toml"), "settings file {tmp}/deep.toml",
                                       "nests tables or arrays more than 8 levels deep",
                                       prepare=_write("deep.toml", DEEP_ARRAYS)),
    "file nests past the schema": Case(("--config", "{tmp}/deep.toml"), "settings file {tmp}/deep.toml",
                                       "nests tables or arrays more than 8 levels deep",
                                       prepare=_write("deep.toml", DEEP_TABLES)),
    "file /proc/self/mem": Case(("--config", "/proc/self/mem"), "settings file /proc/self/mem",
                                "cannot be read: Input/output error"),
    "file a device": Case(("--config", "/dev/zero"), "settings file /dev/zero",
                          "is not a regular file (a device, FIFO or socket)"),
    "file a FIFO nobody writes": Case(("--config", "{tmp}/fifo.toml"), "settings file {tmp}/fifo.toml",
                                      "is not a regular file (a device, FIFO or socket)", prepare=_fifo),
    "file too large": Case(("--config", "{tmp}/big.toml"), "settings file {tmp}/big.toml",
                           "is larger than 1,048,576 bytes",
                           prepare=_write("big.toml", b"#" * (2 << 20))),
    "file path too long": Case(("--config", "/tmp/" + "c" * 6000), "settings file /tmp/ccc",
                               "...(6,005 characters) cannot be opened: File name too long"),
    "file missing": Case(("--config", "{tmp}/none.toml"), "settings file {tmp}/none.toml", "does not exist"),
    "file not TOML": Case(("--config", "{tmp}/bad.toml"), "settings file {tmp}/bad.toml", "not valid TOML",
                          prepare=_write("bad.toml", b"venue = \n")),
    # -- database URLs -------------------------------------------------------------------------------
    "SQLite under a file": Case(("--db", "sqlite:///{tmp}/plain/x.db"), "command line (--db sqlite:///{tmp}/plain/x.db)",
                                "database.url: database URL 'sqlite:///{tmp}/plain/x.db': {tmp}/plain/x.db "
                                "cannot be created: {tmp}/plain is not a directory",
                                prepare=_write("plain", b"not a directory")),
    "SQLite /etc/passwd/x.db": Case(("--db", "sqlite:////etc/passwd/x.db"), "command line (--db sqlite:////etc/passwd/x.db)",
                                    "/etc/passwd/x.db cannot be created: /etc/passwd is not a directory"),
    "SQLite 6,000-character path": Case(("--db", f"sqlite:///{LONG_PATH}"), "command line (--db sqlite:///",
                                        f"the path is {len(LONG_PATH):,} characters long; this system takes at most"),
    "SQLite 300-character name": Case(("--db", f"sqlite:///{{tmp}}/{'n' * 300}.db"), "command line (--db sqlite:///",
                                      "a name in the path is 303 characters long; this system takes at most 255"),
    "SQLite path a directory": Case(("--db", "sqlite:///{tmp}"), "command line (--db sqlite:///{tmp})",
                                    "{tmp} is a directory, not a file"),
    "SQLite in memory, no path": Case(("--db", "sqlite://"), "command line (--db sqlite://)",
                                      "database URL 'sqlite://' is an in-memory SQLite database: everything recorded "
                                      "is lost at exit; give a file (sqlite:///data/deribit.sqlite3), or set "
                                      "database.allow_in_memory = true to mean it"),
    "SQLite :memory:": Case(("--db", "sqlite:///:memory:"), "command line (--db sqlite:///:memory:)",
                            "is an in-memory SQLite database"),
    "SQLite memory URI": Case(("--db", "sqlite:///file:x?mode=memory&uri=true"), "command line (--db sqlite:///file:",
                              "is an in-memory SQLite database"),
    "SQLite in memory from the environment": Case((), "environment variable DATABASE_URL",
                                                  "is an in-memory SQLite database", env={"DATABASE_URL": "sqlite://"}),
    "PostgreSQL without host": Case(("--db", "postgresql+psycopg2://"), "command line (--db postgresql+psycopg2://)",
                                    "database URL 'postgresql+psycopg2://' names no host: write "
                                    "postgresql+psycopg2://USER@HOST/DATABASE"),
    "PostgreSQL user but no host": Case(("--db", "postgresql+psycopg2://desk@/x"), "command line (--db ",
                                        "names no host"),
    "PostgreSQL without database": Case(("--db", "postgresql+psycopg2://desk@db.example"), "command line (--db ",
                                        "database URL 'postgresql+psycopg2://desk@db.example' names no database"),
    "PostgreSQL raw @ in the password": Case(("--db", f"postgresql+psycopg2://desk:{PASSWORD}@db/x"),
                                             "command line (--db postgresql+psycopg2://desk:***@db/x)",
                                             "holds more than one @: an @ inside the user name or password is "
                                             "written %40"),
    "not a database URL": Case(("--db", "mysql://desk@db/x"), "command line (--db mysql://desk@db/x)",
                               "unsupported database 'mysql'"),
    # -- values --------------------------------------------------------------------------------------
    "heartbeat NaN": Case(("--set", "deribit.heartbeat_s=nan"), "command line (--set deribit.heartbeat_s=nan)",
                          "deribit.heartbeat_s: expected `float` > 0.0 (a finite number above 0)"),
    "heartbeat 0": Case(("--set", "deribit.heartbeat_s=0"), "command line (--set deribit.heartbeat_s=0)",
                        "deribit.heartbeat_s: expected `float` > 0.0"),
    "heartbeat infinite": Case(("--set", "deribit.heartbeat_s=inf"), "command line (--set deribit.heartbeat_s=inf)",
                               "(a finite number above 0)"),
    "heartbeat NaN in a file": Case(("--config", "{tmp}/nan.toml"), "settings file {tmp}/nan.toml",
                                    "deribit.heartbeat_s: expected `float` > 0.0",
                                    prepare=_write("nan.toml", b"[deribit]\nheartbeat_s = nan\n")),
    "subscribe batch 0": Case(("--set", "deribit.subscribe_batch_size=0"), "command line (--set ",
                              "deribit.subscribe_batch_size: expected `int` >= 1"),
    "max_restarts -1": Case((), "environment variable DESK__SUPERVISOR__MAX_RESTARTS",
                            "supervisor.max_restarts: expected `int` >= 0",
                            env={"DESK__SUPERVISOR__MAX_RESTARTS": "-1"}),
    "simulator port 70000": Case(("--set", "simulator.port=70000"), "command line (--set simulator.port=70000)",
                                 "simulator.port: expected `int` <= 65535 (0 (a free loopback port) to 65535)"),
    "log field limit 0": Case(("--set", "logging.max_field_chars=0"), "command line (--set ",
                              "logging.max_field_chars: expected `int` >= 64"),
    "value nests past the parser": Case((), "environment variable DESK__DERIBIT__HEARTBEAT_S",
                                        "nests tables or arrays more than 8 levels deep",
                                        env={"DESK__DERIBIT__HEARTBEAT_S": "[" * 3000 + "]" * 3000}),
    "key nests too deep": Case((), "environment variable DESK__A__B__C__D__E__F__G__H__I",
                               "names a key 9 levels deep", env={"DESK__A__B__C__D__E__F__G__H__I": "1"}),
    # -- the program's places ------------------------------------------------------------------------
    "log directory under a file": Case(("--set", "logging.dir={tmp}/plain/logs"), "command line (--set logging.dir=",
                                       "logging.dir: {tmp}/plain/logs cannot be created: {tmp}/plain is not a "
                                       "directory", prepare=_write("plain", b"")),
    "data directory a file": Case(("--set", "data_dir={tmp}/plain"), "command line (--set data_dir=",
                                  "data_dir: {tmp}/plain is not a directory", prepare=_write("plain", b"")),
    "wire log a directory": Case(("--record-wire", "{tmp}"), "command line (--record-wire {tmp})",
                                 "deribit.record_wire: {tmp} is a directory, not a file"),
    # -- venue URLs ----------------------------------------------------------------------------------
    "venue URL not a websocket": Case(("--venue-url", "http://127.0.0.1:8765"), "command line (--venue-url http:",
                                      "deribit.url: expected `str` matching regex"),
    "mainnet URL as the simulator": Case(("--venue-url", "wss://www.deribit.com/ws/api/v2"),
                                         "command line (--venue-url wss://www.deribit.com/ws/api/v2)",
                                         "venue: deribit.url 'wss://www.deribit.com/ws/api/v2' is Deribit mainnet: "
                                         "say venue = \"mainnet\" (--venue mainnet --live to trade), got 'simulator'"),
    "mainnet URL as testnet": Case(("--venue", "testnet", "--venue-url", "wss://www.deribit.com/ws/api/v2"),
                                   "command line (--venue-url", "is Deribit mainnet"),
}


def _filled(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_setting_exits_2_naming_where_and_why(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    if case.prepare is not None:
        case.prepare(tmp_path)
    for key in [k for k in os.environ if k.startswith("DESK__") or k in ("DATABASE_URL", "DERIBIT_VENUE")]:
        monkeypatch.delenv(key)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no settings.toml; relative data/ and logs/ under the test's directory
    status = main(["config", "show", *(_filled(arg, tmp_path) for arg in case.args)])
    out, err = capsys.readouterr()
    assert status == 2, f"status {status}; stdout {out[:300]!r}"
    assert out == "" and err.startswith("settings error: ") and err.count("\n") == 1, err[:600]
    assert _filled(case.source, tmp_path) in err, err[:600]
    assert _filled(case.says, tmp_path) in err, err[:600]
    assert "Traceback" not in err and PASSWORD not in err and len(err) < 2000


def test_run_refuses_them_too_before_starting_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESK__") and k != "DATABASE_URL"}
    for args, said in ((["--db", "sqlite://"], "in-memory SQLite"), (["--config", "/proc/self/mem"], "Input/output"),
                       (["--set", "supervisor.max_restarts=-1"], ">= 0")):
        result = subprocess.run([sys.executable, str(REPO / "main.py"), "run", *args], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "logs").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [
    ["--db", "sqlite:///:memory:", "--set", "database.allow_in_memory=true"],
    ["--db", "postgresql+psycopg2://desk@/x?host=/var/run/postgresql"],
    ["--db", "postgresql+psycopg2://desk:p%40ss@db.example:5432/x"],
    ["--venue-url", "ws://127.0.0.1:8765/ws/api/v2"],
    ["--venue", "testnet", "--venue-url", "wss://test.deribit.com/ws/api/v2"],
])
def test_what_is_meant_is_taken(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["config", "show", *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "p%40ss" not in out and "p@ss" not in out


_PASSWORD_CHARS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)


@given(password=_PASSWORD_CHARS)
def test_a_url_password_is_masked_whole_whatever_it_holds(password: str) -> None:
    url = f"postgresql+psycopg2://desk:{password}@db.example:5432/x"
    assert mask_url(url) == f"postgresql+psycopg2://desk:{MASK}@db.example:5432/x"
    assert url_password(url) == password
    assert password in url_passwords(url)
