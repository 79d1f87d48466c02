"""Task: make the lake queryable from Athena and Redshift Spectrum after a run on EMR."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.ops import glue as glue_ops


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
    clients = aws_clients(aws_credentials_block)
    added = glue_ops.register_lake(clients.glue, clients.s3, database, output_uri)
    get_run_logger().info("Glue database %s: tables up to date, new partitions %s", database, added)
    return added
