"""The DuckDB query helper reads what Athena reads: visible files only, from any folder name.

The lakes here are written with DuckDB (no Spark): a Parquet file per partition folder,
laid out as the job lays out its tables. The answers on a real job run are tested in
test_job.py.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import duckdb
import pytest

from lake_query import connect, main
from spark_etl.tables import TABLES

NOV_1 = datetime.datetime(2018, 11, 1, 0, 30)
NOV_2 = datetime.datetime(2018, 11, 2, 12, 0)

# Each table's rows as the views must return them (contract order, partition columns
# included), sorted.
EXPECTED_ROWS = {
    "songplays": [
        (1, NOV_1, "u1", "free", "S1", "AR1", 10, "Here", "Firefox", 2018, 11),
        (2, NOV_2, "u1", "paid", "S1", "AR1", 11, "Here", "Firefox", 2018, 11),
    ],
    "users": [("u1", "Ada", "Byron", "F", "paid")],
    "songs": [("S1", "Song one", "AR1", 2001, 200.5)],
    "artists": [("AR1", "Artist one", "Paris", 48.85, 2.35)],
    "time": [
        (NOV_1, 0, 1, 44, 11, 2018, 4),
        (NOV_2, 12, 2, 44, 11, 2018, 5),
    ],
}

# Where each table's visible file goes, and the SQL of its columns (partition columns are
# in the folder names, as Spark writes them).
VISIBLE_FILES = {
    "songplays/year=2018/month=11/part-00000.snappy.parquet": """
        SELECT * FROM (VALUES
            (1::BIGINT, TIMESTAMP '2018-11-01 00:30:00', 'u1', 'free', 'S1', 'AR1', 10::BIGINT,
             'Here', 'Firefox'),
            (2::BIGINT, TIMESTAMP '2018-11-02 12:00:00', 'u1', 'paid', 'S1', 'AR1', 11::BIGINT,
             'Here', 'Firefox'))
        t(songplay_id, start_time, user_id, level, song_id, artist_id, session_id, location,
          user_agent)""",
    "users/part-00000.snappy.parquet": """
        SELECT 'u1' AS user_id, 'Ada' AS first_name, 'Byron' AS last_name, 'F' AS gender,
               'paid' AS level""",
    "songs/year=2001/artist_id=AR1/part-00000.snappy.parquet": """
        SELECT 'S1' AS song_id, 'Song one' AS title, 200.5::DOUBLE AS duration""",
    "artists/part-00000.snappy.parquet": """
        SELECT 'AR1' AS artist_id, 'Artist one' AS name, 'Paris' AS location,
               48.85::DOUBLE AS latitude, 2.35::DOUBLE AS longitude""",
    "time/year=2018/month=11/part-00000.snappy.parquet": """
        SELECT * FROM (VALUES
            (TIMESTAMP '2018-11-01 00:30:00', 0, 1, 44, 4),
            (TIMESTAMP '2018-11-02 12:00:00', 12, 2, 44, 5))
        t(start_time, hour, day, week, weekday)""",
}

ONE_MORE_SONGPLAY = """
    SELECT 99::BIGINT AS songplay_id, TIMESTAMP '2018-11-03 00:00:00' AS start_time,
           'u9' AS user_id, 'free' AS level, 'S1' AS song_id, 'AR1' AS artist_id,
           99::BIGINT AS session_id, 'There' AS location, 'Curl' AS user_agent"""


def write_parquet(path: Path, sql: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.connect().sql(sql).write_parquet(str(path))


def write_lake(lake: Path) -> Path:
    for relative, sql in VISIBLE_FILES.items():
        write_parquet(lake / relative, sql)
    return lake


def all_rows(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[object, ...]]]:
    return {
        name: connection.sql(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in TABLES
    }


def column_types(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    return {
        name: [(row[0], row[1]) for row in connection.sql(f"DESCRIBE {name}").fetchall()]
        for name in TABLES
    }


def test_leftovers_of_writers_are_never_read(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    songplays, users = lake / "songplays", lake / "users"
    # What a killed or running Spark write leaves behind, each holding rows that must not
    # count; the .parquet names that are not Parquet would make DuckDB fail if read.
    write_parquet(songplays / "_temporary/0/part-x.parquet", ONE_MORE_SONGPLAY)
    write_parquet(
        songplays / "_temporary/0/_temporary/attempt_1/year=2018/month=11/part-x.parquet",
        ONE_MORE_SONGPLAY,
    )
    write_parquet(
        songplays / ".spark-staging-1/year=2018/month=11/part-y.parquet", ONE_MORE_SONGPLAY
    )
    write_parquet(songplays / "year=2018/month=11/.part-00001.snappy.parquet", ONE_MORE_SONGPLAY)
    write_parquet(songplays / "year=2018/_temporary/month=11/part-z.parquet", ONE_MORE_SONGPLAY)
    (songplays / "_SUCCESS").write_text("")
    (songplays / "year=2018/month=11/.part-00000.snappy.parquet.crc").write_bytes(b"crc")
    (songplays / "year=2018/month=11/_part-broken.parquet").write_bytes(b"not parquet")
    write_parquet(
        users / "_temporary/0/part-00000.snappy.parquet",
        VISIBLE_FILES["users/part-00000.snappy.parquet"],
    )
    (users / "_SUCCESS").write_text("")

    assert all_rows(connect(lake)) == EXPECTED_ROWS


def test_a_lake_under_a_folder_with_quotes_is_read_and_never_runs_as_sql(
    tmp_path: Path,
) -> None:
    odd = write_lake(tmp_path / 'it\'s "odd"')
    injection = write_lake(tmp_path / "x', hive_partitioning = false); DROP VIEW users; --")

    assert all_rows(connect(odd)) == EXPECTED_ROWS
    assert all_rows(connect(injection)) == EXPECTED_ROWS


def test_a_table_without_a_visible_file_is_an_empty_view_with_its_columns(
    tmp_path: Path,
) -> None:
    full = connect(write_lake(tmp_path / "full"))
    empty_lake = tmp_path / "empty"
    for name in TABLES:
        (empty_lake / name).mkdir(parents=True)
        (empty_lake / name / "_SUCCESS").write_text("")  # Spark's only file for no rows
    write_parquet(empty_lake / "songplays/_temporary/0/part-x.parquet", ONE_MORE_SONGPLAY)
    empty = connect(empty_lake)

    assert all_rows(empty) == {name: [] for name in TABLES}
    assert column_types(empty) == column_types(full)
    assert column_types(full)["songs"] == [
        ("song_id", "VARCHAR"),
        ("title", "VARCHAR"),
        ("artist_id", "VARCHAR"),
        ("year", "INTEGER"),  # from folder names, typed by the registry (not BIGINT)
        ("duration", "DOUBLE"),
    ]


def test_a_missing_lake_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--lake", str(tmp_path)]) == 1
    assert "no table songplays under" in capsys.readouterr().err
