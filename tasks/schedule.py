"""Tasks that turn a deployment's schedule into job arguments."""

from __future__ import annotations

from datetime import date

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from tasks.ops.run_date import previous_day


@task(name="Resolve the day to process")
def resolve_run_date(run_date: date | None, process_previous_day: bool) -> date | None:
    """The day of the run: the one given, else (daily deployments) the day before the
    run's scheduled start, else None for a full run."""
    if run_date is not None or not process_previous_day:
        return run_date
    scheduled = flow_run.scheduled_start_time
    day = previous_day(scheduled)
    get_run_logger().info("Scheduled for %s: processing %s", scheduled.isoformat(), day)
    return day
