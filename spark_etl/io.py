"""Every read and write of the job: input lines, tables, rejects, state and run summaries.

Paths go through Hadoop's FileSystem API, so the same code serves a local folder and
``s3://`` on EMR (EMRFS). Nothing else in ``spark_etl`` touches storage.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_etl.errors import InputNotFoundError
from spark_etl.lake import DAY_FILE_NAME, LOG_SOURCE, join_uri
from spark_etl.tables import TableSpec
from spark_etl.transform import LINE, REJECT_REASON, SOURCE_FILE

logger = logging.getLogger(__name__)

REJECTS_FOLDER = "_rejects"
STATE_FOLDER = "_state"
STAGING_FOLDER = "_staging"
USER_STATE = "users"
# Target size of a parquet file: large enough for fast scans in Athena and Spark, small
# enough that a partition is still written by several tasks in parallel.
ROWS_PER_FILE = 2_000_000


def require_input(spark: SparkSession, uri: str, label: str) -> None:
    """Fail before any work when ``uri`` is missing or holds no ``.json`` file.

    Raises:
        InputNotFoundError: The location is missing or empty.
    """
    fs, path = _filesystem(spark, uri)
    if not fs.exists(path):
        raise InputNotFoundError(f"{label} location {uri} does not exist")
    if fs.getFileStatus(path).isFile():
        return
    files = fs.listFiles(path, True)
    while files.hasNext():
        if files.next().getPath().getName().endswith(".json"):
            return
    raise InputNotFoundError(f"{label} location {uri} holds no .json file")


def read_lines(spark: SparkSession, uri: str) -> DataFrame:
    """Every line of the ``.json`` files under ``uri``, with the file it came from."""
    reader = spark.read.option("pathGlobFilter", "*.json").option("recursiveFileLookup", "true")
    return reader.text(uri).select(
        F.col("value").alias(LINE), F.col("_metadata.file_path").alias(SOURCE_FILE)
    )


def read_table(spark: SparkSession, spec: TableSpec, output_uri: str) -> DataFrame:
    """A table as written, or an empty frame of its schema when it does not exist yet."""
    uri = join_uri(output_uri, spec.name)
    if not path_exists(spark, uri):
        return spark.createDataFrame([], spec.schema)
    return spark.read.schema(spec.schema).parquet(uri).select(*spec.column_names)


def write_table(
    frame: DataFrame, spec: TableSpec, output_uri: str, rows: int | None = None
) -> None:
    """Replace the whole table with ``frame``.

    Args:
        frame: Rows in the table's columns.
        spec: The table.
        output_uri: Root of the tables.
        rows: Expected row count when known, used to size the output files.
    """
    _writer(frame, spec, rows).mode("overwrite").parquet(join_uri(output_uri, spec.name))


def overwrite_partitions(
    frame: DataFrame, spec: TableSpec, output_uri: str, rows: int | None = None
) -> None:
    """Replace only the partitions present in ``frame``; every other partition stays."""
    writer = (
        _writer(frame, spec, rows).mode("overwrite").option("partitionOverwriteMode", "dynamic")
    )
    writer.parquet(join_uri(output_uri, spec.name))


def _writer(frame: DataFrame, spec: TableSpec, rows: int | None) -> Any:
    """A parquet writer that puts few, well-filled files in each partition folder."""
    files_per_partition = max(1, -(-(rows or 0) // ROWS_PER_FILE))
    if spec.partition_by:
        # Rows of one partition go to the same few tasks: one file each, not one per task.
        spread = F.pmod(F.xxhash64(*spec.key), F.lit(files_per_partition))
        frame = frame.repartition(*[F.col(c) for c in spec.partition_by], spread)
    else:
        frame = frame.coalesce(files_per_partition)
    return frame.write.partitionBy(*spec.partition_by).option("maxRecordsPerFile", ROWS_PER_FILE)


def write_rejects(rejects: DataFrame, output_uri: str, source: str, day: date | None) -> None:
    """Write rejected lines as JSON under ``<output>/_rejects/<source>/``.

    Log rejects sit in one folder per log day (``day=YYYY-MM-DD``) whether a full or a
    daily run wrote them: a full run replaces every day, a daily run only its own, so
    re-running a day never doubles its rejects.
    """
    uri = join_uri(output_uri, REJECTS_FOLDER, source)
    rows = rejects.select(SOURCE_FILE, LINE, F.col(REJECT_REASON).alias("reason"))
    if day is not None:
        rows.coalesce(1).write.mode("overwrite").json(join_uri(uri, f"day={day.isoformat()}"))
    elif source == LOG_SOURCE:
        log_day = F.regexp_extract(F.col(SOURCE_FILE), DAY_FILE_NAME.pattern, 1)
        by_day = rows.withColumn("day", F.when(log_day != "", log_day).otherwise("unknown"))
        by_day.repartition("day").write.mode("overwrite").partitionBy("day").json(uri)
    else:
        rows.coalesce(1).write.mode("overwrite").json(uri)


def read_user_state(spark: SparkSession, output_uri: str, schema: Any) -> DataFrame:
    """The users' latest-event state kept beside the tables, or an empty frame."""
    uri = join_uri(output_uri, STATE_FOLDER, USER_STATE)
    if not path_exists(spark, uri):
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(uri)


def write_user_state(state: DataFrame, output_uri: str) -> None:
    """Replace the users' state (a daily run passes a staged copy, never the state itself)."""
    state.coalesce(1).write.mode("overwrite").parquet(
        join_uri(output_uri, STATE_FOLDER, USER_STATE)
    )


def stage(frame: DataFrame, name: str, output_uri: str, run_id: str) -> DataFrame:
    """Write ``frame`` to the run's staging folder and read it back.

    A table cannot be overwritten while the same job still reads it; staging breaks
    that loop for the merges of a daily run.
    """
    uri = join_uri(output_uri, STAGING_FOLDER, run_id, name)
    frame.write.mode("overwrite").parquet(uri)
    return frame.sparkSession.read.parquet(uri).select(*frame.columns)


def drop_staging(spark: SparkSession, output_uri: str, run_id: str) -> None:
    """Remove the run's staging folder."""
    delete_path(spark, join_uri(output_uri, STAGING_FOLDER, run_id))


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a small text file (the run summary) to any Hadoop-supported location."""
    fs, path = _filesystem(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str | None:
    """A small text file's content, or None when it does not exist."""
    fs, path = _filesystem(spark, uri)
    if not fs.exists(path):
        return None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    stream = fs.open(path)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def path_exists(spark: SparkSession, uri: str) -> bool:
    """True when ``uri`` exists."""
    fs, path = _filesystem(spark, uri)
    return bool(fs.exists(path))


def delete_path(spark: SparkSession, uri: str) -> None:
    """Delete ``uri`` and everything below it, if it exists."""
    fs, path = _filesystem(spark, uri)
    if fs.exists(path):
        fs.delete(path, True)


def _filesystem(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    """Hadoop FileSystem and Path for ``uri`` (local folder, s3:// on EMR, ...)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path
