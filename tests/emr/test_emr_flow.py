"""The songs_etl flow with runner="emr" against moto, checked through independent clients."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prefect.blocks.system import Secret

import tasks.emr as emr_tasks
from spark_etl import jars
from spark_etl import lineage as job_lineage
from spark_etl.args import ICEBERG, JobArgs, parse_args
from tasks.aws_job import prefect_api_identity
from tasks.ops.emr import ICEBERG_CONFIGURATION, EmrStepFailedError, EmrWaitTimeoutError
from tasks.ops.failures import LogPatience
from tasks.ops.job_package import build_job_package
from tests.emr.conftest import (
    CODE_URI,
    FAKE_SECRET,
    LOG_URI,
    LOGS_URI,
    OUTPUT_URI,
    REGION,
    SONGS_URI,
    TABLE_COUNTS,
    ClusterStuckStarting,
    ScriptedSteps,
    clusters_by_state,
    emr,
    run_emr_flow,
    script_steps,
    throttling,
    wrap_emr_client,
)
from tests.lineage_receiver import expected_listener, lineage_receiver
from tests.prefect_records import artifact_rows, flow_run_artifacts, flow_run_logs, task_run_counts

pytestmark = pytest.mark.usefixtures("aws")


def test_happy_path_one_cluster_step_names_uploaded_code_cluster_terminated_report_published(
    monkeypatch: pytest.MonkeyPatch, frozen_clock: datetime
) -> None:
    script_steps(monkeypatch, ["PENDING", "RUNNING", "COMPLETED"])

    # Not the default ratio, so an argument lost on its way to the step shows.
    state = run_emr_flow(max_reject_ratio=0.05)

    assert state.is_completed(), state.message
    assert state.result().tables == TABLE_COUNTS
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    assert cluster_state == "TERMINATED"
    cluster = emr().describe_cluster(ClusterId=cluster_id)["Cluster"]
    tags = {tag["Key"]: tag["Value"] for tag in cluster["Tags"]}
    assert tags == {
        "project": "sparkify-lake",
        "prefect-flow-run-id": str(state.state_details.flow_run_id),
        "prefect-api": prefect_api_identity(),
        "prefect-heartbeat": frozen_clock.isoformat(),  # set at creation, then refreshed
        "team": "data",
    }
    assert prefect_api_identity().startswith("http://127.0.0.1:")  # the test's own API
    assert (cluster["ReleaseLabel"], cluster["AutoTerminate"]) == ("emr-spark-8.0.0", False)
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    run_id = run_id_of_step(step["Name"])
    package = build_job_package()
    package_uri = f"{CODE_URI}/spark_etl-{package.digest}.zip"
    entry_uri = f"{CODE_URI}/spark_submit_entry-{package.digest}.py"
    expected_job_args = JobArgs(
        songs_uri=SONGS_URI,
        logs_uri=LOGS_URI,
        output_uri=OUTPUT_URI,
        run_date=None,
        max_reject_ratio=0.05,
        run_id=run_id,
        flow_run_id=str(state.state_details.flow_run_id),  # named in the job's lease
    )
    args = step["Config"]["Args"]
    assert args == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--py-files",
        package_uri,
        entry_uri,
        *expected_job_args.to_argv(),
    ]
    # Read back as the job will read it: to_argv() alone could lose a flag on both sides.
    assert parse_args(args[6:]) == expected_job_args
    s3 = boto3.client("s3", region_name=REGION)
    for uri, body in ((package_uri, package.zip_bytes), (entry_uri, package.entry_bytes)):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    glue = boto3.client("glue", region_name=REGION)
    tables = glue.get_tables(DatabaseName="sparkify_lake")["TableList"]
    assert {table["Name"]: table["StorageDescriptor"]["Location"] for table in tables} == {
        name: f"{OUTPUT_URI}/{name}/" for name in TABLE_COUNTS
    }
    report = artifact_rows(state.state_details.flow_run_id, "songs-etl-run")
    assert {(row["name"], row["rows"]) for row in report if row["kind"] == "table"} == set(
        TABLE_COUNTS.items()
    )


def test_the_iceberg_format_runs_on_a_cluster_with_emrs_iceberg_and_the_tables_in_glue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job commits its Iceberg tables to the Glue database itself: the flow creates the
    database before the run and registers no parquet tables over them after it."""
    script_steps(monkeypatch, ["PENDING", "RUNNING", "COMPLETED"])

    state = run_emr_flow(table_format=ICEBERG, glue_database="sparkify_iceberg")

    assert state.is_completed(), state.message
    [cluster_id] = clusters_by_state()
    cluster = emr().describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert ICEBERG_CONFIGURATION in cluster["Configurations"]
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    job_args = parse_args(step["Config"]["Args"][6:])
    assert (job_args.table_format, job_args.glue_database) == (ICEBERG, "sparkify_iceberg")
    glue = boto3.client("glue", region_name=REGION)
    assert glue.get_database(Name="sparkify_iceberg")["Database"]["Name"] == "sparkify_iceberg"
    assert glue.get_tables(DatabaseName="sparkify_iceberg")["TableList"] == []


def run_id_of_step(step_name: str) -> str:
    """The run id the flow generated, from the step name ``songs_etl <run_id>``."""
    named = re.fullmatch(r"songs_etl (\d{8}T\d{6}Z-[0-9a-f]{8})", step_name)
    assert named is not None, step_name
    return named[1]


def test_a_failed_step_fails_the_flow_with_the_stderr_tail_and_the_cluster_is_terminated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script_steps(monkeypatch, ["RUNNING", "FAILED"])

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(EmrStepFailedError) as failure:
        state.result()
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    # No run summary (the job died before writing one): the tail of the step's stderr.gz
    # that ScriptedSteps planted, its last 40 lines, not all of it.
    tail = [f"log line {n}" for n in range(61, 100)]
    tail.append("spark_etl: error: 120 of 1000 input records rejected (12.00%)")
    step_folder = f"{LOG_URI}/{cluster_id}/steps/{step['Id']}/"
    assert str(failure.value) == (
        f"EMR step {step['Id']} on cluster {cluster_id} ended as FAILED: Unknown Error.\n"
        f"Step logs: {step_folder} (stdout.gz, stderr.gz)\n"
        "Last lines of stderr.gz:\n" + "\n".join(tail)
    )
    assert cluster_state == "TERMINATED"


def test_throttling_on_create_and_describe_is_retried_and_makes_one_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"run_job_flow": 0, "describe_cluster": 0}
    # describe_cluster call 1 is the retried create finding its cluster by tag; calls 2
    # and 3 are the wait's first two polls, throttled and skipped inside the wait (no task
    # retry); call 4, its third poll, sees WAITING; call 5 reads the ended cluster's hours
    # for the cost.
    throttled_describes = {2, 3}

    class Throttled(ScriptedSteps):
        def run_job_flow(self, **request: Any) -> Any:
            calls["run_job_flow"] += 1
            created = self._real.run_job_flow(**request)
            if calls["run_job_flow"] == 1:  # created, but the response is lost to throttling
                raise throttling("RunJobFlow")
            return created

        def describe_cluster(self, ClusterId: str) -> Any:
            calls["describe_cluster"] += 1
            if calls["describe_cluster"] in throttled_describes:
                raise throttling("DescribeCluster")
            return self._real.describe_cluster(ClusterId=ClusterId)

    wrap_emr_client(monkeypatch, lambda real: Throttled(real, ["COMPLETED"]))
    for name in ("create_emr_cluster", "wait_for_emr_cluster"):  # keep the retry, not the wait
        fast = getattr(emr_tasks, name).with_options(retry_delay_seconds=0)
        monkeypatch.setattr(emr_tasks, name, fast)

    state = run_emr_flow()

    assert state.is_completed(), state.message
    assert list(clusters_by_state().values()) == ["TERMINATED"]  # one cluster, not two
    # One run_job_flow: the retry found the first attempt's cluster by its tag.
    assert calls == {"run_job_flow": 1, "describe_cluster": 5}
    runs = task_run_counts(state.state_details.flow_run_id)
    assert (runs["Create the EMR cluster"], runs["Wait for the cluster to be ready"]) == (2, 1)


def test_a_cluster_that_fails_to_start_is_a_clear_error_and_nothing_is_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BrokenStart(ScriptedSteps):
        def describe_cluster(self, ClusterId: str) -> Any:
            response = self._real.describe_cluster(ClusterId=ClusterId)
            response["Cluster"]["Status"] = {
                "State": "TERMINATED_WITH_ERRORS",
                "StateChangeReason": {"Code": "VALIDATION_ERROR", "Message": "Subnet not found"},
            }
            return response

    wrap_emr_client(monkeypatch, lambda real: BrokenStart(real, ["COMPLETED"]))

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(
        Exception,
        match="TERMINATED_WITH_ERRORS before it was ready: VALIDATION_ERROR Subnet not found",
    ):
        state.result()
    assert set(clusters_by_state().values()) == {"TERMINATED"}
    assert emr().list_steps(ClusterId=next(iter(clusters_by_state())))["Steps"] == []


def test_an_error_after_creation_still_terminates_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DeniedSubmit(ScriptedSteps):
        def add_job_flow_steps(self, **request: Any) -> Any:
            raise ClientError(
                {
                    "Error": {"Code": "AccessDeniedException", "Message": "not allowed"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "AddJobFlowSteps",
            )

    wrap_emr_client(monkeypatch, lambda real: DeniedSubmit(real, ["COMPLETED"]))

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(ClientError, match="AccessDenied"):
        state.result()
    assert set(clusters_by_state().values()) == {"TERMINATED"}


def test_an_empty_input_prefix_fails_in_preflight_before_any_cluster() -> None:
    state = run_emr_flow(songs_uri="s3://sparkify-raw/nothing-here")
    assert state.is_failed()
    with pytest.raises(
        Exception, match="song_data location s3://sparkify-raw/nothing-here is missing or empty"
    ):
        state.result()
    assert clusters_by_state() == {}
    bad_uri = run_emr_flow(output_uri="s3a://sparkify-out/star")
    with pytest.raises(Exception, match="is not an s3://bucket/prefix URI"):
        bad_uri.result()
    assert clusters_by_state() == {}


@pytest.mark.parametrize(
    "states", [["RUNNING", "INTERRUPTED"], ["CANCELLED"]], ids=["interrupted", "cancelled"]
)
def test_an_interrupted_or_cancelled_step_fails_the_flow_naming_cluster_step_and_state(
    monkeypatch: pytest.MonkeyPatch, states: list[str]
) -> None:
    script_steps(monkeypatch, states)
    monkeypatch.setattr(emr_tasks, "wait_for_spark_step", wait_looking_for_the_log_once)

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(EmrStepFailedError) as failure:
        state.result()
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    error, end = failure.value, states[-1]
    step_folder = f"{LOG_URI}/{cluster_id}/steps/{step['Id']}/"
    assert (error.cluster_id, error.step_id, error.state) == (cluster_id, step["Id"], end)
    assert (error.log_folder, error.log_tails, error.job_reason) == (step_folder, {}, None)
    assert str(error) == (
        f"EMR step {step['Id']} on cluster {cluster_id} ended as {end}: {end}\n"
        f"Step logs: {step_folder} (stdout.gz, stderr.gz)"
    )
    assert cluster_state == "TERMINATED"


# The real task, kept before a test puts the wrapper below in its place.
WAIT_FOR_SPARK_STEP = emr_tasks.wait_for_spark_step


def wait_looking_for_the_log_once(*args: Any, **kwargs: Any) -> None:
    """The flow's step wait, looking for the step log once instead of three times 20 s
    apart: nothing writes one in these tests, and the wait would only slow them down."""
    WAIT_FOR_SPARK_STEP(*args, **kwargs, log_patience=LogPatience(1, 0.0))


def test_a_cluster_that_never_gets_ready_times_out_and_is_terminated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrap_emr_client(monkeypatch, ClusterStuckStarting)

    state = run_emr_flow(max_wait_minutes=0.001)

    assert state.is_failed()
    with pytest.raises(EmrWaitTimeoutError) as timeout:
        state.result()
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    error = timeout.value
    assert (error.cluster_id, error.step_id, error.last_state) == (cluster_id, None, "STARTING")
    assert str(error) == (
        f"EMR cluster {cluster_id} still STARTING after 0 s; "
        "raise max_wait_minutes if it needs longer"
    )
    assert cluster_state == "TERMINATED"
    assert emr().list_steps(ClusterId=cluster_id)["Steps"] == []  # no step was submitted


def test_a_step_that_keeps_running_times_out_and_the_cluster_is_terminated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script_steps(monkeypatch, ["RUNNING"])

    state = run_emr_flow(max_wait_minutes=0.001)

    assert state.is_failed()
    with pytest.raises(EmrWaitTimeoutError) as timeout:
        state.result()
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    error = timeout.value
    assert (error.cluster_id, error.step_id, error.last_state) == (
        cluster_id,
        step["Id"],
        "RUNNING",
    )
    assert str(error) == (
        f"EMR step {step['Id']} on cluster {cluster_id} still RUNNING after 0 s; "
        "raise max_wait_minutes if it needs longer"
    )
    assert cluster_state == "TERMINATED"


def test_the_secret_key_never_reaches_logs_or_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Printed output is checked in test_secret_leaks.py: Prefect's console handler keeps
    # the stream it saw at start-up, so capfd here would read nothing.
    script_steps(monkeypatch, ["RUNNING", "FAILED"])
    failed = run_emr_flow()
    script_steps(monkeypatch, ["COMPLETED"])
    succeeded = run_emr_flow()

    stored = [
        json.dumps([log.message for log in flow_run_logs(run.state_details.flow_run_id)])
        + json.dumps(
            [
                str(a.data) + str(a.description)
                for a in flow_run_artifacts(run.state_details.flow_run_id)
            ]
        )
        for run in (failed, succeeded)
    ]
    assert "Terminating EMR cluster" in stored[0]  # the logs were really captured
    for text in stored:
        assert FAKE_SECRET not in text


def test_with_lineage_on_the_step_runs_the_listener_from_the_code_bucket_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script_steps(monkeypatch, ["PENDING", "RUNNING", "COMPLETED"])
    Secret(value="emr-lineage-key-9d2e").save("emr-lineage-key", overwrite=True)

    with lineage_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        state = run_emr_flow(lineage_api_key_block="emr-lineage-key")
        flow_events = receiver.of_job("songs_etl")

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    assert [e["eventType"] for e in flow_events] == ["START", "COMPLETE"]
    jar_uri, listener = expected_listener(CODE_URI, receiver.url, flow_run_id)
    [cluster_id] = clusters_by_state()
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    args = step["Config"]["Args"]
    assert args[: 4 + len(listener)] == [
        *("spark-submit", "--deploy-mode", "cluster"),
        *listener,
        "--py-files",
    ]
    assert [arg for arg in args if "emr-lineage-key-9d2e" in arg or "apiKey" in arg] == []
    bucket, key = jar_uri.removeprefix("s3://").split("/", 1)
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == jars.read_lock(job_lineage.LOCK)[0].size
    warnings = [
        log.message
        for log in flow_run_logs(flow_run_id)
        if "reports without the API key" in log.message
    ]
    assert len(warnings) == 1
