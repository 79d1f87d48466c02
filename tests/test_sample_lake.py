"""The sample-lake generator: deterministic, shaped like the real lake, counts it can prove."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from spark_etl.sample_lake import SampleLakeConfig, generate_sample_lake, main

SMALL = SampleLakeConfig(songs=60, events=3_000, users=12, days=4, seed=3)
EVENT_FIELDS = {
    "artist",
    "auth",
    "firstName",
    "gender",
    "itemInSession",
    "lastName",
    "length",
    "level",
    "location",
    "method",
    "page",
    "registration",
    "sessionId",
    "song",
    "status",
    "ts",
    "userAgent",
    "userId",
}


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def recount(root: Path) -> Counter[str]:
    """Count the lake's lines with the standard library, independently of the generator.

    A line that repeats an earlier line of its file is a planted duplicate; NextSong
    events are also counted by identity (user, session, item, ts), so a duplicated
    play is told apart from a second play.
    """
    counts: Counter[str] = Counter()
    for path in (root / "log_data").rglob("*.json"):
        seen_lines: set[str] = set()
        play_identities: set[tuple[object, ...]] = set()
        for line in path.read_text().split("\n"):
            if not line.strip():
                counts["blank"] += 1
                continue
            counts["event_lines"] += 1
            if line in seen_lines:
                counts["duplicate_lines"] += 1
            seen_lines.add(line)
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                counts["rejects"] += 1
                continue
            if not isinstance(record, dict) or record.get("page") in (None, ""):
                counts["rejects"] += 1
            elif not isinstance(record.get("ts"), int):
                counts["rejects"] += 1
            elif record["page"] == "NextSong":
                counts["next_song_lines"] += 1
                play_identities.add(
                    (record["userId"], record["sessionId"], record["itemInSession"], record["ts"])
                )
        counts["next_song_events"] += len(play_identities)
    return counts


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate_sample_lake(tmp_path / "a", SMALL, workers=2)
    generate_sample_lake(tmp_path / "b", SMALL, workers=1)
    generate_sample_lake(tmp_path / "c", SampleLakeConfig(**{**SMALL.__dict__, "seed": 4}))
    assert read_tree(tmp_path / "a") == read_tree(tmp_path / "b")
    assert read_tree(tmp_path / "a") != read_tree(tmp_path / "c")


def test_layout_fields_and_days_match_the_real_lake(tmp_path: Path) -> None:
    manifest = generate_sample_lake(tmp_path, SMALL)
    song_files = list((tmp_path / "song_data").rglob("*.json"))
    assert len(song_files) == manifest["counts"]["song_files"] == 60
    for path in song_files:
        assert path.parts[-4:-1] == tuple(path.stem[2:5])  # song_data/A/B/C/TRABC….json
        record = json.loads(path.read_text())
        assert set(record) == {
            "num_songs",
            "artist_id",
            "artist_latitude",
            "artist_longitude",
            "artist_location",
            "artist_name",
            "song_id",
            "title",
            "duration",
            "year",
        }
    logs = sorted((tmp_path / "log_data").rglob("*.json"))
    assert [p.name for p in logs] == [f"2018-11-0{d}-events.json" for d in range(1, 5)]
    for path in logs:
        day = date.fromisoformat(path.name[:10])
        events = [json.loads(line) for line in path.read_text().split("\n")]
        assert all(set(e) == EVENT_FIELDS for e in events)
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
        assert {datetime.fromtimestamp(e["ts"] / 1000, UTC).date() for e in events} == {day}
        for e in events:
            assert (e["userId"] == "") == (e["auth"] == "Logged Out")
            if e["userId"] == "":
                assert e["firstName"] is None and e["registration"] is None


def test_levels_change_only_after_submit_upgrade_or_downgrade(tmp_path: Path) -> None:
    generate_sample_lake(tmp_path, SampleLakeConfig(**{**SMALL.__dict__, "events": 20_000}))
    changes = 0
    for path in (tmp_path / "log_data").rglob("*.json"):
        sessions: dict[int, list[dict[str, object]]] = {}
        for line in path.read_text().split("\n"):
            event = json.loads(line)
            sessions.setdefault(event["sessionId"], []).append(event)
        for events in sessions.values():
            events.sort(key=lambda e: e["itemInSession"])
            for before, after in itertools.pairwise(events):
                if before["level"] != after["level"]:
                    changes += 1
                    expected = "Submit Upgrade" if after["level"] == "paid" else "Submit Downgrade"
                    assert before["page"] == expected
    assert changes > 0


def test_manifest_counts_equal_an_independent_recount(tmp_path: Path) -> None:
    manifest = generate_sample_lake(
        tmp_path, SampleLakeConfig(**{**SMALL.__dict__, "quirks": True})
    )
    counts = manifest["counts"]
    found = recount(tmp_path)
    assert found["event_lines"] == counts["event_lines"]
    assert found["rejects"] == counts["event_rejects"] == 5 * counts["quirks"]["malformed"]
    assert found["blank"] == counts["quirks"]["blank"] == 1  # quirks go in every fifth day
    assert found["event_lines"] - found["rejects"] == counts["valid_events"]
    assert found["duplicate_lines"] == counts["quirks"]["duplicate"] == 1
    # Plays are counted once: the manifest counts events, not lines.
    assert found["next_song_events"] == counts["next_song"]
    # Seed 3 plants its duplicate on a NextSong line (the generator is deterministic).
    assert found["next_song_lines"] == counts["next_song"] + 1
    assert 0.2 < counts["matched_plays"] / counts["next_song"] < 0.4  # match_share 0.3


def test_no_quirks_unless_asked(tmp_path: Path) -> None:
    counts = generate_sample_lake(tmp_path, SMALL)["counts"]
    assert set(counts["quirks"].values()) == {0}
    assert recount(tmp_path)["rejects"] == 0 and counts["song_rejects"] == 0


def test_cli_refuses_a_non_empty_folder_and_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--output", str(tmp_path), "--songs", "5", "--events", "50", "--days", "2"]
    assert main(args) == 0
    assert main(args) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    capsys.readouterr()  # leave out what the runs above printed
    refusals = {
        ("--events", "-1"): "argument --events: -1 is negative",
        ("--match-share", "1.5"): "argument --match-share: 1.5 is not between 0 and 1",
        ("--start-date", "2018-02-30"): (
            "argument --start-date: invalid fromisoformat value: '2018-02-30'"
        ),
    }
    for bad, reason in refusals.items():
        with pytest.raises(SystemExit) as refused:
            main(["--output", str(tmp_path / "x"), *bad])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: python -m spark_etl.sample_lake ")
        assert err.splitlines()[-1] == f"python -m spark_etl.sample_lake: error: {reason}"
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_play_heavy_lake_spreads_songs_over_the_folders_and_artists_asked_for(
    tmp_path: Path,
) -> None:
    config = SampleLakeConfig(
        songs=40, events=2_000, users=10, days=2, match_share=0.94, artists=4, song_folders=25
    )

    manifest = generate_sample_lake(tmp_path, config, workers=1)

    files = sorted((tmp_path / "song_data").rglob("*.json"))
    per_folder = Counter(path.parent for path in files)
    assert (len(files), len(per_folder), set(per_folder.values())) == (40, 25, {1, 2})
    artists = {json.loads(path.read_text())["artist_id"] for path in files}
    assert len(artists) == 4
    counts = manifest["counts"]
    # Plays are ~85 % of events; 94 % of them match: about 80 % of events are songplays.
    assert 0.75 < counts["matched_plays"] / counts["event_lines"] < 0.85
