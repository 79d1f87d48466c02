"""The post-load checks (contract rule 8) on tiny inline tables: each kind made to fail once.

Every test compares the whole list of results, so a check that stops failing, fails
for the wrong reason or drags another check down with it turns the test red.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from spark_etl.checks import check_tables
from spark_etl.summary import CheckResult
from spark_etl.tables import TABLES

PLAYED_AT = datetime(2018, 11, 30, 23, 30)
# Rule 8 as the contract writes it: three checks on every table, then each foreign key
# of songplays with the dimension it must be found in.
TABLE_NAMES = ("songplays", "users", "songs", "artists", "time")
FOREIGN_KEYS = {
    "song_id": "songs",
    "artist_id": "artists",
    "user_id": "users",
    "start_time": "time",
}

Rows = dict[str, list[tuple[Any, ...]]]


def sound_rows() -> Rows:
    """One row per table: every key present and unique, every foreign key resolved."""
    return {
        "songplays": [(1, PLAYED_AT, "1", "free", "SO1", "AR1", 10, "Oslo", "Mozilla", 2018, 11)],
        "users": [("1", "Ada", "Lovelace", "F", "free")],
        "songs": [("SO1", "One", "AR1", 0, 100.0)],
        "artists": [("AR1", "A", None, None, None)],
        "time": [(PLAYED_AT, 23, 30, 48, 11, 2018, 5)],
    }


def tables_of(spark: SparkSession, rows: Rows) -> dict[str, DataFrame]:
    return {name: spark.createDataFrame(rows[name], TABLES[name].schema) for name in rows}


def all_passed(rows: Rows) -> list[CheckResult]:
    """The results of tables that pass every check, with the details the summary shows."""
    results: list[CheckResult] = []
    for table in TABLE_NAMES:
        results += [
            CheckResult("not empty", table, True, f"{len(rows[table])} rows"),
            CheckResult("key not null", table, True, "0 null keys"),
            CheckResult("key unique", table, True, "0 duplicate keys"),
        ]
    for column, dimension in FOREIGN_KEYS.items():
        detail = f"0 songplays whose {column} is not in {dimension}"
        results.append(CheckResult(f"foreign key {column}", "songplays", True, detail))
    return results


def with_failures(expected: list[CheckResult], *failures: CheckResult) -> list[CheckResult]:
    """``expected`` with the named checks failing instead (each must be in the list)."""
    by_check = {(failure.name, failure.table): failure for failure in failures}
    replaced = [by_check.get((result.name, result.table), result) for result in expected]
    assert sum(old != new for old, new in zip(expected, replaced, strict=True)) == len(failures)
    return replaced


def in_stable_order(results: list[CheckResult]) -> list[CheckResult]:
    # The contract lists checks, not their order: compare them as a sorted list.
    return sorted(results, key=lambda result: (result.table, result.name))


def assert_checks(
    spark: SparkSession, rows: Rows, had_events: bool, expected: list[CheckResult]
) -> None:
    counts, results = check_tables(tables_of(spark, rows), had_events)
    assert counts == {table: len(rows[table]) for table in TABLE_NAMES}
    assert in_stable_order(results) == in_stable_order(expected)


def test_sound_tables_pass_every_check(spark: SparkSession) -> None:
    rows = sound_rows()
    assert_checks(spark, rows, True, all_passed(rows))


def test_an_empty_table_fails_not_empty(spark: SparkSession) -> None:
    rows = {**sound_rows(), "songplays": []}
    expected = with_failures(
        all_passed(rows), CheckResult("not empty", "songplays", False, "0 rows")
    )
    assert_checks(spark, rows, True, expected)


def test_without_events_only_the_event_tables_may_be_empty(spark: SparkSession) -> None:
    rows = {**sound_rows(), "songplays": [], "users": [], "time": [], "songs": []}
    expected = with_failures(all_passed(rows), CheckResult("not empty", "songs", False, "0 rows"))
    assert_checks(spark, rows, False, expected)


def test_a_null_key_fails_key_not_null_and_nothing_else(spark: SparkSession) -> None:
    sound = sound_rows()
    rows = {**sound, "users": [*sound["users"], (None, "Bo", "Nobody", "M", "free")]}
    expected = with_failures(
        all_passed(rows), CheckResult("key not null", "users", False, "1 null keys")
    )
    assert_checks(spark, rows, True, expected)


def test_a_duplicate_key_fails_key_unique(spark: SparkSession) -> None:
    sound = sound_rows()
    rows = {**sound, "songs": [*sound["songs"], ("SO1", "One (live)", "AR1", 0, 101.0)]}
    expected = with_failures(
        all_passed(rows), CheckResult("key unique", "songs", False, "1 duplicate keys")
    )
    assert_checks(spark, rows, True, expected)


def test_a_dangling_foreign_key_fails_its_check_while_a_null_one_passes(
    spark: SparkSession,
) -> None:
    sound = sound_rows()
    dangling = (2, PLAYED_AT, "1", "free", "SO1", "AR9", 10, "Oslo", "Mozilla", 2018, 11)
    unmatched = (3, PLAYED_AT, None, "free", None, None, 11, None, None, 2018, 11)
    rows = {**sound, "songplays": [*sound["songplays"], dangling, unmatched]}
    expected = with_failures(
        all_passed(rows),
        CheckResult(
            "foreign key artist_id",
            "songplays",
            False,
            "1 songplays whose artist_id is not in artists",
        ),
    )
    assert_checks(spark, rows, True, expected)


def test_time_s_key_and_the_plays_start_times_are_checked_together(spark: SparkSession) -> None:
    sound = sound_rows()
    later = datetime(2018, 11, 30, 23, 45)
    play = sound["songplays"][0]
    plays_at = [(2, later, *play[2:]), (3, later, *play[2:]), (4, None, *play[2:])]
    hour = (PLAYED_AT, 23, 30, 48, 11, 2018, 5)
    rows = {
        **sound,
        "songplays": [*sound["songplays"], *plays_at],
        "time": [hour, hour, (None, 0, 1, 1, 1, 2018, 1)],
    }
    expected = with_failures(
        all_passed(rows),
        CheckResult("key not null", "time", False, "1 null keys"),
        CheckResult("key unique", "time", False, "1 duplicate keys"),
        CheckResult(
            "foreign key start_time",
            "songplays",
            False,
            "2 songplays whose start_time is not in time",
        ),
    )
    assert_checks(spark, rows, True, expected)
