"""One run of the job: take the output, read, reject, build into staging, check, publish.

Nothing a reader sees is written until the end (contract rule 9): every table is built
in ``<output>/_staging/<run_id>/``, checked there, and then published by moving files
(:mod:`spark_etl.publication`). One run writes an output at a time (:mod:`spark_etl.lease`).

A full run rebuilds every table from all inputs. A daily run (``run_date``) reads one
day's log file and merges it in (rule 7), at the cost of a day:
- songplays and time keep one file set per log day in each month folder; the run
  replaces its day's set, leaving out events another day's set already holds;
- users are merged through the users' latest-event state kept under ``_state/``;
- songs and artists are left as they are when the catalogue's listing (paths, sizes,
  modification times) is the one the last run saw; the matching then uses the
  catalogue kept under ``_state/song_lookup`` instead of parsing every song file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark import SparkContext, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_etl import failpoints, iceberg, io, transform
from spark_etl.args import ICEBERG, JobArgs
from spark_etl.catalogue import Catalogue, read_catalogue
from spark_etl.checks import (
    check_foreign_keys,
    check_table,
    check_tables,
    count_records,
    profile_results,
)
from spark_etl.errors import (
    DamagedLakeError,
    EmptyInputError,
    PostLoadCheckError,
    RejectThresholdExceededError,
    TableFormatError,
    describe_error,
)
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE, day_log_uri
from spark_etl.lease import OutputLease, lease_store_for
from spark_etl.publication import (
    FULL_RUN_REPAIR,
    SONG_LOOKUP,
    USER_STATE,
    WHOLE_SET,
    Manifest,
    Publication,
    check_lake,
    complete_interrupted_publication,
    publish,
    read_manifest,
    remove_dead_staging,
    remove_staging,
)
from spark_etl.schemas import EVENT_FIELD_TYPES, EVENT_REQUIRED
from spark_etl.session import enforce_utc
from spark_etl.staging import StagedFolder, plan_publication, stage_by_day, stage_whole
from spark_etl.storage import Storage
from spark_etl.summary import (
    FAILED,
    SUCCEEDED,
    CheckResult,
    RunSummary,
    last_success_uri,
    summary_uri,
)
from spark_etl.tables import ARTISTS, SONGPLAYS, SONGS, TABLES, TIME, USERS, TableSpec

# The Spark local property that names the job's stage on every Spark job it starts.
STAGE_PROPERTY = "sparkify.stage"
logger = logging.getLogger(__name__)

# Everything a publication fills, as the lake check lists it. With the Iceberg format the
# tables are Iceberg's: the check lists the state kept beside them.
STATE_FOLDERS = (USER_STATE, SONG_LOOKUP)
PUBLISHED_FOLDERS = (
    SONGPLAYS.name,
    TIME.name,
    USERS.name,
    SONGS.name,
    ARTISTS.name,
    *STATE_FOLDERS,
)


def run_job(spark: SparkSession, args: JobArgs) -> RunSummary:
    """Run the job and write its summary to ``<output>/_runs/<run_id>.json``.

    The summary is written on failure too, with the one-line reason, so a flow can
    always read what happened.

    Raises:
        JobError: The output is held or damaged, an input is missing or empty, too many
            rejects, or a failed post-load check.
    """
    enforce_utc(spark)
    summary = _new_summary(args)
    storage = Storage(spark)
    started = time.monotonic()
    try:
        lease = OutputLease(
            lease_store_for(args.output_uri),
            args.output_uri,
            args.run_id,
            flow_run_id=args.flow_run_id,
            take_over_from=args.take_over_from,
        )
        lease.acquire()
        try:
            _run_stages(spark, storage, args, summary, lease)
        finally:
            lease.release()
    except BaseException as err:
        summary.status, summary.error = FAILED, describe_error(err)
        raise
    finally:
        summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        summary.duration_seconds = round(time.monotonic() - started, 3)
        summary.requests = storage.requests.as_dict()
        # The job owns its session: a failed run must not leave cached inputs that a later
        # run in the same session would read in place of the files as they are now.
        spark.catalog.clearCache()
        storage.write_text_atomically(
            summary_uri(summary.output_uri, summary.run_id), summary.to_json()
        )
    return summary


def _new_summary(args: JobArgs) -> RunSummary:
    return RunSummary(
        run_id=args.run_id,
        mode="daily" if args.run_date else "full",
        run_date=args.run_date.isoformat() if args.run_date else None,
        songs_uri=args.songs_uri,
        logs_uri=args.logs_uri,
        output_uri=args.output_uri,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_reject_ratio=args.max_reject_ratio,
        table_format=args.table_format,
    )


def _run_stages(
    spark: SparkSession, storage: Storage, args: JobArgs, summary: RunSummary, lease: OutputLease
) -> None:
    """Recover, check, build into staging, check, publish; staging never outlives the run."""
    with _timed(summary, "recover and check the lake"):
        manifest = _recover_and_check(spark, storage, args)
        tables_seen = _iceberg_snapshots(spark, args)
        _check_iceberg_tables(tables_seen, manifest, args.output_uri)
    summary.previous_tables = _previous_table_counts(storage, args.output_uri)
    journaled = False
    try:
        with _timed(summary, "check inputs"):
            logs_uri = _check_inputs(spark, args)
        with _timed(summary, "catalogue"):
            catalogue = read_catalogue(spark, storage, args, manifest if args.run_date else None)
            _record_catalogue(catalogue, summary)
        with _timed(summary, "parse and count"):
            events = _parse_events(spark, logs_uri, args, summary)
        _enforce_reject_threshold(summary, args)
        staged = _stage_tables(spark, args, summary, catalogue, events, manifest)
        publication = _plan(storage, args, manifest, staged, catalogue, summary)
        failpoints.reach("staged")
        lease.ensure_held()  # a run that lost its lease while it built publishes nothing
        journaled = True
        with _timed(summary, "publish"):
            _publish(spark, storage, args, publication, summary, tables_seen)
        events.frame.unpersist()
        catalogue.unpersist()
    finally:
        # Once the journal may exist, its unmoved files and uncommitted tables are in the
        # staging: a publication that failed part way is the next run's to complete
        # (a completed one removes its staging itself).
        if not journaled:
            remove_staging(storage, args.output_uri, args.run_id)


def _recover_and_check(spark: SparkSession, storage: Storage, args: JobArgs) -> Manifest | None:
    """Finish a publication a dead run left, clear dead staging, and (daily) check the lake.

    A full run rebuilds every folder, so it only needs the lake to be recoverable and in
    the run's format; a daily run builds on the lake and refuses one that is not as its
    last run left it.
    """

    def commit_tables(publication: Publication) -> None:  # a dead Iceberg run's commits
        iceberg.committer(spark, _iceberg_catalog(args))(publication)

    completed = complete_interrupted_publication(storage, args.output_uri, commit_tables)
    if completed:
        logger.warning("completed the publication of run %s first", completed)
    remove_dead_staging(storage, args.output_uri, args.run_id)
    last = _last_manifest(storage, args)
    _check_table_format(last, args)
    if not args.run_date:
        return None
    iceberg_format = args.table_format == ICEBERG
    check_lake(
        storage, args.output_uri, last, STATE_FOLDERS if iceberg_format else PUBLISHED_FOLDERS
    )
    _check_state_matches_tables(last, args.output_uri)
    return last


def _last_manifest(storage: Storage, args: JobArgs) -> Manifest | None:
    """The last publication's manifest; for a full run, None when it is unreadable (the
    run replaces it, so a damaged one must not stop the repair)."""
    try:
        return read_manifest(storage, args.output_uri)
    except DamagedLakeError:
        if args.run_date:
            raise
        return None


def _check_table_format(manifest: Manifest | None, args: JobArgs) -> None:
    """A run writes tables in the format the output already holds, or refuses."""
    if manifest is None or manifest.table_format == args.table_format:
        return
    raise TableFormatError(
        f"{args.output_uri} holds {manifest.table_format} tables (its last run, "
        f"{manifest.run_id}), and this run would write {args.table_format} tables over them: "
        f"write them to an output of their own, or remove {args.output_uri} first"
    )


def _check_iceberg_tables(
    tables_seen: dict[str, int | None] | None, manifest: Manifest | None, output_uri: str
) -> None:
    """A daily run merges into the five Iceberg tables its last run left (``manifest``,
    None for a full run or a first run): each must still exist."""
    if tables_seen is None or manifest is None:
        return
    missing = [table for table, snapshot in tables_seen.items() if snapshot is None]
    if missing:
        raise DamagedLakeError(
            f"{output_uri}: the Iceberg tables {', '.join(missing)} are missing. {FULL_RUN_REPAIR}"
        )


def _check_state_matches_tables(manifest: Manifest | None, output_uri: str) -> None:
    """The users' state and the users table must hold the same users."""
    if manifest is None:
        return
    folders = manifest.folders
    if USERS.name in folders and USER_STATE in folders:
        users, state = folders[USERS.name].total_rows, folders[USER_STATE].total_rows
        if users != state:
            raise DamagedLakeError(
                f"{output_uri}: the users' state holds {state} users but the users table "
                f"{users}. {FULL_RUN_REPAIR}"
            )


def _check_inputs(spark: SparkSession, args: JobArgs) -> str:
    """Fail fast on a missing input; return what to read of the logs."""
    io.require_input(spark, args.songs_uri, SONG_SOURCE)
    io.require_input(spark, args.logs_uri, LOG_SOURCE)
    if args.run_date is None:
        return args.logs_uri
    day_file = day_log_uri(args.logs_uri, args.run_date)
    io.require_input(spark, day_file, f"{LOG_SOURCE} file for {args.run_date}")
    return day_file


def _record_catalogue(catalogue: Catalogue, summary: RunSummary) -> None:
    summary.catalogue = catalogue.how
    summary.input_records[SONG_SOURCE] = catalogue.records
    summary.rejects += catalogue.rejects


@dataclass
class ParsedEvents:
    """The parsed log lines (kept on local disk), and where a daily run's good events fall.

    Both are found while counting, without a job of their own.

    Attributes:
        frame: Every parsed line with its reject reason.
        months: (year, month) of the good events' start times: the month partitions a
            daily run's plays may fall in.
        span: The first and last of the good events' start times (epoch ms), or None.
    """

    frame: DataFrame
    months: list[tuple[int, int]]
    span: tuple[int, int] | None


def _parse_events(
    spark: SparkSession, logs_uri: str, args: JobArgs, summary: RunSummary
) -> ParsedEvents:
    """Parse the logs once, count them, keep their rejects; return them, kept.

    The events go to local disk as they are parsed: held in memory, a few GB of them
    ran a 1 GB driver out of heap while the cache was built.
    """
    lines = io.read_lines(spark, logs_uri)
    parsed = transform.parse_records(lines, EVENT_FIELD_TYPES, EVENT_REQUIRED)
    parsed = parsed.persist(StorageLevel.DISK_ONLY)
    month = transform.event_month(F.col("ts")) if args.run_date else None
    start_ms = F.col("ts") if args.run_date else None
    counted = count_records(parsed, LOG_SOURCE, month, start_ms)
    records, rejects = counted.records, counted.rejects
    summary.input_records[LOG_SOURCE] = records
    summary.rejects += rejects
    if args.run_date and records == 0:
        raise EmptyInputError(f"the log file for {args.run_date} ({logs_uri}) holds no record")
    io.write_rejects(
        transform.rejected_records(parsed),
        args.output_uri,
        LOG_SOURCE,
        args.run_date,
        any_rejects=bool(rejects),
    )
    months = sorted((m // 100, m % 100) for m in counted.groups)
    return ParsedEvents(parsed, months, counted.span)


def _plan(
    storage: Storage,
    args: JobArgs,
    manifest: Manifest | None,
    staged: StagedRun,
    catalogue: Catalogue,
    summary: RunSummary,
) -> Publication:
    """The journal of the run's publication.

    The parquet format moves every staged folder in, and the journal carries the run's
    summary. The Iceberg format commits each staged table and moves only the state kept
    beside them; its counts are known once the commits are made.
    """
    folders = staged.folders()
    iceberg_format = args.table_format == ICEBERG
    moved = (
        [folder for folder in folders if folder.folder not in TABLES] if iceberg_format else folders
    )
    publication = plan_publication(storage, args, manifest, moved, catalogue.state)
    publication.manifest.table_format = args.table_format
    summary.status = SUCCEEDED
    if iceberg_format:
        publication.table_commits = iceberg.planned_commits(folders, daily=bool(args.run_date))
    else:
        summary.tables = publication.manifest.table_rows()
        publication.summary_json = summary.to_json()
    return publication


def _iceberg_snapshots(spark: SparkSession, args: JobArgs) -> dict[str, int | None] | None:
    """The Iceberg tables' snapshots as the run found them; None for the parquet format."""
    if args.table_format != ICEBERG:
        return None
    return iceberg.table_snapshots(spark, _iceberg_catalog(args))


def _iceberg_catalog(args: JobArgs) -> iceberg.IcebergCatalog:
    """The run's Iceberg catalog: the output's own, or the Glue database's."""
    return iceberg.IcebergCatalog.for_output(args.output_uri, args.glue_database)


def _publish(
    spark: SparkSession,
    storage: Storage,
    args: JobArgs,
    publication: Publication,
    summary: RunSummary,
    tables_seen: dict[str, int | None] | None,
) -> None:
    """Carry out the journal; with Iceberg, record each table's snapshots and rows.

    Raises:
        CommitConflictError: (Iceberg) a table changed since the run found it: another
            writer went past the lease. Nothing is committed or journaled.
    """
    if args.table_format != ICEBERG:
        publish(storage, args.output_uri, publication)
        return
    catalog = _iceberg_catalog(args)
    before = iceberg.table_snapshots(spark, catalog)
    iceberg.refuse_tables_changed_since(tables_seen or {}, before)
    publish(storage, args.output_uri, publication, iceberg.committer(spark, catalog))
    after = iceberg.table_snapshots(spark, catalog)
    summary.snapshots = {t: {"before": before[t], "after": after[t]} for t in TABLES}
    summary.tables = {
        table: iceberg.snapshot_rows(spark, catalog.identifier(table), snapshot)
        for table, snapshot in after.items()
        if snapshot is not None
    }
    storage.write_text_atomically(last_success_uri(args.output_uri), summary.to_json())


def _enforce_reject_threshold(summary: RunSummary, args: JobArgs) -> None:
    """Stop before anything is built when rejects exceed the allowed share.

    A daily run also holds its day alone to the share: a garbage day must not hide
    behind a large catalogue.
    """
    shares = [("input records", summary.reject_total, sum(summary.input_records.values()))]
    if args.run_date:
        day_rejects = sum(r.count for r in summary.rejects if r.source == LOG_SOURCE)
        shares.append(
            (f"log lines of {args.run_date}", day_rejects, summary.input_records[LOG_SOURCE])
        )
    for what, rejected, total in shares:
        if total and rejected / total > summary.max_reject_ratio:
            raise RejectThresholdExceededError(
                f"{rejected} of {total} {what} rejected ({rejected / total:.2%}), more than "
                f"the allowed {summary.max_reject_ratio:.2%}; see "
                f"{summary.output_uri}/{io.REJECTS_FOLDER}/"
            )


@dataclass
class StagedRun:
    """What a run staged, and (daily) the other days' keys its day's rows clashed with.

    Attributes:
        clashes: By table, the keys other days' file sets hold that the day's rows held
            too (kept: a handful of rows), or None where no other set could hold one.
            None for a full run.
    """

    plays: StagedFolder
    times: StagedFolder
    state: StagedFolder
    users: StagedFolder
    catalogue: list[StagedFolder]
    clashes: dict[str, DataFrame | None] | None = None

    def folders(self) -> list[StagedFolder]:
        return [*self.catalogue, self.plays, self.times, self.state, self.users]


def _stage_tables(
    spark: SparkSession,
    args: JobArgs,
    summary: RunSummary,
    catalogue: Catalogue,
    parsed_events: ParsedEvents,
    manifest: Manifest | None,
) -> StagedRun:
    """Build every table the run changes into staging, and check it there."""
    events = transform.good_records(parsed_events.frame)
    with _timed(summary, "songs and artists"):
        staged_catalogue = catalogue.stage(spark, args)
    with _timed(summary, "songplays and time"):
        if args.run_date:
            plays, times, clashes = _stage_day(
                spark, args, events, catalogue, manifest, parsed_events
            )
        else:
            plays, times = _stage_all_days(spark, args, events, catalogue, summary)
            clashes = None
    with _timed(summary, "users"):
        state, users = _stage_users(spark, args, events, manifest)
    staged = StagedRun(plays, times, state, users, staged_catalogue, clashes)
    with _timed(summary, "post-load checks"):
        _check_staged(summary, catalogue, staged, manifest)
    return staged


def _stage_all_days(
    spark: SparkSession,
    args: JobArgs,
    events: DataFrame,
    catalogue: Catalogue,
    summary: RunSummary,
) -> tuple[StagedFolder, StagedFolder]:
    """Full run: every day's plays and times, each in its log day's file set."""
    with_day = events.withColumn(
        transform.LOG_DAY, transform.log_day_of(events[transform.SOURCE_FILE])
    )
    # A lake rarely logs a play twice: a look at the plays' identities alone decides
    # whether whole plays must be shuffled to remove copies.
    logged_twice = not transform.repeated_plays(events).isEmpty()
    plays = transform.build_songplays(
        with_day, catalogue.song_lookup(), keep=(transform.LOG_DAY,), deduplicate=logged_twice
    )
    # Event lines bound the plays from above: enough to size the files without a count.
    expected = summary.input_records[LOG_SOURCE]
    # Without copies to remove, plays stay in the events' partitions, which follow the log
    # files (a day each): written as they are, every play is spared a shuffle (MP: the
    # stage took 20.8-21.4 s against 22.5-26.4 s).
    staged_plays = stage_by_day(
        spark, plays, SONGPLAYS, args, expected, grouped_by_day=not logged_twice
    )
    times = transform.build_time_sets(staged_plays.frame)
    return staged_plays, stage_by_day(spark, times, TIME, args, expected)


def _stage_day(
    spark: SparkSession,
    args: JobArgs,
    events: DataFrame,
    catalogue: Catalogue,
    manifest: Manifest | None,
    parsed: ParsedEvents,
) -> tuple[StagedFolder, StagedFolder, dict[str, DataFrame | None]]:
    """Daily run: the day's file set of songplays and time, without events other days hold.

    The other sets that may hold one of the day's keys (:func:`io.read_other_sets_keys`)
    are scanned once, for the few keys that clash with the day's; those are kept for
    the checks, which never scan the sets again. Usually no other set may: its days'
    events happened on other days.

    Returns:
        The staged plays and times, and by table the other days' keys that clashed
        (None: no other set could hold one).
    """
    day = args.run_date.isoformat() if args.run_date else ""
    with_day = events.withColumn(transform.LOG_DAY, F.lit(day))
    plays = transform.build_songplays(with_day, catalogue.song_lookup(), keep=(transform.LOG_DAY,))
    keys = transform.songplay_keys(events)  # the probe needs no matching with the catalogue
    play_clashes = _clashes(spark, SONGPLAYS, args, manifest, parsed, keys)
    new_plays = _without(plays, play_clashes, SONGPLAYS)
    staged_plays = stage_by_day(spark, new_plays, SONGPLAYS, args, None, play_clashes)
    times = transform.build_time(staged_plays.frame, keep=(transform.LOG_DAY,))
    time_clashes = _clashes(spark, TIME, args, manifest, parsed, times)
    new_times = _without(times, time_clashes, TIME)
    staged_times = stage_by_day(spark, new_times, TIME, args, None, time_clashes)
    return staged_plays, staged_times, {SONGPLAYS.name: play_clashes, TIME.name: time_clashes}


def _clashes(
    spark: SparkSession,
    spec: TableSpec,
    args: JobArgs,
    manifest: Manifest | None,
    parsed: ParsedEvents,
    day_keys: DataFrame,
) -> DataFrame | None:
    """The keys other days' sets hold that ``day_keys`` hold too, kept; None if none may."""
    day = args.run_date.isoformat() if args.run_date else ""
    other = io.read_other_sets_keys(
        spark, spec, args.output_uri, manifest, parsed.months, day, parsed.span
    )
    if other is None:
        return None
    return transform.clashing_keys(other, day_keys, spec.key).persist(StorageLevel.MEMORY_AND_DISK)


def _without(rows: DataFrame, clashes: DataFrame | None, spec: TableSpec) -> DataFrame:
    return rows if clashes is None else transform.without_keys(rows, clashes, spec.key)


def _stage_users(
    spark: SparkSession, args: JobArgs, events: DataFrame, manifest: Manifest | None
) -> tuple[StagedFolder, StagedFolder]:
    """The users' state (a daily run merges the day into the published one) and users."""
    state = transform.build_user_state(events)
    if args.run_date and manifest is not None and USER_STATE in manifest.folders:
        published = io.read_user_state(spark, args.output_uri, state.schema)
        state = transform.merge_user_states(published, state)
    staged_state = stage_whole(spark, state, USER_STATE, args, files=1)
    users = transform.build_users(staged_state.frame)  # one row per state row
    rows = staged_state.rows[WHOLE_SET]
    return staged_state, stage_whole(spark, users, USERS.name, args, files=1, rows=rows)


def _check_staged(
    summary: RunSummary, catalogue: Catalogue, staged: StagedRun, manifest: Manifest | None
) -> None:
    """Rule 8 on what the run changed (a full run: everything).

    Raises:
        PostLoadCheckError: A check failed; the summary holds every result.
    """
    had_events = summary.input_records[LOG_SOURCE] > sum(
        r.count for r in summary.rejects if r.source == LOG_SOURCE
    )
    play_rows = staged.plays.frame.drop(transform.LOG_DAY)
    time_rows = staged.times.frame.drop(transform.LOG_DAY)
    if staged.clashes is None:
        tables = {
            SONGPLAYS.name: play_rows,
            TIME.name: time_rows,
            USERS.name: staged.users.frame,
            **catalogue.tables(),
        }
        summary.tables, summary.checks = check_tables(tables, had_events)
    else:
        summary.checks = _daily_checks(catalogue, staged, had_events, manifest)
    failed = [check for check in summary.checks if not check.passed]
    if failed:
        raise PostLoadCheckError(
            "post-load checks failed: "
            + "; ".join(f"{check.table} {check.name} ({check.detail})" for check in failed)
        )


def _daily_checks(
    catalogue: Catalogue, staged: StagedRun, had_events: bool, manifest: Manifest | None
) -> list[CheckResult]:
    """A daily run checks its day's rows with every row they could clash with.

    Keys: the day's rows as profiled when staged, none of them among the other sets'
    keys that clashed with the day (what the staging probed the months for: a staged
    key held by another set is among them, since the staged rows are the day's rows
    less those).
    Foreign keys: the day's plays against the catalogue the run matched with, the
    users it publishes, and the day's times with the other sets' times they share.
    songs and artists only when the run rebuilt them.
    """
    clashes = staged.clashes or {}
    results = []
    for folder in (staged.plays, staged.times):
        assert folder.profile is not None  # a day's set is profiled as it is staged
        total = _rows_after(manifest, folder)
        results += profile_results(folder.folder, folder.profile, had_events, total)
    results += check_table(USERS.name, staged.users.frame, had_events)[1]
    for name, frame in catalogue.tables().items():
        results += check_table(name, frame, had_events)[1]
    dimensions = catalogue.dimension_keys()
    plays = staged.plays.frame.drop(transform.LOG_DAY)
    times = staged.times.frame.select("start_time")
    other_times = clashes[TIME.name]
    if other_times is not None:
        times = times.unionByName(other_times)
    results += check_foreign_keys(
        plays,
        [
            ("song_id", SONGS.name, dimensions[SONGS.name], "song_id"),
            ("artist_id", ARTISTS.name, dimensions[ARTISTS.name], "artist_id"),
            ("user_id", USERS.name, staged.users.frame, "user_id"),
            ("start_time", TIME.name, times, "start_time"),
        ],
    )
    return results


def _rows_after(manifest: Manifest | None, staged: StagedFolder) -> int:
    """A table's rows once the staged day replaces its old set."""
    entry = manifest.folders.get(staged.folder) if manifest else None
    kept = dict(entry.rows) if entry else {}
    for replaced in staged.replaces_sets or ():
        kept.pop(replaced, None)
    return sum(kept.values()) + sum(staged.rows.values())


def _previous_table_counts(storage: Storage, output_uri: str) -> dict[str, int]:
    """Row counts of the latest successful run on this output, for "change since".

    An unreadable copy (cut short by a crash of an older version) counts as no previous
    run: it only feeds the report.
    """
    text = storage.read_text(last_success_uri(output_uri))
    if not text:
        return {}
    try:
        return RunSummary.from_json(text).tables
    except ValueError as err:
        logger.warning("ignoring the unreadable %s: %s", last_success_uri(output_uri), err)
        return {}


@contextmanager
def _timed(summary: RunSummary, name: str) -> Iterator[None]:
    """Time one stage into the summary and the log, and name it on the Spark jobs it runs.

    The name rides on each Spark job as the local property :data:`STAGE_PROPERTY`, so an
    event log tells which of the job's stages each Spark job, stage and task served
    (``bench/spark_profile.py``).
    """
    context = SparkContext._active_spark_context
    if context is not None:
        context.setLocalProperty(STAGE_PROPERTY, name)
    started = time.monotonic()
    logger.info("stage %s: started", name)
    try:
        yield
    finally:
        summary.stage_seconds[name] = round(time.monotonic() - started, 3)
        logger.info("stage %s: %.1f s", name, summary.stage_seconds[name])
        if context is not None:
            context.setLocalProperty(STAGE_PROPERTY, None)  # type: ignore[arg-type]
