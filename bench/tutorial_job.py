"""The same job as tutorials write it: the baseline the benchmark measures the project against.

Kept faithful to the common course solution on purpose, slow parts included: schema
inference on every read (the song files are read, and inferred, twice), a Python UDF
for the timestamp, ``monotonically_increasing_id`` for songplay_id, ``dropDuplicates``
for the dimensions, and partitioned writes with no thought for files or passes. It
does not meet the contract (no rejects, local time zone, first-seen users, exact
duration match); it is here only to be timed. Do not copy it.

    python bench/tutorial_job.py --input LAKE --output OUT
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql.functions import (
    col,
    date_format,
    dayofmonth,
    hour,
    monotonically_increasing_id,
    month,
    udf,
    weekofyear,
    year,
)
from pyspark.sql.types import TimestampType


def create_spark_session() -> SparkSession:
    return SparkSession.builder.appName("tutorial-etl").getOrCreate()


def process_song_data(spark: SparkSession, input_data: str, output_data: str) -> None:
    song_data = input_data + "/song_data/*/*/*/*.json"
    df = spark.read.json(song_data)

    songs_table = df.select("song_id", "title", "artist_id", "year", "duration").dropDuplicates()
    songs_table.write.partitionBy("year", "artist_id").parquet(
        output_data + "/songs", mode="overwrite"
    )

    artists_table = df.select(
        "artist_id",
        col("artist_name").alias("name"),
        col("artist_location").alias("location"),
        col("artist_latitude").alias("latitude"),
        col("artist_longitude").alias("longitude"),
    ).dropDuplicates()
    artists_table.write.parquet(output_data + "/artists", mode="overwrite")


def process_log_data(spark: SparkSession, input_data: str, output_data: str) -> None:
    log_data = input_data + "/log_data/*/*/*.json"
    df = spark.read.json(log_data)
    df = df.filter(df.page == "NextSong")

    users_table = df.select(
        col("userId").alias("user_id"),
        col("firstName").alias("first_name"),
        col("lastName").alias("last_name"),
        "gender",
        "level",
    ).dropDuplicates()
    users_table.write.parquet(output_data + "/users", mode="overwrite")

    get_timestamp = udf(lambda x: datetime.fromtimestamp(x / 1000.0), TimestampType())
    df = df.withColumn("start_time", get_timestamp(df.ts))

    time_table = df.select(
        "start_time",
        hour("start_time").alias("hour"),
        dayofmonth("start_time").alias("day"),
        weekofyear("start_time").alias("week"),
        month("start_time").alias("month"),
        year("start_time").alias("year"),
        date_format("start_time", "E").alias("weekday"),
    ).dropDuplicates()
    time_table.write.partitionBy("year", "month").parquet(output_data + "/time", mode="overwrite")

    song_df = spark.read.json(input_data + "/song_data/*/*/*/*.json")
    songplays_table = df.join(
        song_df,
        (df.song == song_df.title)
        & (df.artist == song_df.artist_name)
        & (df.length == song_df.duration),
        "left_outer",
    ).select(
        monotonically_increasing_id().alias("songplay_id"),
        "start_time",
        col("userId").alias("user_id"),
        "level",
        "song_id",
        "artist_id",
        col("sessionId").alias("session_id"),
        "location",
        col("userAgent").alias("user_agent"),
        year("start_time").alias("year"),
        month("start_time").alias("month"),
    )
    songplays_table.write.partitionBy("year", "month").parquet(
        output_data + "/songplays", mode="overwrite"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tutorial_job.py")
    parser.add_argument("--input", required=True, help="folder holding song_data and log_data")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    spark = create_spark_session()
    process_song_data(spark, args.input, args.output)
    process_log_data(spark, args.input, args.output)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
