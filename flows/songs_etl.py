"""The ``songs_etl`` flow: build the sparkify star schema with the Spark job in ``spark_etl``.

``runner="local"`` (the default) runs the job on local Spark against a generated sample
lake; ``runner="emr"`` runs the same job on a transient EMR cluster, and
``runner="emr-serverless"`` as a job run of an EMR Serverless application. Run it as a script:
``python flows/songs_etl.py`` (no arguments: the local demo).
"""

# No `from __future__ import annotations` in this file: a served run (`make serve`) gets
# the flow function pickled by value into a fresh process, which keeps only the globals
# its code uses. Names used only in string annotations (RunnerName, date) would be gone, and
# Prefect could not validate the parameters of any run. Evaluated annotations travel.

import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

if __package__ in (None, ""):  # `python flows/songs_etl.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import Any, Literal

from prefect import flow
from prefect.runtime import flow_run as current_flow_run

from spark_etl.args import DEFAULT_MAX_REJECT_RATIO, ICEBERG, PARQUET, JobArgs
from spark_etl.summary import RunSummary
from tasks.aws import DEFAULT_CREDENTIALS_BLOCK
from tasks.emr import DEFAULT_CLUSTER_CONFIG_BLOCK, EmrRunner
from tasks.emr_serverless import DEFAULT_SERVERLESS_CONFIG_BLOCK, EmrServerlessRunner
from tasks.glue import register_tables_in_glue
from tasks.lineage import lineage_of_run
from tasks.local_spark import (
    DEFAULT_LOGS_URI,
    DEFAULT_OUTPUT_URI,
    DEFAULT_SONGS_URI,
    LocalRunner,
)
from tasks.ops.names import PROJECT_ROOT, RunnerName
from tasks.output_lock import (
    DEFAULT_OUTPUT_WAIT_MINUTES,
    find_lease_to_take_over,
    hold_output,
)
from tasks.reporting import publish_run_report
from tasks.runner import Runner, RunnerSettings, run_job
from tasks.schedule import resolve_run_date

# Every runner the flow can use: a new one is a module with a Runner class and a line here.
RUNNERS: dict[RunnerName, type[Runner]] = {
    RunnerName.LOCAL: LocalRunner,
    RunnerName.EMR: EmrRunner,
    RunnerName.EMR_SERVERLESS: EmrServerlessRunner,
}


def _end_work_of_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Backstop hook: a cancelled or crashed run leaves no cluster or job run behind."""
    runner = RUNNERS[RunnerName(flow_run.parameters.get("runner", RunnerName.LOCAL))]
    block = flow_run.parameters.get("aws_credentials_block", DEFAULT_CREDENTIALS_BLOCK)
    runner.end_work_of_flow_run(block, str(flow_run.id))


def refuse_unsupported_table_format(
    runner: RunnerName, table_format: str, glue_database: str | None
) -> None:
    """Stop before anything is paid for when the runner cannot write ``table_format``.

    On EMR and EMR Serverless the Iceberg tables are the Glue database's, through the
    Iceberg those services bundle.
    """
    if table_format == ICEBERG and RunnerName(runner) != RunnerName.LOCAL and not glue_database:
        raise ValueError(
            f"table_format={ICEBERG!r} on {runner} keeps the tables in the Glue Data Catalog: "
            "name its database in glue_database"
        )


@flow(
    name="songs_etl",
    log_prints=True,
    on_cancellation=[_end_work_of_run],
    on_crashed=[_end_work_of_run],
)
def songs_etl(
    runner: RunnerName = RunnerName.LOCAL,
    songs_uri: str = DEFAULT_SONGS_URI,
    logs_uri: str = DEFAULT_LOGS_URI,
    output_uri: str = DEFAULT_OUTPUT_URI,
    run_date: date | None = None,
    process_previous_day: bool = False,
    max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO,
    table_format: Literal["parquet", "iceberg"] = PARQUET,
    aws_credentials_block: str = DEFAULT_CREDENTIALS_BLOCK,
    cluster_config_block: str = DEFAULT_CLUSTER_CONFIG_BLOCK,
    serverless_config_block: str = DEFAULT_SERVERLESS_CONFIG_BLOCK,
    code_bucket_uri: str | None = None,
    glue_database: str | None = "sparkify_lake",
    poll_seconds: float = 30.0,
    max_wait_minutes: float = 180.0,
    output_lock_wait_minutes: float = DEFAULT_OUTPUT_WAIT_MINUTES,
    lineage_api_key_block: str | None = None,
) -> RunSummary:
    """Build the five tables: validate the inputs, run the Spark job, report what it did.

    Args:
        runner: ``local`` runs Spark on this machine; ``emr`` on a transient EMR cluster;
            ``emr-serverless`` as a job run of an EMR Serverless application.
        songs_uri: The song catalogue folder (``song_data``); local paths are relative to
            the project folder.
        logs_uri: The event log folder (``log_data``).
        output_uri: Where the tables are written.
        run_date: A day for an incremental daily run; None for a full run.
        process_previous_day: Without ``run_date``, process the UTC day before the run's
            scheduled start (the daily deployment sets this).
        max_reject_ratio: Share of rejected input records above which the run fails.
        table_format: ``parquet`` (folders of parquet files the job publishes) or
            ``iceberg`` (Apache Iceberg tables, one atomic commit per table and run; on
            EMR and EMR Serverless, tables of the Glue database ``glue_database``).
        aws_credentials_block: Name of the prefect-aws ``AwsCredentials`` block (EMR).
        cluster_config_block: Name of the ``EmrClusterConfig`` block (EMR).
        serverless_config_block: Name of the ``EmrServerlessConfig`` block (EMR Serverless).
        code_bucket_uri: s3:// folder that receives the job code (EMR).
        glue_database: Glue database in which the tables are registered after a run on
            EMR, for Athena and Redshift Spectrum; None to skip. In the Iceberg format on
            AWS, the database whose Iceberg tables the job commits to (required).
        poll_seconds: Delay between two looks at the cluster, the step or the job run.
        max_wait_minutes: Longest wait for the cluster, then for the step (EMR); for the
            application, then for the job run (EMR Serverless), which is then cancelled.
        output_lock_wait_minutes: Longest wait for another run on the same output to
            end; the run then fails, naming the output.
        lineage_api_key_block: Name of the Prefect ``Secret`` block that holds the
            OpenLineage backend's API key, when lineage is on (``OPENLINEAGE_URL``) and
            the backend needs a key.

    Returns:
        The job's run summary (row counts, rejects, checks).
    """
    refuse_unsupported_table_format(runner, table_format, glue_database)
    iceberg_in_glue = table_format == ICEBERG and RunnerName(runner) != RunnerName.LOCAL
    job_args = JobArgs(
        songs_uri=songs_uri,
        logs_uri=logs_uri,
        output_uri=output_uri,
        run_date=resolve_run_date(run_date, process_previous_day),
        max_reject_ratio=max_reject_ratio,
        table_format=table_format,
        glue_database=str(glue_database) if iceberg_in_glue else "",
    )
    # OpenLineage events for this run (START, then COMPLETE or FAIL) when lineage is on.
    with lineage_of_run(lineage_api_key_block, job_args, runner) as lineage:
        # One writer per output: a second run on this output waits here (docs/operations.md).
        with hold_output(output_uri, output_lock_wait_minutes, PROJECT_ROOT) as location:
            job_args = replace(
                job_args,
                flow_run_id=current_flow_run.id or "",
                take_over_from=find_lease_to_take_over(location, aws_credentials_block),
            )
            chosen = RUNNERS[runner](
                RunnerSettings(
                    aws_credentials_block=aws_credentials_block,
                    config_block={
                        RunnerName.EMR: cluster_config_block,
                        RunnerName.EMR_SERVERLESS: serverless_config_block,
                    }.get(runner),
                    code_bucket_uri=code_bucket_uri,
                    poll_seconds=poll_seconds,
                    max_wait_seconds=max_wait_minutes * 60,
                    flow_run_id=str(current_flow_run.id),
                    flow_attempt=current_flow_run.run_count,
                    job_environment=lineage.job_environment(),
                )
            )
            summary, cost = run_job(chosen, job_args)
            # The data is written: say so before anything can fail.
            publish_run_report(summary, cost)
            # Iceberg tables in Glue are the job's own: its commits keep them current.
            if glue_database and chosen.writes_to_s3 and not iceberg_in_glue:
                register_tables_in_glue(aws_credentials_block, glue_database, output_uri)
            lineage.completed(summary)
            return summary


if __name__ == "__main__":
    songs_etl()
