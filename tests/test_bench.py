"""The benchmark's fairness check: DuckDB's version of the contract gives the job's tables.

The timings themselves are measured by ``make bench``, never asserted here; what is
tested is that the comparison the benchmark relies on is real and can fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import duckdb_job
from bench.compare import differences
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
