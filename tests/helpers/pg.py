"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, start it on a free loopback
port (its unix socket in that folder too), create a database per test, stop it afterwards.

Debian's `postgresql` package puts the binaries in /usr/lib/postgresql/<version>/bin (not on PATH).
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user (runuser),
in a folder owned by it. Without the binaries the tests skip -- except under CI=true, where a
missing server fails: CI installs it (.ci/run) and must really run these tests.

    from helpers.pg import postgres_server, postgres_url  # noqa: F401  (pytest fixtures)

    def test_x(postgres_url): ...   # "postgresql+psycopg2://postgres:secret@127.0.0.1:<port>/<fresh db>"
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers.net import free_port

PASSWORD = "secret"  # trust authentication ignores it; it is there to prove it never leaks


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres (newest Debian version first), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    if os.environ.get("PG_BINDIR"):
        candidates.insert(0, os.environ["PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for c in candidates:
        if all((Path(c) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.user = "postgres"
        self.folder = Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chmod(self.folder, 0o700)
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        if check and out.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{log}")
        return out

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        self.resume()

    def resume(self) -> None:
        """Start the (initialised) server again on the same port and data: the end of an outage."""
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage: clients' connections drop, new ones are refused)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", password: bool = True) -> str:
        auth = f"{self.user}:{PASSWORD}" if password else self.user
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        import psycopg2

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


def require_bindir() -> Path:
    """The binaries' folder; without them skip, or fail under CI (where .ci/run installs them)."""
    bindir = find_bindir()
    if bindir is None:
        msg = (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; "
            "install Debian's `postgresql` package (.ci/run does)"
        )
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(msg + " -- required under CI")
        pytest.skip(msg)
    return bindir


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer(require_bindir())
    try:
        server.start()
        for _ in range(50):  # pg_ctl -w waits already; make sure TCP answers too
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server, as a SQLAlchemy URL with a password."""
    return postgres_server.url(postgres_server.create_database())
