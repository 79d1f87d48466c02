"""An OpenLineage backend for tests: an HTTP server on 127.0.0.1 that keeps what it is sent.

Events are read back through the OpenLineage client's own model classes (:func:`parsed`),
so an event a real backend would refuse for its shape fails the test that reads it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    error_message_run,
    output_statistics_output_dataset,
    parent_run,
    schema_dataset,
)

from spark_etl import jars
from spark_etl import lineage as job_lineage


class LineageReceiver:
    """The events POSTed to ``<url>/api/v1/lineage``, in arrival order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.events.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                """Quiet: the test reads the events, not the access log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def of_job(self, job_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self.events if event["job"]["name"] == job_name]

    def serve(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def lineage_receiver() -> Iterator[LineageReceiver]:
    receiver = LineageReceiver()
    receiver.serve()
    try:
        yield receiver
    finally:
        receiver.close()


def expected_listener(code_uri: str, url: str, flow_run_id: str) -> tuple[str, list[str]]:
    """Where an AWS runner uploads the listener's jar, and the spark-submit options that run
    it, for a flow run of ``songs_etl`` sending to ``url`` (no API key on AWS)."""
    [pinned] = jars.read_lock(job_lineage.LOCK)
    jar_uri = f"{code_uri}/openlineage-spark_2.13-1.53.0-{pinned.sha256[:16]}.jar"
    environ = {"OPENLINEAGE_URL": url, "OPENLINEAGE_PARENT_ID": f"default/songs_etl/{flow_run_id}"}
    return jar_uri, job_lineage.submit_options(environ, jar_uri)


def dead_url() -> str:
    """An address on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def parsed(event: dict[str, Any]) -> RunEvent:
    """``event`` rebuilt with the client's model classes (their validators run)."""
    run_facets: dict[str, Any] = {}
    facets = event["run"].get("facets", {})
    if "errorMessage" in facets:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            **_fields(facets["errorMessage"])
        )
    if "parent" in facets:
        parent = facets["parent"]
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent["run"]["runId"]),
            job=parent_run.Job(**parent["job"]),
        )
    return RunEvent(
        eventType=RunState(event["eventType"]),
        eventTime=event["eventTime"],
        producer=event["producer"],
        run=Run(runId=event["run"]["runId"], facets=run_facets),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"]),
        inputs=[InputDataset(d["namespace"], d["name"]) for d in event.get("inputs", [])],
        outputs=[_output(d) for d in event.get("outputs", [])],
    )


def _output(dataset: dict[str, Any]) -> OutputDataset:
    facets, output_facets = dataset.get("facets", {}), dataset.get("outputFacets", {})
    parsed_facets: dict[str, Any] = {}
    if "schema" in facets:
        parsed_facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(**_fields(field))
                for field in facets["schema"]["fields"]
            ]
        )
    if "dataQualityAssertions" in facets:
        assertions = facets["dataQualityAssertions"]["assertions"]
        parsed_facets["dataQualityAssertions"] = (
            data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
                assertions=[data_quality_assertions_dataset.Assertion(**a) for a in assertions]
            )
        )
    parsed_output: dict[str, Any] = {}
    if "outputStatistics" in output_facets:
        parsed_output["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                **_fields(output_facets["outputStatistics"])
            )
        )
    return OutputDataset(
        dataset["namespace"], dataset["name"], facets=parsed_facets, outputFacets=parsed_output
    )


def _fields(facet: dict[str, Any]) -> dict[str, Any]:
    """A facet's own fields, without the ``_producer`` and ``_schemaURL`` every facet has."""
    return {key: value for key, value in facet.items() if not key.startswith("_")}
