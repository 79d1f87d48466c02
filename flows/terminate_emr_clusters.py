"""The ``terminate_emr_clusters`` flow: the sweeper, the last line of defence against cost.

It ends active clusters tagged ``project=sparkify-lake`` and with this Prefect API's
tag that are older than ``max_age_minutes``, or whose flow run is no longer running or
has sent no heartbeat for ``heartbeat_timeout_minutes`` (its process died). A cluster
with a step still running is left to finish it first. Clusters without those tags, or
of another Prefect server or workspace, are never touched. Run it hourly (prefect.yaml) or by hand:
``python flows/terminate_emr_clusters.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python flows/terminate_emr_clusters.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from tasks.aws import DEFAULT_CREDENTIALS_BLOCK
from tasks.emr import terminate_emr_cluster
from tasks.sweeper import (
    choose_clusters_to_terminate,
    find_busy_clusters,
    find_live_flow_runs,
    find_project_clusters,
    publish_sweep_report,
)


@flow(name="terminate_emr_clusters")
def terminate_emr_clusters(
    aws_credentials_block: str = DEFAULT_CREDENTIALS_BLOCK,
    max_age_minutes: float = 360.0,
    heartbeat_timeout_minutes: float = 20.0,
    dry_run: bool = False,
) -> list[str]:
    """Terminate this project's clusters that outlived their flow run or their time.

    Args:
        aws_credentials_block: Name of the prefect-aws ``AwsCredentials`` block.
        max_age_minutes: A cluster older than this is ended even if its flow run still runs.
        heartbeat_timeout_minutes: A running flow run whose cluster heartbeat is older
            than this has died without a word (SIGKILL, a lost machine).
        dry_run: Only report what would be terminated.

    Returns:
        Ids of the clusters terminated (or, in a dry run, that would be).
    """
    clusters = find_project_clusters(aws_credentials_block)
    live = find_live_flow_runs(clusters)
    busy = find_busy_clusters(aws_credentials_block, clusters)
    doomed = choose_clusters_to_terminate(
        clusters, max_age_minutes, heartbeat_timeout_minutes, live, busy
    )
    if not dry_run:
        for cluster, _ in doomed:
            terminate_emr_cluster(aws_credentials_block, cluster["Id"])
    publish_sweep_report(doomed, dry_run)
    return [cluster["Id"] for cluster, _ in doomed]


if __name__ == "__main__":
    terminate_emr_clusters()
