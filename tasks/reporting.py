"""Tasks that turn a run summary into what a person reads in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from spark_etl.summary import RunSummary


@task(name="Publish the run report")
def publish_run_report(summary: RunSummary) -> str | None:
    """Log the row counts and rejects, and publish them as a table artifact.

    Returns:
        The artifact's id, or None when no artifact could be made.
    """
    logger = get_run_logger()
    for table, rows in summary.tables.items():
        logger.info("%-10s %9d rows (%s)", table, rows, _change(summary, table, rows))
    logger.info(
        "Rejected %d of %d input records (%.4f%%, limit %.4f%%)",
        summary.reject_total,
        sum(summary.input_records.values()),
        100 * summary.reject_ratio,
        100 * summary.max_reject_ratio,
    )
    artifact_id = create_table_artifact(
        key="songs-etl-run",
        table=report_rows(summary),
        description=f"sparkify-lake run {summary.run_id} ({summary.mode}), "
        f"{summary.duration_seconds or 0:.1f} s, output {summary.output_uri}",
    )
    return str(artifact_id) if artifact_id else None


def report_rows(summary: RunSummary) -> list[dict[str, object]]:
    """One row per table, then one per reject reason: the artifact's table."""
    rows: list[dict[str, object]] = [
        {"kind": "table", "name": table, "rows": count, "change": _change(summary, table, count)}
        for table, count in summary.tables.items()
    ]
    rows += [
        {
            "kind": f"rejects ({reject.source})",
            "name": reject.reason,
            "rows": reject.count,
            "change": "",
        }
        for reject in summary.rejects
    ]
    return rows


def _change(summary: RunSummary, table: str, count: int) -> str:
    """``+12`` / ``-3`` / ``0`` against the previous successful run, ``new`` without one."""
    previous = summary.previous_tables.get(table)
    return "new" if previous is None else f"{count - previous:+d}" if count != previous else "0"
