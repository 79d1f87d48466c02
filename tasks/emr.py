"""The EMR runner: its cluster block, its tasks (create, wait, submit, wait, terminate,
cost) and :class:`EmrRunner`, which puts them in the flow's one sequence.

Thin wrappers: each loads the ``AwsCredentials`` block once inside the run, calls ops from
:mod:`tasks.ops`, and logs what it saw. The block lives here, beside the tasks that load
it, as prefect-aws keeps its blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.blocks.core import Block

from spark_etl.args import ICEBERG, JobArgs
from tasks import aws_job
from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.aws_job import AwsRunner, UploadedJob, prefect_api_identity
from tasks.ops import emr as emr_ops
from tasks.ops.cost import RunCost
from tasks.ops.failures import DEFAULT_LOG_PATIENCE, LogPatience
from tasks.ops.live_logs import GrowingLogs, LogFollower, driver_log_sources
from tasks.ops.states import STEP_FAILED
from tasks.run_log import ops_logs_in_run_log
from tasks.runner import RunnerSettings

if TYPE_CHECKING:
    from mypy_boto3_emr import EMRClient
    from mypy_boto3_s3 import S3Client

# The cluster block every run loads unless told otherwise.
DEFAULT_CLUSTER_CONFIG_BLOCK = "sparkify-emr"


class EmrClusterConfig(Block, emr_ops.ClusterSpec):
    """How to build the transient EMR cluster of a run; no secret lives here. ``make
    blocks`` registers the type (docs/aws.md); the fields are ``ClusterSpec``'s."""

    _block_type_name = "EMR Cluster Config"
    _description = "The transient EMR cluster of a sparkify-lake run: release, nodes, roles, logs."

    def cluster_spec(self) -> emr_ops.ClusterSpec:
        """The Prefect-free description the EMR ops take."""
        return aws_job.spec_of(self, emr_ops.ClusterSpec)


@dataclass(frozen=True)
class StartedCluster:
    """A cluster of this flow run and where its logs go."""

    cluster_id: str
    log_uri: str


@task(
    name="Create the EMR cluster", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def create_emr_cluster(
    aws_credentials_block: str, cluster_config_block: str, flow_run_id: str, iceberg: bool = False
) -> StartedCluster:
    """Start the transient cluster tagged with the flow run (a retry finds it again); with
    ``iceberg``, with EMR's Iceberg enabled."""
    logger = get_run_logger()
    spec = cast(EmrClusterConfig, EmrClusterConfig.load(cluster_config_block)).cluster_spec()
    clients = aws_clients(aws_credentials_block)
    owner = emr_ops.RunIdentity(flow_run_id, prefect_api_identity())
    request = emr_ops.build_run_job_flow_request(spec, owner, datetime.now(UTC), iceberg)
    with ops_logs_in_run_log():
        cluster_id, created = emr_ops.create_cluster(
            clients.emr, clients.emr_single_attempt, request, flow_run_id
        )
    logger.info(
        "%s EMR cluster %s (%s)", "Started" if created else "Found", cluster_id, spec.release_label
    )
    region = clients.emr.meta.region_name
    create_link_artifact(
        key="emr-cluster",
        link=f"https://{region}.console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{cluster_id}",
        link_text=f"EMR cluster {cluster_id}",
        description=f"Cluster of this run; its logs go to {spec.log_uri}/{cluster_id}/",
    )
    return StartedCluster(cluster_id=cluster_id, log_uri=spec.log_uri)


@task(
    name="Wait for the cluster to be ready",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def wait_for_emr_cluster(
    aws_credentials_block: str, cluster_id: str, poll_seconds: float, max_wait_seconds: float
) -> None:
    """Log every state until the cluster waits for work; fail fast when it ends instead."""
    emr = aws_clients(aws_credentials_block).emr
    with ops_logs_in_run_log():
        emr_ops.wait_for_cluster(
            emr,
            cluster_id,
            poll_seconds,
            max_wait_seconds,
            on_state=_state_logger(emr, f"Cluster {cluster_id}", cluster_id),
        )


def _state_logger(emr: EMRClient, what: str, cluster_id: str) -> Callable[[str, str], None]:
    """Log each state seen, and keep the cluster's heartbeat fresh while waiting."""
    logger = get_run_logger()
    heartbeat = emr_ops.ClusterHeartbeat(emr, cluster_id)

    def on_state(state: str, reason: str) -> None:
        logger.info("%s is %s %s", what, state, reason)
        heartbeat.beat(datetime.now(UTC))

    return on_state


@task(
    name="Submit the Spark step", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def submit_spark_step(
    aws_credentials_block: str, cluster_id: str, job: UploadedJob, job_args: JobArgs
) -> str:
    """Add the spark-submit step (a retry finds the step by its run-specific name)."""
    step = emr_ops.build_spark_step(
        f"songs_etl {job_args.run_id}",
        job.entry_uri,
        job.package_uri,
        job_args.to_argv(),
        job.submit_options,
    )
    clients = aws_clients(aws_credentials_block)
    with ops_logs_in_run_log():
        step_id = emr_ops.submit_step(clients.emr, clients.emr_single_attempt, cluster_id, step)
    get_run_logger().info("Submitted step %s to cluster %s", step_id, cluster_id)
    return step_id


@task(name="Wait for the Spark step")
def wait_for_spark_step(
    aws_credentials_block: str,
    cluster: StartedCluster,
    step_id: str,
    job_args: JobArgs,
    poll_seconds: float,
    max_wait_seconds: float,
    log_patience: LogPatience = DEFAULT_LOG_PATIENCE,
    log_poll_seconds: float = 120.0,
) -> None:
    """Log every state until the step ends; a failed step raises with the job's reason.

    While it waits, the new lines of the step's stdout and stderr are logged every
    ``log_poll_seconds``, as EMR copies them to the log URI (every few minutes), each
    line once, prefixed with its source; a last look follows the end of the step.
    Not retried as a task (a failed Spark job fails the same way again): transient
    errors while polling are retried inside the wait.

    Raises:
        EmrStepFailedError: The step ended as FAILED, CANCELLED or INTERRUPTED.
        EmrWaitTimeoutError: The step still ran after ``max_wait_seconds``.
    """
    clients = aws_clients(aws_credentials_block)
    log_state = _state_logger(clients.emr, f"Step {step_id}", cluster.cluster_id)
    step_logs = _step_log_follower(clients.s3, cluster, step_id, log_poll_seconds)

    def on_state(state: str, reason: str) -> None:
        log_state(state, reason)
        step_logs.tick()

    state, status = aws_job.wait_following_logs(
        lambda: emr_ops.wait_for_step(
            clients.emr, cluster.cluster_id, step_id, poll_seconds, max_wait_seconds, on_state
        ),
        step_logs,
    )
    if state in STEP_FAILED:
        with ops_logs_in_run_log():
            raise emr_ops.build_step_failed_error(
                clients.s3,
                cluster.cluster_id,
                step_id,
                state,
                status,
                cluster.log_uri,
                aws_job.summary_location(job_args.output_uri, job_args.run_id),
                log_patience,
            )


def _step_log_follower(
    s3: S3Client, cluster: StartedCluster, step_id: str, interval: float
) -> LogFollower:
    """Follows the step's stdout.gz and stderr.gz into the run's log."""
    folder = emr_ops.step_log_folder(cluster.log_uri, cluster.cluster_id, step_id)
    sources = driver_log_sources(folder)
    return LogFollower(GrowingLogs(s3, sources), get_run_logger().info, interval)


@task(
    name="Terminate the EMR cluster",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def terminate_emr_cluster(aws_credentials_block: str, cluster_id: str) -> None:
    """Cancel what still runs on the cluster and terminate it."""
    emr = aws_clients(aws_credentials_block).emr
    with ops_logs_in_run_log():
        emr_ops.cancel_active_steps(emr, cluster_id)
        emr_ops.terminate_cluster(emr, cluster_id)
    get_run_logger().info("Terminating EMR cluster %s", cluster_id)


# Failures after which the step is known to have ended, or must be stopped: the cluster
# is ended at once. After any other failure (a lost API, polling errors) a submitted step
# may still be writing the lake, and is left to finish.
ENDS_THE_CLUSTER = (
    emr_ops.EmrStepFailedError,
    emr_ops.EmrWaitTimeoutError,
    emr_ops.EmrClusterStartError,
)


def end_cluster_after_failure(
    aws_credentials_block: str, cluster: StartedCluster, step_id: str | None, failure: Exception
) -> None:
    """Terminate the cluster after a failed run, unless its step may still be writing.

    Raises:
        EmrTeardownError: Terminating failed too; it names both failures and the cluster.
    """
    logger = get_run_logger()
    if step_id is not None and not isinstance(failure, ENDS_THE_CLUSTER):
        logger.warning(
            "Cluster %s is left to finish step %s, which may still be writing the lake; its "
            "idle timeout or the terminate_emr_clusters sweeper ends it once the step is done",
            cluster.cluster_id,
            step_id,
        )
        return
    try:
        terminate_emr_cluster(aws_credentials_block, cluster.cluster_id)
    except Exception as teardown:
        raise emr_ops.EmrTeardownError(cluster.cluster_id, failure, teardown) from failure


# How long the cost waits for the terminated cluster's last hours to be counted.
COST_WAIT_SECONDS = 180.0


@task(name="Read what the cluster cost")
def read_emr_run_cost(
    aws_credentials_block: str,
    cluster_config_block: str,
    cluster_id: str,
    poll_seconds: float,
    max_wait_seconds: float = COST_WAIT_SECONDS,
) -> RunCost | None:
    """The cluster's normalized instance hours and their estimated price (the block's).

    Never fails the run: its data is written by now. When the cost cannot be read, the
    report goes without it and a warning says why.
    """
    logger = get_run_logger()
    try:
        block = cast(EmrClusterConfig, EmrClusterConfig.load(cluster_config_block))
        spec = block.cluster_spec()
        emr = aws_clients(aws_credentials_block).emr
        with ops_logs_in_run_log():
            usage = emr_ops.read_cluster_usage(
                emr, cluster_id, spec, poll_seconds, max_wait_seconds
            )
    except Exception as err:
        logger.warning("Could not read what cluster %s cost: %s", cluster_id, err)
        return None
    cost = emr_ops.estimate_cluster_cost(usage, spec)
    logger.info("Cluster %s: %s", cluster_id, cost.line())
    return cost


def terminate_cluster_now(aws_credentials_block: str, cluster_id: str) -> None:
    """End the cluster of an interrupted run without Prefect's task machinery.

    An interrupt may leave no room for a task run; a failure here is logged, not raised,
    so the interrupt itself still ends the run (the hooks and the sweeper come after).
    """
    try:
        emr = aws_clients(aws_credentials_block).emr
        emr_ops.cancel_active_steps(emr, cluster_id)
        emr_ops.terminate_cluster(emr, cluster_id)
    except Exception as err:
        logging.getLogger(__name__).error("Could not terminate EMR cluster %s: %s", cluster_id, err)


def terminate_flow_run_clusters(aws_credentials_block: str, flow_run_id: str) -> list[str]:
    """Backstop for crashed or cancelled runs: end every cluster tagged with the flow run."""
    emr = aws_clients(aws_credentials_block).emr
    cluster_ids = emr_ops.find_flow_run_clusters(emr, flow_run_id)
    for cluster_id in cluster_ids:
        emr_ops.cancel_active_steps(emr, cluster_id)
        emr_ops.terminate_cluster(emr, cluster_id)
    return cluster_ids


class EmrRunner(AwsRunner[StartedCluster]):
    """The job as a step of a transient EMR cluster; the cluster ends with the step."""

    default_config_block: ClassVar[str] = DEFAULT_CLUSTER_CONFIG_BLOCK

    def __init__(self, settings: RunnerSettings) -> None:
        super().__init__(settings)
        self._step_id: str | None = None

    def start(self, job_args: JobArgs) -> None:
        flow_run_id = self._settings.flow_run_id
        try:
            iceberg = job_args.table_format == ICEBERG
            self._work = create_emr_cluster(self._block, self._config_block, flow_run_id, iceberg)
        except Exception:  # its lost last answer may hide a started cluster
            aws_job.end_work_after_failed_start(
                terminate_flow_run_clusters, self._block, flow_run_id, "the idle timeout"
            )
            raise

    def wait(self, job_args: JobArgs) -> None:
        cluster, job = self._started(), self._uploaded()
        poll, max_wait = self._settings.poll_seconds, self._settings.max_wait_seconds
        wait_for_emr_cluster(self._block, cluster.cluster_id, poll, max_wait)
        self._step_id = submit_spark_step(self._block, cluster.cluster_id, job, job_args)
        wait_for_spark_step(self._block, cluster, self._step_id, job_args, poll, max_wait)

    def end(self) -> None:
        terminate_emr_cluster(self._block, self._started().cluster_id)

    def end_after_failure(self, failure: Exception) -> None:
        end_cluster_after_failure(self._block, self._started(), self._step_id, failure)

    def end_now(self) -> None:
        terminate_cluster_now(self._block, self._started().cluster_id)

    def read_cost(self) -> RunCost | None:
        cluster_id, poll = self._started().cluster_id, self._settings.poll_seconds
        return read_emr_run_cost(self._block, self._config_block, cluster_id, poll)

    @staticmethod
    def end_work_of_flow_run(aws_credentials_block: str, flow_run_id: str) -> None:
        terminate_flow_run_clusters(aws_credentials_block, flow_run_id)
