"""Post-load checks (contract rule 8), run on the tables as they were written."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_etl import transform
from spark_etl.summary import CheckResult, RejectCount
from spark_etl.tables import SONGPLAYS, SONGPLAYS_FOREIGN_KEYS, TABLES

logger = logging.getLogger(__name__)


def check_tables(
    tables: dict[str, DataFrame], had_events: bool
) -> tuple[dict[str, int], list[CheckResult]]:
    """Count every table and check it: non-empty, keys unique and not null, foreign keys.

    Args:
        tables: Each table as read back from the output, by name.
        had_events: Whether the input held any good event; without events the
            event-derived tables may be empty.

    Returns:
        Row counts by table and one result per check.
    """
    counts: dict[str, int] = {}
    results: list[CheckResult] = []
    for name in TABLES:
        counts[name], table_results = check_table(name, tables[name], had_events)
        results += table_results
    results += check_foreign_keys(
        tables[SONGPLAYS.name],
        [
            (fact, dimension, tables[dimension], column)
            for fact, dimension, column in SONGPLAYS_FOREIGN_KEYS
        ],
    )
    return counts, results


def check_table(
    name: str, table: DataFrame, had_events: bool, total_rows: int | None = None
) -> tuple[int, list[CheckResult]]:
    """Not empty, key not null, key unique: on ``table``'s rows.

    Args:
        name: The table.
        table: Its rows, or the rows a run changed together with every row they could
            clash with (a daily run: the touched months).
        had_events: Whether the input held any good event.
        total_rows: The whole table's rows when ``table`` is only part of it.

    Returns:
        The rows of ``table`` and the three results.
    """
    rows, null_keys, distinct_keys = _key_profile(table, TABLES[name].key)
    total = rows if total_rows is None else total_rows
    may_be_empty = not had_events and name in ("songplays", "users", "time")
    return rows, [
        CheckResult("not empty", name, total > 0 or may_be_empty, f"{total} rows"),
        CheckResult("key not null", name, null_keys == 0, f"{null_keys} null keys"),
        CheckResult(
            "key unique",
            name,
            distinct_keys == rows - null_keys,
            f"{rows - null_keys - distinct_keys} duplicate keys",
        ),
    ]


def check_day_keys(
    name: str, day_keys: DataFrame, other_keys: DataFrame, had_events: bool, total_rows: int
) -> list[CheckResult]:
    """A daily run's keys: not null and unique within its day, and in no other day's set.

    The month's other keys are only probed with the day's (broadcast), never counted
    whole: the check costs a scan of the month's keys, not a shuffle of them.
    """
    _, results = check_table(name, day_keys, had_events, total_rows)
    spec = TABLES[name]
    clashes = other_keys.join(F.broadcast(day_keys.distinct()), list(spec.key), "left_semi").count()
    unique = results[2]
    results[2] = CheckResult(
        unique.name,
        name,
        unique.passed and clashes == 0,
        f"{unique.detail}, {clashes} keys also in another day's files",
    )
    return results


def _key_profile(table: DataFrame, key: tuple[str, ...]) -> tuple[int, int, int]:
    """Rows, rows with a null key part, and distinct non-null keys, in one pass."""
    key_is_null = F.greatest(*[F.col(k).isNull().cast("int") for k in key], F.lit(0)) == 1
    row = table.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(key_is_null.cast("long")).alias("null_keys"),
        F.count_distinct(*[F.col(k) for k in key]).alias("distinct_keys"),
    ).first()
    assert row is not None
    return int(row["rows"]), int(row["null_keys"] or 0), int(row["distinct_keys"])


def check_foreign_keys(
    songplays: DataFrame, foreign_keys: list[tuple[str, str, DataFrame, str]]
) -> list[CheckResult]:
    """Every non-null ``songplays.<fact column>`` is present in its dimension's keys.

    All foreign keys are checked in one Spark job: each check run on its own costs a job
    of its own, most of a small daily run's checks.

    Args:
        songplays: The plays to check.
        foreign_keys: ``(fact column, dimension, dimension's keys, dimension column)``.
    """
    checked = songplays.select(*[fact for fact, *_ in foreign_keys])
    dangling = []
    for index, (fact, _, keys, column) in enumerate(foreign_keys):
        found = f"found_{index}"
        present = keys.select(F.col(column).alias(fact)).distinct().withColumn(found, F.lit(True))
        checked = checked.join(present, fact, "left")
        missing = F.col(fact).isNotNull() & F.col(found).isNull()
        dangling.append(F.sum(missing.cast("long")).alias(found))
    row = checked.agg(*dangling).first()
    assert row is not None
    return [
        CheckResult(
            f"foreign key {fact}",
            SONGPLAYS.name,
            int(row[index] or 0) == 0,
            f"{int(row[index] or 0)} songplays whose {fact} is not in {dimension}",
        )
        for index, (fact, dimension, _, _) in enumerate(foreign_keys)
    ]


def count_records(parsed: DataFrame, source: str) -> tuple[int, list[RejectCount]]:
    """Records of one parsed source, and its rejects by reason (one pass)."""
    by_reason = parsed.groupBy(transform.REJECT_REASON).count().collect()
    rejects = [
        RejectCount(source, row[transform.REJECT_REASON], int(row["count"]))
        for row in sorted(by_reason, key=lambda row: str(row[transform.REJECT_REASON]))
        if row[transform.REJECT_REASON] is not None
    ]
    records = sum(int(row["count"]) for row in by_reason)
    logger.info("%s: %d records", source, records)
    for reject in rejects:
        logger.warning("rejected %d %s records: %s", reject.count, reject.source, reject.reason)
    return records, rejects
