"""Query the local lake with DuckDB: the five tables as views, and three example questions.

python -m deployments.query --lake data/star-schema              # the example answers
python -m deployments.query --lake data/star-schema --sql "SELECT count(*) FROM users"
python -m deployments.query --lake data/star-schema --shell      # type SQL, one line each
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from spark_etl.tables import TABLES

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
    """One view per table of ``lake``, named ``<prefix><table>``.

    Raises:
        FileNotFoundError: A table folder is missing (run ``make demo`` first).
    """
    for name, spec in TABLES.items():
        folder = lake / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no table {name} under {lake}: run `make demo` first")
        pattern = "/*" * len(spec.partition_by) + "/*.parquet"
        connection.execute(
            f"CREATE VIEW {prefix}{name} AS SELECT {', '.join(spec.column_names)} "
            f"FROM read_parquet('{folder}{pattern}', hive_partitioning = true)"
        )


def run_examples(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[object, ...]]]:
    """The answers to :data:`EXAMPLES`, by title."""
    return {title: connection.execute(sql).fetchall() for title, sql in EXAMPLES.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the example answers, run one statement, or read statements from stdin."""
    parser = argparse.ArgumentParser(prog="python -m deployments.query", description=__doc__)
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


if __name__ == "__main__":
    sys.exit(main())
