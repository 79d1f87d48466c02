"""Maintenance of an output's Iceberg tables: expire old snapshots, remove orphan files,
compact small files.

    python -m spark_etl.maintenance --output OUT [--expire-after-hours 168]
        [--retain-last 5] [--orphans-after-hours 24] [--target-file-mb 128]

Each run of the job adds a snapshot per table it changes, and keeps every earlier one
for time travel; each daily run adds small files to the month partitions it merges
into; a run killed part way leaves data files no snapshot names. For each of the five
tables, in turn (the order Iceberg recommends):
1. **compact**: rewrite a partition's small files into files of about ``--target-file-mb``,
   in a commit of its own. Partitioning by identity sets the floor: songs' one file per
   (year, artist_id) folder cannot become fewer files without a coarser partition spec;
2. **expire** the snapshots older than ``--expire-after-hours``, keeping at least the last
   ``--retain-last``, and delete the files only they used (the small files compaction
   replaced, once their snapshots go);
3. **remove orphans**: files under the table that no snapshot names, older than
   ``--orphans-after-hours`` (longer than the longest run, so a running job's files are
   never taken; the output's lease keeps the job out meanwhile too).

What each step removed or rewrote goes to ``<output>/_runs/maintenance-<run_id>.json``
(the flow's artifact), and to one line on stdout. The rows never change.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from spark_etl import iceberg
from spark_etl.args import ICEBERG, location_argument, new_run_id, run_id_argument
from spark_etl.errors import JobError, describe_error
from spark_etl.lake import join_uri
from spark_etl.lease import OutputLease, lease_store_for, refuse_if_held_locally
from spark_etl.storage import Storage
from spark_etl.summary import RUNS_FOLDER
from spark_etl.tables import TABLES

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class MaintenanceSettings:
    """How much history to keep and how small a file may stay."""

    expire_after_hours: float = 168.0
    retain_last: int = 5
    orphans_after_hours: float = 24.0
    target_file_mb: int = 128


@dataclass
class TableMaintenance:
    """What maintenance did to one table."""

    table: str
    snapshots_before: int = 0
    snapshots_expired: int = 0
    files_deleted_with_snapshots: int = 0
    orphan_files_removed: list[str] = field(default_factory=list)
    data_files_rewritten: int = 0
    data_files_written: int = 0
    rows: int = 0


@dataclass
class MaintenanceReport:
    """One maintenance run over an output."""

    run_id: str
    output_uri: str
    settings: MaintenanceSettings
    started_at: str
    tables: list[TableMaintenance] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def one_line(self) -> str:
        parts = [
            f"{t.table}: {t.snapshots_expired} snapshots expired, "
            f"{len(t.orphan_files_removed)} orphans removed, "
            f"{t.data_files_rewritten} files compacted into {t.data_files_written}"
            for t in self.tables
        ]
        return f"spark_etl.maintenance: {self.output_uri} in {self.seconds:.1f} s: " + "; ".join(
            parts
        )


def report_uri(output_uri: str, run_id: str) -> str:
    return join_uri(output_uri, RUNS_FOLDER, f"maintenance-{run_id}.json")


def run_maintenance(
    spark: SparkSession, output_uri: str, settings: MaintenanceSettings, run_id: str
) -> MaintenanceReport:
    """Maintain the output's five Iceberg tables while holding its lease; write the report.

    Raises:
        JobError: The output is held by a run, or holds no Iceberg table.
    """
    started = time.monotonic()
    report = MaintenanceReport(
        run_id, output_uri, settings, datetime.now(UTC).isoformat(timespec="seconds")
    )
    lease = OutputLease(lease_store_for(output_uri), output_uri, run_id)
    lease.acquire()
    try:
        catalog = iceberg.IcebergCatalog.for_output(output_uri)
        snapshots = iceberg.table_snapshots(spark, catalog)
        missing = [table for table, snapshot in snapshots.items() if snapshot is None]
        if len(missing) == len(TABLES):
            raise JobError(f"{output_uri} holds no Iceberg table: nothing to maintain")
        for table in TABLES:
            if table not in missing:
                lease.ensure_held()
                report.tables.append(_maintain_table(spark, catalog, table, settings))
    finally:
        lease.release()
    report.seconds = round(time.monotonic() - started, 3)
    Storage(spark).write_text_atomically(report_uri(output_uri, run_id), report.to_json())
    return report


def _maintain_table(
    spark: SparkSession,
    catalog: iceberg.IcebergCatalog,
    table: str,
    settings: MaintenanceSettings,
) -> TableMaintenance:
    """Compact, expire, remove orphans: Iceberg's Spark actions, through the JVM."""
    jvm, jspark = spark.sparkContext._jvm, spark._jsparkSession
    assert jvm is not None
    identifier = catalog.identifier(table)
    loaded = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(jspark, identifier)
    actions = jvm.org.apache.iceberg.spark.actions.SparkActions.get(jspark)
    done = TableMaintenance(table, snapshots_before=_snapshot_count(loaded))
    now_ms = int(time.time() * 1000)

    rewritten = (
        actions.rewriteDataFiles(loaded)
        .option("target-file-size-bytes", str(settings.target_file_mb * 1024 * 1024))
        .option("min-input-files", "2")
        .execute()
    )
    done.data_files_rewritten = int(rewritten.rewrittenDataFilesCount())
    done.data_files_written = int(rewritten.addedDataFilesCount())
    loaded.refresh()
    snapshots_now = _snapshot_count(loaded)

    expired = (
        actions.expireSnapshots(loaded)
        .expireOlderThan(now_ms - int(settings.expire_after_hours * HOUR_MS))
        .retainLast(settings.retain_last)
        .execute()
    )
    loaded.refresh()
    done.snapshots_expired = snapshots_now - _snapshot_count(loaded)
    done.files_deleted_with_snapshots = int(
        expired.deletedDataFilesCount()
        + expired.deletedManifestsCount()
        + expired.deletedManifestListsCount()
    )

    orphans = (
        actions.deleteOrphanFiles(loaded)
        .olderThan(now_ms - int(settings.orphans_after_hours * HOUR_MS))
        .execute()
    )
    done.orphan_files_removed = sorted(str(path) for path in orphans.orphanFileLocations())
    loaded.refresh()
    snapshot = iceberg.current_snapshot(spark, identifier)
    done.rows = iceberg.snapshot_rows(spark, identifier, snapshot) if snapshot else 0
    return done


def _snapshot_count(table: Any) -> int:
    """Snapshots of a Java Iceberg ``Table`` (an iterable through Py4J)."""
    return len(list(table.snapshots()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark_etl.maintenance",
        description="Expire old snapshots, remove orphan files and compact small files of "
        "an output's Iceberg tables.",
    )
    defaults = MaintenanceSettings()
    parser.add_argument(
        "--output", required=True, type=location_argument, help="folder of the Iceberg tables"
    )
    parser.add_argument(
        "--expire-after-hours",
        type=float,
        default=defaults.expire_after_hours,
        help=f"expire snapshots older than this (default {defaults.expire_after_hours:g})",
    )
    parser.add_argument(
        "--retain-last",
        type=int,
        default=defaults.retain_last,
        help=f"but keep at least this many of each table's (default {defaults.retain_last})",
    )
    parser.add_argument(
        "--orphans-after-hours",
        type=float,
        default=defaults.orphans_after_hours,
        help="remove files no snapshot names once older than this; more than the longest "
        f"run (default {defaults.orphans_after_hours:g})",
    )
    parser.add_argument(
        "--target-file-mb",
        type=int,
        default=defaults.target_file_mb,
        help=f"size to compact small files into (default {defaults.target_file_mb})",
    )
    parser.add_argument(
        "--run-id", type=run_id_argument, default=None, help="names the report (default: a new id)"
    )
    return parser


def parse_settings(argv: Sequence[str] | None) -> tuple[str, MaintenanceSettings, str]:
    """The output, the settings and the run id; exits 2 on a bad value."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    if namespace.retain_last < 1 or namespace.target_file_mb < 1:
        parser.error("--retain-last and --target-file-mb must be at least 1")
    if namespace.expire_after_hours < 0 or namespace.orphans_after_hours < 1:
        parser.error("--expire-after-hours must be >= 0 and --orphans-after-hours >= 1")
    settings = MaintenanceSettings(
        namespace.expire_after_hours,
        namespace.retain_last,
        namespace.orphans_after_hours,
        namespace.target_file_mb,
    )
    return namespace.output, settings, namespace.run_id or new_run_id()


def main(argv: Sequence[str] | None = None) -> int:
    """Run maintenance; exit 0 on success, 1 with a one-line reason on failure."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    output_uri, settings, run_id = parse_settings(argv)
    try:
        refuse_if_held_locally(output_uri, run_id)
        from spark_etl.session import create_session

        spark = create_session(
            "sparkify-lake-maintenance", uris=(output_uri,), table_format=ICEBERG
        )
        try:
            report = run_maintenance(spark, output_uri, settings, run_id)
        finally:
            spark.stop()
    except Exception as err:
        print(f"spark_etl.maintenance: error: {describe_error(err)}", file=sys.stderr, flush=True)
        return 1
    print(report.one_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
