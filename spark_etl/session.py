"""The job's SparkSession: the settings the job relies on, whatever runs it."""

from __future__ import annotations

from pyspark.sql import SparkSession

# Settings that make results right (UTC) or the run lean; nothing here is sized for one
# machine, so the same session suits a 2-core laptop and a large EMR cluster.
JOB_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


def create_session(app_name: str = "sparkify-lake") -> SparkSession:
    """Start (or join) the session with :data:`JOB_SETTINGS` applied.

    The master is not set here: spark-submit (EMR: YARN) or pyspark (local[*]) decides.
    """
    builder = SparkSession.builder.appName(app_name)
    for key, value in JOB_SETTINGS.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    enforce_utc(spark)
    return spark


def enforce_utc(spark: SparkSession) -> None:
    """Interpret every timestamp in UTC, whatever the machine's or cluster's zone."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
