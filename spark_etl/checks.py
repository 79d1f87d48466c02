"""Post-load checks (contract rule 8), run on the tables as they were written."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_etl.summary import CheckResult
from spark_etl.tables import SONGPLAYS, SONGPLAYS_FOREIGN_KEYS, TABLES


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
    for name, spec in TABLES.items():
        rows, null_keys, distinct_keys = _key_profile(tables[name], spec.key)
        counts[name] = rows
        may_be_empty = not had_events and name in ("songplays", "users", "time")
        results += [
            CheckResult("not empty", name, rows > 0 or may_be_empty, f"{rows} rows"),
            CheckResult("key not null", name, null_keys == 0, f"{null_keys} null keys"),
            CheckResult(
                "key unique",
                name,
                distinct_keys == rows - null_keys,
                f"{rows - null_keys - distinct_keys} duplicate keys",
            ),
        ]
    results += [_foreign_key(tables, *foreign_key) for foreign_key in SONGPLAYS_FOREIGN_KEYS]
    return counts, results


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


def _foreign_key(
    tables: dict[str, DataFrame], fact_column: str, dimension: str, dimension_column: str
) -> CheckResult:
    """Every non-null ``songplays.<fact_column>`` is present in the dimension."""
    references = tables[SONGPLAYS.name].select(fact_column).where(F.col(fact_column).isNotNull())
    keys = tables[dimension].select(F.col(dimension_column).alias(fact_column))
    dangling = references.join(keys, fact_column, "left_anti").count()
    return CheckResult(
        f"foreign key {fact_column}",
        SONGPLAYS.name,
        dangling == 0,
        f"{dangling} songplays whose {fact_column} is not in {dimension}",
    )
