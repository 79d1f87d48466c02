"""A scheduled daily run processes the UTC day before its scheduled start."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from tasks.ops.run_date import previous_day


@pytest.mark.parametrize(
    ("scheduled", "expected"),
    [
        (datetime(2018, 11, 15, 6, 0, tzinfo=UTC), date(2018, 11, 14)),
        (datetime(2018, 12, 1, 6, 0, tzinfo=UTC), date(2018, 11, 30)),  # month boundary
        (datetime(2019, 1, 1, 6, 0, tzinfo=UTC), date(2018, 12, 31)),  # year boundary
        (datetime(2020, 3, 1, 6, 0, tzinfo=UTC), date(2020, 2, 29)),  # leap day
        # 01:30 in UTC+02:00 is still the previous UTC day
        (datetime(2019, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))), date(2018, 12, 30)),
    ],
)
def test_previous_day_of_the_scheduled_start(scheduled: datetime, expected: date) -> None:
    assert previous_day(scheduled) == expected


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        previous_day(datetime(2019, 1, 1, 6, 0))


def test_the_task_takes_the_day_before_the_scheduled_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    from types import SimpleNamespace

    from tasks.schedule import resolve_run_date

    # What prefect.runtime.flow_run reports inside a run scheduled for 06:00 on New Year's day.
    scheduled = SimpleNamespace(scheduled_start_time=datetime(2019, 1, 1, 6, 0, tzinfo=UTC))
    monkeypatch.setattr("tasks.schedule.flow_run", scheduled)
    monkeypatch.setattr("tasks.schedule.get_run_logger", logging.getLogger)
    assert resolve_run_date.fn(None, True) == date(2018, 12, 31)
    assert resolve_run_date.fn(date(2018, 11, 5), True) == date(2018, 11, 5)  # given wins
    assert resolve_run_date.fn(None, False) is None  # a full run
