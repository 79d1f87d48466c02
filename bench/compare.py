"""Do two lakes hold the same tables? Row for row, read back with DuckDB.

The benchmark uses it to show that the Spark job and the DuckDB version did the same
work, so that their times can be compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/compare.py A B`: make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from lake_query import create_views
from spark_etl.tables import TABLES

# Each engine computes its own deterministic 64-bit songplay_id (see bench/duckdb_job.py);
# every other column must match exactly.
ENGINE_SPECIFIC = {"songplay_id"}


def differences(left: Path, right: Path) -> dict[str, tuple[int, int]]:
    """Per table with a difference: (rows only in ``left``, rows only in ``right``).

    Rows are compared as multisets on every column but :data:`ENGINE_SPECIFIC`; an empty
    result means the lakes hold the same tables.
    """
    connection = duckdb.connect()
    create_views(connection, left, prefix="l_")
    create_views(connection, right, prefix="r_")
    found = {}
    for name, spec in TABLES.items():
        columns = ", ".join(c for c in spec.column_names if c not in ENGINE_SPECIFIC)
        only = [
            _count(
                connection,
                f"SELECT {columns} FROM {a}_{name} EXCEPT ALL SELECT {columns} FROM {b}_{name}",
            )
            for a, b in (("l", "r"), ("r", "l"))
        ]
        if any(only):
            found[name] = (only[0], only[1])
    return found


def _count(connection: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = connection.execute(f"SELECT count(*) FROM ({sql})").fetchone()
    assert row is not None
    return int(row[0])


if __name__ == "__main__":
    diff = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    print(diff or "same tables")
    sys.exit(1 if diff else 0)
