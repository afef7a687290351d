"""Who ran a run, in a way PID reuse cannot fool.

A bare PID says little: in a container the sweep is often PID 1 every time it starts, and on a busy host
PIDs wrap around. So a run records its process's PID, the time that process started (clock ticks after
boot, field 22 of /proc/<pid>/stat) and the boot id (/proc/sys/kernel/random/boot_id). A later start-up
on the same host calls the run's process gone when no process has that PID, when the machine has booted
since (another boot id), or when the process now holding that PID started at another time.
Runs tagged with only a pid (older runs, or a system without /proc) keep the PID-only rule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """Process `pid`'s start time in clock ticks after boot, or None (no such process, no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name (field 2) may hold spaces and ')': skip past it
    return fields[22 - 3] if len(fields) > 22 - 3 else None  # fields[0] is field 3 (state)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except (OverflowError, ValueError):
        return False
    return True


def tags(pid: int | None = None) -> dict[str, str]:
    """The tags that identify process `pid` (default: this one): pid, pid_start, boot_id (those known)."""
    pid = os.getpid() if pid is None else pid
    out = {"pid": str(pid), "pid_start": start_time(pid), "boot_id": boot_id()}
    return {k: v for k, v in out.items() if v}


def gone(run_tags: Mapping[str, str]) -> bool:
    """True when the process these tags identify (on this host) no longer exists. A run without a pid tag
    is never called gone: nothing says who ran it."""
    pid = run_tags.get("pid", "")
    if not pid.isdigit():
        return False
    if not alive(int(pid)):
        return True
    recorded_boot, now_boot = run_tags.get("boot_id"), boot_id()
    if recorded_boot and now_boot and recorded_boot != now_boot:
        return True  # booted since: every process of that boot is gone, whatever holds the PID now
    recorded_start = run_tags.get("pid_start")
    now_start = start_time(int(pid))
    return bool(recorded_start and now_start and recorded_start != now_start)  # the PID was reused


def descendants(pid: int) -> set[int]:
    """Processes below `pid` (Linux /proc; elsewhere none are known)."""
    parents: dict[int, int] = {}
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        return set()
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in out]
        out.update(kids)
        todo.extend(kids)
    return out
