"""The AWS key of the credentials block never reaches anything a person can read, on the
EMR Serverless paths: a failed run (its error carries the driver's log tail), the
cancellation hook, and the sweeper cancelling a job run. Each is read back everywhere its
words can land: stdout and stderr, Python's log records, the Prefect logs and artifacts
of every flow run involved, and the full text of every exception."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from prefect_aws import AwsCredentials

import flows.songs_etl as songs_etl_module
from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.ops.emr_serverless import JobRunFailedError
from tests.emr.conftest import FAKE_ACCESS_KEY_ID, FAKE_SECRET
from tests.emr_serverless.conftest import (
    ScriptedJobRuns,
    job_runs_by_state,
    run_serverless_flow,
    start_job_run,
    the_job_run,
)
from tests.leak_search import Printed, assert_no_key_in, everything_readable, run_id

pytestmark = pytest.mark.usefixtures("serverless")


def test_a_failed_run_the_hook_and_the_sweeper_leak_no_key(
    monkeypatch: pytest.MonkeyPatch, printed: Printed, caplog: pytest.LogCaptureFixture
) -> None:
    block = cast(AwsCredentials, AwsCredentials.load("test-aws"))
    assert block.aws_secret_access_key is not None  # the key searched for is really there
    assert (block.aws_access_key_id, block.aws_secret_access_key.get_secret_value()) == (
        FAKE_ACCESS_KEY_ID,
        FAKE_SECRET,
    )
    script = ScriptedJobRuns(["RUNNING", "FAILED"]).install(monkeypatch)  # no summary

    failed = run_serverless_flow()
    script.stop()  # the job runs started below stay RUNNING until cancelled

    error = failed.result(raise_on_failure=False)
    assert isinstance(error, JobRunFailedError) and "Last lines of stdout.gz" in str(error)
    application_id = the_job_run()["applicationId"]
    hooked = start_job_run(application_id, "run-of-the-hook")
    flow_run = SimpleNamespace(
        id="run-of-the-hook",
        parameters={"runner": "emr-serverless", "aws_credentials_block": "test-aws"},
    )
    songs_etl_module._end_work_of_run(None, flow_run, None)
    orphan = start_job_run(application_id, "00000000-0000-0000-0000-000000000000")
    swept = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)

    assert swept.result() == [orphan]
    assert {hooked: "CANCELLED", orphan: "CANCELLED"}.items() <= job_runs_by_state().items()
    readable = everything_readable(printed, caplog, [run_id(failed), run_id(swept)], [error])
    assert "Last lines of stdout.gz" in readable["logs"]  # the logs were really captured
    assert f"Cancelling job run {orphan}" in readable["logs"]
    assert "emr-serverless-sweep" in readable["artifacts"]
    assert "Job run" in readable["printed"]
    assert_no_key_in(readable)
