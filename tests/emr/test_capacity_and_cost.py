"""Capacity and cost: instance fleets with a Spot core fleet that falls back to On-Demand,
managed scaling limits, and a run's cost from the cluster's normalized instance hours to
the run report's cost row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from prefect import flow
from pydantic import ValidationError

from flows.songs_etl import songs_etl
from tasks.emr import read_emr_run_cost
from tasks.ops.cost import RunCost
from tasks.ops.emr import (
    ClusterSpec,
    ClusterUsage,
    RunIdentity,
    build_run_job_flow_request,
    estimate_cluster_cost,
    normalized_units,
    read_cluster_usage,
)
from tests.emr.conftest import (
    CODE_URI,
    LOGS_URI,
    OUTPUT_URI,
    REGION,
    SONGS_URI,
    ScriptedSteps,
    wrap_emr_client,
)
from tests.prefect_records import artifact_rows, flow_run_logs

OWNER = RunIdentity("run-1", "http://prefect.test/api")
STARTED = datetime(2018, 11, 2, 6, 0, 0, tzinfo=UTC)
LOG_URI = "s3://step-logs/emr"
KEEP_ALIVE = {"KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False}
PRICES = "us-east-1 On-Demand list prices of 2025-01-01"


def request_for(**fields: Any) -> dict[str, Any]:
    return build_run_job_flow_request(ClusterSpec(log_uri=LOG_URI, **fields), OWNER, STARTED)


def test_by_default_two_on_demand_core_nodes_beside_an_on_demand_primary_no_scaling() -> None:
    request = request_for()

    assert request["Instances"] == {
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
                "Market": "ON_DEMAND",
                "InstanceType": "m5.xlarge",
                "InstanceCount": 2,
            },
        ],
        **KEEP_ALIVE,
    }
    assert "ManagedScalingPolicy" not in request


def test_an_on_demand_fleet_takes_the_cheapest_of_several_types_in_any_listed_subnet() -> None:
    request = request_for(
        composition="instance-fleets", core_instance_count=3, subnet_id="subnet-9"
    )

    assert request["Instances"] == {
        "InstanceFleets": [
            {
                "Name": "primary",
                "InstanceFleetType": "MASTER",
                "TargetOnDemandCapacity": 1,
                "InstanceTypeConfigs": [{"InstanceType": "m5.xlarge"}],
            },
            {
                "Name": "core",
                "InstanceFleetType": "CORE",
                "InstanceTypeConfigs": [
                    {"InstanceType": "m5.xlarge", "WeightedCapacity": 1},
                    {"InstanceType": "m5a.xlarge", "WeightedCapacity": 1},
                    {"InstanceType": "m6i.xlarge", "WeightedCapacity": 1},
                ],
                "TargetOnDemandCapacity": 3,
                "LaunchSpecifications": {
                    "OnDemandSpecification": {"AllocationStrategy": "lowest-price"}
                },
            },
        ],
        **KEEP_ALIVE,
        "Ec2SubnetIds": ["subnet-9"],
    }
    assert "ManagedScalingPolicy" not in request


def test_a_spot_fleet_switches_to_on_demand_after_its_timeout_and_scales_in_fleet_units() -> None:
    request = request_for(
        composition="instance-fleets",
        core_on_spot=True,
        core_instance_type="m5.2xlarge",
        core_fleet_instance_types=["m5a.2xlarge", "m5.2xlarge", "m6i.2xlarge"],  # one twice
        managed_scaling_max_core_nodes=10,
    )

    assert request["Instances"]["InstanceFleets"][1] == {
        "Name": "core",
        "InstanceFleetType": "CORE",
        "InstanceTypeConfigs": [
            {"InstanceType": "m5.2xlarge", "WeightedCapacity": 1},
            {"InstanceType": "m5a.2xlarge", "WeightedCapacity": 1},
            {"InstanceType": "m6i.2xlarge", "WeightedCapacity": 1},
        ],
        "TargetSpotCapacity": 2,
        "LaunchSpecifications": {
            "SpotSpecification": {
                "TimeoutDurationMinutes": 10,
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": "price-capacity-optimized",
            },
            "OnDemandSpecification": {"AllocationStrategy": "lowest-price"},
        },
    }
    assert request["ManagedScalingPolicy"] == {
        "ComputeLimits": {
            "UnitType": "InstanceFleetUnits",
            "MinimumCapacityUnits": 2,
            "MaximumCapacityUnits": 10,
        }
    }


def test_instance_groups_scale_in_instances_with_an_on_demand_limit() -> None:
    request = request_for(
        core_instance_count=3,
        managed_scaling_max_core_nodes=6,
        managed_scaling_max_on_demand_nodes=3,
    )

    assert request["ManagedScalingPolicy"] == {
        "ComputeLimits": {
            "UnitType": "Instances",
            "MinimumCapacityUnits": 3,
            "MaximumCapacityUnits": 6,
            "MaximumOnDemandCapacityUnits": 3,
        }
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"core_on_spot": True, "managed_scaling_max_core_nodes": 4, "subnet_id": "subnet-1"},
        {"composition": "instance-fleets", "subnet_id": "subnet-1"},
        {
            "composition": "instance-fleets",
            "core_on_spot": True,
            "managed_scaling_max_core_nodes": 4,
            "managed_scaling_max_on_demand_nodes": 0,
        },
    ],
    ids=["default", "spot-group-scaling", "on-demand-fleet", "spot-fleet-scaling"],
)
def test_every_request_holds_only_members_and_values_the_emr_api_defines(
    fields: dict[str, Any],
) -> None:
    # botocore checks types on send, not enum values: a misspelt strategy would pass
    # moto and fail on AWS. The API's own model is the judge here.
    model = boto3.client("emr", region_name=REGION).meta.service_model
    input_shape = model.operation_model("RunJobFlow").input_shape

    assert unaccepted(request_for(**fields), input_shape, "RunJobFlow") == []


def unaccepted(value: Any, shape: Any, path: str) -> list[str]:
    """What in ``value`` the API model does not accept: unknown or missing members, values
    outside an enum, numbers below their minimum."""
    if shape.type_name == "structure":
        problems = [f"{path}.{name}: unknown" for name in value if name not in shape.members]
        problems += [
            f"{path}.{name}: missing" for name in shape.required_members if name not in value
        ]
        for name, member in value.items():
            if name in shape.members:
                problems += unaccepted(member, shape.members[name], f"{path}.{name}")
        return problems
    if shape.type_name == "list":
        return [
            p
            for n, item in enumerate(value)
            for p in unaccepted(item, shape.member, f"{path}[{n}]")
        ]
    if shape.type_name == "map":
        return [
            p
            for key, item in value.items()
            for p in unaccepted(item, shape.value, f"{path}[{key}]")
        ]
    enum = getattr(shape, "enum", None)  # only string shapes have one
    if enum and value not in enum:
        return [f"{path}: {value!r} is not one of {enum}"]
    if shape.type_name == "integer" and value < shape.metadata.get("min", value):
        return [f"{path}: {value} is below {shape.metadata['min']}"]
    return []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"core_instance_count": 4, "managed_scaling_max_core_nodes": 3},
            "Value error, managed_scaling_max_core_nodes (3) is below core_instance_count (4)",
        ),
        (
            {"managed_scaling_max_on_demand_nodes": 1},
            "Value error, managed_scaling_max_on_demand_nodes needs managed_scaling_max_core_nodes",
        ),
        ({"spot_timeout_minutes": 4}, "Input should be greater than or equal to 5"),
    ],
    ids=["max-below-count", "on-demand-limit-alone", "spot-timeout-too-short"],
)
def test_capacity_that_emr_would_refuse_is_refused_before_a_cluster_is_asked_for(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ClusterSpec(log_uri=LOG_URI, **fields)
    assert [error["msg"] for error in refused.value.errors()] == [message]


def test_normalized_units_follow_the_instance_size() -> None:
    types = [
        "t3.micro",
        "m1.small",
        "m5.large",
        "m5.xlarge",
        "r5.2xlarge",
        "c5.24xlarge",
        "m5.metal",
    ]
    assert [normalized_units(t) for t in types] == [0.5, 1.0, 4.0, 8.0, 16.0, 192.0, None]


def test_the_estimate_is_the_hours_at_ec2_plus_emr_price_per_normalized_unit() -> None:
    usage = ClusterUsage(24.0, ["m5.xlarge"], "TERMINATED")

    cost = estimate_cluster_cost(usage, ClusterSpec(log_uri=LOG_URI))

    # 3 m5.xlarge nodes for an hour: 3 x 8 units; 3 x ($0.192 + $0.048).
    assert cost == RunCost(
        runner="emr",
        usage={"normalized instance hours": 24.0},
        estimated_usd=pytest.approx(0.72),  # type: ignore[arg-type]
        price_basis="m5.xlarge at $0.192 EC2 + $0.048 EMR per hour for its 8 normalized "
        f"units, {PRICES}",
    )
    assert cost.line() == (
        "emr: 24 normalized instance hours; estimated $0.72 (m5.xlarge at $0.192 EC2 + "
        f"$0.048 EMR per hour for its 8 normalized units, {PRICES})"
    )


def test_a_mix_of_types_is_priced_at_the_dearest_rate_and_gaps_are_said() -> None:
    usage = ClusterUsage(10.0, ["c7g.xlarge", "m5.xlarge", "r5.xlarge"], "TERMINATING")

    cost = estimate_cluster_cost(usage, ClusterSpec(log_uri=LOG_URI))

    # r5.xlarge: ($0.252 + $0.063) / 8 = $0.039375 per unit, above m5.xlarge's $0.03.
    assert cost == RunCost(
        runner="emr",
        usage={"normalized instance hours": 10.0},
        estimated_usd=pytest.approx(0.39375),  # type: ignore[arg-type]
        price_basis=f"r5.xlarge at $0.252 EC2 + $0.063 EMR per hour for its 8 normalized units, "
        f"{PRICES}; no price for c7g.xlarge in the cluster block; hours read while the "
        "cluster was TERMINATING",
    )


@pytest.fixture
def moto_emr(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("emr", region_name=REGION)


def count_hours(cluster_id: str, hours: int) -> None:
    """What EMR counts as the nodes run (moto leaves NormalizedInstanceHours at 0)."""
    emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id].normalized_instance_hours = hours


def test_usage_is_read_once_the_cluster_has_terminated_with_the_types_it_ran(moto_emr: Any) -> None:
    spec = ClusterSpec(log_uri=LOG_URI, core_instance_type="m5.2xlarge")
    cluster_id = moto_emr.run_job_flow(**build_run_job_flow_request(spec, OWNER, STARTED))[
        "JobFlowId"
    ]
    count_hours(cluster_id, 40)
    moto_emr.terminate_job_flows(JobFlowIds=[cluster_id])

    usage = read_cluster_usage(moto_emr, cluster_id, spec, delay=0.01, max_wait=1)

    assert usage == ClusterUsage(40.0, ["m5.2xlarge", "m5.xlarge"], "TERMINATED")


class SlowTermination:
    """Wraps an EMR client: describe_cluster answers TERMINATING (a stub: moto ends a
    cluster at once), and the call count shows the wait polled."""

    def __init__(self, real: Any) -> None:
        self._real, self.describes = real, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_cluster(self, ClusterId: str) -> dict[str, Any]:
        self.describes += 1
        response = self._real.describe_cluster(ClusterId=ClusterId)
        response["Cluster"]["Status"]["State"] = "TERMINATING"
        return dict(response)


def test_a_fleet_whose_nodes_are_unknown_counts_its_configured_types_and_a_slow_end_is_said(
    moto_emr: Any,
) -> None:
    spec = ClusterSpec(log_uri=LOG_URI, composition="instance-fleets", core_on_spot=True)
    cluster_id = moto_emr.run_job_flow(**build_run_job_flow_request(spec, OWNER, STARTED))[
        "JobFlowId"
    ]
    count_hours(cluster_id, 16)
    slow = SlowTermination(moto_emr)

    usage = read_cluster_usage(slow, cluster_id, spec, delay=0.01, max_wait=0.05)

    # moto lists no instance of a fleet: the configured types stand in.
    assert usage == ClusterUsage(16.0, ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"], "TERMINATING")
    assert slow.describes > 2  # it waited, then read what there was


class CountedHours(ScriptedSteps):
    """ScriptedSteps, and EMR's hour count on the cluster when the flow terminates it."""

    def terminate_job_flows(self, JobFlowIds: list[str]) -> Any:
        for cluster_id in JobFlowIds:
            count_hours(cluster_id, 24)
        return self._real.terminate_job_flows(JobFlowIds=JobFlowIds)


@pytest.mark.usefixtures("aws")
def test_the_run_report_shows_what_the_cluster_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    wrap_emr_client(monkeypatch, lambda real: CountedHours(real, ["RUNNING", "COMPLETED"]))

    state = songs_etl(
        runner="emr",
        songs_uri=SONGS_URI,
        logs_uri=LOGS_URI,
        output_uri=OUTPUT_URI,
        aws_credentials_block="test-aws",
        cluster_config_block="test-emr",
        code_bucket_uri=CODE_URI,
        glue_database=None,
        poll_seconds=0.01,
        max_wait_minutes=0.05,
        return_state=True,
    )

    assert state.is_completed(), state.message
    rows = artifact_rows(state.state_details.flow_run_id, "songs-etl-run")
    assert [row for row in rows if row["kind"] == "cost"] == [
        {
            "kind": "cost",
            "name": "emr: 24 normalized instance hours; estimated $0.72 (m5.xlarge at $0.192 "
            f"EC2 + $0.048 EMR per hour for its 8 normalized units, {PRICES})",
            "rows": "",
            "change": "",
        }
    ]


class ListInstancesDenied:
    """Wraps an EMR client: list_instances is refused, as by a policy written before the
    cost was read (a stub: moto does not enforce IAM)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_paginator(self, operation: str) -> Any:
        if operation == "list_instances":
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}},
                "ListInstances",
            )
        return self._real.get_paginator(operation)


@pytest.mark.usefixtures("aws")
def test_a_cost_that_cannot_be_read_is_a_warning_and_no_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = ClusterSpec(log_uri=LOG_URI)
    emr = boto3.client("emr", region_name=REGION)
    cluster_id = emr.run_job_flow(**build_run_job_flow_request(spec, OWNER, STARTED))["JobFlowId"]
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    wrap_emr_client(monkeypatch, ListInstancesDenied)

    @flow
    def read_cost() -> RunCost | None:
        return read_emr_run_cost("test-aws", "test-emr", cluster_id, poll_seconds=0.01)

    state = read_cost(return_state=True)

    assert (state.is_completed(), state.result()) == (True, None)
    warnings = [
        log.message
        for log in flow_run_logs(state.state_details.flow_run_id)
        if log.level == logging.WARNING
    ]
    assert warnings == [
        f"Could not read what cluster {cluster_id} cost: An error occurred "
        "(AccessDeniedException) when calling the ListInstances operation: not allowed"
    ]
