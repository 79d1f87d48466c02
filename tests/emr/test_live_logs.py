"""Live logs: the step's stdout and stderr, growing in S3 while it runs, reach the run log
line by line, each once, in order, prefixed with their source."""

from __future__ import annotations

import gzip
import logging
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from spark_etl.args import JobArgs
from tasks.emr import StartedCluster, wait_for_spark_step
from tasks.ops.emr import EmrStepFailedError
from tasks.ops.failures import LogPatience
from tasks.ops.live_logs import GrowingLogs
from tasks.ops.s3 import S3Location
from tests.emr.conftest import (
    LOG_URI,
    LOGS,
    LOGS_URI,
    OUTPUT_URI,
    REGION,
    SONGS_URI,
    emr,
    wrap_emr_client,
)

pytestmark = pytest.mark.usefixtures("aws")


def put_log(key: str, text: str) -> None:
    """Rewrite a log object with everything so far, as EMR does (gzip for .gz keys)."""
    body = gzip.compress(text.encode()) if key.endswith(".gz") else text.encode()
    boto3.client("s3", region_name=REGION).put_object(Bucket=LOGS, Key=key, Body=body)


def test_each_new_complete_line_once_in_order_prefixed_with_its_source() -> None:
    logs = GrowingLogs(
        boto3.client("s3", region_name=REGION),
        {"stdout": S3Location(LOGS, "step/stdout.gz"), "stderr": S3Location(LOGS, "step/stderr")},
    )
    seen = [logs.poll()]  # nothing copied yet
    put_log("step/stdout.gz", "one\ntwo\nthr")
    seen.append(logs.poll())
    seen.append(logs.poll())  # unchanged
    put_log("step/stdout.gz", "one\ntwo\nthree\nfour\n")
    put_log("step/stderr", "warn é\n")
    seen.append(logs.poll())
    put_log("step/stderr", "warn é\nlast words")
    seen.append(logs.poll())  # a line still being written waits
    seen.append(logs.poll(final=True))  # the job ended: it is complete now

    assert seen == [
        [],
        ["stdout: one", "stdout: two"],
        [],
        ["stdout: three", "stdout: four", "stderr: warn é"],
        [],
        ["stderr: last words"],
    ]


class FailsFirstReads:
    """An S3 client whose first ``failures`` get_object calls answer 503 (a stub: moto
    cannot fail on demand)."""

    def __init__(self, real: Any, failures: int) -> None:
        self._real, self.failures = real, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_object(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "GetObject",
            )
        return self._real.get_object(**kwargs)


def test_a_failed_read_or_a_damaged_object_gives_no_lines_and_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3 = FailsFirstReads(boto3.client("s3", region_name=REGION), failures=1)
    put_log("step/stdout.gz", "a\n")
    put_log("step/stderr.gz", "b\n")
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=LOGS, Key="step/stderr.gz", Body=b"not gzip"
    )
    logs = GrowingLogs(
        s3,
        {
            "stdout": S3Location(LOGS, "step/stdout.gz"),
            "stderr": S3Location(LOGS, "step/stderr.gz"),
        },
    )

    with caplog.at_level(logging.WARNING, logger="tasks.ops.live_logs"):
        first = logs.poll()
    put_log("step/stderr.gz", "b\n")

    assert (first, logs.poll()) == ([], ["stdout: a", "stderr: b"])
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"Could not read s3://{LOGS}/step/stdout.gz",
        f"Could not read s3://{LOGS}/step/stderr.gz",
    ]


class GrowingStepLogs:
    """Wraps the flow's EMR client: each describe_step first grows the step's stdout.gz
    and stderr.gz as EMR copies them (moto's steps never run), then walks the states."""

    def __init__(self, real: Any, states: list[str], growth: list[dict[str, str]]) -> None:
        self._real, self._states, self._growth = real, list(states), list(growth)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        for name, text in self._growth.pop(0).items():
            put_log(f"emr/{ClusterId}/steps/{StepId}/{name}", text)
        response = self._real.describe_step(ClusterId=ClusterId, StepId=StepId)
        state = self._states.pop(0)
        response["Step"]["Status"]["State"] = state
        if state == "FAILED":
            response["Step"]["Status"]["FailureDetails"] = {"Reason": "Unknown Error."}
        return response


STDERR_SO_FAR = "".join(f"INFO Client: report {n}\n" for n in range(3))
GROWTH = [
    {},  # PENDING: no log copied yet
    {"stdout.gz": "starting\nhal"},
    {"stdout.gz": "starting\nhalf, then whole\n", "stderr.gz": STDERR_SO_FAR},
    {"stdout.gz": "starting\nhalf, then whole\n"},  # unchanged
    {"stderr.gz": STDERR_SO_FAR + "ERROR: 120 of 1000 input records rejected\n"},
]


def test_a_running_step_logs_its_new_lines_once_and_a_failure_still_ends_with_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster_id = emr().run_job_flow(
        Name="live", LogUri=LOG_URI, Instances={"KeepJobFlowAliveWhenNoSteps": True}
    )["JobFlowId"]
    step_id = emr().add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[{"Name": "job", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["x"]}}],
    )["StepIds"][0]
    states = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "FAILED"]
    wrap_emr_client(monkeypatch, lambda real: GrowingStepLogs(real, states, GROWTH))

    @flow
    def wait() -> None:
        wait_for_spark_step(
            "test-aws",
            StartedCluster(cluster_id, LOG_URI),
            step_id,
            JobArgs(songs_uri=SONGS_URI, logs_uri=LOGS_URI, output_uri=OUTPUT_URI),
            poll_seconds=0.01,
            max_wait_seconds=30,
            log_patience=LogPatience(1, 0),
            log_poll_seconds=0,  # read the logs at every poll
        )

    state = wait(return_state=True)

    with pytest.raises(EmrStepFailedError) as failure:
        state.result()
    assert str(failure.value).endswith(
        "Last lines of stderr.gz:\n" + STDERR_SO_FAR + "ERROR: 120 of 1000 input records rejected"
    )
    messages = run_log_messages(state.state_details.flow_run_id)
    # Each line once, in order, and while the step ran: between the states it was seen in.
    step = f"Step {step_id} is"
    assert [m for m in messages if m.startswith((step, "stdout: ", "stderr: "))] == [
        f"{step} PENDING ",
        f"{step} RUNNING ",
        "stdout: starting",
        f"{step} RUNNING ",
        "stdout: half, then whole",
        "stderr: INFO Client: report 0",
        "stderr: INFO Client: report 1",
        "stderr: INFO Client: report 2",
        f"{step} RUNNING ",
        f"{step} FAILED ",
        "stderr: ERROR: 120 of 1000 input records rejected",
    ]


def run_log_messages(flow_run_id: Any) -> list[str]:
    """The run's log messages as the API stores them, oldest first."""
    APILogHandler().flush()  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]
