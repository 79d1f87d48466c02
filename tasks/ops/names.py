"""Names the whole project shares, spelled once: its root folder, its runners, log files."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

# The checkout (or the installed source tree): relative local paths resolve against it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class RunnerName(StrEnum):
    """Where a run's Spark job runs: the flow's ``runner`` parameter and the cost's label."""

    LOCAL = "local"
    EMR = "emr"
    EMR_SERVERLESS = "emr-serverless"


# What EMR and EMR Serverless upload of a driver's output: stdout (the job's own lines,
# its traceback) and stderr (Spark's), gzipped.
LOG_FILES = ("stdout.gz", "stderr.gz")
