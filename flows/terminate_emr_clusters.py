"""The ``terminate_emr_clusters`` flow: the sweeper, the last line of defence against cost.

It ends active clusters tagged ``project=sparkify-lake`` and with this Prefect API's
tag that are older than ``max_age_minutes``, or whose flow run is no longer running or
has sent no heartbeat for ``heartbeat_timeout_minutes`` (its process died). A cluster
with a step still running is left to finish it first. Clusters without those tags, or
of another Prefect server or workspace, are never touched. EMR Serverless job runs of
the project's applications are cancelled under the same tag rules when their flow run
is no longer running or they are older than ``max_age_minutes``. Run it hourly
(prefect.yaml) or by hand: ``python flows/terminate_emr_clusters.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python flows/terminate_emr_clusters.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from tasks.aws import DEFAULT_CREDENTIALS_BLOCK
from tasks.emr import terminate_emr_cluster
from tasks.emr_serverless import cancel_emr_serverless_job_run
from tasks.sweeper import (
    choose_clusters_to_terminate,
    choose_job_runs_to_cancel,
    find_busy_clusters,
    find_live_flow_runs,
    find_project_clusters,
    find_project_job_runs,
    publish_job_run_sweep_report,
    publish_sweep_report,
)


@flow(name="terminate_emr_clusters")
def terminate_emr_clusters(
    aws_credentials_block: str = DEFAULT_CREDENTIALS_BLOCK,
    max_age_minutes: float = 360.0,
    heartbeat_timeout_minutes: float = 20.0,
    dry_run: bool = False,
    sweep_clusters: bool = True,
    sweep_job_runs: bool = True,
) -> list[str]:
    """Terminate this project's clusters (and cancel its EMR Serverless job runs) that
    outlived their flow run or their time.

    Args:
        aws_credentials_block: Name of the prefect-aws ``AwsCredentials`` block.
        max_age_minutes: A cluster older than this is ended even if its flow run still runs.
        heartbeat_timeout_minutes: A running flow run whose cluster heartbeat is older
            than this has died without a word (SIGKILL, a lost machine).
        dry_run: Only report what would be terminated.
        sweep_clusters: Look at EMR clusters (credentials without EMR rights: false).
        sweep_job_runs: Look at EMR Serverless job runs (credentials without EMR
            Serverless rights: false).

    Returns:
        Ids of the clusters terminated, then of the job runs cancelled (or, in a dry run,
        that would be).
    """
    clusters = find_project_clusters(aws_credentials_block) if sweep_clusters else []
    job_runs = find_project_job_runs(aws_credentials_block) if sweep_job_runs else []
    live = find_live_flow_runs(clusters, job_runs)
    busy = find_busy_clusters(aws_credentials_block, clusters)
    doomed = choose_clusters_to_terminate(
        clusters, max_age_minutes, heartbeat_timeout_minutes, live, busy
    )
    doomed_job_runs = choose_job_runs_to_cancel(job_runs, max_age_minutes, live)
    if not dry_run:
        for cluster, _ in doomed:
            terminate_emr_cluster(aws_credentials_block, cluster["Id"])
        for job_run, _ in doomed_job_runs:
            cancel_emr_serverless_job_run(
                aws_credentials_block, job_run["applicationId"], job_run["jobRunId"]
            )
    publish_sweep_report(doomed, dry_run)
    if sweep_job_runs:
        publish_job_run_sweep_report(doomed_job_runs, dry_run)
    return [cluster["Id"] for cluster, _ in doomed] + [j["jobRunId"] for j, _ in doomed_job_runs]


if __name__ == "__main__":
    terminate_emr_clusters()
