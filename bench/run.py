"""Benchmark: the project's Spark job beside the tutorial-style job and DuckDB, on one machine.

Each contender runs as a whole process on the same generated lake, in the same run;
wall time includes interpreter, JVM and session start, and peak memory is the RSS of
the whole process tree. The Spark job's tables and DuckDB's are then compared row for
row, so the two times are for the same work.

    python bench/run.py                    # S and M (what `make bench` runs)
    python bench/run.py --sizes L          # L: 50k songs, 10M events
    python bench/run.py --sizes L --contenders job --driver-memory 2g
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import spark_profile as spark_profile_module
from bench.compare import differences
from bench.measure import Measurement, measure
from spark_etl.args import JobArgs
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE
from spark_etl.sample_lake import MANIFEST, SampleLakeConfig, generate_sample_lake

BENCH_DIR = Path(__file__).resolve().parent
LAKES_DIR = BENCH_DIR / ".lakes"
RESULTS_DIR = BENCH_DIR / "results"
CONTENDERS = ("job", "tutorial", "duckdb")


@dataclass(frozen=True)
class Size:
    """A benchmark lake: 30 days of logs, one user per 500 events.

    Attributes:
        match_share: Share of plays that match a catalogue song (0.3: a quarter of events).
        song_folders: Folders the song files lie in; 0 for one per track id's letters.
    """

    name: str
    songs: int
    events: int
    match_share: float = 0.3
    song_folders: int = 0

    def config(self) -> SampleLakeConfig:
        return SampleLakeConfig(
            songs=self.songs,
            events=self.events,
            users=max(1, self.events // 500),
            days=30,
            match_share=self.match_share,
            song_folders=self.song_folders,
        )


SIZES = {
    size.name: size
    for size in (
        Size("S", 1_000, 100_000),
        Size("M", 20_000, 2_000_000),
        Size("L", 50_000, 10_000_000),
        # M's songs and events, play-heavy: 80 % of events are plays of a catalogue song
        # (1.6 M songplays), the songs in 12,500 folders of 1-2 files (the MSD's layout).
        Size("MP", 20_000, 2_000_000, match_share=0.94, song_folders=12_500),
    )
}


def ensure_lake(size: Size) -> Path:
    """The size's lake, generated once and reused while its parameters are unchanged."""
    root = LAKES_DIR / size.name
    manifest = root / MANIFEST
    wanted = size.config()
    if manifest.exists():
        config = json.loads(manifest.read_text())["config"]
        if config == {**asdict(wanted), "start_date": wanted.start_date.isoformat()}:
            return root
    shutil.rmtree(root, ignore_errors=True)
    print(f"generating lake {size.name}: {size.songs} songs, {size.events} events ...", flush=True)
    generate_sample_lake(root, wanted)
    return root


def command(contender: str, lake: Path, output: Path) -> list[str]:
    """How each contender is started (all with this interpreter, default settings)."""
    python = sys.executable
    songs, logs = str(lake / SONG_SOURCE), str(lake / LOG_SOURCE)
    if contender == "job":
        return [python, "-m", "spark_etl", *JobArgs(songs, logs, str(output)).to_argv()]
    if contender == "tutorial":
        return [
            python,
            str(BENCH_DIR / "tutorial_job.py"),
            "--input",
            str(lake),
            "--output",
            str(output),
        ]
    return [
        *(python, str(BENCH_DIR / "duckdb_job.py")),
        *("--songs", songs, "--logs", logs, "--output", str(output)),
    ]


def run_size(
    size: Size, contenders: Sequence[str], driver_memory: str | None, spark_profile: bool = False
) -> dict:
    """Run every contender on one lake; compare the job's tables with DuckDB's.

    With ``spark_profile``, the job writes a Spark event log, read back into what Spark did
    in each of the job's stages (``bench/spark_profile.py``).
    """
    lake = ensure_lake(size)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TZ": "UTC"}
    outputs = LAKES_DIR / f"{size.name}-out"
    event_logs = outputs / "event-logs"
    submit = [
        *(["--driver-memory", driver_memory] if driver_memory else []),
        *(spark_profile_module.event_log_settings(event_logs) if spark_profile else []),
    ]
    if submit:
        env["PYSPARK_SUBMIT_ARGS"] = " ".join([*submit, "pyspark-shell"])
    results: dict[str, Measurement] = {}
    for contender in contenders:
        output = outputs / contender
        shutil.rmtree(output, ignore_errors=True)
        print(f"{size.name}: running {contender} ...", flush=True)
        results[contender] = measure(command(contender, lake, output), env)
        if results[contender].return_code != 0:
            print(f"{contender} failed:\n{results[contender].output_tail}", flush=True)
    profile = _job_profile(outputs / "job") if "job" in results else None
    spark_stages = None
    if spark_profile and "job" in results:
        log = spark_profile_module.newest_event_log(event_logs)
        spark_stages = spark_profile_module.profile(spark_profile_module.read_event_log(log))
        print(f"{size.name}: what Spark did in each stage of the job ({log.name})")
        print(spark_profile_module.table(spark_stages), flush=True)
    same = None
    if all(c in results and results[c].return_code == 0 for c in ("job", "duckdb")):
        diff = differences(outputs / "job", outputs / "duckdb")
        same = not diff
        print(f"{size.name}: job and duckdb tables {'match' if same else f'DIFFER: {diff}'}")
    return {
        "size": asdict(size),
        "driver_memory": driver_memory,
        "same_tables_job_duckdb": same,
        "job_profile": profile,
        "spark_profile": spark_stages,
        "runs": {
            name: {**asdict(m), "peak_rss_mb": round(m.peak_rss_mb)} for name, m in results.items()
        },
    }


def _job_profile(output: Path) -> dict | None:
    """Where the job's time went: its own stage timings, from the run summary it wrote.

    The run's own summary, not the last-success copy: that copy is published with the
    tables, before the run's publish stage and its duration are known.
    """
    last_success = output / "_runs" / "_last_succeeded.json"
    if not last_success.exists():
        return None
    run_id = json.loads(last_success.read_text())["run_id"]
    summary = json.loads((output / "_runs" / f"{run_id}.json").read_text())
    return {"job_seconds": summary["duration_seconds"], "stages": summary["stage_seconds"]}


def profiles(reports: list[dict]) -> str:
    """One line per size: JVM/session start and exit (wall minus job), then each stage."""
    lines = []
    for report in reports:
        profile, run = report.get("job_profile"), report["runs"].get("job")
        if not profile or not run:
            continue
        start_and_exit = run["wall_seconds"] - profile["job_seconds"]
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in profile["stages"].items())
        lines.append(
            f"{report['size']['name']} job profile (s): interpreter, JVM and session start "
            f"and exit {start_and_exit:.1f}, {stages}"
        )
    return "\n".join(lines)


def table(reports: list[dict]) -> str:
    """One table: wall time, peak memory and the ratios the goals are stated in."""
    lines = [
        "| size | contender | wall s | peak RSS MB | ok | tutorial / job | job / duckdb |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        runs = report["runs"]
        wall = {name: run["wall_seconds"] for name, run in runs.items()}
        for name, run in runs.items():
            ratios = ["", ""]
            if name == "job" and "tutorial" in wall:
                ratios[0] = f"{wall['tutorial'] / wall['job']:.1f}x"
            if name == "job" and "duckdb" in wall:
                ratios[1] = f"{wall['job'] / wall['duckdb']:.1f}x"
            lines.append(
                f"| {report['size']['name']} | {name} | {run['wall_seconds']:.1f} | "
                f"{run['peak_rss_mb']} | {'yes' if run['return_code'] == 0 else 'FAILED'} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["S", "M"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument(
        "--driver-memory", default=None, help="Spark driver memory, e.g. 2g (default: Spark's)"
    )
    parser.add_argument(
        "--spark-profile",
        action="store_true",
        help="write the job's Spark event log and print what Spark did in each of its stages",
    )
    args = parser.parse_args(argv)
    cores, python = os.cpu_count(), platform.python_version()
    print(f"machine: {platform.platform()}, {cores} cores, python {python}")
    reports = [
        run_size(SIZES[name], args.contenders, args.driver_memory, args.spark_profile)
        for name in args.sizes
    ]
    print(table(reports))
    print(profiles(reports))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"{stamp}.json").write_text(json.dumps(reports, indent=2))
    failed = any(run["return_code"] for r in reports for run in r["runs"].values())
    differ = any(r["same_tables_job_duckdb"] is False for r in reports)
    return 1 if failed or differ else 0


if __name__ == "__main__":
    sys.exit(main())
