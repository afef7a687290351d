"""sweep/util/fastexit.py: a finished process skips module teardown, but its exit handlers run, its output is
flushed, its exit code is kept, and a thread an ordinary exit would wait for is still waited for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import atexit, sys, threading, time
        sys.path.insert(0, {str(ROOT)!r})
        from sweep.util import fastexit
        out = {str(tmp_path)!r}
        atexit.register(lambda: open(out + "/atexit", "w").write("ran"))
        class Teardown:  # module teardown would call this; exit_now skips it
            def __del__(self):
                open(out + "/teardown", "w").write("ran")
        keep = Teardown()
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_exit_handlers_run_output_is_flushed_code_kept_and_teardown_skipped(tmp_path):
    p = _run(
        """
        print("unflushed", end="")
        sys.stderr.write("err")
        fastexit.exit_now(3)
        print("never")
    """,
        tmp_path,
    )
    assert p.returncode == 3
    assert p.stdout == "unflushed" and p.stderr == "err"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()  # the teardown was skipped: the saving


def test_a_running_non_daemon_thread_gets_the_ordinary_exit(tmp_path):
    p = _run(
        """
        def work():
            time.sleep(0.5)
            open(out + "/thread", "w").write("done")
        threading.Thread(target=work).start()
        fastexit.exit_now(4)
    """,
        tmp_path,
    )
    assert p.returncode == 4
    assert (tmp_path / "thread").read_text() == "done"  # waited for, as an ordinary exit does
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_daemon_thread_does_not_hold_the_process(tmp_path):
    p = _run(
        """
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        fastexit.exit_now(0)
    """,
        tmp_path,
    )
    assert p.returncode == 0 and (tmp_path / "atexit").exists() and not (tmp_path / "teardown").exists()
