"""moto-backed AWS for the EMR tests: buckets with a tiny lake, blocks, scripted steps."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Running

from flows.songs_etl import songs_etl
from spark_etl.args import parse_args
from spark_etl.summary import FAILED, SUCCEEDED, CheckResult, RunSummary, summary_uri
from tasks.aws import AwsClients, aws_clients
from tasks.emr import EmrClusterConfig

REGION = "us-east-1"
FAKE_SECRET = "fAkE/SeCrEt+KeY0123456789abcdefghijklmnop"  # must never show up anywhere
FAKE_ACCESS_KEY_ID = "AKIAFAKEFAKEFAKEFAKE"  # nor this: the key id of the test block
RAW, OUT, CODE, LOGS = "sparkify-raw", "sparkify-out", "sparkify-code", "sparkify-logs"
SONGS_URI, LOGS_URI = f"s3://{RAW}/song_data", f"s3://{RAW}/log_data"
OUTPUT_URI, CODE_URI, LOG_URI = f"s3://{OUT}/star", f"s3://{CODE}/jobs", f"s3://{LOGS}/emr"
TABLE_COUNTS = {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}


@pytest.fixture(scope="session")
def emr_blocks(prefect_api: None) -> None:
    """The two blocks the flow loads, saved once: they live in the session's Prefect API,
    and no test changes them."""
    from prefect_aws import AwsCredentials

    AwsCredentials(
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
        region_name=REGION,
    ).save("test-aws", overwrite=True)
    EmrClusterConfig(log_uri=LOG_URI, core_instance_count=2, tags={"team": "data"}).save(
        "test-emr", overwrite=True
    )


@pytest.fixture
def aws(emr_blocks: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto for every AWS call (fresh for each test), a tiny raw lake, and the blocks."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (RAW, OUT, CODE, LOGS):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=RAW, Key="song_data/A/B/C/TRABC.json", Body=b'{"song_id": "SO1"}')
        s3.put_object(Bucket=RAW, Key="log_data/2018/11/2018-11-01-events.json", Body=b"{}")
        yield


def wrap_emr_client(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any]) -> None:
    """Make the EMR tasks' clients use ``wrap(real EMR client)``: moto plus a script."""
    import tasks.emr as emr_tasks

    def clients(block: str) -> AwsClients:
        built = aws_clients(block)
        wrapped = wrap(built.emr)
        built.__dict__["emr"] = wrapped  # where cached_property keeps its value
        built.__dict__["emr_single_attempt"] = wrapped
        return built

    monkeypatch.setattr(emr_tasks, "aws_clients", clients)


# The time the tasks see under `frozen_clock`: the heartbeat tag is compared exactly.
FROZEN_NOW = datetime(2018, 11, 2, 6, 0, 0, tzinfo=UTC)


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return FROZEN_NOW.astimezone(tz) if tz else FROZEN_NOW.replace(tzinfo=None)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The EMR tasks read ``FROZEN_NOW`` as the time (cluster tags, heartbeats)."""
    import tasks.emr as emr_tasks

    monkeypatch.setattr(emr_tasks, "datetime", _FrozenDatetime)
    return FROZEN_NOW


def emr() -> Any:
    """An independent client: what AWS really holds, not what the flow believes."""
    return boto3.client("emr", region_name=REGION)


def clusters_by_state() -> dict[str, str]:
    return {c["Id"]: c["Status"]["State"] for c in emr().list_clusters()["Clusters"]}


class ScriptedSteps:
    """Wraps the flow's EMR client: describe_step walks through ``states`` (moto never
    finishes a step); on COMPLETED it plants the summary the job would write, on FAILED
    the step's stderr.gz where EMR would put it and, given ``job_error``, the failed run
    summary the job writes with its reason."""

    def __init__(
        self, real: Any, states: list[str], plant_log: bool = True, job_error: str | None = None
    ) -> None:
        self._real, self._states, self._plant_log = real, list(states), plant_log
        self._job_error = job_error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_step(self, ClusterId: str, StepId: str) -> dict[str, Any]:
        response = self._real.describe_step(ClusterId=ClusterId, StepId=StepId)
        state = self._states.pop(0) if len(self._states) > 1 else self._states[0]
        response["Step"]["Status"]["State"] = state
        args = response["Step"]["Config"]["Args"]
        if state == "COMPLETED":
            plant_summary(args)
        if state == "FAILED":
            response["Step"]["Status"]["FailureDetails"] = {
                "Reason": "Unknown Error.",
                "LogFile": f"{LOG_URI}/{ClusterId}/steps/{StepId}/",
            }
            if self._plant_log:
                body = "\n".join(f"log line {n}" for n in range(100))
                body += "\nspark_etl: error: 120 of 1000 input records rejected (12.00%)\n"
                boto3.client("s3", region_name=REGION).put_object(
                    Bucket=LOGS,
                    Key=f"emr/{ClusterId}/steps/{StepId}/stderr.gz",
                    Body=gzip.compress(body.encode()),
                )
            if self._job_error is not None:
                plant_summary(args, error=self._job_error)
        return response


class ClusterStuckStarting:
    """Wraps an EMR client: describe_cluster always answers STARTING, and counts its calls.

    A stub, because moto makes every cluster WAITING at once: a cluster that never gets
    ready cannot happen in moto. Everything else is moto's.
    """

    def __init__(self, real: Any) -> None:
        self._real, self.describes = real, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_cluster(self, ClusterId: str) -> dict[str, Any]:
        self.describes += 1
        response = self._real.describe_cluster(ClusterId=ClusterId)
        response["Cluster"]["Status"]["State"] = "STARTING"
        return dict(response)


def plant_summary(args: list[str], error: str | None = None) -> None:
    """Write the run summary the Spark job writes at the end of a run: a successful one,
    or, given ``error``, a failed one with the job's reason."""
    job_args = parse_args(args[args.index("--py-files") + 3 :])  # after the zip and the script
    output, run_id = job_args.output_uri, job_args.run_id
    summary = RunSummary(
        run_id=run_id,
        mode="full",
        run_date=None,
        songs_uri=SONGS_URI,
        logs_uri=LOGS_URI,
        output_uri=output,
        started_at="2018-11-02T06:00:00+00:00",
        status=SUCCEEDED if error is None else FAILED,
        error=error,
        duration_seconds=42.0,
        input_records={"song_data": 2, "log_data": 24},
        tables=dict(TABLE_COUNTS) if error is None else {},
        checks=[CheckResult("key unique", "songplays", True, "0")] if error is None else [],
    )
    bucket, key = summary_uri(output, run_id).removeprefix("s3://").split("/", 1)
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=bucket, Key=key, Body=json.dumps(json.loads(summary.to_json())).encode()
    )


def run_emr_flow(**overrides: Any) -> Any:
    parameters: dict[str, Any] = {
        "runner": "emr",
        "songs_uri": SONGS_URI,
        "logs_uri": LOGS_URI,
        "output_uri": OUTPUT_URI,
        "aws_credentials_block": "test-aws",
        "cluster_config_block": "test-emr",
        "code_bucket_uri": CODE_URI,
        "poll_seconds": 0.01,
        "max_wait_minutes": 0.05,
    }
    parameters.update(overrides)
    return songs_etl(**parameters, return_state=True)


def script_steps(monkeypatch: pytest.MonkeyPatch, states: list[str], **options: Any) -> None:
    wrap_emr_client(monkeypatch, lambda real: ScriptedSteps(real, states, **options))


def throttling(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


@flow
def placeholder() -> None:
    """Only there to own a flow run that stays Running."""


def live_flow_run_id() -> str:
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(placeholder, state=Running()).id)


ORPHAN_RUN = "00000000-0000-0000-0000-000000000000"  # a flow run that never existed
