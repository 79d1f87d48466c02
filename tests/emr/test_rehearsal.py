"""The EMR rehearsal: the songs_etl flow on moto, each step run for real by spark-submit.

The zip the flow uploads, the step's spark-submit line, the job's writes, the summary
read back from S3 and the Glue partitions meet here, on the Spark line EMR runs
(``.venv-emr``, ``make emr-spark``). Everything is checked through independent clients.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.glue.responses import GlueResponse
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from flows.songs_etl import songs_etl
from rehearsal.emr import (
    ICEBERG_DATABASE,
    LAKE_BUCKET,
    LOG_BUCKET,
    REGION,
    EmrSpark,
    StepRunner,
    iceberg_parameters,
    prepare_aws,
    upload_day,
)
from spark_etl import s3a
from spark_etl.lake import day_log_parts
from spark_etl.summary import RunSummary
from spark_etl.tables import TABLES
from tasks.ops.emr import ICEBERG_CONFIGURATION
from tasks.ops.names import PROJECT_ROOT
from tests.glue_iceberg import glue_iceberg_table
from tests.lakes import DAYS, assert_same_tables, catalogue, day_events, read_tables, write_lake
from tests.lineage_receiver import lineage_receiver, parsed
from tests.prefect_records import artifact_rows

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def step_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StepRunner]:
    """moto for AWS and a runner that executes every submitted step with spark-submit."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws(), StepRunner(tmp_path / "rehearsal", EmrSpark.installed()) as runner:
        yield runner
    assert runner.errors == []


def s3() -> Any:
    return boto3.client("s3", region_name=REGION)


def download(bucket: str, prefix: str, folder: Path) -> Path:
    """Copy an S3 prefix to a local folder (to read the tables with Spark)."""
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            if entry["Key"].endswith("/"):
                continue  # a folder marker S3A made (mkdirs), not a file
            target = folder / entry["Key"].removeprefix(prefix).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3().get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
    return folder


def step_log(cluster_id: str, step_id: str, name: str) -> str:
    key = f"emr/{cluster_id}/steps/{step_id}/{name}.gz"
    body = s3().get_object(Bucket=LOG_BUCKET, Key=key)["Body"].read()
    return gzip.decompress(body).decode("utf-8")


def steps_run() -> list[tuple[str, str, str]]:
    """(cluster id, step id, step state) of every step, oldest cluster first."""
    emr = boto3.client("emr", region_name=REGION)
    clusters = sorted(
        emr.list_clusters()["Clusters"], key=lambda c: c["Status"]["Timeline"]["CreationDateTime"]
    )
    return [
        (cluster["Id"], step["Id"], step["Status"]["State"])
        for cluster in clusters
        for step in emr.list_steps(ClusterId=cluster["Id"])["Steps"]
    ]


def cluster_states() -> list[str]:
    emr = boto3.client("emr", region_name=REGION)
    return [cluster["Status"]["State"] for cluster in emr.list_clusters()["Clusters"]]


def partition_folders(table_root: Path, depth: int) -> set[tuple[str, ...]]:
    """The partition values of a table as folders: ``year=2018/month=11`` -> (2018, 11)."""
    if depth == 0:
        return set()
    pattern = "/".join(["*=*"] * depth)
    return {
        tuple(part.split("=", 1)[1] for part in path.relative_to(table_root).parts)
        for path in table_root.glob(pattern)
        if path.is_dir()
    }


def glue_partitions(table: str, database: str = "sparkify_lake") -> set[tuple[str, ...]]:
    glue = boto3.client("glue", region_name=REGION)
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    return {tuple(p["Values"]) for page in pages for p in page["Partitions"]}


def full_then_daily_run(lake: Path, parameters: dict[str, Any]) -> tuple[Any, Any]:
    """The flow's full run over the days uploaded, then, once the last day is uploaded,
    its daily run of that day; both must complete."""
    full = songs_etl(**parameters, return_state=True)
    assert full.is_completed(), full.message
    upload_day(lake, lake.joinpath("log_data", *day_log_parts(DAYS[-1])))
    daily = songs_etl(**parameters, run_date=DAYS[-1], return_state=True)
    assert daily.is_completed(), daily.message
    return full, daily


def test_a_full_then_a_daily_run_through_emr_equal_the_job_run_locally(
    step_runner: StepRunner,
    spark: SparkSession,
    lake: Path,
    full_output: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parameters = prepare_aws(lake, days_held_back=1)
    with lineage_receiver() as receiver:  # lineage on: the flow's events and the steps'
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        full, daily = full_then_daily_run(lake, parameters)
        events = list(receiver.events)

    star = download(LAKE_BUCKET, "star", tmp_path / "from-s3")
    assert_same_tables(spark, star, full_output)  # full run + one day == one full run
    written = RunSummary.from_json((star / "_runs" / "_last_succeeded.json").read_text())
    assert (written.mode, written.run_date) == ("daily", DAYS[-1].isoformat())
    assert daily.result().tables == written.tables
    assert written.tables == {"songplays": 12, "users": 2, "songs": 2, "artists": 2, "time": 12}
    report = artifact_rows(daily.state_details.flow_run_id, "songs-etl-run")
    assert {row["name"]: row["rows"] for row in report if row["kind"] == "table"} == written.tables
    for name, spec in TABLES.items():
        expected = partition_folders(full_output / name, len(spec.partition_by))
        assert glue_partitions(name) == expected, name
    steps = steps_run()
    assert [state for _, _, state in steps] == ["COMPLETED", "COMPLETED"]
    assert set(cluster_states()) == {"TERMINATED"}
    cluster_id, step_id, _ = steps[-1]
    assert "spark_etl: succeeded (daily)" in step_log(cluster_id, step_id, "stdout")
    assert "Running Spark version 4.0." in step_log(cluster_id, step_id, "stderr")
    assert_lineage_of_runs(events, [full, daily])


def documented_job_glue_actions() -> set[str]:
    """The Glue actions docs/aws.md grants the job's role for the Iceberg tables."""
    text = (PROJECT_ROOT / "docs" / "aws.md").read_text(encoding="utf-8")
    section = text.split("### The job's Glue permissions", 1)[1]
    policy = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def record_java_glue_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Glue actions that moto's server answers to the AWS SDK for Java (the job's
    Iceberg), as IAM names them; the flow's own calls (boto3) are not counted."""
    calls: list[str] = []
    answer = GlueResponse.call_action

    def recording(response: GlueResponse) -> Any:
        if "aws-sdk-java" in response.headers.get("User-Agent", ""):
            calls.append(f"glue:{response._get_action()}")
        return answer(response)

    monkeypatch.setattr(GlueResponse, "call_action", recording)
    return calls


def test_a_full_then_a_daily_run_in_the_iceberg_format_through_emr_equal_the_job_run_locally(
    step_runner: StepRunner,
    spark: SparkSession,
    lake: Path,
    full_output: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    glue_calls = record_java_glue_calls(monkeypatch)
    parameters = iceberg_parameters(prepare_aws(lake, days_held_back=1))
    full, daily = full_then_daily_run(lake, parameters)

    local = read_tables(spark, full_output)
    for name in TABLES:  # full run + one day == one full run, the parquet format's rows
        location = f"s3://{LAKE_BUCKET}/star-iceberg/{name}"
        on_s3 = glue_iceberg_table(spark, ICEBERG_DATABASE, name, step_runner.s3_endpoint, location)
        assertDataFrameEqual(on_s3, local[name])
    full_summary, daily_summary = full.result(), daily.result()
    assert daily_summary.tables == {name: local[name].count() for name in TABLES}
    changed = {"songplays", "time", "users"}  # the day's plays; songs and artists unchanged
    for name in TABLES:
        before, after = (daily_summary.snapshots[name][key] for key in ("before", "after"))
        assert before == full_summary.snapshots[name]["after"], name
        assert (after != before) == (name in changed), name
    assert glue_partitions("songplays", ICEBERG_DATABASE) == set()  # Iceberg's own, not Glue's
    emr = boto3.client("emr", region_name=REGION)
    for cluster in emr.list_clusters()["Clusters"]:
        configurations = emr.describe_cluster(ClusterId=cluster["Id"])["Cluster"]
        assert ICEBERG_CONFIGURATION in configurations["Configurations"]
    assert [state for _, _, state in steps_run()] == ["COMPLETED", "COMPLETED"]
    assert set(cluster_states()) == {"TERMINATED"}
    assert set(glue_calls) == documented_job_glue_actions()  # the role's policy, exactly


def assert_lineage_of_runs(events: list[dict[str, Any]], states: list[Any]) -> None:
    """Each flow run sent START and COMPLETE with its tables' rows, and its step's Spark
    application reported under it (the listener's jar read from the code bucket)."""
    for event in events:
        parsed(event)
    for state in states:
        run_id = str(state.state_details.flow_run_id)
        mine = [e for e in events if e["run"]["runId"] == run_id]
        assert [e["eventType"] for e in mine] == ["START", "COMPLETE"]
        outputs = mine[1]["outputs"]
        assert {(d["namespace"], d["name"]) for d in outputs} == {
            (f"s3://{LAKE_BUCKET}", f"star/{table}") for table in TABLES
        }
        rows = {d["name"]: d["outputFacets"]["outputStatistics"]["rowCount"] for d in outputs}
        assert rows == {f"star/{table}": count for table, count in state.result().tables.items()}
        application = [
            e
            for e in events
            if e["job"]["name"] == "sparkify_lake"
            and e["run"]["facets"]["parent"]["run"]["runId"] == run_id
        ]
        assert application, f"no Spark application reported under flow run {run_id}"


def test_too_many_rejects_fail_the_real_job_and_the_flow_says_why(
    step_runner: StepRunner, tmp_path: Path
) -> None:
    garbage = ["{broken", "[]", "not json at all"]
    bad_lake = write_lake(
        tmp_path / "lake", {DAYS[0]: [*day_events(DAYS[0]), *garbage]}, catalogue()
    )
    parameters = prepare_aws(bad_lake)

    state = songs_etl(**parameters, max_reject_ratio=0.1, return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception) as failure:
        state.result()
    reason = (
        "3 of 11 input records rejected (27.27%), more than the allowed 10.00%; "
        f"see s3://{LAKE_BUCKET}/star/_rejects/"
    )
    assert f"The job says: {reason}" in str(failure.value)  # from the job's own summary
    [(cluster_id, step_id, step_state)] = steps_run()
    assert (step_state, cluster_states()) == ("FAILED", ["TERMINATED"])
    # spark-submit passes the Python driver's stderr on as its own stdout, as on EMR.
    assert f"spark_etl: error: {reason}" in step_log(cluster_id, step_id, "stdout")
    assert "Running Spark version 4.0." in step_log(cluster_id, step_id, "stderr")
    summary = json.loads(
        s3()
        .get_object(Bucket=LAKE_BUCKET, Key=f"star/_runs/{_run_id(step_id, cluster_id)}.json")[
            "Body"
        ]
        .read()
    )
    assert (summary["status"], summary["error"]) == ("failed", reason)


def _run_id(step_id: str, cluster_id: str) -> str:
    """The run id is in the step's name: ``songs_etl <run_id>``."""
    emr = boto3.client("emr", region_name=REGION)
    return str(emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Name"].split()[-1])


def test_the_rehearsal_runs_spark_submit_with_the_steps_own_arguments(tmp_path: Path) -> None:
    from rehearsal.emr import spark_submit_command

    jars = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "pyspark" / "jars"
    jars.mkdir(parents=True)
    (jars / "hadoop-client-api-3.4.1.jar").touch()  # the Hadoop of the EMR line
    spark = EmrSpark(
        tmp_path / "bin" / "spark-submit", tmp_path / "bin" / "python", jars.parents[4]
    )
    step = ["spark-submit", "--deploy-mode", "cluster", "--py-files", "s3://c/p.zip", "s3://c/e.py"]
    command = spark_submit_command([*step, "--songs", "s3://r/s"], spark, "http://127.0.0.1:5")

    s3a_jars = os.pathsep.join(s3a.classpath("3.4.1"))
    assert "hadoop-aws-3.4.1.jar" in s3a_jars
    assert command == [
        str(spark.spark_submit),
        *("--master", "local[2]"),
        *("--conf", "spark.ui.enabled=false"),
        *("--driver-class-path", s3a_jars),
        *("--conf", "spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem"),
        *("--conf", "spark.hadoop.fs.s3n.impl=org.apache.hadoop.fs.s3a.S3AFileSystem"),
        *("--conf", "spark.hadoop.fs.AbstractFileSystem.s3.impl=org.apache.hadoop.fs.s3a.S3A"),
        *("--conf", "spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:5"),
        *("--conf", "spark.hadoop.fs.s3a.path.style.access=true"),
        *("--conf", "spark.hadoop.fs.s3a.endpoint.region=us-east-1"),
        *("--deploy-mode", "client", "--py-files", "s3://c/p.zip", "s3://c/e.py"),
        *("--songs", "s3://r/s"),
    ]
