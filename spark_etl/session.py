"""The job's SparkSession: the settings the job relies on, whatever runs it."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pyspark.sql import SparkSession

from spark_etl import iceberg, lineage, s3a
from spark_etl.args import ICEBERG, PARQUET
from spark_etl.jvm_archive import LOCAL_FS_JAR, archive_options

# Settings that make results right (UTC) or the run lean; nothing here is sized for one
# machine, so the same session suits a 2-core laptop and a large EMR cluster. Adaptive
# query execution sizes every shuffle from the data (no fixed 200 partitions) and turns
# joins with a small side into broadcast joins.
JOB_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    # Without this, a frame the job keeps (persist) is computed with adaptive execution
    # off: every shuffle inside it runs 200 tasks, most of a small daily run's time.
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
    "spark.ui.showConsoleProgress": "false",
    # The UI's kill links stop jobs for anyone who can reach the page; nobody needs them.
    "spark.ui.killEnabled": "false",
    # A song file is ~250 bytes. At the 4 MB default, Spark plans each one as if it were
    # 4 MB of reading and spreads 20k songs over 600+ tasks; 256 KB packs a few hundred
    # per task, which still spreads them over every core of a large cluster.
    "spark.sql.files.openCostInBytes": str(256 * 1024),
    # The parsed events are kept on local disk in Spark's columnar batches. Compressing
    # them was a third of the parse stage (575 MB of logs: 14.1 s compressed, 10.5 s not)
    # for a cache 1.5x smaller (59 MB against 87 MB): disk is the cheaper of the two.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}

# pip's pyspark has no native Hadoop library, so Hadoop runs `chmod` in a new process for
# every local file and folder it creates: minutes for the thousands of songs partitions.
# This jar (source beside it) sets permissions in-process. It only applies to a JVM the
# job starts itself on this machine (python -m spark_etl), never under spark-submit/EMR.
CLASS_PATH = "spark.driver.extraClassPath"
LOCAL_JVM_SETTINGS = {
    CLASS_PATH: str(LOCAL_FS_JAR),
    "spark.hadoop.fs.file.impl": "sparkify.hadoop.FastLocalFileSystem",
}

# Spark lists a folder level with more than 32 folders in a Spark job of its own: the song
# catalogue's 12,500 folders (lake MP) took 32 jobs and 10-16 s. On a machine's own disk
# the driver lists them in 5 s without a job, so a JVM the job starts lists in the driver.
# On S3 that would be a request per folder, one after another: there Spark lists flat
# (1,000 keys a request; Spark's default for s3a://), as it now does for s3://, which S3A
# serves in such a JVM. Under spark-submit (EMR) listing is left to the cluster's settings.
OWN_JVM_LISTING_SETTINGS = {
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000000",
    "spark.sql.sources.useListFilesFileSystemList": "s3a,s3",
}


# A small run is over seconds after its JVM starts, before the optimizing JIT compiler
# (C2) pays back the cores it spends compiling: the quick compiler (C1) alone made a
# daily run of lake M 4-5 s shorter on 2 cores (25 s to 20 s). A run over much input
# needs C2: C1 alone made a full run of lake M take 147 s instead of 117 s. So only a
# JVM the job starts itself for little input (a day's log file) stops at C1, and maps
# the class archive of spark_etl.jvm_archive when there is one.
QUICK_JIT_OPTION = "-XX:TieredStopAtLevel=1"
QUICK_JVM_MAX_INPUT_BYTES = 256 * 1024 * 1024

# Java's default collector (G1) runs threads of its own beside the program; on a 2-core
# machine they take their share of the cores Spark's tasks need. The throughput
# collector stops the tasks for each collection instead: lake MP's full run took
# 89.3-95.3 s with it against 102.5-104.1 s with G1 (three runs each, interleaved).
THROUGHPUT_GC_OPTION = "-XX:+UseParallelGC"


# A local JVM the job starts serves its UI (paths, SQL, configuration) and its driver on
# loopback only, never on the machine's network. Spark's UI binds to the address in the
# JVM's SPARK_LOCAL_IP, and to every interface (0.0.0.0) without it: no setting moves it.
LOOPBACK = "127.0.0.1"
LOOPBACK_SETTINGS = {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK}


def create_session(
    app_name: str = "sparkify-lake",
    input_bytes: int | None = None,
    uris: Sequence[str] = (),
    table_format: str = PARQUET,
    glue_catalog: bool = False,
) -> SparkSession:
    """Start (or join) the session with :data:`JOB_SETTINGS` applied.

    The master is not set here: spark-submit (EMR: YARN) or pyspark (local[*]) decides.
    A local JVM the job starts itself listens on 127.0.0.1 only (:func:`loopback_settings`).

    Args:
        input_bytes: What the run reads, when known before the JVM starts (a daily
            run's local log file): a small run's JVM starts quickly (:func:`own_jvm_options`).
        uris: The run's inputs and output: one on ``s3://`` puts Hadoop's S3A connector
            in a JVM this process starts (:func:`s3a_jvm_settings`).
        table_format: ``iceberg`` puts Iceberg's Spark runtime in a JVM this process
            starts (:func:`iceberg_jvm_settings`).
        glue_catalog: The Iceberg tables are in the Glue Data Catalog: Iceberg's AWS
            bundle joins its runtime.

    With ``OPENLINEAGE_URL`` set, a JVM this process starts runs OpenLineage's listener
    (:func:`lineage_jvm_settings`).
    """
    loopback = loopback_settings()
    if loopback:
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK  # read by the JVM that getOrCreate starts
    local_fs, s3_fs = local_jvm_settings(), s3a_jvm_settings(uris)
    listener, tables = lineage_jvm_settings(), iceberg_jvm_settings(table_format, glue_catalog)
    settings = {
        **JOB_SETTINGS,
        **(OWN_JVM_LISTING_SETTINGS if starts_own_jvm() else {}),
        **local_fs,
        **s3_fs,
        **listener,
        **own_jvm_options(input_bytes),
        **loopback,
        # Iceberg's AWS bundle (Glue catalog) holds a newer AWS SDK, in the same packages
        # as S3A's own SDK modules, and needs its own classes: it comes before S3A's.
        **joined_class_path(local_fs, tables, s3_fs, listener),
    }
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if s3_fs:  # a session that was already running has its Hadoop settings set here
        s3a.configure(spark, os.environ)
    spark.sparkContext.setLogLevel("WARN")
    enforce_utc(spark)
    return spark


def s3a_jvm_settings(uris: Sequence[str]) -> dict[str, str]:
    """S3A on the class path and in charge of ``s3://``, for a JVM this process starts.

    None under spark-submit (EMR's ``s3://`` is EMRFS, the cluster's own) or when no
    URI is on S3.

    Raises:
        JobError: The S3A jars are not fetched (``make jars``).
    """
    if not starts_own_jvm() or not s3a.uses_s3(uris):
        return {}
    return {
        "spark.driver.extraClassPath": os.pathsep.join(s3a.classpath()),
        **s3a.session_settings(os.environ),
    }


def iceberg_jvm_settings(table_format: str, glue_catalog: bool = False) -> dict[str, str]:
    """Iceberg's Spark runtime on the class path (with ``glue_catalog``, its AWS bundle
    too), for a JVM this process starts to write Iceberg tables.

    None under spark-submit: there the cluster's class path is the submitter's to set (EMR
    puts its bundled Iceberg there when the cluster enables it, as the EMR runner asks).

    Raises:
        JobError: No runtime is pinned for this pyspark's line, or it is not fetched.
    """
    if table_format != ICEBERG or not starts_own_jvm():
        return {}
    return {CLASS_PATH: os.pathsep.join(iceberg.classpath(glue=glue_catalog))}


def lineage_jvm_settings() -> dict[str, str]:
    """OpenLineage's Spark listener, for a JVM this process starts with lineage on.

    None under spark-submit: there the runner that submits the job sets the listener.

    Raises:
        JobError: The OpenLineage variables are malformed, or the listener is not fetched.
    """
    if not starts_own_jvm():
        return {}
    return lineage.listener_settings(os.environ)


def joined_class_path(*settings: dict[str, str]) -> dict[str, str]:
    """One ``spark.driver.extraClassPath`` of every entry ``settings`` hold."""
    entries = [part[CLASS_PATH] for part in settings if CLASS_PATH in part]
    return {CLASS_PATH: os.pathsep.join(entries)} if entries else {}


def local_jvm_settings() -> dict[str, str]:
    """:data:`LOCAL_JVM_SETTINGS` when this process will start the JVM itself, else none.

    Under spark-submit (EMR, or a local spark-submit) the job changes nothing about file
    systems.
    """
    if not starts_own_jvm() or not LOCAL_FS_JAR.is_file():
        return {}
    return dict(LOCAL_JVM_SETTINGS)


def own_jvm_options(input_bytes: int | None) -> dict[str, str]:
    """The Java options of a JVM this process starts: the throughput collector, and for
    a small run C1-only JIT and the class archive.

    Left alone (none): a JVM spark-submit started (EMR's settings are the cluster's), or
    driver options the user set through ``PYSPARK_SUBMIT_ARGS``.
    """
    user_options = "--driver-java-options" in os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    if not starts_own_jvm() or user_options:
        return {}
    small = input_bytes is not None and input_bytes <= QUICK_JVM_MAX_INPUT_BYTES
    quick = [QUICK_JIT_OPTION, *archive_options()] if small else []
    return {"spark.driver.extraJavaOptions": " ".join([THROUGHPUT_GC_OPTION, *quick])}


def loopback_settings() -> dict[str, str]:
    """:data:`LOOPBACK_SETTINGS` when this process will start a local-master JVM, else none.

    Left alone: a JVM spark-submit started (EMR keeps its UI inside the cluster's network),
    a master on other machines (its executors must reach the driver), and a
    ``SPARK_LOCAL_IP`` the user set (their choice of address).
    """
    if not starts_own_jvm() or "SPARK_LOCAL_IP" in os.environ or not _master_is_local():
        return {}
    return dict(LOOPBACK_SETTINGS)


def starts_own_jvm() -> bool:
    """Whether this process will start the JVM (``python -m spark_etl``).

    Under spark-submit (EMR, or a local spark-submit) the JVM is already running and
    passes its gateway port down.
    """
    return not os.environ.get("PYSPARK_GATEWAY_PORT")


def _master_is_local() -> bool:
    """Whether the master pyspark will ask spark-submit for is local (its default)."""
    words = os.environ.get("PYSPARK_SUBMIT_ARGS", "").replace("=", " ").split()
    if "--master" in words[:-1]:
        return words[words.index("--master") + 1].startswith("local")
    return os.environ.get("MASTER", "local").startswith("local")


def enforce_utc(spark: SparkSession) -> None:
    """Interpret every timestamp in UTC, whatever the machine's or cluster's zone."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
