"""A real `mlflow server` for tests: PostgreSQL backend store (helpers/pg.py), artifacts proxied by the
server into a temporary folder, bound to a free loopback port, stopped (its whole process group) at
teardown.

    from helpers.pg import postgres_server  # noqa: F401
    from helpers.mlflow_server import mlflow_server  # noqa: F401

    def test_x(mlflow_server): ...   # mlflow_server.url == "http://127.0.0.1:<port>"

Without PostgreSQL the fixture skips like helpers/pg.py does; a server that does not come up (or dies)
is a skip too, except under CI=true, where it is a failure: CI must really run these tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.net import free_port

START_TIMEOUT = 240  # the server imports a lot and migrates a fresh database: 20-90 s on a busy 2-core box


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


class MlflowServer:
    """One `python -m mlflow server` process group."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log: Path) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.artifacts.parent, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"mlflow server did not answer /health within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn worker(s): our own group
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def start_or_fail(backend_store_uri: str, folder: Path) -> MlflowServer:
    server = MlflowServer(backend_store_uri, folder / "artifacts", folder / "mlflow_server.log")
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - reported as a skip, or a failure under CI
        server.stop()
        msg = f"could not start `mlflow server`: {e}"
        if under_ci():
            pytest.fail(msg + "\n(CI=true: the tracking-server tests must run)")
        pytest.skip(msg)
    return server


@pytest.fixture(scope="module")
def mlflow_server(postgres_server):
    """`mlflow server` on a fresh PostgreSQL database of the session's server, artifacts under a temporary
    folder; one per test module (tests tell their runs apart by experiment or sweep id)."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-server-"))
    server = start_or_fail(postgres_server.url(postgres_server.create_database()), folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
