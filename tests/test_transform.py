"""The pure builders on tiny inline frames, each compared in full with the expected rows."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_etl import transform
from spark_etl.schemas import EVENT_FIELD_TYPES, EVENT_REQUIRED, SONG_FIELD_TYPES, SONG_REQUIRED
from spark_etl.session import enforce_utc
from spark_etl.tables import ARTISTS, SONGPLAYS, SONGS, TIME, USERS
from tests.lakes import event, song, ts_of, utc

LINES_SCHEMA = "line string, source_file string"


def parsed(
    spark: SparkSession,
    records: list[dict[str, Any]],
    field_types: dict[str, T.DataType],
    required: tuple[str, ...],
) -> DataFrame:
    """Records serialised to JSON lines and parsed the way the job parses them."""
    lines = [(json.dumps(record), "file:/lake/x.json") for record in records]
    frame = spark.createDataFrame(lines, LINES_SCHEMA)
    return transform.good_records(transform.parse_records(frame, field_types, required))


def songs_frame(spark: SparkSession, *records: dict[str, Any]) -> DataFrame:
    return parsed(spark, list(records), SONG_FIELD_TYPES, SONG_REQUIRED)


def events_frame(spark: SparkSession, *records: dict[str, Any]) -> DataFrame:
    return parsed(spark, list(records), EVENT_FIELD_TYPES, EVENT_REQUIRED)


# --- parsing and rejects (rule 6) -------------------------------------------------------


def test_parse_records_rejects_each_bad_line_with_its_reason_and_skips_blank_lines(
    spark: SparkSession,
) -> None:
    good = json.dumps(event(userId="1"))
    lines = [
        (good, "file:/logs/a.json"),
        ("{not json", "file:/logs/a.json"),
        ("[1, 2]", "file:/logs/a.json"),
        ('"just a string"', "file:/logs/b.json"),
        ("   ", "file:/logs/b.json"),
        ("", "file:/logs/b.json"),
        (json.dumps(event(ts=None)), "file:/logs/b.json"),
        (json.dumps({k: v for k, v in event().items() if k != "ts"}), "file:/logs/b.json"),
        (json.dumps(event(ts=1.5e12)), "file:/logs/c.json"),
        (json.dumps(event(ts="1541000000000")), "file:/logs/c.json"),
        (json.dumps(event(page="")), "file:/logs/c.json"),
        (json.dumps(event(page=None, ts=None)), "file:/logs/c.json"),
    ]
    frame = spark.createDataFrame(lines, LINES_SCHEMA)

    result = transform.parse_records(frame, EVENT_FIELD_TYPES, EVENT_REQUIRED)

    expected = spark.createDataFrame(
        [
            ("file:/logs/a.json", "{not json", "invalid JSON"),
            ("file:/logs/a.json", "[1, 2]", "not a JSON object"),
            ("file:/logs/b.json", '"just a string"', "not a JSON object"),
            ("file:/logs/b.json", lines[6][0], "missing ts"),
            ("file:/logs/b.json", lines[7][0], "missing ts"),
            ("file:/logs/c.json", lines[8][0], "ts is not an integer"),
            ("file:/logs/c.json", lines[9][0], "ts is not an integer"),
            ("file:/logs/c.json", lines[10][0], "missing page"),
            ("file:/logs/c.json", lines[11][0], "missing ts"),
        ],
        "source_file string, line string, reject_reason string",
    )
    assertDataFrameEqual(transform.rejected_records(result), expected)
    good_rows = transform.good_records(result).select("userId", "ts", "sessionId", "length")
    assertDataFrameEqual(
        good_rows,
        spark.createDataFrame(
            [("1", ts_of("2018-11-05 10:00:00.000"), 1, 200.0)],
            "userId string, ts long, sessionId long, length double",
        ),
    )


def test_parse_records_keeps_a_record_whose_optional_field_has_an_odd_type(
    spark: SparkSession,
) -> None:
    lines = [(json.dumps(song(duration="long", year="unknown", artist_latitude=None)), "f")]
    result = transform.parse_records(
        spark.createDataFrame(lines, LINES_SCHEMA), SONG_FIELD_TYPES, SONG_REQUIRED
    )
    assertDataFrameEqual(
        result.select("reject_reason", "song_id", "duration", "year"),
        spark.createDataFrame(
            [(None, "SO1", None, None)],
            "reject_reason string, song_id string, duration double, year int",
        ),
    )


def test_song_records_missing_song_id_or_artist_id_are_rejected(spark: SparkSession) -> None:
    lines = [
        (json.dumps(song(song_id="")), "f1"),
        (json.dumps(song(artist_id=None)), "f2"),
        (json.dumps(song()), "f3"),
    ]
    result = transform.parse_records(
        spark.createDataFrame(lines, LINES_SCHEMA), SONG_FIELD_TYPES, SONG_REQUIRED
    )
    assertDataFrameEqual(
        transform.rejected_records(result),
        spark.createDataFrame(
            [("f1", lines[0][0], "missing song_id"), ("f2", lines[1][0], "missing artist_id")],
            "source_file string, line string, reject_reason string",
        ),
    )


# --- songs and artists (rule 4) ---------------------------------------------------------


def test_songs_keep_year_zero_and_turn_empty_strings_into_null(spark: SparkSession) -> None:
    songs = songs_frame(
        spark,
        song(song_id="SO1", title="", year=0, duration=100.5),
        song(song_id="SO2", title="Two", artist_id="AR2", year=1999, duration=3.25),
    )
    expected = spark.createDataFrame(
        [("SO1", None, "AR1", 0, 100.5), ("SO2", "Two", "AR2", 1999, 3.25)], SONGS.schema
    )
    assertDataFrameEqual(transform.build_songs(songs), expected)


def test_artists_take_every_value_from_the_smallest_song_id_nulls_included(
    spark: SparkSession,
) -> None:
    songs = songs_frame(
        spark,
        song(
            song_id="SO9",
            artist_id="AR1",
            artist_name="Late Name",
            artist_location="Paris",
            artist_latitude=48.8,
            artist_longitude=2.3,
        ),
        song(
            song_id="SO3",
            artist_id="AR1",
            artist_name="Early Name",
            artist_location="",
            artist_latitude=None,
            artist_longitude=None,
        ),
        song(
            song_id="SO5",
            artist_id="AR2",
            artist_name="Solo",
            artist_location="Oslo",
            artist_latitude=59.9,
            artist_longitude=10.7,
        ),
    )
    expected = spark.createDataFrame(
        [("AR1", "Early Name", None, None, None), ("AR2", "Solo", "Oslo", 59.9, 10.7)],
        ARTISTS.schema,
    )
    assertDataFrameEqual(transform.build_artists(songs), expected)


# --- songplays (rule 2) -----------------------------------------------------------------


def songplays_of(spark: SparkSession, events: DataFrame, songs: DataFrame) -> DataFrame:
    return transform.build_songplays(events, transform.build_song_lookup(songs))


def expected_play(
    ts_text: str, song_id: str | None, artist_id: str | None, **overrides: Any
) -> tuple[Any, ...]:
    """A songplays row as the contract defines it for a default event at ``ts_text``."""
    values = {
        "user_id": "7",
        "level": "free",
        "session_id": 1,
        "item": 0,
        "location": "London",
        "user_agent": "Mozilla",
    }
    values.update(overrides)
    ts = ts_of(ts_text)
    start = utc(ts_text)
    return (
        _songplay_id(values["user_id"] or "", values["session_id"], values["item"], ts),
        start,
        values["user_id"],
        values["level"],
        song_id,
        artist_id,
        values["session_id"],
        values["location"],
        values["user_agent"],
        start.year,
        start.month,
    )


def _songplay_id(user_id: str, session_id: int, item: int, ts: int) -> int:
    """The id computed independently of the builder, through Spark SQL's xxhash64."""
    from pyspark.sql import SparkSession as _Session

    session = _Session.getActiveSession()
    assert session is not None
    row = session.sql(
        f"SELECT xxhash64('{user_id}', CAST({session_id} AS BIGINT), "
        f"CAST({item} AS BIGINT), CAST({ts} AS BIGINT)) AS id"
    ).first()
    assert row is not None
    return int(row["id"])


def test_songplays_match_title_artist_and_duration_within_tolerance_smallest_song_id_wins(
    spark: SparkSession,
) -> None:
    songs = songs_frame(
        spark,
        song(song_id="SO2", artist_id="AR2", title="Hit", artist_name="Band", duration=200.0),
        song(song_id="SO1", artist_id="AR1", title="Hit", artist_name="Band", duration=200.01),
        song(song_id="SO3", artist_id="AR3", title="Hit", artist_name="Band", duration=300.0),
        song(song_id="SO4", artist_id="AR4", title="Other", artist_name="Band", duration=100.0),
    )
    events = events_frame(
        spark,
        # both SO1 (|200.01-200.005| <= 0.01) and SO2 match: the smallest song_id wins
        event(song="Hit", artist="Band", length=200.005, ts=ts_of("2018-11-05 10:00:00.000")),
        # exactly 0.01 away from SO2 only: still a match
        event(song="Hit", artist="Band", length=199.99, ts=ts_of("2018-11-05 10:01:00.000")),
        # 0.011 away from every candidate: kept, without song_id and artist_id
        event(song="Hit", artist="Band", length=300.011, ts=ts_of("2018-11-05 10:02:00.000")),
        # same title, other artist: no match; matching is exact (case matters)
        event(song="hit", artist="Band", length=100.0, ts=ts_of("2018-11-05 10:03:00.000")),
    )
    expected = spark.createDataFrame(
        [
            expected_play("2018-11-05 10:00:00.000", "SO1", "AR1"),
            expected_play("2018-11-05 10:01:00.000", "SO2", "AR2"),
            expected_play("2018-11-05 10:02:00.000", None, None),
            expected_play("2018-11-05 10:03:00.000", None, None),
        ],
        SONGPLAYS.schema,
    )
    assertDataFrameEqual(songplays_of(spark, events, songs), expected)


def test_songplays_count_duplicate_events_once_and_keep_plays_without_user(
    spark: SparkSession,
) -> None:
    songs = songs_frame(spark, song())
    play = event(ts=ts_of("2018-11-05 23:59:59.999"), itemInSession=3)
    anonymous = event(
        userId="",
        ts=ts_of("2018-11-06 00:00:00.000"),
        firstName=None,
        lastName=None,
        location="",
        userAgent=None,
        sessionId=2,
    )
    not_a_play = event(page="Home", ts=ts_of("2018-11-06 00:00:01.000"))
    events = events_frame(spark, play, play, play, anonymous, not_a_play)
    expected = spark.createDataFrame(
        [
            expected_play("2018-11-05 23:59:59.999", "SO1", "AR1", item=3),
            expected_play(
                "2018-11-06 00:00:00.000",
                "SO1",
                "AR1",
                user_id=None,
                session_id=2,
                location=None,
                user_agent=None,
            ),
        ],
        SONGPLAYS.schema,
    )
    assertDataFrameEqual(songplays_of(spark, events, songs), expected)


def test_repeated_plays_name_each_play_logged_twice_once_and_nothing_else(
    spark: SparkSession,
) -> None:
    twice = event(ts=ts_of("2018-11-05 10:00:00.000"), itemInSession=1)
    anonymous_twice = event(userId=None, ts=ts_of("2018-11-05 11:00:00.000"), sessionId=2)
    once = event(ts=ts_of("2018-11-05 12:00:00.000"), itemInSession=2)
    home_twice = event(page="Home", ts=ts_of("2018-11-05 13:00:00.000"))
    events = events_frame(
        spark, twice, twice, twice, anonymous_twice, anonymous_twice, once, home_twice, home_twice
    )
    identity = T.StructType(
        [
            T.StructField("userId", T.StringType()),
            T.StructField("sessionId", T.LongType()),
            T.StructField("itemInSession", T.LongType()),
            T.StructField("ts", T.LongType()),
        ]
    )
    expected = spark.createDataFrame(
        [("7", 1, 1, twice["ts"]), (None, 2, 0, anonymous_twice["ts"])], identity
    )
    assertDataFrameEqual(transform.repeated_plays(events), expected)


# --- time (rules 1 and 5) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "hour", "day", "week", "month", "year", "weekday"),
    [
        ("2018-12-30 23:59:59.999", 23, 30, 52, 12, 2018, 7),  # a Sunday
        ("2018-12-31 00:00:00.000", 0, 31, 1, 12, 2018, 1),  # ISO week 1 of 2019, year 2018
        ("2019-01-01 12:30:00.000", 12, 1, 1, 1, 2019, 2),
        ("2020-12-31 08:00:00.000", 8, 31, 53, 12, 2020, 4),  # a 53-week year
        ("2021-01-03 18:00:00.000", 18, 3, 53, 1, 2021, 7),  # still week 53 of 2020
    ],
)
def test_time_uses_iso_week_and_weekday_with_the_calendar_year(
    spark: SparkSession,
    moment: str,
    hour: int,
    day: int,
    week: int,
    month: int,
    year: int,
    weekday: int,
) -> None:
    plays = spark.createDataFrame([(utc(moment),), (utc(moment),)], "start_time timestamp")
    expected = spark.createDataFrame(
        [(utc(moment), hour, day, week, month, year, weekday)], TIME.schema
    )
    assertDataFrameEqual(transform.build_time(plays), expected)


def test_enforce_utc_gives_utc_fields_from_the_builders_when_the_session_zone_was_elsewhere(
    spark: SparkSession,
) -> None:
    # The builders take hour, day, month, … in the session zone, as Spark's calendar
    # functions do: only the job's enforce_utc makes them UTC, so this goes through it.
    songs = songs_frame(spark, song())
    # 2018-11-30 23:30 UTC is already 1 December in Asia/Tokyo (UTC+9).
    events = events_frame(spark, event(ts=ts_of("2018-11-30 23:30:00.123")))
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
    try:
        enforce_utc(spark)
        plays = songplays_of(spark, events, songs)
        expected_plays = [expected_play("2018-11-30 23:30:00.123", "SO1", "AR1")]
        assertDataFrameEqual(plays, spark.createDataFrame(expected_plays, SONGPLAYS.schema))
        expected_time = [(utc("2018-11-30 23:30:00.123"), 23, 30, 48, 11, 2018, 5)]
        assertDataFrameEqual(
            transform.build_time(plays), spark.createDataFrame(expected_time, TIME.schema)
        )
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


# --- users (rule 3) ---------------------------------------------------------------------


def test_users_take_name_and_level_from_the_latest_event_with_tie_breaks(
    spark: SparkSession,
) -> None:
    at = ts_of("2018-11-05 10:00:00.000")
    events = events_frame(
        spark,
        # user 1: upgrades; the later event wins whatever the page
        event(userId="1", ts=at, level="free", page="Submit Upgrade"),
        event(userId="1", ts=at + 1000, level="paid", page="Home", lastName="Married"),
        # user 2: same ts, the larger sessionId wins
        event(userId="2", ts=at, sessionId=5, level="paid"),
        event(userId="2", ts=at, sessionId=9, level="free", firstName="Bo"),
        # user 3: same ts and session, the larger itemInSession wins
        event(userId="3", ts=at, sessionId=4, itemInSession=2, level="free"),
        event(userId="3", ts=at, sessionId=4, itemInSession=1, level="paid"),
        # logged-out events belong to nobody
        event(userId="", ts=at + 5000, firstName=None, lastName=None, gender=None),
        # a user with an empty gender: null in the table
        event(userId="4", ts=at, gender=""),
    )
    users = transform.build_users(transform.build_user_state(events))
    expected = spark.createDataFrame(
        [
            ("1", "Ada", "Married", "F", "paid"),
            ("2", "Bo", "Lovelace", "F", "free"),
            ("3", "Ada", "Lovelace", "F", "free"),
            ("4", "Ada", "Lovelace", None, "free"),
        ],
        USERS.schema,
    )
    assertDataFrameEqual(users, expected)


def test_merged_user_states_equal_the_state_of_all_events_in_any_order(
    spark: SparkSession,
) -> None:
    at = ts_of("2018-11-05 10:00:00.000")
    day_one = events_frame(
        spark, event(userId="1", ts=at, level="free"), event(userId="2", ts=at, level="paid")
    )
    day_two = events_frame(
        spark,
        event(userId="1", ts=at + 86_400_000, level="paid"),
        event(userId="3", ts=at + 86_400_000, level="free"),
    )
    state_one = transform.build_user_state(day_one)
    state_two = transform.build_user_state(day_two)

    forward = transform.merge_user_states(state_one, state_two)
    backward = transform.merge_user_states(state_two, state_one)
    together = transform.build_user_state(day_one.unionByName(day_two))

    assertDataFrameEqual(forward, together)
    assertDataFrameEqual(backward, together)
    assertDataFrameEqual(
        transform.build_users(forward),
        spark.createDataFrame(
            [
                ("1", "Ada", "Lovelace", "F", "paid"),
                ("2", "Ada", "Lovelace", "F", "paid"),
                ("3", "Ada", "Lovelace", "F", "free"),
            ],
            USERS.schema,
        ),
    )
