"""The songs_etl flow with runner="emr" against moto, checked through independent clients."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

import flows.songs_etl as songs_etl_module
import tasks.emr as emr_tasks
from flows.songs_etl import songs_etl
from tests.emr.conftest import (
    CODE,
    CODE_URI,
    FAKE_SECRET,
    LOGS_URI,
    OUTPUT_URI,
    REGION,
    SONGS_URI,
    TABLE_COUNTS,
    ScriptedSteps,
    clusters_by_state,
    emr,
    wrap_emr_client,
)

pytestmark = pytest.mark.usefixtures("aws")


def run_emr_flow(**overrides: Any) -> Any:
    parameters: dict[str, Any] = {
        "runner": "emr",
        "songs_uri": SONGS_URI,
        "logs_uri": LOGS_URI,
        "output_uri": OUTPUT_URI,
        "aws_credentials_block": "test-aws",
        "cluster_config_block": "test-emr",
        "code_bucket_uri": CODE_URI,
        "poll_seconds": 0.01,
        "max_wait_minutes": 0.05,
    }
    parameters.update(overrides)
    return songs_etl(**parameters, return_state=True)


def script_steps(monkeypatch: pytest.MonkeyPatch, states: list[str], **options: Any) -> None:
    wrap_emr_client(monkeypatch, lambda real: ScriptedSteps(real, states, **options))


def test_happy_path_one_cluster_step_names_uploaded_code_cluster_terminated_report_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script_steps(monkeypatch, ["PENDING", "RUNNING", "COMPLETED"])

    state = run_emr_flow()

    assert state.is_completed(), state.message
    assert state.result().tables == TABLE_COUNTS
    [(cluster_id, cluster_state)] = clusters_by_state().items()
    assert cluster_state == "TERMINATED"
    cluster = emr().describe_cluster(ClusterId=cluster_id)["Cluster"]
    tags = {tag["Key"]: tag["Value"] for tag in cluster["Tags"]}
    assert tags == {
        "project": "sparkify-lake",
        "prefect-flow-run-id": str(state.state_details.flow_run_id),
        "team": "data",
    }
    assert (cluster["ReleaseLabel"], cluster["AutoTerminate"]) == ("emr-spark-8.0.0", False)
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    args = step["Config"]["Args"]
    assert args[:5] == ["spark-submit", "--deploy-mode", "cluster", "--py-files", args[4]]
    s3 = boto3.client("s3", region_name=REGION)
    for uri in (args[4], args[5]):  # the zip and the entry script exist where the step says
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert bucket == CODE and s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    assert args[6:12] == ["--songs", SONGS_URI, "--logs", LOGS_URI, "--output", OUTPUT_URI]
    report = artifact_rows(state.state_details.flow_run_id, "songs-etl-run")
    assert {(row["name"], row["rows"]) for row in report if row["kind"] == "table"} == set(
        TABLE_COUNTS.items()
    )


def test_a_failed_step_fails_the_flow_with_the_stderr_tail_and_the_cluster_is_terminated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script_steps(monkeypatch, ["RUNNING", "FAILED"])

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(Exception) as failure:
        state.result()
    message = str(failure.value)
    assert "ended as FAILED: Unknown Error." in message
    assert "spark_etl: error: 120 of 1000 input records rejected (12.00%)" in message
    assert "log line 99" in message and "log line 40" not in message  # the tail, not all
    assert set(clusters_by_state().values()) == {"TERMINATED"}


def test_throttling_on_create_and_describe_is_retried_and_makes_one_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, int] = {"run_job_flow": 0, "describe_cluster": 0}

    class Throttled(ScriptedSteps):
        def run_job_flow(self, **request: Any) -> Any:
            calls["run_job_flow"] += 1
            if calls["run_job_flow"] == 1:  # created, but the response is lost to throttling
                self._real.run_job_flow(**request)
            if calls["run_job_flow"] <= 2:
                raise throttling("RunJobFlow")
            return self._real.run_job_flow(**request)

        def describe_cluster(self, ClusterId: str) -> Any:
            calls["describe_cluster"] += 1
            if 3 <= calls["describe_cluster"] <= 4:
                raise throttling("DescribeCluster")
            return self._real.describe_cluster(ClusterId=ClusterId)

    wrap_emr_client(monkeypatch, lambda real: Throttled(real, ["COMPLETED"]))
    for name in ("create_emr_cluster", "wait_for_emr_cluster"):  # keep the retry, not the wait
        fast = getattr(emr_tasks, name).with_options(retry_delay_seconds=0)
        monkeypatch.setattr(songs_etl_module, name, fast)

    state = run_emr_flow()

    assert state.is_completed(), state.message
    assert list(clusters_by_state().values()) == ["TERMINATED"]  # one cluster, not three
    assert calls["run_job_flow"] == 1  # the retry found the first attempt's cluster by tag


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


def test_the_secret_key_never_reaches_logs_or_artifacts(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    script_steps(monkeypatch, ["RUNNING", "FAILED"])
    failed = run_emr_flow()
    script_steps(monkeypatch, ["COMPLETED"])
    succeeded = run_emr_flow()

    printed = "".join(capfd.readouterr())
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
    for text in (printed, *stored):
        assert FAKE_SECRET not in text


def throttling(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


def flow_run_logs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )


def flow_run_artifacts(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def artifact_rows(flow_run_id: Any, key: str) -> list[dict[str, Any]]:
    [artifact] = [a for a in flow_run_artifacts(flow_run_id) if a.key == key]
    return list(json.loads(artifact.data))
