"""Task: make the lake queryable from Athena and Redshift Spectrum after a run on EMR."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from spark_etl.tables import TABLES
from tasks.aws import AWS_TASK_RETRIES, glue_client, retry_transient_aws_errors, s3_client
from tasks.ops import glue as glue_ops
from tasks.ops.s3 import parse_s3_uri


@task(
    name="Register the tables in Glue",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def register_tables_in_glue(
    aws_credentials_block: str, database: str, output_uri: str
) -> dict[str, Any]:
    """Create or update the five tables and add their new partitions (no crawler).

    Returns:
        New partitions added per table.
    """
    logger = get_run_logger()
    glue = glue_client(aws_credentials_block)
    s3 = s3_client(aws_credentials_block)
    output = parse_s3_uri(output_uri)
    glue_ops.ensure_database(glue, database)
    added = {}
    for name, spec in TABLES.items():
        location = output.child(name)
        glue_ops.upsert_table(glue, database, spec, location)
        values = glue_ops.partition_values_in_s3(s3, location, spec)
        added[name] = glue_ops.add_missing_partitions(glue, database, spec, location, values)
    logger.info("Glue database %s: tables up to date, new partitions %s", database, added)
    return added
