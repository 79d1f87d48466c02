"""Glue registration against moto: tables from the registry, partitions added once."""

from __future__ import annotations

import boto3
from moto import mock_aws

from spark_etl.tables import TABLES
from tasks.ops import glue as glue_ops

REGION = "us-east-1"
OUTPUT = "s3://lake-bucket/star"
DAY_OBJECTS = [
    "songplays/year=2018/month=11/part-0.parquet",
    "songplays/year=2018/month=12/part-0.parquet",
    "time/year=2018/month=11/part-0.parquet",
    "songs/year=0/artist_id=AR1/part-0.parquet",
    "songs/year=1999/artist_id=AR2/part-0.parquet",
    "users/part-0.parquet",
    "artists/part-0.parquet",
]


def register(s3: object, glue: object) -> dict[str, int]:
    return glue_ops.register_lake(glue, s3, "sparkify_lake", OUTPUT)  # type: ignore[arg-type]


def test_tables_columns_partitions_and_an_idempotent_rerun() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        glue = boto3.client("glue", region_name=REGION)
        s3.create_bucket(Bucket="lake-bucket")
        for key in DAY_OBJECTS:
            s3.put_object(Bucket="lake-bucket", Key=f"star/{key}", Body=b"PAR1")

        first = register(s3, glue)
        second = register(s3, glue)  # a re-run: nothing new, nothing fails

        assert first == {"songplays": 2, "users": 0, "songs": 2, "artists": 0, "time": 1}
        assert second == dict.fromkeys(TABLES, 0)
        tables = {t["Name"]: t for t in glue.get_tables(DatabaseName="sparkify_lake")["TableList"]}
        assert set(tables) == set(TABLES)
        songplays = tables["songplays"]
        assert [(c["Name"], c["Type"]) for c in songplays["StorageDescriptor"]["Columns"]] == [
            ("songplay_id", "bigint"),
            ("start_time", "timestamp"),
            ("user_id", "string"),
            ("level", "string"),
            ("song_id", "string"),
            ("artist_id", "string"),
            ("session_id", "bigint"),
            ("location", "string"),
            ("user_agent", "string"),
        ]
        assert [(k["Name"], k["Type"]) for k in songplays["PartitionKeys"]] == [
            ("year", "int"),
            ("month", "int"),
        ]
        assert songplays["StorageDescriptor"]["Location"] == f"{OUTPUT}/songplays/"
        assert tables["users"]["PartitionKeys"] == []
        assert [k["Name"] for k in tables["songs"]["PartitionKeys"]] == ["year", "artist_id"]
        partitions = glue.get_partitions(DatabaseName="sparkify_lake", TableName="songplays")[
            "Partitions"
        ]
        assert sorted(
            (tuple(p["Values"]), p["StorageDescriptor"]["Location"]) for p in partitions
        ) == [
            (("2018", "11"), f"{OUTPUT}/songplays/year=2018/month=11/"),
            (("2018", "12"), f"{OUTPUT}/songplays/year=2018/month=12/"),
        ]
