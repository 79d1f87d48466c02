"""moto-backed AWS for the EMR Serverless tests: the EMR tests' buckets and tiny lake,
the blocks (saved once: they live in the session's Prefect API), and job-run states
scripted on moto's own objects.

What moto cannot do, and how it is scripted on top (each said where it is done):

- it ends every job run as SUCCESS the moment it starts, bills nothing and writes no
  log: :class:`ScriptedJobRuns` walks each job run through a script of states on moto's
  own job-run object, one state per GetJobRun, and plants what the job and EMR
  Serverless would write (run summary, driver log, billed resources);
- it knows only ``emr-X.Y.0`` release labels: ``emr-spark-8.0.0``, a real EMR Serverless
  release, is let through (:func:`accept_spark_8_release_labels`);
- it ignores client tokens: the tests of a lost answer rely on the flow's own look-up;
- it dates every job run at midnight (the sweeper tests set the creation time), and
  answers ListJobRuns on an application without job runs with ResourceNotFound (the
  ops take that as no job run).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.models import botocore_stubber
from moto.core.utils import utcnow
from moto.emrserverless.models import EMRServerlessBackend, emrserverless_backends

from flows.songs_etl import songs_etl
from tasks.aws import BOTO_CONFIG, AwsClients, aws_clients
from tasks.aws_job import prefect_api_identity
from tasks.emr_serverless import EmrServerlessConfig, load_serverless_spec
from tasks.ops.emr_serverless import (
    JobRunOwner,
    build_start_job_run_request,
)
from tests.emr.conftest import (
    CODE,
    CODE_URI,
    LOGS,
    LOGS_URI,
    OUT,
    OUTPUT_URI,
    RAW,
    REGION,
    SONGS_URI,
    emr_blocks,  # noqa: F401 (a fixture: the EMR tests' blocks, 'test-aws' among them)
    plant_summary,
)

EXECUTION_ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/sparkify-serverless-job"
SERVERLESS_LOG_URI = f"s3://{LOGS}/serverless"
# What EMR Serverless bills a small daily run: moto bills nothing, so this is planted.
BILLED = {"vCPUHour": 1.5, "memoryGBHour": 6.0, "storageGBHour": 2.0}
FAILED_DETAILS = (
    "Job failed, please check complete logs in configured logging destination. ExitCode: 1."
)
DRIVER_STDOUT = ["spark_etl: reading s3://sparkify-raw/song_data", "spark_etl: writing songs"]


@pytest.fixture(scope="session")
def serverless_blocks(emr_blocks: None) -> None:  # noqa: F811 (the fixture imported above)
    """The blocks the flow loads, saved once: the EMR tests' 'test-aws' and this one."""
    EmrServerlessConfig(
        execution_role_arn=EXECUTION_ROLE, log_uri=SERVERLESS_LOG_URI, tags={"team": "data"}
    ).save("test-emr-serverless", overwrite=True)


@pytest.fixture
def serverless(serverless_blocks: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto for every AWS call, the EMR tests' buckets and tiny raw lake, and the blocks."""
    with moto_with_buckets(monkeypatch):
        s3 = boto3.client("s3", region_name=REGION)
        s3.put_object(Bucket=RAW, Key="song_data/A/B/C/TRABC.json", Body=b'{"song_id": "SO1"}')
        s3.put_object(Bucket=RAW, Key="log_data/2018/11/2018-11-01-events.json", Body=b"{}")
        yield


@pytest.fixture
def moto_serverless(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto and the buckets alone: for the ops, which need no Prefect."""
    with moto_with_buckets(monkeypatch):
        yield


@contextmanager
def moto_with_buckets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto (no real credentials in reach), the EMR tests' buckets, emr-spark-8.0.0."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (RAW, OUT, CODE, LOGS):
            s3.create_bucket(Bucket=bucket)
        accept_spark_8_release_labels(monkeypatch)
        yield


def accept_spark_8_release_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto refuses release labels other than ``emr-X.Y.0``: the application is created
    with one it knows, then given the label asked for, as EMR Serverless would keep it."""
    create = EMRServerlessBackend.create_application

    def create_application(self: EMRServerlessBackend, **request: Any) -> Any:
        label = request["release_label"]
        application = create(self, **{**request, "release_label": "emr-7.0.0"})
        application.release_label = label
        return application

    monkeypatch.setattr(EMRServerlessBackend, "create_application", create_application)


def backend() -> EMRServerlessBackend:
    """moto's EMR Serverless state, where tests set what moto cannot do itself."""
    return emrserverless_backends[DEFAULT_ACCOUNT_ID][REGION]


def moto_job_run(application_id: str, job_run_id: str) -> Any:
    """moto's own object for a job run."""
    [job_run] = [j for j in backend().job_runs[application_id] if j.id == job_run_id]
    return job_run


def serverless_client() -> Any:
    """An independent client: what AWS really holds, not what the flow believes."""
    return boto3.client("emr-serverless", region_name=REGION)


def job_runs_by_state() -> dict[str, str]:
    """Every job run of every application, by id."""
    client = serverless_client()
    return {
        job_run["id"]: job_run["state"]
        for application in client.list_applications()["applications"]
        for job_run in client.list_job_runs(applicationId=application["id"]).get("jobRuns", [])
    }


class ScriptedJobRuns:
    """Walks each job run through its script, one state per GetJobRun, on moto's object.

    The n-th job run started gets the n-th script (the last one when there are fewer);
    the last state of a script stays. A job run that was cancelled (moto's own
    CancelJobRun) keeps its state. On SUCCESS the run summary the job writes is planted,
    and the billed resources; on RUNNING the driver's first stdout lines; on FAILED the
    driver's stdout.gz with its traceback and, given ``job_error``, the failed summary.
    """

    def __init__(
        self,
        *scripts: list[str],
        job_error: str | None = None,
        billed: dict[str, float] | None = None,
    ) -> None:
        self._scripts = [list(script) for script in scripts]
        self._job_error, self._billed = job_error, dict(billed or BILLED)
        self._walking: dict[str, list[str]] = {}
        self._stopped = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> ScriptedJobRuns:
        get_job_run = EMRServerlessBackend.get_job_run

        def scripted(backend: EMRServerlessBackend, application_id: str, job_run_id: str) -> Any:
            job_run = get_job_run(backend, application_id, job_run_id)
            self._advance(job_run)
            return job_run

        monkeypatch.setattr(EMRServerlessBackend, "get_job_run", scripted)
        return self

    def stop(self) -> None:
        """Script no job run started from now on (the test's own stay as it sets them)."""
        self._stopped = True

    def _advance(self, job_run: Any) -> None:
        if job_run.state in ("CANCELLING", "CANCELLED"):
            return
        if job_run.id not in self._walking:
            if self._stopped:
                return
            self._walking[job_run.id] = list(
                self._scripts[min(len(self._walking), len(self._scripts) - 1)]
            )
        script = self._walking[job_run.id]
        job_run.state = script.pop(0) if len(script) > 1 else script[0]
        if job_run.state == "RUNNING":
            plant_driver_log(job_run, DRIVER_STDOUT)
        elif job_run.state == "SUCCESS":
            plant_summary(job_arguments(job_run))
            job_run.billed_resource_utilization = dict(self._billed)
        elif job_run.state == "FAILED":
            job_run.state_details = FAILED_DETAILS
            plant_driver_log(job_run, [*DRIVER_STDOUT, *DRIVER_TRACEBACK])
            if self._job_error is not None:
                plant_summary(job_arguments(job_run), error=self._job_error)


DRIVER_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "spark_submit_entry.py", line 9, in <module>',
    "spark_etl.errors.RejectLimitError: 120 of 1000 input records rejected (12.00%)",
]


def job_arguments(job_run: Any) -> list[str]:
    """The job run's spark-submit line as ``plant_summary`` reads it (after --py-files, the
    zip and the script come the job's arguments)."""
    submit = job_run.job_driver["sparkSubmit"]
    return ["--py-files", "package.zip", submit["entryPoint"], *submit["entryPointArguments"]]


def plant_driver_log(job_run: Any, lines: list[str]) -> None:
    """The driver's stdout.gz where EMR Serverless uploads it, with ``lines`` so far."""
    key = f"serverless/applications/{job_run.application_id}/jobs/{job_run.id}/SPARK_DRIVER"
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=LOGS,
        Key=f"{key}/stdout.gz",
        Body=gzip.compress("".join(f"{line}\n" for line in lines).encode()),
    )


def wrap_serverless_clients(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any]) -> None:
    """Make the EMR Serverless tasks' clients ``wrap(real client)``: moto plus a script."""
    import tasks.emr_serverless as serverless_tasks

    def clients(block: str) -> AwsClients:
        built = aws_clients(block)
        for name in ("emr_serverless", "emr_serverless_single_attempt"):
            built.__dict__[name] = wrap(getattr(built, name))  # cached_property's slot
        return built

    monkeypatch.setattr(serverless_tasks, "aws_clients", clients)


def lose_first_answer_to(monkeypatch: pytest.MonkeyPatch, operation: str) -> list[str]:
    """The first ``operation`` request reaches moto, which acts on it; then the answer is
    lost (a read timeout), as when the connection drops after AWS did the work.

    Done below the client, in botocore's before-send event, so botocore's own retries
    (the ones the single-attempt client turns off) would re-send it.

    Returns:
        The URLs of the requests whose answer was lost (one, once it struck).
    """
    build = AwsClients.client
    lost: list[str] = []

    def lose_the_first(request: Any, event_name: str, **kwargs: Any) -> Any:
        if lost:
            return None  # moto's own handler answers
        botocore_stubber(event_name=event_name, request=request, **kwargs)  # AWS acts
        lost.append(request.url)
        raise ReadTimeoutError(endpoint_url=request.url)

    def client(self: AwsClients, service: str, config: Any = BOTO_CONFIG) -> Any:
        built = build(self, service, config)
        if service == "emr-serverless":
            built.meta.events.register_first(
                f"before-send.emr-serverless.{operation}", lose_the_first
            )
        return built

    monkeypatch.setattr(AwsClients, "client", client)
    return lost


def run_serverless_flow(flow: Any = songs_etl, **overrides: Any) -> Any:
    parameters: dict[str, Any] = {
        "runner": "emr-serverless",
        "songs_uri": SONGS_URI,
        "logs_uri": LOGS_URI,
        "output_uri": OUTPUT_URI,
        "aws_credentials_block": "test-aws",
        "serverless_config_block": "test-emr-serverless",
        "code_bucket_uri": CODE_URI,
        "poll_seconds": 0.01,
        "max_wait_minutes": 0.05,
    }
    parameters.update(overrides)
    return flow(**parameters, return_state=True)


def the_job_run() -> dict[str, Any]:
    application = the_application()
    [job_run_id] = job_runs_by_state()
    described = serverless_client().get_job_run(
        applicationId=application["applicationId"], jobRunId=job_run_id
    )
    return dict(described["jobRun"])


def start_job_run(
    application_id: str,
    flow_run_id: str,
    prefect_api: str | None = None,
    tagged: bool = True,
    created: datetime | None = None,
) -> str:
    """A RUNNING job run tagged as the flow tags its own (of the tests' API unless told),
    created at ``created`` (UTC; now unless told)."""
    spec = load_serverless_spec("test-emr-serverless")
    owner = JobRunOwner(flow_run_id, 1, prefect_api or prefect_api_identity())
    request = build_start_job_run_request(
        spec, application_id, f"songs_etl {flow_run_id}", "s3://c/e.py", "s3://c/p.zip", [], owner
    )
    if not tagged:
        request["tags"] = {"project": "someone-else"}
    job_run_id: str = serverless_client().start_job_run(**request)["jobRunId"]
    job_run = moto_job_run(application_id, job_run_id)
    # moto ends a job run at once, and dates it at midnight: set what EMR Serverless would.
    job_run.state = "RUNNING"
    job_run.created_at = created.replace(tzinfo=None) if created else utcnow()  # as moto keeps it
    return job_run_id


def the_application() -> dict[str, Any]:
    [summary] = serverless_client().list_applications()["applications"]
    application = serverless_client().get_application(applicationId=summary["id"])
    return dict(application["application"])
