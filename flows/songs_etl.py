"""The ``songs_etl`` flow: build the sparkify star schema with the Spark job in ``spark_etl``.

``runner="local"`` (the default) runs the job on local Spark against a generated sample
lake; ``runner="emr"`` runs the same job on a transient EMR cluster, and
``runner="emr-serverless"`` as a job run of an EMR Serverless application. Run it as a script:
``python flows/songs_etl.py`` (no arguments: the local demo).
"""

# No `from __future__ import annotations` in this file: a served run (`make serve`) gets
# the flow function pickled by value into a fresh process, which keeps only the globals
# its code uses. Names used only in string annotations (Runner, date) would be gone, and
# Prefect could not validate the parameters of any run. Evaluated annotations travel.

import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # `python flows/songs_etl.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import Any

from prefect import flow
from prefect.runtime import flow_run as current_flow_run

from spark_etl.args import DEFAULT_MAX_REJECT_RATIO, JobArgs
from spark_etl.summary import RunSummary
from tasks.aws import DEFAULT_CREDENTIALS_BLOCK
from tasks.emr import (
    DEFAULT_CLUSTER_CONFIG_BLOCK,
    create_emr_cluster,
    end_cluster_after_failure,
    end_clusters_after_failed_create,
    preflight_emr_run,
    read_emr_run_cost,
    read_run_summary_from_s3,
    submit_spark_step,
    terminate_cluster_now,
    terminate_emr_cluster,
    terminate_flow_run_clusters,
    upload_spark_job,
    wait_for_emr_cluster,
    wait_for_spark_step,
)
from tasks.emr_serverless import (
    DEFAULT_SERVERLESS_CONFIG_BLOCK,
    StartedJobRun,
    cancel_flow_run_job_runs,
    cancel_job_run_after_failure,
    cancel_job_run_now,
    cancel_job_runs_after_failed_start,
    ensure_emr_serverless_application,
    estimate_emr_serverless_cost,
    start_emr_serverless_job_run,
    wait_for_emr_serverless_job_run,
)
from tasks.glue import register_tables_in_glue
from tasks.local_spark import ensure_sample_lake, run_spark_job_locally, validate_local_inputs
from tasks.ops.cost import RunCost
from tasks.output_lock import (
    DEFAULT_OUTPUT_WAIT_MINUTES,
    find_lease_to_take_over,
    hold_output,
)
from tasks.reporting import publish_run_report
from tasks.schedule import resolve_run_date

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_LAKE = "data/sample-lake"
DEFAULT_SONGS_URI = f"{SAMPLE_LAKE}/song_data"
DEFAULT_LOGS_URI = f"{SAMPLE_LAKE}/log_data"
DEFAULT_OUTPUT_URI = "data/star-schema"

Runner = Literal["local", "emr", "emr-serverless"]


def _terminate_emr_clusters_of_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Backstop hook: a cancelled or crashed EMR run leaves no cluster behind."""
    if flow_run.parameters.get("runner") == "emr":
        block = flow_run.parameters.get("aws_credentials_block", DEFAULT_CREDENTIALS_BLOCK)
        terminate_flow_run_clusters(block, str(flow_run.id))


def _cancel_emr_serverless_job_runs_of_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Backstop hook: a cancelled or crashed EMR Serverless run leaves no job run running."""
    if flow_run.parameters.get("runner") == "emr-serverless":
        block = flow_run.parameters.get("aws_credentials_block", DEFAULT_CREDENTIALS_BLOCK)
        cancel_flow_run_job_runs(block, str(flow_run.id))


@flow(
    name="songs_etl",
    log_prints=True,
    on_cancellation=[_terminate_emr_clusters_of_run, _cancel_emr_serverless_job_runs_of_run],
    on_crashed=[_terminate_emr_clusters_of_run, _cancel_emr_serverless_job_runs_of_run],
)
def songs_etl(
    runner: Runner = "local",
    songs_uri: str = DEFAULT_SONGS_URI,
    logs_uri: str = DEFAULT_LOGS_URI,
    output_uri: str = DEFAULT_OUTPUT_URI,
    run_date: date | None = None,
    process_previous_day: bool = False,
    max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO,
    aws_credentials_block: str = DEFAULT_CREDENTIALS_BLOCK,
    cluster_config_block: str = DEFAULT_CLUSTER_CONFIG_BLOCK,
    serverless_config_block: str = DEFAULT_SERVERLESS_CONFIG_BLOCK,
    code_bucket_uri: str | None = None,
    glue_database: str | None = "sparkify_lake",
    poll_seconds: float = 30.0,
    max_wait_minutes: float = 180.0,
    output_lock_wait_minutes: float = DEFAULT_OUTPUT_WAIT_MINUTES,
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
        aws_credentials_block: Name of the prefect-aws ``AwsCredentials`` block (EMR).
        cluster_config_block: Name of the ``EmrClusterConfig`` block (EMR).
        serverless_config_block: Name of the ``EmrServerlessConfig`` block (EMR Serverless).
        code_bucket_uri: s3:// folder that receives the job code (EMR).
        glue_database: Glue database in which the tables are registered after a run on
            EMR, for Athena and Redshift Spectrum; None to skip.
        poll_seconds: Delay between two looks at the cluster, the step or the job run.
        max_wait_minutes: Longest wait for the cluster, then for the step (EMR); for the
            application, then for the job run (EMR Serverless), which is then cancelled.
        output_lock_wait_minutes: Longest wait for another run on the same output to
            end; the run then fails, naming the output.

    Returns:
        The job's run summary (row counts, rejects, checks).
    """
    job_args = JobArgs(
        songs_uri=songs_uri,
        logs_uri=logs_uri,
        output_uri=output_uri,
        run_date=resolve_run_date(run_date, process_previous_day),
        max_reject_ratio=max_reject_ratio,
    )
    # One writer per output: a second run on this output waits here (docs/operations.md).
    with hold_output(output_uri, output_lock_wait_minutes, PROJECT_ROOT) as location:
        job_args = replace(
            job_args,
            flow_run_id=current_flow_run.id or "",
            take_over_from=find_lease_to_take_over(location, aws_credentials_block),
        )
        if runner == "local":
            summary = _run_locally(job_args)
            publish_run_report(summary)
            return summary
        if runner == "emr-serverless":
            summary, cost = _run_on_emr_serverless(
                job_args,
                aws_credentials_block,
                serverless_config_block,
                code_bucket_uri,
                poll_seconds,
                max_wait_minutes * 60,
            )
        else:
            summary, cost = _run_on_emr(
                job_args,
                aws_credentials_block,
                cluster_config_block,
                code_bucket_uri,
                poll_seconds,
                max_wait_minutes * 60,
            )
        publish_run_report(summary, cost)  # the data is written: say so before anything can fail
        if glue_database:
            register_tables_in_glue(aws_credentials_block, glue_database, output_uri)
        return summary


def _run_locally(job_args: JobArgs) -> RunSummary:
    """The local path: sample lake when the defaults are used, checks, then local Spark."""
    if (job_args.songs_uri, job_args.logs_uri) == (DEFAULT_SONGS_URI, DEFAULT_LOGS_URI):
        ensure_sample_lake(str(PROJECT_ROOT / SAMPLE_LAKE))
    local_args = job_args.with_locations(
        *(_local_path(uri) for uri in (job_args.songs_uri, job_args.logs_uri, job_args.output_uri))
    )
    validate_local_inputs(local_args)
    return run_spark_job_locally(local_args)


def _run_on_emr(
    job_args: JobArgs,
    aws_credentials_block: str,
    cluster_config_block: str,
    code_bucket_uri: str | None,
    poll_seconds: float,
    max_wait_seconds: float,
) -> tuple[RunSummary, RunCost | None]:
    """The EMR path: preflight, upload, cluster, step; the cluster ends with the step.

    Returns the job's summary and what the cluster cost, read once it has ended.
    """
    preflight_emr_run(aws_credentials_block, job_args, code_bucket_uri)
    job = upload_spark_job(aws_credentials_block, str(code_bucket_uri))
    flow_run_id = str(current_flow_run.id)
    try:
        cluster = create_emr_cluster(aws_credentials_block, cluster_config_block, flow_run_id)
    except Exception:  # its lost last answer may hide a started cluster
        end_clusters_after_failed_create(aws_credentials_block, flow_run_id)
        raise
    step_id = None
    try:
        wait_for_emr_cluster(
            aws_credentials_block, cluster.cluster_id, poll_seconds, max_wait_seconds
        )
        step_id = submit_spark_step(aws_credentials_block, cluster.cluster_id, job, job_args)
        wait_for_spark_step(
            aws_credentials_block, cluster, step_id, job_args, poll_seconds, max_wait_seconds
        )
    except Exception as failure:
        end_cluster_after_failure(aws_credentials_block, cluster, step_id, failure)
        raise
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): end it now; hooks are the backstop
        terminate_cluster_now(aws_credentials_block, cluster.cluster_id)
        raise
    terminate_emr_cluster(aws_credentials_block, cluster.cluster_id)
    summary = read_run_summary_from_s3(aws_credentials_block, job_args.output_uri, job_args.run_id)
    cost = read_emr_run_cost(
        aws_credentials_block, cluster_config_block, cluster.cluster_id, poll_seconds
    )
    return summary, cost


def _run_on_emr_serverless(
    job_args: JobArgs,
    aws_credentials_block: str,
    serverless_config_block: str,
    code_bucket_uri: str | None,
    poll_seconds: float,
    max_wait_seconds: float,
) -> tuple[RunSummary, RunCost | None]:
    """The EMR Serverless path: preflight, upload, application, job run; a job run the flow
    gives up on is cancelled.

    Returns the job's summary and what the job run was billed for.
    """
    preflight_emr_run(aws_credentials_block, job_args, code_bucket_uri)
    job = upload_spark_job(aws_credentials_block, str(code_bucket_uri))
    flow_run_id = str(current_flow_run.id)
    application_id = ensure_emr_serverless_application(
        aws_credentials_block, serverless_config_block, flow_run_id, poll_seconds, max_wait_seconds
    )
    try:
        job_run: StartedJobRun = start_emr_serverless_job_run(
            aws_credentials_block,
            serverless_config_block,
            application_id,
            job,
            job_args,
            flow_run_id,
            current_flow_run.run_count,
        )
    except Exception:  # its lost last answer may hide a started job run
        cancel_job_runs_after_failed_start(aws_credentials_block, flow_run_id)
        raise
    try:
        wait_for_emr_serverless_job_run(
            aws_credentials_block, job_run, job_args, poll_seconds, max_wait_seconds
        )
    except Exception as failure:
        cancel_job_run_after_failure(aws_credentials_block, job_run, failure)
        raise
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): cancel now; hooks are the backstop
        cancel_job_run_now(aws_credentials_block, job_run)
        raise
    cost = estimate_emr_serverless_cost(aws_credentials_block, serverless_config_block, job_run)
    summary = read_run_summary_from_s3(aws_credentials_block, job_args.output_uri, job_args.run_id)
    return summary, cost


def _local_path(uri: str) -> str:
    """Resolve a local URI against the project folder (so the flow runs from any folder)."""
    path = Path(uri.removeprefix("file://"))
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


if __name__ == "__main__":
    songs_etl()
