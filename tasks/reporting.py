"""Tasks that turn a run summary into what a person reads in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from spark_etl.summary import RunSummary
from tasks.ops.cost import RunCost


@task(name="Publish the run report")
def publish_run_report(summary: RunSummary, cost: RunCost | None = None) -> str | None:
    """Log the row counts, rejects and cost, and publish them as a table artifact.

    Args:
        summary: The job's run summary.
        cost: What the run cost, when the runner can tell (EMR, EMR Serverless).

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
    if cost is not None:
        logger.info("Cost %s", cost.line())
    artifact_id = create_table_artifact(
        key="songs-etl-run",
        table=report_rows(summary, cost),
        description=f"sparkify-lake run {summary.run_id} ({summary.mode}), "
        f"{summary.duration_seconds or 0:.1f} s, output {summary.output_uri}",
    )
    return str(artifact_id) if artifact_id else None


def report_rows(summary: RunSummary, cost: RunCost | None = None) -> list[dict[str, object]]:
    """One row per table, one per reject reason, (Iceberg) one per table's snapshots, then
    the cost: the artifact's table."""
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
    # Iceberg: each table's snapshot before and after, to pin a consistent set of tables.
    rows += [
        {
            "kind": "iceberg snapshot",
            "name": table,
            "rows": "",
            "change": f"{ids['before'] or 'none'} -> {ids['after']}",
        }
        for table, ids in summary.snapshots.items()
    ]
    if cost is not None:
        rows.append({"kind": "cost", "name": cost.line(), "rows": "", "change": ""})
    return rows


def _change(summary: RunSummary, table: str, count: int) -> str:
    """``+12`` / ``-3`` / ``0`` against the previous successful run, ``new`` without one."""
    previous = summary.previous_tables.get(table)
    return "new" if previous is None else f"{count - previous:+d}" if count != previous else "0"
