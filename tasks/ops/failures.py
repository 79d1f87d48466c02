"""Why a Spark job failed on AWS, for both runners: the job's own reason, or its logs.

The job writes its reason into the run summary when it fails. Without one (a crash before
the job started, a killed driver) the tails of the driver's stdout.gz and stderr.gz stand
in: spark-submit passes the Python driver's output on as its stdout. EMR and EMR
Serverless copy those logs to S3 minutes late, so they are looked for a few times.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tasks.ops.names import LOG_FILES
from tasks.ops.s3 import S3Location, object_exists, read_gzip_tail, read_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogPatience:
    """How hard to look for a failed driver's logs, which AWS copies to S3 minutes late."""

    attempts: int = 3
    delay_seconds: float = 20.0
    lines: int = 40


# What a run uses unless a test asks for less patience.
DEFAULT_LOG_PATIENCE = LogPatience()


@dataclass(frozen=True)
class FailureEvidence:
    """What a failed job left: its own reason, else the tails of its logs by file name."""

    job_reason: str | None = None
    log_tails: dict[str, str] = field(default_factory=dict)

    def lines(self, log_label: str, log_folder: str | None) -> list[str]:
        """The lines an error adds after its first: reason, where the logs are, tails."""
        lines = [f"The job says: {self.job_reason}"] if self.job_reason else []
        if log_folder:
            lines.append(f"{log_label}: {log_folder} ({', '.join(LOG_FILES)})")
        lines += [f"Last lines of {name}:\n{tail}" for name, tail in self.log_tails.items()]
        return lines


class JobFailedError(Exception):
    """A job that ended as failed on AWS, with what it left (its reason, or its logs).

    ``job_reason`` is the job's own one-line reason, from the run summary it wrote on
    failure; when there is none, ``log_tails`` (the ends of its stdout and stderr) stand in.
    """

    def __init__(
        self, first_line: str, log_label: str, log_folder: str | None, evidence: FailureEvidence
    ) -> None:
        self.log_folder, self.job_reason = log_folder, evidence.job_reason
        self.log_tails = dict(evidence.log_tails)
        super().__init__("\n".join([first_line, *evidence.lines(log_label, log_folder)]))


def read_failure_evidence(
    s3: S3Client,
    summary: S3Location,
    log_folder: S3Location,
    patience: LogPatience,
    where_else: str = "",
) -> FailureEvidence:
    """The job's reason from its run summary, or the tails of the logs in ``log_folder``.

    Logs are looked for ``patience.attempts`` times; logs that never arrive give empty
    evidence and a warning naming where to look (``where_else`` adds a place).
    """
    job_reason = failed_run_reason(s3, summary)
    if job_reason is not None:
        return FailureEvidence(job_reason)
    tails: dict[str, str] = {}
    for attempt in range(patience.attempts):
        tails = log_tails(s3, log_folder, patience.lines)
        if tails:
            break
        if attempt + 1 < patience.attempts:
            time.sleep(patience.delay_seconds)
    if not tails:
        logger.warning(
            "No run summary at %s and no driver log at %s/ yet; look there later%s",
            summary.uri,
            log_folder.uri,
            where_else,
        )
    return FailureEvidence(None, tails)


def failed_run_reason(s3: S3Client, summary: S3Location) -> str | None:
    """The error the job recorded in its run summary, if it wrote one."""
    if not object_exists(s3, summary):
        return None
    try:
        payload = json.loads(read_text(s3, summary))
    except ValueError:
        logger.warning("The run summary at %s is not JSON", summary.uri)
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return str(error) if error else None


def log_tails(s3: S3Client, folder: S3Location, lines: int) -> dict[str, str]:
    """The last lines of the driver's log files in ``folder`` that exist."""
    tails = {}
    for name in LOG_FILES:
        tail = read_gzip_tail(s3, folder.child(name), lines)
        if tail:
            tails[name] = tail
    return tails
