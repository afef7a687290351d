"""sweep/util/atomic.py (a failed write leaves the old file whole) and sweep/util/dblock.py's bounded, visible wait."""

from __future__ import annotations

import logging
import threading

import pytest

from sweep.util import atomic, dblock


def test_a_write_that_fails_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path):
    target = tmp_path / "sweep_results.csv"
    atomic.write_text(target, "a,b\n1,2\n")
    with pytest.raises(OSError):
        with atomic.path(target) as tmp:
            tmp.write_text("a,b\n")  # half written, then the disk is full
            raise OSError(28, "No space left on device")
    assert target.read_text() == "a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep_results.csv"]


def test_the_temporary_file_keeps_the_suffix_so_writers_pick_the_format(tmp_path):
    with atomic.path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def test_a_held_lock_is_waited_for_visibly_then_given_up_on(tmp_path, monkeypatch, caplog):
    url = f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setattr(dblock, "NOTICE_AFTER", 0.2)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with dblock.db_lock(url, "study"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        with caplog.at_level(logging.WARNING, logger="sweep"):
            with pytest.raises(dblock.LockTimeout, match=r"gave up after waiting 0.6 s for the lock 'study' \(file "):
                with dblock.db_lock(url, "study", timeout=0.6):
                    pass
        assert "waiting for the lock 'study' (file " in caplog.text and "giving up after 0.6 s" in caplog.text
    finally:
        release.set()
        t.join(10)
    with dblock.db_lock(url, "study", timeout=1):  # free again once its holder let go
        pass


def test_the_default_wait_is_bounded_and_can_be_set(monkeypatch):
    monkeypatch.delenv("DROPOUT_LOCK_TIMEOUT", raising=False)
    assert dblock.lock_timeout() == 300
    monkeypatch.setenv("DROPOUT_LOCK_TIMEOUT", "20")
    assert dblock.lock_timeout() == 20
