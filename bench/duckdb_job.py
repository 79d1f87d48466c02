"""The data contract in DuckDB SQL: the single-node engine a user might pick instead of Spark.

It does what the Spark job does (rejects counted, the five tables partitioned as the
registry says, empty strings as null, the same matching, latest-event users, UTC time,
ISO weeks, post-load key checks) so the benchmark compares equal work. One difference
by design: ``songplay_id`` is DuckDB's 64-bit ``hash`` rather than Spark's ``xxhash64``
(the contract asks for a deterministic 64-bit id, not a particular hash), so the
benchmark compares songplays on every other column.

    python bench/duckdb_job.py --songs LAKE/song_data --logs LAKE/log_data --output OUT
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python bench/duckdb_job.py`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from spark_etl.schemas import EVENT_FIELD_TYPES, SONG_FIELD_TYPES
from spark_etl.tables import TABLES
from spark_etl.transform import DURATION_TOLERANCE

_DUCKDB_TYPES = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE"}


def lines_sql(folder: str) -> str:
    """Every line of the ``.json`` files under ``folder``, with its file (one column, no CSV)."""
    return (
        f"SELECT filename AS source_file, line FROM read_csv('{folder}/**/*.json', "
        "columns = {'line': 'VARCHAR'}, header = false, delim = chr(1), quote = '', "
        "escape = '', filename = true, auto_detect = false) "
        r"WHERE NOT regexp_full_match(coalesce(line, ''), '\s*')"
    )


def parsed_sql(folder: str, field_types: dict, required: tuple[str, ...]) -> str:
    """Lines parsed into typed fields with a reject reason, like ``transform.parse_records``."""
    names = list(field_types)
    paths = ", ".join(f"'$.\"{name}\"'" for name in names)
    typed = ", ".join(
        f"TRY_CAST(raw[{index + 1}] AS {_DUCKDB_TYPES[field_types[name].simpleString()]}) "
        f'AS "{name}"'
        for index, name in enumerate(names)
    )
    raw = {name: f"raw[{names.index(name) + 1}]" for name in required}
    checks = " ".join(
        f"WHEN {raw[name]} IS NULL OR {raw[name]} = '' THEN 'missing {name}'"
        + (
            " WHEN json_type(line, '$.ts') NOT IN ('BIGINT', 'UBIGINT') "
            "OR TRY_CAST(raw_ts AS BIGINT) IS NULL THEN 'ts is not an integer'"
            if name == "ts"
            else ""
        )
        for name in required
    )
    ts_column = f", raw[{names.index('ts') + 1}] AS raw_ts" if "ts" in names else ""
    return f"""
        SELECT source_file, line,
               CASE WHEN NOT json_valid(line) THEN 'invalid JSON'
                    WHEN json_type(line) <> 'OBJECT' THEN 'not a JSON object'
                    {checks} END AS reject_reason,
               {typed}
        FROM (SELECT source_file, line{ts_column}, raw FROM (
              SELECT source_file, line,
                     CASE WHEN json_valid(line) AND json_type(line) = 'OBJECT'
                          THEN json_extract_string(line, [{paths}]) END AS raw
              FROM ({lines_sql(folder)})))
    """


TABLE_SQL = {
    "songs": """
        SELECT song_id, NULLIF(s.title, '') AS title, s.artist_id, s.year, s.duration
        FROM (SELECT song_id, min({'title': title, 'artist_id': artist_id, 'year': year,
                                   'duration': duration}) AS s
              FROM good_songs GROUP BY song_id)""",
    "artists": """
        SELECT artist_id, NULLIF(a['name'], '') AS name, NULLIF(a['location'], '') AS location,
               a['latitude'] AS latitude, a['longitude'] AS longitude
        FROM (SELECT artist_id, min({'song_id': song_id, 'name': artist_name,
                     'location': artist_location, 'latitude': artist_latitude,
                     'longitude': artist_longitude}) AS a
              FROM good_songs GROUP BY artist_id)""",
    "songplays": f"""
        WITH plays AS (
            SELECT DISTINCT ON (userId, sessionId, itemInSession, ts) *
            FROM good_events WHERE page = 'NextSong'),
        matched AS (
            SELECT p.userId, p.sessionId, p.itemInSession, p.ts,
                   min({{'song_id': s.song_id, 'duration': s.duration,
                        'artist_id': s.artist_id}}) AS song
            FROM plays p JOIN good_songs s
              ON s.title = p.song AND s.artist_name = p.artist
             AND abs(s.duration - p.length) <= {DURATION_TOLERANCE!r}
            GROUP BY ALL)
        SELECT (hash(coalesce(p.userId, ''), p.sessionId, p.itemInSession, p.ts) // 2)::BIGINT
                   AS songplay_id,
               epoch_ms(p.ts) AS start_time, NULLIF(p.userId, '') AS user_id,
               NULLIF(p.level, '') AS level,
               m.song.song_id, m.song.artist_id, p.sessionId AS session_id,
               NULLIF(p.location, '') AS location, NULLIF(p.userAgent, '') AS user_agent,
               year(epoch_ms(p.ts))::INTEGER AS year, month(epoch_ms(p.ts))::INTEGER AS month
        FROM plays p LEFT JOIN matched m USING (userId, sessionId, itemInSession, ts)""",
    "time": """
        SELECT start_time, hour(start_time)::INTEGER AS hour, day(start_time)::INTEGER AS day,
               weekofyear(start_time)::INTEGER AS week, month(start_time)::INTEGER AS month,
               year(start_time)::INTEGER AS year, isodow(start_time)::INTEGER AS weekday
        FROM (SELECT DISTINCT start_time FROM songplays_out)""",
    "users": """
        SELECT userId AS user_id, NULLIF(u['first_name'], '') AS first_name,
               NULLIF(u['last_name'], '') AS last_name, NULLIF(u['gender'], '') AS gender,
               NULLIF(u['level'], '') AS level
        FROM (SELECT userId, max({'ts': ts, 'session_id': sessionId,
                     'item_in_session': itemInSession, 'first_name': firstName,
                     'last_name': lastName, 'gender': gender, 'level': level}) AS u
              FROM good_events WHERE userId <> '' GROUP BY userId)""",
}


def run(songs: str, logs: str, output: Path, threads: int | None = None) -> dict[str, int]:
    """Build the five tables under ``output``; return their row counts.

    Raises:
        SystemExit: Too many rejects, or a post-load check failed.
    """
    connection = duckdb.connect()
    if threads:
        connection.execute(f"SET threads = {threads}")
    connection.execute("SET preserve_insertion_order = false")
    song_parsed = parsed_sql(songs, SONG_FIELD_TYPES, ("song_id", "artist_id"))
    event_parsed = parsed_sql(logs, EVENT_FIELD_TYPES, ("ts", "page"))
    connection.execute(f"CREATE TEMP TABLE parsed_songs AS {song_parsed}")
    connection.execute(f"CREATE TEMP TABLE parsed_events AS {event_parsed}")
    _reject_or_fail(connection)
    connection.execute(
        "CREATE TEMP VIEW good_songs AS SELECT * EXCLUDE (source_file, line, reject_reason) "
        "FROM parsed_songs WHERE reject_reason IS NULL"
    )
    connection.execute(
        "CREATE TEMP VIEW good_events AS SELECT * EXCLUDE (source_file, line, reject_reason) "
        "FROM parsed_events WHERE reject_reason IS NULL"
    )
    connection.execute(f"CREATE TEMP TABLE songplays_out AS {TABLE_SQL['songplays']}")
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    counts = {}
    for name, spec in TABLES.items():
        source = "songplays_out" if name == "songplays" else f"({TABLE_SQL[name]})"
        select = f"SELECT {', '.join(spec.column_names)} FROM {source}"
        table = f"{name}_out"
        if name != "songplays":
            connection.execute(f"CREATE TEMP TABLE {table} AS {select}")
        _write(connection, table, output / name, spec.partition_by)
        counts[name] = _check(connection, table, spec.key)
    return counts


def _reject_or_fail(connection: duckdb.DuckDBPyConnection, max_ratio: float = 0.01) -> None:
    """Fail like the Spark job when rejects exceed the allowed share of all records."""
    row = connection.execute(
        "SELECT count(*), count(reject_reason) FROM "
        "(SELECT reject_reason FROM parsed_songs UNION ALL SELECT reject_reason FROM parsed_events)"
    ).fetchone()
    assert row is not None
    total, rejected = row
    if total and rejected / total > max_ratio:
        raise SystemExit(f"duckdb_job: {rejected} of {total} records rejected")


def _write(
    connection: duckdb.DuckDBPyConnection, table: str, folder: Path, partition_by: tuple
) -> None:
    """Parquet, Hive-partitioned like the Spark job's output."""
    if partition_by:
        target, options = folder, f"FORMAT parquet, PARTITION_BY ({', '.join(partition_by)})"
    else:
        folder.mkdir()
        target, options = folder / "part-0.parquet", "FORMAT parquet"
    connection.execute(f"COPY {table} TO '{target}' ({options})")


def _check(connection: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...]) -> int:
    """Rule 8: the key is unique and not null; return the row count."""
    row = connection.execute(
        f"SELECT count(*), count(DISTINCT ({', '.join(key)})), "
        f"count(*) FILTER (WHERE {' OR '.join(f'{k} IS NULL' for k in key)}) FROM {table}"
    ).fetchone()
    assert row is not None
    rows, distinct, nulls = row
    if nulls or distinct != rows:
        raise SystemExit(f"duckdb_job: {table}: {nulls} null keys, {rows - distinct} duplicates")
    return int(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/duckdb_job.py", description=__doc__)
    parser.add_argument("--songs", required=True)
    parser.add_argument("--logs", required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = run(args.songs, args.logs, args.output, args.threads)
    summary = " ".join(f"{table}={rows}" for table, rows in counts.items())
    print(f"duckdb_job: {summary} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
