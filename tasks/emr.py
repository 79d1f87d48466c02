"""The EMR runner: its cluster block and its tasks (preflight, upload, create, wait, submit,
wait, terminate, read back).

Thin wrappers: each loads the ``AwsCredentials`` block once inside the run, calls ops from
:mod:`tasks.ops`, and logs what it saw. The block lives here, beside the tasks that load
it, as prefect-aws keeps its blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.blocks.core import Block

from spark_etl.args import JobArgs
from spark_etl.summary import RunSummary, summary_uri
from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.ops import emr as emr_ops
from tasks.ops import s3 as s3_ops
from tasks.ops.job_package import build_job_package
from tasks.ops.preflight import PreflightError, check_aws_run, check_job_arguments

# The cluster block every run loads unless told otherwise.
DEFAULT_CLUSTER_CONFIG_BLOCK = "sparkify-emr"


class EmrClusterConfig(Block, emr_ops.ClusterSpec):
    """How to build the transient EMR cluster of a run (no secret lives here).

    Register the type with ``make blocks`` and create a block in the UI or in Python
    (docs/aws.md). The fields are :class:`tasks.ops.emr.ClusterSpec`'s.
    """

    _block_type_name = "EMR Cluster Config"
    _description = "The transient EMR cluster of a sparkify-lake run: release, nodes, roles, logs."

    def cluster_spec(self) -> emr_ops.ClusterSpec:
        """The Prefect-free description the EMR ops take."""
        fields = set(emr_ops.ClusterSpec.model_fields)
        return emr_ops.ClusterSpec.model_validate(self.model_dump(include=fields))


@dataclass(frozen=True)
class UploadedJob:
    """Where the job code lies in S3."""

    entry_uri: str
    package_uri: str


@dataclass(frozen=True)
class StartedCluster:
    """A cluster of this flow run and where its logs go."""

    cluster_id: str
    log_uri: str


@task(name="Preflight: arguments, inputs, output and credentials")
def preflight_emr_run(
    aws_credentials_block: str, job_args: JobArgs, code_bucket_uri: str | None
) -> None:
    """Check everything a cluster would need before one is started.

    Raises:
        PreflightError: An argument the job would refuse, a malformed URI, a missing or
            empty input, an unwritable output, or credentials that do not resolve.
    """
    check_job_arguments(job_args, code_bucket_uri)
    clients = aws_clients(aws_credentials_block)
    try:
        account = check_aws_run(clients.s3, clients.sts, job_args, str(code_bucket_uri))
    except ClientError as err:
        raise PreflightError(f"AWS refused a preflight check: {err}") from err
    get_run_logger().info(
        "Preflight passed in account %s: inputs found, %s and %s writable",
        account,
        job_args.output_uri,
        code_bucket_uri,
    )


@task(
    name="Upload the Spark job", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def upload_spark_job(aws_credentials_block: str, code_bucket_uri: str) -> UploadedJob:
    """Upload the zipped ``spark_etl`` and its entry script under content-addressed keys."""
    logger = get_run_logger()
    package = build_job_package()
    folder = s3_ops.parse_s3_uri(code_bucket_uri)
    s3 = aws_clients(aws_credentials_block).s3
    uploads = (
        (folder.child(f"spark_etl-{package.digest}.zip"), package.zip_bytes),
        (folder.child(f"spark_submit_entry-{package.digest}.py"), package.entry_bytes),
    )
    for location, body in uploads:
        uploaded = s3_ops.upload_unless_present(s3, location, body)
        logger.info(
            "%s %s", "Uploaded" if uploaded else "Already there, not uploaded:", location.uri
        )
    return UploadedJob(entry_uri=uploads[1][0].uri, package_uri=uploads[0][0].uri)


@task(
    name="Create the EMR cluster", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def create_emr_cluster(
    aws_credentials_block: str, cluster_config_block: str, flow_run_id: str
) -> StartedCluster:
    """Start the transient cluster tagged with the flow run (a retry finds it again)."""
    logger = get_run_logger()
    config = cast(EmrClusterConfig, EmrClusterConfig.load(cluster_config_block))
    spec = config.cluster_spec()
    emr = aws_clients(aws_credentials_block).emr
    request = emr_ops.build_run_job_flow_request(spec, flow_run_id)
    cluster_id, created = emr_ops.create_cluster(emr, request, flow_run_id)
    logger.info(
        "%s EMR cluster %s (%s)", "Started" if created else "Found", cluster_id, spec.release_label
    )
    region = emr.meta.region_name
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
    logger = get_run_logger()
    emr_ops.wait_for_cluster(
        aws_clients(aws_credentials_block).emr,
        cluster_id,
        poll_seconds,
        max_wait_seconds,
        on_state=lambda state, reason: logger.info(
            "Cluster %s is %s %s", cluster_id, state, reason
        ),
    )


@task(
    name="Submit the Spark step", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def submit_spark_step(
    aws_credentials_block: str, cluster_id: str, job: UploadedJob, job_args: JobArgs
) -> str:
    """Add the spark-submit step (a retry finds the step by its run-specific name)."""
    step = emr_ops.build_spark_step(
        f"songs_etl {job_args.run_id}", job.entry_uri, job.package_uri, job_args.to_argv()
    )
    step_id = emr_ops.submit_step(aws_clients(aws_credentials_block).emr, cluster_id, step)
    get_run_logger().info("Submitted step %s to cluster %s", step_id, cluster_id)
    return step_id


@task(name="Wait for the Spark step")
def wait_for_spark_step(
    aws_credentials_block: str,
    cluster: StartedCluster,
    step_id: str,
    poll_seconds: float,
    max_wait_seconds: float,
    log_attempts: int = 3,
    log_delay_seconds: float = 20.0,
) -> None:
    """Log every state until the step ends; a failed step raises with its stderr tail.

    Not retried: a failed Spark job fails the same way again.

    Raises:
        EmrStepFailedError: The step ended as FAILED, CANCELLED or INTERRUPTED.
    """
    logger = get_run_logger()
    clients = aws_clients(aws_credentials_block)
    state, status = emr_ops.wait_for_step(
        clients.emr,
        cluster.cluster_id,
        step_id,
        poll_seconds,
        max_wait_seconds,
        on_state=lambda state, reason: logger.info("Step %s is %s %s", step_id, state, reason),
    )
    if state in emr_ops.STEP_FAILED:
        raise emr_ops.build_step_failed_error(
            clients.s3,
            cluster.cluster_id,
            step_id,
            state,
            status,
            cluster.log_uri,
            attempts=log_attempts,
            delay=log_delay_seconds,
        )


@task(
    name="Terminate the EMR cluster",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def terminate_emr_cluster(aws_credentials_block: str, cluster_id: str) -> None:
    """Cancel what still runs on the cluster and terminate it."""
    emr = aws_clients(aws_credentials_block).emr
    emr_ops.cancel_active_steps(emr, cluster_id)
    emr_ops.terminate_cluster(emr, cluster_id)
    get_run_logger().info("Terminating EMR cluster %s", cluster_id)


@task(
    name="Read the run summary", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def read_run_summary_from_s3(
    aws_credentials_block: str, output_uri: str, run_id: str
) -> RunSummary:
    """The summary the job wrote to ``<output>/_runs/<run_id>.json``."""
    location = s3_ops.parse_s3_uri(summary_uri(output_uri, run_id))
    return RunSummary.from_json(s3_ops.read_text(aws_clients(aws_credentials_block).s3, location))


def terminate_flow_run_clusters(aws_credentials_block: str, flow_run_id: str) -> list[str]:
    """Backstop for crashed or cancelled runs: end every cluster tagged with the flow run."""
    emr = aws_clients(aws_credentials_block).emr
    cluster_ids = emr_ops.find_flow_run_clusters(emr, flow_run_id)
    for cluster_id in cluster_ids:
        emr_ops.cancel_active_steps(emr, cluster_id)
        emr_ops.terminate_cluster(emr, cluster_id)
    return cluster_ids
