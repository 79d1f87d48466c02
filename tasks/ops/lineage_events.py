"""The flow's OpenLineage events (Prefect-free): what a run read, built and checked.

One run of ``songs_etl`` is one OpenLineage run: START when it begins, then COMPLETE or
FAIL. The job is named after the deployment (or the flow when run as a script), the run
id is the Prefect flow run's, and the inputs and outputs are datasets in the namespace of
their bucket (``s3://bucket``) or ``file``. The outputs carry what the run summary says of
each table: its schema (from the table registry), its row count and its post-load checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    schema_dataset,
)

from spark_etl.args import JobArgs
from spark_etl.summary import RunSummary
from spark_etl.tables import TABLES, TableSpec
from tasks.ops.s3 import parse_s3_uri

PRODUCER = "https://github.com/sparkify-lake/sparkify-lake"
LOCAL_NAMESPACE = "file"


@attr.define
class SparkifyRunRunFacet(RunFacet):
    """How the flow ran the job: the runner, full or daily, and the day of a daily run."""

    runner: str
    mode: str
    runDate: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/blob/main/docs/operations.md#lineage"


@attr.define(frozen=True)
class FlowRunName:
    """The flow run as OpenLineage names it."""

    namespace: str
    job_name: str
    run_id: str


def dataset_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)``: ``s3://bucket`` and the key, or ``file`` and the path."""
    if uri.lower().startswith(("s3://", "s3a://", "s3n://")):
        location = parse_s3_uri(uri)
        return f"s3://{location.bucket}", location.key.rstrip("/")
    return LOCAL_NAMESPACE, str(Path(uri.removeprefix("file://")).resolve())


def start_event(name: FlowRunName, job_args: JobArgs, runner: str) -> RunEvent:
    """START: the run's inputs, and how it runs."""
    facets: dict[str, RunFacet] = {
        "sparkify_run": SparkifyRunRunFacet(
            runner=runner,
            mode="daily" if job_args.run_date else "full",
            runDate=job_args.run_date.isoformat() if job_args.run_date else None,
        )
    }
    if job_args.run_date:  # the day a daily run stands for
        facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=f"{job_args.run_date.isoformat()}T00:00:00Z"
        )
    return _event(RunState.START, name, facets, inputs=_inputs(job_args))


def complete_event(name: FlowRunName, job_args: JobArgs, summary: RunSummary) -> RunEvent:
    """COMPLETE: the inputs, and the five tables with their schemas, rows and checks."""
    outputs = [
        _output(job_args.output_uri, TABLES[table], rows, summary)
        for table, rows in summary.tables.items()
        if table in TABLES
    ]
    return _event(RunState.COMPLETE, name, {}, inputs=_inputs(job_args), outputs=outputs)


def fail_event(name: FlowRunName, job_args: JobArgs, error: BaseException) -> RunEvent:
    """FAIL: the error the flow run failed with."""
    facet = error_message_run.ErrorMessageRunFacet(
        message=f"{type(error).__name__}: {error}", programmingLanguage="python"
    )
    return _event(RunState.FAIL, name, {"errorMessage": facet}, inputs=_inputs(job_args))


def _event(
    state: RunState,
    name: FlowRunName,
    run_facets: dict[str, RunFacet],
    inputs: list[InputDataset],
    outputs: list[OutputDataset] | None = None,
) -> RunEvent:
    job_type = job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="PREFECT", jobType="FLOW"
    )
    return RunEvent(
        eventType=state,
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=name.run_id, facets=run_facets),
        job=Job(namespace=name.namespace, name=name.job_name, facets={"jobType": job_type}),
        producer=PRODUCER,
        inputs=inputs,
        outputs=outputs or [],
    )


def _inputs(job_args: JobArgs) -> list[InputDataset]:
    return [
        InputDataset(namespace=namespace, name=path)
        for namespace, path in map(dataset_name, (job_args.songs_uri, job_args.logs_uri))
    ]


def _output(output_uri: str, spec: TableSpec, rows: int, summary: RunSummary) -> OutputDataset:
    namespace, folder = dataset_name(output_uri)
    statistics = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows)
    return OutputDataset(
        namespace=namespace,
        name=f"{folder}/{spec.name}",
        facets={"schema": _schema(spec), "dataQualityAssertions": _assertions(spec, summary)},
        outputFacets={"outputStatistics": statistics},
    )


def _schema(spec: TableSpec) -> DatasetFacet:
    """The table's columns and Spark types, from the table registry."""
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=column.name, type=column.data_type.simpleString()
            )
            for column in spec.columns
        ]
    )


def _assertions(spec: TableSpec, summary: RunSummary) -> DatasetFacet:
    """The run's post-load checks of the table, passed or not.

    OpenLineage's model files this facet under an input's facets (checks of what a job
    read); here the job checks what it wrote, so it rides on the output dataset, where
    lineage tools show a dataset's assertions.
    """
    checks = data_quality_assertions_dataset
    return cast(
        DatasetFacet,
        checks.DataQualityAssertionsDatasetFacet(
            assertions=[
                checks.Assertion(
                    assertion=check.name, success=check.passed, description=check.detail
                )
                for check in summary.checks
                if check.table == spec.name
            ]
        ),
    )
