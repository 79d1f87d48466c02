"""Count the rows of an output's Iceberg tables with DuckDB's ``iceberg_scan``, offline.

    make duckdb-iceberg
    .venv-duckdb/bin/python lake_query/iceberg_counts.py data/star-iceberg

Prints ``{"songplays": 6908, ...}`` (JSON), one count per table folder that holds an
Iceberg table (``<table>/metadata/version-hint.text``, the layout the job writes outside
Glue). DuckDB's ``iceberg`` and ``avro`` extensions come from PyPI's wheels
(``duckdb-extension-iceberg``, ``duckdb-extension-avro``) rather than DuckDB's extension
server, so no network is needed; the wheels exist for DuckDB 1.5.5 and not yet for the
project's DuckDB 2.0, which is why this runs in a virtualenv of its own. Standard library
and duckdb only: it imports nothing of the project.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import duckdb

EXTENSIONS = ("avro", "iceberg")  # iceberg reads its manifests through avro


def connect() -> duckdb.DuckDBPyConnection:
    """A connection with the wheels' extensions loaded (they are not signed by DuckDB's
    server, so unsigned extensions are allowed; nothing is fetched)."""
    connection = duckdb.connect(
        config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"}
    )
    for name in EXTENSIONS:
        package = Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent
        [extension] = package.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension")
        connection.execute(f"LOAD '{extension}'")
    return connection


def iceberg_counts(output: Path) -> dict[str, int]:
    """Each Iceberg table of ``output`` and its current snapshot's row count."""
    connection = connect()
    tables = sorted(hint.parent.parent for hint in output.glob("*/metadata/version-hint.text"))
    return {
        table.name: connection.execute(
            "SELECT count(*) FROM iceberg_scan(?)", [str(table)]
        ).fetchone()[0]
        for table in tables
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: iceberg_counts.py OUTPUT")
    print(json.dumps(iceberg_counts(Path(sys.argv[1]))))
