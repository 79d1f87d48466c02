"""Whole runs of the job on tiny lakes: full, daily, re-runs, rejects and failures."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_etl import io, transform
from spark_etl.errors import InputNotFoundError, PostLoadCheckError, RejectThresholdExceededError
from spark_etl.job import run_job
from spark_etl.publication import STAGING_FOLDER
from spark_etl.summary import RunSummary, last_success_uri, summary_uri
from spark_etl.tables import ARTISTS, SONGS, TABLES, TIME, USERS
from tests.lakes import (
    DAYS,
    assert_same_tables,
    catalogue,
    day_events,
    event,
    job_args,
    read_tables,
    utc,
    write_lake,
)

# The songs, artists and time tables of a full run over the lake above, written out by
# hand from catalogue(), day_events() and a calendar.
EXPECTED_SONGS = [("SO1", "One", "AR1", 0, 100.0), ("SO2", "Two", "AR2", 2001, 50.0)]
EXPECTED_ARTISTS = [("AR1", "A", None, None, None), ("AR2", "B", "Oslo", 59.9, 10.7)]
EXPECTED_TIME = [
    # start_time, hour, day, ISO week, month, calendar year, ISO weekday (1 = Monday)
    (utc("2018-11-30 00:00:00.000"), 0, 30, 48, 11, 2018, 5),  # a Friday
    (utc("2018-11-30 12:00:00.000"), 12, 30, 48, 11, 2018, 5),
    (utc("2018-11-30 23:59:59.999"), 23, 30, 48, 11, 2018, 5),
    (utc("2018-12-01 00:00:00.000"), 0, 1, 48, 12, 2018, 6),  # a Saturday
    (utc("2018-12-01 12:00:00.000"), 12, 1, 48, 12, 2018, 6),
    (utc("2018-12-01 23:59:59.999"), 23, 1, 48, 12, 2018, 6),
    (utc("2018-12-31 00:00:00.000"), 0, 31, 1, 12, 2018, 1),  # Monday of ISO week 1 of 2019
    (utc("2018-12-31 12:00:00.000"), 12, 31, 1, 12, 2018, 1),
    (utc("2018-12-31 23:59:59.999"), 23, 31, 1, 12, 2018, 1),
    (utc("2019-01-01 00:00:00.000"), 0, 1, 1, 1, 2019, 2),  # a Tuesday
    (utc("2019-01-01 12:00:00.000"), 12, 1, 1, 1, 2019, 2),
    (utc("2019-01-01 23:59:59.999"), 23, 1, 1, 1, 2019, 2),
]
# Rule 8 as a run reports it: three checks on every table, then songplays' foreign keys.
POST_LOAD_CHECKS = [
    ("not empty", "songplays"),
    ("key not null", "songplays"),
    ("key unique", "songplays"),
    ("not empty", "users"),
    ("key not null", "users"),
    ("key unique", "users"),
    ("not empty", "songs"),
    ("key not null", "songs"),
    ("key unique", "songs"),
    ("not empty", "artists"),
    ("key not null", "artists"),
    ("key unique", "artists"),
    ("not empty", "time"),
    ("key not null", "time"),
    ("key unique", "time"),
    ("foreign key song_id", "songplays"),
    ("foreign key artist_id", "songplays"),
    ("foreign key user_id", "songplays"),
    ("foreign key start_time", "songplays"),
]


def check_outcomes(summary: RunSummary) -> list[tuple[str, str, bool]]:
    """The summary's checks as (name, table, passed); the contract does not order them."""
    return sorted((check.name, check.table, check.passed) for check in summary.checks)


def expected_outcomes(*failing: tuple[str, str]) -> list[tuple[str, str, bool]]:
    """Every check of rule 8 passing except the ``failing`` (name, table) ones."""
    return sorted((name, table, (name, table) not in failing) for name, table in POST_LOAD_CHECKS)


def test_full_run_writes_the_expected_tables_and_summary(
    spark: SparkSession, full_output: Path
) -> None:
    tables = read_tables(spark, full_output)
    plays = tables["songplays"].select(
        "start_time", "user_id", "level", "song_id", "artist_id", "year", "month"
    )
    expected_plays = []
    for day in DAYS:
        expected_plays += [
            (utc(f"{day} 00:00:00.000"), "1", "free", "SO1", "AR1", day.year, day.month),
            (utc(f"{day} 12:00:00.000"), "2", "paid", "SO2", "AR2", day.year, day.month),
            (utc(f"{day} 23:59:59.999"), "1", "paid", None, None, day.year, day.month),
        ]
    assertDataFrameEqual(
        plays,
        spark.createDataFrame(
            expected_plays,
            "start_time timestamp, user_id string, level string, song_id string, "
            "artist_id string, year int, month int",
        ),
    )
    assertDataFrameEqual(
        tables["users"],
        spark.createDataFrame(
            [("1", "Ada", "Last0101", "F", "paid"), ("2", "Ada", "Lovelace", "F", "paid")],
            USERS.schema,
        ),
    )
    assertDataFrameEqual(tables["songs"], spark.createDataFrame(EXPECTED_SONGS, SONGS.schema))
    assertDataFrameEqual(tables["artists"], spark.createDataFrame(EXPECTED_ARTISTS, ARTISTS.schema))
    assertDataFrameEqual(tables["time"], spark.createDataFrame(EXPECTED_TIME, TIME.schema))
    summary = RunSummary.from_json(Path(summary_uri(str(full_output), "test-full")).read_text())
    assert summary.status == "succeeded"
    assert summary.tables == {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}
    assert summary.input_records == {"song_data": 2, "log_data": 24}
    assert summary.rejects == []
    assert check_outcomes(summary) == expected_outcomes()


@pytest.mark.integration  # several job runs
def test_a_full_rerun_leaves_the_same_tables(
    spark: SparkSession, lake: Path, full_output: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    first = run_job(spark, job_args(lake, output))
    second = run_job(spark, job_args(lake, output, run_id="second"))
    assert_same_tables(spark, output, full_output)
    assert (first.previous_tables, second.previous_tables) == ({}, first.tables)


@pytest.mark.integration  # several job runs
def test_daily_runs_in_any_order_equal_one_full_run_and_rerun_changes_nothing(
    spark: SparkSession, lake: Path, full_output: Path, tmp_path: Path
) -> None:
    output = tmp_path / "daily"
    for day in (DAYS[2], DAYS[0], DAYS[3], DAYS[1], DAYS[2]):
        run_job(spark, job_args(lake, output, run_date=day, run_id=f"d-{day}"))
    assert_same_tables(spark, output, full_output)
    assert not (output / STAGING_FOLDER).exists() or not any((output / STAGING_FOLDER).iterdir())


@pytest.mark.integration  # several job runs
def test_a_daily_run_rewrites_only_its_month_and_keeps_the_months_old_rows(
    spark: SparkSession, lake: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    for day in DAYS[:3]:
        run_job(spark, job_args(lake, output, run_date=day, run_id=f"d-{day}"))
    november = output / "songplays" / "year=2018" / "month=11"
    files_before = {path.name: path.stat().st_mtime_ns for path in november.glob("*.parquet")}

    run_job(spark, job_args(lake, output, run_date=DAYS[3], run_id="jan"))  # January only

    assert {
        path.name: path.stat().st_mtime_ns for path in november.glob("*.parquet")
    } == files_before
    december = io.read_table(spark, TABLES["songplays"], str(output)).filter("month = 12")
    assert december.count() == 6  # 2018-12-01 and 2018-12-31: never replaced by one day


def test_rejects_are_written_with_file_and_reason_and_the_threshold_stops_the_run(
    spark: SparkSession, tmp_path: Path
) -> None:
    lines = [*day_events(DAYS[0]), "{broken", "[]", json.dumps(event(page=None))]
    lake = write_lake(tmp_path / "lake", {DAYS[0]: lines}, catalogue())
    output = tmp_path / "out"

    with pytest.raises(RejectThresholdExceededError, match=r"3 of 11 input records rejected"):
        run_job(spark, job_args(lake, output, max_reject_ratio=0.2))

    assert not (output / "songplays").exists()  # nothing written past the threshold
    summary = RunSummary.from_json(Path(summary_uri(str(output), "test-full")).read_text())
    assert (summary.status, summary.reject_total) == ("failed", 3)
    assert "rejected" in (summary.error or "")
    rejects = spark.read.json(str(output / "_rejects" / "log_data" / "day=2018-11-30"))
    day_file = f"file:{lake}/log_data/2018/11/2018-11-30-events.json"
    assertDataFrameEqual(
        rejects.select("source_file", "line", "reason"),
        spark.createDataFrame(
            [
                (day_file, "{broken", "invalid JSON"),
                (day_file, "[]", "not a JSON object"),
                (day_file, lines[-1], "missing page"),
            ],
            "source_file string, line string, reason string",
        ),
    )

    allowed = run_job(spark, job_args(lake, output, max_reject_ratio=0.3, run_id="allowed"))
    assert allowed.status == "succeeded" and allowed.tables["songplays"] == 3
    # A daily re-run of the same day replaces that day's rejects instead of adding to them.
    # 3 of the day's 9 lines: the day alone is held to the share too, so it needs 0.34.
    run_job(spark, job_args(lake, output, run_date=DAYS[0], max_reject_ratio=0.34, run_id="day"))
    again = spark.read.json(str(output / "_rejects" / "log_data"))
    assert sorted((row["day"], row["reason"]) for row in again.collect()) == [
        (DAYS[0], "invalid JSON"),
        (DAYS[0], "missing page"),
        (DAYS[0], "not a JSON object"),
    ]


def test_a_missing_or_empty_input_fails_before_any_work(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = write_lake(tmp_path / "lake", {DAYS[0]: day_events(DAYS[0])}, catalogue())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match=r"song_data location .*nowhere does not exist"):
        run_job(spark, job_args(lake, tmp_path / "o1", songs_uri=str(tmp_path / "nowhere")))
    with pytest.raises(InputNotFoundError, match=r"log_data location .*empty holds no .json file"):
        run_job(spark, job_args(lake, tmp_path / "o2", logs_uri=str(tmp_path / "empty")))
    with pytest.raises(InputNotFoundError, match=r"log_data file for 2018-12-25 .* does not exist"):
        run_job(spark, job_args(lake, tmp_path / "o3", run_date=date(2018, 12, 25)))
    assert not (tmp_path / "o1" / "songs").exists()


def test_a_failed_post_load_check_fails_the_run_and_the_summary_says_which(
    spark: SparkSession, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_artists = transform.build_artists

    def every_artist_twice(songs: DataFrame) -> DataFrame:
        # A builder gone wrong: the checks, not the builder's own tests, must stop the run.
        artists = build_artists(songs)
        return artists.unionByName(artists)

    monkeypatch.setattr(transform, "build_artists", every_artist_twice)
    output = tmp_path / "out"
    message = "post-load checks failed: artists key unique (2 duplicate keys)"

    with pytest.raises(PostLoadCheckError, match=f"^{re.escape(message)}$"):
        run_job(spark, job_args(lake, output))

    summary = RunSummary.from_json(Path(summary_uri(str(output), "test-full")).read_text())
    assert (summary.status, summary.error) == ("failed", message)
    assert check_outcomes(summary) == expected_outcomes(("key unique", "artists"))
    assert summary.tables == {"songplays": 12, "users": 2, "songs": 2, "artists": 4, "time": 12}
    assert not Path(last_success_uri(str(output))).exists()  # no later run counts from it


def test_the_job_enforces_utc_when_the_session_zone_is_elsewhere(
    spark: SparkSession, lake: Path, full_output: Path, tmp_path: Path
) -> None:
    spark.conf.set("spark.sql.session.timeZone", "Pacific/Kiritimati")  # UTC+14
    try:
        run_job(spark, job_args(lake, tmp_path / "out"))
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert_same_tables(spark, tmp_path / "out", full_output)
    months = io.read_table(spark, TABLES["time"], str(tmp_path / "out")).select(
        "year", "month", "day", "hour"
    )
    assert (2018, 11, 30, 23) in [tuple(row) for row in months.collect()]


def test_duckdb_example_queries_answer_from_the_job_output(full_output: Path) -> None:
    from lake_query import connect, run_examples

    assert run_examples(connect(full_output)) == {
        "Top 5 songs by plays": [("One", "A", 4), ("Two", "B", 4)],
        "Plays by hour of day (UTC)": [(0, 4), (12, 4), (23, 4)],
        "Free vs paid users and their plays": [("paid", 2, 12)],
    }
