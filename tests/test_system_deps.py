"""`.ci/system-deps` (run by `make test` and CI): installs what the tests drive, or says in one line what to run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers.cli import ROOT


def _fake_bin(tmp_path: Path, **scripts: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        f = bin_dir / name
        f.write_text(f"#!/bin/sh\n{body}\n")
        f.chmod(0o755)
    return str(bin_dir)


def _run(tmp_path: Path, **scripts: str) -> subprocess.CompletedProcess:
    bin_dir = _fake_bin(tmp_path, **scripts)
    # only the fakes and the shell's basics: no real apt-get, sudo or npm can be found
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin/env-not-here"}
    return subprocess.run(
        ["/bin/bash", str(ROOT / ".ci" / "system-deps")], env=env, capture_output=True, text=True, timeout=60
    )


def test_nothing_missing_installs_nothing(tmp_path):
    res = _run(tmp_path, dpkg="exit 0", npm="exit 0", id="echo 1000")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""


def test_without_rights_it_says_what_to_run_in_one_line(tmp_path):
    res = _run(tmp_path, dpkg="exit 1", id="echo 1000", **{"apt-get": "exit 0"})  # not root, no sudo, no npm
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: the tests need postgresql chromium chromium-driver npm")
    assert "sudo apt-get install postgresql chromium chromium-driver npm" in line


def test_as_root_it_installs_the_missing_packages(tmp_path):
    log = tmp_path / "apt.log"
    res = _run(
        tmp_path,
        dpkg='[ "$2" = chromium ] && exit 1; exit 0',
        npm="exit 0",
        id="echo 0",
        **{"apt-get": f'echo "$@" >> {log}'},
    )
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq" and calls[1].split()[-1] == "chromium" and "postgresql" not in calls[1]
