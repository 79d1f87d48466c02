"""Search everything a run left behind (output, logs, artifacts, errors) for the AWS key."""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect.logging.handlers import APILogWorker

from tests.emr.conftest import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET,
)
from tests.prefect_records import flow_run_artifacts, flow_run_logs

Printed = Callable[[], str]


def assert_no_key_in(readable: dict[str, str]) -> None:
    leaks = [
        (where, name)
        for where, text in readable.items()
        for name, secret in (("secret key", FAKE_SECRET), ("access key id", FAKE_ACCESS_KEY_ID))
        if secret in text
    ]
    assert leaks == [], f"the key reached: {leaks}"


def everything_readable(
    printed: Printed,
    caplog: pytest.LogCaptureFixture,
    flow_run_ids: list[str],
    errors: list[BaseException],
) -> dict[str, str]:
    """All a run left behind, by where it landed."""
    APILogWorker.drain_all(timeout=10)  # the API gets logs in batches: send them all
    logs = [log.message for run in flow_run_ids for log in flow_run_logs(uuid.UUID(run))]
    artifacts = [
        {"key": artifact.key, "data": artifact.data, "description": artifact.description}
        for run in flow_run_ids
        for artifact in flow_run_artifacts(uuid.UUID(run))
    ]
    return {
        "printed": printed(),
        "python logs": "\n".join(
            f"{record.name} {record.getMessage()} {record.exc_text or ''}"
            for record in caplog.records
        ),
        "logs": "\n".join(logs),
        "artifacts": json.dumps(artifacts, default=str),
        "errors": "\n".join(error_text(error) for error in errors),
    }


def error_text(error: BaseException) -> str:
    """The traceback, every chained cause, and the attributes an error carries."""
    parts = ["".join(traceback.format_exception(error))]
    for link in exception_chain(error):
        parts += [repr(link), repr(vars(link))]
    return "\n".join(parts)


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)
