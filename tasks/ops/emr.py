"""EMR operations (Prefect-free): request builders, cluster and step lifecycle, clean-up.

Every function takes a boto3 EMR client first, so tests pass a moto or stubbed client
and the tasks build the real one from the ``AwsCredentials`` block.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field, model_validator

from tasks.ops.cost import RunCost
from tasks.ops.failures import (
    DEFAULT_LOG_PATIENCE,
    FailureEvidence,
    JobFailedError,
    LogPatience,
    read_failure_evidence,
)
from tasks.ops.names import RunnerName
from tasks.ops.ownership import flow_run_of, is_project_resource, ownership_tags
from tasks.ops.polling import poll_states
from tasks.ops.s3 import S3Location, parse_s3_uri
from tasks.ops.states import (
    CLUSTER_ACTIVE,
    CLUSTER_ENDED,
    CLUSTER_READY,
    CLUSTER_TERMINATED,
    STEP_ACTIVE,
    STEP_ENDED,
    ClusterState,
    StepState,
)

if TYPE_CHECKING:
    from mypy_boto3_emr import EMRClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# When the flow last looked at its cluster: a flow process that died without a word (a
# SIGKILL, a lost machine) stays Running in the API, but its heartbeat goes stale.
HEARTBEAT_TAG_KEY = "prefect-heartbeat"
HEARTBEAT_SECONDS = 300.0


class EmrError(Exception):
    """Base of the EMR path's errors."""


class EmrClusterStartError(EmrError):
    """The cluster ended before it was ready."""

    def __init__(self, cluster_id: str, state: str, reason: str) -> None:
        self.cluster_id, self.state, self.reason = cluster_id, state, reason
        super().__init__(f"EMR cluster {cluster_id} ended as {state} before it was ready: {reason}")


class EmrStepFailedError(EmrError, JobFailedError):
    """The Spark step ended as FAILED, CANCELLED or INTERRUPTED (see JobFailedError)."""

    def __init__(
        self,
        cluster_id: str,
        step_id: str,
        state: str,
        reason: str,
        log_folder: str | None,
        log_tails: dict[str, str] | None = None,
        job_reason: str | None = None,
    ) -> None:
        self.cluster_id, self.step_id, self.state, self.reason = cluster_id, step_id, state, reason
        JobFailedError.__init__(
            self,
            f"EMR step {step_id} on cluster {cluster_id} ended as {state}: {reason}",
            "Step logs",
            log_folder,
            FailureEvidence(job_reason, dict(log_tails or {})),
        )


class EmrTeardownError(EmrError):
    """Ending the cluster failed after the run had failed: both are said, with the ids."""

    def __init__(self, cluster_id: str, failure: BaseException, teardown: BaseException) -> None:
        self.cluster_id, self.failure, self.teardown = cluster_id, failure, teardown
        super().__init__(
            f"{type(failure).__name__}: {failure}\n"
            f"Then terminating EMR cluster {cluster_id} failed ({type(teardown).__name__}: "
            f"{teardown}); it may still be running: terminate it in the EMR console, or "
            "let the terminate_emr_clusters sweeper or its idle timeout end it."
        )


class EmrWaitTimeoutError(EmrError):
    """A cluster or step did not reach the awaited state within the allowed time."""

    def __init__(
        self, cluster_id: str, step_id: str | None, last_state: str, waited_seconds: float
    ) -> None:
        self.cluster_id, self.step_id = cluster_id, step_id
        self.last_state, self.waited_seconds = last_state, waited_seconds
        what = f"step {step_id} on cluster {cluster_id}" if step_id else f"cluster {cluster_id}"
        super().__init__(
            f"EMR {what} still {last_state} after {waited_seconds:.0f} s; "
            "raise max_wait_minutes if it needs longer"
        )


# With an allocation strategy a core fleet may name up to 30 instance types.
MAX_FLEET_TYPES = 30
# Same size as m5.xlarge (4 vCPU, 16 GiB): Spot gets three pools to choose from.
DEFAULT_CORE_FLEET_TYPES = ("m5a.xlarge", "m6i.xlarge")
# On-Demand prices per hour in us-east-1 (Linux). EMR's charge comes on top of EC2's and
# is the same for Spot nodes; a Spot node's EC2 price is lower than this.
DEFAULT_EC2_PRICES_USD = {
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "m5a.xlarge": 0.172,
    "m6i.xlarge": 0.192,
    "r5.xlarge": 0.252,
}
DEFAULT_EMR_PRICES_USD = {
    "m5.xlarge": 0.048,
    "m5.2xlarge": 0.096,
    "m5a.xlarge": 0.043,
    "m6i.xlarge": 0.048,
    "r5.xlarge": 0.063,
}
DEFAULT_PRICES_SOURCE = "us-east-1 On-Demand list prices of 2025-01-01"


class ClusterSpec(BaseModel):
    """What ``run_job_flow`` needs; the ``EmrClusterConfig`` block is this plus a name.

    The fields are written once, here: the block inherits them with their defaults and
    their descriptions, which the Prefect UI shows on the block's form.
    """

    cluster_name: str = Field(default="sparkify-lake", description="Name shown in the EMR console.")
    release_label: str = Field(
        default="emr-spark-8.0.0", description="EMR release (Spark 4.0 on emr-spark-8.0.0)."
    )
    log_uri: str = Field(description="s3:// folder for cluster and step logs.")
    service_role: str = Field(default="EMR_DefaultRole", description="EMR service role.")
    job_flow_role: str = Field(
        default="EMR_EC2_DefaultRole", description="EC2 instance profile of the nodes."
    )
    primary_instance_type: str = Field(
        default="m5.xlarge", description="EC2 type of the primary node (always On-Demand)."
    )
    core_instance_type: str = Field(default="m5.xlarge", description="EC2 type of the core nodes.")
    core_instance_count: int = Field(default=2, ge=1, description="Number of core nodes.")
    core_on_spot: bool = Field(
        default=False,
        description="Run core nodes on Spot capacity. With instance-fleets the core fleet "
        "switches to On-Demand after spot_timeout_minutes; with instance-groups nothing "
        "does, and a run may wait for Spot capacity until max_wait_minutes.",
    )
    composition: Literal["instance-groups", "instance-fleets"] = Field(
        default="instance-groups",
        description="How EMR builds the nodes: instance-groups (one type each), or "
        "instance-fleets, where the core fleet takes core_instance_type or any of "
        "core_fleet_instance_types, wherever capacity is (and Spot falls back to On-Demand).",
    )
    core_fleet_instance_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CORE_FLEET_TYPES),
        max_length=MAX_FLEET_TYPES - 1,
        description="More EC2 types the core fleet may use besides core_instance_type "
        "(instance-fleets only). Types of the same size give Spot more pools to choose from.",
    )
    spot_timeout_minutes: int = Field(
        default=10,
        ge=5,
        le=1440,
        description="Instance fleets with Spot core nodes: minutes to wait for Spot "
        "capacity before the core fleet switches to On-Demand.",
    )
    managed_scaling_max_core_nodes: int | None = Field(
        default=None,
        ge=1,
        description="EMR managed scaling: let the cluster grow to this many core nodes "
        "and shrink back to core_instance_count. Empty: a fixed size.",
    )
    managed_scaling_max_on_demand_nodes: int | None = Field(
        default=None,
        ge=0,
        description="EMR managed scaling: at most this many On-Demand core nodes; the "
        "nodes scaling adds beyond it are Spot. Empty: no such limit.",
    )
    subnet_id: str | None = Field(default=None, description="EC2 subnet (default VPC when empty).")
    idle_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=604800,
        description="AutoTerminationPolicy idle time before EMR ends the cluster (a backstop).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags (cost allocation).")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra spark-defaults.")
    ec2_prices_usd_per_hour: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EC2_PRICES_USD),
        description="On-Demand EC2 price per hour of each instance type, for the run's "
        "cost estimate.",
    )
    emr_prices_usd_per_hour: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EMR_PRICES_USD),
        description="EMR price per hour of each instance type (added to EC2's), for the "
        "run's cost estimate.",
    )
    prices_source: str = Field(
        default=DEFAULT_PRICES_SOURCE,
        description="Where and when the prices come from: shown beside each estimate.",
    )

    @model_validator(mode="after")
    def _scaling_limits_hold_the_cluster(self) -> ClusterSpec:
        """Managed scaling must be able to keep the nodes the cluster starts with."""
        most = self.managed_scaling_max_core_nodes
        if most is not None and most < self.core_instance_count:
            raise ValueError(
                f"managed_scaling_max_core_nodes ({most}) is below core_instance_count "
                f"({self.core_instance_count})"
            )
        if most is None and self.managed_scaling_max_on_demand_nodes is not None:
            raise ValueError(
                "managed_scaling_max_on_demand_nodes needs managed_scaling_max_core_nodes"
            )
        return self

    @property
    def uses_fleets(self) -> bool:
        """True when the nodes come as instance fleets."""
        return self.composition == "instance-fleets"

    def core_fleet_types(self) -> list[str]:
        """The core fleet's instance types: core_instance_type first, no type twice."""
        return list(dict.fromkeys([self.core_instance_type, *self.core_fleet_instance_types]))


@dataclass(frozen=True)
class RunIdentity:
    """Who owns a cluster: the flow run, and the Prefect API it lives in."""

    flow_run_id: str
    prefect_api: str

    def tags(self, extra: dict[str, str], started: datetime) -> list[dict[str, str]]:
        """Tags that identify the project, the run and its API (the sweeper, retries)."""
        tags = {
            **extra,
            **ownership_tags(self.flow_run_id, self.prefect_api),
            HEARTBEAT_TAG_KEY: started.isoformat(timespec="seconds"),
        }
        return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def build_run_job_flow_request(
    spec: ClusterSpec, owner: RunIdentity, started: datetime, iceberg: bool = False
) -> dict[str, Any]:
    """The ``run_job_flow`` request for a transient cluster that waits for our one step.

    KeepJobFlowAliveWhenNoSteps=True lets us submit after it is ready; we terminate it
    ourselves, and the idle AutoTerminationPolicy ends it should we never get to. With
    ``iceberg``, the cluster puts EMR's bundled Iceberg on Spark's class path.
    """
    instances: dict[str, Any] = (
        {"InstanceFleets": _instance_fleets(spec)}
        if spec.uses_fleets
        else {"InstanceGroups": _instance_groups(spec)}
    )
    instances["KeepJobFlowAliveWhenNoSteps"] = True
    instances["TerminationProtected"] = False
    if spec.subnet_id:
        # Fleets take a list of subnets and pick the one with capacity.
        subnet_key = "Ec2SubnetIds" if spec.uses_fleets else "Ec2SubnetId"
        instances[subnet_key] = [spec.subnet_id] if spec.uses_fleets else spec.subnet_id
    request: dict[str, Any] = {
        "Name": spec.cluster_name,
        "ReleaseLabel": spec.release_label,
        "LogUri": spec.log_uri,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "ServiceRole": spec.service_role,
        "JobFlowRole": spec.job_flow_role,
        "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": spec.idle_timeout_seconds},
        "Tags": owner.tags(spec.tags, started),
    }
    if spec.managed_scaling_max_core_nodes is not None:
        request["ManagedScalingPolicy"] = {"ComputeLimits": _scaling_limits(spec)}
    configurations = []
    if spec.spark_conf:
        configurations.append(
            {"Classification": "spark-defaults", "Properties": dict(spec.spark_conf)}
        )
    if iceberg:
        configurations.append(ICEBERG_CONFIGURATION)
    if configurations:
        request["Configurations"] = configurations
    return request


# EMR's own Iceberg (runtime, Glue catalog, S3FileIO) on the class path of Spark.
ICEBERG_CONFIGURATION = {
    "Classification": "iceberg-defaults",
    "Properties": {"iceberg.enabled": "true"},
}


def uses_iceberg(configurations: list[dict[str, Any]]) -> bool:
    """Whether a cluster of these configurations has EMR's Iceberg enabled."""
    return ICEBERG_CONFIGURATION in configurations


def _instance_groups(spec: ClusterSpec) -> list[dict[str, Any]]:
    """One On-Demand primary node and the core group, each of one instance type."""
    return [
        {
            "Name": "primary",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",
            "InstanceType": spec.primary_instance_type,
            "InstanceCount": 1,
        },
        {
            "Name": "core",
            "InstanceRole": "CORE",
            "Market": "SPOT" if spec.core_on_spot else "ON_DEMAND",
            "InstanceType": spec.core_instance_type,
            "InstanceCount": spec.core_instance_count,
        },
    ]


# With several types, On-Demand capacity comes from the cheapest one that has some.
_ON_DEMAND_LAUNCH = {"AllocationStrategy": "lowest-price"}


def _instance_fleets(spec: ClusterSpec) -> list[dict[str, Any]]:
    """An On-Demand primary fleet, and a core fleet of several types (one unit each).

    A Spot core fleet picks the pools least likely to be interrupted among the cheapest
    (price-capacity-optimized) and switches to On-Demand when Spot capacity has not come
    within ``spot_timeout_minutes``: a run never waits for Spot without end.
    """
    primary = {
        "Name": "primary",
        "InstanceFleetType": "MASTER",
        "TargetOnDemandCapacity": 1,
        "InstanceTypeConfigs": [{"InstanceType": spec.primary_instance_type}],
    }
    core: dict[str, Any] = {
        "Name": "core",
        "InstanceFleetType": "CORE",
        "InstanceTypeConfigs": [
            {"InstanceType": instance_type, "WeightedCapacity": 1}
            for instance_type in spec.core_fleet_types()
        ],
    }
    if spec.core_on_spot:
        core["TargetSpotCapacity"] = spec.core_instance_count
        core["LaunchSpecifications"] = {
            "SpotSpecification": {
                "TimeoutDurationMinutes": spec.spot_timeout_minutes,
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": "price-capacity-optimized",
            },
            "OnDemandSpecification": dict(_ON_DEMAND_LAUNCH),
        }
    else:
        core["TargetOnDemandCapacity"] = spec.core_instance_count
        core["LaunchSpecifications"] = {"OnDemandSpecification": dict(_ON_DEMAND_LAUNCH)}
    return [primary, core]


def _scaling_limits(spec: ClusterSpec) -> dict[str, Any]:
    """Managed scaling's limits, in core nodes (a fleet's types weigh one unit each).

    EMR applies them to core and task nodes only: the primary node never scales.
    """
    limits: dict[str, Any] = {
        "UnitType": "InstanceFleetUnits" if spec.uses_fleets else "Instances",
        "MinimumCapacityUnits": spec.core_instance_count,
        "MaximumCapacityUnits": spec.managed_scaling_max_core_nodes,
    }
    if spec.managed_scaling_max_on_demand_nodes is not None:
        limits["MaximumOnDemandCapacityUnits"] = spec.managed_scaling_max_on_demand_nodes
    return limits


def build_spark_step(
    name: str,
    entry_uri: str,
    package_uri: str,
    job_args: list[str],
    submit_options: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``add_job_flow_steps`` step: spark-submit through command-runner.jar.

    Cluster deploy mode keeps the driver on YARN, so the step survives the primary node's
    step runner; the driver's own output then goes to the YARN container logs, not to the
    step's stdout.gz/stderr.gz, which is why a failed run's reason is read from the run
    summary the job writes. ActionOnFailure=CONTINUE: the flow terminates the cluster
    itself, after reading why the step failed.
    """
    return {
        "Name": name,
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                *submit_options,
                "--py-files",
                package_uri,
                entry_uri,
                *job_args,
            ],
        },
    }


def find_flow_run_clusters(emr: EMRClient, flow_run_id: str) -> list[str]:
    """Active clusters tagged with this flow run (``list_clusters`` cannot filter by tag)."""
    return [
        cluster["Id"]
        for cluster in iter_project_clusters(emr)
        if flow_run_id_of(cluster) == flow_run_id
    ]


def iter_project_clusters(emr: EMRClient) -> Iterator[dict[str, Any]]:
    """Describe every active cluster that carries this project's tag (paginated)."""
    paginator = emr.get_paginator("list_clusters")
    for page in paginator.paginate(ClusterStates=[state.value for state in CLUSTER_ACTIVE]):
        for summary in page.get("Clusters", []):
            cluster = dict(emr.describe_cluster(ClusterId=summary["Id"])["Cluster"])
            if is_project_resource(cluster_tags(cluster)):
                yield cluster


def cluster_tags(cluster: dict[str, Any]) -> dict[str, str]:
    """A described cluster's tags as a mapping (EMR lists them as Key/Value pairs)."""
    return {tag["Key"]: tag["Value"] for tag in cluster.get("Tags", [])}


def create_cluster(
    emr: EMRClient, emr_single_attempt: EMRClient, request: dict[str, Any], flow_run_id: str
) -> tuple[str, bool]:
    """Start the cluster, or find the one an earlier attempt of this flow run started.

    ``run_job_flow`` has no idempotency token: a request re-sent after its response was
    lost would pay for a second cluster. So it goes through a client that never re-sends,
    and every attempt (the task's retries) first looks for the cluster by its tag.

    Returns:
        The cluster id and whether this call created it.
    """
    existing = find_flow_run_clusters(emr, flow_run_id)
    if existing:
        logger.warning(
            "Found cluster %s of flow run %s: not starting another", existing[0], flow_run_id
        )
        return existing[0], False
    return emr_single_attempt.run_job_flow(**request)["JobFlowId"], True


def wait_for_cluster(
    emr: EMRClient,
    cluster_id: str,
    delay: float,
    max_wait: float,
    on_state: Callable[[str, str], None] = lambda state, reason: None,
) -> ClusterState:
    """Poll ``describe_cluster`` until the cluster is ready.

    Raises:
        EmrClusterStartError: It ended first (TERMINATED_WITH_ERRORS and its reason).
        EmrWaitTimeoutError: Not ready within ``max_wait`` seconds.
    """
    state = "unknown"
    for state, reason in poll_states(lambda: _cluster_status(emr, cluster_id), delay, max_wait):
        on_state(state, reason)
        if state in CLUSTER_READY:
            return ClusterState(state)
        if state in CLUSTER_ENDED:
            raise EmrClusterStartError(cluster_id, state, reason)
    raise EmrWaitTimeoutError(cluster_id, None, state, max_wait)


def _cluster_status(emr: EMRClient, cluster_id: str) -> tuple[str, str]:
    status = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]
    change = status.get("StateChangeReason", {})
    reason = " ".join(filter(None, [change.get("Code"), change.get("Message")]))
    return status["State"], reason


def submit_step(
    emr: EMRClient, emr_single_attempt: EMRClient, cluster_id: str, step: dict[str, Any]
) -> str:
    """Add the step, unless a step of that name is already there (a retried submit).

    Like :func:`create_cluster`: sent once, never re-sent blind, looked up first.

    Returns:
        The step id.
    """
    pages = emr.get_paginator("list_steps").paginate(ClusterId=cluster_id)
    for existing in (found for page in pages for found in page.get("Steps", [])):
        if existing["Name"] == step["Name"]:
            logger.warning("Found step %s (%s): not adding another", existing["Id"], step["Name"])
            return existing["Id"]
    response = emr_single_attempt.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])  # type: ignore[list-item]
    return response["StepIds"][0]


def wait_for_step(
    emr: EMRClient,
    cluster_id: str,
    step_id: str,
    delay: float,
    max_wait: float,
    on_state: Callable[[str, str], None] = lambda state, reason: None,
) -> tuple[StepState, dict[str, Any]]:
    """Poll ``describe_step`` until the step ends.

    Returns:
        The end state and the step's ``Status`` (with ``FailureDetails`` when it failed).

    Raises:
        EmrWaitTimeoutError: Still running after ``max_wait`` seconds.
    """
    last_status: dict[str, Any] = {}

    def status() -> tuple[str, str]:
        nonlocal last_status
        last_status = dict(
            emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
        )
        return last_status["State"], last_status.get("StateChangeReason", {}).get("Message", "")

    state = "unknown"
    for state, reason in poll_states(status, delay, max_wait):
        on_state(state, reason)
        if state in STEP_ENDED:
            return StepState(state), last_status
    raise EmrWaitTimeoutError(cluster_id, step_id, state, max_wait)


def step_log_folder(log_uri: str, cluster_id: str, step_id: str) -> S3Location:
    """Where EMR puts a step's logs: ``{LogUri}/{cluster_id}/steps/{step_id}/``."""
    return parse_s3_uri(log_uri).child(cluster_id, "steps", step_id)


def build_step_failed_error(
    s3: S3Client,
    cluster_id: str,
    step_id: str,
    state: str,
    status: dict[str, Any],
    log_uri: str,
    summary: S3Location,
    patience: LogPatience = DEFAULT_LOG_PATIENCE,
) -> EmrStepFailedError:
    """Read why a step failed (:func:`tasks.ops.failures.read_failure_evidence`) and
    build its error; EMR's own failure details give the first line."""
    details = status.get("FailureDetails", {})
    reason = " ".join(filter(None, [details.get("Reason"), details.get("Message")])) or state
    folder = step_log_folder(log_uri, cluster_id, step_id)
    containers = parse_s3_uri(log_uri).child(cluster_id, "containers")
    where_else = f", and at the driver's YARN container logs under {containers.uri}/"
    evidence = read_failure_evidence(s3, summary, folder, patience, where_else)
    return EmrStepFailedError(
        cluster_id,
        step_id,
        state,
        reason,
        f"{folder.uri}/",
        evidence.log_tails,
        evidence.job_reason,
    )


def cancel_active_steps(emr: EMRClient, cluster_id: str) -> list[str]:
    """Cancel the cluster's pending or running steps (``cancel_steps``); return their ids."""
    step_ids = active_step_ids(emr, cluster_id)
    if step_ids:
        try:
            emr.cancel_steps(ClusterId=cluster_id, StepIds=step_ids)
        except (ClientError, NotImplementedError) as err:
            # Terminating the cluster ends the steps too; cancelling first only tidies up.
            logger.warning("Could not cancel steps %s on %s: %s", step_ids, cluster_id, err)
    return step_ids


def terminate_cluster(emr: EMRClient, cluster_id: str) -> None:
    """Terminate the cluster (``terminate_job_flows``); terminating twice is harmless."""
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


# Normalized units per hour of each instance size (EMR's NormalizedInstanceHours: an
# m1.small hour is one unit, an xlarge eight, a 2xlarge sixteen, and so on).
_UNITS_BY_SIZE = {"nano": 0.25, "micro": 0.5, "small": 1.0, "medium": 2.0, "large": 4.0}
_XLARGE = re.compile(r"(\d*)xlarge")


def normalized_units(instance_type: str) -> float | None:
    """Normalized units one instance of the type counts per hour; None for an odd size."""
    size = instance_type.partition(".")[2]
    if size in _UNITS_BY_SIZE:
        return _UNITS_BY_SIZE[size]
    xlarge = _XLARGE.fullmatch(size)
    return 8.0 * int(xlarge[1] or 1) if xlarge else None


@dataclass(frozen=True)
class ClusterUsage:
    """What a cluster used, as EMR counts it."""

    normalized_instance_hours: float
    instance_types: list[str]  # the types it ran, or the configured ones when unknown
    state: str  # when it was read: TERMINATED, or still TERMINATING after the wait


def read_cluster_usage(
    emr: EMRClient, cluster_id: str, spec: ClusterSpec, delay: float, max_wait: float
) -> ClusterUsage:
    """The cluster's NormalizedInstanceHours once it has ended, and its instance types.

    EMR adds the last hours as the nodes stop, so the count is read after the cluster
    reached TERMINATED; after ``max_wait`` it is read as it stands.
    """
    cluster: dict[str, Any] = {}

    def describe() -> tuple[str, str]:
        cluster.update(emr.describe_cluster(ClusterId=cluster_id)["Cluster"])
        return cluster["Status"]["State"], ""

    for seen, _ in poll_states(describe, delay, max_wait):
        if seen in CLUSTER_TERMINATED:
            break
    pages = emr.get_paginator("list_instances").paginate(ClusterId=cluster_id)
    used = sorted({i["InstanceType"] for page in pages for i in page.get("Instances", [])})
    configured = [spec.primary_instance_type]
    configured += spec.core_fleet_types() if spec.uses_fleets else [spec.core_instance_type]
    return ClusterUsage(
        normalized_instance_hours=float(cluster.get("NormalizedInstanceHours", 0)),
        instance_types=used or list(dict.fromkeys(configured)),
        state=cluster["Status"]["State"],
    )


def estimate_cluster_cost(usage: ClusterUsage, spec: ClusterSpec) -> RunCost:
    """The run's cost: normalized instance hours at the dearest rate of the types used.

    Each type's rate per normalized hour is (EC2 + EMR price per hour) / its normalized
    units. NormalizedInstanceHours does not say how the hours split between types, so
    the dearest rate is taken: a mix of types is never under-estimated. EC2 prices are
    On-Demand: a Spot node costs less than this.
    """
    rates = {}
    for instance_type in usage.instance_types:
        ec2 = spec.ec2_prices_usd_per_hour.get(instance_type)
        emr = spec.emr_prices_usd_per_hour.get(instance_type)
        units = normalized_units(instance_type)
        if ec2 is not None and emr is not None and units:
            rates[instance_type] = (ec2 + emr) / units
    unpriced = [t for t in usage.instance_types if t not in rates]
    basis = []
    if rates:
        dearest = max(rates, key=lambda instance_type: rates[instance_type])
        basis.append(
            f"{dearest} at ${spec.ec2_prices_usd_per_hour[dearest]:g} EC2 + "
            f"${spec.emr_prices_usd_per_hour[dearest]:g} EMR per hour for its "
            f"{normalized_units(dearest):g} normalized units, {spec.prices_source}"
        )
    if unpriced:
        basis.append(f"no price for {', '.join(unpriced)} in the cluster block")
    if usage.state not in CLUSTER_TERMINATED:
        basis.append(f"hours read while the cluster was {usage.state}")
    hours = usage.normalized_instance_hours
    return RunCost(
        runner=RunnerName.EMR,
        usage={"normalized instance hours": hours},
        estimated_usd=hours * max(rates.values(), default=0.0),
        price_basis="; ".join(basis),
    )


class ClusterHeartbeat:
    """Refreshes the cluster's heartbeat tag, at most every ``interval`` seconds.

    A failed refresh is a warning: the heartbeat only helps the sweeper, it must never
    fail a run.
    """

    def __init__(
        self, emr: EMRClient, cluster_id: str, interval: float = HEARTBEAT_SECONDS
    ) -> None:
        self._emr, self._cluster_id, self._interval = emr, cluster_id, interval
        self._last = float("-inf")

    def beat(self, now: datetime) -> None:
        """Tag the cluster with ``now`` when the last beat is older than the interval."""
        if time.monotonic() - self._last < self._interval:
            return
        try:
            self._emr.add_tags(
                ResourceId=self._cluster_id,
                Tags=[{"Key": HEARTBEAT_TAG_KEY, "Value": now.isoformat(timespec="seconds")}],
            )
            self._last = time.monotonic()
        except (ClientError, BotoCoreError) as err:  # BotoCoreError: timeouts, lost connections
            logger.warning("Could not refresh the heartbeat of %s: %s", self._cluster_id, err)


def active_step_ids(emr: EMRClient, cluster_id: str) -> list[str]:
    """The cluster's pending or running steps."""
    steps = emr.list_steps(ClusterId=cluster_id, StepStates=[s.value for s in STEP_ACTIVE])
    return [step["Id"] for step in steps.get("Steps", [])]


def cluster_age_minutes(cluster: dict[str, Any], now: datetime) -> float:
    """Minutes since the cluster was created."""
    created: datetime = cluster["Status"]["Timeline"]["CreationDateTime"]
    return (now - created).total_seconds() / 60


def heartbeat_age_minutes(cluster: dict[str, Any], now: datetime) -> float:
    """Minutes since the flow last refreshed the heartbeat (or created the cluster)."""
    beat = cluster_tags(cluster).get(HEARTBEAT_TAG_KEY)
    try:
        last = datetime.fromisoformat(beat) if beat else None
    except ValueError:
        last = None
    if last is None or last.tzinfo is None:
        return cluster_age_minutes(cluster, now)
    return (now - last).total_seconds() / 60


def flow_run_id_of(cluster: dict[str, Any]) -> str | None:
    """The flow run that started the cluster, from its tag."""
    return flow_run_of(cluster_tags(cluster))
