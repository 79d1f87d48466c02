"""The run report's rows: counts with the change since the previous run, then rejects."""

from __future__ import annotations

from spark_etl.summary import RejectCount, RunSummary
from tasks.reporting import report_rows


def test_report_rows_show_change_since_the_previous_run_and_rejects() -> None:
    summary = RunSummary(
        run_id="r2",
        mode="daily",
        run_date="2018-11-02",
        songs_uri="s",
        logs_uri="l",
        output_uri="o",
        started_at="t",
        tables={"songplays": 120, "users": 10, "time": 100},
        previous_tables={"songplays": 100, "users": 10},
        rejects=[RejectCount("log_data", "invalid JSON", 3)],
    )
    assert report_rows(summary) == [
        {"kind": "table", "name": "songplays", "rows": 120, "change": "+20"},
        {"kind": "table", "name": "users", "rows": 10, "change": "0"},
        {"kind": "table", "name": "time", "rows": 100, "change": "new"},
        {"kind": "rejects (log_data)", "name": "invalid JSON", "rows": 3, "change": ""},
    ]


def test_an_iceberg_run_reports_each_table_s_snapshots_before_and_after() -> None:
    summary = RunSummary(
        run_id="r1",
        mode="full",
        run_date=None,
        songs_uri="s",
        logs_uri="l",
        output_uri="o",
        started_at="t",
        tables={"songplays": 12},
        table_format="iceberg",
        snapshots={"songplays": {"before": None, "after": 42}, "users": {"before": 7, "after": 9}},
    )
    assert report_rows(summary)[1:] == [
        {"kind": "iceberg snapshot", "name": "songplays", "rows": "", "change": "none -> 42"},
        {"kind": "iceberg snapshot", "name": "users", "rows": "", "change": "7 -> 9"},
    ]
