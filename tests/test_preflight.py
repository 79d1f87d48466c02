"""Preflight of a run on AWS: each refusal with its exact message, and a pass.

The AWS side runs against moto's S3 and STS; the checks need no Prefect API, the task
that retries them (last tests) does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from prefect import flow

import tasks.aws_job as aws_job_tasks
from spark_etl.args import MAX_REJECT_RATIO_FLAG, JobArgs
from tasks.aws import AwsClients, aws_clients
from tasks.ops.preflight import PreflightError, check_aws_run, check_job_arguments

REGION = "us-east-1"
MOTO_ACCOUNT = "123456789012"  # the account moto's STS answers with
RAW, OUT, CODE = "sparkify-raw", "sparkify-out", "sparkify-code"
CODE_URI = f"s3://{CODE}/jobs"
VALID = JobArgs(
    songs_uri=f"s3://{RAW}/song_data",
    logs_uri=f"s3://{RAW}/log_data",
    output_uri=f"s3://{OUT}/star",
    run_id="preflight-test",
)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """moto S3 and STS with one song file and the log file of 2018-11-01."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (RAW, OUT, CODE):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=RAW, Key="song_data/A/B/C/TRABC.json", Body=b'{"song_id": "SO1"}')
        s3.put_object(Bucket=RAW, Key="log_data/2018/11/2018-11-01-events.json", Body=b"{}")
        yield s3, boto3.client("sts", region_name=REGION)


@pytest.mark.parametrize(
    ("changes", "code_bucket_uri", "message"),
    [
        pytest.param(
            {},
            f"s3://{CODE}/jobs,v2",  # would split spark-submit's --py-files in two
            f"code_bucket_uri 's3://{CODE}/jobs,v2' is empty or holds a comma or a control "
            "character",
            id="comma in code_bucket_uri",
        ),
        pytest.param(
            {},
            f"s3://{CODE}/jobs\n",
            f"code_bucket_uri 's3://{CODE}/jobs\\n' is empty or holds a comma or a control "
            "character",
            id="newline ending code_bucket_uri",
        ),
        pytest.param(
            {"output_uri": f"s3://{OUT}/star\n"},  # a pasted newline: a key nobody can see
            CODE_URI,
            f"the job would refuse its arguments: argument --output: 's3://{OUT}/star\\n' "
            "is empty or holds a comma or a control character",
            id="newline ending the output URI",
        ),
        pytest.param(
            {"logs_uri": f"s3://{RAW}/log\ndata"},
            CODE_URI,
            f"'s3://{RAW}/log\\ndata' is not an s3://bucket/prefix URI with a valid bucket name",
            id="newline inside the logs URI",
        ),
        pytest.param(
            {"max_reject_ratio": 1.5},
            CODE_URI,
            f"the job would refuse its arguments: argument {MAX_REJECT_RATIO_FLAG}: '1.5' is not "
            "between 0 and 1",
            id="max_reject_ratio above 1",
        ),
        pytest.param(
            {},
            None,
            "a run on AWS needs code_bucket_uri, an s3:// folder for the job code",
            id="no code_bucket_uri",
        ),
    ],
)
def test_arguments_the_run_would_fail_on_are_refused_with_their_reason(
    changes: dict[str, Any], code_bucket_uri: str | None, message: str
) -> None:
    with pytest.raises(PreflightError) as refused:
        check_job_arguments(dataclasses.replace(VALID, **changes), code_bucket_uri)
    assert str(refused.value) == message


def test_valid_arguments_pass() -> None:
    check_job_arguments(VALID, CODE_URI)
    check_job_arguments(dataclasses.replace(VALID, run_date=date(2018, 11, 1)), CODE_URI)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"songs_uri": f"s3://{RAW}/nothing-here"},
            f"song_data location s3://{RAW}/nothing-here is missing or empty",
            id="empty input prefix",
        ),
        pytest.param(
            {"run_date": date(2018, 11, 2)},
            f"no log file for 2018-11-02: s3://{RAW}/log_data/2018/11/2018-11-02-events.json "
            "does not exist",
            id="missing day file of a daily run",
        ),
    ],
)
def test_missing_inputs_are_refused_with_their_reason(
    aws: tuple[Any, Any], changes: dict[str, Any], message: str
) -> None:
    s3, sts = aws
    with pytest.raises(PreflightError) as refused:
        check_aws_run(s3, sts, dataclasses.replace(VALID, **changes), CODE_URI)
    assert str(refused.value) == message


def test_an_output_in_a_missing_bucket_is_found_unwritable(aws: tuple[Any, Any]) -> None:
    s3, sts = aws
    with pytest.raises(ClientError) as refused:
        check_aws_run(
            s3, sts, dataclasses.replace(VALID, output_uri="s3://no-such-bucket/star"), CODE_URI
        )
    assert str(refused.value) == (
        "An error occurred (NoSuchBucket) when calling the PutObject operation: "
        "The specified bucket does not exist"
    )


def test_a_run_that_can_go_ahead_returns_the_account_and_leaves_no_marker(
    aws: tuple[Any, Any],
) -> None:
    s3, sts = aws
    assert check_aws_run(s3, sts, VALID, CODE_URI) == MOTO_ACCOUNT
    daily = dataclasses.replace(VALID, run_date=date(2018, 11, 1))
    assert check_aws_run(s3, sts, daily, CODE_URI) == MOTO_ACCOUNT
    # The write test put and deleted its markers: the output and code folders stay clean.
    for bucket in (OUT, CODE):
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


class ScriptedSts:
    """moto's STS, whose get_caller_identity raises the next error of ``errors`` first
    (moto never throttles nor refuses); ``calls`` counts the calls of every task try."""

    def __init__(self, real: Any, errors: list[Exception], calls: list[str]) -> None:
        self._real, self._errors, self._calls = real, errors, calls

    def get_caller_identity(self) -> Any:
        self._calls.append("GetCallerIdentity")
        if self._errors:
            raise self._errors.pop(0)
        return self._real.get_caller_identity()


def sts_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetCallerIdentity",
    )


def run_preflight_task(
    monkeypatch: pytest.MonkeyPatch, errors: list[Exception], calls: list[str]
) -> Any:
    """The preflight task, its STS scripted; retried at once (the delays are not tested)."""
    from prefect_aws import AwsCredentials

    AwsCredentials(
        aws_access_key_id="AKIAFAKEFAKEFAKEFAKE",
        aws_secret_access_key="fake-secret",
        region_name=REGION,
    ).save("preflight-aws", overwrite=True)

    def clients(block: str) -> AwsClients:
        built = aws_clients(block)
        built.__dict__["sts"] = ScriptedSts(built.sts, errors, calls)  # cached_property's slot
        return built

    monkeypatch.setattr(aws_job_tasks, "aws_clients", clients)
    return preflight_only(return_state=True)


@flow
def preflight_only() -> None:
    """The preflight task in a flow run of its own, as songs_etl runs it."""
    aws_job_tasks.preflight_aws_run.with_options(retry_delay_seconds=0)(
        "preflight-aws", VALID, CODE_URI
    )


@pytest.mark.usefixtures("prefect_api")
def test_the_preflight_task_retries_a_throttled_sts_call(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    state = run_preflight_task(monkeypatch, [sts_error("Throttling", 400)], calls)

    assert state.is_completed(), state.message
    assert calls == ["GetCallerIdentity", "GetCallerIdentity"]


@pytest.mark.usefixtures("prefect_api")
def test_the_preflight_task_fails_at_once_when_sts_refuses(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    state = run_preflight_task(monkeypatch, [sts_error("AccessDenied", 403)], calls)

    assert state.is_failed()
    with pytest.raises(PreflightError) as refused:
        state.result()
    assert str(refused.value) == (
        "AWS refused a preflight check: An error occurred (AccessDenied) when calling the "
        "GetCallerIdentity operation: no"
    )
    assert calls == ["GetCallerIdentity"]
