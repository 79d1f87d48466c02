"""The sweeper flow against moto: old or orphaned tagged clusters go, untagged ones stay."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Running

from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.ops.emr import ClusterSpec, build_run_job_flow_request
from tests.emr.conftest import LOG_URI, clusters_by_state, emr
from tests.emr.test_emr_flow import flow_run_artifacts

pytestmark = pytest.mark.usefixtures("aws")

SPEC = ClusterSpec(
    cluster_name="c",
    release_label="emr-spark-8.0.0",
    log_uri=LOG_URI,
    service_role="r",
    job_flow_role="p",
    primary_instance_type="m5.xlarge",
    core_instance_type="m5.xlarge",
    core_instance_count=1,
)


@flow
def placeholder() -> None:
    """Only there to own a flow run that stays Running."""


def live_flow_run_id() -> str:
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(placeholder, state=Running()).id)


def start_cluster(flow_run_id: str, tagged: bool = True) -> str:
    request = build_run_job_flow_request(SPEC, flow_run_id)
    if not tagged:
        request["Tags"] = [{"Key": "project", "Value": "someone-else"}]
    return str(emr().run_job_flow(**request)["JobFlowId"])


@pytest.fixture
def clusters() -> dict[str, str]:
    return {
        "live": start_cluster(live_flow_run_id()),
        "orphan": start_cluster("00000000-0000-0000-0000-000000000000"),  # run never existed
        "untagged": start_cluster("11111111-1111-1111-1111-111111111111", tagged=False),
    }


def test_terminates_orphaned_tagged_clusters_only(clusters: dict[str, str]) -> None:
    state = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)
    assert state.result() == [clusters["orphan"]]
    assert clusters_by_state() == {
        clusters["live"]: "WAITING",
        clusters["orphan"]: "TERMINATED",
        clusters["untagged"]: "WAITING",
    }
    rows = report(state)
    assert [(row["cluster_id"], row["action"]) for row in rows] == [
        (clusters["orphan"], "terminated")
    ]
    assert "is no longer running" in rows[0]["reason"]


def test_terminates_a_live_runs_cluster_once_it_is_too_old(clusters: dict[str, str]) -> None:
    state = terminate_emr_clusters(
        aws_credentials_block="test-aws", max_age_minutes=-1, return_state=True
    )
    assert sorted(state.result()) == sorted([clusters["live"], clusters["orphan"]])
    assert clusters_by_state()[clusters["untagged"]] == "WAITING"
    assert clusters_by_state()[clusters["live"]] == "TERMINATED"


def test_dry_run_reports_and_terminates_nothing(clusters: dict[str, str]) -> None:
    state = terminate_emr_clusters(
        aws_credentials_block="test-aws", dry_run=True, return_state=True
    )
    assert state.result() == [clusters["orphan"]]
    assert set(clusters_by_state().values()) == {"WAITING"}
    assert [(row["cluster_id"], row["action"]) for row in report(state)] == [
        (clusters["orphan"], "would terminate")
    ]


def report(state: Any) -> list[dict[str, Any]]:
    [artifact] = [
        a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.key == "emr-sweep"
    ]
    return list(json.loads(artifact.data))
