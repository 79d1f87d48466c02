"""The EMR Serverless runner: its block, its tasks (application, start, wait, cost, cancel)
and :class:`EmrServerlessRunner`, which puts them in the flow's one sequence.

Thin wrappers: each loads the ``AwsCredentials`` block once inside the run, calls ops from
:mod:`tasks.ops.emr_serverless`, and logs what it saw. The code upload, the preflight and
the run summary are shared with EMR (:mod:`tasks.aws_job`): the job is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.blocks.core import Block

from spark_etl.args import ICEBERG, JobArgs
from tasks import aws_job
from tasks.aws import AWS_TASK_RETRIES, aws_clients, retry_transient_aws_errors
from tasks.aws_job import AwsRunner, UploadedJob, prefect_api_identity
from tasks.ops import emr_serverless as serverless_ops
from tasks.ops.cost import RunCost
from tasks.ops.failures import DEFAULT_LOG_PATIENCE, LogPatience
from tasks.ops.live_logs import GrowingLogs, LogFollower
from tasks.ops.states import JOB_RUN_FAILED
from tasks.run_log import ops_logs_in_run_log

# The block every Serverless run loads unless told otherwise.
DEFAULT_SERVERLESS_CONFIG_BLOCK = "sparkify-emr-serverless"


class EmrServerlessConfig(Block, serverless_ops.ServerlessSpec):
    """The EMR Serverless application and the job runs of sparkify-lake.

    No secret lives here. Create one in the UI or in Python once ``make blocks`` has
    registered the type (docs/aws.md); each field is described on the form.
    """

    _block_type_name = "EMR Serverless Config"
    _description = (
        "The EMR Serverless application and job runs of sparkify-lake: release, capacity, "
        "sizes, execution role, logs, prices."
    )

    def serverless_spec(self) -> serverless_ops.ServerlessSpec:
        """The Prefect-free description the EMR Serverless ops take."""
        return aws_job.spec_of(self, serverless_ops.ServerlessSpec)


def load_serverless_spec(serverless_config_block: str) -> serverless_ops.ServerlessSpec:
    """The spec of the named ``EmrServerlessConfig`` block."""
    block = cast(EmrServerlessConfig, EmrServerlessConfig.load(serverless_config_block))
    return block.serverless_spec()


@dataclass(frozen=True)
class StartedJobRun:
    """A job run of this flow run, and where its logs go."""

    application_id: str
    job_run_id: str
    log_uri: str


@task(
    name="Find or create the EMR Serverless application",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def ensure_emr_serverless_application(
    aws_credentials_block: str,
    serverless_config_block: str,
    flow_run_id: str,
    poll_seconds: float,
    max_wait_seconds: float,
) -> str:
    """Find the project's application by name and tag, or create it; wait until it can
    take a job run (a retry finds the application again).

    Returns:
        The application id.
    """
    logger = get_run_logger()
    spec = load_serverless_spec(serverless_config_block)
    clients = aws_clients(aws_credentials_block)
    request = serverless_ops.build_create_application_request(spec, flow_run_id)
    with ops_logs_in_run_log():
        application, created = serverless_ops.ensure_application(
            clients.emr_serverless, clients.emr_serverless_single_attempt, request
        )
        application_id = str(application["applicationId"])
        logger.info(
            "%s EMR Serverless application %s (%s, %s)",
            "Created" if created else "Found",
            application_id,
            spec.application_name,
            application.get("releaseLabel"),
        )
        serverless_ops.wait_for_application(
            clients.emr_serverless,
            application_id,
            poll_seconds,
            max_wait_seconds,
            on_state=_state_logger(f"Application {application_id}"),
        )
    region = clients.emr_serverless.meta.region_name
    create_link_artifact(
        key="emr-serverless-application",
        link=_console(region, f"serverless-applications/{application_id}"),
        link_text=f"EMR Serverless application {application_id}",
        description=f"The application {spec.application_name}; it stops after "
        f"{spec.auto_stop_idle_minutes} idle minutes.",
    )
    return application_id


def _console(region: str, fragment: str) -> str:
    return f"https://{region}.console.aws.amazon.com/emr/home?region={region}#/{fragment}"


def _state_logger(what: str) -> Callable[[str, str], None]:
    """Log each state it hears of, with its details."""
    logger = get_run_logger()

    def on_state(state: str, details: str) -> None:
        logger.info("%s is %s", what, " ".join(filter(None, [state, details])))

    return on_state


@task(
    name="Start the EMR Serverless job run",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def start_emr_serverless_job_run(
    aws_credentials_block: str,
    serverless_config_block: str,
    application_id: str,
    job: UploadedJob,
    job_args: JobArgs,
    flow_run_id: str,
    flow_attempt: int,
) -> StartedJobRun:
    """Start the job run tagged with the flow run and its attempt (a retry finds it again).

    ``flow_attempt`` is the flow run's own attempt (its run count): the task's retries
    share it, so they find the job run; a new attempt of the flow run starts a new one.
    """
    spec = load_serverless_spec(serverless_config_block)
    clients = aws_clients(aws_credentials_block)
    owner = serverless_ops.JobRunOwner(flow_run_id, flow_attempt, prefect_api_identity())
    request = serverless_ops.build_start_job_run_request(
        spec,
        application_id,
        f"songs_etl {job_args.run_id}",
        job.entry_uri,
        job.package_uri,
        job_args.to_argv(),
        owner,
        job.submit_options,
        iceberg=job_args.table_format == ICEBERG,
    )
    with ops_logs_in_run_log():
        job_run_id, started = serverless_ops.start_job_run(
            clients.emr_serverless,
            clients.emr_serverless_single_attempt,
            request,
            datetime.now(UTC),
        )
    get_run_logger().info(
        "%s job run %s on EMR Serverless application %s",
        "Started" if started else "Found",
        job_run_id,
        application_id,
    )
    _publish_job_run_links(
        clients.emr_serverless.meta.region_name, spec, application_id, job_run_id
    )
    return StartedJobRun(application_id, job_run_id, spec.log_uri)


def _publish_job_run_links(
    region: str, spec: serverless_ops.ServerlessSpec, application_id: str, job_run_id: str
) -> None:
    """The job run's page (its Spark UI and logs) and its driver log folder, as artifacts.

    Not GetDashboardForJobRun's URL: it is a signed, short-lived link, never to be stored.
    """
    create_link_artifact(
        key="emr-serverless-job-run",
        link=_console(region, f"serverless-applications/{application_id}/job-runs/{job_run_id}"),
        link_text=f"EMR Serverless job run {job_run_id}",
        description="The job run in the EMR console: its dashboard, Spark UI and logs.",
    )
    folder = serverless_ops.driver_log_folder(spec.log_uri, application_id, job_run_id)
    create_link_artifact(
        key="emr-serverless-logs",
        link=f"https://s3.console.aws.amazon.com/s3/buckets/{folder.bucket}"
        f"?region={region}&prefix={folder.key}/",
        link_text=f"Driver logs of job run {job_run_id}",
        description=f"{folder.uri}/ (stdout.gz: the job's own output; stderr.gz: Spark's)",
    )


@task(name="Wait for the EMR Serverless job run")
def wait_for_emr_serverless_job_run(
    aws_credentials_block: str,
    job_run: StartedJobRun,
    job_args: JobArgs,
    poll_seconds: float,
    max_wait_seconds: float,
    log_poll_seconds: float = 120.0,
    log_patience: LogPatience = DEFAULT_LOG_PATIENCE,
) -> None:
    """Log each new state and the driver's new log lines until the job run ends.

    A failed job run raises with the job's reason; like the EMR step's wait, not retried
    as a task, but each poll is.

    Raises:
        JobRunFailedError: FAILED or CANCELLED, with the job's own reason.
        JobRunTimeoutError: Still running after ``max_wait_seconds`` (the flow cancels it).
    """
    clients = aws_clients(aws_credentials_block)
    application_id, job_run_id = job_run.application_id, job_run.job_run_id
    sources = serverless_ops.driver_log_sources(job_run.log_uri, application_id, job_run_id)
    live = LogFollower(GrowingLogs(clients.s3, sources), get_run_logger().info, log_poll_seconds)
    state, described = aws_job.wait_following_logs(
        lambda: serverless_ops.wait_for_job_run(
            clients.emr_serverless,
            application_id,
            job_run_id,
            poll_seconds,
            max_wait_seconds,
            on_state=_state_logger(f"Job run {job_run_id}"),
            on_poll=live.tick,
        ),
        live,
    )
    if state in JOB_RUN_FAILED:
        summary = aws_job.summary_location(job_args.output_uri, job_args.run_id)
        with ops_logs_in_run_log():
            raise serverless_ops.build_job_run_failed_error(
                clients.s3, described, job_run.log_uri, summary, log_patience
            )


@task(name="Estimate the job run's cost")
def estimate_emr_serverless_cost(
    aws_credentials_block: str, serverless_config_block: str, job_run: StartedJobRun
) -> RunCost | None:
    """The job run's billed vCPU, memory and storage hours, priced with the block's prices.

    Never fails the run: its data is written by now. When the cost cannot be read (or AWS
    gives no billed figures), the report goes without it and a warning says why.
    """
    logger = get_run_logger()
    try:
        spec = load_serverless_spec(serverless_config_block)
        serverless = aws_clients(aws_credentials_block).emr_serverless
        described = serverless_ops.describe_job_run(
            serverless, job_run.application_id, job_run.job_run_id
        )
    except Exception as err:
        logger.warning("Could not read what job run %s cost: %s", job_run.job_run_id, err)
        return None
    prices = spec.prices()
    prices = replace(prices, basis=f"{prices.basis} (block {serverless_config_block})")
    cost = serverless_ops.job_run_cost(described, prices)
    if cost is None:
        logger.warning(
            "EMR Serverless gave no billed resources for job run %s: no cost estimate",
            job_run.job_run_id,
        )
    return cost


@task(
    name="Cancel the EMR Serverless job run",
    retry_condition_fn=retry_transient_aws_errors,
    **AWS_TASK_RETRIES,
)
def cancel_emr_serverless_job_run(
    aws_credentials_block: str, application_id: str, job_run_id: str
) -> bool:
    """Cancel the job run unless it has ended; returns whether a cancel was sent."""
    serverless = aws_clients(aws_credentials_block).emr_serverless
    with ops_logs_in_run_log():
        sent = serverless_ops.cancel_job_run(serverless, application_id, job_run_id)
    get_run_logger().info(
        "Cancelling job run %s on application %s" if sent else "Job run %s on %s has ended",
        job_run_id,
        application_id,
    )
    return sent


def cancel_job_run_after_failure(
    aws_credentials_block: str, job_run: StartedJobRun, failure: Exception
) -> None:
    """Cancel the job run the flow gives up on (a timeout, a polling error).

    A job run that failed or was cancelled by itself has ended: nothing to do. Any other
    job run is cancelled rather than left running: the next attempt would start a second
    copy writing the same lake.

    Raises:
        JobRunCancelError: Cancelling failed too; it names both failures and the job run.
    """
    if isinstance(failure, serverless_ops.JobRunFailedError):
        return
    try:
        cancel_emr_serverless_job_run(
            aws_credentials_block, job_run.application_id, job_run.job_run_id
        )
    except Exception as cancel:
        raise serverless_ops.JobRunCancelError(
            job_run.application_id, job_run.job_run_id, failure, cancel
        ) from failure


def cancel_job_run_now(aws_credentials_block: str, job_run: StartedJobRun) -> None:
    """Cancel the job run of an interrupted run without Prefect's task machinery.

    An interrupt may leave no room for a task run; a failure here is logged, not raised,
    so the interrupt itself still ends the run (the hooks and the sweeper come after).
    """
    try:
        serverless = aws_clients(aws_credentials_block).emr_serverless
        if serverless_ops.cancel_job_run(serverless, job_run.application_id, job_run.job_run_id):
            logging.getLogger(__name__).warning("Cancelled job run %s", job_run.job_run_id)
    except Exception as err:
        logging.getLogger(__name__).error(
            "Could not cancel EMR Serverless job run %s: %s", job_run.job_run_id, err
        )


def cancel_flow_run_job_runs(aws_credentials_block: str, flow_run_id: str) -> list[str]:
    """Backstop for crashed or cancelled runs: cancel every job run tagged with the flow run.

    Returns:
        The ids of the job runs a cancel was sent to.
    """
    serverless = aws_clients(aws_credentials_block).emr_serverless
    cancelled = []
    for job_run in serverless_ops.find_flow_run_job_runs(serverless, flow_run_id):
        application_id, job_run_id = job_run["applicationId"], job_run["jobRunId"]
        if serverless_ops.cancel_job_run(serverless, application_id, job_run_id):
            cancelled.append(str(job_run_id))
    return cancelled


class EmrServerlessRunner(AwsRunner[StartedJobRun]):
    """The job as a job run of the project's EMR Serverless application.

    The application outlives the run (it stops itself when idle); the job run is what a
    run starts, and what is cancelled when the flow gives up on it.
    """

    default_config_block: ClassVar[str] = DEFAULT_SERVERLESS_CONFIG_BLOCK

    def start(self, job_args: JobArgs) -> None:
        settings, job = self._settings, self._uploaded()
        application_id = ensure_emr_serverless_application(
            self._block,
            self._config_block,
            settings.flow_run_id,
            settings.poll_seconds,
            settings.max_wait_seconds,
        )
        try:
            self._work = start_emr_serverless_job_run(
                self._block,
                self._config_block,
                application_id,
                job,
                job_args,
                settings.flow_run_id,
                settings.flow_attempt,
            )
        except Exception:  # its lost last answer may hide a started job run
            aws_job.end_work_after_failed_start(
                cancel_flow_run_job_runs, self._block, settings.flow_run_id, "the execution timeout"
            )
            raise

    def wait(self, job_args: JobArgs) -> None:
        poll, max_wait = self._settings.poll_seconds, self._settings.max_wait_seconds
        wait_for_emr_serverless_job_run(self._block, self._started(), job_args, poll, max_wait)

    def end(self) -> None:
        """Nothing to end: the job run has ended, and the application stops when idle."""

    def end_after_failure(self, failure: Exception) -> None:
        cancel_job_run_after_failure(self._block, self._started(), failure)

    def end_now(self) -> None:
        cancel_job_run_now(self._block, self._started())

    def read_cost(self) -> RunCost | None:
        return estimate_emr_serverless_cost(self._block, self._config_block, self._started())

    @staticmethod
    def end_work_of_flow_run(aws_credentials_block: str, flow_run_id: str) -> None:
        cancel_flow_run_job_runs(aws_credentials_block, flow_run_id)
