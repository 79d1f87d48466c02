"""Glue registration against moto: tables from the registry, partitions added once, refused
entries, escaped values and vanished folders."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from spark_etl.tables import TABLES
from tasks.glue import CatalogNotUpdatedError
from tasks.ops import glue as glue_ops
from tasks.ops.retry import is_transient

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


def lake_with(s3: Any, keys: list[str]) -> None:
    s3.create_bucket(Bucket="lake-bucket")
    for key in keys:
        s3.put_object(Bucket="lake-bucket", Key=f"star/{key}", Body=b"PAR1")


def partitions(glue: Any, table: str) -> list[tuple[tuple[str, ...], str]]:
    found = glue.get_partitions(DatabaseName="sparkify_lake", TableName=table)["Partitions"]
    return sorted((tuple(p["Values"]), p["StorageDescriptor"]["Location"]) for p in found)


class EntriesRefused:
    """Wraps moto's Glue: batch_create_partition answers 200 with ``code`` on every entry,
    which moto never does (a throttled or refused batch is all-or-nothing there)."""

    def __init__(self, real: Any, codes: list[str]) -> None:
        self._real, self._codes = real, codes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def batch_create_partition(self, **request: Any) -> dict[str, Any]:
        entries = request["PartitionInputList"]
        return {
            "Errors": [
                {
                    "PartitionValues": entry["Values"],
                    "ErrorDetail": {"ErrorCode": code, "ErrorMessage": f"{code} says no"},
                }
                for entry, code in zip(entries, self._codes, strict=False)
            ]
        }


@pytest.mark.parametrize(
    ("codes", "transient"),
    [
        (["ThrottlingException", "ThrottlingException"], True),
        (["AccessDeniedException", "AccessDeniedException"], False),
        (["ThrottlingException", "AccessDeniedException"], False),  # a retry cannot fix all
    ],
)
def test_partitions_glue_refuses_in_a_200_answer_fail_the_registration(
    codes: list[str], transient: bool
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        glue = boto3.client("glue", region_name=REGION)
        lake_with(s3, DAY_OBJECTS)

        with pytest.raises(glue_ops.GluePartitionError) as refused:
            register(s3, EntriesRefused(glue, codes))

    error = refused.value
    assert (error.table, error.transient, is_transient(error)) == (
        "songplays",
        transient,
        transient,
    )
    assert [e["ErrorDetail"]["ErrorCode"] for e in error.errors] == codes
    assert str(error) == (
        f"Glue refused 2 partitions of songplays ({', '.join(sorted(set(codes)))}): "
        f"['2018', '11']: {codes[0]} says no; ['2018', '12']: {codes[1]} says no"
    )
    # The task wraps it; the wrapper is retried exactly when the refusal is transient.
    try:
        raise CatalogNotUpdatedError("sparkify_lake", OUTPUT, error) from error
    except CatalogNotUpdatedError as wrapped:
        assert is_transient(wrapped) is transient


def test_partitions_an_earlier_attempt_added_are_not_an_error() -> None:
    class AlreadyThere(EntriesRefused):
        """moto adds the partitions, then answers as if an earlier attempt had added the
        first one already (moto itself refuses a duplicate batch as a whole)."""

        def batch_create_partition(self, **request: Any) -> dict[str, Any]:
            self._real.batch_create_partition(**request)
            first = request["PartitionInputList"][0]["Values"]
            detail = {"ErrorCode": "AlreadyExistsException", "ErrorMessage": "exists"}
            return {"Errors": [{"PartitionValues": first, "ErrorDetail": detail}]}

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        glue = boto3.client("glue", region_name=REGION)
        lake_with(s3, DAY_OBJECTS)

        added = register(s3, AlreadyThere(glue, []))

        assert added == {"songplays": 2, "users": 0, "songs": 2, "artists": 0, "time": 1}
        assert [values for values, _ in partitions(glue, "songplays")] == [
            ("2018", "11"),
            ("2018", "12"),
        ]


# Folder names as Spark writes them (checked with this project's pyspark): it escapes '/',
# ':', '%', '{' and a few more as %XX, and leaves '}', a space or 'é' alone.
@pytest.mark.parametrize(
    ("folder", "value"),
    [("AR%2F1", "AR/1"), ("a%3Ab%25c", "a:b%c"), ("c%7Bd} e", "c{d} e"), ("é", "é")],
)
def test_a_value_spark_escaped_in_its_folder_name_is_registered_as_the_value(
    folder: str, value: str
) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        glue = boto3.client("glue", region_name=REGION)
        lake_with(s3, [f"songs/year=0/artist_id={folder}/part-0.parquet"])

        first = register(s3, glue)
        second = register(s3, glue)  # the value Glue holds is the one found again

        assert (first["songs"], second["songs"]) == (1, 0)
        assert partitions(glue, "songs") == [
            (("0", value), f"{OUTPUT}/songs/year=0/artist_id={folder}/"),  # the real folder
        ]


def test_a_partition_whose_folder_is_gone_is_removed_on_the_next_registration() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        glue = boto3.client("glue", region_name=REGION)
        lake_with(s3, DAY_OBJECTS)
        register(s3, glue)

        s3.delete_object(
            Bucket="lake-bucket", Key="star/songplays/year=2018/month=12/part-0.parquet"
        )
        added = register(s3, glue)

        assert added == dict.fromkeys(TABLES, 0)
        assert partitions(glue, "songplays") == [
            (("2018", "11"), f"{OUTPUT}/songplays/year=2018/month=11/"),
        ]
        assert [values for values, _ in partitions(glue, "songs")] == [
            ("0", "AR1"),
            ("1999", "AR2"),
        ]
        assert [values for values, _ in partitions(glue, "time")] == [("2018", "11")]
