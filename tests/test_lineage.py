"""OpenLineage: off by default, the flow's run events, and the Spark listener's settings.

The flow runs here fail before Spark starts (a missing input), so they cost no JVM; the
local run that sends COMPLETE and the Spark listener's own events is in
``tests/test_lineage_local_run.py`` (integration lane).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.serde import Serde

from flows.songs_etl import songs_etl
from spark_etl import jars
from spark_etl import lineage as job_lineage
from spark_etl.args import JobArgs
from spark_etl.errors import JobError
from spark_etl.summary import CheckResult, RunSummary
from spark_etl.tables import TABLES
from tasks.lineage import LineageConfigError, read_settings
from tasks.ops.lineage_events import FlowRunName, complete_event
from tests.lineage_receiver import dead_url, lineage_receiver, parsed
from tests.prefect_records import flow_run_logs

RUN_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def test_lineage_is_off_unless_the_openlineage_variables_turn_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no openlineage.yml in the working folder
    monkeypatch.setenv("HOME", str(tmp_path))
    on = {"OPENLINEAGE_URL": "http://127.0.0.1:5000"}

    assert read_settings({}) is None
    assert job_lineage.listener_settings({}) == {}
    assert read_settings({**on, "OPENLINEAGE_DISABLED": "true"}) is None
    assert job_lineage.listener_settings({**on, "OPENLINEAGE_DISABLED": "true"}) == {}
    assert read_settings(on) is not None


def test_an_openlineage_yml_turns_lineage_on_but_may_not_hold_the_api_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "openlineage.yml"
    config.write_text("transport:\n  type: http\n  url: http://127.0.0.1:5000\n  endpoint: x/y\n")

    settings = read_settings({"OPENLINEAGE_CONFIG": str(config)})

    assert settings is not None
    assert (settings.url, settings.endpoint, settings.api_key) == (
        "http://127.0.0.1:5000",
        "x/y",
        "",
    )
    config.write_text(
        "transport:\n  type: http\n  url: http://127.0.0.1:5000\n"
        "  auth:\n    type: api_key\n    apiKey: do-not-keep-me-here\n"
    )
    with pytest.raises(LineageConfigError, match="holds an API key: keep it in a Prefect Secret"):
        read_settings({"OPENLINEAGE_CONFIG": str(config)})


def test_a_malformed_openlineage_url_stops_the_flow_with_a_lineage_config_error() -> None:
    with pytest.raises(LineageConfigError, match="OPENLINEAGE_URL must be an http:// or https://"):
        read_settings({"OPENLINEAGE_URL": "ftp://host"})


def test_the_spark_listener_runs_under_the_flow_run_and_spark_redacts_the_api_key() -> None:
    environ = {
        "OPENLINEAGE_URL": "http://127.0.0.1:5000/",
        "OPENLINEAGE_NAMESPACE": "sparkify",
        "OPENLINEAGE_API_KEY": "k-123",
        "OPENLINEAGE_PARENT_ID": f"prefect/songs_etl.songs-etl-daily/{RUN_ID}",
    }

    settings = job_lineage.listener_settings(environ)

    [jar] = jars.cached_paths(job_lineage.LOCK, "the test")  # make test fetched it
    assert settings == {
        "spark.extraListeners": "io.openlineage.spark.agent.OpenLineageSparkListener",
        "spark.driver.extraClassPath": jar,
        "spark.openlineage.transport.type": "http",
        "spark.openlineage.transport.url": "http://127.0.0.1:5000",
        "spark.openlineage.transport.endpoint": "api/v1/lineage",
        "spark.openlineage.transport.timeoutInMillis": "5000",
        "spark.openlineage.transport.auth.type": "api_key",
        "spark.openlineage.transport.auth.apiKey": "k-123",
        "spark.openlineage.namespace": "sparkify",
        "spark.openlineage.parentJobNamespace": "prefect",
        "spark.openlineage.parentJobName": "songs_etl.songs-etl-daily",
        "spark.openlineage.parentRunId": RUN_ID,
        "spark.openlineage.rootParentJobNamespace": "prefect",
        "spark.openlineage.rootParentJobName": "songs_etl.songs-etl-daily",
        "spark.openlineage.rootParentRunId": RUN_ID,
        "spark.redaction.regex": job_lineage.REDACTION_REGEX,
    }
    # Spark hides the values of settings whose keys match its redaction pattern.
    redacted = [key for key in settings if re.search(job_lineage.REDACTION_REGEX, key)]
    assert redacted == ["spark.openlineage.transport.auth.apiKey"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OPENLINEAGE_URL", "ftp://host", "must be an http:// or https:// address"),
        ("OPENLINEAGE_PARENT_ID", "prefect/songs_etl", "must be namespace/job/run-id"),
        ("OPENLINEAGE_PARENT_ID", "prefect/songs_etl/not-a-uuid", "with a UUID run id"),
    ],
)
def test_malformed_lineage_variables_stop_the_job_before_its_jvm_starts(
    variable: str, value: str, message: str
) -> None:
    environ = {"OPENLINEAGE_URL": "http://127.0.0.1:5000", variable: value}
    with pytest.raises(JobError, match=message):
        job_lineage.listener_settings(environ)


def test_a_complete_event_carries_each_table_with_its_schema_rows_and_checks() -> None:
    summary = RunSummary(
        run_id="r1",
        mode="full",
        run_date=None,
        songs_uri="s3://raw/song_data",
        logs_uri="s3://raw/log_data",
        output_uri="s3://lake/star",
        started_at="2026-12-06T00:00:00Z",
        tables={"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12},
        checks=[
            CheckResult("key unique", "users", True, "0 duplicates"),
            CheckResult("foreign keys", "songplays", False, "1 song_id not in songs"),
        ],
    )
    job_args = JobArgs("s3://raw/song_data", "s3://raw/log_data", "s3://lake/star")

    event = Serde.to_dict(
        complete_event(FlowRunName("prefect", "songs_etl", RUN_ID), job_args, summary)
    )

    parsed(event)  # the client's own classes accept it
    assert event["eventType"] == "COMPLETE"
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [
        ("s3://raw", "song_data"),
        ("s3://raw", "log_data"),
    ]
    outputs = {d["name"]: d for d in event["outputs"]}
    assert {name: d["namespace"] for name, d in outputs.items()} == {
        f"star/{table}": "s3://lake" for table in TABLES
    }
    rows = {name: d["outputFacets"]["outputStatistics"]["rowCount"] for name, d in outputs.items()}
    assert rows == {f"star/{table}": count for table, count in summary.tables.items()}
    songplays_fields = outputs["star/songplays"]["facets"]["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in songplays_fields] == [
        (column.name, column.data_type.simpleString()) for column in TABLES["songplays"].columns
    ]
    assertions = {
        name: [
            (a["assertion"], a["success"], a["description"])
            for a in d["facets"]["dataQualityAssertions"]["assertions"]
        ]
        for name, d in outputs.items()
    }
    assert assertions == {
        "star/songplays": [("foreign keys", False, "1 song_id not in songs")],
        "star/users": [("key unique", True, "0 duplicates")],
        "star/songs": [],
        "star/artists": [],
        "star/time": [],
    }


def run_with_a_missing_input(tmp_path: Path, run_date: date | None = None) -> Any:
    """A local flow run that fails in its preflight (no song folder): no JVM starts."""
    return songs_etl(
        runner="local",
        songs_uri=str(tmp_path / "nowhere"),
        logs_uri=str(tmp_path),
        output_uri=str(tmp_path / "out"),
        run_date=run_date,
        return_state=True,
    )


@pytest.mark.usefixtures("prefect_api")
def test_a_failed_flow_run_sends_start_then_fail_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lineage_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "sparkify-tests")
        state = run_with_a_missing_input(tmp_path, run_date=date(2018, 11, 2))
        events = receiver.of_job("songs_etl")

    assert state.is_failed()
    flow_run_id = str(state.state_details.flow_run_id)
    for event in events:
        parsed(event)
    assert [(e["eventType"], e["run"]["runId"], e["job"]["namespace"]) for e in events] == [
        ("START", flow_run_id, "sparkify-tests"),
        ("FAIL", flow_run_id, "sparkify-tests"),
    ]
    start, fail = events
    how = start["run"]["facets"]["sparkify_run"]
    assert {key: how[key] for key in ("runner", "mode", "runDate")} == {
        "runner": "local",
        "mode": "daily",
        "runDate": "2018-11-02",
    }
    assert start["run"]["facets"]["nominalTime"]["nominalStartTime"] == "2018-11-02T00:00:00Z"
    assert [(d["namespace"], d["name"]) for d in start["inputs"]] == [
        ("file", str((tmp_path / "nowhere").resolve())),
        ("file", str(tmp_path.resolve())),
    ]
    message = fail["run"]["facets"]["errorMessage"]["message"]
    assert message.startswith("FileNotFoundError: song_data folder ")
    assert "nowhere does not exist" in message


@pytest.mark.usefixtures("prefect_api")
def test_a_dead_lineage_backend_costs_the_run_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = dead_url()
    monkeypatch.setenv("OPENLINEAGE_URL", url)

    state = run_with_a_missing_input(tmp_path)

    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match=r"song_data folder .*nowhere does not exist"):
        state.result()  # the run's own failure, not the backend's
    warnings = [
        log.message
        for log in flow_run_logs(state.state_details.flow_run_id)
        if log.message.startswith("Lineage: the ")
    ]
    assert [w.split(" event was not sent to ")[0] for w in warnings] == [
        "Lineage: the START",
        "Lineage: the FAIL",
    ]
    assert all(f"not sent to {url} (" in w for w in warnings)


def test_the_flow_names_its_lineage_settings_in_the_job_environment() -> None:
    settings = read_settings(
        {"OPENLINEAGE_URL": "http://127.0.0.1:5000", "OPENLINEAGE_NAMESPACE": "ns"}
    )
    assert settings is not None
    parent = job_lineage.ParentRun("ns", "songs_etl", RUN_ID)

    environment = settings.job_environment(parent)

    assert environment == {
        "OPENLINEAGE_URL": "http://127.0.0.1:5000",
        "OPENLINEAGE_ENDPOINT": "api/v1/lineage",
        "OPENLINEAGE_NAMESPACE": "ns",
        "OPENLINEAGE_PARENT_ID": f"ns/songs_etl/{RUN_ID}",
    }
    assert job_lineage.ParentRun.parse(environment["OPENLINEAGE_PARENT_ID"]) == parent
    with_key = replace(settings, api_key="k-123")
    assert with_key.job_environment(parent)["OPENLINEAGE_API_KEY"] == "k-123"
    assert "k-123" not in repr(with_key)  # a logged settings object shows no key
