"""OpenLineage for the flow: its own run events, and the settings the Spark job follows.

Off by default. ``OPENLINEAGE_URL`` (with ``OPENLINEAGE_ENDPOINT`` and
``OPENLINEAGE_NAMESPACE``), or an ``openlineage.yml`` with an http transport
(``OPENLINEAGE_CONFIG``, ``./openlineage.yml`` or ``~/.openlineage/openlineage.yml``), turns
it on. The API key, when the backend needs one, comes from a Prefect ``Secret`` block
named by the flow's ``lineage_api_key_block``, never from code or YAML.

A backend that is down never fails a run: each event is sent once with a short timeout,
and a failure is a warning in the run's log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import RunEvent
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
from prefect import get_run_logger
from prefect.blocks.system import Secret
from prefect.runtime import deployment, flow_run

from spark_etl import lineage as job_lineage
from spark_etl.args import JobArgs
from spark_etl.errors import JobError
from spark_etl.summary import RunSummary
from tasks.ops.lineage_events import (
    FlowRunName,
    complete_event,
    fail_event,
    start_event,
)

DEFAULT_NAMESPACE = job_lineage.DEFAULT_NAMESPACE
TIMEOUT_SECONDS = job_lineage.TIMEOUT_MILLIS / 1000
CONFIG_FILE = "openlineage.yml"


class LineageConfigError(ValueError):
    """The OpenLineage settings cannot be used as they are."""


@dataclass(frozen=True)
class LineageSettings:
    """Where the events go. The API key is kept out of ``repr`` (and so out of logs)."""

    url: str
    endpoint: str = job_lineage.DEFAULT_ENDPOINT
    namespace: str = DEFAULT_NAMESPACE
    api_key: str = field(default="", repr=False)

    def job_environment(self, parent: job_lineage.ParentRun) -> dict[str, str]:
        """The variables that turn the Spark job's listener on, under ``parent``."""
        environment = {
            "OPENLINEAGE_URL": self.url,
            "OPENLINEAGE_ENDPOINT": self.endpoint,
            "OPENLINEAGE_NAMESPACE": self.namespace,
            "OPENLINEAGE_PARENT_ID": parent.as_variable(),
        }
        if self.api_key:
            environment["OPENLINEAGE_API_KEY"] = self.api_key
        return environment


def read_settings(
    environ: Mapping[str, str], api_key_block: str | None = None
) -> LineageSettings | None:
    """The lineage settings the environment names; None when lineage is off.

    Raises:
        LineageConfigError: The URL is not http(s), the YAML is unusable or holds an API key.
        ValueError: No Secret block of that name exists.
    """
    transport = {} if job_lineage.is_disabled(environ) else _transport(environ)
    if not transport.get("url"):
        return None
    try:
        url = job_lineage.checked_url(str(transport["url"]))
    except JobError as err:
        raise LineageConfigError(str(err)) from err
    api_key = _secret(api_key_block) if api_key_block else ""
    return LineageSettings(
        url=url,
        endpoint=str(transport.get("endpoint") or job_lineage.DEFAULT_ENDPOINT),
        namespace=environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE,
        api_key=str(api_key),
    )


def _secret(block_name: str) -> str:
    """The value of a Prefect ``Secret`` block (called from a flow: loads synchronously)."""
    block: Any = Secret.load(block_name, _sync=True)  # type: ignore[call-arg]
    return str(block.get())


def _transport(environ: Mapping[str, str]) -> dict[str, Any]:
    """The http transport the variables, or else the first ``openlineage.yml``, describe."""
    if environ.get("OPENLINEAGE_URL", "").strip():
        return {
            "url": environ["OPENLINEAGE_URL"],
            "endpoint": environ.get("OPENLINEAGE_ENDPOINT"),
        }
    config = _config_file(environ)
    if config is None:
        return {}
    try:
        transport = (yaml.safe_load(config.read_text()) or {}).get("transport") or {}
    except (OSError, yaml.YAMLError, AttributeError) as err:
        raise LineageConfigError(f"{config} is not a readable OpenLineage config: {err}") from err
    if transport.get("type") != "http":
        raise LineageConfigError(f"{config}: only an http transport is supported here")
    if (transport.get("auth") or {}).get("apiKey"):
        raise LineageConfigError(
            f"{config} holds an API key: keep it in a Prefect Secret block and name the block "
            "in the flow's lineage_api_key_block"
        )
    return dict(transport)


def _config_file(environ: Mapping[str, str]) -> Path | None:
    candidates = [
        Path(environ["OPENLINEAGE_CONFIG"]) if environ.get("OPENLINEAGE_CONFIG") else None,
        Path.cwd() / CONFIG_FILE,
        Path.home() / ".openlineage" / CONFIG_FILE,
    ]
    return next((path for path in candidates if path is not None and path.is_file()), None)


class RunLineage:
    """The run events of one flow run; each sent once, a failure only warned about."""

    def __init__(self, settings: LineageSettings, name: FlowRunName, job_args: JobArgs) -> None:
        self.settings, self.name, self.job_args = settings, name, job_args
        self._client = OpenLineageClient(transport=HttpTransport(http_config(settings)))

    def job_environment(self) -> dict[str, str]:
        """What the Spark job's listener needs to report under this flow run."""
        parent = job_lineage.ParentRun(self.name.namespace, self.name.job_name, self.name.run_id)
        return self.settings.job_environment(parent)

    def started(self, runner: str) -> None:
        self._send(start_event(self.name, self.job_args, runner))

    def completed(self, summary: RunSummary) -> None:
        self._send(complete_event(self.name, self.job_args, summary))

    def failed(self, error: BaseException) -> None:
        self._send(fail_event(self.name, self.job_args, error))

    def _send(self, event: RunEvent) -> None:
        try:
            self._client.emit(event)
        # A refused connection, a timeout or a 5xx is the backend's failure, never the run's.
        except Exception as err:
            get_run_logger().warning(
                "Lineage: the %s event was not sent to %s (%s: %s); the run goes on",
                event.eventType.value if event.eventType else "run",
                self.settings.url,
                type(err).__name__,
                err,
            )


class NoLineage:
    """Lineage off: nothing is sent, and the job gets no listener."""

    def job_environment(self) -> dict[str, str]:
        return {}

    def completed(self, summary: RunSummary) -> None:
        """Nothing to send."""


def http_config(settings: LineageSettings) -> HttpConfig:
    """One try with a short timeout: a lineage backend must not hold the run up."""
    config = HttpConfig(
        url=settings.url,
        endpoint=settings.endpoint,
        timeout=TIMEOUT_SECONDS,
        retry={"total": 0},
    )
    if settings.api_key:
        config.auth = ApiKeyTokenProvider({"apiKey": settings.api_key})
    return config


@contextmanager
def lineage_of_run(
    api_key_block: str | None, job_args: JobArgs, runner: str
) -> Iterator[RunLineage | NoLineage]:
    """START now, FAIL with the error if the block raises; the block calls ``completed``.

    Lineage is off (nothing sent) unless the environment turns it on (:func:`read_settings`).
    """
    settings = read_settings(os.environ, api_key_block)
    if settings is None:
        yield NoLineage()
        return
    lineage = RunLineage(settings, current_run_name(settings.namespace), job_args)
    get_run_logger().info("Lineage: sending OpenLineage events to %s", settings.url)
    lineage.started(runner)
    try:
        yield lineage
    except BaseException as err:
        lineage.failed(err)
        raise


def current_run_name(namespace: str) -> FlowRunName:
    """This flow run as OpenLineage names it: the deployment's name, or the flow's."""
    flow_name = flow_run.flow_name or "songs_etl"
    job_name = f"{flow_name}.{deployment.name}" if deployment.name else flow_name
    return FlowRunName(namespace, job_name, str(flow_run.id))
