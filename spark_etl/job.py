"""One run of the job: read, reject, build, write, check, summarise.

A full run rebuilds every table from all inputs. A daily run (``run_date``) reads one
day's log file and merges it in (contract rule 7): songplays and time rewrite only the
month partitions the day touches, users are merged through their latest-event state,
songs and artists are rebuilt from the catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from spark_etl import io, transform
from spark_etl.args import JobArgs
from spark_etl.checks import check_tables
from spark_etl.errors import JobError, PostLoadCheckError, RejectThresholdExceededError
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE, day_log_uri
from spark_etl.schemas import EVENT_FIELD_TYPES, EVENT_REQUIRED, SONG_FIELD_TYPES, SONG_REQUIRED
from spark_etl.session import enforce_utc
from spark_etl.summary import SUCCEEDED, RejectCount, RunSummary, last_success_uri, summary_uri
from spark_etl.tables import ARTISTS, SONGPLAYS, SONGS, TABLES, TIME, USERS

logger = logging.getLogger(__name__)


@dataclass
class ParsedInputs:
    """Both inputs parsed once; every table is built from these frames."""

    songs: DataFrame
    events: DataFrame


def run_job(spark: SparkSession, args: JobArgs) -> RunSummary:
    """Run the job and write its summary to ``<output>/_runs/<run_id>.json``.

    The summary is written on failure too, so a flow can always read what happened.

    Raises:
        JobError: Missing input, too many rejects or a failed post-load check.
    """
    enforce_utc(spark)
    summary = RunSummary(
        run_id=args.run_id,
        mode="daily" if args.run_date else "full",
        run_date=args.run_date.isoformat() if args.run_date else None,
        songs_uri=args.songs_uri,
        logs_uri=args.logs_uri,
        output_uri=args.output_uri,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_reject_ratio=args.max_reject_ratio,
    )
    started = time.monotonic()
    summary.previous_tables = _previous_table_counts(spark, args.output_uri)
    try:
        _run_stages(spark, args, summary)
        summary.status = SUCCEEDED
    except JobError as err:
        summary.error = str(err)
        raise
    finally:
        summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        summary.duration_seconds = round(time.monotonic() - started, 3)
        _write_summary(spark, summary)
    return summary


def _run_stages(spark: SparkSession, args: JobArgs, summary: RunSummary) -> None:
    """The stages of a run, each timed into the summary."""
    with _timed(summary, "check inputs"):
        logs_uri = _check_inputs(spark, args)
    with _timed(summary, "parse and count"):
        inputs = _parse_inputs(spark, args.songs_uri, logs_uri)
        _count_records(inputs, summary)
    with _timed(summary, "write rejects"):
        _write_rejects(inputs, args)
    _enforce_reject_threshold(summary)
    songs = transform.good_records(inputs.songs)
    events = transform.good_records(inputs.events)
    with _timed(summary, "songs and artists"):
        catalogue_tables = _write_catalogue_tables(songs, args.output_uri)
    with _timed(summary, "songplays and time"):
        if args.run_date:
            _merge_songplays_and_time(spark, events, songs, args)
        else:
            # Event lines bound the plays from above: enough to size the output files
            # without a count that would run the whole songplays plan twice.
            expected_plays = summary.input_records[LOG_SOURCE]
            _write_songplays_and_time(spark, events, songs, args.output_uri, expected_plays)
    with _timed(summary, "users"):
        _write_users(spark, events, args)
    inputs.events.unpersist()
    with _timed(summary, "post-load checks"):
        _check_output(spark, args.output_uri, summary, catalogue_tables)
    for frame in (inputs.songs, *catalogue_tables.values()):
        frame.unpersist()


def _check_inputs(spark: SparkSession, args: JobArgs) -> str:
    """Fail fast on a missing input; return what to read of the logs."""
    io.require_input(spark, args.songs_uri, SONG_SOURCE)
    io.require_input(spark, args.logs_uri, LOG_SOURCE)
    if args.run_date is None:
        return args.logs_uri
    day_file = day_log_uri(args.logs_uri, args.run_date)
    io.require_input(spark, day_file, f"{LOG_SOURCE} file for {args.run_date}")
    return day_file


def _parse_inputs(spark: SparkSession, songs_uri: str, logs_uri: str) -> ParsedInputs:
    """Parse each input once and keep it: the counts, rejects and every table reuse it."""
    songs = transform.parse_records(
        io.read_lines(spark, songs_uri), SONG_FIELD_TYPES, SONG_REQUIRED
    )
    events = transform.parse_records(
        io.read_lines(spark, logs_uri), EVENT_FIELD_TYPES, EVENT_REQUIRED
    )
    # The events go to local disk as they are parsed: held in memory, a few GB of them
    # ran a 1 GB driver out of heap while the cache was built. Read back, they come from
    # the page cache, still far cheaper than parsing the JSON again for every table.
    return ParsedInputs(
        songs=songs.persist(StorageLevel.MEMORY_AND_DISK),
        events=events.persist(StorageLevel.DISK_ONLY),
    )


def _count_records(inputs: ParsedInputs, summary: RunSummary) -> None:
    """Count records and rejects by reason (one pass over each cached input)."""
    for source, parsed in ((SONG_SOURCE, inputs.songs), (LOG_SOURCE, inputs.events)):
        by_reason = parsed.groupBy(transform.REJECT_REASON).count().collect()
        summary.input_records[source] = sum(int(row["count"]) for row in by_reason)
        summary.rejects += [
            RejectCount(source, row[transform.REJECT_REASON], int(row["count"]))
            for row in sorted(by_reason, key=lambda row: str(row[transform.REJECT_REASON]))
            if row[transform.REJECT_REASON] is not None
        ]
        logger.info("%s: %d records", source, summary.input_records[source])
    for reject in summary.rejects:
        logger.warning("rejected %d %s records: %s", reject.count, reject.source, reject.reason)


def _write_rejects(inputs: ParsedInputs, args: JobArgs) -> None:
    """Keep every rejected line with its file and reason; nothing is dropped silently."""
    io.write_rejects(transform.rejected_records(inputs.songs), args.output_uri, SONG_SOURCE, None)
    io.write_rejects(
        transform.rejected_records(inputs.events), args.output_uri, LOG_SOURCE, args.run_date
    )


def _enforce_reject_threshold(summary: RunSummary) -> None:
    """Stop before any table is written when rejects exceed the allowed share."""
    if summary.reject_ratio > summary.max_reject_ratio:
        raise RejectThresholdExceededError(
            f"{summary.reject_total} of {sum(summary.input_records.values())} input records "
            f"rejected ({summary.reject_ratio:.2%}), more than the allowed "
            f"{summary.max_reject_ratio:.2%}; see {summary.output_uri}/{io.REJECTS_FOLDER}/"
        )


def _write_catalogue_tables(songs: DataFrame, output_uri: str) -> dict[str, DataFrame]:
    """Rebuild songs and artists from the catalogue; return them, kept, for the checks."""
    built = {
        SONGS.name: transform.build_songs(songs).persist(StorageLevel.MEMORY_AND_DISK),
        ARTISTS.name: transform.build_artists(songs).persist(StorageLevel.MEMORY_AND_DISK),
    }
    io.write_table(built[SONGS.name], SONGS, output_uri)
    io.write_table(built[ARTISTS.name], ARTISTS, output_uri)
    return built


def _write_songplays_and_time(
    spark: SparkSession, events: DataFrame, songs: DataFrame, output_uri: str, rows: int
) -> None:
    """Full run: replace both tables; time is derived from the songplays as written."""
    songplays = transform.build_songplays(events, transform.build_song_lookup(songs))
    io.write_table(songplays, SONGPLAYS, output_uri, rows)
    written = io.read_table(spark, SONGPLAYS, output_uri)
    io.write_table(transform.build_time(written), TIME, output_uri, rows)


def _merge_songplays_and_time(
    spark: SparkSession, events: DataFrame, songs: DataFrame, args: JobArgs
) -> None:
    """Daily run: rewrite the months the day touches with their old and new rows together."""
    day_plays = transform.build_songplays(events, transform.build_song_lookup(songs))
    try:
        day_plays = io.stage(day_plays, "day_songplays", args.output_uri, args.run_id)
        months = [
            (row["year"], row["month"])
            for row in day_plays.select("year", "month").distinct().collect()
        ]
        if not months:
            logger.info("no plays on %s: songplays and time unchanged", args.run_date)
        for spec, new_rows in ((SONGPLAYS, day_plays), (TIME, transform.build_time(day_plays))):
            if not months:
                break
            existing = io.read_table(spark, spec, args.output_uri)
            merged = transform.merge_months(existing, new_rows, spec.key, months)
            staged = io.stage(merged, spec.name, args.output_uri, args.run_id)
            io.overwrite_partitions(staged, spec, args.output_uri, staged.count())
    finally:
        io.drop_staging(spark, args.output_uri, args.run_id)


def _write_users(spark: SparkSession, events: DataFrame, args: JobArgs) -> None:
    """Users from the latest-event state; a daily run merges the day into the saved state."""
    state = transform.build_user_state(events)
    try:
        if args.run_date:
            saved = io.read_user_state(spark, args.output_uri, state.schema)
            merged = transform.merge_user_states(saved, state)
            state = io.stage(merged, io.USER_STATE, args.output_uri, args.run_id)
        io.write_user_state(state, args.output_uri)
    finally:
        io.drop_staging(spark, args.output_uri, args.run_id)
    saved_state = io.read_user_state(spark, args.output_uri, state.schema)
    io.write_table(transform.build_users(saved_state), USERS, args.output_uri)


def _check_output(
    spark: SparkSession,
    output_uri: str,
    summary: RunSummary,
    catalogue_tables: dict[str, DataFrame],
) -> None:
    """Count and check every table (rule 8).

    The event tables are read back as written: a daily run merged them with what was
    there. songs and artists are rebuilt whole every run and checked as built: reading
    back their thousands of (year, artist_id) folders would cost more than the whole
    rest of a run.
    """
    tables = {
        name: catalogue_tables[name]
        if name in catalogue_tables
        else io.read_table(spark, spec, output_uri)
        for name, spec in TABLES.items()
    }
    had_events = summary.input_records.get(LOG_SOURCE, 0) > sum(
        reject.count for reject in summary.rejects if reject.source == LOG_SOURCE
    )
    summary.tables, summary.checks = check_tables(tables, had_events)
    for table, rows in summary.tables.items():
        logger.info("%s: %d rows", table, rows)
    failed = [check for check in summary.checks if not check.passed]
    if failed:
        raise PostLoadCheckError(
            "post-load checks failed: "
            + "; ".join(f"{check.table} {check.name} ({check.detail})" for check in failed)
        )


def _previous_table_counts(spark: SparkSession, output_uri: str) -> dict[str, int]:
    """Row counts of the latest successful run on this output, for "change since"."""
    text = io.read_text(spark, last_success_uri(output_uri))
    return RunSummary.from_json(text).tables if text else {}


def _write_summary(spark: SparkSession, summary: RunSummary) -> None:
    """Write the summary beside the tables (and, on success, as the latest success)."""
    io.write_text(spark, summary_uri(summary.output_uri, summary.run_id), summary.to_json())
    if summary.status == SUCCEEDED:
        io.write_text(spark, last_success_uri(summary.output_uri), summary.to_json())


@contextmanager
def _timed(summary: RunSummary, name: str) -> Iterator[None]:
    """Time one stage into the summary and the log."""
    started = time.monotonic()
    logger.info("stage %s: started", name)
    try:
        yield
    finally:
        summary.stage_seconds[name] = round(time.monotonic() - started, 3)
        logger.info("stage %s: %.1f s", name, summary.stage_seconds[name])
