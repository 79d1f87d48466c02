"""The EMR flow under seeded AWS faults: no leaked cluster, no duplicate cluster or step.

Every client the flow builds gets a seeded injector (tests/emr/faults.py): throttling,
5xx, connect timeouts and responses lost after AWS acted, on every AWS call. Each run
must end COMPLETED, or FAILED with an error that names what failed and no cluster left
running, except a cluster left to finish a step whose end is unknown, which the sweeper
must end once that step is done. What AWS holds is read through independent clients.

The long runs (three rates, 20 runs each) are marked ``faults``: ``make fault-test``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.retries import standard
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import flows.songs_etl as songs_etl_module
import tasks.aws_job as aws_job_tasks
import tasks.emr as emr_tasks
from flows.songs_etl import songs_etl
from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.aws import BOTO_CONFIG, SINGLE_ATTEMPT_CONFIG, AwsClients, aws_clients
from tasks.glue import CatalogNotUpdatedError
from tasks.ops.emr import (
    ClusterHeartbeat,
    ClusterSpec,
    EmrError,
    RunIdentity,
    build_run_job_flow_request,
)
from tasks.ops.ownership import FLOW_RUN_TAG_KEY
from tasks.ops.polling import MAX_FAILED_POLLS
from tasks.ops.preflight import PreflightError
from tasks.ops.retry import is_transient
from tasks.ops.states import CLUSTER_ENDED, STEP_ACTIVE
from tests.emr.conftest import (
    CODE_URI,
    LOG_URI,
    LOGS_URI,
    OUTPUT_URI,
    RAW,
    REGION,
    SONGS_URI,
    TABLE_COUNTS,
    ScriptedSteps,
    emr,
)
from tests.emr.faults import FaultKind, FaultPlan, inject_faults

pytestmark = pytest.mark.usefixtures("aws")

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "fault_injection.json"
# The project's clients retry 8 times in adaptive mode. Standard mode with 3 attempts in
# all has the same semantics (throttling, 5xx and timeouts re-sent; the single-attempt
# client still never re-sends) without adaptive's client-side rate limiter, which would
# sleep after every injected throttle; and 3 attempts let more faults through botocore to
# the task retries and the flow's failure handling, which are what this test is about.
FAST_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 3})
# Fault rate -> seed. At 0.05 and 0.2 botocore and the task retries absorb nearly every
# fault; at 0.4 enough get through to fail runs, so the failure paths are walked too.
RATES = {0.05: 5005, 0.2: 2020, 0.4: 4040}
RUNS_PER_RATE = 20
FAST_SEED = 5  # 5 runs at the top rate: both creating calls lose an answer, 2 runs fail
# The calls with no idempotency token: a lost answer to one of them is the fault that
# would duplicate a cluster or a step.
CREATING_OPERATIONS = ("emr.RunJobFlow", "emr.AddJobFlowSteps")


def inject_faults_everywhere(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan) -> None:
    """Faults on every client the project builds, with no waiting between retries."""
    build = AwsClients.client

    def faulty_client(self: AwsClients, service: str, config: Config = BOTO_CONFIG) -> Any:
        return inject_faults(
            build(self, service, FAST_RETRIES if config is BOTO_CONFIG else config), plan
        )

    monkeypatch.setattr(AwsClients, "client", faulty_client)
    # botocore's jittered backoff spreads real load; against moto it would only wait.
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def script_steps_to_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps complete (moto never ends one) and the job's summary is planted.

    Only the retrying ``emr`` client is wrapped: ``emr_single_attempt`` stays the real
    fault-injected client, so RunJobFlow and AddJobFlowSteps meet their faults unretried.
    """

    def clients(block: str) -> AwsClients:
        built = aws_clients(block)
        built.__dict__["emr"] = StepsThatComplete(built.emr, ["RUNNING", "COMPLETED"])
        return built

    monkeypatch.setattr(emr_tasks, "aws_clients", clients)


class StepsThatComplete(ScriptedSteps):
    """ScriptedSteps whose COMPLETED step ends in moto too, as the real step would have.

    A stub: moto never ends a step. Without it a cluster the flow failed to terminate
    after its step completed would still look busy, and pass for one left to finish.
    """

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        response = super().describe_step(ClusterId=ClusterId, StepId=StepId)
        if response["Step"]["Status"]["State"] == "COMPLETED":
            end_steps_in_moto(ClusterId, {StepId})
        return response


def end_steps_in_moto(cluster_id: str, step_ids: set[str] | None = None) -> None:
    """Mark the cluster's steps (all, or those named) COMPLETED in moto's backend."""
    for step in emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id].steps:
        if step_ids is None or step.id in step_ids:
            step.state = "COMPLETED"


def retry_tasks_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task of the flow keeps its retries, without the 2, 8, 30 s waits."""
    # The flow: Glue; tasks.aws_job: preflight, upload, summary; tasks.emr: the runner's.
    for module in (songs_etl_module, aws_job_tasks, emr_tasks):
        for name, value in vars(module).items():
            if isinstance(value, Task):
                monkeypatch.setattr(module, name, value.with_options(retry_delay_seconds=0))


def run_emr_flow() -> Any:
    return songs_etl(
        runner="emr",
        songs_uri=SONGS_URI,
        logs_uri=LOGS_URI,
        output_uri=OUTPUT_URI,
        aws_credentials_block="test-aws",
        cluster_config_block="test-emr",
        code_bucket_uri=CODE_URI,
        poll_seconds=0.01,
        max_wait_minutes=1.0,
        return_state=True,
    )


@dataclass(frozen=True)
class ClusterFacts:
    """What AWS holds about one cluster (read with an independent client)."""

    cluster_id: str
    active: bool
    step_states: list[str]

    @property
    def busy(self) -> bool:
        return any(state in STEP_ACTIVE for state in self.step_states)


@dataclass
class Tally:
    """What the runs at one fault rate did."""

    rate: float
    seed: int
    runs: int = 0
    completed: int = 0
    failed_cleanly: int = 0
    left_to_finish: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    duplicate_clusters: int = 0
    duplicate_steps: int = 0
    unclean: list[str] = field(default_factory=list)  # neither completed nor failed cleanly
    failures: list[str] = field(default_factory=list)  # every failed run: task and error
    faults: dict[str, int] = field(default_factory=dict)
    lost_creations: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "seed": self.seed,
            "runs": self.runs,
            "completed": self.completed,
            "failed cleanly": self.failed_cleanly,
            "left to finish, then swept": f"{len(self.left_to_finish)}/{len(self.swept)}",
            "leaked": len(self.leaked),
            "duplicate clusters": self.duplicate_clusters,
            "duplicate steps": self.duplicate_steps,
            **{f"faults: {kind}": count for kind, count in self.faults.items()},
            **{f"lost {op} responses": n for op, n in self.lost_creations.items()},
            "seconds": round(self.seconds, 1),
        }


def clusters_of_run(flow_run_id: str) -> list[ClusterFacts]:
    """Every cluster, in any state, tagged with the flow run."""
    client = emr()
    facts = []
    for page in client.get_paginator("list_clusters").paginate():
        for summary in page["Clusters"]:
            cluster = client.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            tags = {tag["Key"]: tag["Value"] for tag in cluster.get("Tags", [])}
            if tags.get(FLOW_RUN_TAG_KEY) != flow_run_id:
                continue
            steps = client.list_steps(ClusterId=cluster["Id"])["Steps"]
            facts.append(
                ClusterFacts(
                    cluster["Id"],
                    cluster["Status"]["State"] not in CLUSTER_ENDED,
                    [step["Status"]["State"] for step in steps],
                )
            )
    return facts


def names_what_failed(error: BaseException) -> bool:
    """A clear error: the AWS operation or endpoint, or the project's own wording."""
    text = str(error)
    if isinstance(error, ClientError):
        return f"when calling the {error.operation_name} operation" in text
    if isinstance(error, BotoCoreError):
        return "endpoint URL" in text
    return isinstance(error, (EmrError, CatalogNotUpdatedError, PreflightError)) and bool(text)


def failed_tasks(flow_run_id: str) -> list[str]:
    """The names of the flow run's tasks that ended FAILED (where the run broke)."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
    return sorted(
        run.name.rsplit("-", 1)[0] for run in task_runs if run.state and run.state.is_failed()
    )


def judge_run(state: Any, tally: Tally) -> None:
    """Count one run: completed, failed cleanly, left to finish, leaked, duplicated."""
    flow_run_id = str(state.state_details.flow_run_id)
    clusters = clusters_of_run(flow_run_id)
    tally.runs += 1
    tally.duplicate_clusters += max(0, len(clusters) - 1)
    tally.duplicate_steps += sum(max(0, len(c.step_states) - 1) for c in clusters)
    active = [c for c in clusters if c.active]
    if state.is_completed():
        if state.result().tables == TABLE_COUNTS and len(clusters) == 1 and not active:
            tally.completed += 1
        else:
            tally.unclean.append(f"{flow_run_id}: completed, clusters {clusters}")
        tally.leaked += [c.cluster_id for c in active]
        return
    error = state.result(raise_on_failure=False)
    tally.failures.append(f"{failed_tasks(flow_run_id)} {type(error).__name__}: {error}")
    tally.left_to_finish += [c.cluster_id for c in active if c.busy]
    leaked = [c.cluster_id for c in active if not c.busy]
    tally.leaked += leaked
    if state.is_failed() and isinstance(error, Exception) and names_what_failed(error):
        if not leaked:
            tally.failed_cleanly += 1
            return
    tally.unclean.append(f"{flow_run_id}: {state.type} {type(error).__name__}: {error}")


def sweep_left_clusters(tally: Tally) -> None:
    """The sweeper leaves clusters whose step runs, and ends them once it has ended."""
    if not tally.left_to_finish:
        return
    busy_swept = terminate_emr_clusters(aws_credentials_block="test-aws")
    assert not set(busy_swept) & set(tally.left_to_finish), "a busy cluster was swept"
    for cluster_id in tally.left_to_finish:
        end_steps_in_moto(cluster_id)  # the step the flow left running is done
    swept = terminate_emr_clusters(aws_credentials_block="test-aws")
    ended = {c["Id"] for c in emr().list_clusters(ClusterStates=list(CLUSTER_ENDED))["Clusters"]}
    tally.swept = sorted(set(swept) & ended)  # said terminated, and terminated indeed


def fault_the_flow(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan) -> None:
    """The flow's clients meet ``plan``'s faults; steps complete; retries do not wait."""
    inject_faults_everywhere(monkeypatch, plan)
    script_steps_to_completion(monkeypatch)
    retry_tasks_at_once(monkeypatch)


def run_under_faults(
    monkeypatch: pytest.MonkeyPatch, rate: float, seed: int, runs: int
) -> tuple[Tally, FaultPlan]:
    """Run the EMR flow ``runs`` times under seeded faults, then sweep; count it all."""
    plan = FaultPlan(rate, seed)
    fault_the_flow(monkeypatch, plan)
    tally = Tally(rate, seed)
    started = time.monotonic()
    for _ in range(runs):
        state = run_emr_flow()
        with plan.paused():
            judge_run(state, tally)
    with plan.paused():
        sweep_left_clusters(tally)
    tally.seconds = time.monotonic() - started
    tally.faults = plan.by_kind()
    lost = plan.by_operation(FaultKind.RESPONSE_LOST)
    tally.lost_creations = {op: lost.get(op, 0) for op in CREATING_OPERATIONS}
    print_table([tally])
    return tally, plan


def assert_nothing_leaked_or_duplicated(tally: Tally) -> None:
    assert tally.unclean == []
    assert (tally.leaked, tally.duplicate_clusters, tally.duplicate_steps) == ([], 0, 0)
    assert tally.completed + tally.failed_cleanly == tally.runs
    assert tally.swept == sorted(tally.left_to_finish)


def assert_the_faults_struck(tally: Tally) -> None:
    """Every kind struck, both creating calls lost an answer, and some runs failed."""
    assert all(count > 0 for count in tally.faults.values()), tally.faults
    assert all(tally.lost_creations.values()), tally.lost_creations
    assert tally.failed_cleanly > 0


def print_table(tallies: list[Tally]) -> None:
    rows = [tally.row() for tally in tallies]
    width = max(len(key) for key in rows[0])
    print()
    for key in rows[0]:
        print(f"{key:<{width}}  " + "  ".join(f"{row[key]!s:>8}" for row in rows))
    for tally in tallies:
        for failure in tally.failures:
            print(f"rate {tally.rate}: failed: {failure.splitlines()[0]}")


@pytest.fixture
def only_with_faults_marker(request: pytest.FixtureRequest) -> None:
    """The long runs take minutes: they run with ``-m faults`` (make fault-test) only."""
    if "faults" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("60 flow runs under faults: run `make fault-test`")


# --- the harness itself: each fault does what it says, on each protocol ---------------


SPEC = ClusterSpec(log_uri=LOG_URI)


def single_attempt_clients(monkeypatch: pytest.MonkeyPatch, kind: FaultKind) -> AwsClients:
    plan = FaultPlan(1.0, 0, kinds=(kind,))
    inject_faults_everywhere(monkeypatch, plan)
    return AwsClients(boto3.Session(region_name=REGION))


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda kind: kind.name.lower())
def test_each_fault_is_transient_and_only_a_lost_response_lets_aws_act(
    monkeypatch: pytest.MonkeyPatch, kind: FaultKind
) -> None:
    clients = single_attempt_clients(monkeypatch, kind)
    request = build_run_job_flow_request(SPEC, RunIdentity("run-1", "api"), datetime.now(UTC))

    with pytest.raises((ClientError, BotoCoreError)) as raised:
        clients.emr_single_attempt.run_job_flow(**request)

    assert is_transient(raised.value)
    expected_error = {
        FaultKind.THROTTLING: ClientError,
        FaultKind.SERVER_ERROR: ClientError,
        FaultKind.CONNECT_TIMEOUT: ConnectTimeoutError,
        FaultKind.RESPONSE_LOST: ReadTimeoutError,
    }[kind]
    assert type(raised.value) is expected_error
    created = len(emr().list_clusters()["Clusters"])
    assert created == (1 if kind is FaultKind.RESPONSE_LOST else 0)


def test_throttling_reads_as_each_services_own_error_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clients = single_attempt_clients(monkeypatch, FaultKind.THROTTLING)
    calls = {
        "emr": lambda: clients.emr_single_attempt.list_clusters(),
        "glue": lambda: clients.client("glue", SINGLE_ATTEMPT_CONFIG).get_databases(),
        "sts": lambda: clients.client("sts", SINGLE_ATTEMPT_CONFIG).get_caller_identity(),
        "s3": lambda: clients.client("s3", SINGLE_ATTEMPT_CONFIG).list_objects_v2(Bucket=RAW),
    }
    seen = {}
    for service, call in calls.items():
        with pytest.raises(ClientError) as raised:
            call()
        error = raised.value.response
        seen[service] = (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"])

    assert seen == {
        "emr": ("ThrottlingException", 400),
        "glue": ("ThrottlingException", 400),
        "sts": ("Throttling", 400),
        "s3": ("SlowDown", 503),
    }


def test_the_retrying_clients_resend_a_fault_until_their_attempts_run_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = FaultPlan(1.0, 0, kinds=(FaultKind.SERVER_ERROR,))
    inject_faults_everywhere(monkeypatch, plan)

    with pytest.raises(ClientError):
        AwsClients(boto3.Session(region_name=REGION)).emr.list_clusters()

    assert dict(plan.injected) == {(FaultKind.SERVER_ERROR, "emr.ListClusters"): 3}


def test_a_heartbeat_lost_to_a_timeout_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    request = build_run_job_flow_request(SPEC, RunIdentity("run-1", "api"), datetime.now(UTC))
    cluster_id = emr().run_job_flow(**request)["JobFlowId"]
    plan = FaultPlan(1.0, 0, kinds=(FaultKind.CONNECT_TIMEOUT,))
    inject_faults_everywhere(monkeypatch, plan)
    heartbeat = ClusterHeartbeat(AwsClients(boto3.Session(region_name=REGION)).emr, cluster_id)

    heartbeat.beat(datetime.now(UTC))  # must not raise: the heartbeat never fails a run

    timeout = 'Connect timeout on endpoint URL: "https://elasticmapreduce.us-east-1.amazonaws.com/"'
    assert [r.getMessage() for r in caplog.records if r.name == "tasks.ops.emr"] == [
        f"Could not refresh the heartbeat of {cluster_id}: {timeout}"
    ]


# --- the flow under scripted faults: the paths a seeded run reaches only by luck --------


@pytest.mark.integration  # flow runs under faults
@pytest.mark.parametrize("operation", ["emr.RunJobFlow", "emr.AddJobFlowSteps"])
def test_a_lost_answer_to_a_create_is_found_again_not_created_twice(
    monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    # Throttled (AWS did nothing), then the answer lost after AWS acted: the third
    # attempt must find what the second made.
    faults = [FaultKind.THROTTLING, FaultKind.RESPONSE_LOST]
    plan = FaultPlan(0.0, 0, script={operation: faults})
    fault_the_flow(monkeypatch, plan)

    state = run_emr_flow()

    assert state.is_completed(), state.message
    assert dict(plan.injected) == {(kind, operation): 1 for kind in faults}
    clusters = clusters_of_run(str(state.state_details.flow_run_id))
    assert clusters == [ClusterFacts(clusters[0].cluster_id, False, ["COMPLETED"])]


@pytest.mark.integration  # flow runs under faults
def test_a_cluster_started_by_the_last_create_attempt_is_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RunJobFlow throttled three times, then its response lost: the task's last attempt
    # started a cluster whose id the flow never heard.
    lost_last = [FaultKind.THROTTLING] * 3 + [FaultKind.RESPONSE_LOST]
    fault_the_flow(monkeypatch, FaultPlan(0.0, 0, script={"emr.RunJobFlow": lost_last}))

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(ReadTimeoutError):
        state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    assert failed_tasks(flow_run_id) == ["Create the EMR cluster"]
    [cluster] = clusters_of_run(flow_run_id)
    assert cluster == ClusterFacts(cluster.cluster_id, active=False, step_states=[])


@pytest.mark.integration  # flow runs under faults
def test_a_step_whose_end_is_unknown_keeps_its_cluster_until_the_sweeper_sees_it_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every DescribeStep fails (3 attempts for each of MAX_FAILED_POLLS polls): the flow
    # fails without knowing whether the step still writes the lake.
    unreadable = [FaultKind.SERVER_ERROR] * 3 * MAX_FAILED_POLLS
    fault_the_flow(monkeypatch, FaultPlan(0.0, 0, script={"emr.DescribeStep": unreadable}))

    state = run_emr_flow()

    assert state.is_failed()
    with pytest.raises(ClientError, match="when calling the DescribeStep operation"):
        state.result()
    [cluster] = clusters_of_run(str(state.state_details.flow_run_id))
    assert cluster == ClusterFacts(cluster.cluster_id, active=True, step_states=["RUNNING"])
    assert terminate_emr_clusters(aws_credentials_block="test-aws") == []  # still busy
    end_steps_in_moto(cluster.cluster_id)
    assert terminate_emr_clusters(aws_credentials_block="test-aws") == [cluster.cluster_id]
    assert clusters_of_run(str(state.state_details.flow_run_id)) == [
        ClusterFacts(cluster.cluster_id, active=False, step_states=["COMPLETED"])
    ]


# --- the flow under seeded faults ----------------------------------------------------------


@pytest.mark.integration  # 5 flow runs under faults
def test_five_runs_at_the_top_rate_leak_and_duplicate_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tally, _ = run_under_faults(monkeypatch, max(RATES), FAST_SEED, runs=5)

    assert_nothing_leaked_or_duplicated(tally)
    assert_the_faults_struck(tally)


@pytest.mark.faults
@pytest.mark.usefixtures("only_with_faults_marker")
@pytest.mark.parametrize("rate", sorted(RATES))
def test_twenty_runs_per_fault_rate_leak_and_duplicate_nothing(
    monkeypatch: pytest.MonkeyPatch, rate: float
) -> None:
    tally, _ = run_under_faults(monkeypatch, rate, RATES[rate], RUNS_PER_RATE)
    record(tally)

    assert_nothing_leaked_or_duplicated(tally)
    if rate == max(RATES):
        assert_the_faults_struck(tally)


def record(tally: Tally) -> None:
    """Add the rate's row to bench/results/fault_injection.json (for docs/aws.md)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows[str(tally.rate)] = {**tally.row(), "failures": tally.failures}
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
