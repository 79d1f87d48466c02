"""EMR Serverless operations (Prefect-free): the application, the job run, why it failed,
what it cost, and the clean-up.

Every function takes a boto3 EMR Serverless client first, so tests pass a moto client and
the tasks build the real one from the ``AwsCredentials`` block. The tags and the sweeper's
time limits are the EMR runner's (:mod:`tasks.ops.emr`): one project, one set of rules.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.ops import live_logs
from tasks.ops.cost import RunCost
from tasks.ops.failures import (
    FailureEvidence,
    JobFailedError,
    LogPatience,
    read_failure_evidence,
)
from tasks.ops.names import RunnerName
from tasks.ops.ownership import (
    FLOW_RUN_TAG_KEY,
    PROJECT_TAG_KEY,
    PROJECT_TAG_VALUE,
    flow_run_of,
    is_project_resource,
    ownership_tags,
)
from tasks.ops.polling import poll_states
from tasks.ops.s3 import S3Location, parse_s3_uri
from tasks.ops.states import (
    APPLICATION_LIVE,
    APPLICATION_TAKES_JOBS,
    JOB_RUN_CANCELLABLE,
    JOB_RUN_ENDED,
    ApplicationState,
    JobRunState,
)

if TYPE_CHECKING:
    from mypy_boto3_emr_serverless import EMRServerlessClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# Which attempt of the flow run started the job run: a retried task of the same attempt
# finds its job run, a new attempt of the flow run (after a failure) starts its own.
FLOW_ATTEMPT_TAG_KEY = "prefect-flow-run-attempt"
# How far back a retried start looks for the job run an earlier try may have started.
START_LOOKBACK = timedelta(days=2)


class EmrServerlessError(Exception):
    """Base of the EMR Serverless path's errors."""


class ForeignApplicationError(EmrServerlessError):
    """An application of the configured name exists, but is not this project's."""

    def __init__(self, name: str, application_ids: list[str]) -> None:
        self.name, self.application_ids = name, list(application_ids)
        super().__init__(
            f"EMR Serverless application {name!r} ({', '.join(application_ids)}) is not tagged "
            f"{PROJECT_TAG_KEY}={PROJECT_TAG_VALUE}: not using it, and not creating a second "
            "application of that name. Tag it, or set another application_name in the block."
        )


class ApplicationNotReadyError(EmrServerlessError):
    """The application did not become able to take job runs."""

    def __init__(self, application_id: str, state: str, waited_seconds: float) -> None:
        self.application_id, self.state = application_id, state
        super().__init__(
            f"EMR Serverless application {application_id} is {state} after "
            f"{waited_seconds:.0f} s: it cannot take the job run"
        )


class JobRunFailedError(EmrServerlessError, JobFailedError):
    """The job run ended as FAILED or CANCELLED (see JobFailedError)."""

    def __init__(
        self,
        application_id: str,
        job_run_id: str,
        state: str,
        state_details: str,
        log_folder: str,
        evidence: FailureEvidence,
    ) -> None:
        self.application_id, self.job_run_id, self.state = application_id, job_run_id, state
        self.state_details = state_details
        first_line = (
            f"EMR Serverless job run {job_run_id} on application {application_id} ended as "
            f"{state}: {state_details or state}"
        )
        JobFailedError.__init__(self, first_line, "Driver logs", log_folder, evidence)


class JobRunTimeoutError(EmrServerlessError):
    """The job run had not ended within the allowed wait."""

    def __init__(
        self, application_id: str, job_run_id: str, last_state: str, waited_seconds: float
    ) -> None:
        self.application_id, self.job_run_id = application_id, job_run_id
        self.last_state, self.waited_seconds = last_state, waited_seconds
        super().__init__(
            f"EMR Serverless job run {job_run_id} on application {application_id} still "
            f"{last_state} after {waited_seconds:.0f} s; raise max_wait_minutes if it needs longer"
        )


class JobRunCancelError(EmrServerlessError):
    """Cancelling the job run failed after the run had failed: both are said, with the ids."""

    def __init__(
        self,
        application_id: str,
        job_run_id: str,
        failure: BaseException,
        cancel: BaseException,
    ) -> None:
        self.application_id, self.job_run_id = application_id, job_run_id
        self.failure, self.cancel = failure, cancel
        super().__init__(
            f"{type(failure).__name__}: {failure}\n"
            f"Then cancelling EMR Serverless job run {job_run_id} on application "
            f"{application_id} failed ({type(cancel).__name__}: {cancel}); it may still be "
            "running: cancel it in the EMR console, or let the terminate_emr_clusters sweeper "
            "or its execution timeout end it."
        )


SPARK_CORES = (1, 2, 4, 8, 16)  # the vCPU sizes an EMR Serverless worker comes in
SPARK_MEMORY = re.compile(r"^[1-9][0-9]*g$")
EXECUTION_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


class ServerlessSpec(BaseModel):
    """What the application and the job run need; ``EmrServerlessConfig`` is this plus a name.

    The fields are written once, here: the block inherits them with their defaults and
    descriptions, which the Prefect UI shows on the block's form.
    """

    application_name: str = Field(
        default="sparkify-lake",
        min_length=1,
        max_length=64,
        description="Name of the EMR Serverless application; found by name and project tag, "
        "created when missing.",
    )
    release_label: str = Field(
        default="emr-spark-8.0.0",
        description="EMR release of a new application (emr-spark-8.0.0: Spark 4.0.2).",
    )
    execution_role_arn: str = Field(
        description="ARN of the IAM role the job runs as: reads the inputs and the code, "
        "writes the lake and the logs (docs/aws.md)."
    )
    log_uri: str = Field(description="s3:// folder the driver and executor logs go to.")
    max_vcpu: int = Field(
        default=16, ge=1, le=4000, description="Most vCPUs the application may use at once."
    )
    max_memory_gb: int = Field(
        default=64, ge=1, le=16000, description="Most memory (GB) the application may use at once."
    )
    auto_stop_idle_minutes: int = Field(
        default=15,
        ge=1,
        le=10080,
        description="Idle minutes after which the application stops (an idle one costs nothing).",
    )
    job_timeout_minutes: int = Field(
        default=120,
        ge=5,
        le=1440,
        description="executionTimeoutMinutes: EMR Serverless cancels a job run still running "
        "after this long, whatever happens to the flow.",
    )
    driver_cores: int = Field(default=2, description="vCPUs of the driver (1, 2, 4, 8 or 16).")
    driver_memory: str = Field(default="4g", description="Memory of the driver, e.g. 4g.")
    executor_cores: int = Field(default=2, description="vCPUs per executor (1, 2, 4, 8 or 16).")
    executor_memory: str = Field(default="4g", description="Memory per executor, e.g. 4g.")
    max_executors: int = Field(
        default=4, ge=1, le=1000, description="Most executors of the job (dynamic allocation)."
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="Extra spark-defaults of the job run."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags of the application and job runs."
    )
    price_per_vcpu_hour: float = Field(
        default=0.052624, ge=0, description="US$ per vCPU-hour, for the run's cost estimate."
    )
    price_per_memory_gb_hour: float = Field(
        default=0.0057785, ge=0, description="US$ per memory GB-hour, for the cost estimate."
    )
    price_per_storage_gb_hour: float = Field(
        default=0.000111,
        ge=0,
        description="US$ per GB-hour of storage beyond the 20 GB each worker has free.",
    )
    price_basis: str = Field(
        default="us-east-1 x86 list prices of 2026-11-26",
        description="Where the three prices come from (shown beside each estimate); say so "
        "when you change them.",
    )

    @field_validator("log_uri")
    @classmethod
    def _an_s3_folder(cls, value: str) -> str:
        parse_s3_uri(value)  # InvalidS3UriError is a ValueError: pydantic reports it
        return value.rstrip("/")

    @field_validator("execution_role_arn")
    @classmethod
    def _a_role_arn(cls, value: str) -> str:
        if not EXECUTION_ROLE_ARN.match(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<account>:role/…)")
        return value

    @field_validator("driver_cores", "executor_cores")
    @classmethod
    def _a_worker_size(cls, value: int) -> int:
        if value not in SPARK_CORES:
            raise ValueError(f"{value} vCPUs: EMR Serverless workers have {SPARK_CORES}")
        return value

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _gigabytes(cls, value: str) -> str:
        if not SPARK_MEMORY.match(value):
            raise ValueError(f"{value!r}: give the memory in whole gigabytes, such as 4g")
        return value

    @model_validator(mode="after")
    def _fits_in_the_application(self) -> ServerlessSpec:
        needed = self.driver_cores + self.executor_cores
        if needed > self.max_vcpu:
            raise ValueError(
                f"the driver and one executor need {needed} vCPUs, more than max_vcpu "
                f"{self.max_vcpu}: the job run would never get an executor"
            )
        return self

    def prices(self) -> ServerlessPrices:
        """The block's prices, for :func:`job_run_cost`."""
        return ServerlessPrices(
            self.price_per_vcpu_hour,
            self.price_per_memory_gb_hour,
            self.price_per_storage_gb_hour,
            self.price_basis,
        )


@dataclass(frozen=True)
class ServerlessPrices:
    """US$ per billed unit, and where the figures come from."""

    vcpu_hour: float
    memory_gb_hour: float
    storage_gb_hour: float
    basis: str


@dataclass(frozen=True)
class JobRunOwner:
    """Who owns a job run: the flow run, its attempt, and the Prefect API it lives in."""

    flow_run_id: str
    attempt: int
    prefect_api: str

    def client_token(self) -> str:
        """The idempotency token of ``start_job_run``: one per flow run and attempt.

        A token fixed for the flow run would replay a failed attempt's job run on the next
        attempt; one new per call would start a second job run on a re-sent request.
        """
        return f"{self.flow_run_id}-{self.attempt}"

    def tags(self, extra: dict[str, str]) -> dict[str, str]:
        """Tags that identify the project, the run and its API (retries, hooks, sweeper)."""
        return {
            **extra,
            **ownership_tags(self.flow_run_id, self.prefect_api),
            FLOW_ATTEMPT_TAG_KEY: str(self.attempt),
        }


def build_create_application_request(spec: ServerlessSpec, flow_run_id: str) -> dict[str, Any]:
    """The ``create_application`` request: Spark, auto-start and auto-stop on, capped.

    An idle application costs nothing once stopped, and auto-start lets the job run
    start it. The token is the flow run's: a re-sent request of the same run gets the
    same application back.
    """
    return {
        "name": spec.application_name,
        "releaseLabel": spec.release_label,
        "type": "SPARK",
        "clientToken": f"{spec.application_name}-{flow_run_id}"[:64],
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {
            "enabled": True,
            "idleTimeoutMinutes": spec.auto_stop_idle_minutes,
        },
        "maximumCapacity": {"cpu": f"{spec.max_vcpu} vCPU", "memory": f"{spec.max_memory_gb} GB"},
        "tags": {**spec.tags, PROJECT_TAG_KEY: PROJECT_TAG_VALUE},
    }


# EMR Serverless's own Iceberg (its Spark runtime, with the Glue catalog and S3FileIO), at
# the path AWS documents on its images: nothing is uploaded for it.
ICEBERG_RUNTIME_JAR = "/usr/share/aws/iceberg/lib/iceberg-spark3-runtime.jar"


def with_jar(submit_options: Sequence[str], jar: str) -> list[str]:
    """``submit_options`` with ``jar`` among their ``--jars``: spark-submit keeps only the
    last ``--jars`` it is given, so a second one would drop the first's jars."""
    options = list(submit_options)
    if "--jars" not in options:
        return ["--jars", jar, *options]
    listed = options.index("--jars") + 1
    options[listed] = f"{options[listed]},{jar}"
    return options


def build_start_job_run_request(
    spec: ServerlessSpec,
    application_id: str,
    name: str,
    entry_uri: str,
    package_uri: str,
    job_args: list[str],
    owner: JobRunOwner,
    submit_options: Sequence[str] = (),
    iceberg: bool = False,
) -> dict[str, Any]:
    """The ``start_job_run`` request: the uploaded job, its sizes, logs, timeout and tags;
    with ``iceberg``, EMR Serverless's own Iceberg on the job's class path."""
    if iceberg:
        submit_options = with_jar(submit_options, ICEBERG_RUNTIME_JAR)
    submit = [
        *submit_options,
        f"--py-files {package_uri}",
        f"--conf spark.driver.cores={spec.driver_cores}",
        f"--conf spark.driver.memory={spec.driver_memory}",
        f"--conf spark.executor.cores={spec.executor_cores}",
        f"--conf spark.executor.memory={spec.executor_memory}",
        f"--conf spark.dynamicAllocation.maxExecutors={spec.max_executors}",
    ]
    overrides: dict[str, Any] = {
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": f"{spec.log_uri}/"}}
    }
    if spec.spark_conf:
        overrides["applicationConfiguration"] = [
            {"classification": "spark-defaults", "properties": dict(spec.spark_conf)}
        ]
    return {
        "applicationId": application_id,
        "clientToken": owner.client_token(),
        "executionRoleArn": spec.execution_role_arn,
        "name": name,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": entry_uri,
                "entryPointArguments": list(job_args),
                "sparkSubmitParameters": " ".join(submit),
            }
        },
        "configurationOverrides": overrides,
        "executionTimeoutMinutes": spec.job_timeout_minutes,
        "tags": owner.tags(spec.tags),
    }


def find_application(serverless: EMRServerlessClient, name: str) -> dict[str, Any] | None:
    """This project's live application of that name (names are not unique in AWS).

    Raises:
        ForeignApplicationError: Only applications of that name without the project tag.
    """
    foreign = []
    for summary in _iter_application_summaries(serverless):
        if summary["name"] != name:
            continue
        application = _described_application(serverless, summary["id"])
        if is_project_application(application):
            return application
        foreign.append(summary["id"])
    if foreign:
        raise ForeignApplicationError(name, foreign)
    return None


def iter_project_applications(serverless: EMRServerlessClient) -> Iterator[dict[str, Any]]:
    """Describe every live application tagged ``project=sparkify-lake`` (paginated)."""
    for summary in _iter_application_summaries(serverless):
        application = _described_application(serverless, summary["id"])
        if is_project_application(application):
            yield application


def _iter_application_summaries(serverless: EMRServerlessClient) -> Iterator[dict[str, Any]]:
    pages = serverless.get_paginator("list_applications").paginate(
        states=[state.value for state in APPLICATION_LIVE]
    )
    for page in pages:
        yield from (dict(summary) for summary in page.get("applications", []))


def _described_application(serverless: EMRServerlessClient, application_id: str) -> dict[str, Any]:
    # list_applications leaves the tags out: get_application is how they are read.
    return dict(serverless.get_application(applicationId=application_id)["application"])


def is_project_application(application: dict[str, Any]) -> bool:
    """True when the application carries this project's tag."""
    return is_project_resource(application.get("tags", {}))


def ensure_application(
    serverless: EMRServerlessClient,
    serverless_single_attempt: EMRServerlessClient,
    request: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Find this project's application by name and tag, or create it.

    ``create_application`` goes through a client that never re-sends (a re-sent create
    whose token AWS no longer knows would make a second application), and every try of
    the task looks for the application first.

    Returns:
        The application (as ``get_application`` describes it) and whether this call
        created it.
    """
    existing = find_application(serverless, request["name"])
    if existing is not None:
        _warn_about_drift(existing, request)
        return existing, False
    created = serverless_single_attempt.create_application(**request)
    return _described_application(serverless, created["applicationId"]), True


def _warn_about_drift(application: dict[str, Any], request: dict[str, Any]) -> None:
    """Say which block settings the existing application does not have (never changed here:
    updating needs a stopped application, and another run may be using it)."""
    drift = {
        key: (application.get(key), request[key])
        for key in ("releaseLabel", "maximumCapacity", "autoStopConfiguration")
        if _differs(application.get(key), request[key])
    }
    if drift:
        changes = "; ".join(
            f"{key} is {have}, the block says {want}" for key, (have, want) in drift.items()
        )
        logger.warning(
            "EMR Serverless application %s does not match the block: %s. Update it in the "
            "console (stopped), or delete it and the next run creates it anew",
            application["applicationId"],
            changes,
        )


def _differs(have: Any, want: Any) -> bool:
    """True when ``have`` lacks ``want``: of a setting that is a dict, only the keys the
    block sets count, and "16 vCPU" is "16vCPU" (AWS may add keys and spell units its way)."""
    if isinstance(want, dict):
        have = have if isinstance(have, dict) else {}
        return any(_differs(have.get(key), value) for key, value in want.items())
    if isinstance(want, str) and isinstance(have, str):
        return have.replace(" ", "").lower() != want.replace(" ", "").lower()
    return bool(have != want)


def wait_for_application(
    serverless: EMRServerlessClient,
    application_id: str,
    delay: float,
    max_wait: float,
    on_state: Callable[[str, str], None] = lambda state, details: None,
) -> ApplicationState:
    """Poll ``get_application`` until the application can take a job run.

    Raises:
        ApplicationNotReadyError: Terminated, or still creating or stopping after
            ``max_wait`` seconds.
    """

    def status() -> tuple[str, str]:
        application = serverless.get_application(applicationId=application_id)["application"]
        return application["state"], application.get("stateDetails", "")

    state, started = "unknown", time.monotonic()
    for state, details in poll_states(status, delay, max_wait):
        on_state(state, details)
        if state in APPLICATION_TAKES_JOBS:
            return ApplicationState(state)
        if state == ApplicationState.TERMINATED:
            break
    raise ApplicationNotReadyError(application_id, state, time.monotonic() - started)


def start_job_run(
    serverless: EMRServerlessClient,
    serverless_single_attempt: EMRServerlessClient,
    request: dict[str, Any],
    now: datetime,
) -> tuple[str, bool]:
    """Start the job run, or find the one an earlier try of this flow-run attempt started.

    The client token makes a re-sent request harmless on AWS, but a lost answer must not
    start a second copy wherever the token is not honoured either: the request goes
    through a client that never re-sends, and every try first looks for the job run by
    its flow-run and attempt tags.

    Returns:
        The job run id and whether this call started it.
    """
    tags = request["tags"]
    existing = find_job_run(
        serverless,
        request["applicationId"],
        request["name"],
        tags[FLOW_RUN_TAG_KEY],
        tags[FLOW_ATTEMPT_TAG_KEY],
        now - START_LOOKBACK,
    )
    if existing is not None:
        logger.warning(
            "Found job run %s of flow run %s (attempt %s): not starting another",
            existing,
            tags[FLOW_RUN_TAG_KEY],
            tags[FLOW_ATTEMPT_TAG_KEY],
        )
        return existing, False
    return serverless_single_attempt.start_job_run(**request)["jobRunId"], True


def find_job_run(
    serverless: EMRServerlessClient,
    application_id: str,
    name: str,
    flow_run_id: str,
    attempt: str,
    created_after: datetime,
) -> str | None:
    """The job run of that name tagged with the flow run and attempt, if there is one.

    ``list_job_runs`` filters by time, not by tag: the runs of the right name are
    described for their tags.
    """
    for summary in _iter_job_run_summaries(serverless, application_id, created_after, None):
        if summary.get("name") != name:
            continue
        tags = describe_job_run(serverless, application_id, summary["id"]).get("tags", {})
        if tags.get(FLOW_RUN_TAG_KEY) == flow_run_id and tags.get(FLOW_ATTEMPT_TAG_KEY) == attempt:
            return str(summary["id"])
    return None


def _iter_job_run_summaries(
    serverless: EMRServerlessClient,
    application_id: str,
    created_after: datetime | None,
    states: frozenset[JobRunState] | None,
) -> Iterator[dict[str, Any]]:
    query: dict[str, Any] = {"applicationId": application_id}
    if created_after is not None:
        query["createdAtAfter"] = created_after
    if states is not None:
        query["states"] = sorted(state.value for state in states)
    try:
        for page in serverless.get_paginator("list_job_runs").paginate(**query):
            yield from (dict(summary) for summary in page.get("jobRuns", []))
    except ClientError as err:
        # moto answers ResourceNotFound for an application that has no job run yet; on AWS
        # it means the application is gone, and the next call says so in its own words.
        if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise


def describe_job_run(
    serverless: EMRServerlessClient, application_id: str, job_run_id: str
) -> dict[str, Any]:
    """The job run as ``get_job_run`` describes it (state, tags, billed resources)."""
    return dict(serverless.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"])


def wait_for_job_run(
    serverless: EMRServerlessClient,
    application_id: str,
    job_run_id: str,
    delay: float,
    max_wait: float,
    on_state: Callable[[str, str], None] = lambda state, details: None,
    on_poll: Callable[[], None] = lambda: None,
) -> tuple[JobRunState, dict[str, Any]]:
    """Poll ``get_job_run`` until the job run ends; ``on_state`` hears each new state once.

    ``on_poll`` runs after every look (the flow reads the growing driver logs there).

    Returns:
        The end state and the job run as last described (``stateDetails``, billing).

    Raises:
        JobRunTimeoutError: Still not ended after ``max_wait`` seconds.
    """
    last: dict[str, Any] = {}

    def status() -> tuple[str, str]:
        nonlocal last
        last = describe_job_run(serverless, application_id, job_run_id)
        return last["state"], last.get("stateDetails") or ""

    state, seen = "unknown", None
    for state, details in poll_states(status, delay, max_wait):
        if state != seen:
            on_state(state, details)
            seen = state
        on_poll()
        if state in JOB_RUN_ENDED:
            return JobRunState(state), last
    raise JobRunTimeoutError(application_id, job_run_id, state, max_wait)


def driver_log_folder(log_uri: str, application_id: str, job_run_id: str) -> S3Location:
    """Where EMR Serverless puts the driver's logs:
    ``{logUri}/applications/{app}/jobs/{run}/SPARK_DRIVER/``."""
    return parse_s3_uri(log_uri).child(
        "applications", application_id, "jobs", job_run_id, "SPARK_DRIVER"
    )


def driver_log_sources(log_uri: str, application_id: str, job_run_id: str) -> dict[str, S3Location]:
    """The driver's log objects by label, for :class:`tasks.ops.live_logs.GrowingLogs`."""
    return live_logs.driver_log_sources(driver_log_folder(log_uri, application_id, job_run_id))


def build_job_run_failed_error(
    s3: S3Client, job_run: dict[str, Any], log_uri: str, summary: S3Location, patience: LogPatience
) -> JobRunFailedError:
    """The error of a described job run that failed, with what its driver left behind."""
    application_id, job_run_id = job_run["applicationId"], job_run["jobRunId"]
    folder = driver_log_folder(log_uri, application_id, job_run_id)
    evidence = read_failure_evidence(s3, summary, folder, patience)
    details = job_run.get("stateDetails") or ""
    return JobRunFailedError(
        application_id, job_run_id, job_run["state"], details, f"{folder.uri}/", evidence
    )


def cancel_job_run(serverless: EMRServerlessClient, application_id: str, job_run_id: str) -> bool:
    """Cancel the job run unless it has ended or is being cancelled already.

    Returns:
        True when a cancel was sent.
    """
    if describe_job_run(serverless, application_id, job_run_id)["state"] not in JOB_RUN_CANCELLABLE:
        return False
    try:
        serverless.cancel_job_run(applicationId=application_id, jobRunId=job_run_id)
    except ClientError as err:
        # It may have ended between the look and the cancel: that is not a failure.
        ended = describe_job_run(serverless, application_id, job_run_id)["state"]
        if ended not in JOB_RUN_CANCELLABLE:
            logger.info("Job run %s ended as %s before the cancel: %s", job_run_id, ended, err)
            return False
        raise
    return True


def iter_active_job_runs(
    serverless: EMRServerlessClient, application: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Describe the application's job runs that are still to start or running."""
    application_id = application["applicationId"]
    for summary in _iter_job_run_summaries(serverless, application_id, None, JOB_RUN_CANCELLABLE):
        yield describe_job_run(serverless, application_id, summary["id"])


def find_flow_run_job_runs(
    serverless: EMRServerlessClient, flow_run_id: str
) -> list[dict[str, Any]]:
    """Active job runs tagged with this flow run, in every project application."""
    return [
        job_run
        for application in iter_project_applications(serverless)
        for job_run in iter_active_job_runs(serverless, application)
        if flow_run_id_of(job_run) == flow_run_id
    ]


def flow_run_id_of(job_run: dict[str, Any]) -> str | None:
    """The flow run that started the job run, from its tag."""
    return flow_run_of(job_run.get("tags", {}))


BILLED_UNITS: tuple[tuple[str, Literal["vCPUHour", "memoryGBHour", "storageGBHour"]], ...] = (
    ("vCPU-hours", "vCPUHour"),
    ("memory GB-hours", "memoryGBHour"),
    ("storage GB-hours", "storageGBHour"),
)


def job_run_cost(job_run: dict[str, Any], prices: ServerlessPrices) -> RunCost | None:
    """What the job run was billed for (``billedResourceUtilization``) and its price.

    The billed figures include each worker's one-minute minimum and only the storage
    beyond the 20 GB a worker has free. None when AWS gives no figures (yet).
    """
    billed = job_run.get("billedResourceUtilization")
    if not billed:
        return None
    usage = {name: float(billed.get(key, 0.0)) for name, key in BILLED_UNITS}
    estimated = (
        usage["vCPU-hours"] * prices.vcpu_hour
        + usage["memory GB-hours"] * prices.memory_gb_hour
        + usage["storage GB-hours"] * prices.storage_gb_hour
    )
    return RunCost(RunnerName.EMR_SERVERLESS, usage, estimated, prices.basis)
