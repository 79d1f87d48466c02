"""The AWS key of the credentials block never reaches anything a person can read.

Four paths beyond the two flow runs of ``test_emr_flow.py``: an interrupted run (the
interrupt handler and the ``on_crashed`` hook, which run outside the tasks) and the hook
called on a cluster still running its step; a preflight that AWS refuses; a Glue
registration that AWS refuses; the sweeper. Each one is read back everywhere its words
can land: stdout and stderr, Python's log records, the Prefect logs and artifacts of
every flow run involved, and the full text of every exception (its chain included).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError
from prefect.runtime import flow_run as current_flow_run
from prefect_aws import AwsCredentials

import flows.songs_etl as songs_etl_module
import tasks.emr as emr_tasks
import tasks.glue as glue_tasks
from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.aws import AwsClients, aws_clients
from tasks.aws_job import prefect_api_identity
from tasks.ops import emr as emr_ops
from tests.emr.conftest import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET,
    LOG_URI,
    REGION,
    clusters_by_state,
    emr,
    run_emr_flow,
    script_steps,
)
from tests.leak_search import Printed, assert_no_key_in, everything_readable, run_id

pytestmark = pytest.mark.usefixtures("aws")

HOOK = "_end_work_of_run"


class Interrupted(BaseException):
    """An interrupt (a BaseException, as SIGTERM and Ctrl-C are): the run crashes."""


@pytest.fixture(autouse=True)
def the_block_holds_the_key_searched_for(aws: None) -> None:
    block = cast(AwsCredentials, AwsCredentials.load("test-aws"))
    assert block.aws_access_key_id == FAKE_ACCESS_KEY_ID
    assert block.aws_secret_access_key is not None
    assert block.aws_secret_access_key.get_secret_value() == FAKE_SECRET


def test_an_interrupted_run_and_its_crash_hook_leak_no_key(
    monkeypatch: pytest.MonkeyPatch,
    printed: Printed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script_steps(monkeypatch, ["RUNNING"])
    crashed_runs: list[str] = []

    def interrupted_wait(*args: Any, **kwargs: Any) -> None:
        crashed_runs.append(str(current_flow_run.id))
        raise Interrupted("the worker was stopped")

    monkeypatch.setattr(emr_tasks, "wait_for_spark_step", interrupted_wait)

    with pytest.raises(Interrupted) as interrupt:
        run_emr_flow()

    assert list(clusters_by_state().values()) == ["TERMINATED"]  # the interrupt handler
    readable = everything_readable(printed, caplog, crashed_runs, [interrupt.value])
    assert f"Running hook '{HOOK}' in response to entering state 'Crashed'" in readable["logs"]
    assert f"Hook '{HOOK}' finished running successfully" in readable["logs"]
    assert "Crash detected!" in readable["printed"]
    assert_no_key_in(readable)


def test_the_hook_on_a_cluster_still_running_its_step_leaks_no_key(
    printed: Printed, caplog: pytest.LogCaptureFixture
) -> None:
    flow_run_id = str(uuid.uuid4())
    cluster_id = start_cluster(flow_run_id, with_running_step=True)
    flow_run = SimpleNamespace(
        id=flow_run_id, parameters={"runner": "emr", "aws_credentials_block": "test-aws"}
    )

    songs_etl_module._end_work_of_run(None, flow_run, None)

    assert clusters_by_state() == {cluster_id: "TERMINATED"}
    readable = everything_readable(printed, caplog, [], [])
    # moto has no cancel_steps: the hook's warning is what shows it tried.
    assert "Could not cancel steps ['s-" in readable["python logs"]
    assert (
        f"on {cluster_id}: The cancel_steps action has not been implemented"
        in (readable["python logs"])
    )
    assert "Could not cancel steps ['s-" in readable["printed"]
    assert_no_key_in(readable)


def test_a_preflight_refused_by_aws_leaks_no_key(
    printed: Printed, caplog: pytest.LogCaptureFixture
) -> None:
    state = run_emr_flow(output_uri="s3://sparkify-no-such-bucket/star")

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    readable = everything_readable(printed, caplog, [run_id(state)], [error])
    assert (
        "AWS refused a preflight check: An error occurred (NoSuchBucket) when calling the "
        "PutObject operation" in readable["errors"]
    )
    assert "Finished in state Failed" in readable["logs"]
    assert "AWS refused a preflight check" in readable["printed"]
    assert clusters_by_state() == {}
    assert_no_key_in(readable)


def test_a_glue_registration_refused_by_aws_leaks_no_key(
    monkeypatch: pytest.MonkeyPatch,
    printed: Printed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script_steps(monkeypatch, ["COMPLETED"])
    monkeypatch.setattr(glue_tasks, "aws_clients", clients_with_glue_refusing_create_table)

    state = run_emr_flow()

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    readable = everything_readable(printed, caplog, [run_id(state)], [error])
    assert "Glue database sparkify_lake is not up to date (ClientError: " in readable["errors"]
    assert "is not authorized to perform: glue:CreateTable" in readable["errors"]
    assert "songs-etl-run" in readable["artifacts"]  # the report went out before Glue
    assert "is not authorized to perform: glue:CreateTable" in readable["logs"]
    assert "is not authorized to perform: glue:CreateTable" in readable["printed"]
    assert_no_key_in(readable)


def test_the_sweeper_leaks_no_key(printed: Printed, caplog: pytest.LogCaptureFixture) -> None:
    orphan = start_cluster(str(uuid.uuid4()), with_running_step=False)
    busy = start_cluster(str(uuid.uuid4()), with_running_step=True)

    state = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)

    assert state.is_completed(), state.message
    assert clusters_by_state() == {orphan: "TERMINATED", busy: "RUNNING"}
    readable = everything_readable(printed, caplog, [run_id(state)], [])
    assert "Found 2 active sparkify-lake clusters" in readable["logs"]
    assert f"Terminating EMR cluster {orphan}" in readable["logs"]
    assert f"{busy}: its flow run" in readable["logs"]  # the ops warning, forwarded
    assert "emr-sweep" in readable["artifacts"]
    assert f"Terminating EMR cluster {orphan}" in readable["printed"]
    assert_no_key_in(readable)


def start_cluster(flow_run_id: str, with_running_step: bool) -> str:
    """A cluster of this Prefect API's flow run, tagged as the flow tags its own."""
    spec = emr_ops.ClusterSpec(log_uri=LOG_URI)
    owner = emr_ops.RunIdentity(flow_run_id, prefect_api_identity())
    request = emr_ops.build_run_job_flow_request(spec, owner, datetime.now(UTC))
    cluster_id: str = emr().run_job_flow(**request)["JobFlowId"]
    if with_running_step:  # moto starts the first step at once and never ends it
        step = emr_ops.build_spark_step("songs_etl x", "s3://c/e.py", "s3://c/p.zip", [])
        emr().add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])
    return cluster_id


class GlueRefusingCreateTable:
    """A Glue client whose create_table AWS refuses: moto enforces no IAM policy."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def create_table(self, **request: Any) -> Any:
        table = f"{request['DatabaseName']}/{request['TableInput']['Name']}"
        message = (
            "User: arn:aws:iam::123456789012:user/sparkify-flow is not authorized to "
            f"perform: glue:CreateTable on resource: arn:aws:glue:{REGION}:123456789012:"
            f"table/{table} because no identity-based policy allows the glue:CreateTable "
            "action"
        )
        refusal: Any = {
            "Error": {"Code": "AccessDeniedException", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        raise ClientError(refusal, "CreateTable")


def clients_with_glue_refusing_create_table(block: str) -> AwsClients:
    built = aws_clients(block)
    built.__dict__["glue"] = GlueRefusingCreateTable(built.glue)  # cached_property's slot
    return built
