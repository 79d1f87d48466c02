"""Explicit schemas of the two inputs: no inference pass over the data.

Every field is first read as a string (``RAW_*``) so that one odd value never turns a
whole record into a parse error; :mod:`spark_etl.transform` then casts each field to its
declared type (``*_FIELD_TYPES``) and decides what is a reject.
"""

from __future__ import annotations

from pyspark.sql import types as T

CORRUPT_RECORD = "_corrupt_record"

SONG_FIELD_TYPES: dict[str, T.DataType] = {
    "num_songs": T.IntegerType(),
    "artist_id": T.StringType(),
    "artist_latitude": T.DoubleType(),
    "artist_longitude": T.DoubleType(),
    "artist_location": T.StringType(),
    "artist_name": T.StringType(),
    "song_id": T.StringType(),
    "title": T.StringType(),
    "duration": T.DoubleType(),
    "year": T.IntegerType(),
}

EVENT_FIELD_TYPES: dict[str, T.DataType] = {
    "artist": T.StringType(),
    "auth": T.StringType(),
    "firstName": T.StringType(),
    "gender": T.StringType(),
    "itemInSession": T.LongType(),
    "lastName": T.StringType(),
    "length": T.DoubleType(),
    "level": T.StringType(),
    "location": T.StringType(),
    "method": T.StringType(),
    "page": T.StringType(),
    "registration": T.DoubleType(),
    "sessionId": T.LongType(),
    "song": T.StringType(),
    "status": T.IntegerType(),
    "ts": T.LongType(),
    "userAgent": T.StringType(),
    "userId": T.StringType(),
}

# Required fields per source, in the order a reject reason names them (contract rule 6).
SONG_REQUIRED = ("song_id", "artist_id")
EVENT_REQUIRED = ("ts", "page")


def raw_schema(field_types: dict[str, T.DataType]) -> T.StructType:
    """All fields as strings, plus the column that receives unparseable lines."""
    fields = [T.StructField(name, T.StringType(), True) for name in field_types]
    return T.StructType([*fields, T.StructField(CORRUPT_RECORD, T.StringType(), True)])
