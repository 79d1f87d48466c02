"""Task: make the lake queryable from Athena and Redshift Spectrum after a run on EMR."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.ops import glue as glue_ops
from tasks.run_log import ops_logs_in_run_log


class CatalogNotUpdatedError(Exception):
    """The job's tables are written, but the Glue catalogue does not show them all yet."""

    def __init__(self, database: str, output_uri: str, cause: Exception) -> None:
        self.database, self.output_uri = database, output_uri
        super().__init__(
            f"The tables are written to {output_uri}, but Glue database {database} is not up "
            f"to date ({type(cause).__name__}: {cause}). Athena may miss new partitions until "
            "the next run, which registers everything missing."
        )


@task(
    name="Register the tables in Glue",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def register_tables_in_glue(
    aws_credentials_block: str, database: str, output_uri: str
) -> dict[str, Any]:
    """Create or update the five tables and their partitions (no crawler).

    Runs after the report: a failure here leaves the data written and says so. Retried
    when the cause is transient (the error is raised ``from`` it).

    Returns:
        New partitions added per table.

    Raises:
        CatalogNotUpdatedError: Glue refused or failed; the data is in place.
    """
    clients = aws_clients(aws_credentials_block)
    try:
        with ops_logs_in_run_log():
            added = glue_ops.register_lake(clients.glue, clients.s3, database, output_uri)
    except Exception as err:
        raise CatalogNotUpdatedError(database, output_uri, err) from err
    get_run_logger().info("Glue database %s: tables up to date, new partitions %s", database, added)
    return added


@task(
    name="Prepare the Glue database of the Iceberg tables",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def prepare_glue_database(aws_credentials_block: str, database: str) -> None:
    """Create the database the job's Iceberg tables belong to, unless it exists.

    Before the run: the job creates its tables in it on the first run and commits to them
    afterwards, so that nothing is left to register once it ends.
    """
    with ops_logs_in_run_log():
        glue_ops.ensure_database(aws_clients(aws_credentials_block).glue, database)
    get_run_logger().info("Glue database %s is ready for the Iceberg tables", database)
