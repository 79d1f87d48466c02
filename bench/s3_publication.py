"""What a reader sees on S3 while the job publishes, and the S3 requests of each run.

    make bench-s3                       # lake S, then lake M with --seed-locally
    .venv/bin/python -m bench.s3_publication --sizes S
    .venv/bin/python -m bench.s3_publication --sizes M --seed-locally

For each lake, on moto's server (``bench/s3_api.py``, requests counted by kind) through
Hadoop's S3A: a full run into an empty output, a second full run (it republishes every
file, as a backfill or a contract change does), then a daily run of a mid-month day that
is already merged (a re-run). With ``--seed-locally`` the first full run is made on local
disk and its output uploaded, and only the other two go through S3: on moto's one
process, the first full run at lake M alone takes over an hour. Each run is a whole
``python -m spark_etl`` process. During each one a reader lists the songplays table and
reads the row count of every visible file, in a loop, as a query engine that lists a
folder and then reads it would.

The **window** of a run is the time from its first COPY into a visible table file to its
last DELETE of one: only then can a reader find a file set beside its replacement. The
report gives its length in seconds and in requests, what the reader saw in it, and every
run's requests by kind beside the job's own count (``RunSummary.requests``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
from botocore.config import Config

from bench.daily import MID_MONTH_OFFSET
from bench.measure import measure
from bench.run import LAKES_DIR, RESULTS_DIR, SIZES, Size, ensure_lake
from bench.s3_api import READER_AGENT, Request, S3Api
from spark_etl.args import JobArgs
from spark_etl.lake import LOG_SOURCE, SONG_SOURCE
from spark_etl.summary import summary_uri

BUCKET = "bench-lake"
OUTPUT = f"s3://{BUCKET}/star"
READ_TABLE = "songplays"
TABLE_FOLDERS = ("songplays", "users", "songs", "artists", "time")


@dataclass
class ReaderLog:
    """What the reader saw: one (time, visible files, rows) per look, and failed looks."""

    looks: list[tuple[float, int, int]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)


def visible_keys(s3: Any, prefix: str) -> list[str]:
    """Keys below ``prefix`` that a query engine reads (no part named ``_…`` or ``.…``)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return [
        key
        for key in keys
        if not key.endswith("/")
        and not any(part.startswith(("_", ".")) for part in key[len(prefix) :].split("/"))
    ]


def rows_of(s3: Any, key: str) -> int:
    """The rows of one parquet object, as DuckDB reads them."""
    with tempfile.NamedTemporaryFile(suffix=".parquet") as local:
        local.write(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        local.flush()
        row = duckdb.execute("SELECT count(*) FROM read_parquet(?)", [local.name]).fetchone()
    return int(row[0]) if row else 0


def reader_client(endpoint: str) -> Any:
    """A client whose requests the server logs as the reader's (its user agent says so)."""
    return boto3.client("s3", endpoint_url=endpoint, config=Config(user_agent_extra=READER_AGENT))


def read_in_a_loop(stop: threading.Event, log: ReaderLog, endpoint: str) -> None:
    """List the table and count its rows, again and again, until ``stop``."""
    s3 = reader_client(endpoint)
    prefix = f"star/{READ_TABLE}/"
    while not stop.is_set():
        started = time.time()
        try:
            keys = visible_keys(s3, prefix)
            rows = sum(rows_of(s3, key) for key in keys)
        except Exception as err:  # a file deleted between the listing and the read
            log.failed.append((started, type(err).__name__))
            continue
        log.looks.append((started, len(keys), rows))


def upload(files: list[Path], root: Path, endpoint: str, prefix: str = "") -> int:
    """Put ``files`` in the bucket (8 at a time), keyed by their path below ``root``."""
    s3 = boto3.client("s3", endpoint_url=endpoint)

    def put(path: Path) -> None:
        s3.upload_file(str(path), BUCKET, prefix + path.relative_to(root).as_posix())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


def upload_lake(lake: Path, endpoint: str) -> int:
    """Put the lake's song and log files in a new bucket; return their number."""
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    return upload([path for path in lake.rglob("*.json") if path.parent != lake], lake, endpoint)


def seed_output(size: Size, lake: Path, endpoint: str) -> int:
    """Make the first full run on local disk and upload its output; return its files."""
    local_output = LAKES_DIR / f"{size.name}-s3-seed"
    shutil.rmtree(local_output, ignore_errors=True)
    songs, logs = str(lake / SONG_SOURCE), str(lake / LOG_SOURCE)
    args = JobArgs(songs, logs, str(local_output), None, run_id="bench-full")
    measured = measure([sys.executable, "-m", "spark_etl", *args.to_argv()], dict(os.environ))
    if measured.return_code != 0:
        raise SystemExit(f"the local full run failed:\n{measured.output_tail}")
    files = [path for path in local_output.rglob("*") if path.is_file()]
    return upload(files, local_output, endpoint, prefix=OUTPUT.split(f"{BUCKET}/", 1)[1] + "/")


def publication_window(requests: list[Request]) -> list[Request]:
    """The requests from the first COPY into a visible table file to the last DELETE of one."""

    def in_a_table(request: Request) -> bool:
        key = request.path.split("/", 2)[-1]  # /bucket/star/... -> star/...
        folder, _, rest = key.removeprefix("star/").partition("/")
        hidden = any(part.startswith(("_", ".")) for part in rest.split("/"))
        return folder in TABLE_FOLDERS and bool(rest) and not hidden

    marks = [
        index
        for index, request in enumerate(requests)
        if request.kind in ("COPY", "DELETE") and in_a_table(request)
    ]
    first_copy = next((i for i in marks if requests[i].kind == "COPY"), None)
    last_delete = next((i for i in reversed(marks) if requests[i].kind == "DELETE"), None)
    if first_copy is None or last_delete is None or last_delete < first_copy:
        return []
    return requests[first_copy : last_delete + 1]


def run_one(
    name: str, args: JobArgs, server: S3Api, env: dict[str, str], endpoint: str
) -> dict[str, Any]:
    s3 = reader_client(endpoint)
    before = sum(rows_of(s3, key) for key in visible_keys(s3, f"star/{READ_TABLE}/"))
    mark = server.requests_mark()
    log, stop = ReaderLog(), threading.Event()
    reader = threading.Thread(target=read_in_a_loop, args=(stop, log, endpoint))
    reader.start()
    try:
        measured = measure([sys.executable, "-m", "spark_etl", *args.to_argv()], env)
    finally:
        stop.set()
        reader.join()
    if measured.return_code != 0:
        raise SystemExit(f"{name} run failed:\n{measured.output_tail}")
    after = sum(rows_of(s3, key) for key in visible_keys(s3, f"star/{READ_TABLE}/"))
    requests = server.requests_since(mark, BUCKET)
    job_requests = [r for r in requests if not r.by_reader]
    window = publication_window(job_requests)
    start, end = (window[0].at, window[-1].at) if window else (0.0, 0.0)
    in_window = [look for look in log.looks if start <= look[0] <= end]
    summary_key = summary_uri(OUTPUT, args.run_id).split(f"{BUCKET}/", 1)[1]
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read())
    return {
        "wall_seconds": round(measured.wall_seconds, 1),
        "peak_rss_mb": round(measured.peak_rss_mb),
        "requests": dict(Counter(r.kind for r in job_requests)),
        "job_count": summary["requests"],
        "window_seconds": round(end - start, 2),
        "window_requests": dict(Counter(r.kind for r in window)),
        "rows_before_after": [before, after],
        "reader_looks": len(log.looks),
        "reader_looks_in_window": len(in_window),
        "reader_rows_seen": sorted({rows for _, _, rows in log.looks}),
        "reader_looks_neither_before_nor_after": sum(
            1 for _, _, rows in log.looks if rows not in (before, after)
        ),
        "reader_failed_looks": len(log.failed),
    }


def bench_size(size: Size, seed_locally: bool = False) -> dict[str, Any]:
    lake = ensure_lake(size)
    folder = LAKES_DIR / f"{size.name}-s3"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requests.log").unlink(missing_ok=True)
    server = S3Api(folder, narrow_listing=True)  # moto scans every key per LIST without it
    server.start()
    try:
        endpoint = server.url
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
        }
        os.environ.update({key: env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
        started = time.monotonic()
        uploaded = upload_lake(lake, endpoint)
        print(f"{size.name}: {uploaded} files uploaded in {time.monotonic() - started:.0f} s")
        day = size.config().start_date + timedelta(days=MID_MONTH_OFFSET)
        plan = [("full", None), ("full again", None), ("daily re-run", day)]
        if seed_locally:
            started = time.monotonic()
            seeded = seed_output(size, lake, endpoint)
            print(f"{size.name}: a local full run's {seeded} files uploaded", end="")
            print(f" in {time.monotonic() - started:.0f} s")
            plan = plan[1:]
        runs = {}
        songs, logs = f"s3://{BUCKET}/{SONG_SOURCE}", f"s3://{BUCKET}/{LOG_SOURCE}"
        for name, run_date in plan:
            run_id = "bench-" + name.replace(" ", "-")
            print(f"{size.name}: {name} ...", flush=True)
            args = JobArgs(songs, logs, OUTPUT, run_date, run_id=run_id)
            runs[name] = run_one(name, args, server, env, endpoint)
            print(f"{size.name}: {name}: {json.dumps(runs[name])}", flush=True)
        return {
            "size": size.name,
            "songs": size.songs,
            "events": size.events,
            "first_full_run_made_locally": seed_locally,
            "runs": runs,
        }
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["S", "M"], choices=sorted(SIZES))
    parser.add_argument(
        "--seed-locally",
        action="store_true",
        help="make the first full run on local disk and upload it; run the others on S3",
    )
    options = parser.parse_args(argv)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"s3-{stamp}.json"
    results = []
    for name in options.sizes:
        results.append(bench_size(SIZES[name], options.seed_locally))
        path.write_text(json.dumps(results, indent=2))  # a lake's figures survive the next's
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
