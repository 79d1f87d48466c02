"""One interface for every place the Spark job runs, and the one sequence the flow uses.

A runner prepares a run (checks, uploads: nothing to clean up yet), starts it (a cluster
and its step, a job run), waits for it with its logs, and ends what it started: after a
success, after a failure, and at once after an interrupt. It then reads the job's run
summary and what the run cost. :func:`run_job` is that sequence, written once, so clean-up
has one place and one order for every runner.

Adding a runner means one module with a class of this shape, and a line in the flow's
``RUNNERS`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from spark_etl.args import JobArgs
    from spark_etl.summary import RunSummary
    from tasks.ops.cost import RunCost


@dataclass(frozen=True)
class RunnerSettings:
    """What the flow tells a runner: which blocks, where the code goes, how long to wait.

    Attributes:
        aws_credentials_block: The prefect-aws ``AwsCredentials`` block (AWS runners).
        config_block: The runner's own block (``EmrClusterConfig``, ``EmrServerlessConfig``);
            None for the local runner.
        code_bucket_uri: The s3:// folder that receives the job code (AWS runners).
        poll_seconds: Delay between two looks at what runs.
        max_wait_seconds: Longest wait for each thing a run waits for.
        flow_run_id: The flow run this run belongs to: what it starts is tagged with it.
        flow_attempt: Which attempt of the flow run this is (1 for the first).
        job_environment: The OpenLineage variables of the job's listener (an API key among
            them: kept out of ``repr``). The local runner puts them in the job's process;
            the AWS runners turn them into spark-submit options (without the key).
    """

    aws_credentials_block: str
    config_block: str | None
    code_bucket_uri: str | None
    poll_seconds: float
    max_wait_seconds: float
    flow_run_id: str
    flow_attempt: int = 1
    job_environment: dict[str, str] = field(default_factory=dict, repr=False)


class Runner(Protocol):
    """Runs the job once: made with the run's settings, used by :func:`run_job` only."""

    writes_to_s3: ClassVar[bool]  # its tables can be registered in Glue

    def __init__(self, settings: RunnerSettings) -> None: ...

    def prepare(self, job_args: JobArgs) -> JobArgs:
        """Check and upload what the run needs; return the arguments the job runs with."""
        ...

    def start(self, job_args: JobArgs) -> None:
        """Start the run; a start that fails leaves nothing running (it ends what it may
        have started)."""
        ...

    def wait(self, job_args: JobArgs) -> None:
        """Wait, with the run's logs, until the job has ended; raise when it failed."""
        ...

    def end(self) -> None:
        """End what the run started, after a success."""
        ...

    def end_after_failure(self, failure: Exception) -> None:
        """End what the run started after ``failure``, unless the job may still be writing."""
        ...

    def end_now(self) -> None:
        """End what the run started at once, after an interrupt; log failures, raise none."""
        ...

    def read_summary(self, job_args: JobArgs) -> RunSummary:
        """The run summary the job wrote."""
        ...

    def read_cost(self) -> RunCost | None:
        """What the run cost, or None when unknown; never raises."""
        ...

    @staticmethod
    def end_work_of_flow_run(aws_credentials_block: str, flow_run_id: str) -> None:
        """Backstop for a cancelled or crashed flow run: end whatever it left running."""
        ...


def run_job(runner: Runner, job_args: JobArgs) -> tuple[RunSummary, RunCost | None]:
    """Run the job on ``runner``: prepare, start, wait, end, then the summary and the cost.

    Whatever happens after the start, what was started is ended: after a failure by the
    runner's judgement (a job that may still write the lake is left to finish), after an
    interrupt (Ctrl-C, SIGTERM) at once; the flow's hooks and the sweeper are the backstop.
    """
    job_args = runner.prepare(job_args)
    runner.start(job_args)
    try:
        runner.wait(job_args)
    except Exception as failure:
        runner.end_after_failure(failure)
        raise
    except BaseException:
        runner.end_now()
        raise
    runner.end()
    return runner.read_summary(job_args), runner.read_cost()
