"""Pure DataFrame → DataFrame builders: parsing with rejects, and one builder per table.

Nothing here reads or writes storage (that is :mod:`spark_etl.io`), so every builder can
be tested on tiny inline frames. No Python UDFs: everything stays in the JVM.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_etl.lake import DAY_FILE_NAME
from spark_etl.schemas import CORRUPT_RECORD, raw_schema
from spark_etl.tables import ARTISTS, SONGPLAYS, SONGS, TIME, USERS, TableSpec

REJECT_REASON = "reject_reason"
LOG_DAY = "log_day"  # the day of the log file an event came from: its file set
SOURCE_FILE = "source_file"
LINE = "line"
# A play matches a song when |duration - length| <= 0.01 s; the epsilon keeps values such
# as 200.01 - 200.00 = 0.010000000000019 on the inclusive side of the rule.
DURATION_TOLERANCE = 0.01 + 1e-9
# The latest event of a user: largest ts, then sessionId, then itemInSession (rule 3).
# The fields that identify an event: a play logged twice is one play (rule 2).
PLAY_IDENTITY = ("userId", "sessionId", "itemInSession", "ts")
USER_STATE_ORDER = ("ts", "session_id", "item_in_session")
USER_STATE_COLUMNS = (*USER_STATE_ORDER, "first_name", "last_name", "gender", "level")

_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD}
_WRAPPED_SCHEMA = T.StructType(
    [T.StructField("v", T.StringType()), T.StructField(CORRUPT_RECORD, T.StringType())]
)


def parse_records(
    lines: DataFrame,
    field_types: dict[str, T.DataType],
    required: tuple[str, ...],
) -> DataFrame:
    """Parse JSON lines into typed columns and say why a line is rejected.

    Args:
        lines: Columns ``line`` (the raw text) and ``source_file``.
        field_types: The source's fields and their types.
        required: Fields that must be present, not null and not ``""``.

    Returns:
        Blank lines dropped; ``source_file``, ``reject_reason`` (null when the record is
        good), ``line`` (kept only on rejects) and every field cast to its type.
    """
    non_blank = lines.filter(~F.col(LINE).rlike(r"^\s*$"))
    parsed = non_blank.select(
        SOURCE_FILE,
        LINE,
        F.from_json(F.col(LINE), raw_schema(field_types), _JSON_OPTIONS).alias("raw"),
    )
    reason = _reject_reason(F.col("raw"), F.col(LINE), required)
    typed = [
        _try_cast(f"raw.`{name}`", data_type).alias(name) for name, data_type in field_types.items()
    ]
    return parsed.select(
        SOURCE_FILE,
        reason.alias(REJECT_REASON),
        F.when(reason.isNotNull(), F.col(LINE)).alias(LINE),
        *typed,
    )


def _reject_reason(raw: Column, line: Column, required: tuple[str, ...]) -> Column:
    """Why a parsed line is a reject, or null: the first rule it breaks."""
    # Spark keeps a line's bytes as read: bytes that are not UTF-8 would reach the JSON
    # parser and come out garbled ("Caf\ufffd" never matches "Café"). Reject them instead.
    not_utf8 = ~F.expr(f"is_valid_utf8({LINE})")
    is_json_value = F.from_json(F.concat(F.lit('{"v":'), line, F.lit("}")), _WRAPPED_SCHEMA)[
        CORRUPT_RECORD
    ].isNull()
    reason = F.when(not_utf8, F.lit("not valid UTF-8"))
    reason = reason.when(
        raw[CORRUPT_RECORD].isNotNull() & is_json_value, F.lit("not a JSON object")
    )
    reason = reason.when(raw[CORRUPT_RECORD].isNotNull(), F.lit("invalid JSON"))
    for name in required:
        value = raw[name]
        reason = reason.when(value.isNull() | (value == ""), F.lit(f"missing {name}"))
        if name == "ts":
            reason = reason.when(~_is_json_integer(name, line), F.lit("ts is not an integer"))
    return reason


def _is_json_integer(name: str, line: Column) -> Column:
    """True when field ``name`` holds a JSON integer that fits a long (not 1.5, "12", 1e3)."""
    unquoted = line.rlike(rf'"{name}"\s*:\s*-?[0-9]')
    fits_long = _try_cast(f"raw.`{name}`", T.LongType()).isNotNull()
    return F.col(f"raw.`{name}`").rlike(r"^-?[0-9]+$") & fits_long & unquoted


def _try_cast(sql_column: str, data_type: T.DataType) -> Column:
    """Cast a raw string column to ``data_type``; a value that does not fit becomes null."""
    if isinstance(data_type, T.StringType):
        return F.expr(sql_column)
    # try_cast through SQL: the same on Spark 3.5 (EMR 7) and Spark 4 (ANSI mode on).
    return F.expr(f"try_cast({sql_column} AS {data_type.simpleString()})")


def good_records(parsed: DataFrame) -> DataFrame:
    """The records that passed parsing, without the bookkeeping columns."""
    return parsed.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, LINE)


def rejected_records(parsed: DataFrame) -> DataFrame:
    """The rejects: ``source_file``, ``line`` and ``reject_reason``."""
    return parsed.filter(F.col(REJECT_REASON).isNotNull()).select(SOURCE_FILE, LINE, REJECT_REASON)


def build_songs(songs: DataFrame) -> DataFrame:
    """``songs``: one row per song_id (the smallest record wins when ids repeat)."""
    chosen = songs.groupBy("song_id").agg(
        F.min(F.struct("title", "artist_id", "year", "duration")).alias("song")
    )
    return _conform(chosen.select("song_id", "song.*"), SONGS)


def build_artists(songs: DataFrame) -> DataFrame:
    """``artists``: one row per artist_id, all values from its smallest song_id (rule 4)."""
    chosen = songs.groupBy("artist_id").agg(
        F.min(
            F.struct(
                "song_id",
                F.col("artist_name").alias("name"),
                F.col("artist_location").alias("location"),
                F.col("artist_latitude").alias("latitude"),
                F.col("artist_longitude").alias("longitude"),
            )
        ).alias("artist")
    )
    return _conform(chosen.select("artist_id", "artist.*"), ARTISTS)


def build_song_lookup(songs: DataFrame) -> DataFrame:
    """Catalogue songs grouped by (title, artist_name), each group sorted by song_id.

    Grouping first keeps the join with the plays an equi-join on a small broadcast side;
    the duration tolerance is then applied inside the group, without a shuffle.
    """
    candidate = F.struct("song_id", "duration", "artist_id")
    return songs.groupBy("title", "artist_name").agg(
        F.array_sort(F.collect_list(candidate)).alias("candidates")
    )


def build_songplays(
    events: DataFrame,
    song_lookup: DataFrame,
    keep: tuple[str, ...] = (),
    deduplicate: bool = True,
) -> DataFrame:
    """``songplays``: every NextSong event once, matched to the catalogue (rule 2).

    ``year`` and ``month`` come from the session's time zone: build it after
    :func:`spark_etl.session.enforce_utc`, as ``run_job`` does.

    Args:
        events: Good event records (typed columns of the event schema).
        song_lookup: The output of :func:`build_song_lookup`.
        keep: Bookkeeping columns of ``events`` to carry after the table's columns
            (:data:`LOG_DAY`); of duplicate events, any copy's values are kept.
        deduplicate: False only when the events are known to hold no play twice
            (:func:`repeated_plays`): removing duplicates shuffles every play whole.
    """
    plays = play_events(events)
    if deduplicate:
        plays = plays.dropDuplicates(list(PLAY_IDENTITY))
    lookup = F.broadcast(song_lookup)
    joined = plays.join(
        lookup,
        (plays["song"] == lookup["title"]) & (plays["artist"] == lookup["artist_name"]),
        "left",
    )
    within_tolerance = F.filter(
        F.col("candidates"),
        lambda song: F.abs(song["duration"] - F.col("length")) <= DURATION_TOLERANCE,
    )
    # try_: no candidate within the tolerance is an empty array, an error under ANSI mode.
    match = F.try_element_at(within_tolerance, F.lit(1))
    start_time = F.expr("timestamp_millis(ts)")
    return _conform(
        joined.select(
            songplay_id(*[F.col(c) for c in PLAY_IDENTITY]),
            start_time.alias("start_time"),
            F.col("userId").alias("user_id"),
            "level",
            match["song_id"].alias("song_id"),
            match["artist_id"].alias("artist_id"),
            F.col("sessionId").alias("session_id"),
            "location",
            F.col("userAgent").alias("user_agent"),
            F.year(start_time).alias("year"),
            F.month(start_time).alias("month"),
            *keep,
        ),
        SONGPLAYS,
        keep,
    )


def play_events(events: DataFrame) -> DataFrame:
    """The NextSong events: the plays, as logged (a play logged twice is here twice)."""
    return events.filter(F.col("page") == "NextSong")


def repeated_plays(events: DataFrame) -> DataFrame:
    """The identities (:data:`PLAY_IDENTITY`) of the plays logged more than once.

    Only the four identity columns are shuffled, not the user agent, location and the
    rest of each play: in a lake that logs no play twice (the usual case) this look is
    all a full run pays for rule 2.
    """
    identity = list(PLAY_IDENTITY)
    counted = play_events(events).groupBy(*identity).agg(F.count(F.lit(1)).alias("copies"))
    return counted.filter(F.col("copies") > 1).select(*identity)


def event_month(ts: Column) -> Column:
    """``year * 100 + month`` of an event's start time (``ts``, ms): its songplays partition."""
    start = F.timestamp_millis(ts)
    return F.year(start) * 100 + F.month(start)


def songplay_keys(events: DataFrame) -> DataFrame:
    """The ``songplay_id`` of every play in ``events`` (repeated when an event is).

    These are :func:`build_songplays`' keys, found without matching plays to the catalogue.
    """
    return play_events(events).select(songplay_id(*[F.col(c) for c in PLAY_IDENTITY]))


def songplay_id(user_id: Column, session_id: Column, item_in_session: Column, ts: Column) -> Column:
    """A 64-bit hash of the event's identity: the same event gets the same id in every run."""
    return F.xxhash64(F.coalesce(user_id, F.lit("")), session_id, item_in_session, ts).alias(
        "songplay_id"
    )


def build_time(songplays: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """``time``: one row per distinct start_time among the songplays (rules 1, 5).

    Hour, day, week and the rest come from the session's time zone, fixed when the frame
    is built: call :func:`spark_etl.session.enforce_utc` first, as ``run_job`` does.
    """
    start = F.col("start_time")
    return _conform(
        songplays.select("start_time", *keep)
        .distinct()
        .select(
            start,
            F.hour(start).alias("hour"),
            F.dayofmonth(start).alias("day"),
            F.weekofyear(start).alias("week"),  # ISO-8601 week
            F.month(start).alias("month"),
            F.year(start).alias("year"),
            # dayofweek is 1 = Sunday … 7 = Saturday; ISO wants 1 = Monday … 7 = Sunday.
            ((F.dayofweek(start) + 5) % 7 + 1).alias("weekday"),
            *keep,
        ),
        TIME,
        keep,
    )


def build_time_sets(songplays: DataFrame) -> DataFrame:
    """``time`` with each start_time in one file set: the earliest log day that plays it.

    A start_time played on two log days must still be one row (its key); it goes with
    the earliest day, so a full run and any order of daily runs agree on the rows.
    """
    earliest = songplays.groupBy("start_time").agg(F.min(LOG_DAY).alias(LOG_DAY))
    return build_time(earliest, keep=(LOG_DAY,))


def log_day_of(source_file: Column) -> Column:
    """The ``YYYY-MM-DD`` of a day's log file name, ``other`` for any other file name."""
    day = F.regexp_extract(source_file, DAY_FILE_NAME.pattern, 1)
    return F.when(day != "", day).otherwise(F.lit("other"))


def build_user_state(events: DataFrame) -> DataFrame:
    """Each user's latest event (rule 3), with the ordering values a later merge needs."""
    latest = F.max(
        F.struct(
            F.col("ts"),
            F.col("sessionId").alias("session_id"),
            F.col("itemInSession").alias("item_in_session"),
            F.col("firstName").alias("first_name"),
            F.col("lastName").alias("last_name"),
            "gender",
            "level",
        )
    )
    known_users = events.filter(F.col("userId").isNotNull() & (F.col("userId") != ""))
    state = known_users.groupBy(F.col("userId").alias("user_id")).agg(latest.alias("latest"))
    return state.select("user_id", "latest.*")


def merge_user_states(*states: DataFrame) -> DataFrame:
    """Combine user states: each user keeps the values of their latest event overall."""
    combined = states[0]
    for state in states[1:]:
        combined = combined.unionByName(state)
    latest = F.max(F.struct(*USER_STATE_COLUMNS)).alias("latest")
    return combined.groupBy("user_id").agg(latest).select("user_id", "latest.*")


def clashing_keys(other_keys: DataFrame, new_rows: DataFrame, key: tuple[str, ...]) -> DataFrame:
    """The keys of ``other_keys`` that ``new_rows`` hold too.

    The new rows (a day) are few and the other keys (the rest of their months) many:
    the new keys are broadcast to pick the few clashing ones, so the month is scanned
    once and never shuffled.
    """
    new_keys = F.broadcast(new_rows.select(*key).distinct())
    return other_keys.select(*key).join(new_keys, list(key), "left_semi")


def without_keys(rows: DataFrame, keys: DataFrame, key: tuple[str, ...]) -> DataFrame:
    """``rows`` whose key is not among ``keys`` (few: broadcast)."""
    return rows.join(F.broadcast(keys), list(key), "left_anti")


def build_users(user_state: DataFrame) -> DataFrame:
    """``users`` from the user state: one row per user."""
    return _conform(user_state, USERS)


def _conform(frame: DataFrame, spec: TableSpec, keep: tuple[str, ...] = ()) -> DataFrame:
    """Select the table's columns in order and type, with empty strings as null (rule 4).

    ``keep`` names bookkeeping columns carried after the table's own.
    """
    columns = []
    for column in spec.columns:
        value = F.col(column.name)
        if isinstance(column.data_type, T.StringType):
            value = F.when(value != "", value)
        columns.append(value.cast(column.data_type).alias(column.name))
    return frame.select(*columns, *keep)
