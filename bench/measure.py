"""Run a command as a whole process and measure it: wall seconds and peak RSS of its tree.

Spark runs as a Python driver plus a JVM (plus Python workers for UDFs), so the peak
memory that matters is the sum over the whole process tree, sampled from ``/proc``
(Linux) every ``SAMPLE_SECONDS``. The wall time includes interpreter, JVM and session
start: what a user waits for.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.1
IGNORED_ARCHIVE_WARNING = "Unable to use shared archive"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measurement:
    """One whole-process run."""

    wall_seconds: float
    peak_rss_bytes: int
    return_code: int
    output_tail: str
    # The JVM found a class archive it could not use (written for another class path)
    # and started without it: it says so once, near the start of the output.
    ignored_class_archive: bool = False

    @property
    def peak_rss_mb(self) -> float:
        """Peak RSS of the process tree in MiB."""
        return self.peak_rss_bytes / 2**20


def measure(command: Sequence[str], env: dict[str, str] | None = None) -> Measurement:
    """Run ``command`` to its end; its output goes to a temporary log, the tail is kept."""
    log_path = Path(f"/tmp/sparkify-bench-{os.getpid()}-{time.monotonic_ns()}.log")
    peak = 0
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(SAMPLE_SECONDS)
    wall = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    log_path.unlink()
    tail = "\n".join(output.splitlines()[-15:])
    ignored = IGNORED_ARCHIVE_WARNING in output
    return Measurement(round(wall, 1), peak, process.returncode, tail, ignored)


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and all its descendants, in bytes."""
    return sum(_rss_bytes(pid) for pid in [root_pid, *descendants(root_pid)])


def descendants(root_pid: int) -> list[int]:
    """Every live process below ``root_pid`` (children, theirs, and so on)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _processes():
        children.setdefault(parent, []).append(pid)
    found, pending = [], list(children.get(root_pid, []))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found


def _processes() -> list[tuple[int, int]]:
    """(pid, parent pid) of every live process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        found.append((int(entry), int(fields[1])))
    return found


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def reap(pids: list[int], seconds: float = 60) -> None:
    """Reap the zombies ``pids`` (children, or orphans this process is the subreaper of)."""
    deadline = time.monotonic() + seconds
    waiting = list(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                reaped = pid  # not re-parented to this process: someone else reaped it
            if reaped:
                waiting.remove(pid)
        time.sleep(0.05)
