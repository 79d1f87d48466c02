"""Benchmark: what a daily run costs beside a full run, each as a whole process.

For each size and repeat: a full run into a fresh output, then a daily run of a
mid-month day (already merged by the full run, as a re-run would be), then the same day
once more. Every run is timed as a whole process (interpreter, JVM and session start
included) with the peak RSS of its process tree, and reports from its run summary the
files and bytes it wrote and the S3 requests it would make (PUT, COPY, LIST, DELETE).
The tables are fingerprinted the way a reader sees them before and after each daily
run: re-merging a merged day must change nothing.

    python bench/daily.py --sizes M L --repeats 2      # what `make bench-daily` runs
    python bench/daily.py --sizes M --table-format iceberg   # the same, as Iceberg tables
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # `python bench/daily.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import measure
from bench.run import LAKES_DIR, RESULTS_DIR, SIZES, Size, ensure_lake
from lake_query import connect
from spark_etl import jvm_archive
from spark_etl.args import ICEBERG, PARQUET, TABLE_FORMATS, JobArgs
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE
from spark_etl.summary import summary_uri
from spark_etl.tables import TABLES

MID_MONTH_OFFSET = 14  # the lake's 15th day


def run_once(size: Size, repeat: int, env: dict[str, str], table_format: str = PARQUET) -> dict:
    """Full run, daily run of a mid-month day, the same day again; each measured."""
    lake = ensure_lake(size)
    suffix = "" if table_format == PARQUET else f"-{table_format}"
    output = LAKES_DIR / f"{size.name}-daily-out{suffix}"
    shutil.rmtree(output, ignore_errors=True)
    day = size.config().start_date + timedelta(days=MID_MONTH_OFFSET)
    runs = {}
    fingerprints = []
    for name, run_date in (("full", None), ("daily", day), ("daily again", day)):
        run_id = f"bench-{name.replace(' ', '-')}-{repeat}"
        args = JobArgs(
            str(lake / SONG_SOURCE),
            str(lake / LOG_SOURCE),
            str(output),
            run_date,
            run_id=run_id,
            table_format=table_format,
        )
        print(f"{size.name} #{repeat}: {name} run ...", flush=True)
        measured = measure([sys.executable, "-m", "spark_etl", *args.to_argv()], env)
        if measured.return_code != 0:
            raise SystemExit(f"{name} run failed:\n{measured.output_tail}")
        summary = json.loads(Path(summary_uri(str(output), run_id)).read_text())
        runs[name] = {
            "wall_seconds": round(measured.wall_seconds, 1),
            "peak_rss_mb": round(measured.peak_rss_mb),
            "job_seconds": summary["duration_seconds"],
            "stages": summary["stage_seconds"],
            "catalogue": summary["catalogue"],
            "requests": summary["requests"],
            "ignored_class_archive": measured.ignored_class_archive,
        }
        fingerprints.append(reader_fingerprint(output, table_format))
    return {
        "runs": runs,
        "daily_over_full": round(runs["daily"]["wall_seconds"] / runs["full"]["wall_seconds"], 3),
        "daily_changed_nothing": fingerprints[0] == fingerprints[1] == fingerprints[2],
    }


def reader_fingerprint(output: Path, table_format: str = PARQUET) -> dict[str, list[int]]:
    """Each table's rows and an order-free hash of them, as DuckDB reads the lake (Iceberg
    tables through pyiceberg: DuckDB's iceberg extension needs the network to install)."""
    if table_format == ICEBERG:
        import duckdb
        from pyiceberg.table import StaticTable

        connection = duckdb.connect()
        for name in TABLES:
            connection.register(
                name, StaticTable.from_metadata(str(output / name)).scan().to_arrow()
            )
    else:
        connection = connect(output)
    fingerprint = {}
    for name, spec in TABLES.items():
        columns = ", ".join(spec.column_names)
        row = connection.execute(
            f"SELECT count(*), coalesce(sum(hash({columns})::HUGEINT), 0) FROM {name}"
        ).fetchone()
        fingerprint[name] = [int(row[0]), int(row[1])] if row else [0, 0]
    return fingerprint


def spread(values: list[float], digits: int = 1) -> str:
    """``median (min-max)`` of the repeats."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def report(size: Size, repeats: list[dict], table_format: str = PARQUET) -> str:
    """A markdown table of one size: wall time with spread, memory, files and requests."""
    lines = [
        f"{size.name} ({size.songs:,} songs, {size.events:,} events), {table_format} tables, "
        f"{len(repeats)} repeats:",
        "",
        "| run | wall s | peak RSS MB | files written | MB written | PUT | COPY | LIST | DELETE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("full", "daily", "daily again"):
        runs = [r["runs"][name] for r in repeats]
        requests = runs[-1]["requests"]
        lines.append(
            f"| {name} | {spread([r['wall_seconds'] for r in runs])} | "
            f"{max(r['peak_rss_mb'] for r in runs)} | {requests['files_written']} | "
            f"{requests['bytes_written'] / 1e6:.1f} | {requests['put']} | {requests['copy']} | "
            f"{requests['list']} | {requests['delete']} |"
        )
    ratios = [r["daily_over_full"] for r in repeats]
    unchanged = all(r["daily_changed_nothing"] for r in repeats)
    lines += [
        "",
        f"daily / full wall time: {spread(ratios, digits=3)}; re-merging the day changed nothing: "
        f"{'yes' if unchanged else 'NO'}",
        archive_line([r["runs"][name] for r in repeats for name in ("daily", "daily again")]),
    ]
    return "\n".join(lines)


def archive_line(daily_runs: list[dict]) -> str:
    """Which class archive the daily runs' JVMs were given, and whether they used it."""
    archive = jvm_archive.archive_path()
    if not archive.is_file():
        return "JVM class archive for the daily runs: none"
    ignored = sum(1 for run in daily_runs if run.get("ignored_class_archive"))
    if not ignored:
        return f"JVM class archive for the daily runs: {archive}"
    return (
        f"JVM class archive for the daily runs: {archive}, IGNORED by the JVM in {ignored} of "
        f"{len(daily_runs)} daily runs (written for another class path: delete it and run "
        "`make jvm-archive`)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/daily.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["M", "L"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--table-format", choices=TABLE_FORMATS, default=PARQUET)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TZ": "UTC"}
    results = {}
    for name in args.sizes:
        repeats = [
            run_once(SIZES[name], index, env, args.table_format) for index in range(args.repeats)
        ]
        results[name] = repeats
        print(report(SIZES[name], repeats, args.table_format), flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"daily-{stamp}.json").write_text(json.dumps(results, indent=2))
    unchanged = all(r["daily_changed_nothing"] for repeats in results.values() for r in repeats)
    return 0 if unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
