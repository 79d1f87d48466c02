"""What Spark did in each of the job's stages, read from a Spark event log.

The job names its stage on every Spark job it starts (the local property
``spark_etl.job.STAGE_PROPERTY``); ``bench/run.py --spark-profile`` runs the job with an
event log, and this module sums, per stage of the job: Spark jobs, Spark stages, tasks,
bytes read from files, shuffle bytes written and read, and bytes and records written.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spark_etl.job import STAGE_PROPERTY

UNNAMED = "(outside the job's stages)"
COUNTERS = (
    "spark_jobs",
    "spark_stages",
    "tasks",
    "input_bytes",
    "shuffle_write_bytes",
    "shuffle_read_bytes",
    "output_bytes",
    "output_records",
)


def event_log_settings(folder: Path) -> list[str]:
    """spark-submit options that write the run's event log into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        *("--conf", "spark.eventLog.enabled=true"),
        *("--conf", f"spark.eventLog.dir={folder.resolve().as_uri()}"),
        # One plain JSON-lines file (Spark 4 rolls and compresses its logs by default).
        *("--conf", "spark.eventLog.rolling.enabled=false"),
        *("--conf", "spark.eventLog.compress=false"),
    ]


def newest_event_log(folder: Path) -> Path:
    """The event log the last run wrote into ``folder``."""
    return max(folder.iterdir(), key=lambda path: path.stat().st_mtime)


def profile(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per stage of the job (in the order they ran): what its Spark jobs did."""
    stage_of_spark_stage: dict[int, str] = {}
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for event in events:
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            name = (event.get("Properties") or {}).get(STAGE_PROPERTY) or UNNAMED
            totals[name]["spark_jobs"] += 1
            for stage_id in event.get("Stage IDs", []):
                stage_of_spark_stage[stage_id] = name
        elif kind == "SparkListenerStageCompleted":
            stage_id = event["Stage Info"]["Stage ID"]
            totals[stage_of_spark_stage.get(stage_id, UNNAMED)]["spark_stages"] += 1
        elif kind == "SparkListenerTaskEnd":
            name = stage_of_spark_stage.get(event["Stage ID"], UNNAMED)
            _add_task(totals[name], event.get("Task Metrics") or {})
    return dict(totals)


def _add_task(total: dict[str, int], metrics: dict[str, Any]) -> None:
    shuffle_read = metrics.get("Shuffle Read Metrics", {})
    total["tasks"] += 1
    total["input_bytes"] += metrics.get("Input Metrics", {}).get("Bytes Read", 0)
    total["shuffle_write_bytes"] += metrics.get("Shuffle Write Metrics", {}).get(
        "Shuffle Bytes Written", 0
    )
    total["shuffle_read_bytes"] += shuffle_read.get("Remote Bytes Read", 0) + shuffle_read.get(
        "Local Bytes Read", 0
    )
    total["output_bytes"] += metrics.get("Output Metrics", {}).get("Bytes Written", 0)
    total["output_records"] += metrics.get("Output Metrics", {}).get("Records Written", 0)


def read_event_log(path: Path) -> Iterator[dict[str, Any]]:
    """The events of an uncompressed event log, one JSON object a line."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def table(by_stage: dict[str, dict[str, int]]) -> str:
    """A Markdown table: one row per stage of the job, MB for bytes."""
    columns = ["stage", "Spark jobs", "Spark stages", "tasks", "input MB", "shuffle write MB"]
    columns += ["shuffle read MB", "output MB", "output records"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, total in by_stage.items():
        megabytes = [
            f"{total[key] / 1e6:,.1f}"
            for key in ("input_bytes", "shuffle_write_bytes", "shuffle_read_bytes", "output_bytes")
        ]
        lines.append(
            f"| {name} | {total['spark_jobs']} | {total['spark_stages']} | {total['tasks']:,} | "
            + " | ".join(megabytes)
            + f" | {total['output_records']:,} |"
        )
    return "\n".join(lines)
