"""Blocks: the credentials helper never shows a secret; every field of the cluster config
reaches its own place in the request, survives the API and is described for the UI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect_aws import AwsCredentials

from deployments.aws_credentials import main
from tasks.emr import EmrClusterConfig
from tasks.ops.emr import ClusterSpec, RunIdentity, build_run_job_flow_request
from tests.emr.conftest import FAKE_SECRET

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_credentials_from_the_environment_are_stored_as_secrets_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    assert main(["--name", "env-creds", "--from-env", "--region", "eu-west-1"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed
        == "Saved AwsCredentials block 'env-creds' in eu-west-1: access keys (stored as secrets)\n"
    )
    loaded = AwsCredentials.load("env-creds")
    assert loaded.aws_secret_access_key.get_secret_value() == FAKE_SECRET
    assert FAKE_SECRET not in repr(loaded) and FAKE_SECRET not in str(loaded.model_dump())


def test_a_profile_stores_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert main(["--name", "profile-creds", "--profile", "analytics"]) == 0
    loaded = AwsCredentials.load("profile-creds")
    assert (loaded.profile_name, loaded.aws_secret_access_key) == ("analytics", None)
    assert main(["--name", "x", "--from-env"]) == 2  # no keys in the environment


def test_cluster_config_block_defaults_are_cheap_and_safe() -> None:
    spec = EmrClusterConfig(log_uri="s3://logs/emr").cluster_spec()
    assert spec == ClusterSpec(
        cluster_name="sparkify-lake",
        release_label="emr-spark-8.0.0",
        log_uri="s3://logs/emr",
        service_role="EMR_DefaultRole",
        job_flow_role="EMR_EC2_DefaultRole",
        primary_instance_type="m5.xlarge",
        core_instance_type="m5.xlarge",
        core_instance_count=2,
        # On-Demand, fixed size: no Spot wait, no scaling unless asked for.
        core_on_spot=False,
        composition="instance-groups",
        core_fleet_instance_types=["m5a.xlarge", "m6i.xlarge"],
        spot_timeout_minutes=10,
        managed_scaling_max_core_nodes=None,
        managed_scaling_max_on_demand_nodes=None,
        subnet_id=None,
        idle_timeout_seconds=3600,
        tags={},
        spark_conf={},
        # Every default type has a price, dated.
        ec2_prices_usd_per_hour={
            "m5.xlarge": 0.192,
            "m5.2xlarge": 0.384,
            "m5a.xlarge": 0.172,
            "m6i.xlarge": 0.192,
            "r5.xlarge": 0.252,
        },
        emr_prices_usd_per_hour={
            "m5.xlarge": 0.048,
            "m5.2xlarge": 0.096,
            "m5a.xlarge": 0.043,
            "m6i.xlarge": 0.048,
            "r5.xlarge": 0.063,
        },
        prices_source="us-east-1 On-Demand list prices of 2025-01-01",
    )


# A distinct value for every field: a field mapped onto another one cannot pass unseen.
EVERY_FIELD: dict[str, Any] = {
    "cluster_name": "lake-nightly",
    "release_label": "emr-7.9.0",
    "log_uri": "s3://cfg-logs/emr",
    "service_role": "LakeServiceRole",
    "job_flow_role": "LakeInstanceProfile",
    "primary_instance_type": "r5.large",
    "core_instance_type": "c5.4xlarge",
    "core_instance_count": 5,
    "core_on_spot": True,
    "composition": "instance-fleets",
    "core_fleet_instance_types": ["c5a.4xlarge", "c6i.4xlarge"],
    "spot_timeout_minutes": 15,
    "managed_scaling_max_core_nodes": 8,
    "managed_scaling_max_on_demand_nodes": 6,
    "subnet_id": "subnet-0abc",
    "idle_timeout_seconds": 900,
    "tags": {"team": "data", "cost-center": "42"},
    "spark_conf": {"spark.sql.shuffle.partitions": "64"},
    "ec2_prices_usd_per_hour": {"c5.4xlarge": 0.68, "r5.large": 0.126},
    "emr_prices_usd_per_hour": {"c5.4xlarge": 0.17, "r5.large": 0.0315},
    "prices_source": "eu-west-1 list prices of 2026-11-01",
}
EXPECTED_SPEC = ClusterSpec(
    cluster_name="lake-nightly",
    release_label="emr-7.9.0",
    log_uri="s3://cfg-logs/emr",
    service_role="LakeServiceRole",
    job_flow_role="LakeInstanceProfile",
    primary_instance_type="r5.large",
    core_instance_type="c5.4xlarge",
    core_instance_count=5,
    core_on_spot=True,
    composition="instance-fleets",
    core_fleet_instance_types=["c5a.4xlarge", "c6i.4xlarge"],
    spot_timeout_minutes=15,
    managed_scaling_max_core_nodes=8,
    managed_scaling_max_on_demand_nodes=6,
    subnet_id="subnet-0abc",
    idle_timeout_seconds=900,
    tags={"team": "data", "cost-center": "42"},
    spark_conf={"spark.sql.shuffle.partitions": "64"},
    ec2_prices_usd_per_hour={"c5.4xlarge": 0.68, "r5.large": 0.126},
    emr_prices_usd_per_hour={"c5.4xlarge": 0.17, "r5.large": 0.0315},
    prices_source="eu-west-1 list prices of 2026-11-01",
)


def test_every_field_is_set_and_no_two_values_are_alike() -> None:
    # A field added to ClusterSpec must be added here, or the mapping tests would skip it.
    assert set(EVERY_FIELD) == set(ClusterSpec.model_fields) == set(EmrClusterConfig.model_fields)
    defaults = ClusterSpec(log_uri="s3://logs/emr").model_dump()
    assert all(EVERY_FIELD[name] != defaults[name] for name in EVERY_FIELD)
    values = [repr(value) for value in EVERY_FIELD.values()]
    assert len(set(values)) == len(values)


def test_every_block_field_lands_in_the_same_field_of_the_cluster_spec() -> None:
    assert EmrClusterConfig(**EVERY_FIELD).cluster_spec() == EXPECTED_SPEC


def test_every_block_field_lands_in_its_place_in_the_run_job_flow_request() -> None:
    request = build_run_job_flow_request(
        EmrClusterConfig(**EVERY_FIELD).cluster_spec(),
        RunIdentity("run-9", "http://prefect.test/api"),
        datetime(2018, 11, 2, 6, 0, 0, tzinfo=UTC),
    )
    assert request == {
        "Name": "lake-nightly",
        "ReleaseLabel": "emr-7.9.0",
        "LogUri": "s3://cfg-logs/emr",
        "Applications": [{"Name": "Spark"}],
        "Instances": {
            "InstanceFleets": [
                {
                    "Name": "primary",
                    "InstanceFleetType": "MASTER",
                    "TargetOnDemandCapacity": 1,
                    "InstanceTypeConfigs": [{"InstanceType": "r5.large"}],
                },
                {
                    "Name": "core",
                    "InstanceFleetType": "CORE",
                    "TargetSpotCapacity": 5,
                    "InstanceTypeConfigs": [
                        {"InstanceType": "c5.4xlarge", "WeightedCapacity": 1},
                        {"InstanceType": "c5a.4xlarge", "WeightedCapacity": 1},
                        {"InstanceType": "c6i.4xlarge", "WeightedCapacity": 1},
                    ],
                    "LaunchSpecifications": {
                        "SpotSpecification": {
                            "TimeoutDurationMinutes": 15,
                            "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                            "AllocationStrategy": "price-capacity-optimized",
                        },
                        "OnDemandSpecification": {"AllocationStrategy": "lowest-price"},
                    },
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
            "Ec2SubnetIds": ["subnet-0abc"],
        },
        "ServiceRole": "LakeServiceRole",
        "JobFlowRole": "LakeInstanceProfile",
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": 900},
        "ManagedScalingPolicy": {
            "ComputeLimits": {
                "UnitType": "InstanceFleetUnits",
                "MinimumCapacityUnits": 5,
                "MaximumCapacityUnits": 8,
                "MaximumOnDemandCapacityUnits": 6,
            }
        },
        "Tags": [
            {"Key": "cost-center", "Value": "42"},
            {"Key": "prefect-api", "Value": "http://prefect.test/api"},
            {"Key": "prefect-flow-run-id", "Value": "run-9"},
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


def test_the_block_saves_and_loads_through_the_api_with_every_field_intact() -> None:
    EmrClusterConfig(**EVERY_FIELD).save("every-field", overwrite=True)

    # What the API stores, read by a client of its own, not by the block class.
    assert stored_block_document("every-field").data == EVERY_FIELD
    loaded = EmrClusterConfig.load("every-field")
    assert {name: getattr(loaded, name) for name in EVERY_FIELD} == EVERY_FIELD
    assert loaded.cluster_spec() == EXPECTED_SPEC


def test_every_field_has_a_description_in_the_schema_the_ui_form_is_built_from() -> None:
    EmrClusterConfig(**EVERY_FIELD).save("every-field", overwrite=True)

    schema = stored_block_document("every-field").block_schema
    assert schema is not None
    properties = schema.fields["properties"]
    assert set(properties) == set(EVERY_FIELD)
    undescribed = [name for name, prop in properties.items() if not prop.get("description")]
    assert undescribed == []


def stored_block_document(name: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_block_document_by_name(
            name=name, block_type_slug=EmrClusterConfig.get_block_type_slug()
        )
