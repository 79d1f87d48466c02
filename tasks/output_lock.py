"""One writer per output: a Prefect global concurrency limit named after the output location.

Two runs that write one lake at the same time interleave their work and can lose a day
while both report success. A deployment's ``concurrency_limit`` cannot prevent it: it
counts the runs of one deployment, not the writers of one lake (a backfill, a local run,
another deployment). So every ``songs_etl`` run holds the only slot of a limit keyed by
its output while it runs the job and registers the tables; a second run on the same
output waits, saying so in its log, and stops with an error after a bounded wait.

The job also takes a lease under ``<output>/_state/``: the second guard, for writers no
Prefect API sees (a spark-submit by hand, ``python -m spark_etl``). A lease left by a run
whose flow run Prefect reports ended is named to the job, which takes it over at once
(:func:`find_lease_to_take_over`) instead of waiting for it to expire.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run

from spark_etl.lease import lease_uri, parse_holder
from spark_etl.lease_store import LeaseStore, LocalLeaseStore
from spark_etl.s3_lease import S3LeaseStore
from tasks.aws import aws_clients

if TYPE_CHECKING:
    from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse

OUTPUT_LIMIT_PREFIX = "sparkify-output-"
DEFAULT_OUTPUT_WAIT_MINUTES = 60.0
# Hadoop's S3 schemes all name the same bucket and keys.
_S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})
# A waiting run says so at least this often.
_WAIT_LOG_SECONDS = 60.0
# The shortest single attempt: a slot that is free is taken within it.
_MIN_ATTEMPT_SECONDS = 2.0
# How long the slot of a flow whose process died stays taken: the server frees it once
# its lease expires (and its repossessor, every 15 s, looks). Renewed every 45 s.
_SLOT_LEASE_SECONDS = 60.0
# A flow run in one of these states runs no job any more: its job lease may be taken over.
_ENDED_STATES = frozenset({StateType.CRASHED, StateType.FAILED, StateType.CANCELLED})


class OutputBusyError(Exception):
    """Another run still held the output when the wait for it ran out."""

    def __init__(self, output_uri: str, limit_name: str, waited_minutes: float) -> None:
        self.output_uri, self.limit_name = output_uri, limit_name
        super().__init__(
            f"{output_uri} is still being written by another run after {waited_minutes:g} min "
            f"(global concurrency limit {limit_name}): let that run end, or raise "
            "output_lock_wait_minutes"
        )


def normalise_output_uri(output_uri: str, relative_to: Path) -> str:
    """The one spelling of an output location, so that two spellings share one limit.

    ``s3a://`` and ``s3n://`` become ``s3://``; empty path segments (doubled and trailing
    slashes) go, as Hadoop drops them; a local path becomes absolute (against
    ``relative_to``, as the flow resolves it) with ``..`` and symbolic links resolved.
    """
    scheme, separator, rest = output_uri.partition("://")
    if not separator or scheme.lower() == "file":
        local = Path(rest if separator else output_uri).expanduser()
        return str((relative_to / local).resolve())
    scheme = scheme.lower()
    if scheme in _S3_SCHEMES:
        scheme = "s3"
    authority, _, path = rest.partition("/")
    return f"{scheme}://" + "/".join([authority, *(part for part in path.split("/") if part)])


API_SLOW_MESSAGE = (
    "The Prefect API did not grant the slot of %s within %.0f s though no run holds it: "
    "trying again (%s)"
)


def output_limit_name(location: str) -> str:
    """The limit's name: a fixed prefix and a digest, safe whatever the location holds."""
    return OUTPUT_LIMIT_PREFIX + hashlib.sha256(location.encode()).hexdigest()[:16]


@contextmanager
def hold_output(output_uri: str, wait_minutes: float, relative_to: Path) -> Iterator[str]:
    """Hold the output's slot for the block; wait, logging it, while another run holds it.

    The limit (of one slot) is created when missing. The slot is a lease the flow
    renews while it runs; if the flow's process dies, the server frees it when the lease
    expires (about a minute).

    Args:
        output_uri: The run's output location.
        wait_minutes: Longest wait for another run to release the output.
        relative_to: Folder against which a relative local path is resolved.

    Yields:
        The output location, normalised.

    Raises:
        ValueError: ``wait_minutes`` is negative.
        OutputBusyError: Another run still held the output after ``wait_minutes``.
    """
    if wait_minutes < 0:
        raise ValueError(f"output_lock_wait_minutes must be 0 or more, not {wait_minutes}")
    logger = get_run_logger()
    location = normalise_output_uri(output_uri, relative_to)
    name = output_limit_name(location)
    limit = _limit_of_one(name)
    logger.info(
        "One writer per output: %s is guarded by global concurrency limit %s", location, name
    )
    if limit.limit != 1 or not limit.active:
        logger.warning(
            "Global concurrency limit %s allows %d run(s), active=%s: set it to 1 and active "
            "to keep one writer on %s",
            name,
            limit.limit,
            limit.active,
            location,
        )
    waiting = limit.active and limit.active_slots >= limit.limit
    if waiting:
        logger.info("Waiting for %s: another run holds it", location)
    with ExitStack() as held:
        _acquire(held, name, location, wait_minutes * 60, waiting, logger)
        logger.info("Holding %s: no other run writes it until this run ends", location)
        yield location


def _limit_of_one(name: str) -> GlobalConcurrencyLimitResponse:
    """The limit, created with one slot if it is missing."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass  # the first run on this output
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass  # another run on this output created it at the same moment
        return client.read_global_concurrency_limit_by_name(name)


def _acquire(
    held: ExitStack,
    name: str,
    location: str,
    wait_seconds: float,
    waiting: bool,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Take the slot into ``held``, in attempts of at most a minute, each wait logged."""
    started = time.monotonic()
    while True:
        remaining = wait_seconds - (time.monotonic() - started)
        try:
            held.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=min(_WAIT_LOG_SECONDS, max(remaining, _MIN_ATTEMPT_SECONDS)),
                    lease_duration=_SLOT_LEASE_SECONDS,
                    strict=True,  # the limit was just made: if it is gone, say so
                    holder=_holder(),
                    # A renewal that fails once (an API hiccup) must not kill a job that is
                    # writing; the job's own lease still keeps a second writer out.
                    raise_on_lease_renewal_failure=False,
                )
            )
            return
        except AcquireConcurrencySlotTimeoutError:
            waited = time.monotonic() - started
            if waited >= wait_seconds:
                raise OutputBusyError(location, name, wait_seconds / 60) from None
            if not _slot_taken(name):
                # A busy API (its database locked) can let an attempt time out with the
                # slot free: say so rather than blame a run that does not exist.
                logger.warning(API_SLOW_MESSAGE, name, waited, location)
            elif not waiting:
                logger.info("Waiting for %s: another run holds it", location)
                waiting = True
            else:
                logger.info("Still waiting for %s after %.0f min", location, waited / 60)


def _slot_taken(name: str) -> bool:
    """Whether another holder has the limit's slot (read again, after a timed-out attempt)."""
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots >= limit.limit


def _holder() -> ConcurrencyLeaseHolder | None:
    """This flow run, named as the slot's holder (shown by the API), when in a flow run."""
    run_id = flow_run.id
    return ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None


@task
def find_lease_to_take_over(output_location: str, aws_credentials_block: str) -> str:
    """The run whose job lease on the output the job may take over at once, or "".

    That is a run whose flow run Prefect reports crashed, failed or cancelled, or an
    earlier attempt of this flow run: none of them runs the job any more, so the job need
    not wait for the lease to expire. A holder Prefect knows nothing of is left to expiry.

    Args:
        output_location: The output, normalised (:func:`normalise_output_uri`).
        aws_credentials_block: The ``AwsCredentials`` block that reads an S3 output.
    """
    try:
        holder = parse_holder(_lease_store(output_location, aws_credentials_block).read()[0])
    except (OSError, ClientError) as err:  # the job reads the lease itself and decides
        get_run_logger().warning("Could not read the job lease on %s: %s", output_location, err)
        return ""
    if holder is None or not holder.flow_run_id:
        return ""
    if holder.flow_run_id == flow_run.id:
        ended = "is an earlier attempt of this flow run"
    else:
        state = _flow_run_state(holder.flow_run_id)
        if state not in _ENDED_STATES:
            return ""
        ended = f"ended {state.value}"
    get_run_logger().warning(
        "The job takes over the lease of %s at once: its flow run %s", holder.describe(), ended
    )
    return holder.run_id


def _lease_store(output_location: str, aws_credentials_block: str) -> LeaseStore:
    """The lease's store, read as the flow's own credentials allow."""
    uri = lease_uri(output_location)
    if not uri.startswith("s3://"):
        return LocalLeaseStore(uri)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return S3LeaseStore(aws_clients(aws_credentials_block).s3, bucket, key)


def _flow_run_state(flow_run_id: str) -> StateType | None:
    """The state of a flow run this Prefect API knows; None for one it does not."""
    try:
        identifier = UUID(flow_run_id)
    except ValueError:
        return None
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(identifier).state
        except ObjectNotFound:
            return None
    return state.type if state else None
