"""Hadoop's S3A connector, so that a JVM the job starts itself reads and writes ``s3://``.

On EMR and EMR Serverless ``s3://`` is EMRFS, the cluster's own: nothing here applies
there, because spark-submit started the JVM. pip's pyspark has no S3 file system at all, so
``make jars`` (:mod:`spark_etl.jars`) fetches Hadoop's S3A connector from Maven Central:
``hadoop-aws`` at exactly the Hadoop version that pyspark bundles, with the AWS SDK modules
it was built against, each jar checked against the SHA-256 its lock file pins
(``spark_etl/s3a_jars/``).

A run that starts its own JVM and touches ``s3://`` then maps ``s3://`` to S3A and
follows the AWS SDK's standard variables: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
for another S3-compatible store (MinIO, Ceph, moto_server), with path-style addressing;
``AWS_REGION`` or ``AWS_DEFAULT_REGION``; the credentials in ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), as S3A's default chain reads them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from spark_etl import jars
from spark_etl.errors import JobError
from spark_etl.lease_store import S3_SCHEMES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOCKS = Path(__file__).resolve().parent / "s3a_jars"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# s3:// and s3n:// name the same objects as s3a:// (as EMRFS answers for s3:// on EMR).
S3A_FILE_SYSTEMS = {
    "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "fs.s3n.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
}


def bundled_hadoop_version(pyspark_folder: Path | None = None) -> str:
    """The Hadoop version a pyspark bundles (its hadoop-client-api jar): this Python's, or
    the one installed in ``pyspark_folder``."""
    if pyspark_folder is None:
        import pyspark  # importing it starts no JVM

        pyspark_folder = Path(pyspark.__file__).parent
    jars = pyspark_folder / "jars"
    found = sorted(jars.glob("hadoop-client-api-*.jar"))
    if not found:
        raise JobError(f"no hadoop-client-api jar in {jars}: this pyspark bundles no Hadoop")
    return found[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")


def lock_for(hadoop_version: str) -> Path:
    """The lock file of the S3A connector for ``hadoop_version``.

    Raises:
        JobError: The project pins no S3A connector for that Hadoop version.
    """
    lock = LOCKS / f"s3a-hadoop-{hadoop_version}.lock"
    if not lock.is_file():
        pinned = ", ".join(sorted(path.stem for path in LOCKS.glob("*.lock")))
        raise JobError(
            f"no S3A connector is pinned for Hadoop {hadoop_version} (pinned: {pinned}); "
            "add a lock file to spark_etl/s3a_jars (see its README)"
        )
    return lock


def classpath(hadoop_version: str | None = None) -> list[str]:
    """The fetched jars of the S3A connector for pyspark's Hadoop (or ``hadoop_version``).

    Raises:
        JobError: A jar is missing from the cache: ``make jars`` fetches it.
    """
    lock = lock_for(hadoop_version or bundled_hadoop_version())
    return jars.cached_paths(lock, "s3:// (Hadoop's S3A connector)")


def uses_s3(uris: Iterable[str]) -> bool:
    """Whether any of ``uris`` is on S3."""
    return any(uri.lower().startswith(S3_SCHEMES) for uri in uris)


def endpoint_url(environ: Mapping[str, str]) -> str | None:
    """The S3 endpoint the AWS SDK's standard variables name, checked; None for AWS's own.

    Raises:
        JobError: The variable holds something other than an http(s) address.
    """
    for variable in ENDPOINT_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            return checked_http_url(variable, value)
    return None


def checked_http_url(variable: str, value: str) -> str:
    """The address ``variable`` holds, without a trailing ``/``, checked to be http(s).

    Raises:
        JobError: It is not an http:// or https:// address with a host.
    """
    value = value.strip()
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JobError(f"{variable} must be an http:// or https:// address, not {value!r}")
    return value.rstrip("/")


def hadoop_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Hadoop settings that put S3A in charge of ``s3://``, for the store ``environ`` names."""
    settings = dict(S3A_FILE_SYSTEMS)
    endpoint = endpoint_url(environ)
    if endpoint:
        # Another store (MinIO, Ceph, moto_server) rarely has a DNS name per bucket.
        settings["fs.s3a.endpoint"] = endpoint
        settings["fs.s3a.path.style.access"] = "true"
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["fs.s3a.endpoint.region"] = region
    return settings


def session_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Spark settings of a JVM about to start: :func:`hadoop_settings` as ``spark.hadoop.*``."""
    return {f"spark.hadoop.{key}": value for key, value in hadoop_settings(environ).items()}


def configure(spark: SparkSession, environ: Mapping[str, str]) -> None:
    """Apply :func:`hadoop_settings` to a running session whose class path holds S3A.

    File systems opened afterwards use them (Hadoop caches one per bucket).
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in hadoop_settings(environ).items():
        conf.set(key, value)
