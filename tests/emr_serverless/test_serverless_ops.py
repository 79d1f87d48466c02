"""The EMR Serverless ops and block: every block field in its place in the requests, the
block through the API, the look-ups before a create or a start, the failed job run's
error, the cost, the cancel. moto where it is faithful; its gaps are said where filled."""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError

from tasks.emr_serverless import EmrServerlessConfig
from tasks.ops.cost import RunCost
from tasks.ops.emr_serverless import (
    ApplicationNotReadyError,
    ForeignApplicationError,
    JobRunOwner,
    ServerlessPrices,
    ServerlessSpec,
    build_create_application_request,
    build_job_run_failed_error,
    build_start_job_run_request,
    cancel_job_run,
    ensure_application,
    job_run_cost,
    start_job_run,
    wait_for_application,
    with_jar,
)
from tasks.ops.failures import LogPatience
from tasks.ops.s3 import S3Location
from tests.emr.conftest import LOGS, OUT, REGION
from tests.emr_serverless.conftest import (
    EXECUTION_ROLE,
    SERVERLESS_LOG_URI,
    backend,
    moto_job_run,
    serverless_client,
)

# A distinct value for every field: a field mapped onto another one cannot pass unseen.
EVERY_FIELD: dict[str, Any] = {
    "application_name": "lake-nightly",
    "release_label": "emr-7.12.0",
    "execution_role_arn": "arn:aws:iam::210987654321:role/LakeJob",
    "log_uri": "s3://cfg-logs/serverless",
    "max_vcpu": 48,
    "max_memory_gb": 192,
    "auto_stop_idle_minutes": 7,
    "job_timeout_minutes": 90,
    "driver_cores": 4,
    "driver_memory": "8g",
    "executor_cores": 8,
    "executor_memory": "30g",
    "max_executors": 5,
    "spark_conf": {"spark.sql.shuffle.partitions": "64"},
    "tags": {"team": "data", "cost-center": "42"},
    "price_per_vcpu_hour": 0.042094,
    "price_per_memory_gb_hour": 0.004628,
    "price_per_storage_gb_hour": 0.000222,
    "price_basis": "eu-west-1 arm64 list prices of 2026-12-01",
}
OWNER = JobRunOwner("run-9", 2, "http://prefect.test/api")


def test_every_field_is_set_and_no_two_values_are_alike() -> None:
    # A field added to ServerlessSpec must be added here, or the mapping tests would skip it.
    assert set(EVERY_FIELD) == set(ServerlessSpec.model_fields)
    assert set(EVERY_FIELD) == set(EmrServerlessConfig.model_fields)
    defaults = ServerlessSpec(execution_role_arn=EXECUTION_ROLE, log_uri="s3://logs/x").model_dump()
    assert [name for name in EVERY_FIELD if EVERY_FIELD[name] == defaults[name]] == []
    values = [repr(value) for value in EVERY_FIELD.values()]
    assert len(set(values)) == len(values)


def test_every_block_field_lands_in_its_place_in_the_create_application_request() -> None:
    spec = EmrServerlessConfig(**EVERY_FIELD).serverless_spec()

    assert build_create_application_request(spec, "run-9") == {
        "name": "lake-nightly",
        "releaseLabel": "emr-7.12.0",
        "type": "SPARK",
        "clientToken": "lake-nightly-run-9",
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": 7},
        "maximumCapacity": {"cpu": "48 vCPU", "memory": "192 GB"},
        "tags": {"team": "data", "cost-center": "42", "project": "sparkify-lake"},
    }


def test_every_block_field_lands_in_its_place_in_the_start_job_run_request() -> None:
    spec = EmrServerlessConfig(**EVERY_FIELD).serverless_spec()

    request = build_start_job_run_request(
        spec, "app-1", "songs_etl r-1", "s3://c/entry.py", "s3://c/job.zip", ["--a", "1"], OWNER
    )

    assert request == {
        "applicationId": "app-1",
        "clientToken": "run-9-2",
        "executionRoleArn": "arn:aws:iam::210987654321:role/LakeJob",
        "name": "songs_etl r-1",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": "s3://c/entry.py",
                "entryPointArguments": ["--a", "1"],
                "sparkSubmitParameters": "--py-files s3://c/job.zip "
                "--conf spark.driver.cores=4 --conf spark.driver.memory=8g "
                "--conf spark.executor.cores=8 --conf spark.executor.memory=30g "
                "--conf spark.dynamicAllocation.maxExecutors=5",
            }
        },
        "configurationOverrides": {
            "monitoringConfiguration": {
                "s3MonitoringConfiguration": {"logUri": "s3://cfg-logs/serverless/"}
            },
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": {"spark.sql.shuffle.partitions": "64"},
                }
            ],
        },
        "executionTimeoutMinutes": 90,
        "tags": {
            "team": "data",
            "cost-center": "42",
            "project": "sparkify-lake",
            "prefect-flow-run-id": "run-9",
            "prefect-flow-run-attempt": "2",
            "prefect-api": "http://prefect.test/api",
        },
    }
    assert spec.prices() == ServerlessPrices(
        0.042094, 0.004628, 0.000222, "eu-west-1 arm64 list prices of 2026-12-01"
    )


def test_the_client_token_is_one_per_flow_run_and_attempt() -> None:
    tokens = {
        JobRunOwner(run, attempt, "api").client_token()
        for run in ("run-1", "run-2")
        for attempt in (1, 2)
    }
    assert tokens == {"run-1-1", "run-1-2", "run-2-1", "run-2-2"}


@pytest.mark.usefixtures("prefect_api")
def test_the_block_saves_and_loads_through_the_api_every_field_described() -> None:
    EmrServerlessConfig(**EVERY_FIELD).save("every-serverless-field", overwrite=True)

    with get_client(sync_client=True) as client:  # what the API stores, read on its own
        stored = client.read_block_document_by_name(
            name="every-serverless-field",
            block_type_slug=EmrServerlessConfig.get_block_type_slug(),
        )
    assert stored.data == EVERY_FIELD
    loaded = EmrServerlessConfig.load("every-serverless-field")
    assert loaded.serverless_spec() == ServerlessSpec(**EVERY_FIELD)
    assert stored.block_schema is not None
    properties = stored.block_schema.fields["properties"]
    assert set(properties) == set(EVERY_FIELD)
    assert [name for name, prop in properties.items() if not prop.get("description")] == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("log_uri", "s3a://logs/x", "is not an s3://bucket/prefix URI"),
        ("execution_role_arn", "LakeJob", "'LakeJob' is not an IAM role ARN"),
        ("driver_cores", 3, "3 vCPUs: EMR Serverless workers have (1, 2, 4, 8, 16)"),
        ("executor_memory", "4GB", "'4GB': give the memory in whole gigabytes, such as 4g"),
        ("job_timeout_minutes", 0, "greater than or equal to 5"),
        ("max_vcpu", 3, "the driver and one executor need 4 vCPUs, more than max_vcpu 3"),
    ],
)
def test_a_block_that_could_not_run_is_refused_before_any_money_is_spent(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServerlessSpec(
            **{"execution_role_arn": EXECUTION_ROLE, "log_uri": "s3://logs/x", field: value}
        )


def test_job_run_cost_prices_each_billed_unit() -> None:
    prices = ServerlessPrices(0.5, 0.25, 0.125, "test prices")
    billed = {"vCPUHour": 2.0, "memoryGBHour": 4.0, "storageGBHour": 8.0}

    cost = job_run_cost({"billedResourceUtilization": billed}, prices)

    assert cost == RunCost(
        "emr-serverless",
        {"vCPU-hours": 2.0, "memory GB-hours": 4.0, "storage GB-hours": 8.0},
        2.0 * 0.5 + 4.0 * 0.25 + 8.0 * 0.125,
        "test prices",
    )
    assert job_run_cost({"state": "SUCCESS"}, prices) is None  # AWS gave no figures


@pytest.fixture
def spec(moto_serverless: None) -> ServerlessSpec:
    return ServerlessSpec(execution_role_arn=EXECUTION_ROLE, log_uri=SERVERLESS_LOG_URI)


def test_the_application_is_created_once_then_found_and_a_foreign_one_never_used(
    spec: ServerlessSpec, caplog: pytest.LogCaptureFixture
) -> None:
    client = serverless_client()
    request = build_create_application_request(spec, "run-1")

    created, was_created = ensure_application(client, client, request)
    found, found_created = ensure_application(client, client, {**request, "clientToken": "t2"})

    assert (was_created, found_created) == (True, False)
    assert found["applicationId"] == created["applicationId"]
    assert len(client.list_applications()["applications"]) == 1
    caplog.clear()
    ensure_application(client, client, {**request, "releaseLabel": "emr-7.9.0"})
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"EMR Serverless application {created['applicationId']} does not match the block: "
        "releaseLabel is emr-spark-8.0.0, the block says emr-7.9.0. Update it in the console "
        "(stopped), or delete it and the next run creates it anew"
    ]
    foreign = client.create_application(name="shared", releaseLabel="emr-7.0.0", type="SPARK")
    with pytest.raises(ForeignApplicationError) as refused:
        ensure_application(client, client, {**request, "name": "shared"})
    assert str(refused.value) == (
        f"EMR Serverless application 'shared' ({foreign['applicationId']}) is not tagged "
        "project=sparkify-lake: not using it, and not creating a second application of that "
        "name. Tag it, or set another application_name in the block."
    )
    assert len(client.list_applications()["applications"]) == 2  # no second 'shared'


def test_a_retried_start_finds_its_job_run_and_a_new_attempt_starts_another(
    spec: ServerlessSpec,
) -> None:
    client = serverless_client()
    application, _ = ensure_application(client, client, build_create_application_request(spec, "r"))

    def request(attempt: int) -> dict[str, Any]:
        owner = JobRunOwner("run-1", attempt, "api")
        return build_start_job_run_request(
            spec,
            application["applicationId"],
            "songs_etl x",
            "s3://c/e.py",
            "s3://c/p.zip",
            [],
            owner,
        )

    now = datetime.now(UTC)
    first, started = start_job_run(client, client, request(1), now)
    again, started_again = start_job_run(client, client, request(1), now)
    second, started_second = start_job_run(client, client, request(2), now)

    assert (started, started_again, started_second) == (True, False, True)
    assert again == first and second != first
    listed = client.list_job_runs(applicationId=application["applicationId"])["jobRuns"]
    assert sorted(job_run["id"] for job_run in listed) == sorted([first, second])


def test_a_failed_job_run_without_summary_shows_the_driver_log_tails(
    spec: ServerlessSpec, caplog: pytest.LogCaptureFixture
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    driver = "serverless/applications/app-1/jobs/run-1/SPARK_DRIVER"
    stdout = [f"line {n}" for n in range(100)]
    s3.put_object(
        Bucket=LOGS, Key=f"{driver}/stdout.gz", Body=gzip.compress("\n".join(stdout).encode())
    )
    summary = S3Location(OUT, "star/_runs/r-1.json")  # the job died before writing it
    folder = f"s3://{LOGS}/{driver}/"

    failed = {
        "applicationId": "app-1",
        "jobRunId": "run-1",
        "state": "FAILED",
        "stateDetails": "OOM",
    }
    error = build_job_run_failed_error(s3, failed, SERVERLESS_LOG_URI, summary, LogPatience())

    assert (error.job_reason, error.log_tails) == (None, {"stdout.gz": "\n".join(stdout[60:])})
    assert str(error) == (
        "EMR Serverless job run run-1 on application app-1 ended as FAILED: OOM\n"
        f"Driver logs: {folder} (stdout.gz, stderr.gz)\n"
        "Last lines of stdout.gz:\n" + "\n".join(stdout[60:])
    )
    caplog.clear()
    cancelled = {"applicationId": "app-1", "jobRunId": "run-2", "state": "CANCELLED"}
    nothing = build_job_run_failed_error(
        s3, cancelled, SERVERLESS_LOG_URI, summary, LogPatience(attempts=2, delay_seconds=0)
    )
    assert str(nothing) == (
        "EMR Serverless job run run-2 on application app-1 ended as CANCELLED: CANCELLED\n"
        f"Driver logs: s3://{LOGS}/serverless/applications/app-1/jobs/run-2/SPARK_DRIVER/ "
        "(stdout.gz, stderr.gz)"
    )
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"No run summary at {summary.uri} and no driver log at "
        f"s3://{LOGS}/serverless/applications/app-1/jobs/run-2/SPARK_DRIVER/ yet; "
        "look there later"
    ]


def test_cancel_sends_a_cancel_only_to_a_job_run_that_has_not_ended(spec: ServerlessSpec) -> None:
    client = serverless_client()
    application, _ = ensure_application(client, client, build_create_application_request(spec, "r"))
    application_id = application["applicationId"]
    runs = {}
    for state in ("RUNNING", "SUCCESS", "CANCELLING"):
        request = build_start_job_run_request(
            spec, application_id, state, "s3://c/e.py", "s3://c/p.zip", [], OWNER
        )
        runs[state] = client.start_job_run(**request)["jobRunId"]
        moto_job_run(application_id, runs[state]).state = state  # moto ends them at once

    sent = {state: cancel_job_run(client, application_id, run) for state, run in runs.items()}

    assert sent == {"RUNNING": True, "SUCCESS": False, "CANCELLING": False}
    assert {
        state: client.get_job_run(applicationId=application_id, jobRunId=run)["jobRun"]["state"]
        for state, run in runs.items()
    } == {"RUNNING": "CANCELLED", "SUCCESS": "SUCCESS", "CANCELLING": "CANCELLING"}


def test_a_stopped_application_takes_a_job_run_and_a_terminated_one_is_an_error(
    spec: ServerlessSpec,
) -> None:
    client = serverless_client()
    application, _ = ensure_application(client, client, build_create_application_request(spec, "r"))
    application_id = application["applicationId"]
    moto_application = backend().applications[application_id]
    seen: list[str] = []

    moto_application.state = "STOPPED"  # auto-start starts it with the job run
    assert wait_for_application(client, application_id, 0, 1, lambda s, d: seen.append(s)) == (
        "STOPPED"
    )
    moto_application.state = "TERMINATED"
    with pytest.raises(ApplicationNotReadyError) as refused:
        wait_for_application(client, application_id, 0, 1, lambda s, d: seen.append(s))
    assert str(refused.value) == (
        f"EMR Serverless application {application_id} is TERMINATED after 0 s: it cannot "
        "take the job run"
    )
    assert seen == ["STOPPED", "TERMINATED"]  # a terminated one is not waited for


def test_a_jar_joins_the_jars_already_given_in_one_option() -> None:
    assert with_jar([], "/usr/x.jar") == ["--jars", "/usr/x.jar"]
    listener = ["--jars", "s3://code/ol.jar", "--conf", "spark.extraListeners=L"]
    assert with_jar(listener, "/usr/x.jar") == [
        "--jars",
        "s3://code/ol.jar,/usr/x.jar",
        "--conf",
        "spark.extraListeners=L",
    ]
