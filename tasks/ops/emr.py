"""EMR operations (Prefect-free): request builders, cluster and step lifecycle, clean-up.

Every function takes a boto3 EMR client first, so tests pass a moto or stubbed client
and the tasks build the real one from the ``AwsCredentials`` block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from tasks.ops.s3 import S3Location, parse_s3_uri, read_gzip_tail

if TYPE_CHECKING:
    from mypy_boto3_emr import EMRClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

PROJECT_TAG_KEY = "project"
PROJECT_TAG_VALUE = "sparkify-lake"
FLOW_RUN_TAG_KEY = "prefect-flow-run-id"


class ClusterState(StrEnum):
    """EMR cluster states (``describe_cluster`` → Cluster.Status.State)."""

    STARTING = "STARTING"
    BOOTSTRAPPING = "BOOTSTRAPPING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    TERMINATED_WITH_ERRORS = "TERMINATED_WITH_ERRORS"


CLUSTER_READY = frozenset({ClusterState.RUNNING, ClusterState.WAITING})
CLUSTER_ENDED = frozenset(
    {ClusterState.TERMINATING, ClusterState.TERMINATED, ClusterState.TERMINATED_WITH_ERRORS}
)
CLUSTER_ACTIVE = frozenset(set(ClusterState) - CLUSTER_ENDED)


class StepState(StrEnum):
    """EMR step states (``describe_step`` → Step.Status.State)."""

    PENDING = "PENDING"
    CANCEL_PENDING = "CANCEL_PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


# INTERRUPTED is a failure too (botocore's step_complete waiter forgets it).
STEP_FAILED = frozenset({StepState.CANCELLED, StepState.FAILED, StepState.INTERRUPTED})
STEP_ENDED = STEP_FAILED | {StepState.COMPLETED}
STEP_ACTIVE = frozenset({StepState.PENDING, StepState.RUNNING})


class EmrError(Exception):
    """Base of the EMR path's errors."""


class EmrClusterStartError(EmrError):
    """The cluster ended before it was ready."""

    def __init__(self, cluster_id: str, state: str, reason: str) -> None:
        self.cluster_id, self.state, self.reason = cluster_id, state, reason
        super().__init__(f"EMR cluster {cluster_id} ended as {state} before it was ready: {reason}")


class EmrStepFailedError(EmrError):
    """The Spark step ended as FAILED, CANCELLED or INTERRUPTED."""

    def __init__(
        self,
        cluster_id: str,
        step_id: str,
        state: str,
        reason: str,
        log_file: str | None,
        stderr_tail: str | None,
    ) -> None:
        self.cluster_id, self.step_id, self.state = cluster_id, step_id, state
        self.reason, self.log_file, self.stderr_tail = reason, log_file, stderr_tail
        tail = f"\nLast lines of {log_file}:\n{stderr_tail}" if stderr_tail else ""
        super().__init__(
            f"EMR step {step_id} on cluster {cluster_id} ended as {state}: {reason}{tail}"
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
    core_on_spot: bool = Field(default=False, description="Run core nodes on Spot capacity.")
    subnet_id: str | None = Field(default=None, description="EC2 subnet (default VPC when empty).")
    idle_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=604800,
        description="AutoTerminationPolicy idle time before EMR ends the cluster (a backstop).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags (cost allocation).")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra spark-defaults.")


def project_tags(flow_run_id: str, extra: dict[str, str]) -> list[dict[str, str]]:
    """Tags that identify the project and the flow run (the sweeper and retries use them)."""
    tags = {**extra, PROJECT_TAG_KEY: PROJECT_TAG_VALUE, FLOW_RUN_TAG_KEY: flow_run_id}
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def build_run_job_flow_request(spec: ClusterSpec, flow_run_id: str) -> dict[str, Any]:
    """The ``run_job_flow`` request for a transient cluster that waits for our one step.

    KeepJobFlowAliveWhenNoSteps=True lets us submit after it is ready; we terminate it
    ourselves, and the idle AutoTerminationPolicy ends it should we never get to.
    """
    instances: dict[str, Any] = {
        "InstanceGroups": [
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
        ],
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if spec.subnet_id:
        instances["Ec2SubnetId"] = spec.subnet_id
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
        "Tags": project_tags(flow_run_id, spec.tags),
    }
    if spec.spark_conf:
        request["Configurations"] = [
            {"Classification": "spark-defaults", "Properties": dict(spec.spark_conf)}
        ]
    return request


def build_spark_step(
    name: str, entry_uri: str, package_uri: str, job_args: list[str]
) -> dict[str, Any]:
    """The ``add_job_flow_steps`` step: spark-submit through command-runner.jar.

    Cluster deploy mode keeps the driver on YARN, so the step survives the primary node's
    step runner and its stderr.gz holds the driver's log. ActionOnFailure=CONTINUE: the
    flow terminates the cluster itself, after reading the step's logs.
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
        if _tag(cluster, FLOW_RUN_TAG_KEY) == flow_run_id
    ]


def iter_project_clusters(emr: EMRClient) -> Iterator[dict[str, Any]]:
    """Describe every active cluster that carries this project's tag (paginated)."""
    paginator = emr.get_paginator("list_clusters")
    for page in paginator.paginate(ClusterStates=[state.value for state in CLUSTER_ACTIVE]):
        for summary in page.get("Clusters", []):
            cluster = dict(emr.describe_cluster(ClusterId=summary["Id"])["Cluster"])
            if _tag(cluster, PROJECT_TAG_KEY) == PROJECT_TAG_VALUE:
                yield cluster


def _tag(cluster: dict[str, Any], key: str) -> str | None:
    return next((tag["Value"] for tag in cluster.get("Tags", []) if tag["Key"] == key), None)


def create_cluster(emr: EMRClient, request: dict[str, Any], flow_run_id: str) -> tuple[str, bool]:
    """Start the cluster, or find the one an earlier attempt of this flow run started.

    ``run_job_flow`` is not idempotent: a retry after a throttled or timed-out response
    could otherwise pay for a second cluster.

    Returns:
        The cluster id and whether this call created it.
    """
    existing = find_flow_run_clusters(emr, flow_run_id)
    if existing:
        logger.info("Reusing cluster %s of flow run %s", existing[0], flow_run_id)
        return existing[0], False
    return emr.run_job_flow(**request)["JobFlowId"], True


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
    for state, reason in _poll(lambda: _cluster_status(emr, cluster_id), delay, max_wait):
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


def submit_step(emr: EMRClient, cluster_id: str, step: dict[str, Any]) -> str:
    """Add the step, unless a step of that name is already there (a retried submit).

    Returns:
        The step id.
    """
    for existing in emr.list_steps(ClusterId=cluster_id).get("Steps", []):
        if existing["Name"] == step["Name"]:
            return existing["Id"]
    return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]  # type: ignore[list-item]


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
    for state, reason in _poll(status, delay, max_wait):
        on_state(state, reason)
        if state in STEP_ENDED:
            return StepState(state), last_status
    raise EmrWaitTimeoutError(cluster_id, step_id, state, max_wait)


def _poll(
    read: Callable[[], tuple[str, str]], delay: float, max_wait: float
) -> Iterator[tuple[str, str]]:
    """Yield the state every ``delay`` seconds until ``max_wait`` has passed."""
    deadline = time.monotonic() + max_wait
    while True:
        yield read()
        if time.monotonic() + delay > deadline:
            return
        time.sleep(delay)


def step_stderr_location(log_uri: str, cluster_id: str, step_id: str) -> S3Location:
    """Where EMR puts a step's stderr: ``{LogUri}/{cluster_id}/steps/{step_id}/stderr.gz``."""
    return parse_s3_uri(log_uri).child(cluster_id, "steps", step_id, "stderr.gz")


def build_step_failed_error(
    s3: S3Client,
    cluster_id: str,
    step_id: str,
    state: str,
    status: dict[str, Any],
    log_uri: str,
    attempts: int = 3,
    delay: float = 20.0,
    lines: int = 40,
) -> EmrStepFailedError:
    """The error for a failed step, with the tail of its stderr.gz when it has arrived.

    EMR copies step logs to S3 minutes late, so the log is fetched a few times; a log
    that never arrives is a warning, not a second error.
    """
    details = status.get("FailureDetails", {})
    reason = " ".join(filter(None, [details.get("Reason"), details.get("Message")])) or state
    log = step_stderr_location(log_uri, cluster_id, step_id)
    tail = None
    for attempt in range(attempts):
        tail = read_gzip_tail(s3, log, lines)
        if tail is not None:
            break
        if attempt + 1 < attempts:
            time.sleep(delay)
    if tail is None:
        logger.warning("No step log at %s yet; look there later", log.uri)
    return EmrStepFailedError(cluster_id, step_id, state, reason, log.uri, tail)


def cancel_active_steps(emr: EMRClient, cluster_id: str) -> list[str]:
    """Cancel the cluster's pending or running steps (``cancel_steps``); return their ids."""
    steps = emr.list_steps(ClusterId=cluster_id, StepStates=[s.value for s in STEP_ACTIVE])
    step_ids = [step["Id"] for step in steps.get("Steps", [])]
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


def cluster_age_minutes(cluster: dict[str, Any], now: datetime) -> float:
    """Minutes since the cluster was created."""
    created: datetime = cluster["Status"]["Timeline"]["CreationDateTime"]
    return (now - created).total_seconds() / 60


def flow_run_id_of(cluster: dict[str, Any]) -> str | None:
    """The flow run that started the cluster, from its tag."""
    return _tag(cluster, FLOW_RUN_TAG_KEY)


def clusters_to_terminate(
    clusters: list[dict[str, Any]], now: datetime, max_age_minutes: float, live_flow_runs: set[str]
) -> list[tuple[dict[str, Any], str]]:
    """Which project clusters the sweeper ends, and why (pure, for the sweeper flow).

    Args:
        clusters: Described active clusters that carry the project tag.
        now: The current time (timezone-aware).
        max_age_minutes: Older clusters are ended whatever their flow run does.
        live_flow_runs: Ids of flow runs that are still pending or running.
    """
    doomed = []
    for cluster in clusters:
        age = cluster_age_minutes(cluster, now)
        flow_run_id = flow_run_id_of(cluster)
        if age > max_age_minutes:
            doomed.append((cluster, f"older than {max_age_minutes:.0f} min ({age:.0f} min)"))
        elif flow_run_id not in live_flow_runs:
            doomed.append((cluster, f"its flow run {flow_run_id} is no longer running"))
    return doomed
