"""PostgreSQL for the tests: find a server or start a throwaway cluster.

Order: ``TEST_DATABASE_URL``; else the machine's server on 127.0.0.1:5432 (database ``test``);
else a throwaway cluster from the installed binaries in a temporary directory. Outage tests
always start their own :class:`ThrowawayCluster` so they never stop a shared server.

``python -m tests.support.postgres ensure`` (run by ``make test``) makes sure one of those will work: when
no server answers and no binaries are installed it installs Debian's ``postgresql`` package if it
can (root or sudo), else it stops with the one command to run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def can_connect(url: str, timeout_s: float = 3.0) -> bool:
    import psycopg2

    dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=max(1, int(timeout_s)))
    except psycopg2.Error:
        return False
    conn.close()
    return True


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
        return s.getsockname()[1]


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory, on a free loopback port.

    initdb and pg_ctl refuse to run as root, so as root they run as the ``postgres`` user on a
    directory that user owns."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found; install them: apt-get install -y postgresql")
        self.bin_dir = found
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="desk-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.url = f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/postgres"
        self._initialised = False

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self) -> ThrowawayCluster:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
            self._initialised = True
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off", "start")
        deadline = time.monotonic() + 20
        while not can_connect(self.url, 1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"throwaway PostgreSQL did not accept connections; see {self.root / 'log'}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def server_url() -> tuple[str, ThrowawayCluster | None]:
    """A URL for the shared test database and, when one had to be started, its cluster."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        if not can_connect(explicit):
            raise RuntimeError(f"TEST_DATABASE_URL is set but does not answer: {explicit}")
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


def ensure() -> int:
    url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_URL
    if can_connect(url) or find_pg_bin() is not None:
        return 0
    install = ["apt-get", "install", "-y", "-q", "postgresql"]
    update = ["apt-get", "update", "-q"]
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
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["ensure"]:
        sys.exit(ensure())
    print("usage: python -m tests.support.postgres ensure", file=sys.stderr)
    sys.exit(2)
