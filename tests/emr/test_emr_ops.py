"""Pure request builders by dict equality, and the ops' edge cases (failed steps, waits that
time out) against moto, without Prefect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tasks.aws import is_transient
from tasks.ops import emr as ops
from tasks.ops.s3 import InvalidS3UriError, S3Location, parse_s3_uri
from tests.emr.conftest import REGION, ClusterStuckStarting, ScriptedSteps

SPEC = ops.ClusterSpec(
    cluster_name="sparkify-lake",
    release_label="emr-spark-8.0.0",
    log_uri="s3://step-logs/emr",
    service_role="EMR_DefaultRole",
    job_flow_role="EMR_EC2_DefaultRole",
    primary_instance_type="m5.xlarge",
    core_instance_type="m5.2xlarge",
    core_instance_count=3,
    core_on_spot=True,
    subnet_id="subnet-1",
    idle_timeout_seconds=1800,
    tags={"team": "data"},
    spark_conf={"spark.sql.shuffle.partitions": "64"},
)


def test_run_job_flow_request() -> None:
    assert ops.build_run_job_flow_request(SPEC, "run-1") == {
        "Name": "sparkify-lake",
        "ReleaseLabel": "emr-spark-8.0.0",
        "LogUri": "s3://step-logs/emr",
        "Applications": [{"Name": "Spark"}],
        "Instances": {
            "InstanceGroups": [
                {
                    "Name": "primary",
                    "InstanceRole": "MASTER",
                    "Market": "ON_DEMAND",
                    "InstanceType": "m5.xlarge",
                    "InstanceCount": 1,
                },
                {
                    "Name": "core",
                    "InstanceRole": "CORE",
                    "Market": "SPOT",
                    "InstanceType": "m5.2xlarge",
                    "InstanceCount": 3,
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
            "Ec2SubnetId": "subnet-1",
        },
        "ServiceRole": "EMR_DefaultRole",
        "JobFlowRole": "EMR_EC2_DefaultRole",
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": 1800},
        "Tags": [
            {"Key": "prefect-flow-run-id", "Value": "run-1"},
            {"Key": "project", "Value": "sparkify-lake"},
            {"Key": "team", "Value": "data"},
        ],
        "Configurations": [
            {
                "Classification": "spark-defaults",
                "Properties": {"spark.sql.shuffle.partitions": "64"},
            }
        ],
    }


def test_spark_step() -> None:
    assert ops.build_spark_step(
        "songs_etl r1", "s3://c/entry.py", "s3://c/pkg.zip", ["--songs", "s3://r/s"]
    ) == {
        "Name": "songs_etl r1",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                "--py-files",
                "s3://c/pkg.zip",
                "s3://c/entry.py",
                "--songs",
                "s3://r/s",
            ],
        },
    }


@pytest.mark.parametrize(
    "uri", ["s3a://bucket/x", "s3://Bucket/x", "s3://b/x", "/local/path", "s3://a..b/x", ""]
)
def test_invalid_s3_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidS3UriError):
        parse_s3_uri(uri)


def test_s3_uri_parts() -> None:
    assert parse_s3_uri("s3://my-bucket/raw/song_data/") == S3Location("my-bucket", "raw/song_data")
    assert parse_s3_uri("s3://my-bucket").child("a", "b").uri == "s3://my-bucket/a/b"


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("ThrottlingException", 400, True),
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("AccessDeniedException", 400, False),
        ("ValidationException", 400, False),
    ],
)
def test_only_throttling_and_server_errors_are_retried(
    code: str, status: int, transient: bool
) -> None:
    error = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )
    assert is_transient(error) is transient
    assert is_transient(ops.EmrStepFailedError("j-1", "s-1", "FAILED", "x", None, None)) is False


def test_a_step_log_that_never_arrives_is_a_warning_not_a_second_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="step-logs")
        error = ops.build_step_failed_error(
            s3,
            "j-1",
            "s-1",
            "INTERRUPTED",
            {"State": "INTERRUPTED"},
            "s3://step-logs/emr",
            attempts=2,
            delay=0,
        )
    assert (error.cluster_id, error.step_id, error.stderr_tail) == ("j-1", "s-1", None)
    assert error.log_file == "s3://step-logs/emr/j-1/steps/s-1/stderr.gz"
    assert str(error) == "EMR step s-1 on cluster j-1 ended as INTERRUPTED: INTERRUPTED"
    assert "No step log at s3://step-logs/emr/j-1/steps/s-1/stderr.gz yet" in caplog.text


def test_interrupted_counts_as_a_failed_step() -> None:
    assert ops.StepState.INTERRUPTED in ops.STEP_FAILED
    assert ops.StepState.COMPLETED not in ops.STEP_FAILED


@pytest.fixture
def moto_emr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto EMR client (and moto S3 beside it), with no real credentials in reach."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("emr", region_name=REGION)


def start_cluster_with_a_step(emr: Any) -> tuple[str, str]:
    """A moto cluster from the request the flow sends, with the flow's kind of step."""
    request = ops.build_run_job_flow_request(SPEC.model_copy(update={"subnet_id": None}), "run-1")
    cluster_id = emr.run_job_flow(**request)["JobFlowId"]
    step = ops.build_spark_step("songs_etl r1", "s3://c/entry.py", "s3://c/pkg.zip", [])
    [step_id] = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"]
    return cluster_id, step_id


@pytest.mark.parametrize(
    "states",
    [["PENDING", "RUNNING", "INTERRUPTED"], ["CANCELLED"]],
    ids=["interrupted", "cancelled"],
)
def test_an_interrupted_or_cancelled_step_ends_the_wait_as_a_failure_with_its_error(
    moto_emr: Any, states: list[str]
) -> None:
    cluster_id, step_id = start_cluster_with_a_step(moto_emr)
    # moto never ends a step: describe_step walks through `states`, the rest is moto's.
    scripted = ScriptedSteps(moto_emr, states)
    seen: list[str] = []

    state, status = ops.wait_for_step(
        scripted, cluster_id, step_id, 0, 5, on_state=lambda state, reason: seen.append(state)
    )

    end = states[-1]
    assert (seen, state, status["State"]) == (states, end, end)
    assert state in ops.STEP_FAILED
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="step-logs")
    error = ops.build_step_failed_error(
        s3, cluster_id, step_id, state, status, "s3://step-logs/emr", attempts=1, delay=0
    )
    assert (error.cluster_id, error.step_id, error.state) == (cluster_id, step_id, end)
    assert str(error) == f"EMR step {step_id} on cluster {cluster_id} ended as {end}: {end}"


def test_a_cluster_that_never_gets_ready_times_out_naming_it_and_its_last_state(
    moto_emr: Any,
) -> None:
    cluster_id, _ = start_cluster_with_a_step(moto_emr)
    stuck = ClusterStuckStarting(moto_emr)

    with pytest.raises(ops.EmrWaitTimeoutError) as timeout:
        ops.wait_for_cluster(stuck, cluster_id, 0.01, 0.05)

    error = timeout.value
    assert (error.cluster_id, error.step_id, error.last_state, error.waited_seconds) == (
        cluster_id,
        None,
        "STARTING",
        0.05,
    )
    assert str(error) == (
        f"EMR cluster {cluster_id} still STARTING after 0 s; "
        "raise max_wait_minutes if it needs longer"
    )
    assert stuck.describes > 1  # it kept looking until the time was up


def test_a_step_that_keeps_running_times_out_naming_it_its_cluster_and_its_last_state(
    moto_emr: Any,
) -> None:
    cluster_id, step_id = start_cluster_with_a_step(moto_emr)
    # moto never ends a step; here it stays RUNNING on purpose.
    running = ScriptedSteps(moto_emr, ["RUNNING"])

    with pytest.raises(ops.EmrWaitTimeoutError) as timeout:
        ops.wait_for_step(running, cluster_id, step_id, 0.01, 0.05)

    error = timeout.value
    assert (error.cluster_id, error.step_id, error.last_state, error.waited_seconds) == (
        cluster_id,
        step_id,
        "RUNNING",
        0.05,
    )
    assert str(error) == (
        f"EMR step {step_id} on cluster {cluster_id} still RUNNING after 0 s; "
        "raise max_wait_minutes if it needs longer"
    )
