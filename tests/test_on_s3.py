"""The job on a real S3 API: Hadoop's S3A against moto's server, in the test session.

The session's JVM holds S3A (``make jars``); the AWS SDK's standard variables point
boto3 and S3A at the server (``s3_bucket``), as a user points the job at MinIO or Ceph. What
exists only because S3 is not a file system meets S3 here: publication by COPY and DELETE,
the manifest, the damaged-lake check, the lease by conditional writes, and listings.
The kill in the middle of a publication on S3 is in ``test_crash_safety.py`` (a process).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from bench.s3_api import S3Api
from spark_etl.args import ICEBERG, JobArgs
from spark_etl.errors import DamagedLakeError
from spark_etl.job import run_job
from spark_etl.publication import FULL_RUN_REPAIR
from spark_etl.summary import RunSummary, summary_uri
from spark_etl.tables import TABLES
from tasks.ops.names import PROJECT_ROOT
from tests.glue_iceberg import glue_iceberg_table
from tests.lakes import (
    DAYS,
    S3_OUTPUT,
    assert_nothing_left_on_s3,
    read_tables,
    s3_job_args,
    upload_lake,
)


@dataclass(frozen=True)
class PublishedOnS3:
    """A bucket holding the lake and an output built by a full run, then a daily run."""

    bucket: str
    full_run: Counter[str]
    daily_run: Counter[str]
    summaries: dict[str, RunSummary]

    @property
    def output_uri(self) -> str:
        return f"s3://{self.bucket}/{S3_OUTPUT}"


def run_counted(spark: SparkSession, s3_api: S3Api, bucket: str, args: JobArgs) -> Counter[str]:
    """Run the job; return the S3 requests it made, by kind."""
    mark = s3_api.requests_mark()
    run_job(spark, args)
    return s3_api.count_since(mark, bucket)


def read_summary(bucket: str, output_uri: str, run_id: str) -> RunSummary:
    key = summary_uri(output_uri, run_id).split(f"{bucket}/", 1)[1]
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return RunSummary.from_json(body.decode("utf-8"))


@pytest.fixture(scope="module")
def published(spark: SparkSession, s3_api: S3Api, s3_bucket: str, lake: Path) -> PublishedOnS3:
    """Three days by a full run, the fourth by a daily run, all on S3."""
    upload_lake(s3_bucket, lake, DAYS[:3])
    full = run_counted(spark, s3_api, s3_bucket, s3_job_args(s3_bucket, run_id="full"))
    upload_lake(s3_bucket, lake, DAYS[3:])
    daily_args = s3_job_args(s3_bucket, DAYS[3], run_id="daily")
    daily = run_counted(spark, s3_api, s3_bucket, daily_args)
    output_uri = daily_args.output_uri
    summaries = {run: read_summary(s3_bucket, output_uri, run) for run in ("full", "daily")}
    return PublishedOnS3(s3_bucket, full, daily, summaries)


def test_a_full_run_then_a_daily_run_on_s3_equal_a_local_full_run_row_for_row(
    spark: SparkSession, published: PublishedOnS3, full_output: Path
) -> None:
    on_s3 = read_tables(spark, published.output_uri)
    local = read_tables(spark, full_output)
    for name in TABLES:
        assertDataFrameEqual(on_s3[name], local[name])
    assert_nothing_left_on_s3(published.bucket)
    # S3 has no rename: each file the job moved into place is a COPY S3 answered.
    for run, counted in ((published.full_run, "full"), (published.daily_run, "daily")):
        moved = published.summaries[counted].requests["copy"]
        assert moved > 0 and run["COPY"] >= moved, (counted, dict(run))


def test_a_damaged_lake_on_s3_is_refused_with_its_repair_and_the_refusal_leaves_nothing(
    spark: SparkSession, published: PublishedOnS3
) -> None:
    leftover = f"{S3_OUTPUT}/songs/_temporary/0/part-0.parquet"
    boto3.client("s3").put_object(Bucket=published.bucket, Key=leftover, Body=b"half a file")

    refused = s3_job_args(published.bucket, DAYS[3], run_id="refused")
    damage = r"songs holds leftovers of an interrupted write \(_temporary/0/part-0.parquet"
    with pytest.raises(DamagedLakeError, match=damage) as refusal:
        run_job(spark, refused)

    assert str(refusal.value).endswith(FULL_RUN_REPAIR)
    assert_nothing_left_on_s3(published.bucket)


@pytest.mark.integration  # a job process: the Glue catalog needs Iceberg's AWS bundle in its JVM
def test_the_job_commits_iceberg_tables_to_a_glue_database_on_an_s3_api(
    spark: SparkSession,
    s3_api: S3Api,
    s3_bucket: str,
    lake: Path,
    full_output: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python -m spark_etl --table-format iceberg --glue-database``, as on a laptop
    pointed at MinIO and a Glue: moto's server answers both, through the SDK's variables."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", s3_api.url)  # for boto3 and the job
    upload_lake(s3_bucket, lake)
    boto3.client("glue").create_database(DatabaseInput={"Name": "lake_iceberg"})
    output_uri = f"s3://{s3_bucket}/star-iceberg"
    args = replace(
        s3_job_args(s3_bucket, run_id="glue-full"),
        output_uri=output_uri,
        table_format=ICEBERG,
        glue_database="lake_iceberg",
    )
    command = [sys.executable, "-m", "spark_etl", *args.to_argv()]
    job = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)

    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    local = read_tables(spark, full_output)
    for name in TABLES:
        location = f"{output_uri}/{name}"
        on_s3 = glue_iceberg_table(spark, "lake_iceberg", name, s3_api.url, location)
        assertDataFrameEqual(on_s3, local[name])
    summary = read_summary(s3_bucket, output_uri, "glue-full")
    assert summary.tables == {name: frame.count() for name, frame in local.items()}
