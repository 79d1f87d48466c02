"""The songs_etl flow with the local runner, against a real (ephemeral) Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from pyspark.sql import SparkSession

from flows.lake_maintenance import lake_maintenance
from flows.songs_etl import songs_etl
from tests.lakes import assert_same_tables

pytestmark = pytest.mark.usefixtures("prefect_api")


def run_artifacts(flow_run_id: object) -> list[object]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["songs-etl-run"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )


@pytest.mark.integration  # the job as its own process
def test_local_run_builds_the_tables_and_publishes_the_report(
    tmp_path: Path,
    spark: SparkSession,
    lake: Path,
    full_output: Path,
) -> None:

    state = songs_etl(
        runner="local",
        songs_uri=str(lake / "song_data"),
        logs_uri=str(lake / "log_data"),
        output_uri=str(tmp_path / "out"),
        return_state=True,
    )

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.tables == {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}
    artifacts = run_artifacts(state.state_details.flow_run_id)
    assert len(artifacts) == 1
    rows = json.loads(artifacts[0].data)  # table artifacts are stored as JSON text
    assert {(row["name"], row["rows"]) for row in rows if row["kind"] == "table"} == {
        ("songplays", 12),
        ("users", 2),
        ("songs", 2),
        ("artists", 2),
        ("time", 12),
    }
    # The job's own JVM writes through spark_etl/localfs: the same tables as an in-process
    # run, with the usual permissions and no .crc side files.
    assert_same_tables(spark, tmp_path / "out", full_output)
    written = list((tmp_path / "out").rglob("*"))
    assert [path for path in written if path.name.endswith(".crc")] == []
    modes = {oct(path.stat().st_mode & 0o777) for path in written if path.suffix == ".parquet"}
    folders = {oct(path.stat().st_mode & 0o777) for path in written if path.is_dir()}
    assert (modes, folders) == ({"0o644"}, {"0o755"})


def test_a_missing_input_fails_the_flow_before_spark_starts(tmp_path: Path) -> None:
    state = songs_etl(
        runner="local",
        songs_uri=str(tmp_path / "nowhere"),
        logs_uri=str(tmp_path),
        output_uri=str(tmp_path / "out"),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match=r"song_data folder .*nowhere does not exist"):
        state.result()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("runner", ["emr", "emr-serverless"])
def test_the_iceberg_format_on_aws_without_a_glue_database_is_refused_before_any_cost(
    tmp_path: Path, runner: str
) -> None:
    state = songs_etl(
        runner=runner,
        songs_uri="s3://raw/song_data",
        logs_uri="s3://raw/log_data",
        output_uri="s3://lake/star",
        table_format="iceberg",
        glue_database=None,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="name its database in glue_database"):
        state.result()


@pytest.mark.integration  # the job and maintenance as their own processes
def test_a_local_run_writes_iceberg_tables_when_asked_and_maintenance_keeps_them(
    tmp_path: Path, lake: Path
) -> None:
    state = songs_etl(
        runner="local",
        songs_uri=str(lake / "song_data"),
        logs_uri=str(lake / "log_data"),
        output_uri=str(tmp_path / "out"),
        table_format="iceberg",
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.table_format == "iceberg"
    assert summary.tables == {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}
    for table, ids in summary.snapshots.items():
        assert ids["before"] is None and ids["after"], table
        assert (tmp_path / "out" / table / "metadata" / "version-hint.text").is_file()

    maintained = lake_maintenance(
        str(tmp_path / "out"), expire_after_hours=0, retain_last=1, return_state=True
    )

    assert maintained.is_completed(), maintained.message
    report = maintained.result()
    assert {t["table"]: t["rows"] for t in report["tables"]} == summary.tables
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["lake-maintenance"])),
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[maintained.state_details.flow_run_id])
            ),
        )
    assert sorted(row["table"] for row in json.loads(artifacts[0].data)) == sorted(summary.tables)
