"""Kill a daily run the way supervisors do, at spread-out moments, and start it again at once.

The operator's test of the lease (issue 19): a small lake (300 songs, 30,000 events, 4
days) holds days 1 to 3; a daily run of day 4 is started under a supervisor process, in a
process group of their own, and the whole group gets SIGKILL at one of ``--kills``
moments spread over the run, and twice more as it publishes (as a Prefect worker
cancelling a run, systemd, or ``timeout -s KILL`` under ``setsid`` would). The job is
then an orphan; this script is its subreaper and reaps it only after the re-run started,
so the re-run meets a zombie holder, as in most containers.

At every kill point it records: the holder's process state when the re-run starts, each
table as a reader sees it right after the kill (the old tables, the new ones, or a mix),
whether the re-run was refused, the re-run's wall time and peak memory, and whether the
tables after it equal one full run's. Readers are DuckDB over the visible files, as in
the other benchmarks.

    python bench/kill_rerun.py                       # what `make bench-kill` runs
    python bench/kill_rerun.py --job-root ../old     # the same test against another checkout
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # `python bench/kill_rerun.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.daily import reader_fingerprint
from bench.measure import descendants, measure, reap
from bench.run import LAKES_DIR, RESULTS_DIR
from spark_etl.args import JobArgs
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE
from spark_etl.publication import JOURNAL_FILE
from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake
from tasks.ops.names import PROJECT_ROOT

LAKE_CONFIG = SampleLakeConfig(songs=300, events=30_000, users=60, days=4)
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)
SUPERVISOR = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
REFUSED = "is being written by run"
# Kills timed by the run's own journal: as it starts publishing, and 20 ms into it.
PUBLICATION_MOMENTS = ["journal+0", "journal+0.02"]


@dataclass
class Lake:
    """The raw lake and the reference outputs every kill point is compared with."""

    raw: Path
    three_days: Path
    full_run: Path

    def args(self, output: Path, day_index: int | None, run_id: str) -> JobArgs:
        day = LAKE_CONFIG.start_date + timedelta(days=day_index) if day_index is not None else None
        return JobArgs(
            str(self.raw / SONG_SOURCE), str(self.raw / LOG_SOURCE), str(output), day, run_id=run_id
        )


def job_command(args: JobArgs) -> list[str]:
    return [sys.executable, "-m", "spark_etl", *args.to_argv()]


def prepare(root: Path, env: dict[str, str]) -> Lake:
    """Generate the lake, merge days 1-3 one by one, and run one full run over all 4."""
    shutil.rmtree(root, ignore_errors=True)
    generate_sample_lake(root / "raw", LAKE_CONFIG)
    lake = Lake(root / "raw", root / "three-days", root / "full-run")
    for day_index in range(3):
        _run_or_exit(job_command(lake.args(lake.three_days, day_index, f"day-{day_index}")), env)
    _run_or_exit(job_command(lake.args(lake.full_run, None, "full")), env)
    return lake


def _run_or_exit(command: list[str], env: dict[str, str]) -> float:
    measured = measure(command, env)
    if measured.return_code != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{measured.output_tail}")
    return measured.wall_seconds


def start_supervised(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``command`` under a supervisor process, both in a new process group."""
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_group(supervisor: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the supervisor's group; reap the supervisor only; the job's pids."""
    job = descendants(supervisor.pid)
    try:
        os.killpg(supervisor.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    supervisor.wait()
    return job


def process_states(pids: list[int]) -> str:
    """The state letters of ``pids`` (``Z`` zombie, ``-`` gone), e.g. ``ZZ``."""
    states = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            states.append("-")
            continue
        states.append(stat[stat.rindex(")") + 2])
    return "".join(states)


def tables_seen(output: Path, old: dict, new: dict) -> str:
    """Each table as a reader sees it: ``old``, ``new`` or ``MIXED``, e.g. ``old x5``."""
    seen = reader_fingerprint(output)
    verdicts = [
        "old" if seen[name] == old[name] else "new" if seen[name] == new[name] else "MIXED"
        for name in seen
    ]
    distinct = sorted(set(verdicts))
    return " ".join(f"{v} x{verdicts.count(v)}" for v in distinct)


def wait_for_moment(output: Path, moment: float | str, job: subprocess.Popen[bytes]) -> None:
    """Sleep ``moment`` seconds, or (``"journal+<s>"``) until the run starts publishing.

    A daily run publishes in well under a second at the end of its run: moments spread
    evenly rarely fall inside it, so two kills wait for its journal to appear.
    """
    if isinstance(moment, float):
        time.sleep(moment)
        return
    journal = output / JOURNAL_FILE
    while not journal.exists() and job.poll() is None:
        time.sleep(0.002)
    time.sleep(float(moment.removeprefix("journal+")))


def one_kill(lake: Lake, index: int, seconds: float | str, env: dict, job_root: Path) -> dict:
    """Copy the 3-day output, kill its day-4 run at ``seconds``, re-run it at once."""
    output = lake.raw.parent / f"kill-{index}"
    shutil.rmtree(output, ignore_errors=True)
    shutil.copytree(lake.three_days, output)
    old, new = reader_fingerprint(lake.three_days), reader_fingerprint(lake.full_run)
    supervisor = start_supervised(
        job_command(lake.args(output, 3, f"killed-{index}")), env, job_root
    )
    wait_for_moment(output, seconds, supervisor)
    finished_before_kill = supervisor.poll() is not None
    zombies = kill_group(supervisor)
    at_kill = tables_seen(output, old, new)
    holder_state = process_states(zombies)
    rerun = measure_in(job_command(lake.args(output, 3, f"rerun-{index}")), env, job_root)
    still = process_states(zombies)
    reap(zombies)
    return {
        "kill_at_s": round(seconds, 1) if isinstance(seconds, float) else seconds,
        "finished_before_kill": finished_before_kill,
        "holder_states_at_rerun": holder_state,
        "holder_states_after_rerun": still,
        "tables_at_kill": at_kill,
        "rerun_refused": REFUSED in rerun["tail"],
        "rerun_return_code": rerun["return_code"],
        "rerun_wall_s": rerun["wall_seconds"],
        "rerun_peak_rss_mb": rerun["peak_rss_mb"],
        "final_equals_full_run": reader_fingerprint(output) == new,
    }


def measure_in(command: list[str], env: dict, cwd: Path) -> dict:
    """``measure`` with another working directory (the checkout whose job runs)."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        measured = measure(command, env)
    finally:
        os.chdir(here)
    return {
        "return_code": measured.return_code,
        "wall_seconds": measured.wall_seconds,
        "peak_rss_mb": round(measured.peak_rss_mb),
        "tail": measured.output_tail,
    }


def report(points: list[dict], daily_seconds: float) -> str:
    lines = [
        f"Kill test: daily run of day 4 on {LAKE_CONFIG.songs} songs, {LAKE_CONFIG.events:,} "
        f"events, {LAKE_CONFIG.days} days; an unkilled daily run took {daily_seconds:.1f} s",
        "",
        "| kill at s | holder at re-run | tables at kill | re-run | re-run s | peak MB | "
        "final = full run |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in points:
        outcome = "REFUSED" if point["rerun_refused"] else f"rc {point['rerun_return_code']}"
        lines.append(
            f"| {point['kill_at_s']} | {point['holder_states_at_rerun'] or 'none'} | "
            f"{point['tables_at_kill']} | {outcome} | {point['rerun_wall_s']} | "
            f"{point['rerun_peak_rss_mb']} | {'yes' if point['final_equals_full_run'] else 'NO'} |"
        )
    walls = [p["rerun_wall_s"] for p in points]
    refused = sum(p["rerun_refused"] for p in points)
    mixed = sum("MIXED" in p["tables_at_kill"] for p in points)
    equal = sum(p["final_equals_full_run"] for p in points)
    lines += [
        "",
        f"refused re-runs: {refused}/{len(points)}; kill points with a mixed table: "
        f"{mixed}/{len(points)}; final tables equal to one full run: {equal}/{len(points)}",
        f"re-run wall s: median {statistics.median(walls):.1f} (min {min(walls):.1f}, "
        f"max {max(walls):.1f})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/kill_rerun.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kills", type=int, default=8, help="kill moments (default 8)")
    parser.add_argument(
        "--job-root",
        type=Path,
        default=PROJECT_ROOT,
        help="checkout whose spark_etl runs (default: this one)",
    )
    args = parser.parse_args(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("this benchmark needs Linux: prctl(PR_SET_CHILD_SUBREAPER) failed")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TZ": "UTC"}
    env["PYTHONPATH"] = str(args.job_root.resolve())
    started = time.monotonic()
    lake = prepare(LAKES_DIR / "kill-rerun", env)
    probe = lake.raw.parent / "unkilled"
    shutil.copytree(lake.three_days, probe)
    daily_seconds = measure_in(job_command(lake.args(probe, 3, "unkilled")), env, args.job_root)[
        "wall_seconds"
    ]
    moments: list[float | str] = [daily_seconds * (i + 0.5) / args.kills for i in range(args.kills)]
    moments += PUBLICATION_MOMENTS
    points = []
    for index, seconds in enumerate(moments):
        print(f"kill {index + 1}/{len(moments)} at {seconds} ...", flush=True)
        points.append(one_kill(lake, index, seconds, env, args.job_root.resolve()))
    text = report(points, daily_seconds)
    text += f"\nwhole benchmark: {time.monotonic() - started:.0f} s"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kill_rerun.json").write_text(json.dumps(points, indent=2))
    ok = not any(p["rerun_refused"] or not p["final_equals_full_run"] for p in points)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
