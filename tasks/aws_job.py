"""What the AWS runners share: the preflight, the job code's upload, the run summary.

The job is the same on EMR and on EMR Serverless, so these tasks are too; each runner's
own tasks live in :mod:`tasks.emr` and :mod:`tasks.emr_serverless`.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client

from spark_etl.args import JobArgs
from spark_etl.summary import RunSummary, summary_uri
from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.ops import s3 as s3_ops
from tasks.ops.job_package import build_job_package
from tasks.ops.ownership import MAX_TAG_VALUE
from tasks.ops.preflight import PreflightError, check_aws_run, check_job_arguments


@dataclass(frozen=True)
class UploadedJob:
    """Where the job code lies in S3."""

    entry_uri: str
    package_uri: str


@task(
    name="Preflight: arguments, inputs, output and credentials",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def preflight_aws_run(
    aws_credentials_block: str, job_args: JobArgs, code_bucket_uri: str | None
) -> None:
    """Check everything a cluster would need before one is started.

    The same for every AWS runner: the job, its inputs and its output are the same.
    Safe to retry (its marker objects are unique and removed), so a flaky STS or S3
    answer is tried again; a refusal is not.

    Raises:
        PreflightError: An argument the job would refuse, a malformed URI, a missing or
            empty input, an unwritable output, or credentials that do not resolve.
    """
    check_job_arguments(job_args, code_bucket_uri)
    clients = aws_clients(aws_credentials_block)
    try:
        account = check_aws_run(clients.s3, clients.sts, job_args, str(code_bucket_uri))
    except ClientError as err:
        raise PreflightError(f"AWS refused a preflight check: {err}") from err
    get_run_logger().info(
        "Preflight passed in account %s: inputs found, %s and %s writable",
        account,
        job_args.output_uri,
        code_bucket_uri,
    )


@task(
    name="Upload the Spark job", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def upload_spark_job(aws_credentials_block: str, code_bucket_uri: str) -> UploadedJob:
    """Upload the zipped ``spark_etl`` and its entry script under content-addressed keys."""
    logger = get_run_logger()
    package = build_job_package()
    folder = s3_ops.parse_s3_uri(code_bucket_uri)
    s3 = aws_clients(aws_credentials_block).s3
    uploads = (
        (folder.child(f"spark_etl-{package.digest}.zip"), package.zip_bytes),
        (folder.child(f"spark_submit_entry-{package.digest}.py"), package.entry_bytes),
    )
    for location, body in uploads:
        uploaded = s3_ops.upload_unless_present(s3, location, body)
        logger.info(
            "%s %s", "Uploaded" if uploaded else "Already there, not uploaded:", location.uri
        )
    return UploadedJob(entry_uri=uploads[1][0].uri, package_uri=uploads[0][0].uri)


def prefect_api_identity() -> str:
    """The Prefect API this run talks to: what a run starts is tagged with it (the sweeper)."""
    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")[:MAX_TAG_VALUE]


@task(
    name="Read the run summary", retry_condition_fn=retry_transient_aws_errors, **AWS_TASK_RETRIES
)
def read_run_summary_from_s3(
    aws_credentials_block: str, output_uri: str, run_id: str
) -> RunSummary:
    """The summary the job wrote to ``<output>/_runs/<run_id>.json``."""
    location = s3_ops.parse_s3_uri(summary_uri(output_uri, run_id))
    return RunSummary.from_json(s3_ops.read_text(aws_clients(aws_credentials_block).s3, location))
