"""The Iceberg table format (``--table-format iceberg``), in the test session.

Every table is read back through pyiceberg, from its ``version-hint.text`` and with no
Spark and no catalog server, as DuckDB or another engine would read it, and compared
whole with the parquet format's tables of the same lake.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyiceberg.table import StaticTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_etl import iceberg
from spark_etl.args import ICEBERG, PARQUET
from spark_etl.errors import CommitConflictError, JobError, OutputLockedError, TableFormatError
from spark_etl.job import run_job
from spark_etl.lease import OutputLease, lease_store_for, refuse_if_held_locally
from spark_etl.maintenance import (
    MaintenanceSettings,
    parse_settings,
    report_uri,
    run_maintenance,
)
from spark_etl.publication import JOURNAL_FILE, MANIFEST_FILE
from spark_etl.summary import RunSummary
from spark_etl.tables import TABLES
from tasks.ops.names import PROJECT_ROOT
from tests.lakes import DAYS, job_args, read_tables
from tests.test_crash_safety import (  # noqa: F401 (orphans_stay_zombies is a fixture)
    assert_clean,
    assert_dead,
    held_job_pid,
    kill_group,
    orphans_stay_zombies,
    reap,
    start_held_run,
)


def iceberg_table(spark: SparkSession, output: Path, name: str) -> DataFrame:
    """A table as pyiceberg reads it (its current snapshot), as a Spark frame to compare."""
    arrow = StaticTable.from_metadata(str(output / name)).scan().to_arrow()
    return spark.createDataFrame(arrow).select(*TABLES[name].column_names)


def assert_iceberg_tables_equal(spark: SparkSession, output: Path, expected: Path) -> None:
    parquet = read_tables(spark, expected)
    for name in TABLES:
        assertDataFrameEqual(iceberg_table(spark, output, name), parquet[name])


def iceberg_args(lake: Path, output: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return job_args(lake, output, table_format=ICEBERG, **overrides)


@pytest.fixture(scope="module")
def iceberg_full(spark: SparkSession, lake: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One full run in the Iceberg format over the shared lake, and its summary."""
    output = tmp_path_factory.mktemp("iceberg") / "star"
    return output, run_job(spark, iceberg_args(lake, output, run_id="iceberg-full"))


def test_a_full_iceberg_run_holds_the_parquet_tables(
    spark: SparkSession, iceberg_full: tuple[Path, RunSummary], full_output: Path
) -> None:
    output, summary = iceberg_full
    assert_iceberg_tables_equal(spark, output, full_output)
    for name, spec in TABLES.items():
        table = StaticTable.from_metadata(str(output / name))
        assert (output / name / "metadata" / "version-hint.text").is_file()
        assert table.metadata.format_version == 2
        source_names = [table.schema().find_column_name(f.source_id) for f in table.spec().fields]
        assert source_names == list(spec.partition_by), name
        snapshot = table.current_snapshot()
        assert snapshot is not None
        assert summary.snapshots[name] == {"before": None, "after": snapshot.snapshot_id}
        assert summary.tables[name] == table.scan().to_arrow().num_rows
    assert summary.table_format == ICEBERG


@pytest.fixture(scope="module")
def built_day_by_day(spark: SparkSession, lake: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """An Iceberg output built by daily runs in shuffled order, then one day run again;
    and the summary of that re-run. Maintenance works on it afterwards (it keeps every
    row, so the order of the tests that use it does not matter)."""
    output = tmp_path_factory.mktemp("day-by-day") / "star"
    days = random.Random(7).sample(DAYS, len(DAYS))
    for day in days:
        run_job(spark, iceberg_args(lake, output, run_date=day, run_id=f"day-{day}"))
    return output, run_job(spark, iceberg_args(lake, output, run_date=days[1], run_id="again"))


def test_daily_iceberg_runs_in_any_order_give_the_full_run_and_a_rerun_changes_no_row(
    spark: SparkSession, built_day_by_day: tuple[Path, RunSummary], full_output: Path
) -> None:
    output, again = built_day_by_day
    assert_iceberg_tables_equal(spark, output, full_output)
    assert again.tables == {name: len(rows) for name, rows in _read_all(spark, output).items()}
    # The catalogue did not change: songs and artists got no commit.
    for name in ("songs", "artists"):
        assert again.snapshots[name]["before"] == again.snapshots[name]["after"]


def _read_all(spark: SparkSession, output: Path) -> dict[str, list]:  # type: ignore[type-arg]
    return {name: iceberg_table(spark, output, name).collect() for name in TABLES}


class Reader(threading.Thread):
    """Reads every table in a loop, as a query engine would, and notes what it saw:
    (table, snapshot id, rows read)."""

    def __init__(self, output: Path) -> None:
        super().__init__(daemon=True)
        self.output, self.seen, self.stop = output, set(), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name in TABLES:
                table = StaticTable.from_metadata(str(self.output / name))
                snapshot = table.current_snapshot()
                rows = table.scan().to_arrow().num_rows
                self.seen.add((name, snapshot.snapshot_id if snapshot else None, rows))
            self.stop.wait(0.2)


def snapshot_log(output: Path, name: str) -> dict[int, int]:
    """Each snapshot of a table and its rows, from the table's metadata."""
    table = StaticTable.from_metadata(str(output / name))
    return {s.snapshot_id: int(s.summary["total-records"]) for s in table.snapshots()}  # type: ignore[index]


def test_readers_see_each_table_before_or_after_the_run_never_between(
    spark: SparkSession, lake: Path, tmp_path: Path
) -> None:
    """A reader polls every table during a daily run and a full run. Each table it read
    was the last run's snapshot or this run's, with that snapshot's rows; and each run
    added one snapshot per table it changed, so there was nothing else to land on."""
    output = tmp_path / "star"
    run_job(spark, iceberg_args(lake, output, run_date=DAYS[0], run_id="first"))
    for args in (
        iceberg_args(lake, output, run_date=DAYS[2], run_id="daily"),
        iceberg_args(lake, output, run_id="full"),
    ):
        logs_before = {name: snapshot_log(output, name) for name in TABLES}
        reader = Reader(output)
        reader.start()
        try:
            summary = run_job(spark, args)
        finally:
            reader.stop.set()
            reader.join()
        for name in TABLES:
            before, after = summary.snapshots[name]["before"], summary.snapshots[name]["after"]
            log = snapshot_log(output, name)
            added = set(log) - set(logs_before[name])
            assert added == ({after} if after != before else set()), (args.run_id, name)
            seen = {(s, rows) for table, s, rows in reader.seen if table == name}
            assert seen <= {(s, log[s]) for s in (before, after)}, (args.run_id, name)
        assert {table for table, _, _ in reader.seen} == set(TABLES)


def test_a_publication_cut_short_is_completed_by_the_next_run(
    spark: SparkSession,
    lake: Path,
    full_output: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that stops between two commits leaves every table at a committed snapshot:
    the ones it committed at its own, the others at the last run's. Its journal and its
    staged tables stay, and the next run makes the missing commits before its own work."""
    output = tmp_path / "star"
    run_job(spark, iceberg_args(lake, output, run_date=DAYS[0], run_id="first"))
    before = iceberg.table_snapshots(spark, iceberg.IcebergCatalog.for_output(str(output)))
    replace = iceberg.replace_table
    made: list[str] = []

    def dies_at_the_third(*args, **kwargs):  # type: ignore[no-untyped-def]
        if len(made) == 2:
            raise KeyboardInterrupt("the run stops here")
        made.append(args[2].name)
        replace(*args, **kwargs)

    monkeypatch.setattr(iceberg, "replace_table", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_job(spark, iceberg_args(lake, output, run_id="cut-short"))
    monkeypatch.undo()

    after = iceberg.table_snapshots(spark, iceberg.IcebergCatalog.for_output(str(output)))
    assert {name for name in TABLES if after[name] != before[name]} == set(made)
    assert (output / JOURNAL_FILE).is_file()
    assert (output / "_staging" / "cut-short").is_dir()

    run_job(spark, iceberg_args(lake, output, run_date=DAYS[0], run_id="next"))

    assert_iceberg_tables_equal(spark, output, full_output)
    assert not (output / JOURNAL_FILE).exists()
    assert not (output / "_staging").exists()


@pytest.mark.integration  # several job runs
def test_a_second_writer_past_the_lease_makes_the_run_fail_naming_the_table_and_keeps_its_rows(
    spark: SparkSession, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits to songplays while a daily run builds: the run commits
    nothing, says which table changed, and the other writer's row stays."""
    output = tmp_path / "star"
    run_job(spark, iceberg_args(lake, output, run_date=DAYS[0], run_id="first"))
    catalog = iceberg.IcebergCatalog.for_output(str(output))
    songplays = catalog.identifier("songplays")
    planned_commits = iceberg.planned_commits

    def another_writer_commits_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        spark.sql(
            f"INSERT INTO {songplays} SELECT songplay_id + 1, start_time, user_id, level, "
            f"song_id, artist_id, session_id, 'elsewhere', user_agent, year, month "
            f"FROM {songplays} LIMIT 1"
        )
        return planned_commits(*args, **kwargs)

    monkeypatch.setattr(iceberg, "planned_commits", another_writer_commits_first)
    with pytest.raises(CommitConflictError, match=r"Iceberg tables songplays \(\d+ -> \d+\)"):
        run_job(spark, iceberg_args(lake, output, run_date=DAYS[1], run_id="second"))
    monkeypatch.undo()
    outside = iceberg.table_snapshots(spark, catalog)

    assert iceberg_table(spark, output, "songplays").where("location = 'elsewhere'").count() == 1
    assert not (output / JOURNAL_FILE).exists()
    run_job(spark, iceberg_args(lake, output, run_date=DAYS[1], run_id="again"))
    assert iceberg_table(spark, output, "songplays").where("location = 'elsewhere'").count() == 1
    assert iceberg.table_snapshots(spark, catalog)["songplays"] != outside["songplays"]


@pytest.mark.integration  # several job runs
@pytest.mark.parametrize(("first", "then"), [(PARQUET, ICEBERG), (ICEBERG, PARQUET)])
def test_a_run_in_the_other_format_is_refused_before_it_touches_the_tables(
    spark: SparkSession, lake: Path, tmp_path: Path, first: str, then: str
) -> None:
    output = tmp_path / "star"
    run_job(spark, job_args(lake, output, run_date=DAYS[0], run_id="first", table_format=first))
    manifest = (output / MANIFEST_FILE).read_text()
    for run_date in (None, DAYS[1]):
        args = job_args(lake, output, run_date=run_date, run_id="other", table_format=then)
        with pytest.raises(TableFormatError, match=f"holds {first} tables"):
            run_job(spark, args)
    assert (output / MANIFEST_FILE).read_text() == manifest
    assert json.loads(manifest)["table_format"] == first


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--output", "out", "--run-id", "../../elsewhere"], "is not a run id"),
        (["--output", "s3://lake/star\n"], "holds a comma or a control character"),
    ],
)
def test_maintenance_refuses_a_run_id_or_output_the_job_would_refuse(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv)
    assert exit_info.value.code == 2
    assert reason in capsys.readouterr().err


def test_an_output_at_a_root_is_refused_for_iceberg() -> None:
    with pytest.raises(JobError, match="folder of its own"):
        iceberg.IcebergCatalog.for_output("s3://bucket")
    assert iceberg.IcebergCatalog.for_output("s3://bucket/star").warehouse == "s3://bucket"


def test_a_glue_catalog_puts_each_table_at_the_output_and_follows_the_sdks_endpoints() -> None:
    catalog = iceberg.IcebergCatalog.for_output("s3://lake/star/", "sparkify_lake")
    hadoop = iceberg.IcebergCatalog.for_output("s3://lake/star")
    assert catalog.name != hadoop.name  # one session may hold both
    assert (catalog.identifier("songs"), catalog.location("songs")) == (
        f"`{catalog.name}`.`sparkify_lake`.`songs`",
        "s3://lake/star/songs",
    )
    assert hadoop.location("songs") is None  # a Hadoop catalog places its tables itself
    prefix = f"spark.sql.catalog.{catalog.name}"
    on_aws = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.warehouse": "s3://lake/star",
        f"{prefix}.cache-enabled": "false",
        f"{prefix}.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        f"{prefix}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
    }
    assert catalog.settings({}) == on_aws
    elsewhere = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000/", "AWS_REGION": "eu-west-1"}
    assert catalog.settings(elsewhere) == {
        **on_aws,
        f"{prefix}.glue.endpoint": "http://127.0.0.1:5000",
        f"{prefix}.s3.endpoint": "http://127.0.0.1:5000",
        f"{prefix}.s3.path-style-access": "true",
    }
    with pytest.raises(JobError, match="AWS_ENDPOINT_URL_GLUE must be an http"):
        catalog.settings({"AWS_ENDPOINT_URL_GLUE": "glue.local"})


def test_a_spark_line_without_an_iceberg_runtime_is_named() -> None:
    with pytest.raises(JobError, match=r"Spark 4\.3.*pinned: Spark 4\.0, 4\.1"):
        iceberg.lock_for(iceberg.spark_line("4.3.0"))


DUCKDB_PYTHON = PROJECT_ROOT / ".venv-duckdb" / "bin" / "python"


@pytest.mark.integration  # a job process, and DuckDB in a virtualenv of its own
def test_duckdb_counts_each_table_of_python_m_spark_etl_as_the_run_summary_does(
    lake: Path, tmp_path: Path, full_output: Path
) -> None:
    """The command line a user types, and a reader that is neither Spark nor pyiceberg:
    DuckDB's ``iceberg_scan`` on each table folder (``make duckdb-iceberg``)."""
    assert DUCKDB_PYTHON.is_file(), "run 'make duckdb-iceberg' (make test-integration does)"
    output = tmp_path / "star"
    argv = iceberg_args(lake, output, run_id="duckdb").to_argv()
    job = subprocess.run(
        [sys.executable, "-m", "spark_etl", *argv],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    for name in TABLES:
        assert (output / name / "metadata" / "version-hint.text").is_file(), name

    counted = subprocess.run(
        [str(DUCKDB_PYTHON), str(PROJECT_ROOT / "lake_query" / "iceberg_counts.py"), str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = RunSummary.from_json((output / "_runs" / "duckdb.json").read_text())
    assert json.loads(counted.stdout) == summary.tables
    parquet = RunSummary.from_json((full_output / "_runs" / "_last_succeeded.json").read_text())
    assert summary.tables == parquet.tables  # the parquet format's full run, table by table


@pytest.mark.integration  # a real job process, killed
@pytest.mark.usefixtures("orphans_stay_zombies")
def test_a_run_killed_between_two_commits_leaves_committed_tables_and_the_next_run_completes_it(
    spark: SparkSession, lake: Path, full_output: Path, tmp_path: Path
) -> None:
    """`python -m spark_etl --table-format iceberg`, SIGKILLed half way through its commits
    (after two of its five tables): each table is at a snapshot some run committed, with
    that snapshot's rows; the next run takes over, makes the missing commits and merges."""
    output = tmp_path / "star"
    run_job(spark, iceberg_args(lake, output, run_date=DAYS[0], run_id="first"))
    catalog = iceberg.IcebergCatalog.for_output(str(output))
    before = iceberg.table_snapshots(spark, catalog)
    old = {name: iceberg_table(spark, output, name).collect() for name in TABLES}
    held = start_held_run(
        iceberg_args(lake, output, run_id="full-held"), "committing", tmp_path / "m"
    )
    job_pid = held_job_pid(output)
    zombies = kill_group(held)

    for name in TABLES:
        table = StaticTable.from_metadata(str(output / name))
        snapshot = table.current_snapshot()
        assert snapshot is not None
        rows = iceberg_table(spark, output, name)
        if snapshot.snapshot_id == before[name]:
            assertDataFrameEqual(rows, old[name])
        else:  # committed by the killed run: the full run's rows
            assertDataFrameEqual(rows, read_tables(spark, full_output)[name])
    changed = [n for n in TABLES if iceberg.table_snapshots(spark, catalog)[n] != before[n]]
    assert len(changed) == 2, changed  # the point lies after two of the five commits

    assert_dead(job_pid)
    next_run = iceberg_args(lake, output, run_date=DAYS[1], run_id="next")
    refuse_if_held_locally(next_run.output_uri, next_run.run_id)  # as the entry point does
    run_job(spark, next_run)
    reap(zombies, seconds=30)
    assert_iceberg_tables_equal(spark, output, full_output)
    assert_clean(output)


def data_files(table_folder: Path) -> list[Path]:
    return sorted(table_folder.glob("data/**/*.parquet"))


@pytest.mark.integration  # several job runs
def test_maintenance_compacts_expires_and_removes_orphans_and_keeps_every_row(
    spark: SparkSession, built_day_by_day: tuple[Path, RunSummary]
) -> None:
    output, _ = built_day_by_day  # December's partition got a file from each of its days
    rows_before = _read_all(spark, output)
    stale = output / "songplays" / "data" / "left-by-a-killed-run.parquet"
    fresh = output / "songplays" / "data" / "being-written.parquet"
    for orphan in (stale, fresh):
        shutil.copy(data_files(output / "songplays")[0], orphan)
    two_days_ago = time.time() - 48 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))

    settings = MaintenanceSettings(expire_after_hours=0, retain_last=1, orphans_after_hours=24)
    report = run_maintenance(spark, str(output), settings, "upkeep")

    for name in TABLES:
        assertDataFrameEqual(iceberg_table(spark, output, name), rows_before[name])
    done = {table.table: table for table in report.tables}
    assert done["songplays"].data_files_rewritten >= 2
    assert done["songplays"].data_files_written < done["songplays"].data_files_rewritten
    assert done["songs"].data_files_rewritten == 0  # one file per partition: the floor
    for name in TABLES:
        assert len(StaticTable.from_metadata(str(output / name)).snapshots()) == 1, name
        assert done[name].rows == iceberg_table(spark, output, name).count()
    assert [Path(p.removeprefix("file:")) for p in done["songplays"].orphan_files_removed] == [
        stale
    ]
    assert not stale.exists() and fresh.exists()
    assert json.loads(Path(report_uri(str(output), "upkeep")).read_text())["run_id"] == "upkeep"


def test_maintenance_waits_for_no_run_it_refuses_a_held_output(
    spark: SparkSession, tmp_path: Path
) -> None:
    output = str(tmp_path / "star")
    holder = OutputLease(lease_store_for(output), output, "a-daily-run")
    holder.acquire()
    try:
        with pytest.raises(OutputLockedError, match="a-daily-run"):
            run_maintenance(spark, output, MaintenanceSettings(), "upkeep")
    finally:
        holder.release()
    with pytest.raises(JobError, match="holds no Iceberg table"):
        run_maintenance(spark, output, MaintenanceSettings(), "upkeep")
