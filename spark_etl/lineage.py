"""OpenLineage's Spark listener in the job, under the flow's run.

A JVM the job starts itself gets it from :func:`listener_settings`; under spark-submit on
EMR and EMR Serverless the runner adds :func:`submit_options` to the step or job run.

Off unless ``OPENLINEAGE_URL`` is set (and ``OPENLINEAGE_DISABLED`` is not true): the
OpenLineage client's own variables, so one environment turns lineage on for the flow and
for the job alike. The listener then sends the Spark application's events (its inputs,
outputs and column-level lineage) to ``OPENLINEAGE_URL`` + ``OPENLINEAGE_ENDPOINT``, with
``OPENLINEAGE_API_KEY`` as a bearer token when set, in ``OPENLINEAGE_NAMESPACE``. The
flow names itself as the parent run in ``OPENLINEAGE_PARENT_ID``
(``namespace/job/run-id``, as OpenLineage's dbt integration reads it), so a lineage tool
shows the Spark application under the Prefect run that started it.

The listener is one pinned jar (``spark_etl/lineage_jars/``, fetched by ``make jars``; on
AWS uploaded beside the job code). A lineage backend that is down costs the run nothing:
the listener logs and goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spark_etl import jars, s3a
from spark_etl.errors import JobError

# A path, not a look in the folder: the zipped job (EMR) ships no lock file, and needs none.
LOCK = Path(__file__).resolve().parent / "lineage_jars" / "openlineage-spark-1.53.0.lock"
LISTENER = "io.openlineage.spark.agent.OpenLineageSparkListener"
DEFAULT_ENDPOINT = "api/v1/lineage"
DEFAULT_NAMESPACE = "default"  # OpenLineage's own default
# A backend that does not answer holds a Spark event thread no longer than this.
TIMEOUT_MILLIS = 5000
# Spark shows its settings in the UI and the event log, redacting keys that match this
# pattern; its default (secret|password|token|access.key) would show the API key.
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|api[._]?key"


@dataclass(frozen=True)
class ParentRun:
    """The run that started the job: the flow run, as OpenLineage names it."""

    namespace: str
    job_name: str
    run_id: str

    def as_variable(self) -> str:
        """The value of ``OPENLINEAGE_PARENT_ID``."""
        return f"{self.namespace}/{self.job_name}/{self.run_id}"

    @classmethod
    def parse(cls, value: str) -> ParentRun:
        """Read ``OPENLINEAGE_PARENT_ID``: ``namespace/job/run-id`` (a namespace may hold ``/``).

        Raises:
            JobError: The value is not of that shape, or the run id is not a UUID.
        """
        namespace, _, rest = value.strip().rpartition("/")
        namespace, _, job_name = namespace.rpartition("/")
        try:
            run_id = str(uuid.UUID(rest))
        except ValueError:
            run_id = ""
        if not (namespace and job_name and run_id):
            raise JobError(
                f"OPENLINEAGE_PARENT_ID must be namespace/job/run-id with a UUID run id, "
                f"not {value!r}"
            )
        return cls(namespace, job_name, run_id)


def is_disabled(environ: Mapping[str, str]) -> bool:
    """Whether ``OPENLINEAGE_DISABLED`` turns lineage off, whatever else is set."""
    return environ.get("OPENLINEAGE_DISABLED", "").strip().lower() in ("true", "1", "yes")


def is_on(environ: Mapping[str, str]) -> bool:
    """Whether the OpenLineage variables turn lineage on."""
    return bool(environ.get("OPENLINEAGE_URL", "").strip()) and not is_disabled(environ)


def listener_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Spark settings that start the listener, for a JVM about to start; none when off.

    Raises:
        JobError: ``OPENLINEAGE_URL`` is not an http(s) address, the parent is malformed,
            or the listener's jar is not fetched (``make jars``).
    """
    if not is_on(environ):
        return {}
    jar = jars.cached_paths(LOCK, "lineage (OPENLINEAGE_URL)")[0]
    return {**spark_settings(environ), "spark.driver.extraClassPath": jar}


def submit_options(environ: Mapping[str, str], jar_uri: str) -> list[str]:
    """spark-submit options that run the listener from ``jar_uri`` (EMR, EMR Serverless).

    Without the API key: a step's or job run's arguments are shown to anyone who may
    describe it (docs/operations.md, "Lineage").

    Raises:
        JobError: As :func:`listener_settings`.
    """
    settings = spark_settings(environ, with_api_key=False)
    confs = [part for key, value in settings.items() for part in ("--conf", f"{key}={value}")]
    return ["--jars", jar_uri, *confs]


def spark_settings(environ: Mapping[str, str], with_api_key: bool = True) -> dict[str, str]:
    """The listener's settings, its jar aside: where it sends, as whose child, and how.

    Raises:
        JobError: ``OPENLINEAGE_URL`` is not an http(s) address, or the parent is malformed.
    """
    settings = {
        "spark.extraListeners": LISTENER,
        "spark.openlineage.transport.type": "http",
        "spark.openlineage.transport.url": checked_url(environ["OPENLINEAGE_URL"]),
        "spark.openlineage.transport.endpoint": environ.get(
            "OPENLINEAGE_ENDPOINT", DEFAULT_ENDPOINT
        ),
        "spark.openlineage.transport.timeoutInMillis": str(TIMEOUT_MILLIS),
        "spark.openlineage.namespace": environ.get("OPENLINEAGE_NAMESPACE", DEFAULT_NAMESPACE),
        "spark.redaction.regex": REDACTION_REGEX,
    }
    api_key = environ.get("OPENLINEAGE_API_KEY", "")
    if api_key and with_api_key:
        settings["spark.openlineage.transport.auth.type"] = "api_key"
        settings["spark.openlineage.transport.auth.apiKey"] = api_key
    parent = environ.get("OPENLINEAGE_PARENT_ID", "")
    if parent:
        settings.update(parent_settings(ParentRun.parse(parent)))
    return settings


def parent_settings(parent: ParentRun) -> dict[str, str]:
    """The listener's settings that put the Spark application under ``parent``."""
    return {
        "spark.openlineage.parentJobNamespace": parent.namespace,
        "spark.openlineage.parentJobName": parent.job_name,
        "spark.openlineage.parentRunId": parent.run_id,
        "spark.openlineage.rootParentJobNamespace": parent.namespace,
        "spark.openlineage.rootParentJobName": parent.job_name,
        "spark.openlineage.rootParentRunId": parent.run_id,
    }


def checked_url(value: str) -> str:
    """``OPENLINEAGE_URL``, checked to be an http(s) address.

    Raises:
        JobError: It is not.
    """
    return s3a.checked_http_url("OPENLINEAGE_URL", value)
