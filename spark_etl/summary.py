"""The run summary: what a run read, rejected, wrote and checked.

The job writes it as JSON to ``<output>/_runs/<run_id>.json`` whether it succeeds or
fails, and the Prefect flows read it back (locally or from S3) to publish artifacts.
Standard library only, so both sides can import it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from spark_etl.args import PARQUET

RUNS_FOLDER = "_runs"
LAST_SUCCESS = "_last_succeeded.json"  # a copy of the latest successful run's summary
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class RejectCount:
    """Rejected input records of one source for one reason."""

    source: str
    reason: str
    count: int


@dataclass(frozen=True)
class CheckResult:
    """One post-load check (contract rule 8)."""

    name: str
    table: str
    passed: bool
    detail: str


@dataclass
class RunSummary:
    """Everything a person or a flow needs to know about one run of the job."""

    run_id: str
    mode: str  # "full" or "daily"
    run_date: str | None
    songs_uri: str
    logs_uri: str
    output_uri: str
    started_at: str
    status: str = FAILED
    finished_at: str | None = None
    duration_seconds: float | None = None
    input_records: dict[str, int] = field(default_factory=dict)
    rejects: list[RejectCount] = field(default_factory=list)
    max_reject_ratio: float = 0.01
    tables: dict[str, int] = field(default_factory=dict)
    previous_tables: dict[str, int] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    catalogue: str | None = None  # "rebuilt", or "unchanged" (songs and artists kept)
    requests: dict[str, int] = field(default_factory=dict)  # S3 requests, files written
    table_format: str = PARQUET
    # Iceberg: each table's snapshot id before and after the run ({"before", "after"}; None
    # where the table did not exist), so a reader can pin one consistent set of tables.
    snapshots: dict[str, dict[str, int | None]] = field(default_factory=dict)

    @property
    def reject_total(self) -> int:
        """All rejected records, songs and events together."""
        return sum(reject.count for reject in self.rejects)

    @property
    def reject_ratio(self) -> float:
        """Rejects over all input records (contract: songs and events together)."""
        total_records = sum(self.input_records.values())
        return self.reject_total / total_records if total_records else 0.0

    def to_json(self) -> str:
        """Serialise with the derived reject figures included, for people and tools."""
        payload = asdict(self)
        payload["reject_total"] = self.reject_total
        payload["reject_ratio"] = round(self.reject_ratio, 6)
        return json.dumps(payload, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        """Read a summary written by :meth:`to_json`.

        Raises:
            ValueError: The text is not a run summary.
        """
        try:
            payload: dict[str, Any] = json.loads(text)
            payload.pop("reject_total", None)
            payload.pop("reject_ratio", None)
            payload["rejects"] = [RejectCount(**item) for item in payload.get("rejects", [])]
            payload["checks"] = [CheckResult(**item) for item in payload.get("checks", [])]
            return cls(**payload)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a sparkify-lake run summary: {err}") from err


def last_success_uri(output_uri: str) -> str:
    """Where the job keeps a copy of the latest successful summary (for "change since")."""
    return f"{output_uri.rstrip('/')}/{RUNS_FOLDER}/{LAST_SUCCESS}"


def summary_uri(output_uri: str, run_id: str) -> str:
    """Where the job writes the summary of ``run_id`` under ``output_uri``."""
    return f"{output_uri.rstrip('/')}/{RUNS_FOLDER}/{run_id}.json"
