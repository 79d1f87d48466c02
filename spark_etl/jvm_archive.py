"""A class data sharing archive for the JVM of a small local run.

A daily run's JVM lives a few seconds, and spends a good share of them reading,
parsing and verifying the thousands of Spark and Scala classes it loads. Java's dynamic
class data sharing (CDS) archive holds those classes as one run left them, and later
JVMs map it instead: on lake M (2 cores) a daily run took 15 s with the archive against
20 s without (both with C1 only, see :mod:`spark_etl.session`).

``make jvm-archive`` (part of ``make demo``) builds the archive once
(``python -m spark_etl.jvm_archive``) by running the job on a tiny generated lake: a
full run, then a daily run whose JVM writes the archive as it exits. It is kept per
pyspark installation and Java installation under ``~/.cache/sparkify-lake`` (or
``$SPARKIFY_JVM_CACHE``), about 190 MB. Only a JVM the job starts itself for a small
run uses it (:func:`spark_etl.session.own_jvm_options`); without it, such a run
only starts a few seconds slower.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

CACHE_ENV = "SPARKIFY_JVM_CACHE"
# Set by build_archive for the run whose JVM writes the archive (a path to write it to).
WRITE_ENV = "SPARKIFY_JVM_ARCHIVE_WRITE"
LOCAL_FS_JAR = Path(__file__).resolve().parent / "localfs" / "sparkify-local-fs.jar"


def archive_path() -> Path:
    """Where the archive of this pyspark and this Java installation is kept.

    The JVM checks an archive against its own build and class path and ignores one that
    does not match; the name keeps each installation's archive apart.
    """
    import pyspark  # the version is part of the name; importing it starts no JVM

    cache = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "sparkify-lake")
    digest = _installation_digest(Path(pyspark.__file__).resolve().parent)
    return Path(cache) / f"spark-{pyspark.__version__}-{digest}.jsa"


def _installation_digest(pyspark_home: Path) -> str:
    """A digest of the java that will run and of the class path: pyspark's jars, where
    they are installed (two environments with one pyspark version list different paths,
    and a JVM given the other's archive ignores it), and the job's own jar.
    """
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home, "bin", "java")) if java_home else shutil.which("java") or ""
    parts = [os.path.realpath(java) if java else "no java", str(pyspark_home)]
    if LOCAL_FS_JAR.is_file():
        stat = LOCAL_FS_JAR.stat()
        parts.append(f"{LOCAL_FS_JAR}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def archive_options() -> list[str]:
    """The JVM options that use the archive, or write it during :func:`build_archive`.

    None when there is no archive yet, or when its path holds whitespace (the options
    are split on it).
    """
    to_write = os.environ.get(WRITE_ENV)
    if to_write:
        return [f"-XX:ArchiveClassesAtExit={to_write}"]
    archive = archive_path()
    if not archive.is_file() or any(c.isspace() for c in str(archive)):
        return []
    return [f"-XX:SharedArchiveFile={archive}"]


def build_archive() -> Path:
    """Run the job on a tiny lake, its daily run writing the archive; return its path.

    The archive is written beside its final name and moved there once the run ended
    well, so a run never maps a half-written archive.

    Raises:
        RuntimeError: A run failed, or the JVM wrote no archive.
    """
    from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake

    target = archive_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    config = SampleLakeConfig(songs=40, events=400, users=8, days=2)
    with tempfile.TemporaryDirectory(prefix="sparkify-jvm-archive-") as work:
        lake, output = Path(work, "lake"), Path(work, "output")
        generate_sample_lake(lake, config, workers=1)
        _run_job(lake, output, None, {})
        second_day = (config.start_date + timedelta(days=1)).isoformat()
        _run_job(lake, output, second_day, {WRITE_ENV: str(partial)})
    if not partial.is_file():
        raise RuntimeError(f"the JVM wrote no archive at {partial}")
    os.replace(partial, target)
    return target


def _run_job(lake: Path, output: Path, day: str | None, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "spark_etl", "--songs", str(lake / "song_data")]
    argv += ["--logs", str(lake / "log_data"), "--output", str(output)]
    argv += ["--date", day] if day else []
    done = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the job failed while building the archive:\n{done.stderr[-2000:]}")


def main() -> int:
    """Build the archive unless there is one; a failure is reported, never fatal.

    Small runs simply go without an archive; delete it to build it again.
    """
    if archive_path().is_file():
        print(f"JVM class archive for small local runs: {archive_path()} (kept)")
        return 0
    try:
        print(f"JVM class archive for small local runs: {build_archive()}")
    except (OSError, RuntimeError) as err:
        print(f"no JVM class archive (small local runs start a few seconds slower): {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
