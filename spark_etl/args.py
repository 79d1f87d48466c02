"""The job's arguments, in one place: what they are, how they are spelled, how they are checked.

Standard library only. The job parses its command line here; the flows build a
:class:`JobArgs` and turn it into that command line with :meth:`JobArgs.to_argv`, and
preflight parses it back exactly as the job will. No other module spells a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NoReturn

from spark_etl.lake import DAY_FILE_SUFFIX, is_valid_s3_uri

DEFAULT_MAX_REJECT_RATIO = 0.01

SONGS_FLAG = "--songs"
LOGS_FLAG = "--logs"
OUTPUT_FLAG = "--output"
DATE_FLAG = "--date"
MAX_REJECT_RATIO_FLAG = "--max-reject-ratio"
RUN_ID_FLAG = "--run-id"
FLOW_RUN_FLAG = "--flow-run-id"
TAKE_OVER_FLAG = "--take-over-from"
TABLE_FORMAT_FLAG = "--table-format"
GLUE_DATABASE_FLAG = "--glue-database"

# How the five tables are stored: folders of parquet files that the job publishes itself
# (the default), or Apache Iceberg tables, each changed by one atomic commit per run.
PARQUET = "parquet"
ICEBERG = "iceberg"
TABLE_FORMATS = (PARQUET, ICEBERG)

_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# What Athena accepts of a Glue database's name: lower case letters, digits and '_'.
_GLUE_DATABASE_PATTERN = re.compile(r"^[a-z0-9_]{1,255}$")
# A comma would split spark-submit's --py-files and Spark's path lists; a control
# character (a pasted newline) makes a key nobody can see. Neither belongs in a location.
_FORBIDDEN_IN_URI = re.compile(r"[,\x00-\x1f\x7f]")


def new_run_id() -> str:
    """A sortable, unique run id such as ``20181105T060000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


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
        flow_run_id: The Prefect flow run that starts the job, named in its lease.
        take_over_from: A run whose flow run Prefect reports ended: the job takes over
            that run's lease at once instead of waiting for it to expire.
        table_format: :data:`PARQUET` or :data:`ICEBERG`.
        glue_database: (Iceberg) The Glue database whose Iceberg tables the run commits to
            (the Glue Data Catalog as the Iceberg catalog, as on EMR); empty for the catalog
            kept in the output itself (``<output>/<table>/metadata/version-hint.text``).
    """

    songs_uri: str
    logs_uri: str
    output_uri: str
    run_date: date | None = None
    max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO
    run_id: str = field(default_factory=new_run_id)
    flow_run_id: str = ""
    take_over_from: str = ""
    table_format: str = PARQUET
    glue_database: str = ""

    def to_argv(self) -> list[str]:
        """The command line that :func:`parse_args` turns back into these arguments."""
        argv = [SONGS_FLAG, self.songs_uri, LOGS_FLAG, self.logs_uri, OUTPUT_FLAG, self.output_uri]
        if self.run_date is not None:
            argv += [DATE_FLAG, self.run_date.isoformat()]
        argv += [MAX_REJECT_RATIO_FLAG, repr(self.max_reject_ratio), RUN_ID_FLAG, self.run_id]
        optional = ((FLOW_RUN_FLAG, self.flow_run_id), (TAKE_OVER_FLAG, self.take_over_from))
        argv += [part for flag, value in optional if value for part in (flag, value)]
        if self.table_format != PARQUET:  # the default stays off the command line
            argv += [TABLE_FORMAT_FLAG, self.table_format]
        if self.glue_database:
            argv += [GLUE_DATABASE_FLAG, self.glue_database]
        return argv

    def with_locations(self, songs_uri: str, logs_uri: str, output_uri: str) -> JobArgs:
        """The same run reading and writing elsewhere (the local runner's resolved paths)."""
        return dataclasses.replace(
            self, songs_uri=songs_uri, logs_uri=logs_uri, output_uri=output_uri
        )


def build_parser() -> argparse.ArgumentParser:
    """The job's command line, shared by ``python -m spark_etl`` and spark-submit."""
    parser = argparse.ArgumentParser(
        prog="spark_etl",
        description="Build the sparkify star schema (songplays, users, songs, artists, time) "
        "from the raw song catalogue and event logs.",
    )
    parser.add_argument(SONGS_FLAG, required=True, type=location_argument, help="song_data folder")
    parser.add_argument(LOGS_FLAG, required=True, type=location_argument, help="log_data folder")
    parser.add_argument(
        OUTPUT_FLAG, required=True, type=location_argument, help="folder of the tables"
    )
    parser.add_argument(
        DATE_FLAG,
        type=_iso_date,
        default=None,
        help=f"YYYY-MM-DD: daily run over log_data/YYYY/MM/YYYY-MM-DD{DAY_FILE_SUFFIX}, "
        "merged into the existing tables (default: full run over every log file)",
    )
    parser.add_argument(
        MAX_REJECT_RATIO_FLAG,
        type=_ratio,
        default=DEFAULT_MAX_REJECT_RATIO,
        help="fail when rejected records exceed this share of all input records "
        f"(default {DEFAULT_MAX_REJECT_RATIO})",
    )
    parser.add_argument(
        RUN_ID_FLAG,
        type=run_id_argument,
        default=None,
        help="name of the run summary under <output>/_runs/ (default: UTC time + random suffix)",
    )
    parser.add_argument(
        FLOW_RUN_FLAG,
        type=run_id_argument,
        default=None,
        help="the Prefect flow run that starts the job, named in the output's lease",
    )
    parser.add_argument(
        TAKE_OVER_FLAG,
        type=run_id_argument,
        default=None,
        metavar="RUN_ID",
        help="take over the lease of this run at once: its flow run ended (the flow checks)",
    )
    parser.add_argument(
        TABLE_FORMAT_FLAG,
        choices=TABLE_FORMATS,
        default=PARQUET,
        help="how the tables are stored: folders of parquet files, or Apache Iceberg tables "
        f"(metadata under <output>/<table>/metadata/) (default {PARQUET})",
    )
    parser.add_argument(
        GLUE_DATABASE_FLAG,
        type=_glue_database,
        default=None,
        metavar="DATABASE",
        help="with --table-format iceberg and an s3:// output: the tables are Iceberg tables "
        "of this Glue database (the Glue Data Catalog as the Iceberg catalog, as on EMR), "
        "at <output>/<table>",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> JobArgs:
    """Parse and validate the command line (exits 2 with a message on bad arguments)."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    problem = combination_problem(namespace)
    if problem:
        parser.error(problem)
    return JobArgs(
        songs_uri=namespace.songs,
        logs_uri=namespace.logs,
        output_uri=namespace.output,
        run_date=namespace.date,
        max_reject_ratio=namespace.max_reject_ratio,
        run_id=namespace.run_id or new_run_id(),
        flow_run_id=namespace.flow_run_id or "",
        take_over_from=namespace.take_over_from or "",
        table_format=namespace.table_format,
        glue_database=namespace.glue_database or "",
    )


class _ArgumentsRefused(Exception):
    """Raised instead of argparse's exit, so a caller can read why."""


def argv_problem(argv: Sequence[str]) -> str | None:
    """Why the job would refuse ``argv`` (the message it would print), or None.

    Preflight uses it to check arguments exactly as the job will, without exiting.
    """
    parser = build_parser()

    def refuse(message: str) -> NoReturn:
        raise _ArgumentsRefused(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        namespace = parser.parse_args(argv)
    except _ArgumentsRefused as refused:
        return str(refused)
    return combination_problem(namespace)


def combination_problem(namespace: argparse.Namespace) -> str | None:
    """Why arguments that are each valid cannot go together, or None."""
    overlap = overlap_problem(namespace.output, namespace.songs, namespace.logs)
    if overlap or not namespace.glue_database:
        return overlap
    if namespace.table_format != ICEBERG:
        return (
            f"{GLUE_DATABASE_FLAG} names the catalog of Iceberg tables: "
            f"add {TABLE_FORMAT_FLAG} {ICEBERG}"
        )
    if not namespace.output.startswith("s3://"):
        return (
            f"{GLUE_DATABASE_FLAG} puts the tables in the Glue Data Catalog, which only "
            f"Athena and the AWS engines read: it needs an s3:// output, not {namespace.output!r}"
        )
    return None


def overlap_problem(output_uri: str, *input_uris: str) -> str | None:
    """Why the output may not go where it would, or None.

    A full run replaces everything in its table folders: an input inside the output
    (or the output inside an input, where the job would read its own tables) would be
    deleted or read back.
    """
    output = _comparable(output_uri)
    for input_uri in input_uris:
        source = _comparable(input_uri)
        if output == source or output.startswith(source + "/") or source.startswith(output + "/"):
            return (
                f"output {output_uri} overlaps input {input_uri}: one lies inside the other; "
                "write the tables to a folder of their own"
            )
    return None


def _comparable(uri: str) -> str:
    """A location as a plain path or s3:// URI, for comparing where two locations lie."""
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    path = uri.removeprefix("file://").removeprefix("file:")
    return os.path.normpath(os.path.abspath(path))


def uri_problem(value: str) -> str | None:
    """Why ``value`` is not a location the job accepts, or None when it is one."""
    if not value or _FORBIDDEN_IN_URI.search(value):
        return f"{value!r} is empty or holds a comma or a control character"
    if value.startswith("s3://"):
        valid = is_valid_s3_uri(value)
        return None if valid else f"{value!r} is not an s3://bucket/prefix URI (bucket name)"
    if value.startswith("file:/") or ":" not in value:
        return None
    return f"{value!r} is not a local path or an s3://bucket/prefix URI"


def location_argument(value: str) -> str:
    """argparse type: a local path or an s3:// URI with a valid bucket name."""
    problem = uri_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value.rstrip("/") or "/"


def _glue_database(value: str) -> str:
    """argparse type: a Glue database name Athena can query."""
    if not _GLUE_DATABASE_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a Glue database name Athena can query (lower case letters, "
            "digits and '_'; at most 255)"
        )
    return value


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


def run_id_argument(value: str) -> str:
    """argparse type: a run id safe to use as a file name."""
    if not _RUN_ID_PATTERN.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a run id (letters, digits, '.', '_', '-'; at most 128)"
        )
    return value
