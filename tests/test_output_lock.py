"""One writer per output: two songs_etl runs on one output never overlap; on two outputs they do.

Real parts: the flow, its Prefect global concurrency limit and the logs, through the
test run's Prefect API. Stubbed: the job itself (``_run_locally``) and the report, by a
recorder that holds the output until the test lets it go. The lock is what is tested,
and it must not depend on how long Spark takes; the job's own behaviour has its own
tests (test_job.py), and each real run would cost ~20 s of Spark here.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

import flows.songs_etl as songs_etl_module
from flows.songs_etl import songs_etl
from tasks.output_lock import (
    OutputBusyError,
    normalise_output_uri,
    output_limit_name,
)

pytestmark = pytest.mark.usefixtures("prefect_api")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BLOCKED_FOR = 3.0  # long enough for a second run to reach the lock and be held there


class StubbedJob:
    """Stands in for the job: records its start and end, and holds until released."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}
        self.states: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def run_locally(self, job_args: Any) -> str:
        label = threading.current_thread().name
        self._record(label, "start")
        self.started[label].set()
        assert self.release[label].wait(timeout=60), f"{label} was never released"
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


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubbedJob]:
    stub = StubbedJob()
    monkeypatch.setattr(songs_etl_module, "_run_locally", stub.run_locally)
    monkeypatch.setattr(songs_etl_module, "publish_run_report", lambda *args, **kwargs: None)
    yield stub
    for release in stub.release.values():  # a failed test leaves no run to the next one
        release.set()
    for thread in stub.threads:
        thread.join(timeout=90)


def lock_log_lines(state: Any, location: str) -> list[str]:
    """The run's log lines that speak of ``location``, as the API (and the UI) shows them."""
    APILogHandler().flush()  # logs reach the API in batches
    flow_run_id = UUID(str(state.state_details.flow_run_id))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs if location in log.message]


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
    assert job.started["first"].wait(timeout=30)
    second = job.start_flow_run("second", Path(f"{tmp_path}/other/../lake/"))
    time.sleep(BLOCKED_FOR)  # the second run reaches the lock and is held there
    job.release["first"].set()
    assert job.started["second"].wait(timeout=60)
    job.release["second"].set()
    first.join(timeout=60)
    second.join(timeout=60)

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
    assert job.started["first"].wait(timeout=30)
    second = job.start_flow_run("second", tmp_path / "lake-b")
    # The second starts and ends while the first still holds its own output.
    assert job.started["second"].wait(timeout=30)
    job.release["second"].set()
    second.join(timeout=60)
    job.release["first"].set()
    first.join(timeout=60)

    assert job.events == [
        ("first", "start"),
        ("second", "start"),
        ("second", "end"),
        ("first", "end"),
    ]
    location = str((tmp_path / "lake-b").resolve())
    assert lock_log_lines(job.states["second"], location) == expected_lines(location, False)


def test_a_run_that_waits_too_long_fails_naming_the_output(job: StubbedJob, tmp_path: Path) -> None:
    output = tmp_path / "lake"
    location = str(output.resolve())
    first = job.start_flow_run("first", output)
    assert job.started["first"].wait(timeout=30)
    second = job.start_flow_run("second", output, output_lock_wait_minutes=0.03)
    second.join(timeout=60)
    job.release["first"].set()
    first.join(timeout=60)

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
