"""PostgreSQL for the tests: find a server or start a throwaway cluster, and give each run its own database.

Server order: ``TEST_DATABASE_URL``; else the machine's server on 127.0.0.1:5432 (trust auth, user
``postgres``); else a throwaway cluster from the installed binaries in a temporary directory. On that
server each test run creates a database of its own (:class:`RunDatabase`, ``deskt_<pid>_<random>``)
and drops it at the end, so two runs on one machine never see each other's tables. Outage tests
always start their own :class:`ThrowawayCluster` (own directory, own port) so they never stop a
shared server.

``python -m tests.support.postgres ensure`` (run by ``make test``) makes sure one of those will work: when
no server answers and no binaries are installed it installs Debian's ``postgresql`` package if it
can (root or sudo), else it stops with the one command to run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# The maintenance database, which every server has; the tests' tables go in a database of the run's own.
DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def can_connect(url: str, timeout_s: float = 3.0) -> bool:
    import psycopg2

    try:
        conn = psycopg2.connect(_dsn(url), connect_timeout=max(1, int(timeout_s)))
    except psycopg2.Error:
        return False
    conn.close()
    return True


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (Debian keeps them off PATH)."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in versions:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def dead_url() -> Iterator[str]:
    """A PostgreSQL URL on a loopback port that refuses connections for as long as the block runs: the
    port is bound but never listened on, so no other process (another run's throwaway cluster) can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"postgresql+psycopg2://nobody@127.0.0.1:{s.getsockname()[1]}/none"


class RunDatabase:
    """A database of this run's own on ``server_url``'s server, created by :meth:`create` and dropped
    (with whatever connections are still open to it) by :meth:`drop`."""

    def __init__(self, server_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.name = f"deskt_{os.getpid()}_{secrets.token_hex(4)}"
        self.server_url = server_url
        self.url = make_url(server_url).set(database=self.name).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(_dsn(self.server_url), connect_timeout=5)
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> RunDatabase:
        import psycopg2

        try:
            self._admin(f'CREATE DATABASE "{self.name}"')
        except psycopg2.Error as exc:
            raise RuntimeError(f"cannot create the run's test database {self.name} on {_masked(self.server_url)}: "
                               f"{str(exc).strip()} (the role needs CREATEDB)") from None
        return self

    def drop(self) -> None:
        # FORCE (PostgreSQL 13+) ends the connections an unfinished test or a pool left open.
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory, on a free loopback port.

    initdb and pg_ctl refuse to run as root, so as root they run as the ``postgres`` user on a
    directory that user owns."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found; install them: apt-get install -y postgresql")
        self.bin_dir = found
        self.port = _free_port()  # chosen again if another process binds it before the server does
        self.root = Path(tempfile.mkdtemp(prefix="desk-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.url = f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"
        self._initialised = False
        self.url_given = False

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self) -> ThrowawayCluster:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
            self._initialised = True
        # The free port is only free when chosen: another run may bind it first. On the first start the
        # URL is not handed out yet, so a new port is fine; a restart must keep the URL and its port.
        for attempt in range(5):
            try:
                self._pg_ctl_start()
                break
            except subprocess.CalledProcessError:
                if self.url_given or attempt == 4 or "already in use" not in self.log_text():
                    raise
                self.port = _free_port()
                self.url = f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"
        self.url_given = True
        deadline = time.monotonic() + 20
        while not can_connect(self.url, 1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"throwaway PostgreSQL did not accept connections; see {self.root / 'log'}")
            time.sleep(0.1)
        return self

    def _pg_ctl_start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off", "start")

    def log_text(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        for mode in ("fast", "immediate"):  # never leave a server running on a deleted directory
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
                break
            except Exception:
                if not (self.data / "postmaster.pid").exists():
                    break
        shutil.rmtree(self.root, ignore_errors=True)


def server_url() -> tuple[str, ThrowawayCluster | None]:
    """A URL on the test server's maintenance database and, when one had to be started, its cluster."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        if not can_connect(explicit):
            raise RuntimeError(f"TEST_DATABASE_URL is set but does not answer: {_masked(explicit)}")
        return explicit, None
    if can_connect(DEFAULT_URL):
        return DEFAULT_URL, None
    if find_pg_bin() is not None:
        cluster = ThrowawayCluster().start()
        return cluster.url, cluster
    raise RuntimeError(
        "no PostgreSQL server answers on 127.0.0.1:5432 and no PostgreSQL binaries are installed; "
        "run: sudo apt-get install -y postgresql (or set TEST_DATABASE_URL)"
    )


@contextlib.contextmanager
def run_database(server: str | None = None) -> Iterator[str]:
    """The URL of a database of this run's own on ``server`` (a URL on its maintenance database; by
    default the test server of :func:`server_url`), dropped (and a throwaway server destroyed) when the
    block ends, however it ends."""
    url, cluster = (server, None) if server else server_url()
    try:
        database = RunDatabase(url).create()
        try:
            yield database.url
        finally:
            database.drop()
    finally:
        if cluster is not None:
            cluster.destroy()


def _check() -> int:
    """In CI, before pytest starts: a server that cannot be had stops the run here, with the reason."""
    try:
        with run_database():
            pass
    except Exception as exc:
        print(f"PostgreSQL for the tests is not usable: {exc}", file=sys.stderr)
        return 1
    return 0


def ensure() -> int:
    url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_URL
    if can_connect(url) or find_pg_bin() is not None:
        return _check() if in_ci() else 0
    # Two runs installing at once wait for dpkg's lock instead of failing on it.
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "postgresql"]
    update = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"]
    if os.geteuid() != 0:
        if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
            install, update = ["sudo", "-n", *install], ["sudo", "-n", *update]
        else:
            print("PostgreSQL is needed for the tests and none is installed. Run:\n"
                  "    sudo apt-get install -y postgresql\nthen `make test` again.", file=sys.stderr)
            return 1
    print("installing PostgreSQL (Debian package postgresql) for the tests ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(update, check=False, env=env)
    result = subprocess.run(install, env=env)
    if result.returncode != 0 or find_pg_bin() is None:
        print("installing PostgreSQL failed; run: sudo apt-get install -y postgresql", file=sys.stderr)
        return 1
    return _check() if in_ci() else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["ensure"]:
        sys.exit(ensure())
    print("usage: python -m tests.support.postgres ensure", file=sys.stderr)
    sys.exit(2)
