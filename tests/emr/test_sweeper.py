"""The sweeper: its pure rules case by case, and its flow against moto (old, orphaned or
silent clusters of this Prefect API go; untagged, foreign or busy ones stay)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends

from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.aws_job import prefect_api_identity
from tasks.ops.emr import (
    ClusterSpec,
    RunIdentity,
    build_run_job_flow_request,
)
from tasks.ops.sweep_rules import SweepRules, clusters_to_terminate
from tests.emr.conftest import LOG_URI, ORPHAN_RUN, REGION, clusters_by_state, emr, live_flow_run_id
from tests.prefect_records import flow_run_artifacts

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


def start_cluster(
    flow_run_id: str,
    tagged: bool = True,
    prefect_api: str | None = None,
    heartbeat_minutes_ago: float = 0,
    drop_tags: tuple[str, ...] = (),
) -> str:
    """A moto cluster tagged as the flow tags it (of the tests' own API unless told)."""
    owner = RunIdentity(flow_run_id, prefect_api or prefect_api_identity())
    started = datetime.now(UTC) - timedelta(minutes=heartbeat_minutes_ago)
    request = build_run_job_flow_request(SPEC, owner, started)
    request["Tags"] = [tag for tag in request["Tags"] if tag["Key"] not in drop_tags]
    if not tagged:
        request["Tags"] = [{"Key": "project", "Value": "someone-else"}]
    return str(emr().run_job_flow(**request)["JobFlowId"])


@pytest.fixture
def clusters(aws: None) -> dict[str, str]:
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


def test_only_this_apis_dead_or_silent_runs_clusters_go_and_a_busy_one_waits_for_its_step(
    aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    set_up_at = datetime.now(UTC)
    clusters = {
        "live": start_cluster(live_flow_run_id()),
        "silent": start_cluster(live_flow_run_id(), heartbeat_minutes_ago=30),
        "orphan": start_cluster(ORPHAN_RUN),
        "other api": start_cluster(ORPHAN_RUN, prefect_api="http://other-prefect:4200/api"),
        "no run tag": start_cluster(ORPHAN_RUN, drop_tags=("prefect-flow-run-id",)),
        "untagged": start_cluster(ORPHAN_RUN, tagged=False),
        "busy": start_cluster(ORPHAN_RUN),
    }
    [step_id] = emr().add_job_flow_steps(
        JobFlowId=clusters["busy"],
        Steps=[{"Name": "s", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}}],
    )["StepIds"]
    silent_run = next(
        tag["Value"]
        for tag in emr().describe_cluster(ClusterId=clusters["silent"])["Cluster"]["Tags"]
        if tag["Key"] == "prefect-flow-run-id"
    )

    first = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)

    assert sorted(first.result()) == sorted([clusters["silent"], clusters["orphan"]])
    reasons = {row["cluster_id"]: row["reason"] for row in report(first)}
    # The silence is rounded to minutes, counted at the sweep: 30 min plus the time the
    # set-up and the flow took (over a minute on a loaded machine).
    waited = (datetime.now(UTC) - set_up_at).total_seconds() / 60
    silences = {
        f"its flow run {silent_run} sent no heartbeat for {minutes} min"
        for minutes in range(30, round(30 + waited) + 1)
    }
    assert reasons.pop(clusters["silent"]) in silences
    assert reasons == {clusters["orphan"]: f"its flow run {ORPHAN_RUN} is no longer running"}
    ended = {clusters["silent"], clusters["orphan"]}
    after_first_sweep = {
        cluster_id: "TERMINATED" if cluster_id in ended else "WAITING"
        for cluster_id in clusters.values()
    } | {clusters["busy"]: "RUNNING"}  # moto: a cluster with a step is RUNNING
    assert clusters_by_state() == after_first_sweep
    assert (
        f"{clusters['busy']}: its flow run {ORPHAN_RUN} is no longer running, but a step "
        "still runs on it: left to end"
    ) in caplog.messages

    # moto never ends a step by itself: end it in moto's own state, as EMR would.
    [step] = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[clusters["busy"]].steps
    assert step.id == step_id
    step.state = "COMPLETED"
    second = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)

    assert second.result() == [clusters["busy"]]
    assert clusters_by_state() == after_first_sweep | {clusters["busy"]: "TERMINATED"}


API = "http://prefect.test/api"
NOW = datetime(2018, 11, 2, 12, 0, tzinfo=UTC)
RULES = SweepRules(API, max_age_minutes=360, heartbeat_timeout_minutes=20)


def cluster(age: float, heartbeat: float | str | None = None, **tags: str | None) -> dict[str, Any]:
    """A described cluster ``age`` minutes old; ``heartbeat`` minutes ago, or a raw tag."""
    beat = (
        (NOW - timedelta(minutes=heartbeat)).isoformat()
        if isinstance(heartbeat, float | int)
        else heartbeat
    )
    values = {
        "project": "sparkify-lake",
        "prefect-flow-run-id": "run-1",
        "prefect-api": API,
        "prefect-heartbeat": beat,
        **tags,
    }
    return {
        "Id": "j-1",
        "Name": "sparkify-lake",
        "Tags": [{"Key": k, "Value": v} for k, v in values.items() if v is not None],
        "Status": {
            "State": "WAITING",
            "Timeline": {"CreationDateTime": NOW - timedelta(minutes=age)},
        },
    }


DEAD = "its flow run run-1 is no longer running"
SILENT_30 = "its flow run run-1 sent no heartbeat for 30 min"
TOO_OLD = "older than 360 min (400 min)"


@pytest.mark.parametrize(
    ("described", "live", "busy", "reason"),
    [
        pytest.param(cluster(30, 5), {"run-1"}, set(), None, id="live run, fresh heartbeat"),
        pytest.param(cluster(30, 20), {"run-1"}, set(), None, id="heartbeat at the timeout"),
        pytest.param(cluster(60, 30), {"run-1"}, set(), SILENT_30, id="live run, silent"),
        pytest.param(cluster(30), {"run-1"}, set(), SILENT_30, id="no heartbeat: cluster age"),
        pytest.param(cluster(30, "not a time"), {"run-1"}, set(), SILENT_30, id="bad heartbeat"),
        pytest.param(
            cluster(30, "2018-11-02T11:59:00"), {"run-1"}, set(), SILENT_30, id="naive heartbeat"
        ),
        pytest.param(cluster(30, 5), set(), set(), DEAD, id="dead run"),
        pytest.param(cluster(30, 5), set(), {"j-1"}, None, id="dead run, busy: left to end"),
        pytest.param(cluster(60, 30), {"run-1"}, {"j-1"}, None, id="silent run, busy"),
        pytest.param(cluster(400, 5), {"run-1"}, set(), TOO_OLD, id="live run, too old"),
        pytest.param(cluster(400, 5), set(), {"j-1"}, TOO_OLD, id="too old, even busy"),
        pytest.param(
            cluster(400, 5, **{"prefect-api": "http://other/api"}),
            set(),
            set(),
            None,
            id="another Prefect API's",
        ),
        pytest.param(cluster(400, 5, **{"prefect-api": None}), set(), set(), None, id="no API tag"),
        pytest.param(
            cluster(400, 5, **{"prefect-flow-run-id": None}),
            set(),
            set(),
            None,
            id="no flow-run tag",
        ),
    ],
)
def test_which_clusters_the_sweeper_ends_and_why(
    described: dict[str, Any], live: set[str], busy: set[str], reason: str | None
) -> None:
    expected = [(described, reason)] if reason else []
    assert clusters_to_terminate([described], NOW, RULES, live, busy) == expected


def test_the_sweeper_rules_over_many_clusters_keep_their_order_and_warn_for_busy_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead, busy, foreign, old = (
        {**cluster(30, 5), "Id": "j-dead"},
        {**cluster(30, 5), "Id": "j-busy"},
        {**cluster(400, 5, **{"prefect-api": "http://other/api"}), "Id": "j-foreign"},
        {**cluster(400, 5), "Id": "j-old"},
    )

    chosen = clusters_to_terminate([dead, busy, foreign, old], NOW, RULES, set(), {"j-busy"})

    assert chosen == [(dead, DEAD), (old, TOO_OLD)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"j-busy: {DEAD}, but a step still runs on it: left to end"
    ]
