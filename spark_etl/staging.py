"""Writing a run's tables into its staging area, and planning their publication.

Spark writes only here, ``<output>/_staging/<run_id>/<folder>/``: its ``_temporary`` and
attempt files never sit where readers look. Each staged folder is read back from what
was written, so the checks see the files that will be published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_etl.args import JobArgs
from spark_etl.checks import KeyProfile, key_profile, span_columns
from spark_etl.lake import join_uri
from spark_etl.publication import WHOLE_SET, FolderEntry, Manifest, Publication, staging_uri
from spark_etl.storage import Storage, StoredFile
from spark_etl.tables import TableSpec
from spark_etl.transform import LOG_DAY

# Target size of a parquet file: large enough for fast scans in Athena and Spark, small
# enough that a partition is still written by several tasks in parallel.
ROWS_PER_FILE = 2_000_000


@dataclass
class StagedFolder:
    """One folder a run staged: its frame as written, its rows per file set, what it replaces.

    Attributes:
        folder: The published folder, relative to the output (``songplays``, ``_state/users``).
        frame: The staged rows, read back.
        rows: Rows per file set (log day, or :data:`WHOLE_SET`).
        replaces_sets: The file sets the run replaces; None when it replaces the folder.
        by_day: Whether the folder keeps one file set per log day.
        profile: A daily run's day: its key profile, taken as it was counted.
        spans: First and last start time (epoch ms) per file set of an event table.
    """

    folder: str
    frame: DataFrame
    rows: dict[str, int]
    replaces_sets: tuple[str, ...] | None
    by_day: bool
    profile: KeyProfile | None = None
    spans: dict[str, list[int]] = field(default_factory=dict)


def stage_by_day(
    spark: SparkSession,
    frame: DataFrame,
    spec: TableSpec,
    args: JobArgs,
    rows: int | None,
    clashing_keys: DataFrame | None = None,
    grouped_by_day: bool = False,
) -> StagedFolder:
    """Stage an event table with a ``log_day`` folder level below its partitions.

    A daily run (``args.run_date``) stages one day: its rows are written as they are
    (one day, so each task writes few files), counted in the same job as its key is
    profiled (:func:`spark_etl.checks.key_profile`, against ``clashing_keys``), and the
    profile is kept for the checks.

    Args:
        rows: What bounds the rows from above, when known: a partition gets a writer for
            every :data:`ROWS_PER_FILE` of them.
        grouped_by_day: A full run's ``frame`` whose partitions already hold few days each
            (plays straight from the parsed events: a log file is a day, read by one task,
            or by a few when it is larger than a split), written without a shuffle.
            Otherwise a full run shuffles every row to its partition's writers.
    """
    uri = staging_uri(args.output_uri, args.run_id, spec.name)
    partitions = [*spec.partition_by, LOG_DAY]
    if args.run_date is None and not grouped_by_day:
        files_per_partition = max(1, -(-(rows or 0) // ROWS_PER_FILE))
        spread = F.pmod(F.xxhash64(*spec.key), F.lit(files_per_partition))
        frame = frame.repartition(*[F.col(c) for c in partitions], spread)
    _writer(frame).partitionBy(*partitions).parquet(uri)
    staged = spark.read.schema(by_day_schema(spec)).parquet(uri)
    if args.run_date is None:
        counts = staged.groupBy(LOG_DAY).agg(F.count(F.lit(1)).alias("count"), *span_columns())
        by_day, spans = {}, {}
        for row in counts.collect():
            by_day[row[LOG_DAY]] = int(row["count"])
            if row["low"] is not None:
                spans[row[LOG_DAY]] = [int(row["low"]), int(row["high"])]
        return StagedFolder(spec.name, staged, by_day, None, by_day=True, spans=spans)
    day = args.run_date.isoformat()
    profile = key_profile(staged, spec.key, clashing_keys, with_span=True)
    spans = {day: profile.span} if profile.span else {}
    return StagedFolder(spec.name, staged, {day: profile.rows}, (day,), True, profile, spans)


def by_day_schema(spec: TableSpec) -> T.StructType:
    """The columns of an event table staged by day: the table's, then ``log_day``."""
    return T.StructType([*spec.schema.fields, T.StructField(LOG_DAY, T.StringType())])


def stage_whole(
    spark: SparkSession,
    frame: DataFrame,
    folder: str,
    args: JobArgs,
    files: int | None = None,
    partition_by: tuple[str, ...] = (),
    rows: int | None = None,
    read_back: bool = True,
) -> StagedFolder:
    """Stage a folder that is replaced whole (users, songs, artists, the state).

    Args:
        rows: The rows, when the caller knows them (saves a count).
        read_back: False to keep ``frame`` (kept in memory) instead of reading the files
            back: songs' thousands of (year, artist_id) folders cost more to read back
            than the rest of a run.
    """
    uri = staging_uri(args.output_uri, args.run_id, folder)
    if partition_by:
        # Writing thousands of small partition folders (songs) is bound by creating folders
        # and files, not by bytes: a writer per core, where adaptive execution would
        # coalesce the few MB into one task (a fixed count is never coalesced).
        writers = spark.sparkContext.defaultParallelism
        frame = frame.repartition(writers, *[F.col(c) for c in partition_by])
    elif files:
        frame = frame.coalesce(files)
    writer = _writer(frame)
    if partition_by:
        # Each of those files holds a row or two: setting up a compressor for every file
        # cost more than the write (20k songs: 8.2-8.7 s with snappy, 4.5-4.9 s without).
        writer = writer.option("compression", "none")
    writer.partitionBy(*partition_by).parquet(uri)
    staged = spark.read.parquet(uri).select(*frame.columns) if read_back else frame
    count = staged.count() if rows is None else rows
    return StagedFolder(folder, staged, {WHOLE_SET: count}, None, by_day=False)


def _writer(frame: DataFrame) -> Any:
    return frame.write.mode("overwrite").option("maxRecordsPerFile", ROWS_PER_FILE)


def plan_publication(
    storage: Storage,
    args: JobArgs,
    manifest: Manifest | None,
    staged: list[StagedFolder],
    catalogue_state: dict[str, Any],
) -> Publication:
    """The moves and deletions that publish ``staged``, and the manifest they leave.

    A folder replaced whole retires every file it holds (leftovers of older versions
    included); a daily file set retires only that set's files.
    """
    base = Manifest(args.run_id, dict(manifest.folders) if manifest else {}, dict(catalogue_state))
    if manifest and not catalogue_state:
        base.catalogue = dict(manifest.catalogue)
    publication = Publication(args.run_id, manifest=base)
    for folder in staged:
        _plan_folder(storage, args, folder, publication)
    return publication


def _plan_folder(
    storage: Storage, args: JobArgs, folder: StagedFolder, publication: Publication
) -> None:
    published_uri = join_uri(args.output_uri, folder.folder)
    old = publication.manifest.folders.get(folder.folder, FolderEntry())
    if folder.replaces_sets is None:
        retired = _retire_whole(storage.list_files(published_uri))
        entry = FolderEntry()
    else:
        retired = [path for s in folder.replaces_sets for path in old.files_of(s)]
        entry = FolderEntry(
            {p: s for p, s in old.files.items() if s not in folder.replaces_sets},
            {p: n for p, n in old.sizes.items() if old.files[p] not in folder.replaces_sets},
            {s: n for s, n in old.rows.items() if s not in folder.replaces_sets},
            {s: span for s, span in old.spans.items() if s not in folder.replaces_sets},
        )
    staged_root = staging_uri(args.output_uri, args.run_id, folder.folder)
    for stored in _data_files(storage.list_files(staged_root)):
        target, file_set = _published_path(stored.path, folder.by_day)
        publication.moves.append(
            (join_uri(staged_root, stored.path), join_uri(published_uri, target))
        )
        entry.files[target], entry.sizes[target] = file_set, stored.size
        storage.requests.put += 1
        storage.requests.files_written += 1
        storage.requests.bytes_written += stored.size
    entry.rows.update({s: n for s, n in folder.rows.items() if n})
    entry.spans.update({s: span for s, span in folder.spans.items() if folder.rows.get(s)})
    publication.retired += [join_uri(published_uri, path) for path in retired]
    publication.manifest.folders[folder.folder] = entry


def _retire_whole(listed: list[StoredFile]) -> list[str]:
    """Every file of a folder replaced whole; a hidden folder (``_temporary``) goes whole."""
    retired = set()
    for stored in listed:
        parts = stored.path.split("/")
        hidden = next((i for i, part in enumerate(parts[:-1]) if part.startswith(("_", "."))), None)
        retired.add("/".join(parts[: hidden + 1]) if hidden is not None else stored.path)
    return sorted(retired)


def _data_files(listed: list[StoredFile]) -> list[StoredFile]:
    """The parquet files Spark wrote (not its ``_SUCCESS`` or checksum files)."""
    return [f for f in listed if not f.hidden and f.path.endswith(".parquet")]


def _published_path(staged_path: str, by_day: bool) -> tuple[str, str]:
    """Where a staged file goes, and its file set.

    ``year=2018/month=11/log_day=2018-11-05/part-0.parquet`` becomes
    ``year=2018/month=11/2018-11-05.part-0.parquet`` in set ``2018-11-05``: readers see
    the table's own partitions only, and the day's files are named by their set.
    """
    if not by_day:
        return staged_path, WHOLE_SET
    *partitions, day_folder, name = staged_path.split("/")
    day = day_folder.split("=", 1)[1]
    return "/".join([*partitions, f"{day}.{name}"]), day
