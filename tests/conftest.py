"""Shared fixtures, each built once per test run: the Spark session, the Prefect API, the
tiny lake and the output of one full run over it. The lake and the full run are read
only: a test that changes them works on a copy.

Prefect reads its settings when first imported, so the environment is set here, before
any test module imports it: a throw-away PREFECT_HOME, no telemetry, room to start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="sparkify-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)  # never talk to a user's real server from tests
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import pytest  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from spark_etl.session import LOCAL_JVM_SETTINGS  # noqa: E402
from tests.lakes import DAYS, catalogue, day_events, job_args, write_lake  # noqa: E402


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One small local session for every Spark test (UTC, one shuffle partition, no UI)."""
    session = (
        SparkSession.builder.master("local[1]")
        .appName("sparkify-lake-tests")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # As `python -m spark_etl` runs locally: without the project's local file system,
        # Hadoop starts a `chmod` process for every file and folder written.
        .config(map=LOCAL_JVM_SETTINGS)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One ephemeral Prefect API for the tests that run flows (costs ~20 s, once)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
        # The harness then drains every worker with no time limit: drain within one first.
        EventsWorker.drain_all(timeout=30)
        APILogWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four-day lake of ``tests.lakes`` (read only: copy it to change it)."""
    root = tmp_path_factory.mktemp("lake")
    return write_lake(root, {day: day_events(day) for day in DAYS}, catalogue())


@pytest.fixture(scope="session")
def full_output(spark: SparkSession, lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tables of one in-process full run over ``lake`` (read only: copy it to change it)."""
    from spark_etl.job import run_job

    output = tmp_path_factory.mktemp("full")
    run_job(spark, job_args(lake, output))
    return output


@pytest.fixture
def printed(capfd: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Callable[[], str]:
    """What the test printed to stdout and stderr, wherever pytest caught it.

    capfd alone is not enough: Prefect's console handler keeps the ``sys.stderr`` of the
    moment logging was set up, which under pytest's default capture is pytest's own
    session-wide capture file, not file descriptor 2.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def read() -> str:
        caught = "".join(capfd.readouterr())
        if capture is not None and capture.is_globally_capturing():
            caught += "".join(capture.read_global_capture())
        return caught

    return read
