"""The sweeper and EMR Serverless job runs: its pure rules case by case, and its flow
against moto (job runs of dead runs of this Prefect API, or too old, are cancelled;
foreign, untagged or live ones stay)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tasks.sweeper as sweeper_tasks
from flows.terminate_emr_clusters import terminate_emr_clusters
from tasks.emr_serverless import load_serverless_spec
from tasks.ops.emr_serverless import build_create_application_request
from tasks.ops.sweep_rules import SweepRules, job_runs_to_cancel
from tests.emr.conftest import ORPHAN_RUN, live_flow_run_id
from tests.emr_serverless.conftest import job_runs_by_state, serverless_client, start_job_run
from tests.prefect_records import flow_run_artifacts


def applications() -> tuple[str, str]:
    """The project's application, and someone else's."""
    spec = load_serverless_spec("test-emr-serverless")
    ours = serverless_client().create_application(**build_create_application_request(spec, "x"))
    theirs = serverless_client().create_application(
        name="other-team", releaseLabel="emr-7.0.0", type="SPARK"
    )
    return ours["applicationId"], theirs["applicationId"]


def report(state: Any) -> list[dict[str, Any]]:
    [artifact] = [
        a
        for a in flow_run_artifacts(state.state_details.flow_run_id)
        if a.key == "emr-serverless-sweep"
    ]
    return list(json.loads(artifact.data))


class _FrozenDatetime(datetime):
    """The sweeper's clock, stopped: a job run's age is exact however slow the test."""

    frozen = datetime.now(UTC)

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return cls.frozen


@pytest.mark.usefixtures("serverless")
def test_job_runs_of_dead_runs_of_this_api_or_too_old_are_cancelled_the_rest_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sweeper_tasks, "datetime", _FrozenDatetime)
    now = _FrozenDatetime.frozen
    ours, theirs = applications()
    live = live_flow_run_id()
    job_runs = {
        "live": start_job_run(ours, live, created=now - timedelta(minutes=5)),
        "orphan": start_job_run(ours, ORPHAN_RUN, created=now - timedelta(minutes=5)),
        "too old": start_job_run(ours, live, created=now - timedelta(minutes=400)),
        "other api": start_job_run(ours, ORPHAN_RUN, prefect_api="http://other-prefect:4200/api"),
        "untagged": start_job_run(ours, ORPHAN_RUN, tagged=False),
        "other application": start_job_run(theirs, ORPHAN_RUN),
    }

    dry = terminate_emr_clusters(aws_credentials_block="test-aws", dry_run=True, return_state=True)

    doomed = [job_runs["orphan"], job_runs["too old"]]
    assert sorted(dry.result()) == sorted(doomed)
    assert set(job_runs_by_state().values()) == {"RUNNING"}  # a dry run cancels nothing
    assert sorted((row["job_run_id"], row["action"]) for row in report(dry)) == sorted(
        (job_run_id, "would cancel") for job_run_id in doomed
    )

    swept = terminate_emr_clusters(aws_credentials_block="test-aws", return_state=True)

    assert sorted(swept.result()) == sorted(doomed)
    assert job_runs_by_state() == {
        job_run_id: "CANCELLED" if job_run_id in doomed else "RUNNING"
        for job_run_id in job_runs.values()
    }
    assert sorted((row["job_run_id"], row["reason"]) for row in report(swept)) == sorted(
        [
            (job_runs["orphan"], f"its flow run {ORPHAN_RUN} is no longer running"),
            (job_runs["too old"], "older than 360 min (400 min)"),
        ]
    )


API = "http://prefect.test/api"
NOW = datetime(2018, 11, 2, 12, 0, tzinfo=UTC)
RULES = SweepRules(API, max_age_minutes=360)


def job_run(age: float, **tags: str | None) -> dict[str, Any]:
    """A described job run ``age`` minutes old."""
    values = {
        "project": "sparkify-lake",
        "prefect-flow-run-id": "run-1",
        "prefect-api": API,
        **tags,
    }
    return {
        "applicationId": "app-1",
        "jobRunId": "jr-1",
        "state": "RUNNING",
        "createdAt": NOW - timedelta(minutes=age),
        "tags": {key: value for key, value in values.items() if value is not None},
    }


DEAD = "its flow run run-1 is no longer running"
TOO_OLD = "older than 360 min (400 min)"


@pytest.mark.parametrize(
    ("described", "live", "reason"),
    [
        pytest.param(job_run(30), {"run-1"}, None, id="live run"),
        pytest.param(job_run(30), set(), DEAD, id="dead run"),
        pytest.param(job_run(360), {"run-1"}, None, id="live run at the maximum age"),
        pytest.param(job_run(400), {"run-1"}, TOO_OLD, id="live run, too old"),
        pytest.param(job_run(400), set(), TOO_OLD, id="dead and too old: the age is said"),
        pytest.param(
            job_run(400, **{"prefect-api": "http://other/api"}), set(), None, id="another API's"
        ),
        pytest.param(job_run(400, **{"prefect-api": None}), set(), None, id="no API tag"),
        pytest.param(
            job_run(400, **{"prefect-flow-run-id": None}), set(), None, id="no flow-run tag"
        ),
    ],
)
def test_which_job_runs_the_sweeper_cancels_and_why(
    described: dict[str, Any], live: set[str], reason: str | None
) -> None:
    expected = [(described, reason)] if reason else []
    assert job_runs_to_cancel([described], NOW, RULES, live) == expected
