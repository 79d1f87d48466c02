"""The tiny lakes the tests run the job on, and the records they are built from.

Every test that runs the job builds its input from these, so the expected rows written
out by hand in the tests stay true for all of them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import boto3
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_etl import io
from spark_etl.args import JobArgs
from spark_etl.lease import LEASE_FILE
from spark_etl.publication import JOURNAL_FILE, STAGING_FOLDER
from spark_etl.tables import TABLES


def ts_of(text: str) -> int:
    """Epoch milliseconds of a UTC time written as ``YYYY-MM-DD HH:MM:SS.fff``."""
    moment = datetime.fromisoformat(text + "+00:00")
    return int(moment.timestamp() * 1000)


def utc(text: str) -> datetime:
    """A naive datetime for expected rows: Spark shows timestamps in the session zone, UTC."""
    return datetime.fromisoformat(text)


def song(**fields: Any) -> dict[str, Any]:
    """A song record with defaults for what a test does not care about."""
    record = {
        "num_songs": 1,
        "artist_id": "AR1",
        "artist_latitude": None,
        "artist_longitude": None,
        "artist_location": "",
        "artist_name": "Artist One",
        "song_id": "SO1",
        "title": "Title One",
        "duration": 200.0,
        "year": 0,
    }
    record.update(fields)
    return record


def event(**fields: Any) -> dict[str, Any]:
    """A NextSong event with defaults for what a test does not care about."""
    record = {
        "artist": "Artist One",
        "auth": "Logged In",
        "firstName": "Ada",
        "gender": "F",
        "itemInSession": 0,
        "lastName": "Lovelace",
        "length": 200.0,
        "level": "free",
        "location": "London",
        "method": "PUT",
        "page": "NextSong",
        "registration": 1540919166796.0,
        "sessionId": 1,
        "song": "Title One",
        "status": 200,
        "ts": ts_of("2018-11-05 10:00:00.000"),
        "userAgent": "Mozilla",
        "userId": "7",
    }
    record.update(fields)
    return record


DAYS = (date(2018, 11, 30), date(2018, 12, 1), date(2018, 12, 31), date(2019, 1, 1))


def write_lake(root: Path, events_by_day: dict[date, list[str]], song_lines: list[str]) -> Path:
    """A lake laid out like the real one, from raw lines."""
    for index, line in enumerate(song_lines):
        path = root / "song_data" / "A" / "B" / f"TRAB{index:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line)
    for day, lines in events_by_day.items():
        path = root / "log_data" / f"{day:%Y/%m}" / f"{day:%Y-%m-%d}-events.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
    return root


def catalogue() -> list[str]:
    return [
        json.dumps(
            song(song_id="SO1", artist_id="AR1", title="One", artist_name="A", duration=100.0)
        ),
        json.dumps(
            song(
                song_id="SO2",
                artist_id="AR2",
                title="Two",
                artist_name="B",
                duration=50.0,
                year=2001,
                artist_location="Oslo",
                artist_latitude=59.9,
                artist_longitude=10.7,
            )
        ),
    ]


def day_events(day: date) -> list[str]:
    """Four plays and a level change per day, one play duplicated, one logged-out visit."""
    base = f"{day.isoformat()}"
    plays = [
        event(
            userId="1",
            ts=ts_of(f"{base} 00:00:00.000"),
            song="One",
            artist="A",
            length=100.0,
            sessionId=day.toordinal(),
            itemInSession=0,
        ),
        event(
            userId="2",
            ts=ts_of(f"{base} 12:00:00.000"),
            song="Two",
            artist="B",
            length=50.0,
            sessionId=day.toordinal() + 1,
            itemInSession=0,
            level="paid",
        ),
        event(
            userId="1",
            ts=ts_of(f"{base} 23:59:59.999"),
            song="Nope",
            artist="A",
            length=1.0,
            sessionId=day.toordinal(),
            itemInSession=2,
            level="paid",
            lastName=f"Last{day:%m%d}",
        ),
    ]
    upgrade = event(
        userId="1",
        page="Submit Upgrade",
        ts=ts_of(f"{base} 23:00:00.000"),
        sessionId=day.toordinal(),
        itemInSession=1,
        level="free",
        lastName="Upgrading",
    )
    visitor = event(
        userId="",
        page="Home",
        auth="Logged Out",
        ts=ts_of(f"{base} 06:00:00.000"),
        firstName=None,
        lastName=None,
        gender=None,
        sessionId=7,
        itemInSession=0,
    )
    records = [plays[0], plays[0], visitor, plays[1], upgrade, plays[2]]
    return [json.dumps(record) for record in records]


def job_args(lake: Path, output: Path, run_date: date | None = None, **overrides: Any) -> JobArgs:
    values: dict[str, Any] = {
        "songs_uri": str(lake / "song_data"),
        "logs_uri": str(lake / "log_data"),
        "output_uri": str(output),
        "run_date": run_date,
        "max_reject_ratio": 0.01,
        "run_id": f"test-{run_date or 'full'}",
    }
    values.update(overrides)
    return JobArgs(**values)


def read_tables(spark: SparkSession, output: Path) -> dict[str, DataFrame]:
    return {name: io.read_table(spark, spec, str(output)) for name, spec in TABLES.items()}


def assert_same_tables(spark: SparkSession, left: Path, right: Path) -> None:
    left_tables, right_tables = read_tables(spark, left), read_tables(spark, right)
    for name in TABLES:
        assertDataFrameEqual(left_tables[name], right_tables[name])


S3_OUTPUT = "star"  # the output folder of a lake in a bucket


def upload_lake(bucket: str, lake: Path, days: tuple[date, ...] | None = None) -> None:
    """Copy the lake's song files and the log files of ``days`` (all when None) to the bucket."""
    s3 = boto3.client("s3")
    for path in sorted(lake.rglob("*")):
        key = path.relative_to(lake).as_posix()
        is_day = key.startswith("log_data/")
        if path.is_file() and (not is_day or days is None or any(str(d) in key for d in days)):
            s3.upload_file(str(path), bucket, key)


def s3_job_args(bucket: str, run_date: date | None = None, **overrides: Any) -> JobArgs:
    """The job's arguments for the lake and the output in ``bucket``."""
    root = f"s3://{bucket}"
    local = job_args(Path(), Path(), run_date=run_date, **overrides)
    return replace(
        local,
        songs_uri=f"{root}/song_data",
        logs_uri=f"{root}/log_data",
        output_uri=f"{root}/{S3_OUTPUT}",
    )


def output_keys(bucket: str) -> list[str]:
    pages = (
        boto3.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{S3_OUTPUT}/")
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def assert_nothing_left_on_s3(bucket: str) -> None:
    """No staging, journal or lease object: a reader and the next run see only tables."""
    keys = output_keys(bucket)
    assert [key for key in keys if key.startswith(f"{S3_OUTPUT}/{STAGING_FOLDER}/")] == []
    assert f"{S3_OUTPUT}/{LEASE_FILE}" not in keys
    assert f"{S3_OUTPUT}/{JOURNAL_FILE}" not in keys
    # S3A marks a folder it made with a `folder/` object: none may lie in a table.
    tables = tuple(f"{S3_OUTPUT}/{name}/" for name in TABLES)
    assert [key for key in keys if key.endswith("/") and key.startswith(tables)] == []
