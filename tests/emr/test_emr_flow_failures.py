"""The songs_etl flow on EMR when AWS misbehaves: lost responses, flaky or failing polls,
a denied teardown, a denied Glue; checked through independent clients and the run's log."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

import tasks.emr as emr_tasks
import tasks.glue as glue_tasks
from tasks.aws import AwsClients, aws_clients
from tasks.glue import CatalogNotUpdatedError
from tasks.ops.emr import EmrStepFailedError, EmrTeardownError
from tests.emr.conftest import (
    LOG_URI,
    OUTPUT_URI,
    REGION,
    TABLE_COUNTS,
    ScriptedSteps,
    clusters_by_state,
    emr,
    run_emr_flow,
    wrap_emr_client,
)
from tests.prefect_records import artifact_rows, flow_run_logs, task_run_counts

pytestmark = pytest.mark.usefixtures("aws")

ENDPOINT = f"https://elasticmapreduce.{REGION}.amazonaws.com"
JOB_ERROR = "120 of 1000 input records rejected (12.00%)"
WARNING = 30  # logging.WARNING, as the Prefect API stores a log's level


def denied(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": "not allowed"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


class StepScript(ScriptedSteps):
    """ScriptedSteps whose script may hold errors that describe_step raises (moto never
    fails a poll), recording what the flow did to the cluster in ``events``, a list shared
    by the wrappers of every task."""

    def __init__(self, real: Any, script: list[str | Exception], events: list[str]) -> None:
        super().__init__(real, [s for s in script if isinstance(s, str)], job_error=None)
        self._script, self.events = list(script), events

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        outcome = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(outcome, Exception):
            self.events.append(type(outcome).__name__)
            raise outcome
        response = super().describe_step(ClusterId=ClusterId, StepId=StepId)
        self.events.append(response["Step"]["Status"]["State"])
        return response

    def terminate_job_flows(self, **request: Any) -> Any:
        self.events.append("terminate")
        return self._real.terminate_job_flows(**request)


def messages_at_warning(flow_run_id: Any) -> list[str]:
    return [log.message for log in flow_run_logs(flow_run_id) if log.level == WARNING]


def only_cluster_and_step() -> tuple[str, str]:
    [cluster_id] = clusters_by_state()
    [step] = emr().list_steps(ClusterId=cluster_id)["Steps"]
    return cluster_id, step["Id"]


def test_lost_create_and_submit_responses_are_retried_into_one_cluster_and_one_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = {"run_job_flow": 0, "add_job_flow_steps": 0}

    class LostResponses(ScriptedSteps):
        """The first RunJobFlow and AddJobFlowSteps act in moto, then their answer is
        lost (a read timeout): what a dropped connection does after AWS has acted."""

        def run_job_flow(self, **request: Any) -> Any:
            return self._send("run_job_flow", request)

        def add_job_flow_steps(self, **request: Any) -> Any:
            return self._send("add_job_flow_steps", request)

        def _send(self, operation: str, request: dict[str, Any]) -> Any:
            sent[operation] += 1
            response = getattr(self._real, operation)(**request)
            if sent[operation] == 1:
                raise ReadTimeoutError(endpoint_url=ENDPOINT)
            return response

    wrap_emr_client(monkeypatch, lambda real: LostResponses(real, ["COMPLETED"]))
    for name in ("create_emr_cluster", "submit_spark_step"):  # keep the retry, not the wait
        fast = getattr(emr_tasks, name).with_options(retry_delay_seconds=0)
        monkeypatch.setattr(emr_tasks, name, fast)

    state = run_emr_flow()

    assert state.is_completed(), state.message
    cluster_id, step_id = only_cluster_and_step()
    assert clusters_by_state() == {cluster_id: "TERMINATED"}
    assert sent == {"run_job_flow": 1, "add_job_flow_steps": 1}  # the retries sent nothing
    flow_run_id = state.state_details.flow_run_id
    runs = task_run_counts(flow_run_id)
    assert (runs["Create the EMR cluster"], runs["Submit the Spark step"]) == (2, 2)
    warnings = messages_at_warning(flow_run_id)
    flow_run = str(flow_run_id)
    assert f"Found cluster {cluster_id} of flow run {flow_run}: not starting another" in warnings
    assert any(w.startswith(f"Found step {step_id} (songs_etl ") for w in warnings), warnings


def test_a_lost_connection_while_the_step_runs_is_skipped_and_the_cluster_ends_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    script: list[str | Exception] = [
        "RUNNING",
        EndpointConnectionError(endpoint_url=ENDPOINT),
        "RUNNING",
        "COMPLETED",
    ]
    wrap_emr_client(monkeypatch, lambda real: StepScript(real, script, events))

    state = run_emr_flow()

    assert state.is_completed(), state.message
    assert state.result().tables == TABLE_COUNTS
    # The cluster was terminated once, after the step completed: never mid-step.
    assert events == ["RUNNING", "EndpointConnectionError", "RUNNING", "COMPLETED", "terminate"]
    assert set(clusters_by_state().values()) == {"TERMINATED"}
    flow_run_id = state.state_details.flow_run_id
    assert task_run_counts(flow_run_id)["Wait for the Spark step"] == 1
    assert [w for w in messages_at_warning(flow_run_id) if "read the state" in w] == [
        f'Could not read the state (Could not connect to the endpoint URL: "{ENDPOINT}"); '
        "trying again in 0 s"
    ]


def test_polling_that_keeps_failing_fails_the_run_but_leaves_the_cluster_to_its_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    lost = EndpointConnectionError(endpoint_url=ENDPOINT)
    wrap_emr_client(monkeypatch, lambda real: StepScript(real, ["RUNNING", lost], events))

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(EndpointConnectionError):
        state.result()
    cluster_id, step_id = only_cluster_and_step()
    # The step may still be writing the lake: the cluster is not terminated (moto shows a
    # cluster with a step as RUNNING); its idle timeout or the sweeper ends it later.
    assert clusters_by_state() == {cluster_id: "RUNNING"}
    assert events == ["RUNNING"] + ["EndpointConnectionError"] * 10
    warnings = messages_at_warning(state.state_details.flow_run_id)
    assert warnings[-1] == (
        f"Cluster {cluster_id} is left to finish step {step_id}, which may still be writing "
        "the lake; its idle timeout or the terminate_emr_clusters sweeper ends it once the "
        "step is done"
    )
    assert len([w for w in warnings if w.startswith("Could not read the state")]) == 9


def test_a_failed_step_whose_terminate_is_denied_names_both_failures_and_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class TerminateDenied(ScriptedSteps):
        def terminate_job_flows(self, **request: Any) -> Any:
            raise denied("TerminateJobFlows")

    wrap_emr_client(
        monkeypatch, lambda real: TerminateDenied(real, ["RUNNING", "FAILED"], job_error=JOB_ERROR)
    )

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(EmrTeardownError) as failure:
        state.result()
    cluster_id, step_id = only_cluster_and_step()
    error = failure.value
    assert isinstance(error.failure, EmrStepFailedError)
    assert (error.cluster_id, error.__cause__) == (cluster_id, error.failure)
    assert str(error) == (
        f"EmrStepFailedError: EMR step {step_id} on cluster {cluster_id} ended as FAILED: "
        f"Unknown Error.\nThe job says: {JOB_ERROR}\n"
        f"Step logs: {LOG_URI}/{cluster_id}/steps/{step_id}/ (stdout.gz, stderr.gz)\n"
        f"Then terminating EMR cluster {cluster_id} failed (ClientError: An error occurred "
        "(AccessDeniedException) when calling the TerminateJobFlows operation: not allowed); "
        "it may still be running: terminate it in the EMR console, or let the "
        "terminate_emr_clusters sweeper or its idle timeout end it."
    )
    assert clusters_by_state() == {cluster_id: "RUNNING"}
    # AccessDenied is not retried.
    assert task_run_counts(state.state_details.flow_run_id)["Terminate the EMR cluster"] == 1


def test_a_failed_step_with_a_run_summary_fails_the_flow_with_the_jobs_own_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ScriptedSteps plants the stderr.gz too: the summary's reason is preferred to it.
    wrap_emr_client(
        monkeypatch, lambda real: ScriptedSteps(real, ["RUNNING", "FAILED"], job_error=JOB_ERROR)
    )

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(EmrStepFailedError) as failure:
        state.result()
    cluster_id, step_id = only_cluster_and_step()
    assert (failure.value.job_reason, failure.value.log_tails) == (JOB_ERROR, {})
    assert str(failure.value) == (
        f"EMR step {step_id} on cluster {cluster_id} ended as FAILED: Unknown Error.\n"
        f"The job says: {JOB_ERROR}\n"
        f"Step logs: {LOG_URI}/{cluster_id}/steps/{step_id}/ (stdout.gz, stderr.gz)"
    )
    assert clusters_by_state() == {cluster_id: "TERMINATED"}


def test_glue_denied_after_a_good_job_fails_the_flow_once_the_report_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrap_emr_client(monkeypatch, lambda real: ScriptedSteps(real, ["COMPLETED"]))

    class DeniedGlue:
        """moto's Glue, but the role may not use it (moto has no IAM enforcement here)."""

        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def create_database(self, **request: Any) -> Any:
            raise denied("CreateDatabase")

    def clients_with_denied_glue(block: str) -> AwsClients:
        built = aws_clients(block)
        built.__dict__["glue"] = DeniedGlue(built.glue)  # where cached_property keeps it
        return built

    monkeypatch.setattr(glue_tasks, "aws_clients", clients_with_denied_glue)

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(CatalogNotUpdatedError) as failure:
        state.result()
    assert str(failure.value) == (
        f"The tables are written to {OUTPUT_URI}, but Glue database sparkify_lake is not up "
        "to date (ClientError: An error occurred (AccessDeniedException) when calling the "
        "CreateDatabase operation: not allowed). Athena may miss new partitions until the "
        "next run, which registers everything missing."
    )
    flow_run_id = state.state_details.flow_run_id
    report = artifact_rows(flow_run_id, "songs-etl-run")
    assert {(row["name"], row["rows"]) for row in report if row["kind"] == "table"} == set(
        TABLE_COUNTS.items()
    )
    assert task_run_counts(flow_run_id)["Register the tables in Glue"] == 1  # not retried
    assert set(clusters_by_state().values()) == {"TERMINATED"}


def test_the_ops_warnings_reach_the_flow_runs_log(monkeypatch: pytest.MonkeyPatch) -> None:
    wrap_emr_client(monkeypatch, lambda real: ScriptedSteps(real, ["COMPLETED"]))

    state = run_emr_flow()

    assert state.is_completed(), state.message
    cluster_id, step_id = only_cluster_and_step()
    # moto keeps the step RUNNING and lacks cancel_steps: terminate_emr_cluster's try to
    # cancel it warns from tasks.ops.emr, a Prefect-free module.
    [cancel_warning] = [
        m
        for m in messages_at_warning(state.state_details.flow_run_id)
        if m.startswith("Could not cancel steps")
    ]
    assert cancel_warning.startswith(f"Could not cancel steps ['{step_id}'] on {cluster_id}: ")
