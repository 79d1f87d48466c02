"""The lake_maintenance flow: upkeep of an output's Iceberg tables, on local Spark.

It runs ``python -m spark_etl.maintenance`` (:mod:`spark_etl.maintenance`): compact small
files, expire old snapshots, remove orphan files; then publishes what each step did as a
table artifact. It holds the output's slot as songs_etl does, so it never runs beside a
run that writes the same output. Run it as a script:

    python flows/lake_maintenance.py data/star-iceberg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python flows/lake_maintenance.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from spark_etl.args import new_run_id
from spark_etl.maintenance import MaintenanceSettings, report_uri
from spark_etl.storage import local_path
from tasks.local_spark import run_spark_child
from tasks.ops.names import PROJECT_ROOT
from tasks.output_lock import DEFAULT_OUTPUT_WAIT_MINUTES, hold_output

DEFAULTS = MaintenanceSettings()


class MaintenanceError(Exception):
    """Maintenance exited non-zero; the message is its one-line reason."""


@task(name="Maintain the Iceberg tables")
def maintain_tables(output: str, settings: MaintenanceSettings) -> dict:
    """Run maintenance as a child process; return its report (read from the output)."""
    run_id = new_run_id()
    command = [
        sys.executable,
        "-m",
        "spark_etl.maintenance",
        "--output",
        output,
        "--expire-after-hours",
        repr(settings.expire_after_hours),
        "--retain-last",
        str(settings.retain_last),
        "--orphans-after-hours",
        repr(settings.orphans_after_hours),
        "--target-file-mb",
        str(settings.target_file_mb),
        "--run-id",
        run_id,
    ]
    return_code, reason = run_spark_child(command, "spark_etl.maintenance: error:")
    if return_code != 0:
        raise MaintenanceError(reason or f"maintenance exited with {return_code}")
    return json.loads(Path(report_uri(output, run_id)).read_text())


@task(name="Publish the maintenance report")
def publish_maintenance_report(report: dict) -> None:
    """One row per table: what compaction, expiry and orphan removal did."""
    rows = [
        {
            "table": table["table"],
            "rows": table["rows"],
            "files compacted": f"{table['data_files_rewritten']} -> {table['data_files_written']}",
            "snapshots expired": table["snapshots_expired"],
            "files deleted with them": table["files_deleted_with_snapshots"],
            "orphan files removed": len(table["orphan_files_removed"]),
        }
        for table in report["tables"]
    ]
    for row in rows:
        get_run_logger().info("%s", row)
    create_table_artifact(
        key="lake-maintenance",
        table=rows,
        description=f"lake maintenance {report['run_id']} of {report['output_uri']}, "
        f"{report['seconds']:.1f} s",
    )


@flow(name="lake_maintenance", log_prints=True)
def lake_maintenance(
    output_uri: str,
    expire_after_hours: float = DEFAULTS.expire_after_hours,
    retain_last: int = DEFAULTS.retain_last,
    orphans_after_hours: float = DEFAULTS.orphans_after_hours,
    target_file_mb: int = DEFAULTS.target_file_mb,
    output_lock_wait_minutes: float = DEFAULT_OUTPUT_WAIT_MINUTES,
) -> dict:
    """Compact, expire and clean the Iceberg tables of ``output_uri`` (local runner).

    Args:
        output_uri: The output folder of the Iceberg tables; a local path is relative to
            the project folder.
        expire_after_hours: Snapshots older than this are expired ...
        retain_last: ... but each table keeps at least this many.
        orphans_after_hours: Files no snapshot names are removed once older than this:
            more than the longest run.
        target_file_mb: Size small files are compacted into.
        output_lock_wait_minutes: Longest wait for a run on the same output to end.

    Returns:
        The maintenance report (also at ``<output>/_runs/maintenance-<run_id>.json``).
    """
    settings = MaintenanceSettings(
        expire_after_hours, retain_last, orphans_after_hours, target_file_mb
    )
    with hold_output(output_uri, output_lock_wait_minutes, PROJECT_ROOT) as location:
        output = local_path(location)
        if output is None:  # its Iceberg tables on S3 belong in Glue: not built yet
            raise ValueError(f"lake_maintenance maintains local outputs for now, not {location}")
        report = maintain_tables(output, settings)
        publish_maintenance_report(report)
        return report


if __name__ == "__main__":
    lake_maintenance(sys.argv[1] if len(sys.argv) > 1 else "data/star-iceberg")
