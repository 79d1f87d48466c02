"""Jars the job puts on a JVM it starts itself, pinned and checked: fetched once from
Maven Central into ``~/.cache/sparkify-lake/jars`` (or ``$SPARKIFY_JAR_CACHE``), each checked
against the SHA-256 and size its lock file pins, and never committed.

A lock file (``<name>.lock`` in a ``*_jars`` folder of this package) lists one jar a line:
``group:artifact:version  sha256  bytes``. ``make jars`` (``python -m spark_etl.jars``)
fetches every lock's jars; a second run downloads nothing. The S3A connector
(:mod:`spark_etl.s3a`), the OpenLineage listener (:mod:`spark_etl.lineage`) and Iceberg's
Spark runtime (:mod:`spark_etl.iceberg`) use them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from spark_etl.errors import JobError

PACKAGE = Path(__file__).resolve().parent
CACHE_ENV = "SPARKIFY_JAR_CACHE"
REPOSITORY_ENV = "SPARKIFY_MAVEN_REPOSITORY"  # a Maven Central mirror, if the network needs one
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
FETCH_COMMAND = "make jars"


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


def every_lock() -> list[Path]:
    """Every lock file the project pins: S3A's, the lineage listener's and Iceberg's."""
    return sorted(PACKAGE.glob("*_jars/*.lock"))


def cached_paths(lock: Path, needed_for: str) -> list[str]:
    """The cached jars of ``lock``, in its order.

    Raises:
        JobError: A jar is not in the cache: ``make jars`` fetches it.
    """
    folder = jar_cache() / lock.stem
    paths = [folder / jar.file_name for jar in read_lock(lock)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise JobError(
            f"{needed_for} needs {len(missing)} jars that are not in {folder} "
            f"({missing[0]}, ...): run `{FETCH_COMMAND}` once"
        )
    return [str(path) for path in paths]


def main() -> int:
    """Fetch the jars of every lock (the project's pyspark's and the EMR line's)."""
    try:
        for lock in every_lock():
            print(f"jars {lock.stem}: {fetch(lock)}", flush=True)
    except JobError as err:
        print(f"spark_etl.jars: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
