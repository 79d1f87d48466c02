"""Real processes for the integration tests: start, wait until healthy, stop with children."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from tasks.ops.names import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopping it stops its children
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT twice (a worker needs two), then SIGKILL whatever is left of the group."""
    for _ in range(2):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_healthy(api_url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {seconds} s")


def client(env: dict[str, str]) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(env["PREFECT_API_URL"])


def stopped_with_its_children(process: subprocess.Popen[bytes]) -> bool:
    """Stop the process and its group; True when nothing of the group is left after.

    A child that outlives its parent (a flow run process, a server worker) stays in the
    parent's process group: it is found here, killed, and reported.
    """
    stop(process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return process.poll() is not None
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    return False


def deliver_client_events(seconds: float = 30) -> None:
    """Send what this process still holds for the API in use (events, logs) while its
    server is up.

    The session's Prefect API drains every worker of the process at its end, with no time
    limit; a worker left holding a stopped server's events retries for ever (the long lane
    once hung there for 20 minutes after every test had run).
    """
    EventsWorker.drain_all(timeout=seconds)
    APILogWorker.drain_all(timeout=seconds)
