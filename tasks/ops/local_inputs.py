"""Checks of the local runner's prerequisites: Java and the input folders (Prefect-free)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

from spark_etl.lake import LOG_SOURCE, SONG_SOURCE, day_log_parts

SUPPORTED_JAVA = (17, 21)
JAVA_HELP = (
    "PySpark 4 needs Java 17 or 21 on PATH (Java 25 fails). Install it, e.g. "
    "'sudo apt-get install openjdk-17-jre-headless' or 'brew install openjdk@17', "
    "or set JAVA_HOME to such a JDK."
)


class UnusableJavaError(Exception):
    """No Java on PATH that PySpark 4 runs on; the message says what to install."""


def java_problem() -> str | None:
    """Say what is wrong with the Java on PATH, or None when it can run Spark."""
    java = shutil.which("java")
    if java is None:
        return f"No 'java' on PATH. {JAVA_HELP}"
    version_text = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False
    ).stderr
    match = re.search(r'version "(\d+)', version_text)
    if match is None:
        return f"Could not read the Java version from {version_text!r}. {JAVA_HELP}"
    major = int(match.group(1))
    if major not in SUPPORTED_JAVA:
        return f"Java {major} found at {java}. {JAVA_HELP}"
    return None


def find_missing_inputs(songs_uri: str, logs_uri: str, run_date: date | None) -> list[str]:
    """List what is missing among the local inputs (empty list when all is there)."""
    problems = []
    for label, folder in ((SONG_SOURCE, songs_uri), (LOG_SOURCE, logs_uri)):
        path = Path(folder)
        if not path.is_dir():
            problems.append(f"{label} folder {folder} does not exist")
        elif next(path.rglob("*.json"), None) is None:
            problems.append(f"{label} folder {folder} holds no .json file")
    if run_date and not problems:
        day_file = Path(logs_uri).joinpath(*day_log_parts(run_date))
        if not day_file.is_file():
            problems.append(f"no log file for {run_date}: {day_file} does not exist")
    return problems


if __name__ == "__main__":  # `make check-java`
    import sys

    problem = java_problem()
    if problem:
        sys.exit(f"error: {problem}")
