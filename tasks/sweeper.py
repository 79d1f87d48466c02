"""Tasks of the sweeper flow: find this project's clusters and EMR Serverless job runs,
judge them, report the sweep.

Ending a cluster reuses the EMR runner's own ``terminate_emr_cluster`` task, cancelling a
job run the EMR Serverless runner's ``cancel_emr_serverless_job_run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.emr import prefect_api_identity
from tasks.ops import emr as emr_ops
from tasks.ops import emr_serverless as serverless_ops
from tasks.ops.ownership import owned_by
from tasks.ops.sweep_rules import SweepRules, clusters_to_terminate, job_runs_to_cancel
from tasks.run_log import ops_logs_in_run_log


@task(
    name="Find this project's clusters",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def find_project_clusters(aws_credentials_block: str) -> list[dict[str, Any]]:
    """Every active cluster tagged ``project=sparkify-lake``; untagged ones are never seen."""
    clusters = list(emr_ops.iter_project_clusters(aws_clients(aws_credentials_block).emr))
    get_run_logger().info("Found %d active sparkify-lake clusters", len(clusters))
    return clusters


@task(
    name="Find clusters with a running step",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def find_busy_clusters(aws_credentials_block: str, clusters: list[dict[str, Any]]) -> set[str]:
    """The clusters with a pending or running step: it may be writing the lake."""
    emr = aws_clients(aws_credentials_block).emr
    return {c["Id"] for c in clusters if emr_ops.active_step_ids(emr, c["Id"])}


@task(name="Find live flow runs")
def find_live_flow_runs(
    clusters: list[dict[str, Any]], job_runs: list[dict[str, Any]] | None = None
) -> set[str]:
    """The flow runs named by the clusters' (and job runs') tags that are not final."""
    live = set()
    flow_run_ids = {run for cluster in clusters if (run := emr_ops.flow_run_id_of(cluster))}
    flow_run_ids |= {run for job in job_runs or [] if (run := serverless_ops.flow_run_id_of(job))}
    with get_client(sync_client=True) as client:
        for flow_run_id in sorted(flow_run_ids):
            try:
                state = client.read_flow_run(UUID(flow_run_id)).state
            except (ObjectNotFound, ValueError):
                continue  # unknown or malformed id: nobody will terminate that cluster
            if state is not None and not state.is_final():
                live.add(flow_run_id)
    return live


@task(name="Choose the clusters to terminate")
def choose_clusters_to_terminate(
    clusters: list[dict[str, Any]],
    max_age_minutes: float,
    heartbeat_timeout_minutes: float,
    live_flow_runs: set[str],
    busy_clusters: set[str],
) -> list[tuple[dict[str, Any], str]]:
    """Which clusters of this Prefect API the sweeper ends and why; each choice is logged."""
    rules = SweepRules(prefect_api_identity(), max_age_minutes, heartbeat_timeout_minutes)
    with ops_logs_in_run_log():
        doomed = clusters_to_terminate(
            clusters, datetime.now(UTC), rules, live_flow_runs, busy_clusters
        )
    ignored = [
        c["Id"] for c in clusters if not owned_by(emr_ops.cluster_tags(c), rules.prefect_api)
    ]
    logger = get_run_logger()
    if ignored:
        logger.info("Not this Prefect API's (or untagged), left alone: %s", ", ".join(ignored))
    for cluster, reason in doomed:
        logger.info("%s: %s", cluster["Id"], reason)
    return doomed


@task(name="Publish the sweep report")
def publish_sweep_report(doomed: list[tuple[dict[str, Any], str]], dry_run: bool) -> None:
    """A table artifact of what the sweeper did (or, in a dry run, would do)."""
    action = "would terminate" if dry_run else "terminated"
    rows = [
        {"cluster_id": cluster["Id"], "name": cluster["Name"], "action": action, "reason": reason}
        for cluster, reason in doomed
    ]
    create_table_artifact(
        key="emr-sweep",
        table=rows or [{"cluster_id": "-", "action": "nothing to do", "reason": "-"}],
        description="Dry run: nothing was terminated." if dry_run else "Clusters terminated.",
    )


@task(
    name="Find this project's EMR Serverless job runs",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def find_project_job_runs(aws_credentials_block: str) -> list[dict[str, Any]]:
    """Every job run still to start or running in the applications tagged
    ``project=sparkify-lake``; other applications are never looked into."""
    serverless = aws_clients(aws_credentials_block).emr_serverless
    job_runs = [
        job_run
        for application in serverless_ops.iter_project_applications(serverless)
        for job_run in serverless_ops.iter_active_job_runs(serverless, application)
    ]
    get_run_logger().info("Found %d active sparkify-lake job runs", len(job_runs))
    return job_runs


@task(name="Choose the job runs to cancel")
def choose_job_runs_to_cancel(
    job_runs: list[dict[str, Any]], max_age_minutes: float, live_flow_runs: set[str]
) -> list[tuple[dict[str, Any], str]]:
    """Which job runs of this Prefect API the sweeper cancels and why; each is logged."""
    rules = SweepRules(prefect_api_identity(), max_age_minutes)
    doomed = job_runs_to_cancel(job_runs, datetime.now(UTC), rules, live_flow_runs)
    logger = get_run_logger()
    ignored = [
        j["jobRunId"] for j in job_runs if not owned_by(j.get("tags", {}), rules.prefect_api)
    ]
    if ignored:
        logger.info("Not this Prefect API's (or untagged), left alone: %s", ", ".join(ignored))
    for job_run, reason in doomed:
        logger.info("%s: %s", job_run["jobRunId"], reason)
    return doomed


@task(name="Publish the job run sweep report")
def publish_job_run_sweep_report(doomed: list[tuple[dict[str, Any], str]], dry_run: bool) -> None:
    """A table artifact of the job runs the sweeper cancelled (or, in a dry run, would)."""
    action = "would cancel" if dry_run else "cancelled"
    rows = [
        {
            "application_id": job_run["applicationId"],
            "job_run_id": job_run["jobRunId"],
            "name": job_run.get("name", ""),
            "action": action,
            "reason": reason,
        }
        for job_run, reason in doomed
    ]
    create_table_artifact(
        key="emr-serverless-sweep",
        table=rows or [{"job_run_id": "-", "action": "nothing to do", "reason": "-"}],
        description="Dry run: nothing was cancelled." if dry_run else "Job runs cancelled.",
    )
