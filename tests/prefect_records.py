"""What the Prefect API recorded of a flow run: its logs, artifacts and task runs."""

from __future__ import annotations

import json
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import TaskRun
from prefect.logging.handlers import APILogHandler


def flow_run_logs(flow_run_id: Any) -> list[Any]:
    """The run's logs as the API stores them, once every log still queued was sent."""
    # Logs reach the API in batches, every couple of seconds: without the flush, the
    # last lines of a run that just ended may not be there yet.
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )


def flow_run_artifacts(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def artifact_rows(flow_run_id: Any, key: str) -> list[dict[str, Any]]:
    [artifact] = [a for a in flow_run_artifacts(flow_run_id) if a.key == key]
    return list(json.loads(artifact.data))


def task_run_counts(flow_run_id: Any) -> dict[str, int]:
    """How many times the API saw each task of the flow run run (its retries included)."""
    with get_client(sync_client=True) as client:
        task_runs: list[TaskRun] = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {task_run.name.rsplit("-", 1)[0]: task_run.run_count for task_run in task_runs}
