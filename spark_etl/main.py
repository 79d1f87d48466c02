"""Entry point of the Spark job: ``python -m spark_etl`` or spark-submit with the zip.

Arguments are validated before Spark starts, so a typo costs a second, not a cluster.
Nothing is read at import time: the module is imported on the cluster by the entry script.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from spark_etl.args import JobArgs, parse_args
from spark_etl.errors import JobError, describe_error
from spark_etl.lake import day_log_uri
from spark_etl.lease import refuse_if_held_locally
from spark_etl.storage import local_path
from spark_etl.summary import RunSummary, summary_uri

logger = logging.getLogger("spark_etl")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; return the process exit code (0 success, 1 failure, 2 bad arguments).

    Every failure ends with one line on stderr that says why, so the flow (and a person
    reading EMR's stderr.gz) sees the reason without scrolling through Spark's log.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its connection chatter is noise
    args = parse_args(argv)
    try:
        # A second run on a local output stops here, before paying for a JVM.
        refuse_if_held_locally(args.output_uri, args.run_id, args.take_over_from)
        # Imported here so that argument errors never pay for starting the JVM.
        from spark_etl.job import run_job
        from spark_etl.session import create_session

        spark = create_session(
            input_bytes=daily_input_bytes(args),
            uris=(args.songs_uri, args.logs_uri, args.output_uri),
            table_format=args.table_format,
            glue_catalog=bool(args.glue_database),
        )
        try:
            summary = run_job(spark, args)
        finally:
            spark.stop()
    except Exception as err:  # every failure ends with its reason, on one line
        print(f"spark_etl: error: {describe_error(err)}", file=sys.stderr, flush=True)
        if not isinstance(err, JobError):
            logger.error("unexpected failure", exc_info=err)
        return 1
    print(one_line_report(summary), flush=True)
    return 0


def daily_input_bytes(args: JobArgs) -> int | None:
    """The size of a daily run's log file when it is local; None otherwise (unknown)."""
    if args.run_date is None:
        return None
    path = local_path(day_log_uri(args.logs_uri, args.run_date))
    try:
        return os.path.getsize(path) if path else None
    except OSError:  # missing: the run says so itself, with its own message
        return None


def one_line_report(summary: RunSummary) -> str:
    """What a person wants at the end of a run: row counts, rejects, time, where the rest is."""
    counts = " ".join(f"{table}={rows}" for table, rows in summary.tables.items())
    return (
        f"spark_etl: {summary.status} ({summary.mode}) in {summary.duration_seconds:.1f} s: "
        f"{counts} rejects={summary.reject_total}; summary at "
        f"{summary_uri(summary.output_uri, summary.run_id)}"
    )
