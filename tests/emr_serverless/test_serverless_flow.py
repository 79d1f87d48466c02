"""The songs_etl flow with runner="emr-serverless" against moto, checked through
independent clients. moto ends job runs at once: their states are scripted on moto's own
objects (conftest.ScriptedJobRuns)."""

from __future__ import annotations

import signal
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import boto3
import pytest
from prefect._internal import control_listener
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import TerminationSignal

import flows.songs_etl as songs_etl_module
import tasks.emr_serverless as serverless_tasks
from flows.songs_etl import songs_etl
from spark_etl import jars
from spark_etl import lineage as job_lineage
from spark_etl.args import ICEBERG, JobArgs, parse_args
from tasks.aws_job import prefect_api_identity
from tasks.ops.emr_serverless import (
    ICEBERG_RUNTIME_JAR,
    JobRunFailedError,
    JobRunOwner,
    JobRunTimeoutError,
    build_create_application_request,
    build_start_job_run_request,
    find_application,
)
from tasks.ops.job_package import build_job_package
from tests.emr.conftest import (
    CODE_URI,
    LOGS_URI,
    OUTPUT_URI,
    REGION,
    SONGS_URI,
    TABLE_COUNTS,
    throttling,
)
from tests.emr_serverless.conftest import (
    DRIVER_STDOUT,
    EXECUTION_ROLE,
    FAILED_DETAILS,
    SERVERLESS_LOG_URI,
    ScriptedJobRuns,
    job_runs_by_state,
    lose_first_answer_to,
    moto_job_run,
    run_serverless_flow,
    serverless_client,
    the_application,
    the_job_run,
    wrap_serverless_clients,
)
from tests.lineage_receiver import expected_listener, lineage_receiver
from tests.prefect_records import artifact_rows, flow_run_artifacts, flow_run_logs, task_run_counts

pytestmark = pytest.mark.usefixtures("serverless")


def run_log(state: Any) -> list[str]:
    return [log.message for log in flow_run_logs(state.state_details.flow_run_id)]


def test_happy_path_one_application_one_job_run_tagged_costed_reported_and_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ScriptedJobRuns(["PENDING", "SCHEDULED", "RUNNING", "RUNNING", "SUCCESS"]).install(monkeypatch)

    # Not the default ratio, so an argument lost on its way to the job run shows.
    state = run_serverless_flow(max_reject_ratio=0.05)

    assert state.is_completed(), state.message
    assert state.result().tables == TABLE_COUNTS
    flow_run_id = str(state.state_details.flow_run_id)
    application = the_application()
    application_id = application["applicationId"]
    assert {key: application[key] for key in APPLICATION_SETTINGS} == {
        "name": "sparkify-lake",
        "releaseLabel": "emr-spark-8.0.0",
        "type": "Spark",
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": 15},
        "maximumCapacity": {"cpu": "16 vCPU", "memory": "64 GB"},
        "tags": {"project": "sparkify-lake", "team": "data"},
    }
    job_run = the_job_run()
    job_run_id = job_run["jobRunId"]
    arguments = job_run["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    run_id = parse_args(arguments).run_id
    package = build_job_package()
    package_uri = f"{CODE_URI}/spark_etl-{package.digest}.zip"
    entry_uri = f"{CODE_URI}/spark_submit_entry-{package.digest}.py"
    expected_job_args = JobArgs(
        songs_uri=SONGS_URI,
        logs_uri=LOGS_URI,
        output_uri=OUTPUT_URI,
        run_date=None,
        max_reject_ratio=0.05,
        run_id=run_id,
        flow_run_id=flow_run_id,  # named in the job's lease
    )
    assert {key: job_run[key] for key in JOB_RUN_SETTINGS} == {
        "name": f"songs_etl {run_id}",
        "state": "SUCCESS",
        "executionRole": EXECUTION_ROLE,
        "executionTimeoutMinutes": 120,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": entry_uri,
                "entryPointArguments": expected_job_args.to_argv(),
                "sparkSubmitParameters": f"--py-files {package_uri} "
                "--conf spark.driver.cores=2 --conf spark.driver.memory=4g "
                "--conf spark.executor.cores=2 --conf spark.executor.memory=4g "
                "--conf spark.dynamicAllocation.maxExecutors=4",
            }
        },
        "configurationOverrides": {
            "monitoringConfiguration": {
                "s3MonitoringConfiguration": {"logUri": f"{SERVERLESS_LOG_URI}/"}
            }
        },
        "tags": {
            "project": "sparkify-lake",
            "prefect-flow-run-id": flow_run_id,
            "prefect-flow-run-attempt": "1",
            "prefect-api": prefect_api_identity(),
            "team": "data",
        },
    }
    # Read back as the job will read it: to_argv() alone could lose a flag on both sides.
    assert parse_args(arguments) == expected_job_args
    # moto keeps the token it ignores: the flow run and its first attempt.
    assert moto_job_run(application_id, job_run_id).client_token == f"{flow_run_id}-1"
    s3 = boto3.client("s3", region_name=REGION)
    for uri, body in ((package_uri, package.zip_bytes), (entry_uri, package.entry_bytes)):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    glue = boto3.client("glue", region_name=REGION)
    tables = glue.get_tables(DatabaseName="sparkify_lake")["TableList"]
    assert {table["Name"]: table["StorageDescriptor"]["Location"] for table in tables} == {
        name: f"{OUTPUT_URI}/{name}/" for name in TABLE_COUNTS
    }
    # 1.5 * 0.052624 + 6 * 0.0057785 + 2 * 0.000111 = $0.113829
    assert artifact_rows(state.state_details.flow_run_id, "songs-etl-run") == [
        {"kind": "table", "name": name, "rows": rows, "change": "new"}
        for name, rows in sorted(TABLE_COUNTS.items())  # the summary's order
    ] + [
        {
            "kind": "cost",
            "name": "emr-serverless: 1.5 vCPU-hours, 6 memory GB-hours, 2 storage GB-hours; "
            "estimated $0.11 (us-east-1 x86 list prices of 2026-11-26 "
            "(block test-emr-serverless))",
            "rows": "",
            "change": "",
        }
    ]
    console = f"https://{REGION}.console.aws.amazon.com/emr/home?region={REGION}#/"
    driver = f"serverless/applications/{application_id}/jobs/{job_run_id}/SPARK_DRIVER"
    assert link_artifacts(state) == {
        "emr-serverless-application": f"[EMR Serverless application {application_id}]"
        f"({console}serverless-applications/{application_id})",
        "emr-serverless-job-run": f"[EMR Serverless job run {job_run_id}]"
        f"({console}serverless-applications/{application_id}/job-runs/{job_run_id})",
        "emr-serverless-logs": f"[Driver logs of job run {job_run_id}]"
        "(https://s3.console.aws.amazon.com/s3/buckets/sparkify-logs"
        f"?region={REGION}&prefix={driver}/)",
    }
    logged = run_log(state)
    # One line per state change, not per poll; then the driver's stdout, each line once.
    assert [line for line in logged if line.startswith(f"Job run {job_run_id} is")] == [
        f"Job run {job_run_id} is {seen}" for seen in ("PENDING", "SCHEDULED", "RUNNING", "SUCCESS")
    ]
    assert [line for line in logged if line.startswith("stdout: ")] == [
        f"stdout: {line}" for line in DRIVER_STDOUT
    ]


APPLICATION_SETTINGS = (
    "name",
    "releaseLabel",
    "type",
    "autoStartConfiguration",
    "autoStopConfiguration",
    "maximumCapacity",
    "tags",
)
JOB_RUN_SETTINGS = (
    "name",
    "state",
    "executionRole",
    "executionTimeoutMinutes",
    "jobDriver",
    "configurationOverrides",
    "tags",
)


def link_artifacts(state: Any) -> dict[str, str]:
    """The run's link artifacts by key (their data is the markdown link)."""
    return {
        artifact.key: artifact.data
        for artifact in flow_run_artifacts(state.state_details.flow_run_id)
        if artifact.type == "markdown"
    }


def test_a_failed_job_run_fails_the_flow_with_the_jobs_reason_and_is_not_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = "RejectLimitError: 120 of 1000 input records rejected (12.00%), above 1.00%"
    ScriptedJobRuns(["RUNNING", "FAILED"], job_error=reason).install(monkeypatch)
    cancels = count_calls(monkeypatch, "cancel_job_run")

    state = run_serverless_flow()

    assert state.is_failed()
    with pytest.raises(JobRunFailedError) as failure:
        state.result()
    job_run = the_job_run()
    application_id, job_run_id = job_run["applicationId"], job_run["jobRunId"]
    folder = f"{SERVERLESS_LOG_URI}/applications/{application_id}/jobs/{job_run_id}/SPARK_DRIVER/"
    error = failure.value
    assert (error.application_id, error.job_run_id, error.state) == (
        application_id,
        job_run_id,
        "FAILED",
    )
    assert (error.state_details, error.job_reason, error.log_tails) == (FAILED_DETAILS, reason, {})
    # The job's own reason, so no log tail: the driver's lines are in the run's log anyway.
    assert str(error) == (
        f"EMR Serverless job run {job_run_id} on application {application_id} ended as "
        f"FAILED: {FAILED_DETAILS}\n"
        f"The job says: {reason}\n"
        f"Driver logs: {folder} (stdout.gz, stderr.gz)"
    )
    assert job_runs_by_state() == {job_run_id: "FAILED"}
    assert cancels == []  # it had ended: nothing to cancel
    assert [a.key for a in flow_run_artifacts(state.state_details.flow_run_id)].count(
        "songs-etl-run"
    ) == 0  # no report of a run that wrote nothing


def count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[dict[str, Any]]:
    """Record the tasks' calls of one EMR Serverless method (they still reach moto)."""
    calls: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            if name != method:
                return getattr(self._real, name)

            def recorded(**request: Any) -> Any:
                calls.append(request)
                return getattr(self._real, name)(**request)

            return recorded

    wrap_serverless_clients(monkeypatch, Recording)
    return calls


def test_a_job_run_that_keeps_running_times_out_and_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ScriptedJobRuns(["RUNNING"]).install(monkeypatch)

    state = run_serverless_flow(max_wait_minutes=0.001)

    assert state.is_failed()
    with pytest.raises(JobRunTimeoutError) as timeout:
        state.result()
    job_run = the_job_run()
    application_id, job_run_id = job_run["applicationId"], job_run["jobRunId"]
    error = timeout.value
    assert (error.application_id, error.job_run_id, error.last_state) == (
        application_id,
        job_run_id,
        "RUNNING",
    )
    assert str(error) == (
        f"EMR Serverless job run {job_run_id} on application {application_id} still RUNNING "
        "after 0 s; raise max_wait_minutes if it needs longer"
    )
    assert job_runs_by_state() == {job_run_id: "CANCELLED"}
    assert f"Cancelling job run {job_run_id} on application {application_id}" in run_log(state)


def test_throttling_is_tried_again_and_makes_one_application_and_one_job_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ScriptedJobRuns(["RUNNING", "SUCCESS"]).install(monkeypatch)
    calls = {"create_application": 0, "get_job_run": 0}
    # get_job_run calls 1 and 2 are the wait's first two polls, throttled and skipped
    # inside the wait (no task retry); call 3 sees RUNNING, call 4 SUCCESS.
    throttled_polls = {1, 2}

    class Throttled:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def create_application(self, **request: Any) -> Any:
            calls["create_application"] += 1
            created = self._real.create_application(**request)
            if calls["create_application"] == 1:  # created, but the answer is throttled away
                raise throttling("CreateApplication")
            return created

        def get_job_run(self, **request: Any) -> Any:
            calls["get_job_run"] += 1
            if calls["get_job_run"] in throttled_polls:
                raise throttling("GetJobRun")
            return self._real.get_job_run(**request)

    wrap_serverless_clients(monkeypatch, Throttled)
    retry_at_once(monkeypatch, "ensure_emr_serverless_application")

    state = run_serverless_flow()

    assert state.is_completed(), state.message
    # One create: the retry found the first try's application by its name and tag.
    assert calls == {"create_application": 1, "get_job_run": 5}  # 5th: the cost's
    assert len(serverless_client().list_applications()["applications"]) == 1
    assert list(job_runs_by_state().values()) == ["SUCCESS"]
    runs = task_run_counts(state.state_details.flow_run_id)
    assert (
        runs["Find or create the EMR Serverless application"],
        runs["Wait for the EMR Serverless job run"],
    ) == (2, 1)
    skipped = [line for line in run_log(state) if line.startswith("Could not read the state")]
    assert len(skipped) == 2


def retry_at_once(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The flow's task keeps its retries, without their wait."""
    fast = getattr(serverless_tasks, name).with_options(retry_delay_seconds=0)
    monkeypatch.setattr(serverless_tasks, name, fast)


def test_a_lost_answer_to_start_job_run_still_gives_one_job_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ScriptedJobRuns(["SUCCESS"]).install(monkeypatch)
    lost = lose_first_answer_to(monkeypatch, "StartJobRun")
    retry_at_once(monkeypatch, "start_emr_serverless_job_run")

    state = run_serverless_flow()

    assert state.is_completed(), state.message
    assert len(lost) == 1  # the first StartJobRun started a job run, its answer was lost
    [job_run_id] = job_runs_by_state()  # and the retry found it: one job run, not two
    flow_run_id = str(state.state_details.flow_run_id)
    assert task_run_counts(flow_run_id)["Start the EMR Serverless job run"] == 2
    assert (
        f"Found job run {job_run_id} of flow run {flow_run_id} (attempt 1): "
        "not starting another" in run_log(state)
    )


def test_a_new_attempt_of_the_flow_run_starts_a_new_job_run_not_the_failed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first job run fails; the flow run's second attempt must not get it back.
    ScriptedJobRuns(["FAILED"], ["RUNNING", "SUCCESS"], job_error="boom").install(monkeypatch)

    state = run_serverless_flow(songs_etl.with_options(retries=1, retry_delay_seconds=0))

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    application_id = the_application()["applicationId"]
    runs = serverless_client().list_job_runs(applicationId=application_id)["jobRuns"]
    tokens = {
        job_run["id"]: moto_job_run(application_id, job_run["id"]).client_token for job_run in runs
    }
    states = job_runs_by_state()
    assert sorted((states[run], token) for run, token in tokens.items()) == [
        ("FAILED", f"{flow_run_id}-1"),
        ("SUCCESS", f"{flow_run_id}-2"),
    ]


def test_a_cancelled_flow_run_cancels_its_job_run(monkeypatch: pytest.MonkeyPatch) -> None:
    ScriptedJobRuns(["RUNNING"]).install(monkeypatch)
    wait = serverless_tasks.wait_for_emr_serverless_job_run

    def cancelled_while_waiting(*args: Any, **kwargs: Any) -> None:
        aws_block, job_run, job_args, poll_seconds, _ = args
        wait(aws_block, job_run, job_args, poll_seconds, 0.05, return_state=True)  # RUNNING
        # What the runner does when the run is cancelled in the UI: it marks the intent,
        # then SIGTERM, which Prefect turns into TerminationSignal inside the flow.
        control_listener._set_intent("cancel")
        raise TerminationSignal(signal.SIGTERM)

    monkeypatch.setattr(
        serverless_tasks, "wait_for_emr_serverless_job_run", cancelled_while_waiting
    )
    try:
        with pytest.raises(TerminationSignal):
            run_serverless_flow(max_wait_minutes=1.0)
    finally:
        control_listener.clear_intent()

    [(job_run_id, job_run_state)] = job_runs_by_state().items()
    assert job_run_state == "CANCELLED"
    flow_run_id = moto_tag(job_run_id, "prefect-flow-run-id")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(flow_run_id)).state.type == StateType.CANCELLED
    logged = [log.message for log in flow_run_logs(UUID(flow_run_id))]
    hook = "_end_work_of_run"
    assert f"Running hook '{hook}' in response to entering state 'Cancelling'" in logged
    assert f"Hook '{hook}' finished running successfully" in logged


def moto_tag(job_run_id: str, key: str) -> str:
    [application] = serverless_client().list_applications()["applications"]
    tags = moto_job_run(application["id"], job_run_id).tags
    return str(tags[key])


def test_the_hook_cancels_the_job_runs_of_its_flow_run_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = start_running_job_run("run-ours"), start_running_job_run("run-theirs")

    def flow_run(runner: str) -> SimpleNamespace:
        parameters = {"runner": runner, "aws_credentials_block": "test-aws"}
        return SimpleNamespace(id="run-ours", parameters=parameters)

    songs_etl_module._end_work_of_run(None, flow_run("emr"), None)  # not its runner
    assert job_runs_by_state() == {ours: "RUNNING", theirs: "RUNNING"}
    songs_etl_module._end_work_of_run(None, flow_run("emr-serverless"), None)

    assert job_runs_by_state() == {ours: "CANCELLED", theirs: "RUNNING"}


def start_running_job_run(flow_run_id: str) -> str:
    """A job run of this API's flow run, tagged as the flow tags its own, RUNNING."""
    application_id = ensure_test_application()
    spec = serverless_tasks.load_serverless_spec("test-emr-serverless")
    owner = JobRunOwner(flow_run_id, 1, prefect_api_identity())
    request = build_start_job_run_request(
        spec, application_id, f"songs_etl {flow_run_id}", "s3://c/e.py", "s3://c/p.zip", [], owner
    )
    job_run_id: str = serverless_client().start_job_run(**request)["jobRunId"]
    moto_job_run(application_id, job_run_id).state = "RUNNING"  # moto ends it at once
    return job_run_id


def ensure_test_application() -> str:
    """The project's application, created as the flow creates it (once)."""
    spec = serverless_tasks.load_serverless_spec("test-emr-serverless")
    found = find_application(serverless_client(), spec.application_name)
    if found is not None:
        return str(found["applicationId"])
    request = build_create_application_request(spec, "setup")
    return str(serverless_client().create_application(**request)["applicationId"])


def test_with_lineage_on_the_job_run_runs_the_listener_from_the_code_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ScriptedJobRuns(["RUNNING", "SUCCESS"]).install(monkeypatch)

    with lineage_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        state = run_serverless_flow()
        flow_events = receiver.of_job("songs_etl")

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    assert [e["eventType"] for e in flow_events] == ["START", "COMPLETE"]
    jar_uri, listener = expected_listener(CODE_URI, receiver.url, flow_run_id)
    parameters = the_job_run()["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"]
    package_uri = f"{CODE_URI}/spark_etl-{build_job_package().digest}.zip"
    assert parameters.startswith(" ".join([*listener, f"--py-files {package_uri} "]))
    bucket, key = jar_uri.removeprefix("s3://").split("/", 1)
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == jars.read_lock(job_lineage.LOCK)[0].size


def test_the_iceberg_format_runs_with_emr_serverless_own_iceberg_and_the_tables_in_glue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job run gets EMR Serverless's own Iceberg jar (nothing uploaded), joined to the
    lineage listener's in one ``--jars`` (spark-submit keeps only the last one given); the
    flow creates the Glue database and registers no parquet tables over the job's."""
    ScriptedJobRuns(["RUNNING", "SUCCESS"]).install(monkeypatch)

    with lineage_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        state = run_serverless_flow(table_format=ICEBERG, glue_database="sparkify_iceberg")

    assert state.is_completed(), state.message
    submit = the_job_run()["jobDriver"]["sparkSubmit"]
    jar_uri, _ = expected_listener(CODE_URI, receiver.url, str(state.state_details.flow_run_id))
    parameters = submit["sparkSubmitParameters"].split()
    assert parameters.count("--jars") == 1
    assert parameters[parameters.index("--jars") + 1] == f"{jar_uri},{ICEBERG_RUNTIME_JAR}"
    job_args = parse_args(submit["entryPointArguments"])
    assert (job_args.table_format, job_args.glue_database) == (ICEBERG, "sparkify_iceberg")
    glue = boto3.client("glue", region_name=REGION)
    assert glue.get_database(Name="sparkify_iceberg")["Database"]["Name"] == "sparkify_iceberg"
    assert glue.get_tables(DatabaseName="sparkify_iceberg")["TableList"] == []
