"""What keeps a small daily run small: its JVM's settings, and the other days it never reads.

- A JVM the job starts itself for a day's log file compiles with C1 only and maps the
  class archive when there is one; any other JVM is left as it is.
- A daily run reads another day's keys only when that day's span of start times meets
  its own: compared here frame for frame with what every set holds.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_etl import io, jvm_archive
from spark_etl.args import JobArgs
from spark_etl.checks import KeyProfile, RecordCounts, count_records, key_profile
from spark_etl.main import daily_input_bytes
from spark_etl.publication import FolderEntry, Manifest
from spark_etl.session import (
    QUICK_JIT_OPTION,
    QUICK_JVM_MAX_INPUT_BYTES,
    THROUGHPUT_GC_OPTION,
    own_jvm_options,
)
from spark_etl.summary import RejectCount
from spark_etl.tables import SONGPLAYS

JAVA_OPTIONS = "spark.driver.extraJavaOptions"
DAY = "2018-11-05"
DAY_SPAN = (1_541_376_000_000, 1_541_462_399_999)  # 2018-11-05, UTC, in ms


@pytest.fixture
def own_jvm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process would start the JVM itself; the archive cache is an empty folder."""
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_SUBMIT_ARGS", jvm_archive.WRITE_ENV):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(jvm_archive.CACHE_ENV, str(cache))
    return cache


def test_a_small_run_s_jvm_stops_at_c1_and_maps_the_archive_once_there_is_one(
    own_jvm: Path,
) -> None:
    assert own_jvm_options(30_000_000) == {
        JAVA_OPTIONS: f"{THROUGHPUT_GC_OPTION} {QUICK_JIT_OPTION}"
    }

    archive = jvm_archive.archive_path()
    assert archive.parent == own_jvm
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"an archive")
    assert own_jvm_options(30_000_000) == {
        JAVA_OPTIONS: f"{THROUGHPUT_GC_OPTION} {QUICK_JIT_OPTION} -XX:SharedArchiveFile={archive}"
    }


def test_the_run_that_builds_the_archive_writes_it_as_its_jvm_exits(
    own_jvm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(jvm_archive.WRITE_ENV, "/tmp/archive.partial")
    assert own_jvm_options(1_000) == {
        JAVA_OPTIONS: f"{THROUGHPUT_GC_OPTION} {QUICK_JIT_OPTION}"
        " -XX:ArchiveClassesAtExit=/tmp/archive.partial"
    }


@pytest.mark.parametrize("input_bytes", [None, QUICK_JVM_MAX_INPUT_BYTES + 1])
def test_a_large_run_s_jvm_keeps_the_optimizing_jit_and_collects_for_throughput(
    own_jvm: Path, input_bytes: int | None
) -> None:
    # None: a full run, or input of unknown size; past the limit C2 pays back.
    assert own_jvm_options(input_bytes) == {JAVA_OPTIONS: THROUGHPUT_GC_OPTION}


@pytest.mark.parametrize(
    ("input_bytes", "environment"),
    [
        (None, {"PYSPARK_GATEWAY_PORT": "40123"}),  # spark-submit started the JVM
        (1_000, {"PYSPARK_GATEWAY_PORT": "40123"}),
        (1_000, {"PYSPARK_SUBMIT_ARGS": "--driver-java-options -Xmx2g pyspark-shell"}),
    ],
)
def test_any_other_jvm_is_left_as_it_is(
    own_jvm: Path,
    monkeypatch: pytest.MonkeyPatch,
    input_bytes: int | None,
    environment: dict[str, str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert own_jvm_options(input_bytes) == {}


def test_an_archive_path_with_a_space_is_not_handed_to_the_jvm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(jvm_archive.WRITE_ENV, raising=False)
    monkeypatch.setenv(jvm_archive.CACHE_ENV, str(tmp_path / "with space"))
    jvm_archive.archive_path().parent.mkdir(parents=True)
    jvm_archive.archive_path().write_bytes(b"an archive")
    assert jvm_archive.archive_options() == []


def test_two_installations_of_one_pyspark_version_keep_archives_of_their_own(
    own_jvm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A JVM ignores an archive written with another class path: an environment that
    # found another's archive under its name would start without one (a JVM warning).
    names = set()
    for environment in ("/envs/a", "/envs/b"):
        init = f"{environment}/lib/python3.11/site-packages/pyspark/__init__.py"
        monkeypatch.setattr(pyspark, "__file__", init)
        names.add(jvm_archive.archive_path().name)
    assert len(names) == 2
    assert all(name.startswith(f"spark-{pyspark.__version__}-") for name in names)


def test_the_size_of_a_daily_run_s_input_is_its_local_day_file(tmp_path: Path) -> None:
    day_file = tmp_path / "log_data" / "2018" / "11" / f"{DAY}-events.json"
    day_file.parent.mkdir(parents=True)
    day_file.write_text('{"ts": 1}\n')

    def daily(logs: str) -> JobArgs:
        return JobArgs("songs", logs, "out", date(2018, 11, 5))

    assert daily_input_bytes(daily(str(tmp_path / "log_data"))) == 10
    assert daily_input_bytes(daily(str(tmp_path))) is None  # no such file: the run says so
    assert daily_input_bytes(daily("s3://bucket/log_data")) is None
    assert daily_input_bytes(JobArgs("songs", str(tmp_path / "log_data"), "out")) is None


def test_a_failed_archive_build_is_reported_and_never_fails_the_make_target(
    own_jvm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_build() -> Path:
        raise RuntimeError("the job failed while building the archive")

    monkeypatch.setattr(jvm_archive, "build_archive", failing_build)
    assert jvm_archive.main() == 0
    assert capsys.readouterr().out == (
        "no JVM class archive (small local runs start a few seconds slower): "
        "the job failed while building the archive\n"
    )


def write_set(spark: SparkSession, output: Path, file_set: str, keys: list[int]) -> list[str]:
    """Publish one file set of songplays' keys as the job names them; return its paths."""
    folder = output / SONGPLAYS.name / "year=2018" / "month=11"
    staging = output / "_staging" / file_set
    spark.createDataFrame([(k,) for k in keys], "songplay_id long").coalesce(1).write.parquet(
        str(staging)
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in sorted(staging.glob("part-*.parquet")):
        target = folder / f"{file_set}.{part.name}"
        part.rename(target)
        paths.append(str(target.relative_to(output / SONGPLAYS.name)))
    return paths


def lake_of_sets(
    spark: SparkSession, output: Path, sets: dict[str, tuple[list[int], list[int] | None]]
) -> Manifest:
    """A songplays folder of the given sets (keys, span) and the manifest that records it."""
    entry = FolderEntry()
    for file_set, (keys, span) in sets.items():
        for path in write_set(spark, output, file_set, keys):
            entry.files[path], entry.sizes[path] = file_set, 1
        entry.rows[file_set] = len(keys)
        if span is not None:
            entry.spans[file_set] = span
    return Manifest("run", {SONGPLAYS.name: entry})


SETS = {
    "2018-11-01": ([1, 2], [1_541_030_400_000, 1_541_116_799_999]),  # its own day only
    "2018-11-04": ([3, 4], [1_541_289_600_000, 1_541_376_000_500]),  # into the day: may clash
    "2018-11-06": ([5], None),  # written before spans were recorded: may clash
    DAY: ([6], list(DAY_SPAN)),  # the day itself: replaced, never read
}


@pytest.mark.parametrize("one_by_one", [32, 0], ids=["files one by one", "month folders"])
def test_a_daily_run_reads_only_the_other_sets_whose_span_meets_the_day_s(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_by_one: int
) -> None:
    monkeypatch.setattr(io, "MAX_FILES_READ_ONE_BY_ONE", one_by_one)
    output = tmp_path / "out"
    manifest = lake_of_sets(spark, output, SETS)

    keys = io.read_other_sets_keys(
        spark, SONGPLAYS, str(output), manifest, [(2018, 11)], DAY, DAY_SPAN
    )

    expected = spark.createDataFrame([(3,), (4,), (5,)], "songplay_id long")
    assert keys is not None
    if one_by_one:  # the month folder is read whole otherwise: every other set
        assertDataFrameEqual(keys, expected)
    else:
        assertDataFrameEqual(
            keys, spark.createDataFrame([(k,) for k in (1, 2, 3, 4, 5)], "songplay_id long")
        )


def test_a_daily_run_reads_no_other_set_when_none_may_share_a_key(
    spark: SparkSession, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    manifest = lake_of_sets(spark, output, {k: SETS[k] for k in ("2018-11-01", DAY)})
    other_month = [(2018, 12)]

    for months in ([(2018, 11)], other_month):
        assert (
            io.read_other_sets_keys(spark, SONGPLAYS, str(output), manifest, months, DAY, DAY_SPAN)
            is None
        )


def test_counting_a_source_finds_its_groups_and_span_in_the_same_job(
    spark: SparkSession,
) -> None:
    parsed = spark.createDataFrame(
        [(None, 201811, 5), (None, 201811, 9), (None, 201812, 7), ("invalid JSON", None, 1)],
        "reject_reason string, month int, ts long",
    )

    counted = count_records(parsed, "log_data", parsed["month"], parsed["ts"])

    assert counted == RecordCounts(
        4, [RejectCount("log_data", "invalid JSON", 1)], {201811, 201812}, (5, 9)
    )
    assert count_records(
        parsed.filter("reject_reason is not null"), "log_data", None, parsed["ts"]
    ) == RecordCounts(1, [RejectCount("log_data", "invalid JSON", 1)], set(), None)


def test_a_day_s_key_profile_counts_its_clashes_and_takes_its_span(spark: SparkSession) -> None:
    day = spark.createDataFrame(
        [
            (1, "2018-11-05 00:00:00"),
            (2, "2018-11-05 10:00:00"),
            (2, "2018-11-05 10:00:00"),
            (None, "2018-11-05 23:59:59"),
        ],
        "songplay_id long, start_time string",
    ).selectExpr("songplay_id", "cast(start_time as timestamp) as start_time")
    clashing = spark.createDataFrame([(2,), (7,)], "songplay_id long")

    profile = key_profile(day, ("songplay_id",), clashing, with_span=True)

    assert profile == KeyProfile(4, 1, 2, 2, [1_541_376_000_000, 1_541_462_399_000])
