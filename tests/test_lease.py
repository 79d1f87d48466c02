"""The job's lease on its output: who counts as gone, and compare-and-swap on disk and S3.

The lease needs no Spark: it is tested here on its own stores. A holder that is alive
refuses a second run; one that is known gone (its process ended here, a zombie, a pid
reused by someone else, an expired lease, a flow run Prefect reports ended) is taken over
at once, and the taker says whose lease it took. On S3 the stores are moto's, in process:
moto enforces ``If-None-Match`` and ``If-Match`` as S3 does.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3.responses import S3Response

from spark_etl.errors import OutputLockedError
from spark_etl.lease import (
    LeaseHolder,
    OutputLease,
    lease_uri,
    process_alive,
    process_identity,
    refuse_if_held_locally,
)
from spark_etl.lease_store import LeaseStore, LocalLeaseStore, open_lease_store

BUCKET = "sparkify-lease"
S3_OUTPUT = f"s3://{BUCKET}/star"
RACE_TRIALS = 20


def write_lease(
    output: Path, pid: int, expires_in: timedelta, run_id: str = "other", process: str = ""
) -> None:
    now = datetime.now(UTC)
    holder = LeaseHolder(
        run_id=run_id,
        host=socket.gethostname(),
        pid=pid,
        started_at=now.isoformat(timespec="seconds"),
        expires_at=(now + expires_in).isoformat(timespec="seconds"),
        process=process,
    )
    path = Path(lease_uri(str(output)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(holder)))


def local_lease(output: Path, run_id: str, take_over_from: str = "") -> OutputLease:
    store = LocalLeaseStore(lease_uri(str(output)))
    return OutputLease(store, str(output), run_id, take_over_from=take_over_from)


def holder_on_disk(output: Path) -> str | None:
    path = Path(lease_uri(str(output)))
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(finished.stdout)


@pytest.fixture
def zombie() -> Iterator[tuple[int, str]]:
    """A child that has exited but is not reaped: (its pid, its identity while it ran)."""
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    identity = process_identity(child.pid)
    assert identity, "the child's /proc entry was not readable"
    assert child.stdin is not None
    child.stdin.close()  # input() ends, and so does the child; nobody waits for it yet
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    yield child.pid, identity
    child.wait()


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_live_holder_refuses_a_second_run_naming_itself(tmp_path: Path) -> None:
    write_lease(tmp_path, os.getpid(), timedelta(minutes=5), process=process_identity(os.getpid()))
    with pytest.raises(
        OutputLockedError, match=r"is being written by run other \(host .*, pid \d+"
    ):
        local_lease(tmp_path, "second").acquire()
    with pytest.raises(OutputLockedError, match=r"is being written by run other"):
        refuse_if_held_locally(str(tmp_path), "second")
    assert holder_on_disk(tmp_path) == "other"


def test_a_zombie_counts_as_ended_and_a_reused_pid_as_someone_else(
    zombie: tuple[int, str],
) -> None:
    pid, identity = zombie
    assert not process_alive(pid, identity)  # killed, not yet reaped: it holds nothing
    me = process_identity(os.getpid())
    assert process_alive(os.getpid(), me)
    boot_id, _ = me.split("/")
    assert not process_alive(os.getpid(), f"{boot_id}/1")  # same pid, started at another time


@pytest.mark.parametrize(
    "gone", ["dead process", "zombie", "reused pid", "expired", "cut short", "flow run ended"]
)
def test_a_lease_whose_run_is_gone_is_taken_over_at_once_and_released(
    tmp_path: Path,
    gone: str,
    zombie: tuple[int, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = (os.getpid(), process_identity(os.getpid()))
    holders = {
        "dead process": (dead_pid(), ""),
        "zombie": zombie,
        "reused pid": (os.getpid(), live[1].split("/")[0] + "/1"),
        "expired": live,
        "flow run ended": live,
    }
    if gone == "cut short":
        Path(lease_uri(str(tmp_path))).parent.mkdir(parents=True)
        Path(lease_uri(str(tmp_path))).write_text('{"run_id": "oth')
    else:
        pid, process = holders[gone]
        expires_in = timedelta(minutes=-1 if gone == "expired" else 5)
        write_lease(tmp_path, pid, expires_in, run_id="dead-run", process=process)
    refuse_if_held_locally(str(tmp_path), "taker", take_over_from="dead-run")  # no refusal
    lease = local_lease(tmp_path, "taker", take_over_from="dead-run" if "flow" in gone else "")

    with caplog.at_level(logging.WARNING, logger="spark_etl.lease"):
        taken_from = lease.acquire()
    assert holder_on_disk(tmp_path) == "taker"
    if gone != "cut short":
        assert taken_from is not None and taken_from.run_id == "dead-run"
        assert "taking over the lease of run dead-run" in caplog.text
    lease.release()
    assert holder_on_disk(tmp_path) is None


def test_a_run_whose_lease_was_taken_over_stops_before_publishing(tmp_path: Path) -> None:
    paused = local_lease(tmp_path, "paused")
    paused.acquire()
    # The paused run's lease expired meanwhile, and another run took the output over.
    write_lease(tmp_path, os.getpid(), timedelta(minutes=5), run_id="successor")

    with pytest.raises(OutputLockedError, match=r"lost its lease to run successor"):
        paused.ensure_held()
    paused.release()
    assert holder_on_disk(tmp_path) == "successor"  # the successor keeps the output


class _LosesResponses:
    """Stands in for a store whose answer to a write is lost after the write was made.

    botocore then re-sends the conditional PUT, which fails on the object the first
    attempt wrote; moto cannot lose a response, so the loss is made here.
    """

    def __init__(self, store: LeaseStore) -> None:
        self._store = store

    def read(self) -> tuple[str | None, str | None]:
        return self._store.read()

    def create(self, text: str) -> str | None:
        self._store.create(text)
        return None

    def replace(self, text: str, version: str) -> str | None:
        self._store.replace(text, version)
        return None

    def delete(self, version: str) -> bool:
        return self._store.delete(version)


def test_a_write_whose_answer_was_lost_is_recognised_as_this_runs_own(tmp_path: Path) -> None:
    lease = OutputLease(
        _LosesResponses(LocalLeaseStore(lease_uri(str(tmp_path)))), str(tmp_path), "mine"
    )
    lease.acquire()
    lease.ensure_held()  # the renewal's answer is lost too; still this run's lease
    lease.release()
    assert holder_on_disk(tmp_path) is None


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's S3, with the bucket of the output, its writes made atomic as S3's are.

    moto checks If-None-Match and If-Match, then stores, with no lock between: two
    threads of one process can both pass the check (seen on a loaded machine, 1 race in
    20). S3 decides a conditional write atomically; a lock around moto's PutObject
    stands in for that, and only that.
    """
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    one_write_at_a_time = threading.Lock()
    moto_put_object = S3Response.put_object

    def atomic_put_object(self: S3Response) -> Any:
        with one_write_at_a_time:
            return moto_put_object(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put_object)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield


def s3_holder() -> str | None:
    text = open_lease_store(lease_uri(S3_OUTPUT)).read()[0]
    return json.loads(text)["run_id"] if text else None


def s3_lease(run_id: str) -> OutputLease:
    return OutputLease(open_lease_store(lease_uri(S3_OUTPUT)), S3_OUTPUT, run_id)


def test_on_s3_a_held_lease_refuses_renews_and_is_released(s3: None) -> None:
    first = s3_lease("first")
    first.acquire()
    with pytest.raises(OutputLockedError, match=r"is being written by run first"):
        s3_lease("second").acquire()
    first.ensure_held()
    assert s3_holder() == "first"
    first.release()
    assert s3_holder() is None
    second = s3_lease("second")
    second.acquire()
    assert s3_holder() == "second"
    second.release()


def test_on_s3_a_renewal_that_finds_another_holder_stops_the_run(s3: None) -> None:
    paused = s3_lease("paused")
    paused.acquire()
    store = open_lease_store(lease_uri(S3_OUTPUT))
    text, etag = store.read()
    assert text is not None and etag is not None
    successor = json.loads(text) | {"run_id": "successor", "pid": 1}
    assert store.replace(json.dumps(successor), etag)  # what a taker after expiry does

    with pytest.raises(OutputLockedError, match=r"lost its lease to run successor"):
        paused.ensure_held()
    paused.release()
    assert s3_holder() == "successor"


def test_two_runs_acquiring_one_s3_lease_at_once_give_exactly_one_winner(s3: None) -> None:
    outcomes = []
    for trial in range(RACE_TRIALS):
        outcomes.append(_race(f"a{trial}", f"b{trial}"))
    assert [len(winners) for winners, _ in outcomes] == [1] * RACE_TRIALS
    for winners, losers in outcomes:
        assert len(losers) == 1
        assert f"run {winners[0]} (host" in losers[0], losers[0]


def _race(*run_ids: str) -> tuple[list[str], list[str]]:
    """Two runs acquire the lease at the same moment; (winners, losers' messages)."""
    leases = {run_id: s3_lease(run_id) for run_id in run_ids}
    start = threading.Barrier(len(run_ids))
    winners: list[str] = []
    refusals: list[str] = []

    def attempt(run_id: str) -> None:
        start.wait()
        try:
            leases[run_id].acquire()
            winners.append(run_id)
        except OutputLockedError as refused:
            refusals.append(str(refused))

    threads = [threading.Thread(target=attempt, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for run_id in winners:
        leases[run_id].release()
    return winners, refusals
