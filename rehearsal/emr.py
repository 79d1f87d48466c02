"""Rehearse the EMR path with no AWS account: moto stands in for AWS, and every step the
flow submits runs for real.

    make rehearse-emr          # or: .venv/bin/python -m rehearsal.emr

The ``songs_etl`` flow runs with ``runner="emr"``, unchanged. moto answers its AWS calls;
a :class:`StepRunner` thread watches moto's EMR clusters and executes each step the way
a cluster would:

- ``spark-submit`` runs the step's own arguments (the ``--py-files`` zip, the entry
  script, the job's flags) on the Spark line EMR runs (``.venv-emr``: pyspark 4.0, as on
  ``emr-spark-8.0.0``), exactly as submitted;
- its ``s3://bucket/key`` paths are moto's own S3: moto's server, in a thread of this
  process, serves the same buckets over HTTP on 127.0.0.1, and Hadoop's S3A connector
  stands in for EMRFS (``make jars``), as EMR puts EMRFS on a cluster's class path.
  The flow, the job and Glue see one S3, with no copy in between;
- on a cluster created with EMR's Iceberg enabled (the Iceberg format), Iceberg's Spark
  runtime and AWS bundle at the versions pinned for that Spark line stand in for the
  Iceberg EMR bundles, and the job's Glue catalog is moto's Glue, on the same server;
- its stdout and stderr are put where EMR puts a step's logs
  (``{LogUri}/{cluster_id}/steps/{step_id}/stdout.gz``, ``stderr.gz``), and the step
  becomes COMPLETED or FAILED from spark-submit's exit status.

The one difference from a cluster: ``--deploy-mode cluster`` runs as client mode, since
a local master has no cluster to place the driver on. A cluster terminated while its
step runs interrupts the step, as on EMR.

What moto's Glue does not do: it ignores ``UpdateTable``'s ``VersionId``, the condition
on which Glue makes an Iceberg commit (optimistic locking), so two commits racing to
the same table would both pass here. The rehearsal's runs are one writer at a time, as
the output's lease makes them; the job's own check (a table must still be at the
snapshot the run found) and Iceberg's own (the table's metadata location must still be
the one the commit started from, read just before ``UpdateTable``) do run against it.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_etl import iceberg, s3a
from tasks.ops.emr import uses_iceberg
from tasks.ops.names import PROJECT_ROOT

# pyspark of the Spark line emr-spark-8.0.0 runs (Spark 4.0, Python 3.11); `make emr-spark`.
EMR_SPARK_VENV = PROJECT_ROOT / ".venv-emr"
MOTO_ACCOUNT = "123456789012"
DEPLOY_MODE = "--deploy-mode"
REGION = "us-east-1"
RAW_BUCKET, LAKE_BUCKET, CODE_BUCKET, LOG_BUCKET = (
    "rehearsal-raw",
    "rehearsal-lake",
    "rehearsal-code",
    "rehearsal-logs",
)
CREDENTIALS_BLOCK, CLUSTER_BLOCK = "rehearsal-aws", "rehearsal-emr"
ICEBERG_DATABASE = "sparkify_lake_iceberg"
FORMATS = ("parquet", "iceberg")

logger = logging.getLogger(__name__)


class RehearsalError(Exception):
    """The rehearsal cannot run (no EMR-line Spark installed, a step it cannot execute)."""


@dataclass(frozen=True)
class EmrSpark:
    """The spark-submit and the Python of the Spark line EMR runs."""

    spark_submit: Path
    python: Path
    venv: Path

    @property
    def hadoop_version(self) -> str:
        """The Hadoop version its pyspark bundles.

        Raises:
            RehearsalError: No pyspark is installed in its virtualenv.
        """
        return s3a.bundled_hadoop_version(self._pyspark_folder())

    @property
    def spark_line(self) -> str:
        """The Spark line (``4.0``) of its pyspark, which picks Iceberg's runtime.

        Raises:
            RehearsalError: No pyspark is installed in its virtualenv.
        """
        version_file = (self._pyspark_folder() / "version.py").read_text(encoding="utf-8")
        found = re.search(r"__version__[^=]*=\s*['\"]([0-9.]+)", version_file)
        if not found:
            raise RehearsalError(f"no version in {self._pyspark_folder()}/version.py")
        return iceberg.spark_line(found.group(1))

    def _pyspark_folder(self) -> Path:
        installed = sorted(self.venv.glob("lib/python*/site-packages/pyspark"))
        if not installed:
            raise RehearsalError(f"no pyspark in {self.venv}: run 'make emr-spark'")
        return installed[0]

    @classmethod
    def installed(cls, venv: Path = EMR_SPARK_VENV) -> EmrSpark:
        """The EMR-line Spark in ``venv``.

        Raises:
            RehearsalError: It is not installed.
        """
        spark = cls(venv / "bin" / "spark-submit", venv / "bin" / "python", venv)
        if not (spark.spark_submit.is_file() and spark.python.is_file()):
            raise RehearsalError(
                f"no EMR-line Spark in {venv}: run 'make emr-spark' (pyspark 4.0, as on "
                "emr-spark-8.0.0)"
            )
        return spark


def s3a_settings(spark: EmrSpark, s3_endpoint: str, iceberg_enabled: bool = False) -> list[str]:
    """spark-submit options that give the step S3A for ``s3://``, on the server at
    ``s3_endpoint``, and, for a cluster with EMR's Iceberg enabled, Iceberg's runtime and
    AWS bundle at the versions pinned for the EMR line's Spark.

    Raises:
        JobError: The jars of the EMR line are not fetched (``make jars``).
    """
    jars = s3a.classpath(spark.hadoop_version)
    if iceberg_enabled:
        # Iceberg's AWS bundle holds a newer AWS SDK than S3A's own modules, in the same
        # packages, and needs its own classes: it comes first (S3A runs on it, as on EMR,
        # where one SDK serves both).
        jars = iceberg.classpath(spark.spark_line, glue=True) + jars
    settings = s3a.session_settings({"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_REGION": REGION})
    return [
        *("--driver-class-path", os.pathsep.join(jars)),
        *(part for key, value in settings.items() for part in ("--conf", f"{key}={value}")),
    ]


def spark_submit_command(
    step_args: list[str], spark: EmrSpark, s3_endpoint: str, iceberg_enabled: bool = False
) -> list[str]:
    """The step's ``spark-submit`` line, run on a local master against the S3 at
    ``s3_endpoint`` (with Iceberg when the cluster enables it).

    Raises:
        RehearsalError: The step is not a ``command-runner.jar`` spark-submit.
    """
    if not step_args or step_args[0] != "spark-submit":
        raise RehearsalError(f"the rehearsal runs spark-submit steps only, not {step_args[:1]}")
    arguments = list(step_args[1:])
    if DEPLOY_MODE in arguments:  # a local master has no cluster to place the driver on
        arguments[arguments.index(DEPLOY_MODE) + 1] = "client"
    return [
        str(spark.spark_submit),
        *("--master", "local[2]"),
        *("--conf", "spark.ui.enabled=false"),  # no web UI listening on this machine
        *s3a_settings(spark, s3_endpoint, iceberg_enabled),
        *arguments,
    ]


def put_step_logs(
    s3: Any, log_uri: str, cluster_id: str, step_id: str, logs: dict[str, bytes]
) -> None:
    """Put ``stdout.gz`` and ``stderr.gz`` where EMR puts a step's logs."""
    bucket, _, prefix = log_uri.removeprefix("s3://").partition("/")
    folder = "/".join(filter(None, [prefix.rstrip("/"), cluster_id, "steps", step_id]))
    for name, body in logs.items():
        s3.put_object(Bucket=bucket, Key=f"{folder}/{name}.gz", Body=gzip.compress(body))


class StepRunner:
    """Executes the steps of moto's EMR clusters, one at a time, in a background thread.

    Use as a context manager inside ``mock_aws()``; every step added while it runs is
    executed, and its state is set in moto as EMR would set it. While it runs, moto's
    server serves this process's moto backends on 127.0.0.1 (:attr:`s3_endpoint`) to the
    steps' processes.
    """

    def __init__(self, workdir: Path, spark: EmrSpark, region: str = "us-east-1") -> None:
        from moto.server import ThreadedMotoServer

        self._workdir, self._spark, self._region = workdir, spark, region
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emr-step-runner", daemon=True)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.executed: list[str] = []  # step ids, in the order they ran
        self.errors: list[BaseException] = []

    @property
    def s3_endpoint(self) -> str:
        """The address of moto's server, which the steps' S3A and boto3 use."""
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def __enter__(self) -> StepRunner:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._server.start()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._server.stop()

    def _backend(self) -> Any:
        from moto.emr.models import emr_backends

        return emr_backends[MOTO_ACCOUNT][self._region]

    def _run(self) -> None:
        import boto3

        s3 = boto3.client("s3", region_name=self._region)
        while not self._stop.is_set():
            try:
                found = self._next_step()
                if found is None:
                    time.sleep(0.2)
                    continue
                self._execute(s3, *found)
            except Exception as err:  # a runner that dies silently would hang the flow
                logger.exception("the rehearsal's step runner failed")
                self.errors.append(err)
                return

    def _next_step(self) -> tuple[Any, Any] | None:
        """The oldest step that waits to run on an active cluster."""
        for cluster in list(self._backend().clusters.values()):
            if cluster.state in ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"):
                continue
            for step in cluster.steps:
                if step.state in ("PENDING", "RUNNING") and step.id not in self.executed:
                    return cluster, step
        return None

    def _execute(self, s3: Any, cluster: Any, step: Any) -> None:
        """Run one step for real and record its end state, logs and outputs."""
        from moto.core.utils import utcnow

        self.executed.append(step.id)
        step.state, step.start_date_time = "RUNNING", utcnow()
        iceberg_enabled = uses_iceberg(cluster.configurations)
        command = spark_submit_command(
            list(step.args), self._spark, self.s3_endpoint, iceberg_enabled
        )
        logger.info("step %s on %s: %s", step.id, cluster.id, " ".join(command))
        return_code, stdout, stderr = self._spark_submit(command, cluster)
        if cluster.log_uri:
            put_step_logs(
                s3, cluster.log_uri, cluster.id, step.id, {"stdout": stdout, "stderr": stderr}
            )
        if return_code is None:
            step.state, step.last_state_change_reason = "INTERRUPTED", "Cluster terminated."
        elif return_code == 0:
            step.state = "COMPLETED"
        else:
            step.state = "FAILED"
            step.last_state_change_reason = f"spark-submit exited with code {return_code}"
        step.end_date_time = utcnow()

    def _spark_submit(self, command: list[str], cluster: Any) -> tuple[int | None, bytes, bytes]:
        """Run spark-submit; stop it when the cluster is terminated (None as exit code)."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYSPARK_", "SPARK_", "PYTHON", "VIRTUAL_ENV"))
        }
        environment.update(
            PYSPARK_PYTHON=str(self._spark.python),
            PYSPARK_DRIVER_PYTHON=str(self._spark.python),
            TZ="UTC",  # EMR's nodes run in UTC
            # The job's boto3 (its lease on S3) and Iceberg's AWS SDK (its Glue catalog)
            # find moto's server as the SDKs do.
            AWS_ENDPOINT_URL_S3=self.s3_endpoint,
            AWS_ENDPOINT_URL_GLUE=self.s3_endpoint,
            AWS_REGION=self._region,
        )
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                env=environment,
                cwd=self._workdir,
                start_new_session=True,
            )
            return_code: int | None = None
            while (return_code := process.poll()) is None:
                if cluster.state.startswith("TERMINAT") or self._stop.is_set():
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return_code = None
                    break
                time.sleep(0.2)
            out.seek(0)
            err.seek(0)
            return return_code, out.read(), err.read()


def prepare_aws(lake: Path, days_held_back: int = 0) -> dict[str, Any]:
    """Buckets, the raw lake and the two blocks in moto; the flow's parameters to use.

    Call inside ``mock_aws()`` with a Prefect API available (blocks are saved there).

    Args:
        lake: A local lake (``song_data``, ``log_data``) to upload as the raw bucket.
        days_held_back: The last days of logs not uploaded yet (see :func:`upload_day`).
    """
    import boto3
    from prefect_aws import AwsCredentials

    from tasks.emr import EmrClusterConfig

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW_BUCKET, LAKE_BUCKET, CODE_BUCKET, LOG_BUCKET):
        s3.create_bucket(Bucket=bucket)
    log_files = sorted((lake / "log_data").rglob("*.json"))
    held_back = set(log_files[len(log_files) - days_held_back :]) if days_held_back else set()
    for path in sorted(lake.rglob("*.json")):
        if path not in held_back and path.parent != lake:
            key = path.relative_to(lake).as_posix()
            s3.put_object(Bucket=RAW_BUCKET, Key=key, Body=path.read_bytes())
    # Like a block for a profile or an instance role, it holds no key: boto3 takes moto's
    # test keys from the environment (set by _isolate_environment, or by the tests).
    AwsCredentials(region_name=REGION).save(CREDENTIALS_BLOCK, overwrite=True)
    EmrClusterConfig(log_uri=f"s3://{LOG_BUCKET}/emr").save(CLUSTER_BLOCK, overwrite=True)
    return {
        "runner": "emr",
        "songs_uri": f"s3://{RAW_BUCKET}/song_data",
        "logs_uri": f"s3://{RAW_BUCKET}/log_data",
        "output_uri": f"s3://{LAKE_BUCKET}/star",
        "code_bucket_uri": f"s3://{CODE_BUCKET}/jobs",
        "aws_credentials_block": CREDENTIALS_BLOCK,
        "cluster_config_block": CLUSTER_BLOCK,
        "poll_seconds": 1.0,
        "max_wait_minutes": 15.0,
    }


def upload_day(lake: Path, day_file: Path) -> None:
    """Upload one more day's log file, as the app does every night."""
    import boto3

    key = day_file.relative_to(lake).as_posix()
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=RAW_BUCKET, Key=key, Body=day_file.read_bytes()
    )


def _isolate_environment(prefect_home: Path) -> None:
    """Fake AWS keys, no real endpoint, and a Prefect API of the rehearsal's own."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "PREFECT_API_URL", "PREFECT_API_KEY"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def iceberg_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The flow's parameters for the same runs in the Iceberg format: an output and a Glue
    database of their own."""
    return {
        **parameters,
        "output_uri": f"s3://{LAKE_BUCKET}/star-iceberg",
        "table_format": "iceberg",
        "glue_database": ICEBERG_DATABASE,
    }


def main() -> int:
    """A full run, then a daily run of the next day, through the EMR path on moto: in the
    parquet format, then in the Iceberg format (tables of moto's Glue)."""
    spark = EmrSpark.installed()
    with tempfile.TemporaryDirectory(prefix="sparkify-rehearsal-") as folder:
        workdir = Path(folder)
        _isolate_environment(workdir / "prefect-home")
        from moto import mock_aws

        from flows.songs_etl import songs_etl
        from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake

        lake = workdir / "lake"
        generate_sample_lake(lake, SampleLakeConfig(songs=200, events=3_000, days=3, quirks=True))
        last_day = sorted((lake / "log_data").rglob("*.json"))[-1]
        with mock_aws(), StepRunner(workdir, spark) as runner:
            parquet = prepare_aws(lake, days_held_back=1)
            runs = {"parquet": parquet, "iceberg": iceberg_parameters(parquet)}
            states = {}
            for table_format, parameters in runs.items():
                print(
                    f"rehearsal: full run ({table_format}) on {parameters['logs_uri']} "
                    "(all days but the last)"
                )
                states[f"full ({table_format})"] = songs_etl(**parameters, return_state=True)
            upload_day(lake, last_day)
            day = last_day.name[:10]
            for table_format, parameters in runs.items():
                print(f"rehearsal: daily run ({table_format}) of {day}")
                daily = songs_etl(**parameters, run_date=day, return_state=True)
                states[f"daily ({table_format})"] = daily
            print(f"rehearsal: steps executed with spark-submit: {len(runner.executed)}")
        return report(states)


def report(states: dict[str, Any]) -> int:
    """Print each run's end state and tables' rows; 0 when every run completed and both
    formats' tables count the same rows (the tests compare them row for row)."""
    for label, state in states.items():
        detail = f": {state.message}" if state.is_failed() else f": {state.result().tables}"
        print(f"rehearsal: {label} run {state.type.value}{detail}")
    if not all(state.is_completed() for state in states.values()):
        return 1
    parquet, iceberg_tables = (states[f"daily ({name})"].result().tables for name in FORMATS)
    if parquet != iceberg_tables:
        print("rehearsal: the two formats' tables count different rows")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
