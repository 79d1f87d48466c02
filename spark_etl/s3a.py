"""Hadoop's S3A connector, so that a JVM the job starts itself reads and writes ``s3://``.

On EMR and EMR Serverless ``s3://`` is EMRFS, the cluster's own: nothing here applies
there, because spark-submit started the JVM. pip's pyspark has no S3 file system at all, so
``make s3a-jars`` (``python -m spark_etl.s3a``) fetches Hadoop's S3A connector from Maven
Central: ``hadoop-aws`` at exactly the Hadoop version that pyspark bundles, with the AWS
SDK modules it was built against, each jar checked against the SHA-256 its lock file
pins (``spark_etl/s3a_jars/``). They are kept in ``~/.cache/sparkify-lake/jars`` (or
``$SPARKIFY_JAR_CACHE``), and a second run downloads nothing.

A run that starts its own JVM and touches ``s3://`` then maps ``s3://`` to S3A and
follows the AWS SDK's standard variables: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
for another S3-compatible store (MinIO, Ceph, moto_server), with path-style addressing;
``AWS_REGION`` or ``AWS_DEFAULT_REGION``; the credentials in ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), as S3A's default chain reads them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spark_etl.errors import JobError
from spark_etl.lease_store import S3_SCHEMES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOCKS = Path(__file__).resolve().parent / "s3a_jars"
CACHE_ENV = "SPARKIFY_JAR_CACHE"
REPOSITORY_ENV = "SPARKIFY_MAVEN_REPOSITORY"  # a Maven Central mirror, if the network needs one
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
FETCH_COMMAND = "make s3a-jars"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# s3:// and s3n:// name the same objects as s3a:// (as EMRFS answers for s3:// on EMR).
S3A_FILE_SYSTEMS = {
    "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "fs.s3n.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
}


@dataclass(frozen=True)
class LockedJar:
    """One jar of a lock file: its Maven coordinates, SHA-256 and size."""

    group: str
    artifact: str
    version: str
    sha256: str
    size: int

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def repository_path(self) -> str:
        """Its path in a Maven repository."""
        group_path = self.group.replace(".", "/")
        return f"{group_path}/{self.artifact}/{self.version}/{self.file_name}"


@dataclass(frozen=True)
class FetchReport:
    """What one lock's fetch found in the cache and what it downloaded."""

    folder: Path
    jars: int
    total_bytes: int
    downloaded: int
    downloaded_bytes: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.folder}: {self.jars} jars, {self.total_bytes / 1e6:.1f} MB; downloaded "
            f"{self.downloaded} ({self.downloaded_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s"
        )


def read_lock(lock: Path) -> list[LockedJar]:
    """The jars a lock file pins: ``group:artifact:version  sha256  bytes`` per line."""
    jars = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        coordinates, sha256, size = line.split()
        group, artifact, version = coordinates.split(":")
        jars.append(LockedJar(group, artifact, version, sha256, int(size)))
    return jars


def jar_cache() -> Path:
    """Where fetched jars are kept: ``$SPARKIFY_JAR_CACHE`` or ``~/.cache/sparkify-lake/jars``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sparkify-lake" / "jars")


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
        JobError: A jar is missing from the cache: ``make s3a-jars`` fetches it.
    """
    lock = lock_for(hadoop_version or bundled_hadoop_version())
    folder = jar_cache() / lock.stem
    paths = [folder / jar.file_name for jar in read_lock(lock)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise JobError(
            f"s3:// needs Hadoop's S3A connector here, and {len(missing)} of its jars are "
            f"not in {folder} ({missing[0]}, ...): run `{FETCH_COMMAND}` once"
        )
    return [str(path) for path in paths]


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
        if not value:
            continue
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise JobError(f"{variable} must be an http:// or https:// address, not {value!r}")
        return value.rstrip("/")
    return None


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


def fetch(lock: Path, repository: str | None = None) -> FetchReport:
    """Put every jar of ``lock`` in the cache, downloading only what is missing or wrong.

    Raises:
        JobError: A download's size or SHA-256 is not the one pinned (nothing is kept).
    """
    started = time.monotonic()
    base = (repository or os.environ.get(REPOSITORY_ENV) or MAVEN_CENTRAL).rstrip("/")
    folder = jar_cache() / lock.stem
    folder.mkdir(parents=True, exist_ok=True)
    jars = read_lock(lock)
    downloaded = [jar for jar in jars if not _is_intact(folder / jar.file_name, jar)]
    for jar in downloaded:
        _download(f"{base}/{jar.repository_path}", folder / jar.file_name, jar)
    return FetchReport(
        folder=folder,
        jars=len(jars),
        total_bytes=sum(jar.size for jar in jars),
        downloaded=len(downloaded),
        downloaded_bytes=sum(jar.size for jar in downloaded),
        seconds=time.monotonic() - started,
    )


def _is_intact(path: Path, jar: LockedJar) -> bool:
    return path.is_file() and path.stat().st_size == jar.size and _sha256(path) == jar.sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, jar: LockedJar) -> None:
    """Download into a temporary file beside ``target``; keep it only if it is the pinned jar."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{jar.file_name}.")
    os.close(handle)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        found = _sha256(Path(temporary))
        if found != jar.sha256:
            raise JobError(
                f"{url} is not the pinned {jar.file_name}: SHA-256 {found}, "
                f"pinned {jar.sha256}; nothing was kept"
            )
        os.replace(temporary, target)
    except OSError as err:
        raise JobError(f"could not download {url}: {err}") from err
    finally:
        Path(temporary).unlink(missing_ok=True)


def main() -> int:
    """Fetch the S3A connector of every pinned Hadoop version (the project's and EMR's)."""
    try:
        for lock in sorted(LOCKS.glob("*.lock")):
            print(f"S3A jars: {fetch(lock)}", flush=True)
    except JobError as err:
        print(f"spark_etl.s3a: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
