"""What the sweeper ends, side by side for both runners (pure: the sweeper flow calls AWS).

A resource is judged only when it carries this Prefect API's tag and a flow-run tag. Both
runners end what is older than the maximum age, and what belongs to a flow run that is no
longer running. They differ where their resources do: an EMR cluster with a step still
running is left to finish it (the step may be writing the lake), and a cluster also ends
when its run's heartbeat goes stale; a job run has no heartbeat, so a flow process that
died without a word leaves its job run to the block's execution timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasks.ops.emr import cluster_age_minutes, cluster_tags, heartbeat_age_minutes
from tasks.ops.ownership import flow_run_of, owned_by

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRules:
    """What the sweeper ends, and what it leaves alone."""

    prefect_api: str  # only resources tagged with this API are judged
    max_age_minutes: float = 360.0  # older resources end whatever their run does
    heartbeat_timeout_minutes: float = 20.0  # a live run silent this long has died (EMR)


def clusters_to_terminate(
    clusters: list[dict[str, Any]],
    now: datetime,
    rules: SweepRules,
    live_flow_runs: set[str],
    busy_clusters: set[str],
) -> list[tuple[dict[str, Any], str]]:
    """Which project clusters the sweeper ends, and why.

    Args:
        clusters: Described active clusters that carry the project tag.
        now: The current time (timezone-aware).
        rules: Which clusters are this sweeper's, and the time limits.
        live_flow_runs: Ids of flow runs that are still pending or running.
        busy_clusters: Ids of clusters with a pending or running step.
    """
    doomed = []
    for cluster in (c for c in clusters if owned_by(cluster_tags(c), rules.prefect_api)):
        age = cluster_age_minutes(cluster, now)
        reason = _why_the_cluster_is_done(cluster, now, rules, live_flow_runs)
        if age > rules.max_age_minutes:
            doomed.append((cluster, _too_old(rules, age)))
        elif reason and cluster["Id"] in busy_clusters:
            logger.warning(
                "%s: %s, but a step still runs on it: left to end", cluster["Id"], reason
            )
        elif reason:
            doomed.append((cluster, reason))
    return doomed


def job_runs_to_cancel(
    job_runs: list[dict[str, Any]],
    now: datetime,
    rules: SweepRules,
    live_flow_runs: set[str],
) -> list[tuple[dict[str, Any], str]]:
    """Which project job runs the sweeper cancels, and why.

    Args:
        job_runs: Described active job runs of the project's applications.
        now: The current time (timezone-aware).
        rules: Which job runs are this sweeper's, and the maximum age.
        live_flow_runs: Ids of flow runs that are still pending or running.
    """
    doomed = []
    for job_run in (j for j in job_runs if owned_by(j.get("tags", {}), rules.prefect_api)):
        age = (now - job_run["createdAt"]).total_seconds() / 60
        flow_run_id = flow_run_of(job_run.get("tags", {}))
        if age > rules.max_age_minutes:
            doomed.append((job_run, _too_old(rules, age)))
        elif flow_run_id not in live_flow_runs:
            doomed.append((job_run, _run_ended(flow_run_id)))
    return doomed


def _why_the_cluster_is_done(
    cluster: dict[str, Any], now: datetime, rules: SweepRules, live_flow_runs: set[str]
) -> str | None:
    """Why the cluster's flow run no longer needs it, or None while the run lives."""
    flow_run_id = flow_run_of(cluster_tags(cluster))
    if flow_run_id not in live_flow_runs:
        return _run_ended(flow_run_id)
    silent = heartbeat_age_minutes(cluster, now)
    if silent > rules.heartbeat_timeout_minutes:
        return f"its flow run {flow_run_id} sent no heartbeat for {silent:.0f} min"
    return None


def _too_old(rules: SweepRules, age: float) -> str:
    return f"older than {rules.max_age_minutes:.0f} min ({age:.0f} min)"


def _run_ended(flow_run_id: str | None) -> str:
    return f"its flow run {flow_run_id} is no longer running"
