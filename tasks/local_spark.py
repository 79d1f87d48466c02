"""The local runner: make the sample lake, check local inputs, run the job on local Spark;
and :class:`LocalRunner`, which puts them in the flow's one sequence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from prefect import get_run_logger, task

from spark_etl.args import JobArgs
from spark_etl.summary import RunSummary, summary_uri
from tasks.ops.cost import RunCost
from tasks.ops.local_inputs import UnusableJavaError, find_missing_inputs, java_problem
from tasks.ops.names import PROJECT_ROOT
from tasks.runner import RunnerSettings

# The demo lake a run with the default locations reads, generated on first use.
SAMPLE_LAKE = "data/sample-lake"
DEFAULT_SONGS_URI = f"{SAMPLE_LAKE}/song_data"
DEFAULT_LOGS_URI = f"{SAMPLE_LAKE}/log_data"
DEFAULT_OUTPUT_URI = "data/star-schema"

# The job's own log lines that are worth a line in the flow's log; Spark's INFO chatter is not.
_NOISY_PREFIXES = (
    "WARN",
    "INFO",
    "Using Spark's default log4j",
    "To adjust logging level",
    "Setting default log level",
)


class LocalSparkJobError(Exception):
    """The local Spark job exited non-zero; the message is the job's own one-line reason."""

    def __init__(self, run_id: str, return_code: int, reason: str, summary_uri: str) -> None:
        self.run_id, self.return_code, self.reason = run_id, return_code, reason
        self.summary_uri = summary_uri
        super().__init__(
            f"local Spark job {run_id} exited with code {return_code}: {reason} "
            f"(run summary: {summary_uri})"
        )


@task(name="Create the sample lake")
def ensure_sample_lake(lake_root: str) -> str:
    """Generate the demo lake under ``lake_root`` unless it is already there."""
    from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake

    logger = get_run_logger()
    root = Path(lake_root)
    if (root / "_manifest.json").exists():
        logger.info("Sample lake already at %s", root)
        return str(root)
    # Quirks on: the demo shows bad lines being kept and counted, not a spotless lake.
    counts = generate_sample_lake(root, SampleLakeConfig(quirks=True))["counts"]
    logger.info(
        "Generated a sample lake at %s: %d songs, %d event lines over %d days, %d bad lines",
        root,
        counts["song_records"],
        counts["event_lines"],
        counts["log_files"],
        counts["event_rejects"] + counts["song_rejects"],
    )
    return str(root)


@task(name="Validate local inputs")
def validate_local_inputs(job_args: JobArgs) -> None:
    """Fail before Spark starts when Java is missing or an input folder is missing or empty.

    Raises:
        FileNotFoundError: An input location is missing or holds no JSON file.
        UnusableJavaError: No Java that PySpark 4 runs on was found.
    """
    problem = java_problem()
    if problem:
        raise UnusableJavaError(problem)
    missing = find_missing_inputs(job_args.songs_uri, job_args.logs_uri, job_args.run_date)
    if missing:
        raise FileNotFoundError("; ".join(missing))
    get_run_logger().info("Inputs found: %s and %s", job_args.songs_uri, job_args.logs_uri)


@task(name="Run the Spark job locally")
def run_spark_job_locally(
    job_args: JobArgs, job_environment: dict[str, str] | None = None
) -> RunSummary:
    """Run ``python -m spark_etl`` as a child process and stream its output into the log.

    Args:
        job_environment: Variables added to the child's environment (lineage's).

    Returns:
        The run summary the job wrote under ``<output>/_runs/``.

    Raises:
        LocalSparkJobError: The job exited non-zero, with its one-line reason.
    """
    command = [sys.executable, "-m", "spark_etl", *job_args.to_argv()]
    return_code, last_error = run_spark_child(command, "spark_etl: error:", job_environment)
    summary_path = summary_uri(job_args.output_uri, job_args.run_id)
    if return_code != 0:
        reason = last_error or "no reason printed"
        raise LocalSparkJobError(job_args.run_id, return_code, reason, summary_path)
    return RunSummary.from_json(Path(summary_path).read_text())


def run_spark_child(
    command: list[str], error_prefix: str, environment: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a local Spark command (the job, maintenance), streaming its output into the log.

    Returns:
        Its exit code, and its last line that starts with ``error_prefix`` (without it).
    """
    logger = get_run_logger()
    logger.info("Starting local Spark: %s", " ".join(command))
    env = {
        **os.environ,
        **(environment or {}),
        "PYSPARK_PYTHON": sys.executable,
        "TZ": os.environ.get("TZ", "UTC"),
    }
    last_error = ""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith(error_prefix):
                last_error = line.removeprefix(error_prefix).strip()
            if line and not line.startswith(_NOISY_PREFIXES) and "WARN " not in line[:40]:
                logger.info("spark | %s", line)
        return process.wait(), last_error


class LocalRunner:
    """The job on local Spark, in a child process of the flow; the default runner.

    Nothing outlives the run, so there is nothing to end and nothing to cost.
    """

    writes_to_s3: ClassVar[bool] = False

    def __init__(self, settings: RunnerSettings) -> None:
        self._summary: RunSummary | None = None
        self._job_environment = settings.job_environment

    def prepare(self, job_args: JobArgs) -> JobArgs:
        """Make the sample lake when the default locations are used; check the inputs."""
        if (job_args.songs_uri, job_args.logs_uri) == (DEFAULT_SONGS_URI, DEFAULT_LOGS_URI):
            ensure_sample_lake(str(PROJECT_ROOT / SAMPLE_LAKE))
        local_args = job_args.with_locations(
            *(
                local_path(uri)
                for uri in (job_args.songs_uri, job_args.logs_uri, job_args.output_uri)
            )
        )
        validate_local_inputs(local_args)
        return local_args

    def start(self, job_args: JobArgs) -> None:
        """Nothing to start ahead of the job: :meth:`wait` runs it."""

    def wait(self, job_args: JobArgs) -> None:
        self._summary = run_spark_job_locally(job_args, self._job_environment)

    def end(self) -> None:
        """Nothing outlives the job's process."""

    def end_after_failure(self, failure: Exception) -> None:
        """Nothing outlives the job's process."""

    def end_now(self) -> None:
        """Nothing outlives the job's process."""

    def read_summary(self, job_args: JobArgs) -> RunSummary:
        if self._summary is None:
            raise RuntimeError("The local runner was asked for a summary before the job ran")
        return self._summary

    def read_cost(self) -> RunCost | None:
        return None

    @staticmethod
    def end_work_of_flow_run(aws_credentials_block: str, flow_run_id: str) -> None:
        """Nothing outlives the flow run's process."""


def local_path(uri: str) -> str:
    """Resolve a local URI against the project folder (so the flow runs from any folder)."""
    path = Path(uri.removeprefix("file://"))
    return str(path if path.is_absolute() else PROJECT_ROOT / path)
