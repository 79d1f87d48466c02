"""The Apache Iceberg table format (``--table-format iceberg``): the catalog and the commits.

A run builds and checks its tables in staging exactly as for parquet; publishing then
makes one Iceberg commit per table that changes, each an atomic swap of the table's
metadata: a reader sees the table before the commit or after it, never a mix.
- A table the run rebuilds (a full run's five tables; a daily run's users, and songs and
  artists when the catalogue changed) is replaced whole (``REPLACE TABLE ... AS SELECT``).
  Its earlier snapshots stay, for time travel, until maintenance expires them.
- A daily run's songplays and time are merged in (``MERGE INTO ... WHEN NOT MATCHED THEN
  INSERT``): a row whose key the table holds is left alone, so a re-run of a day changes
  no row and days in any order give the full run's rows (contract rule 7).

Either catalog keeps the table of ``<output>/<table>`` in that folder (its data files in
``data/``, its metadata in ``metadata/``):
- By default, Iceberg's Hadoop catalog: ``metadata/`` also holds a ``version-hint.text``, so
  DuckDB's iceberg extension and pyiceberg's ``StaticTable`` read it with no catalog
  server. Its commit is a rename that refuses to replace an existing metadata version:
  atomic on a local or HDFS file system, not on S3, where the output's lease is what
  keeps writers apart.
- With ``--glue-database``, the Glue Data Catalog (Iceberg's ``GlueCatalog``, files through
  its ``S3FileIO``): the tables are Iceberg tables of that database, which Athena and
  Redshift Spectrum query. A commit swaps the table's ``metadata_location`` with Glue's
  ``UpdateTable``, conditional on the version the commit read (optimistic locking).

The Spark runtime is a pinned, checksummed jar (``spark_etl/iceberg_jars``, ``make jars``)
that a JVM the job starts itself puts on its class path, with Iceberg's AWS bundle for the
Glue catalog; under spark-submit the cluster's own Iceberg serves (EMR's
``iceberg-defaults``). Apache Iceberg ships a runtime per Spark line, and none yet for
Spark 4.2 or 4.3: that is why the project's pyspark is 4.1.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_etl import failpoints, jars, s3a
from spark_etl.errors import CommitConflictError, JobError
from spark_etl.publication import Publication, TableCommitter, staging_uri
from spark_etl.staging import by_day_schema
from spark_etl.tables import SONGS, TABLES, TableSpec

logger = logging.getLogger(__name__)

LOCKS = Path(__file__).resolve().parent / "iceberg_jars"
SPARK_CATALOG_CLASS = "org.apache.iceberg.spark.SparkCatalog"
GLUE_CATALOG_CLASS = "org.apache.iceberg.aws.glue.GlueCatalog"
S3_FILE_IO_CLASS = "org.apache.iceberg.aws.s3.S3FileIO"
# The AWS SDK's variables for another Glue endpoint (a test's moto_server), as for S3.
GLUE_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_GLUE", "AWS_ENDPOINT_URL")
FORMAT_VERSION = "2"
# Set on every snapshot a replacement writes, so a table's history names the run.
RUN_ID_PROPERTY = "sparkify.run-id"
REPLACE = "replace"
MERGE = "merge"
# songs' partitions hold a row or two each: as in the parquet format, their files are
# written uncompressed (a compressor set up per file costs more than the write).
UNCOMPRESSED_TABLES = frozenset({SONGS.name})
# What Iceberg raises when another writer's commit conflicts with this run's.
COMMIT_CONFLICTS = ("CommitFailedException", "ValidationException")


def spark_line(version: str | None = None) -> str:
    """The Spark line (``4.1``) of ``version``, or of this Python's pyspark."""
    if version is None:
        import pyspark

        version = pyspark.__version__
    major, minor = version.split(".")[:2]
    return f"{major}.{minor}"


def lock_for(line: str, part: str = "spark") -> Path:
    """The lock file of Iceberg's Spark runtime (``part="glue"``: its AWS bundle) for Spark
    ``line``.

    Raises:
        JobError: Apache Iceberg ships no runtime for this Spark line (none is pinned).
    """
    lock = LOCKS / f"iceberg-{part}-{line}.lock"
    if not lock.is_file():
        pinned_locks = LOCKS.glob(f"iceberg-{part}-*.lock")
        pinned = ", ".join(sorted(path.stem.rsplit("-", 1)[-1] for path in pinned_locks))
        raise JobError(
            f"--table-format iceberg needs Apache Iceberg's runtime for Spark {line}, and "
            f"none is pinned (pinned: Spark {pinned}); run the job on one of those lines"
        )
    return lock


def classpath(line: str | None = None, glue: bool = False) -> list[str]:
    """The fetched runtime jar for this pyspark's line (or ``line``), and with ``glue`` the
    AWS bundle the Glue catalog needs.

    Raises:
        JobError: No runtime for the line, or it is not fetched (``make jars``).
    """
    line = line or spark_line()
    parts = ["spark", "glue"] if glue else ["spark"]
    needed_for = "--table-format iceberg (Apache Iceberg's Spark runtime)"
    return [path for part in parts for path in jars.cached_paths(lock_for(line, part), needed_for)]


@dataclass(frozen=True)
class IcebergCatalog:
    """The catalog whose tables are ``<output>/<table>``.

    Without a Glue database it is a Hadoop catalog: its warehouse is the output's parent
    folder and its namespace the output's own name, so each table's location is exactly
    ``<output>/<table>``. With one, it is the Glue Data Catalog: the namespace is the
    database, and each table is created at ``<output>/<table>``. The Spark catalog's name
    is derived from the output (and database), so two outputs in one session never share
    a catalog (Spark keeps a catalog, and its warehouse, for the session's life).
    """

    name: str
    warehouse: str
    namespace: str
    output_uri: str
    glue: bool = False

    @classmethod
    def for_output(cls, output_uri: str, glue_database: str = "") -> IcebergCatalog:
        """The catalog of ``output_uri``: the Glue Data Catalog's ``glue_database`` if set.

        Raises:
            JobError: The output is a bucket or file system root: its tables need a
                folder of their own.
        """
        trimmed = output_uri.rstrip("/")
        parent, _, name = trimmed.rpartition("/")
        if not name or parent in ("", "s3:/", "file:", "file://"):
            raise JobError(
                f"--table-format iceberg needs the output in a folder of its own, "
                f"not {output_uri!r} (a bucket or file system root)"
            )
        digest = hashlib.sha256(f"{trimmed} {glue_database}".encode()).hexdigest()[:12]
        if glue_database:
            return cls(f"sparkify_{digest}", trimmed, glue_database, trimmed, glue=True)
        return cls(f"sparkify_{digest}", parent, name, trimmed)

    def settings(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The Spark settings that define the catalog (``environ``: the AWS SDK's endpoint
        variables, for Glue and S3 elsewhere than AWS)."""
        prefix = f"spark.sql.catalog.{self.name}"
        common = {
            prefix: SPARK_CATALOG_CLASS,
            f"{prefix}.warehouse": self.warehouse,
            # A cached table would hide commits made since by another process (a run
            # that died part way, a second writer): every read asks the metadata.
            f"{prefix}.cache-enabled": "false",
        }
        if not self.glue:
            return {**common, f"{prefix}.type": "hadoop"}
        glue = {
            f"{prefix}.catalog-impl": GLUE_CATALOG_CLASS,
            f"{prefix}.io-impl": S3_FILE_IO_CLASS,
        }
        endpoints = aws_endpoint_settings(os.environ if environ is None else environ)
        return {**common, **glue, **{f"{prefix}.{k}": v for k, v in endpoints.items()}}

    def configure(self, spark: SparkSession) -> None:
        """Define the catalog in a running session (Spark loads a catalog at first use)."""
        for key, value in self.settings().items():
            spark.conf.set(key, value)
        _quiet_missing_version_hint(spark)

    def identifier(self, table: str) -> str:
        """The table's name in Spark SQL, quoted: an output's name may hold a ``-``."""
        return f"`{self.name}`.`{self.namespace}`.`{table}`"

    def location(self, table: str) -> str | None:
        """Where a new table is created: set for Glue; a Hadoop catalog's tables lie at
        ``<warehouse>/<namespace>/<table>`` by construction, and it refuses any other."""
        return f"{self.output_uri}/{table}" if self.glue else None


def aws_endpoint_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Iceberg's AWS properties for the Glue and S3 endpoints the AWS SDK's standard
    variables name (another store: path-style S3 addresses); none for AWS's own.

    Raises:
        JobError: A variable holds something other than an http(s) address.
    """
    settings = {}
    glue = next((v for v in GLUE_ENDPOINT_VARIABLES if environ.get(v, "").strip()), None)
    if glue:
        settings["glue.endpoint"] = s3a.checked_http_url(glue, environ[glue])
    s3_endpoint = s3a.endpoint_url(environ)
    if s3_endpoint:
        settings["s3.endpoint"] = s3_endpoint
        settings["s3.path-style-access"] = "true"
    return settings


def _quiet_missing_version_hint(spark: SparkSession) -> None:
    """A table's first commit looks for a ``version-hint.text`` that cannot exist yet, and
    Iceberg logs a warning with a stack trace for it: only errors of that class are kept."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    level = jvm.org.apache.logging.log4j.Level.ERROR
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    configurator.setLevel("org.apache.iceberg.hadoop.HadoopTableOperations", level)


def current_snapshot(spark: SparkSession, identifier: str) -> int | None:
    """The id of the table's current snapshot, or None when the table does not exist."""
    if not spark.catalog.tableExists(identifier):
        return None
    rows = spark.sql(f"SELECT snapshot_id FROM {identifier}.refs WHERE name = 'main'").collect()
    return int(rows[0]["snapshot_id"]) if rows else None


def table_snapshots(spark: SparkSession, catalog: IcebergCatalog) -> dict[str, int | None]:
    """Each of the five tables' current snapshot id (None: the table does not exist)."""
    catalog.configure(spark)
    return {table: current_snapshot(spark, catalog.identifier(table)) for table in TABLES}


def refuse_tables_changed_since(seen: dict[str, int | None], now: dict[str, int | None]) -> None:
    """Refuse to commit when a table is no longer at the snapshot the run found it at.

    The output's lease keeps job runs apart; this catches a writer that went past it
    (a second job forced on, another engine). The window left is the time between this
    check and the commits; inside a merge, Iceberg's own validation covers it.

    Raises:
        CommitConflictError: Naming each table that changed, and its two snapshots.
    """
    changed = [f"{t} ({seen[t]} -> {now[t]})" for t in seen if seen[t] != now.get(t)]
    if changed:
        raise CommitConflictError(
            f"another writer committed to the Iceberg tables {', '.join(changed)} since this "
            "run read them, so this run committed nothing and every table keeps the other "
            "writer's rows; run again once one writer is left"
        )


def snapshot_rows(spark: SparkSession, identifier: str, snapshot_id: int) -> int:
    """The rows of the table at a snapshot, from its summary: no data file is read."""
    summary = spark.sql(
        f"SELECT summary['total-records'] AS total FROM {identifier}.snapshots "
        f"WHERE snapshot_id = {int(snapshot_id)}"
    ).collect()
    return int(summary[0]["total"])


class StagedTable(Protocol):
    """What a commit needs of a staged folder (:class:`spark_etl.staging.StagedFolder`)."""

    folder: str
    by_day: bool


def planned_commits(staged: Iterable[StagedTable], daily: bool) -> list[list[Any]]:
    """The journal's commits, ``[table, mode, by_day]``, for the staged table folders.

    A daily run merges its day's event tables in and replaces any other table it built;
    a full run replaces every table.
    """
    return [
        [folder.folder, MERGE if daily and folder.by_day else REPLACE, folder.by_day]
        for folder in staged
        if folder.folder in TABLES
    ]


def committer(spark: SparkSession, catalog: IcebergCatalog) -> TableCommitter:
    """What makes a journal's commits: each table from the run's staged folder, in turn.

    A commit made before a crash is made again when the next run completes the journal:
    a replacement with the same rows, a merge that finds every row already there.
    """
    output_uri = catalog.output_uri

    def commit(publication: Publication) -> None:
        catalog.configure(spark)
        commits = publication.table_commits
        for index, (table, mode, by_day) in enumerate(commits):
            if index == len(commits) // 2:
                failpoints.reach("committing")
            spec = TABLES[table]
            staged = staging_uri(output_uri, publication.run_id, table)
            rows = read_staged(spark, spec, staged, by_day)
            write = merge_into_table if mode == MERGE else replace_table
            write(spark, rows, spec, catalog, publication.run_id)
            logger.info("committed %s (%s) to the Iceberg table", table, mode)

    return commit


def read_staged(spark: SparkSession, spec: TableSpec, uri: str, by_day: bool) -> DataFrame:
    """A staged folder's rows in the table's columns (a by-day folder's ``log_day`` dropped)."""
    schema = by_day_schema(spec) if by_day else spec.schema
    return spark.read.schema(schema).parquet(uri).select(*spec.column_names)


def replace_table(
    spark: SparkSession, rows: DataFrame, spec: TableSpec, catalog: IcebergCatalog, run_id: str
) -> None:
    """Replace the table with ``rows`` in one commit (created on the first run).

    Raises:
        JobError: Another writer committed to the table meanwhile.
    """
    if spec.partition_by:
        rows = rows.sortWithinPartitions(*spec.partition_by)
    writer = (
        rows.writeTo(catalog.identifier(spec.name))
        .using("iceberg")
        .tableProperty("format-version", FORMAT_VERSION)
        .option(f"snapshot-property.{RUN_ID_PROPERTY}", run_id)
    )
    location = catalog.location(spec.name)
    if location:
        writer = writer.tableProperty("location", location)
    if spec.partition_by:
        # Each task writes its rows sorted by partition, one file open at a time. Left to
        # itself Iceberg shuffles the rows by partition and then keeps a writer open per
        # partition a task meets: songs' 12,500 partitions ran a 1 GB driver out of heap.
        writer = (
            writer.partitionedBy(*[F.col(column) for column in spec.partition_by])
            .tableProperty("write.distribution-mode", "none")
            .option("fanout-enabled", "false")
        )
    if spec.name in UNCOMPRESSED_TABLES:
        writer = writer.tableProperty("write.parquet.compression-codec", "uncompressed")
    with _conflicts_named(spec.name):
        writer.createOrReplace()


def merge_into_table(
    spark: SparkSession, rows: DataFrame, spec: TableSpec, catalog: IcebergCatalog, run_id: str
) -> None:
    """Add the rows whose key the table does not hold, in one commit.

    The partition columns join the key in the match: an event's key fixes its start
    time and so its partition, and Spark then reads only the partitions the day touches.

    Raises:
        JobError: Another writer committed rows the merge conflicts with meanwhile.
    """
    identifier = catalog.identifier(spec.name)
    if not spark.catalog.tableExists(identifier):
        replace_table(spark, rows, spec, catalog, run_id)
        return
    view = f"sparkify_day_{re.sub(r'[^A-Za-z0-9]', '_', run_id)}_{spec.name}"
    rows.createOrReplaceTempView(view)
    matched = " AND ".join(f"t.`{c}` = s.`{c}`" for c in (*spec.key, *spec.partition_by))
    try:
        with _conflicts_named(spec.name):
            spark.sql(
                f"MERGE INTO {identifier} t USING {view} s ON {matched} "
                "WHEN NOT MATCHED THEN INSERT *"
            )
    finally:
        spark.catalog.dropTempView(view)


@contextmanager
def _conflicts_named(table: str) -> Iterator[None]:
    """Turn Iceberg's refusal of a conflicting commit into a JobError naming the table."""
    try:
        yield
    except Exception as err:
        text = str(err)
        conflict = next((name for name in COMMIT_CONFLICTS if name in text), None)
        if conflict is None:
            raise
        first_line = next((line for line in text.splitlines() if conflict in line), conflict)
        raise CommitConflictError(
            f"{table}: another writer committed to the Iceberg table while this run wrote "
            "it, so Iceberg refused this run's commit and the table keeps the other writer's "
            f"rows; run again once one writer is left ({first_line.strip()[:300]})"
        ) from err
