"""The job's lease on its output, as a run on S3 meets it (after its session started).

The kill test shows a second local job stopped before its JVM starts; here the lease
itself: held by a live run it refuses, a dead or expired holder is taken over, and a
lease cut short by a crash holds nobody.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_etl.errors import OutputLockedError
from spark_etl.lease import LeaseHolder, OutputLease, lease_uri
from spark_etl.storage import Storage


def write_lease(output: Path, pid: int, expires_in: timedelta, run_id: str = "other") -> None:
    now = datetime.now(UTC)
    holder = LeaseHolder(
        run_id=run_id,
        host=socket.gethostname(),
        pid=pid,
        started_at=now.isoformat(timespec="seconds"),
        expires_at=(now + expires_in).isoformat(timespec="seconds"),
    )
    path = Path(lease_uri(str(output)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(holder)))


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(finished.stdout)


def test_a_live_holder_refuses_a_second_run_naming_itself(
    spark: SparkSession, tmp_path: Path
) -> None:
    write_lease(tmp_path, os.getpid(), timedelta(minutes=5))
    with pytest.raises(
        OutputLockedError, match=r"is being written by run other \(host .*, pid \d+"
    ):
        OutputLease(Storage(spark), str(tmp_path), "second").acquire()
    assert json.loads(Path(lease_uri(str(tmp_path))).read_text())["run_id"] == "other"


@pytest.mark.parametrize("gone", ["dead process", "expired", "cut short"])
def test_a_lease_whose_run_is_gone_is_taken_over_and_released(
    spark: SparkSession, tmp_path: Path, gone: str
) -> None:
    if gone == "dead process":
        write_lease(tmp_path, dead_pid(), timedelta(minutes=5))
    elif gone == "expired":
        write_lease(tmp_path, os.getpid(), timedelta(minutes=-1))
    else:
        Path(lease_uri(str(tmp_path))).parent.mkdir(parents=True)
        Path(lease_uri(str(tmp_path))).write_text('{"run_id": "oth')
    lease = OutputLease(Storage(spark), str(tmp_path), "taker")

    lease.acquire()
    assert json.loads(Path(lease_uri(str(tmp_path))).read_text())["run_id"] == "taker"
    lease.release()
    assert not Path(lease_uri(str(tmp_path))).exists()
