"""A local run with lineage on: the flow's events and the Spark listener's, linked.

Integration lane: the job runs as its own process (a JVM with OpenLineage's listener).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret

from flows.songs_etl import songs_etl
from tests.lineage_receiver import lineage_receiver, parsed
from tests.prefect_records import flow_run_logs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

API_KEY = "lineage-test-key-5f1c"


def test_a_local_run_sends_its_tables_and_the_spark_job_reports_under_the_flow_run(
    tmp_path: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Secret(value=API_KEY).save("lineage-test-key", overwrite=True)
    with lineage_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        state = songs_etl(
            runner="local",
            songs_uri=str(lake / "song_data"),
            logs_uri=str(lake / "log_data"),
            output_uri=str(tmp_path / "out"),
            lineage_api_key_block="lineage-test-key",
            return_state=True,
        )
        events, headers = list(receiver.events), list(receiver.headers)

    assert state.is_completed(), state.message
    summary = state.result()
    flow_run_id = str(state.state_details.flow_run_id)
    for event in events:
        parsed(event)
    flow_events = [e for e in events if e["job"]["name"] == "songs_etl"]
    assert [(e["eventType"], e["run"]["runId"]) for e in flow_events] == [
        ("START", flow_run_id),
        ("COMPLETE", flow_run_id),
    ]
    outputs = flow_events[1]["outputs"]
    assert {
        (d["namespace"], d["name"], d["outputFacets"]["outputStatistics"]["rowCount"])
        for d in outputs
    } == {
        ("file", str((tmp_path / "out" / table).resolve()), rows)
        for table, rows in summary.tables.items()
    }
    # The Spark application's own events: the application under the flow run, each of
    # its queries under the application, and the flow run at the root of all of them.
    spark_events = [e for e in events if e["job"]["name"] != "songs_etl"]
    application = [e for e in spark_events if e["job"]["name"] == "sparkify_lake"]
    assert {parent_of(e) for e in application} == {("default", "songs_etl", flow_run_id)}
    application_run = {e["run"]["runId"] for e in application}
    queries = [e for e in spark_events if e["job"]["name"] != "sparkify_lake"]
    assert {parent_of(e) for e in queries} == {("default", "sparkify_lake", *application_run)}
    roots = {root_of(e) for e in spark_events}
    assert roots == {("default", "songs_etl", flow_run_id)}
    written = {(d["namespace"], d["name"]) for e in queries for d in e.get("outputs", [])}
    out = str((tmp_path / "out").resolve())
    assert written and all(ns == "file" and name.startswith(out) for ns, name in written), written
    # Every event carried the key from the Secret block; no log line shows it.
    assert {h.get("Authorization") for h in headers} == {f"Bearer {API_KEY}"}
    logs = flow_run_logs(state.state_details.flow_run_id)
    assert [log.message for log in logs if API_KEY in log.message] == []


def parent_of(event: dict[str, Any]) -> tuple[str, str, str]:
    parent = event["run"]["facets"]["parent"]
    return parent["job"]["namespace"], parent["job"]["name"], parent["run"]["runId"]


def root_of(event: dict[str, Any]) -> tuple[str, str, str]:
    root = event["run"]["facets"]["parent"]["root"]
    return root["job"]["namespace"], root["job"]["name"], root["run"]["runId"]
