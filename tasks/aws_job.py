"""What the AWS runners share: the preflight, the job code's upload, the run summary.

The job is the same on EMR and on EMR Serverless, so these tasks are too; each runner's
own tasks live in :mod:`tasks.emr` and :mod:`tasks.emr_serverless`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from pydantic import BaseModel

from spark_etl import jars
from spark_etl import lineage as job_lineage
from spark_etl.args import JobArgs
from spark_etl.summary import RunSummary, summary_uri
from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.glue import prepare_glue_database
from tasks.ops import s3 as s3_ops
from tasks.ops.job_package import build_job_package
from tasks.ops.live_logs import LogFollower
from tasks.ops.ownership import MAX_TAG_VALUE
from tasks.ops.preflight import PreflightError, check_aws_run, check_job_arguments
from tasks.run_log import ops_logs_in_run_log
from tasks.runner import RunnerSettings

Waited = TypeVar("Waited")
Spec = TypeVar("Spec", bound=BaseModel)
Work = TypeVar("Work")  # what a runner starts: a cluster, a job run


@dataclass(frozen=True)
class UploadedJob:
    """Where the job code lies in S3, and what spark-submit adds to run it.

    Attributes:
        submit_options: spark-submit options before the job's own (the lineage listener's
            jar and settings, when lineage is on).
    """

    entry_uri: str
    package_uri: str
    submit_options: tuple[str, ...] = ()


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


@task(
    name="Upload the lineage listener",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def upload_lineage_listener(aws_credentials_block: str, code_bucket_uri: str) -> str:
    """Upload OpenLineage's Spark listener (the pinned jar) beside the job code, once.

    The cluster or job run reads it from S3: it needs no way out to Maven Central.

    Returns:
        The jar's s3:// URI (its key names its version and digest).
    """
    [jar] = jars.cached_paths(job_lineage.LOCK, "lineage on EMR")
    [pinned] = jars.read_lock(job_lineage.LOCK)
    location = s3_ops.parse_s3_uri(code_bucket_uri).child(
        f"{pinned.artifact}-{pinned.version}-{pinned.sha256[:16]}.jar"
    )
    s3 = aws_clients(aws_credentials_block).s3
    uploaded = s3_ops.upload_unless_present(s3, location, Path(jar).read_bytes())
    get_run_logger().info(
        "%s %s", "Uploaded" if uploaded else "Already there, not uploaded:", location.uri
    )
    return location.uri


def lineage_submit_options(
    aws_credentials_block: str, code_bucket_uri: str, job_environment: dict[str, str]
) -> tuple[str, ...]:
    """The listener's spark-submit options when lineage is on; none when it is off."""
    if not job_lineage.is_on(job_environment):
        return ()
    if job_environment.get("OPENLINEAGE_API_KEY"):
        get_run_logger().warning(
            "Lineage: the Spark job on AWS reports without the API key (a step's or job "
            "run's arguments are shown to anyone who may describe it); the flow's own "
            "events carry it"
        )
    jar_uri = upload_lineage_listener(aws_credentials_block, code_bucket_uri)
    return tuple(job_lineage.submit_options(job_environment, jar_uri))


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
    location = summary_location(output_uri, run_id)
    return RunSummary.from_json(s3_ops.read_text(aws_clients(aws_credentials_block).s3, location))


def spec_of(block: BaseModel, spec_type: type[Spec]) -> Spec:
    """The Prefect-free spec inside a config block (a Block that is also the spec)."""
    return spec_type.model_validate(block.model_dump(include=set(spec_type.model_fields)))


def summary_location(output_uri: str, run_id: str) -> s3_ops.S3Location:
    """Where the job writes its run summary: ``<output>/_runs/<run_id>.json``."""
    return s3_ops.parse_s3_uri(summary_uri(output_uri, run_id))


def wait_following_logs(wait: Callable[[], Waited], driver_logs: LogFollower) -> Waited:
    """``wait()``, with the ops' lines in the run's log; the driver's last log lines are
    read whatever the outcome (after a timeout they say where the job hangs)."""
    with ops_logs_in_run_log():
        try:
            return wait()
        finally:
            driver_logs.finish()


def end_work_after_failed_start(
    end_work_of_flow_run: Callable[[str, str], list[str]],
    aws_credentials_block: str,
    flow_run_id: str,
    backstop: str,
) -> None:
    """End what a failed start (RunJobFlow, StartJobRun) may have started after all.

    Its last attempt may have started a cluster or a job run before the answer was lost:
    the flow never learned the id, so it is found by the flow run's tag. A failure here
    is logged, not raised: the start's error stays the run's; the sweeper and
    ``backstop`` (the block's own timeout) end what is left.
    """
    logger = get_run_logger()
    try:
        ended = end_work_of_flow_run(aws_credentials_block, flow_run_id)
    except Exception as err:
        logger.error(
            "Could not look for what flow run %s started before its failed start (%s); the "
            "terminate_emr_clusters sweeper or %s ends it",
            flow_run_id,
            err,
            backstop,
        )
        return
    if ended:
        logger.warning("Ended %s: started by a request whose answer was lost", ", ".join(ended))


class AwsRunner(Generic[Work]):
    """What the AWS runners share: the same preflight, upload and run summary, and the
    work (a cluster, a job run) that :meth:`start` sets."""

    writes_to_s3: ClassVar[bool] = True
    default_config_block: ClassVar[str]

    def __init__(self, settings: RunnerSettings) -> None:
        self._settings = settings
        self._block = settings.aws_credentials_block
        self._config_block = settings.config_block or self.default_config_block
        self._job: UploadedJob | None = None
        self._work: Work | None = None

    def prepare(self, job_args: JobArgs) -> JobArgs:
        """Check everything the run needs, then upload the job code (and the listener)."""
        preflight_aws_run(self._block, job_args, self._settings.code_bucket_uri)
        if job_args.glue_database:  # the job commits its Iceberg tables into it
            prepare_glue_database(self._block, job_args.glue_database)
        code_bucket_uri = str(self._settings.code_bucket_uri)
        job = upload_spark_job(self._block, code_bucket_uri)
        options = lineage_submit_options(
            self._block, code_bucket_uri, self._settings.job_environment
        )
        self._job = replace(job, submit_options=options)
        return job_args

    def read_summary(self, job_args: JobArgs) -> RunSummary:
        return read_run_summary_from_s3(self._block, job_args.output_uri, job_args.run_id)

    def _started(self) -> Work:
        if self._work is None:
            raise RuntimeError(f"{type(self).__name__} was used before start()")
        return self._work

    def _uploaded(self) -> UploadedJob:
        if self._job is None:
            raise RuntimeError(f"{type(self).__name__} was started before prepare()")
        return self._job
