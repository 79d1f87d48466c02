"""Query the local lake with DuckDB: the five tables as views, and three example questions.

python -m lake_query --lake data/star-schema              # the example answers
python -m lake_query --lake data/star-schema --sql "SELECT count(*) FROM users"
python -m lake_query --lake data/star-schema --shell      # type SQL, one line each
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from spark_etl.tables import TABLES, Column, TableSpec

# Spark's types as DuckDB reads them from the job's Parquet (Spark's timestamps are INT96,
# which DuckDB reads as a TIMESTAMP without time zone).
_DUCKDB_TYPES = {
    "long": "BIGINT",
    "integer": "INTEGER",
    "double": "DOUBLE",
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP",
}

EXAMPLES = {
    "Top 5 songs by plays": """
        SELECT s.title, a.name AS artist, count(*) AS plays
        FROM songplays p JOIN songs s USING (song_id) JOIN artists a ON a.artist_id = p.artist_id
        GROUP BY ALL ORDER BY plays DESC, s.title LIMIT 5""",
    "Plays by hour of day (UTC)": """
        SELECT t.hour, count(*) AS plays
        FROM songplays p JOIN time t USING (start_time)
        GROUP BY t.hour ORDER BY t.hour""",
    "Free vs paid users and their plays": """
        SELECT u.level, count(DISTINCT u.user_id) AS users, count(p.songplay_id) AS plays
        FROM users u LEFT JOIN songplays p USING (user_id)
        GROUP BY u.level ORDER BY u.level""",
}


def connect(lake: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per table of the lake.

    Raises:
        FileNotFoundError: A table folder is missing (run ``make demo`` first).
    """
    connection = duckdb.connect()
    create_views(connection, lake)
    return connection


def create_views(connection: duckdb.DuckDBPyConnection, lake: Path, prefix: str = "") -> None:
    """One view per table of ``lake``, named ``<prefix><table>``, over its visible files.

    A table with no visible file (Spark writes none for an empty partitioned table) is an
    empty view with the table's columns. The files are listed now, once: connect again
    to see what a later run published.

    Raises:
        FileNotFoundError: A table folder is missing (run ``make demo`` first).
    """
    for name, spec in TABLES.items():
        folder = lake / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no table {name} under {lake}: run `make demo` first")
        files = visible_parquet_files(folder)
        table = _read_table(connection, spec, files) if files else _empty_table(connection, spec)
        table.create_view(f"{prefix}{name}")


def visible_parquet_files(folder: Path) -> list[str]:
    """The ``.parquet`` files under ``folder`` that Athena, Hive and Spark would read, sorted.

    Those engines skip every file and folder whose name starts with ``_`` or ``.``: that is
    where writers keep their unfinished work (``_temporary/``, ``.spark-staging-*``) and
    markers (``_SUCCESS``, ``.part-….crc``). Reading them would count rows twice or fail.
    """
    files: list[str] = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not _is_hidden(name)]  # never descend
        files.extend(
            os.path.join(parent, name)
            for name in names
            if not _is_hidden(name) and name.endswith(".parquet")
        )
    return sorted(files)


def _is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _read_table(
    connection: duckdb.DuckDBPyConnection, spec: TableSpec, files: list[str]
) -> duckdb.DuckDBPyRelation:
    """The table's columns read from ``files``; the list is a parameter, never SQL text."""
    # Partition values come from folder names; their types come from the registry, not
    # from what the values look like (an artist_id of digits stays a string).
    hive_types = ", ".join(
        f"'{column.name}': '{_duckdb_type(column)}'"
        for column in spec.columns
        if column.name in spec.partition_by
    )
    options = f", hive_types = {{{hive_types}}}" if hive_types else ""
    return connection.sql(
        f"SELECT {', '.join(spec.column_names)} "
        f"FROM read_parquet($files, hive_partitioning = true{options})",
        params={"files": files},
    )


def _empty_table(connection: duckdb.DuckDBPyConnection, spec: TableSpec) -> duckdb.DuckDBPyRelation:
    """No rows, the table's columns and types."""
    columns = ", ".join(
        f"CAST(NULL AS {_duckdb_type(column)}) AS {column.name}" for column in spec.columns
    )
    return connection.sql(f"SELECT {columns} WHERE false")


def _duckdb_type(column: Column) -> str:
    """The DuckDB type in which DuckDB reads back what Spark wrote for ``column``."""
    return _DUCKDB_TYPES[column.data_type.typeName()]


def run_examples(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[object, ...]]]:
    """The answers to :data:`EXAMPLES`, by title."""
    return {title: connection.execute(sql).fetchall() for title, sql in EXAMPLES.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the example answers, run one statement, or read statements from stdin."""
    parser = argparse.ArgumentParser(prog="python -m lake_query", description=__doc__)
    parser.add_argument("--lake", type=Path, default=Path("data/star-schema"))
    parser.add_argument("--sql", help="one statement to run")
    parser.add_argument("--shell", action="store_true", help="read statements from stdin")
    args = parser.parse_args(argv)
    try:
        connection = connect(args.lake)
    except FileNotFoundError as err:
        print(f"query: error: {err}", file=sys.stderr)
        return 1
    if args.sql:
        connection.sql(args.sql).show()
    elif args.shell:
        for line in sys.stdin:
            if line.strip():
                connection.sql(line).show()
    else:
        for title, sql in EXAMPLES.items():
            print(f"-- {title}")
            connection.sql(sql).show()
    return 0
