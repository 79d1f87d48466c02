"""Entry point of the Spark job: ``python -m spark_etl`` or spark-submit with the zip.

Arguments are validated before Spark starts, so a typo costs a second, not a cluster.
Nothing is read at import time: the module is imported on the cluster by the entry script.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from spark_etl.errors import JobError
from spark_etl.summary import RunSummary, summary_uri

logger = logging.getLogger("spark_etl")

_URI_PATTERN = re.compile(r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:/.*|[^:]+)$")
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class JobArgs:
    """Validated job arguments.

    Attributes:
        songs_uri: Folder of the song catalogue (``song_data``).
        logs_uri: Folder of the event logs (``log_data``).
        output_uri: Folder of the star schema.
        run_date: Day of a daily incremental run, or None for a full run.
        max_reject_ratio: Share of rejected input records above which the run fails.
        run_id: Names the run summary ``<output>/_runs/<run_id>.json``.
    """

    songs_uri: str
    logs_uri: str
    output_uri: str
    run_date: date | None
    max_reject_ratio: float
    run_id: str


def build_parser() -> argparse.ArgumentParser:
    """The job's command line, shared by ``python -m spark_etl`` and spark-submit."""
    parser = argparse.ArgumentParser(
        prog="spark_etl",
        description="Build the sparkify star schema (songplays, users, songs, artists, time) "
        "from the raw song catalogue and event logs.",
    )
    parser.add_argument(
        "--songs", required=True, type=_uri, help="song_data folder (s3:// or local)"
    )
    parser.add_argument("--logs", required=True, type=_uri, help="log_data folder (s3:// or local)")
    parser.add_argument("--output", required=True, type=_uri, help="output folder of the tables")
    parser.add_argument(
        "--date",
        type=_iso_date,
        default=None,
        help="YYYY-MM-DD: daily run over log_data/YYYY/MM/YYYY-MM-DD-events.json, merged "
        "into the existing tables (default: full run over every log file)",
    )
    parser.add_argument(
        "--max-reject-ratio",
        type=_ratio,
        default=0.01,
        help="fail when rejected records exceed this share of all input records (default 0.01)",
    )
    parser.add_argument(
        "--run-id",
        type=_run_id,
        default=None,
        help="name of the run summary under <output>/_runs/ (default: UTC time + random suffix)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> JobArgs:
    """Parse and validate the command line (exits 2 with a message on bad arguments)."""
    namespace = build_parser().parse_args(argv)
    run_id = namespace.run_id or default_run_id()
    return JobArgs(
        songs_uri=namespace.songs,
        logs_uri=namespace.logs,
        output_uri=namespace.output,
        run_date=namespace.date,
        max_reject_ratio=namespace.max_reject_ratio,
        run_id=run_id,
    )


def default_run_id() -> str:
    """A sortable, unique run id such as ``20181105T060000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


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
    # Imported here so that argument errors never pay for starting the JVM.
    from spark_etl.job import run_job
    from spark_etl.session import create_session

    try:
        spark = create_session()
        try:
            summary = run_job(spark, args)
        finally:
            spark.stop()
    except JobError as err:
        print(f"spark_etl: error: {err}", file=sys.stderr, flush=True)
        return 1
    print(one_line_report(summary), flush=True)
    return 0


def one_line_report(summary: RunSummary) -> str:
    """What a person wants at the end of a run: row counts, rejects, time, where the rest is."""
    counts = " ".join(f"{table}={rows}" for table, rows in summary.tables.items())
    return (
        f"spark_etl: {summary.status} ({summary.mode}) in {summary.duration_seconds:.1f} s: "
        f"{counts} rejects={summary.reject_total}; summary at "
        f"{summary_uri(summary.output_uri, summary.run_id)}"
    )


def _uri(value: str) -> str:
    """argparse type: a local path or an s3:// URI with a valid bucket name."""
    if not value or not _URI_PATTERN.match(value) or value.startswith(("s3a://", "s3n://")):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a local path or an s3://bucket/prefix URI"
        )
    return value.rstrip("/") or "/"


def _iso_date(value: str) -> date:
    """argparse type: YYYY-MM-DD."""
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD") from err


def _ratio(value: str) -> float:
    """argparse type: a share between 0 and 1."""
    try:
        ratio = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from err
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return ratio


def _run_id(value: str) -> str:
    """argparse type: a run id safe to use as a file name."""
    if not _RUN_ID_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a run id (letters, digits, '.', '_', '-'; at most 128)"
        )
    return value
