"""End to end, as an operator does it: a real Prefect server, `make deploy`, a worker, a run.

Starts `prefect server` on a free loopback port with its own PREFECT_HOME, runs the
project's own deploy command against it, checks the deployments and the scheduler
through the API, then lets a process worker run songs-etl-local on a tiny lake.
Every process it starts is stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake
from tasks.ops.names import PROJECT_ROOT
from tests.deploy.processes import client, free_port, start, stop, wait_healthy

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    port = api_url.split(":")[-1].split("/")[0]
    process = start(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
        env,
        home / "server.log",
    )
    try:
        wait_healthy(api_url, 90)
        yield env
    finally:
        stop(process)


def test_deploy_schedule_and_run_through_a_worker(server: dict[str, str], tmp_path: Path) -> None:
    deployed = subprocess.run(
        ["make", "deploy"],
        cwd=PROJECT_ROOT,
        env=server,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    with client(server) as api:
        deployments = {d.name: d for d in api.read_deployments()}
        assert set(deployments) == {
            "songs-etl-daily",
            "songs-etl-daily-serverless",
            "songs-etl-local",
            "terminate-emr-clusters",
            "lake-maintenance-weekly",
        }
        maintenance = deployments["lake-maintenance-weekly"]
        assert [(s.schedule.cron, s.active) for s in maintenance.schedules] == [
            ("0 4 * * 0", False)
        ]
        daily, serverless, local, sweeper = (
            deployments[n]
            for n in (
                "songs-etl-daily",
                "songs-etl-daily-serverless",
                "songs-etl-local",
                "terminate-emr-clusters",
            )
        )
        # One daily deployment is on: the Serverless one waits to be switched on.
        assert [(s.schedule.cron, s.active) for s in serverless.schedules] == [("0 6 * * *", False)]
        assert serverless.parameters["runner"] == "emr-serverless"
        assert {d.work_pool_name for d in deployments.values()} == {"sparkify-process"}
        assert [(s.schedule.cron, s.schedule.timezone) for s in daily.schedules] == [
            ("0 6 * * *", "UTC")
        ]
        assert [s.schedule.cron for s in sweeper.schedules] == [
            "0 * * * *"
        ] and local.schedules == []
        assert (
            daily.parameters["runner"] == "emr" and daily.parameters["process_previous_day"] is True
        )
        assert (
            daily.global_concurrency_limit is not None and daily.global_concurrency_limit.limit == 1
        )
        assert local.parameters == {"runner": "local", "table_format": "parquet"}
        # The production deployments say which format they write.
        assert (
            daily.parameters["table_format"] == serverless.parameters["table_format"] == "parquet"
        )
        # The scheduler must have created upcoming runs (a broken scheduler is silent).
        for deployment in (daily, sweeper):
            upcoming = wait_for_scheduled_runs(api, deployment.id)
            assert upcoming and all(run.state_name == "Scheduled" for run in upcoming)

    lake = tmp_path / "lake"
    generate_sample_lake(lake, SampleLakeConfig(songs=30, events=600, users=5, days=2), workers=1)
    worker = start(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "sparkify-process"],
        server,
        tmp_path / "worker.log",
    )
    try:
        with client(server) as api:
            run = api.create_flow_run_from_deployment(
                local.id,
                parameters={
                    "songs_uri": str(lake / "song_data"),
                    "logs_uri": str(lake / "log_data"),
                    "output_uri": str(tmp_path / "out"),
                },
            )
            final = wait_for_final_state(api, run.id, seconds=240)
            assert final.state_name == "Completed", (tmp_path / "worker.log").read_text()[-3000:]
            keys = {a.key for a in api.read_artifacts() if a.flow_run_id == run.id}
            assert keys == {"songs-etl-run"}
    finally:
        stop(worker)
    assert worker.poll() is not None


def wait_for_scheduled_runs(api: Any, deployment_id: Any, seconds: float = 90) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = api.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        if runs:
            return list(runs)
        time.sleep(2)
    return []


def wait_for_final_state(api: Any, flow_run_id: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = api.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {seconds} s")
