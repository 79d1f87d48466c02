"""The one registry of output tables: columns, types, key, partitioning and grain.

The writer, the post-load checks, the Glue catalogue and the docs all read this module,
so a table's shape is declared here and nowhere else (contract, "Outputs").
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T


@dataclass(frozen=True)
class Column:
    """One output column and its Spark type."""

    name: str
    data_type: T.DataType


@dataclass(frozen=True)
class TableSpec:
    """How one output table looks on disk.

    Attributes:
        name: Folder name under the output location (``<output>/<name>/``).
        columns: Columns in contract order, partition columns included.
        key: Columns whose values identify one row; checked unique and not null.
        partition_by: Hive-style partition columns, outermost first.
        grain: One sentence: what one row is.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition_by: tuple[str, ...]
    grain: str

    @property
    def column_names(self) -> list[str]:
        """Column names in contract order."""
        return [column.name for column in self.columns]

    @property
    def schema(self) -> T.StructType:
        """The table's Spark schema, partition columns included."""
        return T.StructType(
            [T.StructField(column.name, column.data_type, True) for column in self.columns]
        )


_STRING = T.StringType()
_INT = T.IntegerType()
_LONG = T.LongType()
_DOUBLE = T.DoubleType()
_TIMESTAMP = T.TimestampType()

SONGPLAYS = TableSpec(
    name="songplays",
    columns=(
        Column("songplay_id", _LONG),
        Column("start_time", _TIMESTAMP),
        Column("user_id", _STRING),
        Column("level", _STRING),
        Column("song_id", _STRING),
        Column("artist_id", _STRING),
        Column("session_id", _LONG),
        Column("location", _STRING),
        Column("user_agent", _STRING),
        Column("year", _INT),
        Column("month", _INT),
    ),
    key=("songplay_id",),
    partition_by=("year", "month"),
    grain="one NextSong event (duplicates of the same event count once)",
)

USERS = TableSpec(
    name="users",
    columns=(
        Column("user_id", _STRING),
        Column("first_name", _STRING),
        Column("last_name", _STRING),
        Column("gender", _STRING),
        Column("level", _STRING),
    ),
    key=("user_id",),
    partition_by=(),
    grain="one user, with the values of their latest event",
)

SONGS = TableSpec(
    name="songs",
    columns=(
        Column("song_id", _STRING),
        Column("title", _STRING),
        Column("artist_id", _STRING),
        Column("year", _INT),
        Column("duration", _DOUBLE),
    ),
    key=("song_id",),
    partition_by=("year", "artist_id"),
    grain="one catalogue song",
)

ARTISTS = TableSpec(
    name="artists",
    columns=(
        Column("artist_id", _STRING),
        Column("name", _STRING),
        Column("location", _STRING),
        Column("latitude", _DOUBLE),
        Column("longitude", _DOUBLE),
    ),
    key=("artist_id",),
    partition_by=(),
    grain="one artist, with the values of their song that has the smallest song_id",
)

TIME = TableSpec(
    name="time",
    columns=(
        Column("start_time", _TIMESTAMP),
        Column("hour", _INT),
        Column("day", _INT),
        Column("week", _INT),
        Column("month", _INT),
        Column("year", _INT),
        Column("weekday", _INT),
    ),
    key=("start_time",),
    partition_by=("year", "month"),
    grain="one distinct start_time among the songplays (UTC)",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (SONGPLAYS, USERS, SONGS, ARTISTS, TIME)
}

# Foreign keys of the fact table: (fact column, dimension table, dimension column).
SONGPLAYS_FOREIGN_KEYS: tuple[tuple[str, str, str], ...] = (
    ("song_id", "songs", "song_id"),
    ("artist_id", "artists", "artist_id"),
    ("user_id", "users", "user_id"),
    ("start_time", "time", "start_time"),
)
