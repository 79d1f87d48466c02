"""The benchmark's fairness check: DuckDB's version of the contract gives the job's tables.

The timings themselves are measured by ``make bench``, never asserted here; what is
tested is that the comparison the benchmark relies on is real and can fail.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bench import duckdb_job
from bench.compare import differences
from bench.daily import archive_line
from bench.measure import measure
from spark_etl import jvm_archive
from tests.lakes import (
    DAYS,
)


def test_duckdb_builds_the_same_tables_as_the_spark_job(
    lake: Path,
    full_output: Path,
    tmp_path: Path,
) -> None:
    counts = duckdb_job.run(str(lake / "song_data"), str(lake / "log_data"), tmp_path / "duck")

    assert counts == {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}
    assert differences(full_output, tmp_path / "duck") == {}


def test_the_comparison_reports_rows_missing_on_one_side(
    lake: Path,
    full_output: Path,
    tmp_path: Path,
) -> None:
    shorter = tmp_path / "lake"
    shutil.copytree(lake, shorter)
    last_day = DAYS[-1]
    (shorter / "log_data" / f"{last_day:%Y/%m}" / f"{last_day:%Y-%m-%d}-events.json").unlink()
    duckdb_job.run(str(shorter / "song_data"), str(shorter / "log_data"), tmp_path / "duck")

    # The last day's three plays and their start times exist only in the job's output, and
    # user 1's latest event (its last_name names the day) is a day earlier without it.
    assert differences(full_output, tmp_path / "duck") == {
        "songplays": (3, 0),
        "time": (3, 0),
        "users": (1, 1),
    }


def test_the_bench_profile_reads_the_runs_own_summary_with_its_duration_and_publish(
    full_output: Path,
) -> None:
    from bench.run import _job_profile

    profile = _job_profile(full_output)

    # The last-success copy is published before the run's duration and publish time exist.
    assert profile is not None
    assert profile["job_seconds"] is not None and profile["job_seconds"] > 0
    assert "publish" in profile["stages"]


def test_the_spark_profile_sums_each_stage_of_the_job_from_the_event_log(tmp_path: Path) -> None:
    from bench.spark_profile import UNNAMED, profile, read_event_log
    from spark_etl.job import STAGE_PROPERTY

    def task(stage_id: int, read: int, written: int) -> dict[str, object]:
        return {
            "Event": "SparkListenerTaskEnd",
            "Stage ID": stage_id,
            "Task Metrics": {
                "Input Metrics": {"Bytes Read": read},
                "Shuffle Write Metrics": {"Shuffle Bytes Written": 7},
                "Shuffle Read Metrics": {"Remote Bytes Read": 1, "Local Bytes Read": 2},
                "Output Metrics": {"Bytes Written": written, "Records Written": 3},
            },
        }

    # Spark's own event names and fields (an event log is one JSON event a line).
    events = [
        {
            "Event": "SparkListenerJobStart",
            "Stage IDs": [0, 1],
            "Properties": {STAGE_PROPERTY: "catalogue"},
        },
        task(0, 100, 0),
        task(1, 0, 50),
        {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": 0}},
        {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": 1}},
        {"Event": "SparkListenerJobStart", "Stage IDs": [2], "Properties": {}},
        task(2, 10, 0),
        {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": 2}},
    ]
    log = tmp_path / "app-1"
    log.write_text("\n".join(json.dumps(event) for event in events) + "\n")

    by_stage = profile(read_event_log(log))

    assert by_stage == {
        "catalogue": {
            "spark_jobs": 1,
            "spark_stages": 2,
            "tasks": 2,
            "input_bytes": 100,
            "shuffle_write_bytes": 14,
            "shuffle_read_bytes": 6,
            "output_bytes": 50,
            "output_records": 6,
        },
        UNNAMED: {
            "spark_jobs": 1,
            "spark_stages": 1,
            "tasks": 1,
            "input_bytes": 10,
            "shuffle_write_bytes": 7,
            "shuffle_read_bytes": 3,
            "output_bytes": 0,
            "output_records": 3,
        },
    }


def test_the_daily_bench_says_when_a_jvm_ignored_the_class_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Java 17 prints when an archive was written for another class path.
    warning = "[0.1s][warning][cds,dynamic] Unable to use shared archive. The top archive failed"
    # It comes first, before the many lines of a run: not in the tail a measurement keeps.
    refused = measure([sys.executable, "-c", f"print({warning!r}); print('line\\n' * 40)"])
    used = measure([sys.executable, "-c", "print('done')"])
    assert (refused.ignored_class_archive, used.ignored_class_archive) == (True, False)

    monkeypatch.setenv(jvm_archive.CACHE_ENV, str(tmp_path))
    archive = jvm_archive.archive_path()
    archive.write_bytes(b"an archive")
    runs = [{"ignored_class_archive": flag} for flag in (True, False, True, False)]
    assert archive_line(runs).endswith(
        f"{archive}, IGNORED by the JVM in 2 of 4 daily runs (written for another class "
        "path: delete it and run `make jvm-archive`)"
    )
    assert archive_line(runs[1::2]) == f"JVM class archive for the daily runs: {archive}"
