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
from pyspark.sql import types as T

from spark_etl.errors import InputNotFoundError
from spark_etl.lake import DAY_FILE_NAME, LOG_SOURCE, join_uri
from spark_etl.publication import USER_STATE, Manifest
from spark_etl.tables import TableSpec
from spark_etl.transform import LINE, REJECT_REASON, SOURCE_FILE

logger = logging.getLogger(__name__)

REJECTS_FOLDER = "_rejects"


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


def write_rejects(
    rejects: DataFrame, output_uri: str, source: str, day: date | None, any_rejects: bool = True
) -> None:
    """Write rejected lines as JSON under ``<output>/_rejects/<source>/``.

    Log rejects sit in one folder per log day (``day=YYYY-MM-DD``) whether a full or a
    daily run wrote them: a full run replaces every day, a daily run only its own, so
    re-running a day never doubles its rejects. A day without rejects only removes what
    an earlier run of it left (no Spark job for nothing).
    """
    uri = join_uri(output_uri, REJECTS_FOLDER, source)
    rows = rejects.select(SOURCE_FILE, LINE, F.col(REJECT_REASON).alias("reason"))
    if day is not None and not any_rejects:
        delete_path(rejects.sparkSession, join_uri(uri, f"day={day.isoformat()}"))
    elif day is not None:
        rows.coalesce(1).write.mode("overwrite").json(join_uri(uri, f"day={day.isoformat()}"))
    elif source == LOG_SOURCE:
        log_day = F.regexp_extract(F.col(SOURCE_FILE), DAY_FILE_NAME.pattern, 1)
        by_day = rows.withColumn("day", F.when(log_day != "", log_day).otherwise("unknown"))
        by_day.repartition("day").write.mode("overwrite").partitionBy("day").json(uri)
    else:
        rows.coalesce(1).write.mode("overwrite").json(uri)


def read_user_state(spark: SparkSession, output_uri: str, schema: Any) -> DataFrame:
    """The users' latest-event state kept beside the tables, or an empty frame."""
    uri = join_uri(output_uri, USER_STATE)
    if not path_exists(spark, uri):
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(uri)


# Given more files than this, Spark lists them in a job of its own (on S3, a request
# per file): past it, the month folders are read whole and the day's files left out.
MAX_FILES_READ_ONE_BY_ONE = 32


def read_other_sets_keys(
    spark: SparkSession,
    spec: TableSpec,
    output_uri: str,
    manifest: Manifest | None,
    months: list[tuple[int, int]],
    day: str,
    span: tuple[int, int] | None,
) -> DataFrame | None:
    """The keys that file sets other than ``day``'s may share with the day, in ``months``.

    A key is an event's (songplays) or its start time (time), so a set can only share
    one with the day when its span of start times meets the day's ``span``: sets that
    do not are never read. A set without a recorded span is read. Only key columns are
    read.

    Returns:
        The keys of the sets that may clash, or None when no set may.
    """
    entry = manifest.folders.get(spec.name) if manifest else None
    if entry is None:
        return None
    prefixes = tuple(f"year={year}/month={month}/" for year, month in months)
    sets = {s for s in entry.rows if s != day and _spans_meet(entry.spans.get(s), span)}
    files = [
        join_uri(output_uri, spec.name, path)
        for path, file_set in sorted(entry.files.items())
        if file_set in sets and path.startswith(prefixes)
    ]
    if not files:
        return None
    key_schema = T.StructType([f for f in spec.schema.fields if f.name in spec.key])
    if len(files) <= MAX_FILES_READ_ONE_BY_ONE:
        return spark.read.schema(key_schema).parquet(*files).select(*spec.key)
    folders = sorted({uri.rsplit("/", 1)[0] for uri in files})
    keys = spark.read.schema(key_schema).parquet(*folders)
    return keys.filter(~F.col("_metadata.file_name").startswith(f"{day}.")).select(*spec.key)


def _spans_meet(known: list[int] | None, span: tuple[int, int] | None) -> bool:
    """Whether a set's span of start times may meet the day's (unknown: it may)."""
    if known is None or span is None:
        return True
    return known[0] <= span[1] and span[0] <= known[1]


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
