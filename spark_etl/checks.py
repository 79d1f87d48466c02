"""Post-load checks (contract rule 8), run on the tables as they were written."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_etl import transform
from spark_etl.summary import CheckResult, RejectCount
from spark_etl.tables import SONGPLAYS, SONGPLAYS_FOREIGN_KEYS, TABLES, TIME

logger = logging.getLogger(__name__)

_CLASHING = "_clashing"
_KEY = "_key"


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
    plays = tables[SONGPLAYS.name]
    # time has about a row per play: its key and the plays' start times are
    # checked together, in one shuffle of one column (:func:`profile_with_references`).
    time_profile, plays_without_time = profile_with_references(
        tables[TIME.name], TIME.key[0], plays, "start_time"
    )
    for name in TABLES:
        if name == TIME.name:
            counts[name] = time_profile.rows
            results += profile_results(name, time_profile, had_events)
        else:
            counts[name], table_results = check_table(name, tables[name], had_events)
            results += table_results
    results += check_foreign_keys(
        plays,
        [
            (fact, dimension, tables[dimension], column)
            for fact, dimension, column in SONGPLAYS_FOREIGN_KEYS
            if dimension != TIME.name
        ],
    )
    results.append(foreign_key_result("start_time", TIME.name, plays_without_time))
    return counts, results


@dataclass(frozen=True)
class KeyProfile:
    """A table's rows and what its key looks like in them.

    Attributes:
        clashing: Rows whose key is among the keys given as clashing (a daily run: keys
            other days' file sets hold); 0 when none were given.
        span: The first and last start time (epoch ms) when asked for and any row has one.
    """

    rows: int
    null_keys: int
    distinct_keys: int
    clashing: int = 0
    span: list[int] | None = None


def key_profile(
    table: DataFrame,
    key: tuple[str, ...],
    clashing_keys: DataFrame | None = None,
    with_span: bool = False,
) -> KeyProfile:
    """Rows, rows with a null key part, distinct non-null keys and clashing rows, in one job.

    Args:
        clashing_keys: Keys no row may hold (few: broadcast), or None.
        with_span: Also take the first and last ``start_time``.
    """
    key_is_null = F.greatest(*[F.col(k).isNull().cast("int") for k in key], F.lit(0)) == 1
    clashing = F.lit(0)
    if clashing_keys is not None:
        marked = clashing_keys.select(*key).distinct().withColumn(_CLASHING, F.lit(1))
        table = table.join(F.broadcast(marked), list(key), "left")
        clashing = F.coalesce(F.col(_CLASHING), F.lit(0))
    row = table.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(key_is_null.cast("long")).alias("null_keys"),
        F.count_distinct(*[F.col(k) for k in key]).alias("distinct_keys"),
        F.sum(clashing).alias("clashing"),
        *span_columns() if with_span else [F.lit(None).alias("low"), F.lit(None).alias("high")],
    ).first()
    assert row is not None
    span = [int(row["low"]), int(row["high"])] if row["low"] is not None else None
    return KeyProfile(
        int(row["rows"]),
        int(row["null_keys"] or 0),
        int(row["distinct_keys"]),
        int(row["clashing"] or 0),
        span,
    )


def span_columns() -> list[Column]:
    """The first and last ``start_time`` (epoch ms) of a frame's rows, as ``low``, ``high``."""
    start_ms = F.unix_millis(F.col("start_time"))
    return [F.min(start_ms).alias("low"), F.max(start_ms).alias("high")]


def check_table(
    name: str, table: DataFrame, had_events: bool, total_rows: int | None = None
) -> tuple[int, list[CheckResult]]:
    """Not empty, key not null, key unique: on ``table``'s rows.

    Args:
        name: The table.
        table: Its rows.
        had_events: Whether the input held any good event.
        total_rows: The whole table's rows when ``table`` is only part of it.

    Returns:
        The rows of ``table`` and the three results.
    """
    profile = key_profile(table, TABLES[name].key)
    return profile.rows, profile_results(name, profile, had_events, total_rows)


def profile_results(
    name: str, profile: KeyProfile, had_events: bool, total_rows: int | None = None
) -> list[CheckResult]:
    """Not empty, key not null, key unique (and in no other day's set) from a profile.

    Args:
        total_rows: The whole table's rows when the profile is of a part of it (a day).
    """
    total = profile.rows if total_rows is None else total_rows
    may_be_empty = not had_events and name in ("songplays", "users", "time")
    duplicates = profile.rows - profile.null_keys - profile.distinct_keys
    unique_detail = f"{duplicates} duplicate keys"
    if total_rows is not None:
        unique_detail += f", {profile.clashing} keys also in another day's files"
    return [
        CheckResult("not empty", name, total > 0 or may_be_empty, f"{total} rows"),
        CheckResult("key not null", name, profile.null_keys == 0, f"{profile.null_keys} null keys"),
        CheckResult("key unique", name, duplicates == 0 and profile.clashing == 0, unique_detail),
    ]


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
        foreign_key_result(fact, dimension, int(row[index] or 0))
        for index, (fact, dimension, _, _) in enumerate(foreign_keys)
    ]


def foreign_key_result(fact: str, dimension: str, dangling: int) -> CheckResult:
    """The result of one foreign key of songplays, from the plays whose key is missing."""
    return CheckResult(
        f"foreign key {fact}",
        SONGPLAYS.name,
        dangling == 0,
        f"{dangling} songplays whose {fact} is not in {dimension}",
    )


def profile_with_references(
    dimension: DataFrame, key: str, facts: DataFrame, reference: str
) -> tuple[KeyProfile, int]:
    """A one-column key's profile, and the facts whose reference the dimension lacks.

    One job and one shuffle by the key: every dimension row and fact reference is counted
    per key value, where a profile and a join would each shuffle the key again.

    Returns:
        The dimension's profile, and the facts whose non-null reference is not a key.
    """
    held = dimension.select(F.col(key).alias(_KEY), F.lit(1).alias("held"), F.lit(0).alias("refs"))
    referenced = facts.select(
        F.col(reference).alias(_KEY), F.lit(0).alias("held"), F.lit(1).alias("refs")
    )
    per_key = (
        held.unionByName(referenced)
        .groupBy(_KEY)
        .agg(F.sum("held").alias("held"), F.sum("refs").alias("refs"))
    )
    known, missing = F.col(_KEY).isNotNull(), F.col("held") == 0
    row = per_key.agg(
        F.sum("held").alias("rows"),
        F.sum(F.when(~known, F.col("held"))).alias("null_keys"),
        F.count(F.when(known & ~missing, True)).alias("distinct_keys"),
        F.sum(F.when(known & missing, F.col("refs"))).alias("dangling"),
    ).first()
    assert row is not None
    profile = KeyProfile(
        int(row["rows"] or 0), int(row["null_keys"] or 0), int(row["distinct_keys"])
    )
    return profile, int(row["dangling"] or 0)


@dataclass
class RecordCounts:
    """What counting one parsed source found.

    Attributes:
        records: Every record (good and rejected).
        rejects: The rejects, by reason.
        groups: The distinct values of the ``group`` column among the good records.
        span: The least and greatest value of the ``span`` column among the good
            records; None when not asked for or when there is no good record.
    """

    records: int
    rejects: list[RejectCount]
    groups: set[Any]
    span: tuple[int, int] | None


def count_records(
    parsed: DataFrame, source: str, group: Column | None = None, span: Column | None = None
) -> RecordCounts:
    """Records of one parsed source, its rejects by reason, and more on its good ones.

    One job, however much is asked: a daily run learns the months its events fall in
    (``group``) and the first and last of their times (``span``) while it counts them.
    """
    grouped = parsed.groupBy(
        transform.REJECT_REASON, (group if group is not None else F.lit(None)).alias("group")
    )
    bound = span if span is not None else F.lit(None)
    rows = grouped.agg(
        F.count(F.lit(1)).alias("count"), F.min(bound).alias("low"), F.max(bound).alias("high")
    ).collect()
    by_reason: dict[str | None, int] = {}
    for row in rows:
        reason = row[transform.REJECT_REASON]
        by_reason[reason] = by_reason.get(reason, 0) + int(row["count"])
    good = [row for row in rows if row[transform.REJECT_REASON] is None]
    groups = {row["group"] for row in good if row["group"] is not None}
    lows = [row["low"] for row in good if row["low"] is not None]
    highs = [row["high"] for row in good if row["high"] is not None]
    rejects = [
        RejectCount(source, reason, count)
        for reason, count in sorted(by_reason.items(), key=lambda item: str(item[0]))
        if reason is not None
    ]
    records = sum(by_reason.values())
    logger.info("%s: %d records", source, records)
    for reject in rejects:
        logger.warning("rejected %d %s records: %s", reject.count, reject.source, reject.reason)
    return RecordCounts(
        records, rejects, groups, (int(min(lows)), int(max(highs))) if lows else None
    )
