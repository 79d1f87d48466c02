"""Tasks of the EMR runner: preflight, upload, create, wait, submit, wait, terminate, read back.

Thin wrappers: each builds its clients from the ``AwsCredentials`` block inside the run,
calls ops from :mod:`tasks.ops.emr` / :mod:`tasks.ops.s3`, and logs what it saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, cast
from uuid import UUID

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from deployments.blocks import EmrClusterConfig
from spark_etl.summary import RunSummary, summary_uri
from tasks.aws import (
    AWS_TASK_RETRIES,
    emr_client,
    retry_transient_aws_errors,
    s3_client,
    sts_client,
)
from tasks.ops import emr as emr_ops
from tasks.ops import s3 as s3_ops
from tasks.ops.job_package import build_job_package


class PreflightError(ValueError):
    """Something would make the run fail: found before any cluster costs money."""


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


@task(name="Preflight: inputs, output and credentials")
def preflight_emr_run(
    aws_credentials_block: str,
    songs_uri: str,
    logs_uri: str,
    output_uri: str,
    code_bucket_uri: str | None,
    run_date: date | None,
) -> None:
    """Check everything a cluster would need before one is started.

    Raises:
        PreflightError: A malformed URI, a missing or empty input, an unwritable output,
            or credentials that do not resolve.
    """
    logger = get_run_logger()
    if not code_bucket_uri:
        raise PreflightError("runner='emr' needs code_bucket_uri, an s3:// folder for the job code")
    try:
        songs, logs, output, code = (
            s3_ops.parse_s3_uri(uri) for uri in (songs_uri, logs_uri, output_uri, code_bucket_uri)
        )
    except s3_ops.InvalidS3UriError as err:
        raise PreflightError(str(err)) from err
    try:
        identity = sts_client(aws_credentials_block).get_caller_identity()
        logger.info("AWS credentials resolve to account %s", identity["Account"])
        s3 = s3_client(aws_credentials_block)
        for label, location in (("song_data", songs), ("log_data", logs)):
            if not s3_ops.prefix_has_objects(s3, location):
                raise PreflightError(f"{label} location {location.uri} is missing or empty")
        if run_date is not None:
            day_file = logs.child(f"{run_date:%Y/%m}", f"{run_date:%Y-%m-%d}-events.json")
            if not s3_ops.object_exists(s3, day_file):
                raise PreflightError(f"no log file for {run_date}: {day_file.uri} does not exist")
        for location in (output, code):
            s3_ops.check_writable(s3, location)
    except ClientError as err:
        raise PreflightError(f"AWS refused a preflight check: {err}") from err
    logger.info("Preflight passed: inputs found, %s and %s writable", output.uri, code.uri)


@task(
    name="Upload the Spark job", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def upload_spark_job(aws_credentials_block: str, code_bucket_uri: str) -> UploadedJob:
    """Upload the zipped ``spark_etl`` and its entry script under content-addressed keys."""
    logger = get_run_logger()
    package = build_job_package()
    folder = s3_ops.parse_s3_uri(code_bucket_uri)
    s3 = s3_client(aws_credentials_block)
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
    emr = emr_client(aws_credentials_block)
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
        emr_client(aws_credentials_block),
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
    aws_credentials_block: str, cluster_id: str, job: UploadedJob, job_args: list[str], run_id: str
) -> str:
    """Add the spark-submit step (a retry finds the step by its run-specific name)."""
    step = emr_ops.build_spark_step(f"songs_etl {run_id}", job.entry_uri, job.package_uri, job_args)
    step_id = emr_ops.submit_step(emr_client(aws_credentials_block), cluster_id, step)
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
    emr = emr_client(aws_credentials_block)
    state, status = emr_ops.wait_for_step(
        emr,
        cluster.cluster_id,
        step_id,
        poll_seconds,
        max_wait_seconds,
        on_state=lambda state, reason: logger.info("Step %s is %s %s", step_id, state, reason),
    )
    if state in emr_ops.STEP_FAILED:
        raise emr_ops.step_failure(
            s3_client(aws_credentials_block),
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
    emr = emr_client(aws_credentials_block)
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
    return RunSummary.from_json(s3_ops.read_text(s3_client(aws_credentials_block), location))


def terminate_flow_run_clusters(aws_credentials_block: str, flow_run_id: str) -> list[str]:
    """Backstop for crashed or cancelled runs: end every cluster tagged with the flow run."""
    emr = emr_client(aws_credentials_block)
    cluster_ids = emr_ops.find_flow_run_clusters(emr, flow_run_id)
    for cluster_id in cluster_ids:
        emr_ops.cancel_active_steps(emr, cluster_id)
        emr_ops.terminate_cluster(emr, cluster_id)
    return cluster_ids


@task(
    name="Find this project's clusters",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def find_project_clusters(aws_credentials_block: str) -> list[dict[str, Any]]:
    """Every active cluster tagged ``project=sparkify-lake``; untagged ones are never seen."""
    clusters = list(emr_ops.iter_project_clusters(emr_client(aws_credentials_block)))
    get_run_logger().info("Found %d active sparkify-lake clusters", len(clusters))
    return clusters


@task(name="Find live flow runs")
def find_live_flow_runs(flow_run_ids: list[str]) -> set[str]:
    """The ids among ``flow_run_ids`` whose flow run is not in a final state."""
    live = set()
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            try:
                state = client.read_flow_run(UUID(flow_run_id)).state
            except (ObjectNotFound, ValueError):
                continue  # unknown or malformed id: nobody will terminate that cluster
            if state is not None and not state.is_final():
                live.add(flow_run_id)
    return live


@task(name="Publish the sweep report")
def publish_sweep_report(rows: list[dict[str, object]], dry_run: bool) -> None:
    """A table artifact of what the sweeper did (or, in a dry run, would do)."""
    create_table_artifact(
        key="emr-sweep",
        table=rows or [{"cluster_id": "-", "action": "nothing to do", "reason": "-"}],
        description="Dry run: nothing was terminated." if dry_run else "Clusters terminated.",
    )
