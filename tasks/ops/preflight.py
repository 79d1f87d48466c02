"""Preflight of a run on AWS (Prefect-free): everything a cluster would need, checked first.

A typo found here costs a second; found on a cluster, it costs the cluster's start-up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from spark_etl.args import JobArgs, argv_problem, uri_problem
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE, day_log_parts
from tasks.ops import s3 as s3_ops

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

logger = logging.getLogger(__name__)


class PreflightError(ValueError):
    """Something would make the run fail: found before any cluster costs money."""


def check_job_arguments(job_args: JobArgs, code_bucket_uri: str | None) -> None:
    """Parse the job's command line exactly as the job will, and check the code folder.

    Raises:
        PreflightError: An argument the job would refuse, or an S3 URI that is not one.
    """
    if not code_bucket_uri:
        raise PreflightError("a run on AWS needs code_bucket_uri, an s3:// folder for the job code")
    # Not a job argument, yet it ends up in spark-submit's --py-files, which a comma splits:
    # the job's own location rule applies to it too.
    code_problem = uri_problem(code_bucket_uri)
    if code_problem:
        raise PreflightError(f"code_bucket_uri {code_problem}")
    for uri in (job_args.songs_uri, job_args.logs_uri, job_args.output_uri, code_bucket_uri):
        try:
            s3_ops.parse_s3_uri(uri)
        except s3_ops.InvalidS3UriError as err:
            raise PreflightError(str(err)) from err
    problem = argv_problem(job_args.to_argv())
    if problem:
        raise PreflightError(f"the job would refuse its arguments: {problem}")


def check_aws_run(s3: S3Client, sts: STSClient, job_args: JobArgs, code_bucket_uri: str) -> str:
    """Check credentials, inputs and writable outputs in AWS.

    Returns:
        The AWS account the credentials resolve to.

    Raises:
        PreflightError: A missing or empty input, or a missing day file of a daily run.
        botocore.exceptions.ClientError: AWS refused a check (AccessDenied, no bucket...).
    """
    account = str(sts.get_caller_identity()["Account"])
    songs, logs = s3_ops.parse_s3_uri(job_args.songs_uri), s3_ops.parse_s3_uri(job_args.logs_uri)
    for label, location in ((SONG_SOURCE, songs), (LOG_SOURCE, logs)):
        if not s3_ops.prefix_has_objects(s3, location):
            raise PreflightError(f"{label} location {location.uri} is missing or empty")
    if job_args.run_date is not None:
        day_file = logs.child(*day_log_parts(job_args.run_date))
        if not s3_ops.object_exists(s3, day_file):
            raise PreflightError(
                f"no log file for {job_args.run_date}: {day_file.uri} does not exist"
            )
    for uri in (job_args.output_uri, code_bucket_uri):
        s3_ops.check_writable(s3, s3_ops.parse_s3_uri(uri))
    return account
