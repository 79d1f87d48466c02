"""What a daily run refuses to build on, what it refuses to read, and what readers see.

All in the test session: a reader polling during a daily run, a damaged lake refused
with its repair, bad days failing loudly, errors recorded in the run summary.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import duckdb
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from spark_etl import transform
from spark_etl.args import argv_problem
from spark_etl.errors import DamagedLakeError, EmptyInputError, RejectThresholdExceededError
from spark_etl.job import run_job
from spark_etl.publication import FULL_RUN_REPAIR, JOURNAL_FILE, Publication, publish
from spark_etl.storage import Storage
from spark_etl.summary import RunSummary, last_success_uri, summary_uri
from spark_etl.tables import TABLES
from tests.lakes import (
    DAYS,
    catalogue,
    day_events,
    event,
    job_args,
    read_tables,
    song,
    ts_of,
    write_lake,
)


@pytest.fixture
def writable_lake(lake: Path, tmp_path: Path) -> Path:
    """A copy of the shared lake, for a test that adds or damages its files."""
    return Path(shutil.copytree(lake, tmp_path / "lake"))


def visible_rows(table_folder: Path) -> int | None:
    """Rows of a table as Athena reads it: every file whose path has no ``_`` or ``.`` name.

    None when a file vanished between the listing and the read (a query that fails and
    is retried, never one that answers with fewer rows).
    """
    files = [
        os.path.join(folder, name)
        for folder, subfolders, names in os.walk(table_folder)
        if not any(
            part.startswith(("_", ".")) for part in Path(folder).relative_to(table_folder).parts
        )
        for name in names
        if not name.startswith(("_", "."))
    ]
    if not files:
        return 0
    try:
        row = duckdb.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()
    except duckdb.IOException:
        return None
    return int(row[0]) if row else 0


@pytest.mark.integration  # several job runs
def test_a_reader_polling_during_a_daily_run_never_sees_fewer_rows(
    spark: SparkSession, writable_lake: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    for day in DAYS[:3]:
        run_job(spark, job_args(writable_lake, output, run_date=day, run_id=f"d-{day}"))
    before = {name: visible_rows(output / name) for name in TABLES}
    # A new song file: the catalogue changed, so this run republishes every table.
    new_song = song(song_id="SO3", artist_id="AR3", title="Three", artist_name="C")
    (writable_lake / "song_data" / "A" / "B" / "TRAB9999.json").write_text(json.dumps(new_song))
    seen: dict[str, list[int]] = {name: [] for name in TABLES}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for name in TABLES:
                rows = visible_rows(output / name)
                if rows is not None:
                    seen[name].append(rows)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        summary = run_job(spark, job_args(writable_lake, output, run_date=DAYS[3], run_id="d-last"))
    finally:
        done.set()
        reader.join()

    assert summary.catalogue == "rebuilt"
    assert all(len(counts) > 20 for counts in seen.values()), {n: len(c) for n, c in seen.items()}
    shrunk = {name: min(counts) for name, counts in seen.items() if min(counts) < before[name]}
    assert shrunk == {}, f"fewer rows than the {before} before the run"
    assert {name: visible_rows(output / name) for name in TABLES} == summary.tables


@pytest.mark.integration  # several job runs
def test_a_daily_run_with_an_unchanged_catalogue_leaves_songs_and_artists_alone(
    spark: SparkSession, lake: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    run_job(spark, job_args(lake, output, run_date=DAYS[0], run_id="first"))
    songs_files = sorted((output / "songs").rglob("*"))
    stamps = [path.stat().st_mtime_ns for path in songs_files]

    summary = run_job(spark, job_args(lake, output, run_date=DAYS[1], run_id="second"))

    assert summary.catalogue == "unchanged"
    assert sorted((output / "songs").rglob("*")) == songs_files
    assert [path.stat().st_mtime_ns for path in songs_files] == stamps
    assert summary.input_records == {"song_data": 2, "log_data": 6}
    # Re-merging a day already merged changes no row.
    tables_before = {name: frame.collect() for name, frame in read_tables(spark, output).items()}
    run_job(spark, job_args(lake, output, run_date=DAYS[1], run_id="again"))
    for name, frame in read_tables(spark, output).items():
        assertDataFrameEqual(frame, spark.createDataFrame(tables_before[name], frame.schema))


@pytest.fixture(scope="module")
def merged_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lake and the output of its first three days merged one by one (built once)."""
    root = tmp_path_factory.mktemp("merged")
    lake = write_lake(root / "lake", {day: day_events(day) for day in DAYS}, catalogue())
    for day in DAYS[:3]:
        run_job(spark, job_args(lake, root / "out", run_date=day, run_id=f"d-{day}"))
    return lake, root / "out"


@pytest.mark.integration  # several job runs
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("lost songplays file", r"songplays lost 1 of its 3 files \(year=2018/month=12/2018-12-01"),
        ("leftover", r"songs holds leftovers of an interrupted write \(_temporary/0/part-0"),
        ("foreign file", r"users holds 1 files no run published \(part-stray.parquet"),
        ("state", r"the users' state holds 1 users but the users table 2"),
    ],
)
def test_a_damaged_lake_is_refused_with_its_repair(
    spark: SparkSession,
    merged_lake: tuple[Path, Path],
    tmp_path: Path,
    damage: str,
    message: str,
) -> None:
    lake, merged = merged_lake
    output = tmp_path / "out"
    shutil.copytree(merged, output)
    _damage(output, damage)

    with pytest.raises(DamagedLakeError, match=message) as refused:
        run_job(spark, job_args(lake, output, run_date=DAYS[3], run_id="refused"))
    assert str(refused.value).endswith(FULL_RUN_REPAIR)
    if damage == "leftover":  # the repair the message names works
        run_job(spark, job_args(lake, output, run_id="repair"))
        run_job(spark, job_args(lake, output, run_date=DAYS[3], run_id="after-repair"))
        assert not (output / "songs" / "_temporary").exists()


def _damage(output: Path, damage: str) -> None:
    if damage == "lost songplays file":
        next(
            (output / "songplays" / "year=2018" / "month=12").glob("2018-12-01.*.parquet")
        ).unlink()
    elif damage == "leftover":
        leftover = output / "songs" / "_temporary" / "0" / "part-0.parquet"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"half a file")
    elif damage == "foreign file":
        (output / "users" / "part-stray.parquet").write_bytes(b"PAR1")
    else:
        manifest_path = output / "_state" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["folders"]["_state/users"]["rows"] = {"all": 1}
        manifest_path.write_text(json.dumps(manifest))


def test_bad_days_fail_loudly(spark: SparkSession, writable_lake: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    day_file = writable_lake / "log_data" / "2018" / "11" / "2018-11-30-events.json"
    many_songs = [json.dumps(song(song_id=f"SO{n}", title=f"T{n}")) for n in range(3, 40)]
    for index, line in enumerate(many_songs):
        (writable_lake / "song_data" / "A" / "B" / f"TRX{index}.json").write_text(line)

    # 5 garbage lines: 5 of 44 records overall (11%) but 5 of 5 of the day's lines.
    day_file.write_text("\n".join(["garbage"] * 5))
    with pytest.raises(RejectThresholdExceededError, match=r"^5 of 5 log lines of 2018-11-30"):
        run_job(spark, job_args(writable_lake, output, run_date=DAYS[0], max_reject_ratio=0.2))

    day_file.write_text("\n\n")
    with pytest.raises(EmptyInputError, match=r"the log file for 2018-11-30 .* holds no record"):
        run_job(spark, job_args(writable_lake, output, run_date=DAYS[0], run_id="empty"))
    summary = RunSummary.from_json(Path(summary_uri(str(output), "empty")).read_text())
    assert summary.error is not None and summary.error.startswith("the log file for 2018-11-30")


def test_lines_that_are_not_utf8_are_rejected_and_cafe_still_matches(
    spark: SparkSession, tmp_path: Path
) -> None:
    cafe = song(song_id="SO1", artist_id="AR1", title="Café", artist_name="Zoë", duration=100.0)
    play = event(
        userId="1", ts=ts_of("2018-11-30 10:00:00.000"), song="Café", artist="Zoë", length=100.0
    )
    lake = write_lake(tmp_path / "lake", {DAYS[0]: [json.dumps(play)]}, [json.dumps(cafe)])
    day_file = lake / "log_data" / "2018" / "11" / "2018-11-30-events.json"
    latin1 = json.dumps(play, ensure_ascii=False).replace('"sessionId": 1', '"sessionId": 2')
    day_file.write_bytes(day_file.read_bytes() + b"\n" + latin1.encode("latin-1"))
    output = tmp_path / "out"

    summary = run_job(spark, job_args(lake, output, max_reject_ratio=0.5))

    assert [(r.source, r.reason, r.count) for r in summary.rejects] == [
        ("log_data", "not valid UTF-8", 1)
    ]
    plays = read_tables(spark, output)["songplays"].select("song_id", "artist_id").collect()
    assert [tuple(row) for row in plays] == [("SO1", "AR1")]


def test_an_output_overlapping_an_input_is_refused_before_any_work(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    cases = {
        str(lake): "output {out} overlaps input {songs}",  # the output holds both inputs
        str(lake / "song_data" / "tables"): "output {out} overlaps input {songs}",
        str(lake / "log_data") + "/": "output {out} overlaps input {logs}",
    }
    songs, logs = str(lake / "song_data"), str(lake / "log_data")
    for output, message in cases.items():
        argv = ["--songs", songs, "--logs", logs, "--output", output]
        expected = message.format(out=output.rstrip("/"), songs=songs, logs=logs)
        assert (argv_problem(argv) or "").startswith(expected), output
    assert (
        argv_problem(["--songs", songs, "--logs", logs, "--output", str(tmp_path / "lake-out")])
        is None
    )


def test_an_unexpected_error_is_recorded_with_its_one_line_reason(
    spark: SparkSession, lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(events: object) -> None:
        raise MemoryError("Java heap space\n\tat somewhere deep")

    monkeypatch.setattr(transform, "build_user_state", out_of_memory)
    output = tmp_path / "out"
    with pytest.raises(MemoryError):
        run_job(spark, job_args(lake, output, run_id="oom"))
    summary = RunSummary.from_json(Path(summary_uri(str(output), "oom")).read_text())
    assert (summary.status, summary.error) == ("failed", "unexpected MemoryError: Java heap space")
    assert not (output / "_staging" / "oom").exists()


def test_an_unreadable_last_success_counts_as_no_previous_run(
    spark: SparkSession, lake: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    run_job(spark, job_args(lake, output, run_date=DAYS[0], run_id="first"))
    last = Path(last_success_uri(str(output)))
    last.write_text(last.read_text()[:40])  # cut short, as a crash of an older version left it

    summary = run_job(spark, job_args(lake, output, run_date=DAYS[1], run_id="second"))

    assert summary.previous_tables == {}
    assert RunSummary.from_json(last.read_text()).run_id == "second"


@pytest.mark.integration  # several job runs
def test_an_event_copied_into_two_day_files_counts_once_in_any_order(
    spark: SparkSession, tmp_path: Path
) -> None:
    # The last play of 2018-11-30 (its ts is that day) was logged again in the next file.
    copied = day_events(DAYS[0])[-1]
    events = {DAYS[0]: day_events(DAYS[0]), DAYS[1]: [*day_events(DAYS[1]), copied]}
    lake = write_lake(tmp_path / "lake", events, catalogue())
    full = tmp_path / "full"
    run_job(spark, job_args(lake, full))
    daily = tmp_path / "daily"
    for day in (DAYS[1], DAYS[0], DAYS[1]):  # the copy's later file first, then again
        run_job(spark, job_args(lake, daily, run_date=day, run_id=f"d-{day}"))

    for name, table in read_tables(spark, daily).items():
        assertDataFrameEqual(table, read_tables(spark, full)[name])
    assert read_tables(spark, daily)["songplays"].count() == 6


@pytest.mark.integration  # several job runs
def test_a_publication_cut_short_by_an_error_is_completed_by_the_next_run(
    spark: SparkSession,
    lake: Path,
    full_output: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error half way through the moves (a dropped connection to S3, say) keeps the
    journal and the staged files still to move: the next run completes the swap before
    its own work, and no row is lost."""
    output = tmp_path / "star"
    run_job(spark, job_args(lake, output, run_date=DAYS[0], run_id="first"))
    move = Storage.move
    moved: list[str] = []

    def fails_half_way(self: Storage, source: str, target: str) -> None:
        if len(moved) == 5:
            raise OSError("the connection dropped")
        moved.append(source)
        move(self, source, target)

    monkeypatch.setattr(Storage, "move", fails_half_way)
    with pytest.raises(OSError):
        run_job(spark, job_args(lake, output, run_id="cut-short"))
    monkeypatch.undo()

    run_job(spark, job_args(lake, output, run_date=DAYS[1], run_id="next"))

    for name, table in read_tables(spark, output).items():
        assertDataFrameEqual(table, read_tables(spark, full_output)[name])


class WatchedStorage(Storage):
    """Local storage that records what the publication does, and when.

    Each move lasts as long as an S3 round trip, so moves made one after the other
    cannot overlap; ``most_at_once`` tells how many ever did.
    """

    def __init__(self, spark: SparkSession) -> None:
        super().__init__(spark)
        self.watching = threading.Lock()
        self.moving = 0
        self.most_at_once = 0
        self.done: list[tuple[str, str]] = []  # ("moved", target) or ("deleted", uri)

    def move(self, source: str, target: str) -> None:
        with self.watching:
            self.moving += 1
            self.most_at_once = max(self.most_at_once, self.moving)
        time.sleep(0.02)
        super().move(source, target)
        with self.watching:
            self.moving -= 1
            self.done.append(("moved", target))

    def delete(self, uri: str) -> None:
        super().delete(uri)
        with self.watching:
            self.done.append(("deleted", uri))


def test_a_publication_moves_many_files_at_once_and_retires_none_before_all_are_in(
    spark: SparkSession, tmp_path: Path
) -> None:
    output = tmp_path / "star"
    staged = [output / "_staging" / "run" / "songs" / f"part-{n}.parquet" for n in range(40)]
    old = [output / "songs" / f"old-{n}.parquet" for n in range(20)]
    for path in staged + old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    new = [output / "songs" / path.name for path in staged]
    storage = WatchedStorage(spark)

    publish(
        storage,
        str(output),
        Publication(
            "run",
            [(str(s), str(t)) for s, t in zip(staged, new, strict=True)],
            [str(p) for p in old],
        ),
    )

    assert sorted(path.name for path in (output / "songs").iterdir()) == sorted(
        path.name for path in new
    )
    assert [path.read_text() for path in new] == [path.name for path in staged]
    assert not (output / "_staging").exists() and not (output / JOURNAL_FILE).exists()
    assert storage.most_at_once > 1
    last_move = max(i for i, (what, _) in enumerate(storage.done) if what == "moved")
    retirements = [i for i, (_, uri) in enumerate(storage.done) if uri in map(str, old)]
    assert len(retirements) == len(old) and min(retirements) > last_move
    assert storage.requests.copy == len(new)  # counted from many threads, none lost
