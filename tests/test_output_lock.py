"""One writer per output: two songs_etl runs on one output never overlap; on two outputs they do.

Real parts: the flow, its Prefect global concurrency limit and the logs, through the
test run's Prefect API. Stubbed: the job itself (a local runner that runs no Spark) and the
report, by a recorder that holds the output until the test lets it go. The lock is what is tested,
and it must not depend on how long Spark takes; the job's own behaviour has its own
tests (test_job.py), and each real run would cost ~20 s of Spark here.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import State
from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError
from prefect.logging.handlers import APILogHandler
from prefect.states import Cancelled, Crashed, Failed, Running

import flows.songs_etl as songs_etl_module
import tasks.output_lock as output_lock
from flows.songs_etl import songs_etl
from spark_etl.args import JobArgs
from spark_etl.lease import LeaseHolder, lease_uri, process_identity
from tasks.local_spark import LocalRunner
from tasks.ops.names import PROJECT_ROOT, RunnerName
from tasks.output_lock import (
    API_SLOW_MESSAGE,
    OutputBusyError,
    normalise_output_uri,
    output_limit_name,
)
from tasks.runner import Runner

pytestmark = pytest.mark.usefixtures("prefect_api")

BLOCKED_FOR = 3.0  # long enough for a second run to reach the lock and be held there
# How long a run may take to reach its job or to end. The ephemeral API keeps its data in
# one SQLite file: late in a long suite a write can wait there for a whole attempt at the
# slot (60 s) before the next attempt gets it. The order of events is what is tested.
SLOW_API_SECONDS = 150


class StubbedJob:
    """Stands in for the job: records its start and end, and holds until released."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}
        self.states: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self.job_args: dict[str, Any] = {}

    def run(self, job_args: Any) -> Any:  # stands in for the RunSummary
        label = threading.current_thread().name
        self.job_args[label] = job_args
        self._record(label, "start")
        self.started[label].set()
        assert self.release[label].wait(timeout=2 * SLOW_API_SECONDS), f"{label} was never released"
        self._record(label, "end")
        return f"summary of {label}"

    def start_flow_run(self, label: str, output: Path, **parameters: Any) -> threading.Thread:
        """A songs_etl run on ``output`` in a thread named ``label``."""
        self.started[label], self.release[label] = threading.Event(), threading.Event()

        def run() -> None:
            self.states[label] = songs_etl(output_uri=str(output), return_state=True, **parameters)

        thread = threading.Thread(target=run, name=label)
        thread.start()
        self.threads.append(thread)
        return thread

    def _record(self, label: str, event: str) -> None:
        with self._lock:
            self.events.append((label, event))


def runner_for(stub: StubbedJob) -> type[Runner]:
    """A local runner whose job is ``stub``: the flow's sequence is kept, Spark is not run."""

    class RecordingRunner(LocalRunner):
        def prepare(self, job_args: JobArgs) -> JobArgs:
            return job_args  # no sample lake, no input check: there is no job to read them

        def wait(self, job_args: JobArgs) -> None:
            self._summary = stub.run(job_args)

    return RecordingRunner


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubbedJob]:
    stub = StubbedJob()
    runners = {**songs_etl_module.RUNNERS, RunnerName.LOCAL: runner_for(stub)}
    monkeypatch.setattr(songs_etl_module, "RUNNERS", runners)
    monkeypatch.setattr(songs_etl_module, "publish_run_report", lambda *args, **kwargs: None)
    yield stub
    for release in stub.release.values():  # a failed test leaves no run to the next one
        release.set()
    for thread in stub.threads:
        thread.join(timeout=2 * SLOW_API_SECONDS)


def lock_log_lines(state: Any, location: str) -> list[str]:
    """The run's log lines that speak of ``location``, as the API (and the UI) shows them."""
    APILogHandler().flush()  # logs reach the API in batches
    flow_run_id = UUID(str(state.state_details.flow_run_id))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    # A slow API's retry line (see SLOW_API_SECONDS) says nothing of who held the output.
    api_was_slow = API_SLOW_MESSAGE.split("%s")[0]
    return [
        log.message
        for log in logs
        if location in log.message and not log.message.startswith(api_was_slow)
    ]


def expected_lines(location: str, waited: bool) -> list[str]:
    guarded = (
        f"One writer per output: {location} is guarded by global concurrency limit "
        f"{output_limit_name(location)}"
    )
    wait = [f"Waiting for {location}: another run holds it"] if waited else []
    holding = f"Holding {location}: no other run writes it until this run ends"
    return [guarded, *wait, holding]


def test_a_second_run_on_the_same_output_waits_until_the_first_ends(
    job: StubbedJob, tmp_path: Path
) -> None:
    # Two spellings of one output: the limit is keyed by the location, not the text.
    output = tmp_path / "lake"
    location = str(output.resolve())
    first = job.start_flow_run("first", output)
    assert job.started["first"].wait(timeout=SLOW_API_SECONDS)
    second = job.start_flow_run("second", Path(f"{tmp_path}/other/../lake/"))
    time.sleep(BLOCKED_FOR)  # the second run reaches the lock and is held there
    job.release["first"].set()
    assert job.started["second"].wait(timeout=SLOW_API_SECONDS)
    job.release["second"].set()
    first.join(timeout=SLOW_API_SECONDS)
    second.join(timeout=SLOW_API_SECONDS)

    assert job.events == [
        ("first", "start"),
        ("first", "end"),
        ("second", "start"),
        ("second", "end"),
    ]
    assert [job.states[label].type.value for label in ("first", "second")] == [
        "COMPLETED",
        "COMPLETED",
    ]
    assert lock_log_lines(job.states["first"], location) == expected_lines(location, False)
    assert lock_log_lines(job.states["second"], location) == expected_lines(location, True)


def test_runs_on_different_outputs_do_not_wait_for_each_other(
    job: StubbedJob, tmp_path: Path
) -> None:
    first = job.start_flow_run("first", tmp_path / "lake-a")
    assert job.started["first"].wait(timeout=SLOW_API_SECONDS)
    second = job.start_flow_run("second", tmp_path / "lake-b")
    # The second starts and ends while the first still holds its own output.
    assert job.started["second"].wait(timeout=SLOW_API_SECONDS)
    job.release["second"].set()
    second.join(timeout=SLOW_API_SECONDS)
    job.release["first"].set()
    first.join(timeout=SLOW_API_SECONDS)

    assert job.events == [
        ("first", "start"),
        ("second", "start"),
        ("second", "end"),
        ("first", "end"),
    ]
    location = str((tmp_path / "lake-b").resolve())
    assert lock_log_lines(job.states["second"], location) == expected_lines(location, False)


def test_an_api_too_slow_to_grant_a_free_slot_is_named_and_the_run_tries_again(
    job: StubbedJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stubbed: the first attempt at the slot times out, as it does when the API's
    # database stays locked for a whole attempt (seen late in a long suite); the real
    # limit, free all along, is read to tell that from another run holding it.
    real_concurrency = output_lock.concurrency
    attempts: list[str] = []

    def first_attempt_times_out(name: str, **options: Any) -> Any:
        attempts.append(name)
        if len(attempts) == 1:
            raise AcquireConcurrencySlotTimeoutError(f"slot of {name}")
        return real_concurrency(name, **options)

    monkeypatch.setattr(output_lock, "concurrency", first_attempt_times_out)
    output = tmp_path / "lake"
    location = str(output.resolve())
    run = job.start_flow_run("only", output)
    assert job.started["only"].wait(timeout=SLOW_API_SECONDS)
    job.release["only"].set()
    run.join(timeout=SLOW_API_SECONDS)

    assert job.states["only"].type.value == "COMPLETED"
    assert len(attempts) == 2
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(
                    any_=[UUID(str(job.states["only"].state_details.flow_run_id))]
                )
            )
        )
    slow = [log.message for log in logs if log.message.startswith("The Prefect API did not")]
    assert len(slow) == 1 and slow[0].startswith(
        f"The Prefect API did not grant the slot of {output_limit_name(location)} within "
    )
    assert slow[0].endswith(f"though no run holds it: trying again ({location})")
    assert lock_log_lines(job.states["only"], location) == expected_lines(location, False)


def test_a_run_that_waits_too_long_fails_naming_the_output(job: StubbedJob, tmp_path: Path) -> None:
    output = tmp_path / "lake"
    location = str(output.resolve())
    first = job.start_flow_run("first", output)
    assert job.started["first"].wait(timeout=SLOW_API_SECONDS)
    second = job.start_flow_run("second", output, output_lock_wait_minutes=0.03)
    second.join(timeout=SLOW_API_SECONDS)
    job.release["first"].set()
    first.join(timeout=SLOW_API_SECONDS)

    state = job.states["second"]
    assert state.type.value == "FAILED"
    with pytest.raises(OutputBusyError) as failure:
        state.result()
    assert str(failure.value) == (
        f"{location} is still being written by another run after 0.03 min (global "
        f"concurrency limit {output_limit_name(location)}): let that run end, or raise "
        "output_lock_wait_minutes"
    )
    assert job.events == [("first", "start"), ("first", "end")]  # the second never ran


def test_one_output_has_one_spelling_and_a_safe_limit_name(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    spellings = {
        "s3://bucket/star": "s3a://bucket//star/",
        "s3://Bucket/a/b": "S3N://Bucket/a//b",
        "s3://bucket": "s3://bucket/",
        str(PROJECT_ROOT / "data/star-schema"): "data/star-schema",
        str(tmp_path / "real/star"): f"file://{tmp_path}/link/x/../star",
    }
    assert [normalise_output_uri(spelling, PROJECT_ROOT) for spelling in spellings.values()] == (
        list(spellings)
    )
    digest = hashlib.sha256(b"s3://bucket/star").hexdigest()
    assert output_limit_name("s3://bucket/star") == f"sparkify-output-{digest[:16]}"


@flow
def _lease_holder_flow() -> None:
    """The flow run a left-over job lease names (never run: only its state matters)."""


def flow_run_in_state(state: State) -> str:
    """A flow run of this test's Prefect API, put in ``state``; its id."""
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(_lease_holder_flow, state=Running())
        client.set_flow_run_state(created.id, state, force=True)
    return str(created.id)


def leave_job_lease(output: Path, flow_run_id: str) -> None:
    """A lease as a job of that flow run leaves it: its process alive here, not expired."""
    now = datetime.now(UTC)
    holder = LeaseHolder(
        run_id="left-behind",
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=now.isoformat(timespec="seconds"),
        expires_at=(now + timedelta(minutes=5)).isoformat(timespec="seconds"),
        process=process_identity(os.getpid()),
        flow_run_id=flow_run_id,
    )
    path = Path(lease_uri(str(output)))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(asdict(holder)))


@pytest.mark.parametrize(
    ("holder_state", "taken_over"),
    [(Crashed(), True), (Failed(), True), (Cancelled(), True), (Running(), False)],
    ids=["crashed", "failed", "cancelled", "running"],
)
def test_the_job_takes_over_a_lease_whose_flow_run_prefect_reports_ended(
    job: StubbedJob, tmp_path: Path, holder_state: State, taken_over: bool
) -> None:
    output = tmp_path / "lake"
    leave_job_lease(output, flow_run_in_state(holder_state))
    job.start_flow_run("next", output)
    assert job.started["next"].wait(timeout=SLOW_API_SECONDS)
    job.release["next"].set()
    job.threads[0].join(timeout=SLOW_API_SECONDS)

    state = job.states["next"]
    passed = job.job_args["next"]
    assert passed.flow_run_id == str(state.state_details.flow_run_id)  # named in its lease
    assert passed.take_over_from == ("left-behind" if taken_over else "")
    said = [line for line in lock_log_lines(state, "") if "takes over the lease" in line]
    assert len(said) == (1 if taken_over else 0), said
    if taken_over:
        assert f"ended {holder_state.type.value}" in said[0]
