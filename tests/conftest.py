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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_PREFECT_HOME = tempfile.mkdtemp(prefix="sparkify-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)  # never talk to a user's real server from tests
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
import pytest  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from bench.s3_api import S3Api  # noqa: E402
from spark_etl import iceberg, s3a  # noqa: E402
from spark_etl.errors import JobError  # noqa: E402
from spark_etl.session import (  # noqa: E402
    CLASS_PATH,
    LOCAL_JVM_SETTINGS,
    OWN_JVM_LISTING_SETTINGS,
    joined_class_path,
)
from tests.lakes import DAYS, catalogue, day_events, job_args, write_lake  # noqa: E402

# The modules whose tests use the Spark session. The lanes run on two xdist workers
# (`-n 2`), and these modules all run on one of them: one JVM for the whole run, while
# the flow tests, which mostly wait on the Prefect API, run on the other.
SPARK_MODULES = frozenset(
    f"tests/{name}.py"
    for name in (
        "emr/test_rehearsal",
        "test_bench",
        "test_checks",
        "test_crash_safety",
        "test_entry_points",
        "test_iceberg",
        "test_job",
        "test_lake_safety",
        "test_on_s3",
        "test_small_runs",
        "test_songs_etl_flow",
        "test_transform",
    )
)


def pytest_itemcollected(item: pytest.Item) -> None:
    """A test that needs the Spark session outside :data:`SPARK_MODULES` is a mistake:
    under xdist it would start a second JVM on the other worker."""
    module = item.nodeid.split("::", 1)[0]
    if "spark" in getattr(item, "fixturenames", ()) and module not in SPARK_MODULES:
        raise pytest.UsageError(f"{module} uses the spark fixture: add it to SPARK_MODULES")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Distribute modules to workers (xdist's loadscope), all of SPARK_MODULES as one."""
    from xdist.scheduler import LoadScopeScheduling

    class OneSparkWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "spark" if module in SPARK_MODULES else module

    return OneSparkWorker(config, log)


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
        .config(map=OWN_JVM_LISTING_SETTINGS)
        # And S3A, for the tests on an S3 API (bench/s3_api.py), and Iceberg's runtime,
        # for the tests of the Iceberg format, when they are fetched.
        .config(map=joined_class_path(LOCAL_JVM_SETTINGS, _s3a_class_path(), _iceberg_class_path()))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _s3a_class_path() -> dict[str, str]:
    try:
        return {CLASS_PATH: os.pathsep.join(s3a.classpath())}
    except JobError:
        return {}  # the tests on S3 say so (s3_api); every other test runs without it


def _iceberg_class_path() -> dict[str, str]:
    try:
        return {CLASS_PATH: os.pathsep.join(iceberg.classpath())}
    except JobError:
        return {}  # the Iceberg tests fail, naming `make jars`; every other test runs


@pytest.fixture(scope="session")
def s3_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Api]:
    """moto's server on 127.0.0.1 in its own process, counting S3 requests (started once)."""
    s3a.classpath()  # no S3A jars: fail now, naming the command that fetches them
    server = S3Api(tmp_path_factory.mktemp("s3-api"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_bucket(s3_api: S3Api, spark: SparkSession) -> Iterator[str]:
    """A new bucket on :func:`s3_api`, which boto3 and the session's S3A use for the module.

    The AWS SDK's standard variables point at the server, as a user would set them for
    MinIO or Ceph, and the session takes S3A's settings from them as the job does. The
    session's JVM started before they were set, so its S3A cannot read the credentials
    from its environment: they go in its Hadoop settings instead.
    """
    with pytest.MonkeyPatch.context() as environment:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
            environment.delenv(name, raising=False)
        environment.setenv("AWS_ENDPOINT_URL_S3", s3_api.url)
        environment.setenv("AWS_ACCESS_KEY_ID", "testing")
        environment.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        environment.setenv("AWS_REGION", "us-east-1")
        s3a.configure(spark, os.environ)
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        hadoop.set("fs.s3a.access.key", "testing")
        hadoop.set("fs.s3a.secret.key", "testing")
        bucket = "lake-" + uuid.uuid4().hex[:12]
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield bucket


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
