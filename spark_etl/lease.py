"""One writer per output: a lease file under ``<output>/_state/lease.json``.

The lease names its holder (run id, host, process, the Prefect flow run that started it),
when it started and when it expires. Every change to it is a compare-and-swap on the
version read (:mod:`spark_etl.lease_store`): a run creates it only if absent, renews and
releases it only while it still holds the version it wrote, so two runs can never both
believe they hold an output, on local disk or on S3.

A second run on a held output stops at once with the holder's name. It takes the lease
over without waiting when the holder is known dead:
- on this host, its process is gone, a zombie, or another process that reused its pid
  (the process start time recorded in the lease tells them apart);
- its flow run ended (crashed, failed, cancelled) as Prefect reports: the flow passes the
  job that run's id (``--take-over-from``);
and otherwise once the lease expired, five renewals after its holder went silent. A run
whose lease was taken over (it paused past its expiry) finds out at its next renewal and
stops before it publishes.

Prefect's global concurrency limit keeps two flow runs apart before any job starts; the
lease is the guard for everything else (two spark-submits, a manual ``python -m spark_etl``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from spark_etl.errors import OutputLockedError
from spark_etl.lake import join_uri
from spark_etl.lease_store import LeaseStore, LocalLeaseStore, open_lease_store
from spark_etl.storage import local_path

logger = logging.getLogger(__name__)

LEASE_FILE = "_state/lease.json"
LEASE_SECONDS = 300
RENEW_SECONDS = 60
# Process states in /proc/<pid>/stat of a process that has ended: zombie, dead.
_ENDED_STATES = frozenset("ZXx")
_PROC = Path("/proc")


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds an output, and until when.

    Attributes:
        process: The holder's process as ``<boot id>/<start time in clock ticks>``, which
            no later process on this host shares even when it reuses the pid; empty where
            the system has no ``/proc``.
        flow_run_id: The Prefect flow run that started the job, empty for a job run by hand.
    """

    run_id: str
    host: str
    pid: int
    started_at: str
    expires_at: str
    process: str = ""
    flow_run_id: str = ""

    def describe(self) -> str:
        """The holder in one phrase, for the message of the run that must stop."""
        flow = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return (
            f"run {self.run_id} (host {self.host}, pid {self.pid}{flow}, started "
            f"{self.started_at}, lease until {self.expires_at})"
        )

    def gone_because(self, now: datetime) -> str | None:
        """Why the holder is known gone (expired, its process ended here), or None."""
        if datetime.fromisoformat(self.expires_at) < now:
            return "its lease expired"
        if self.host == socket.gethostname() and not process_alive(self.pid, self.process):
            return "its process on this host has ended"
        return None


def lease_uri(output_uri: str) -> str:
    """Where the lease of an output lies."""
    return join_uri(output_uri, LEASE_FILE)


def parse_holder(text: str | None) -> LeaseHolder | None:
    """The holder written in a lease file; None for no file or an unreadable one."""
    if not text:
        return None
    try:
        written = json.loads(text)
        known = {field.name for field in dataclasses.fields(LeaseHolder)}
        return LeaseHolder(**{key: value for key, value in written.items() if key in known})
    except (TypeError, ValueError, AttributeError):
        return None  # a lease cut short by a crash while it was written holds nobody


def process_identity(pid: int) -> str:
    """``<boot id>/<start ticks>`` of a live process on this host; empty when unknown."""
    status = _process_status(pid)
    return status[1] if status else ""


def process_alive(pid: int, identity: str = "") -> bool:
    """True when the process ``identity`` names still runs on this host.

    A zombie (killed, not yet reaped by its parent or by PID 1) has ended; a process with
    the same pid but another start time is someone else. Without ``/proc`` (macOS) only
    the pid can be asked about, and a zombie or a reused pid looks alive there.
    """
    if not _PROC.joinpath("self", "stat").exists():
        return _signal_reaches(pid)
    status = _process_status(pid)
    if status is None:
        return False
    state, current_identity = status
    if state in _ENDED_STATES:
        return False
    return not identity or identity == current_identity


def _process_status(pid: int) -> tuple[str, str] | None:
    """(state letter, identity) of a process from ``/proc``; None when there is none."""
    try:
        stat = _PROC.joinpath(str(pid), "stat").read_text()
        boot_id = _PROC.joinpath("sys", "kernel", "random", "boot_id").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]  # fields 3 and 22 of proc(5)
    return state, f"{boot_id}/{start_ticks}"


def _signal_reaches(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_if_held_locally(output_uri: str, run_id: str, take_over_from: str = "") -> None:
    """Before the JVM starts: stop at once when a live run holds a local output.

    Raises:
        OutputLockedError: Another live run holds the output.
    """
    local = local_path(output_uri)
    if local is None:
        return  # remote outputs are checked once the session can reach them
    holder = parse_holder(LocalLeaseStore(lease_uri(local)).read()[0])
    if holder and holder.run_id not in (run_id, take_over_from):
        if holder.gone_because(datetime.now(UTC)) is None:
            raise OutputLockedError(_held_message(output_uri, holder))


class OutputLease:
    """The lease of one run on one output: acquire, keep renewed, check, release."""

    def __init__(
        self,
        store: LeaseStore,
        output_uri: str,
        run_id: str,
        flow_run_id: str = "",
        take_over_from: str = "",
    ) -> None:
        """A lease not yet acquired.

        Args:
            store: Where the lease file lies (:func:`lease_store_for`).
            output_uri: The output, as messages name it.
            run_id: This run.
            flow_run_id: The Prefect flow run that started this job, if one did.
            take_over_from: A run Prefect reports ended: its lease is taken over at once.
        """
        self._store = store
        self._output_uri = output_uri
        self._run_id = run_id
        self._flow_run_id = flow_run_id
        self._take_over_from = take_over_from
        self._version: str | None = None
        self._lost_to: str | None = None
        self._guard = threading.Lock()  # the renewer and the job's own check never overlap
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._identity = process_identity(os.getpid())

    def acquire(self) -> LeaseHolder | None:
        """Take the output, taking over a dead holder's lease; return that holder if any.

        Raises:
            OutputLockedError: A live run holds the output, or won it at the same moment.
        """
        text, version = self._store.read()
        current = parse_holder(text)
        wanted = self._holder_text()
        if text is None:
            self._version = self._store.create(wanted) or self._version_if_written(wanted)
        else:
            self._refuse_unless_gone(current)
            written = self._store.replace(wanted, version or "")
            self._version = written or self._version_if_written(wanted)
        if self._version is None:
            raise OutputLockedError(
                f"{self._output_uri} was taken at the same moment by {self._holder_now()}"
            )
        self._renewer = threading.Thread(target=self._renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return current if current is not None and current.run_id != self._run_id else None

    def ensure_held(self) -> None:
        """Renew now, and stop the run if another run took the output over meanwhile.

        The job calls it before it publishes: a run that paused past its lease's expiry
        must not write tables over the run that took its place.

        Raises:
            OutputLockedError: The lease is no longer this run's.
        """
        self._renew_once()
        if self._lost_to is not None:
            raise OutputLockedError(
                f"{self._output_uri}: this run ({self._run_id}) lost its lease to "
                f"{self._lost_to} and stops before publishing anything; the tables are "
                "as that run leaves them"
            )

    def release(self) -> None:
        """Stop renewing and give the output back (only if this run still holds it)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with self._guard:
            if self._version is not None and self._lost_to is None:
                self._store.delete(self._version)
                self._version = None

    def _refuse_unless_gone(self, current: LeaseHolder | None) -> None:
        """Raise unless the lease is ours, unreadable, or its holder is known gone."""
        if current is None or current.run_id == self._run_id:
            return  # a lease cut short by a crash, or this run's own (a retried step)
        if current.run_id == self._take_over_from:
            reason: str | None = "Prefect reports its flow run ended"
        else:
            reason = current.gone_because(datetime.now(UTC))
        if reason is None:
            raise OutputLockedError(_held_message(self._output_uri, current))
        logger.warning("taking over the lease of %s: %s", current.describe(), reason)

    def _renew(self) -> None:
        """Push the expiry forward while the run lasts (a daemon thread)."""
        while not self._stop.wait(RENEW_SECONDS) and self._lost_to is None:
            try:
                self._renew_once()
            except Exception as err:  # a missed renewal is retried; expiry is 5 renewals away
                logger.warning("could not renew the lease on %s: %s", self._output_uri, err)

    def _renew_once(self) -> None:
        with self._guard:
            if self._version is None or self._lost_to is not None:
                return
            wanted = self._holder_text()
            renewed = self._store.replace(wanted, self._version) or self._version_if_written(wanted)
            if renewed is None:
                self._lost_to = self._holder_now()
                logger.error("lost the lease on %s to %s", self._output_uri, self._lost_to)
            self._version = renewed

    def _version_if_written(self, wanted: str) -> str | None:
        """The lease's version when it holds ``wanted`` after a write that seemed to lose.

        botocore re-sends a request whose response was lost; the second conditional PUT
        then fails on the object the first one wrote.
        """
        text, version = self._store.read()
        return version if text == wanted else None

    def _holder_now(self) -> str:
        holder = parse_holder(self._store.read()[0])
        return holder.describe() if holder else "another run"

    def _holder_text(self) -> str:
        now = datetime.now(UTC)
        holder = LeaseHolder(
            run_id=self._run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            expires_at=(now + timedelta(seconds=LEASE_SECONDS)).isoformat(timespec="seconds"),
            process=self._identity,
            flow_run_id=self._flow_run_id,
        )
        return json.dumps(asdict(holder), indent=2)


def lease_store_for(output_uri: str) -> LeaseStore:
    """The store of an output's lease: a local file, or an S3 object (see the module)."""
    return open_lease_store(lease_uri(output_uri))


def _held_message(output_uri: str, holder: LeaseHolder) -> str:
    return (
        f"{output_uri} is being written by {holder.describe()}; one run writes an output at "
        "a time: wait for it to end (a dead run's lease is taken over at once when its "
        "process on this host or its Prefect flow run has ended, otherwise once it expires)"
    )
