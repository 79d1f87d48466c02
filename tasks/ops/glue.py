"""Register the lake's tables in the AWS Glue Data Catalog (Prefect-free).

Athena and Redshift Spectrum see a table as soon as it and its partitions are in the
catalogue: no crawler, no guessing of types. Shapes come from :mod:`spark_etl.tables`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from spark_etl.tables import TABLES, TableSpec
from tasks.ops.s3 import S3Location, parse_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_glue import GlueClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

_PARQUET = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {
        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    },
}
_BATCH = 100  # batch_create_partition takes at most 100 partitions per call


def register_lake(glue: GlueClient, s3: S3Client, database: str, output_uri: str) -> dict[str, int]:
    """Create or update the database, the five tables and their new partitions.

    Returns:
        New partitions added per table.
    """
    output = parse_s3_uri(output_uri)
    ensure_database(glue, database)
    added = {}
    for name, spec in TABLES.items():
        location = output.child(name)
        upsert_table(glue, database, spec, location)
        values = partition_values_in_s3(s3, location, spec)
        added[name] = add_missing_partitions(glue, database, spec, location, values)
    return added


def table_input(spec: TableSpec, location: S3Location) -> dict[str, Any]:
    """The ``TableInput`` of a parquet table partitioned like the registry says."""
    partition_columns = set(spec.partition_by)
    types = {column.name: column.data_type.simpleString() for column in spec.columns}
    return {
        "Name": spec.name,
        "Description": spec.grain,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": name, "Type": types[name]} for name in spec.partition_by],
        "StorageDescriptor": {
            "Columns": [
                {"Name": c.name, "Type": types[c.name]}
                for c in spec.columns
                if c.name not in partition_columns
            ],
            "Location": f"{location.uri}/",
            **_PARQUET,
        },
    }


def ensure_database(glue: GlueClient, database: str) -> None:
    """Create the database unless it exists (``create_database``)."""
    try:
        glue.create_database(
            DatabaseInput={"Name": database, "Description": "sparkify-lake star schema"}
        )
    except glue.exceptions.AlreadyExistsException:
        pass


def upsert_table(glue: GlueClient, database: str, spec: TableSpec, location: S3Location) -> None:
    """Create the table, or update it to the registry's shape (create_table/update_table)."""
    table = table_input(spec, location)
    try:
        glue.create_table(DatabaseName=database, TableInput=table)  # type: ignore[arg-type]
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=database, TableInput=table)  # type: ignore[arg-type]


def partition_values_in_s3(s3: S3Client, location: S3Location, spec: TableSpec) -> list[list[str]]:
    """The partition values present under the table's folder (``key=value/`` prefixes)."""
    prefixes = [f"{location.key}/"]
    for name in spec.partition_by:
        prefixes = [
            common["Prefix"]
            for prefix in prefixes
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=f"{prefix}{name}=", Delimiter="/"
            )
            for common in page.get("CommonPrefixes", [])
        ]
    depth = len(spec.partition_by)
    return (
        [
            [part.split("=", 1)[1] for part in prefix.rstrip("/").split("/")[-depth:]]
            for prefix in prefixes
        ]
        if depth
        else []
    )


def add_missing_partitions(
    glue: GlueClient, database: str, spec: TableSpec, location: S3Location, values: list[list[str]]
) -> int:
    """Add the partitions Glue does not know yet (``batch_create_partition``); return how many."""
    pages = glue.get_paginator("get_partitions").paginate(
        DatabaseName=database, TableName=spec.name
    )
    known = {tuple(partition["Values"]) for page in pages for partition in page["Partitions"]}
    new = [v for v in values if tuple(v) not in known]
    descriptor = table_input(spec, location)["StorageDescriptor"]
    for start in range(0, len(new), _BATCH):
        batch: list[Any] = [
            {
                "Values": v,
                "StorageDescriptor": {**descriptor, "Location": _partition_uri(location, spec, v)},
            }
            for v in new[start : start + _BATCH]
        ]
        glue.batch_create_partition(
            DatabaseName=database, TableName=spec.name, PartitionInputList=batch
        )
    logger.info("%s: %d new partitions", spec.name, len(new))
    return len(new)


def _partition_uri(location: S3Location, spec: TableSpec, values: list[str]) -> str:
    """``s3://…/table/year=2018/month=11/`` for one partition."""
    folders = "/".join(f"{k}={v}" for k, v in zip(spec.partition_by, values, strict=True))
    return f"{location.uri}/{folders}/"
