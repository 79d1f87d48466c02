"""Which day a scheduled daily run processes (Prefect-free)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def previous_day(scheduled_start: datetime) -> date:
    """The UTC day before the run's *scheduled* start.

    The scheduled time, not the wall clock: a run that starts late or is retried the next
    morning still processes the day it was scheduled for.

    Raises:
        ValueError: ``scheduled_start`` has no time zone (its day would be ambiguous).
    """
    if scheduled_start.tzinfo is None:
        raise ValueError("scheduled_start must carry a time zone")
    return scheduled_start.astimezone(UTC).date() - timedelta(days=1)
