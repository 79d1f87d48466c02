"""One writer per output: a lease file under ``<output>/_state/lease.json``.

The lease names its holder (run id, host, process id), when it started and when it
expires. The holder renews it while it runs; a second run on the same output stops at
once with the holder's name. A lease whose holder is gone is taken over: it expired, or
its process no longer exists on this host (a ``kill -9`` on this machine).

Prefect's global concurrency limit keeps two flow runs apart before any job starts; the
lease is the guard for everything else (two spark-submits, a manual ``python -m spark_etl``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from spark_etl.errors import OutputLockedError
from spark_etl.lake import join_uri
from spark_etl.storage import Storage

logger = logging.getLogger(__name__)

LEASE_FILE = "_state/lease.json"
LEASE_SECONDS = 300
RENEW_SECONDS = 60


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds an output, and until when."""

    run_id: str
    host: str
    pid: int
    started_at: str
    expires_at: str

    def describe(self) -> str:
        """The holder in one phrase, for the message of the run that must stop."""
        return (
            f"run {self.run_id} (host {self.host}, pid {self.pid}, started {self.started_at}, "
            f"lease until {self.expires_at})"
        )

    def is_stale(self, now: datetime) -> bool:
        """True when the holder is gone: the lease expired or its process died here."""
        if datetime.fromisoformat(self.expires_at) < now:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)


def lease_uri(output_uri: str) -> str:
    """Where the lease of an output lies."""
    return join_uri(output_uri, LEASE_FILE)


def parse_holder(text: str | None) -> LeaseHolder | None:
    """The holder written in a lease file; None for no file or an unreadable one."""
    if not text:
        return None
    try:
        return LeaseHolder(**json.loads(text))
    except (TypeError, ValueError):
        return None  # a lease cut short by a crash while it was written holds nobody


def refuse_if_held_locally(output_uri: str, run_id: str) -> None:
    """Before the JVM starts: stop at once when a live run holds a local output.

    Raises:
        OutputLockedError: Another live run holds the output.
    """
    if "://" in output_uri and not output_uri.startswith("file:"):
        return  # remote outputs are checked once the session can reach them
    path = lease_uri(output_uri.removeprefix("file://").removeprefix("file:"))
    try:
        with open(path, encoding="utf-8") as stream:
            holder = parse_holder(stream.read())
    except OSError:
        return
    if holder and holder.run_id != run_id and not holder.is_stale(datetime.now(UTC)):
        raise OutputLockedError(_held_message(output_uri, holder))


class OutputLease:
    """The lease of one run on one output: acquire, keep renewed, release."""

    def __init__(self, storage: Storage, output_uri: str, run_id: str) -> None:
        self._storage = storage
        self._output_uri = output_uri
        self._uri = lease_uri(output_uri)
        self._run_id = run_id
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")

    def acquire(self) -> LeaseHolder | None:
        """Take the output, taking over a stale lease; return the stale holder if any.

        Raises:
            OutputLockedError: A live run holds the output, or won it at the same moment.
        """
        current = parse_holder(self._storage.read_text(self._uri))
        stale = None
        if current is not None and current.run_id != self._run_id:
            if not current.is_stale(datetime.now(UTC)):
                raise OutputLockedError(_held_message(self._output_uri, current))
            logger.warning("taking over the lease of %s, whose run is gone", current.describe())
            stale = current
        if current is not None or self._storage.read_text(self._uri) is not None:
            self._storage.delete(self._uri)  # stale, unreadable or our own
        if not self._storage.create_exclusively(self._uri, self._holder_text()):
            self._refuse_new_holder()
        self._confirm()
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return stale

    def release(self) -> None:
        """Stop renewing and give the output back (only if this run still holds it)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        holder = parse_holder(self._storage.read_text(self._uri))
        if holder is not None and holder.run_id == self._run_id:
            self._storage.delete(self._uri)

    def _confirm(self) -> None:
        """Read the lease back: on S3 two runs can both believe they created it."""
        time.sleep(0.2)
        holder = parse_holder(self._storage.read_text(self._uri))
        if holder is None or holder.run_id != self._run_id:
            self._refuse_new_holder()

    def _refuse_new_holder(self) -> None:
        holder = parse_holder(self._storage.read_text(self._uri))
        who = holder.describe() if holder else "another run"
        raise OutputLockedError(f"{self._output_uri} was taken at the same moment by {who}")

    def _renew(self) -> None:
        """Push the expiry forward while the run lasts (a daemon thread)."""
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self._storage.write_text_atomically(self._uri, self._holder_text())
            except Exception as err:  # a missed renewal is retried; expiry is 5 renewals away
                logger.warning("could not renew the lease on %s: %s", self._output_uri, err)

    def _holder_text(self) -> str:
        now = datetime.now(UTC)
        holder = LeaseHolder(
            run_id=self._run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            expires_at=(now + timedelta(seconds=LEASE_SECONDS)).isoformat(timespec="seconds"),
        )
        return json.dumps(asdict(holder), indent=2)


def _held_message(output_uri: str, holder: LeaseHolder) -> str:
    return (
        f"{output_uri} is being written by {holder.describe()}; one run writes an output at "
        f"a time: wait for it to end (a dead run's lease is taken over once it expires)"
    )


def _process_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
