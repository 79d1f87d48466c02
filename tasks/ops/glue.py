"""Register the lake's tables in the AWS Glue Data Catalog (Prefect-free).

Athena and Redshift Spectrum see a table as soon as it and its partitions are in the
catalogue: no crawler, no guessing of types. Shapes come from :mod:`spark_etl.tables`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from spark_etl.tables import TABLES, TableSpec
from tasks.ops.retry import TRANSIENT_ENTRY_CODES
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
_DELETE_BATCH = 25  # batch_delete_partition takes at most 25


class GluePartitionError(Exception):
    """A batch partition call answered 200 with failed entries.

    ``transient`` is true when every entry failed for a reason a retry can fix.
    """

    def __init__(self, table: str, errors: list[dict[str, Any]]) -> None:
        codes = [error.get("ErrorDetail", {}).get("ErrorCode", "") for error in errors]
        self.table, self.errors = table, errors
        self.transient = bool(codes) and all(code in TRANSIENT_ENTRY_CODES for code in codes)
        sample = "; ".join(
            f"{error.get('PartitionValues')}: {error.get('ErrorDetail', {}).get('ErrorMessage')}"
            for error in errors[:3]
        )
        super().__init__(
            f"Glue refused {len(errors)} partitions of {table} ({', '.join(sorted(set(codes)))}): "
            f"{sample}"
        )


def register_lake(glue: GlueClient, s3: S3Client, database: str, output_uri: str) -> dict[str, int]:
    """Create or update the database, the five tables and their partitions.

    Partitions that appeared in S3 are added, and those whose folder is gone removed, so
    the catalogue shows what the lake holds; a re-run registers whatever an earlier,
    failed registration missed.

    Returns:
        Partitions added per table.

    Raises:
        GluePartitionError: Glue refused some partitions.
    """
    output = parse_s3_uri(output_uri)
    ensure_database(glue, database)
    added = {}
    for name, spec in TABLES.items():
        location = output.child(name)
        upsert_table(glue, database, spec, location)
        values = partition_values_in_s3(s3, location, spec)
        added[name] = add_missing_partitions(glue, database, spec, location, values)
        remove_vanished_partitions(glue, database, spec, values)
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
    # Spark escapes characters such as '/' or ':' in folder names (%2F); Glue wants values.
    return (
        [
            [unquote(part.split("=", 1)[1]) for part in prefix.rstrip("/").split("/")[-depth:]]
            for prefix in prefixes
        ]
        if depth
        else []
    )


def add_missing_partitions(
    glue: GlueClient, database: str, spec: TableSpec, location: S3Location, values: list[list[str]]
) -> int:
    """Add the partitions Glue does not know yet (``batch_create_partition``); return how many."""
    known = _known_partitions(glue, database, spec)
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
        response = glue.batch_create_partition(
            DatabaseName=database, TableName=spec.name, PartitionInputList=batch
        )
        _raise_entry_errors(spec.name, response.get("Errors", []))
    logger.info("%s: %d new partitions", spec.name, len(new))
    return len(new)


def remove_vanished_partitions(
    glue: GlueClient, database: str, spec: TableSpec, values: list[list[str]]
) -> int:
    """Remove the partitions whose folder is gone from S3 (``batch_delete_partition``)."""
    present = {tuple(v) for v in values}
    gone = sorted(
        known for known in _known_partitions(glue, database, spec) if known not in present
    )
    for start in range(0, len(gone), _DELETE_BATCH):
        response = glue.batch_delete_partition(
            DatabaseName=database,
            TableName=spec.name,
            PartitionsToDelete=[{"Values": list(v)} for v in gone[start : start + _DELETE_BATCH]],
        )
        _raise_entry_errors(spec.name, response.get("Errors", []))
    if gone:
        logger.info("%s: %d partitions removed, their data is gone", spec.name, len(gone))
    return len(gone)


def _known_partitions(glue: GlueClient, database: str, spec: TableSpec) -> set[tuple[str, ...]]:
    pages = glue.get_paginator("get_partitions").paginate(
        DatabaseName=database, TableName=spec.name
    )
    return {tuple(partition["Values"]) for page in pages for partition in page["Partitions"]}


def _raise_entry_errors(table: str, errors: list[Any]) -> None:
    """Fail on refused entries; one that already exists was added by an earlier attempt."""
    refused = [
        error
        for error in errors
        if error.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
    ]
    if refused:
        raise GluePartitionError(table, refused)


def _partition_uri(location: S3Location, spec: TableSpec, values: list[str]) -> str:
    """``s3://…/table/year=2018/month=11/`` for one partition: the folder Spark wrote."""
    folders = "/".join(
        f"{k}={_escape_path_name(v)}" for k, v in zip(spec.partition_by, values, strict=True)
    )
    return f"{location.uri}/{folders}/"


# What Spark escapes as %XX in a partition folder name (ExternalCatalogUtils.escapePathName):
# control characters, DEL and these; a space, '}' or 'é' stay as they are.
_ESCAPED_IN_FOLDER_NAMES = frozenset(chr(code) for code in range(1, 32)) | frozenset(
    "\"#%'*/:=?\\\x7f{[]^"
)


def _escape_path_name(value: str) -> str:
    """The folder name Spark gives a partition value (the reverse of the unquote above)."""
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED_IN_FOLDER_NAMES else c for c in value)
