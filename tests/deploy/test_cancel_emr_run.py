"""A run on EMR cancelled through the Prefect API, or whose process dies, ends its cluster.

Flow hooks run client-side, in the processes that run the flow, so this needs real ones:
a Prefect server, a moto server standing in for AWS, and ``songs_etl`` served as a
deployment (``flow.serve``: a runner that runs each flow run in a process of its own).
Each run starts a cluster and a step that never ends (moto starts the first step at once
and never finishes it); the test then cancels the run as the UI's Cancel button does, or
kills its process, and checks through its own boto3 client that the step was cancelled
and the cluster terminated. Every process started here is stopped, and checked gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling
from prefect_aws import AwsCredentials

from tasks.emr import EmrClusterConfig
from tasks.ops.ownership import FLOW_RUN_TAG_KEY
from tests.deploy.processes import client, free_port, start, stopped_with_its_children, wait_healthy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

VENV_BIN = Path(sys.executable).parent
PROCESSES = "tests.deploy.emr_cancel_processes"  # the moto server and the served flow
REGION = "us-east-1"
RAW, LAKE, CODE, LOGS = "cancel-raw", "cancel-lake", "cancel-code", "cancel-logs"
DEPLOYMENT = "cancel-emr-run"
HOOK = "_end_work_of_run"
HOOK_DONE = f"Hook '{HOOK}' finished running successfully"
PARAMETERS: dict[str, Any] = {
    "runner": "emr",
    "songs_uri": f"s3://{RAW}/song_data",
    "logs_uri": f"s3://{RAW}/log_data",
    "output_uri": f"s3://{LAKE}/star",
    "code_bucket_uri": f"s3://{CODE}/jobs",
    "aws_credentials_block": "cancel-aws",
    "cluster_config_block": "cancel-emr",
    "glue_database": None,
    "poll_seconds": 0.5,
    "max_wait_minutes": 5.0,
}
T = TypeVar("T")


@dataclass(frozen=True)
class Stack:
    """The running processes' environment, their log folder, the served deployment."""

    env: dict[str, str]
    logs: Path
    deployment_id: uuid.UUID
    runner_pid: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server, a moto server, buckets, blocks, and songs_etl served."""
    logs = tmp_path_factory.mktemp("cancel-emr")
    env = process_environment(logs, moto_port=free_port(), prefect_port=free_port())
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start_prefect_server(env, logs))
        processes.append(start_moto(env, logs))
        prepare_aws(env)
        save_blocks(env)
        runner = start([python(), "-m", PROCESSES, "serve", DEPLOYMENT], env, logs / "serve.log")
        processes.append(runner)
        with client(env) as api:
            deployment = wait_for(lambda: deployment_named(api, f"songs_etl/{DEPLOYMENT}"), 60)
        yield Stack(env, logs, deployment.id, runner.pid)
    finally:
        stopped = [stopped_with_its_children(process) for process in reversed(processes)]
    assert stopped == [True, True, True]  # runner, moto, Prefect server, and their children


def test_cancelling_a_run_through_the_api_cancels_its_step_and_terminates_its_cluster(
    stack: Stack,
) -> None:
    with client(stack.env) as api:
        run = api.create_flow_run_from_deployment(stack.deployment_id, parameters=PARAMETERS)
        cluster_id, step_id = wait_for_running_step(stack, run.id)

        accepted = api.set_flow_run_state(run.id, Cancelling())  # as the UI's Cancel button
        final = wait_for(lambda: final_run(api, run.id), 60, stack.logs / "serve.log")
        lines = wait_for(lambda: run_log_lines(api, run.id, HOOK_DONE), 20)

    assert accepted.status == SetStateStatus.ACCEPT
    assert final.state.type == StateType.CANCELLED, final.state
    # moto cannot cancel a step: the moto server of this test can (emr_cancel_processes).
    assert end_states(stack, cluster_id, step_id) == ("TERMINATED", "CANCELLED")
    assert cancel_steps_calls(stack, cluster_id) == [f"CancelSteps {cluster_id} ['{step_id}']"]
    # The runner stops the flow's process with SIGTERM: the flow's own interrupt handler
    # cancels the step and terminates the cluster at once. The on_cancellation hook runs
    # next, in the runner, and has nothing left to end (the test below makes it work).
    assert f"Running hook '{HOOK}' in response to entering state 'Cancelling'" in lines
    assert HOOK_DONE in lines


def test_a_run_whose_process_is_killed_has_its_cluster_ended_by_the_crash_hook(
    stack: Stack,
) -> None:
    with client(stack.env) as api:
        run = api.create_flow_run_from_deployment(stack.deployment_id, parameters=PARAMETERS)
        cluster_id, step_id = wait_for_running_step(stack, run.id)

        [flow_process] = flow_run_processes(stack.runner_pid)
        os.kill(flow_process, signal.SIGKILL)  # dies without a word: no handler runs
        final = wait_for(lambda: final_run(api, run.id), 60, stack.logs / "serve.log")
        lines = wait_for(lambda: run_log_lines(api, run.id, HOOK_DONE), 20)

    assert final.state.type == StateType.CRASHED, final.state
    # Only the on_crashed hook, run by the runner, was left to end them.
    assert end_states(stack, cluster_id, step_id) == ("TERMINATED", "CANCELLED")
    assert cancel_steps_calls(stack, cluster_id) == [f"CancelSteps {cluster_id} ['{step_id}']"]
    assert f"Running hook '{HOOK}' in response to entering state 'Crashed'" in lines
    assert HOOK_DONE in lines


def process_environment(logs: Path, moto_port: int, prefect_port: int) -> dict[str, str]:
    """One Prefect server and one moto server for every process the test starts."""
    home = logs / "prefect-home"
    home.mkdir()
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the runner looks for runs every second
        # boto3 (>= 1.28) sends every service's calls to moto; the keys are the block's.
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake-secret",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }


def python() -> str:
    return str(VENV_BIN / "python")


def start_prefect_server(env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    port = env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]
    server = start(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
        env,
        logs / "server.log",
    )
    wait_healthy(env["PREFECT_API_URL"], 90)
    return server


def start_moto(env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    port = env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    moto = start([python(), "-m", PROCESSES, "moto", port], env, logs / "moto.log")
    wait_for(lambda: aws_client("s3", env).list_buckets() is not None, 30, logs / "moto.log")
    return moto


def aws_client(service: str, env: dict[str, str]) -> Any:
    """An independent client of the moto server (not the flow's)."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def prepare_aws(env: dict[str, str]) -> None:
    """The buckets and a one-day raw lake: enough for the preflight."""
    s3 = aws_client("s3", env)
    for bucket in (RAW, LAKE, CODE, LOGS):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=RAW, Key="song_data/A/B/C/TRABC.json", Body=b'{"song_id": "SO1"}')
    s3.put_object(Bucket=RAW, Key="log_data/2018/11/2018-11-01-events.json", Body=b"{}")


def save_blocks(env: dict[str, str]) -> None:
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        AwsCredentials(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],  # type: ignore[arg-type]
            region_name=REGION,
        ).save("cancel-aws", overwrite=True)
        EmrClusterConfig(log_uri=f"s3://{LOGS}/emr").save("cancel-emr", overwrite=True)


def deployment_named(api: Any, name: str) -> Any:
    try:
        return api.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def wait_for_running_step(stack: Stack, flow_run_id: uuid.UUID) -> tuple[str, str]:
    """The cluster of the flow run and its step, once AWS shows the step running."""

    def running_step() -> tuple[str, str] | None:
        emr = aws_client("emr", stack.env)
        for summary in emr.list_clusters(ClusterStates=["WAITING", "RUNNING"])["Clusters"]:
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            tags = {tag["Key"]: tag["Value"] for tag in cluster["Tags"]}
            steps = emr.list_steps(ClusterId=cluster["Id"], StepStates=["RUNNING"])["Steps"]
            if tags.get(FLOW_RUN_TAG_KEY) == str(flow_run_id) and steps:
                return cluster["Id"], steps[0]["Id"]
        return None

    return wait_for(running_step, 60, stack.logs / "serve.log")


def end_states(stack: Stack, cluster_id: str, step_id: str) -> tuple[str, str]:
    """The cluster's state and the step's, as AWS holds them."""
    emr = aws_client("emr", stack.env)
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
    return cluster["Status"]["State"], step["Status"]["State"]


def cancel_steps_calls(stack: Stack, cluster_id: str) -> list[str]:
    """The CancelSteps calls the moto server received for the cluster."""
    lines = (stack.logs / "moto.log").read_text().splitlines()
    return [line.split(":")[0] for line in lines if line.startswith(f"CancelSteps {cluster_id}")]


def flow_run_processes(runner_pid: int) -> list[int]:
    """The runner's flow run processes (multiprocessing spawn children), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked
        if parent == runner_pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def final_run(api: Any, flow_run_id: uuid.UUID) -> Any:
    run = api.read_flow_run(flow_run_id)
    return run if run.state is not None and run.state.is_final() else None


def run_log_lines(api: Any, flow_run_id: uuid.UUID, awaited: str) -> list[str] | None:
    """The run's log lines once ``awaited`` is among them (logs arrive in batches)."""
    logs = api.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    lines = [log.message for log in logs]
    return lines if awaited in lines else None


def wait_for(look: Callable[[], T | None], seconds: float, log: Path | None = None) -> T:
    """``look()`` once it answers something; a timeout shows the end of ``log``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen = look()
        except Exception:  # a server still starting
            seen = None
        if seen:
            return seen
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"nothing after {seconds} s\n{tail}")
