"""Pure request builders by dict equality, and the ops' edge cases (failed steps, waits that
time out, lost responses, flaky polls) against moto, without Prefect."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.retries.standard import ExponentialBackoff
from moto import mock_aws

from tasks.aws import AwsClients, is_transient
from tasks.ops import emr as ops
from tasks.ops.failures import LogPatience
from tasks.ops.polling import MAX_FAILED_POLLS
from tasks.ops.s3 import InvalidS3UriError, S3Location, parse_s3_uri
from tasks.ops.states import STEP_FAILED, StepState
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


OWNER = ops.RunIdentity("run-1", "http://prefect.test/api")
STARTED = datetime(2018, 11, 2, 6, 0, 0, tzinfo=UTC)


def test_run_job_flow_request() -> None:
    assert ops.build_run_job_flow_request(SPEC, OWNER, STARTED) == {
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
            {"Key": "prefect-api", "Value": "http://prefect.test/api"},
            {"Key": "prefect-flow-run-id", "Value": "run-1"},
            {"Key": "prefect-heartbeat", "Value": "2018-11-02T06:00:00+00:00"},
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


def test_a_cluster_for_the_iceberg_format_enables_emrs_iceberg() -> None:
    request = ops.build_run_job_flow_request(SPEC, OWNER, STARTED, iceberg=True)
    assert request["Configurations"] == [
        {"Classification": "spark-defaults", "Properties": {"spark.sql.shuffle.partitions": "64"}},
        {"Classification": "iceberg-defaults", "Properties": {"iceberg.enabled": "true"}},
    ]
    without_spark_conf = SPEC.model_copy(update={"spark_conf": {}})
    assert ops.build_run_job_flow_request(without_spark_conf, OWNER, STARTED, iceberg=True)[
        "Configurations"
    ] == [{"Classification": "iceberg-defaults", "Properties": {"iceberg.enabled": "true"}}]


def test_block_tags_cannot_replace_the_tags_that_identify_the_run() -> None:
    # A block's tag named like ours would hide the cluster from its retries and sweeper.
    spoofing = SPEC.model_copy(
        update={
            "tags": {
                "project": "other",
                "prefect-flow-run-id": "run-x",
                "prefect-api": "http://elsewhere/api",
                "prefect-heartbeat": "2000-01-01T00:00:00+00:00",
                "team": "data",
            }
        }
    )
    assert ops.build_run_job_flow_request(spoofing, OWNER, STARTED)["Tags"] == [
        {"Key": "prefect-api", "Value": "http://prefect.test/api"},
        {"Key": "prefect-flow-run-id", "Value": "run-1"},
        {"Key": "prefect-heartbeat", "Value": "2018-11-02T06:00:00+00:00"},
        {"Key": "project", "Value": "sparkify-lake"},
        {"Key": "team", "Value": "data"},
    ]


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


def raised_from(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as err:
        return err


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        pytest.param(EndpointConnectionError(endpoint_url="https://emr"), True, id="no connection"),
        pytest.param(ConnectTimeoutError(endpoint_url="https://emr"), True, id="connect timeout"),
        # The response lost after AWS may have acted: retried, by the ops that look first.
        pytest.param(ReadTimeoutError(endpoint_url="https://emr"), True, id="read timeout"),
        pytest.param(raised_from(EndpointConnectionError(endpoint_url="x")), True, id="from one"),
        pytest.param(raised_from(ValueError("bad")), False, id="from a permanent one"),
        pytest.param(ValueError("bad"), False, id="anything else"),
    ],
)
def test_lost_connections_and_errors_raised_from_them_are_transient(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient


SUMMARY = S3Location("lake", "star/_runs/r1.json")
STEP_FOLDER = "s3://step-logs/emr/j-1/steps/s-1/"
STATUS = {"State": "FAILED", "FailureDetails": {"Reason": "Unknown Error."}}
FIRST_LINE = "EMR step s-1 on cluster j-1 ended as FAILED: Unknown Error."
STDOUT = "starting\nrows read\nspark_etl: error: 120 of 1000 input records rejected (12.00%)\n"
STDOUT_TAIL = "rows read\nspark_etl: error: 120 of 1000 input records rejected (12.00%)"  # 2 lines
STDERR = "INFO SparkContext: stopped\nINFO ShutdownHookManager: bye\n"
FAILED_SUMMARY = json.dumps({"status": "failed", "error": "no input under s3://raw/log_data"})


@pytest.mark.parametrize(
    ("planted", "job_reason", "log_tails", "message"),
    [
        pytest.param(
            {"summary": FAILED_SUMMARY, "stdout.gz": STDOUT, "stderr.gz": STDERR},
            "no input under s3://raw/log_data",
            {},
            f"{FIRST_LINE}\nThe job says: no input under s3://raw/log_data\n"
            f"Step logs: {STEP_FOLDER} (stdout.gz, stderr.gz)",
            id="the summary's reason, preferred to the logs",
        ),
        pytest.param(
            {"stdout.gz": STDOUT},
            None,
            {"stdout.gz": STDOUT_TAIL},
            f"{FIRST_LINE}\nStep logs: {STEP_FOLDER} (stdout.gz, stderr.gz)\n"
            "Last lines of stdout.gz:\n"
            f"{STDOUT_TAIL}",
            id="no summary: the tail of stdout.gz",
        ),
        pytest.param(
            {"stdout.gz": STDOUT, "stderr.gz": STDERR},
            None,
            {
                "stdout.gz": STDOUT_TAIL,
                "stderr.gz": STDERR.rstrip("\n"),
            },
            f"{FIRST_LINE}\nStep logs: {STEP_FOLDER} (stdout.gz, stderr.gz)\n"
            "Last lines of stdout.gz:\n"
            f"{STDOUT_TAIL}\n"
            f"Last lines of stderr.gz:\n{STDERR.rstrip()}",
            id="no summary: both tails",
        ),
        pytest.param(
            {"summary": json.dumps({"status": "failed", "error": None}), "stdout.gz": STDOUT},
            None,
            {"stdout.gz": STDOUT_TAIL},
            f"{FIRST_LINE}\nStep logs: {STEP_FOLDER} (stdout.gz, stderr.gz)\n"
            "Last lines of stdout.gz:\n"
            f"{STDOUT_TAIL}",
            id="a summary without an error: the logs",
        ),
    ],
)
def test_a_failed_steps_error_says_the_jobs_reason_or_else_the_log_tails(
    planted: dict[str, str],
    job_reason: str | None,
    log_tails: dict[str, str],
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("lake", "step-logs"):
            s3.create_bucket(Bucket=bucket)
        for name, text in planted.items():
            if name == "summary":
                s3.put_object(Bucket="lake", Key=SUMMARY.key, Body=text.encode())
            else:
                key = f"emr/j-1/steps/s-1/{name}"
                s3.put_object(Bucket="step-logs", Key=key, Body=gzip.compress(text.encode()))
        error = ops.build_step_failed_error(
            s3, "j-1", "s-1", "FAILED", STATUS, "s3://step-logs/emr", SUMMARY, LogPatience(1, 0, 2)
        )
    assert (error.job_reason, error.log_tails, error.log_folder) == (
        job_reason,
        log_tails,
        STEP_FOLDER,
    )
    assert str(error) == message
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_failed_step_without_summary_or_logs_is_a_warning_naming_where_to_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("lake", "step-logs"):
            s3.create_bucket(Bucket=bucket)
        error = ops.build_step_failed_error(
            s3,
            "j-1",
            "s-1",
            "INTERRUPTED",
            {"State": "INTERRUPTED"},
            "s3://step-logs/emr",
            SUMMARY,
            LogPatience(attempts=2, delay_seconds=0),
        )
    assert (error.cluster_id, error.step_id, error.state, error.reason) == (
        "j-1",
        "s-1",
        "INTERRUPTED",
        "INTERRUPTED",
    )
    assert (error.log_folder, error.log_tails, error.job_reason) == (STEP_FOLDER, {}, None)
    assert str(error) == (
        "EMR step s-1 on cluster j-1 ended as INTERRUPTED: INTERRUPTED\n"
        f"Step logs: {STEP_FOLDER} (stdout.gz, stderr.gz)"
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "No run summary at s3://lake/star/_runs/r1.json and no driver log at "
        "s3://step-logs/emr/j-1/steps/s-1/ yet; look there later, and at the driver's YARN "
        "container logs under s3://step-logs/emr/j-1/containers/"
    ]


def test_interrupted_counts_as_a_failed_step() -> None:
    assert StepState.INTERRUPTED in STEP_FAILED
    assert StepState.COMPLETED not in STEP_FAILED


@pytest.fixture
def moto_emr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto EMR client (and moto S3 beside it), with no real credentials in reach."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("emr", region_name=REGION)


def start_cluster_with_a_step(emr: Any) -> tuple[str, str]:
    """A moto cluster from the request the flow sends, with the flow's kind of step."""
    request = ops.build_run_job_flow_request(
        SPEC.model_copy(update={"subnet_id": None}), OWNER, STARTED
    )
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
    assert state in STEP_FAILED
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="step-logs")
    s3.create_bucket(Bucket="lake")
    error = ops.build_step_failed_error(
        s3, cluster_id, step_id, state, status, "s3://step-logs/emr", SUMMARY, LogPatience(1, 0)
    )
    assert (error.cluster_id, error.step_id, error.state) == (cluster_id, step_id, end)
    assert str(error) == (
        f"EMR step {step_id} on cluster {cluster_id} ended as {end}: {end}\n"
        f"Step logs: s3://step-logs/emr/{cluster_id}/steps/{step_id}/ (stdout.gz, stderr.gz)"
    )


def test_a_cluster_that_never_gets_ready_times_out_naming_it_and_its_last_state(
    moto_emr: Any,
) -> None:
    cluster_id, _ = start_cluster_with_a_step(moto_emr)
    stuck = ClusterStuckStarting(moto_emr)

    # Room for many looks: one slow describe on a busy machine must not use up the wait.
    with pytest.raises(ops.EmrWaitTimeoutError) as timeout:
        ops.wait_for_cluster(stuck, cluster_id, 0.01, 0.3)

    error = timeout.value
    assert (error.cluster_id, error.step_id, error.last_state, error.waited_seconds) == (
        cluster_id,
        None,
        "STARTING",
        0.3,
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


class LostResponses:
    """Wraps a moto EMR client: the first run_job_flow and add_job_flow_steps act in moto,
    then their response is lost (a read timeout), as a dropped connection would do."""

    def __init__(self, real: Any) -> None:
        self._real, self.sent = real, {"run_job_flow": 0, "add_job_flow_steps": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def run_job_flow(self, **request: Any) -> Any:
        return self._send("run_job_flow", request)

    def add_job_flow_steps(self, **request: Any) -> Any:
        return self._send("add_job_flow_steps", request)

    def _send(self, operation: str, request: dict[str, Any]) -> Any:
        self.sent[operation] += 1
        response = getattr(self._real, operation)(**request)
        if self.sent[operation] == 1:
            raise ReadTimeoutError(endpoint_url=f"https://elasticmapreduce.{REGION}.amazonaws.com")
        return response


def test_a_create_or_submit_whose_response_was_lost_finds_what_it_made_on_its_retry(
    moto_emr: Any,
) -> None:
    lossy = LostResponses(moto_emr)
    request = ops.build_run_job_flow_request(
        SPEC.model_copy(update={"subnet_id": None}), OWNER, STARTED
    )
    step = ops.build_spark_step("songs_etl r1", "s3://c/entry.py", "s3://c/pkg.zip", [])

    with pytest.raises(ReadTimeoutError):
        ops.create_cluster(moto_emr, lossy, request, "run-1")
    cluster_id, created = ops.create_cluster(moto_emr, lossy, request, "run-1")  # the retry
    with pytest.raises(ReadTimeoutError):
        ops.submit_step(moto_emr, lossy, cluster_id, step)
    step_id = ops.submit_step(moto_emr, lossy, cluster_id, step)  # the retry

    [cluster] = moto_emr.list_clusters()["Clusters"]
    [only_step] = moto_emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert (cluster_id, created, step_id) == (cluster["Id"], False, only_step["Id"])
    assert lossy.sent == {"run_job_flow": 1, "add_job_flow_steps": 1}


def test_another_flow_runs_cluster_is_not_taken_for_this_ones(moto_emr: Any) -> None:
    request = ops.build_run_job_flow_request(
        SPEC.model_copy(update={"subnet_id": None}), OWNER, STARTED
    )
    theirs, _ = ops.create_cluster(moto_emr, moto_emr, request, "run-1")
    other = ops.RunIdentity("run-2", OWNER.prefect_api)
    request_2 = ops.build_run_job_flow_request(
        SPEC.model_copy(update={"subnet_id": None}), other, STARTED
    )

    ours, created = ops.create_cluster(moto_emr, moto_emr, request_2, "run-2")

    assert created and ours != theirs
    assert len(moto_emr.list_clusters()["Clusters"]) == 2


@pytest.fixture
def session_clients(moto_emr: Any, monkeypatch: pytest.MonkeyPatch) -> AwsClients:
    """The tasks' clients, built the tasks' way, inside moto; botocore's retries do not sleep."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return AwsClients(session)


def test_the_single_attempt_client_sends_a_create_once_the_other_client_resends_it(
    session_clients: AwsClients,
) -> None:
    request = ops.build_run_job_flow_request(
        SPEC.model_copy(update={"subnet_id": None}), OWNER, STARTED
    )
    sends = {"emr_single_attempt": 0, "emr": 0}

    for name in sends:
        client = getattr(session_clients, name)

        # Before moto's own before-send handler: the request leaves, its answer never comes.
        def lost(request: Any, name: str = name, **kwargs: Any) -> None:
            sends[name] += 1
            raise ReadTimeoutError(endpoint_url=request.url)

        client.meta.events.register_first("before-send.emr.RunJobFlow", lost)
        with pytest.raises(ReadTimeoutError):
            client.run_job_flow(**request)

    # BOTO_CONFIG's max_attempts=8 counts retries (botocore's old name): 9 sends in all.
    assert sends == {"emr_single_attempt": 1, "emr": 9}


class PollScript:
    """Wraps a moto EMR client: each describe_step answers the next item of ``script``, a
    state, or an error it raises (moto never fails a call nor ends a step on its own)."""

    def __init__(self, real: Any, script: list[str | Exception]) -> None:
        self._real, self._script, self.polls = real, list(script), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        self.polls += 1
        outcome = self._script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        response = self._real.describe_step(ClusterId=ClusterId, StepId=StepId)
        response["Step"]["Status"]["State"] = outcome
        return dict(response)


def aws_error(code: str, status: int, operation: str = "DescribeStep") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def no_connection() -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url=f"https://elasticmapreduce.{REGION}.amazonaws.com")


def test_transient_errors_on_some_polls_do_not_fail_the_wait(
    moto_emr: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cluster_id, step_id = start_cluster_with_a_step(moto_emr)
    flaky = PollScript(
        moto_emr,
        [
            aws_error("ThrottlingException", 400),
            "RUNNING",
            no_connection(),
            aws_error("InternalServerError", 500),
            "RUNNING",
            ReadTimeoutError(endpoint_url="https://emr"),
            "COMPLETED",
        ],
    )
    seen: list[str] = []

    state, _ = ops.wait_for_step(
        flaky, cluster_id, step_id, 0, 5, on_state=lambda state, reason: seen.append(state)
    )

    assert (state, seen, flaky.polls) == ("COMPLETED", ["RUNNING", "RUNNING", "COMPLETED"], 7)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert warnings[0] == (
        "Could not read the state (An error occurred (ThrottlingException) when calling the "
        "DescribeStep operation: ThrottlingException); trying again in 0 s"
    )


def test_nine_failed_polls_in_a_row_are_survived_the_tenth_fails_the_wait(
    moto_emr: Any,
) -> None:
    cluster_id, step_id = start_cluster_with_a_step(moto_emr)
    nine: list[str | Exception] = [no_connection() for _ in range(MAX_FAILED_POLLS - 1)]
    survived = PollScript(moto_emr, [*nine, "COMPLETED"])
    assert ops.wait_for_step(survived, cluster_id, step_id, 0, 5)[0] == "COMPLETED"

    errors = [aws_error("ThrottlingException", 400) for _ in range(MAX_FAILED_POLLS)]
    failing = PollScript(moto_emr, [*errors, "COMPLETED"])
    with pytest.raises(ClientError) as raised:
        ops.wait_for_step(failing, cluster_id, step_id, 0, 5)
    assert (raised.value, failing.polls) == (errors[-1], MAX_FAILED_POLLS)


def test_a_permanent_error_on_a_poll_fails_the_wait_at_once(moto_emr: Any) -> None:
    cluster_id, step_id = start_cluster_with_a_step(moto_emr)
    denied = aws_error("AccessDeniedException", 400)
    polls = PollScript(moto_emr, ["RUNNING", denied, "COMPLETED"])

    with pytest.raises(ClientError) as raised:
        ops.wait_for_step(polls, cluster_id, step_id, 0, 5)

    assert (raised.value, polls.polls) == (denied, 2)


def test_the_heartbeat_tags_the_cluster_at_most_every_interval_and_never_fails(
    moto_emr: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cluster_id, _ = start_cluster_with_a_step(moto_emr)

    def heartbeat_tag() -> str:
        tags = moto_emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Tags"]
        return str(next(tag["Value"] for tag in tags if tag["Key"] == ops.HEARTBEAT_TAG_KEY))

    later, much_later = datetime(2018, 11, 2, 7, tzinfo=UTC), datetime(2018, 11, 2, 8, tzinfo=UTC)
    slow = ops.ClusterHeartbeat(moto_emr, cluster_id, interval=300)
    slow.beat(later)
    slow.beat(much_later)  # within the interval: not sent
    assert heartbeat_tag() == "2018-11-02T07:00:00+00:00"
    ops.ClusterHeartbeat(moto_emr, cluster_id, interval=0).beat(much_later)
    assert heartbeat_tag() == "2018-11-02T08:00:00+00:00"

    class DeniedTags:
        def add_tags(self, **request: Any) -> None:
            raise aws_error("AccessDeniedException", 400, "AddTags")

    ops.ClusterHeartbeat(DeniedTags(), cluster_id).beat(much_later)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"Could not refresh the heartbeat of {cluster_id}: An error occurred "
        "(AccessDeniedException) when calling the AddTags operation: AccessDeniedException"
    ]
