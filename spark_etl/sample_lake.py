"""A seeded, eventsim-like sample lake: song files and daily event logs shaped like the real ones.

It feeds the demo, the tests and the benchmark. The same seed and parameters give the
same bytes; days are generated in parallel processes, each seeded from (seed, day).
Standard library only.

    python -m spark_etl.sample_lake --output data/sample-lake --events 20000 --quirks
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import string
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from spark_etl.lake import LOG_SOURCE, SONG_SOURCE, day_log_parts

MANIFEST = "_manifest.json"
DAY_MS = 86_400_000
# Page mix of a logged-in session, close to the real logs (NextSong ~85 %).
PAGES = {
    "NextSong": 850,
    "Home": 50,
    "Settings": 8,
    "Help": 6,
    "About": 4,
    "Upgrade": 4,
    "Downgrade": 8,
    "Error": 2,
    "Save Settings": 2,
    "Submit Upgrade": 3,
    "Submit Downgrade": 1,
    "Logout": 12,
}
LOGGED_OUT_PAGES = {"Home": 60, "Login": 30, "About": 5, "Help": 5}
WORDS = (
    "love night heart fire dream rain summer city road light blue gold wild river home "
    "shadow dance ghost stone echo song moon star silver midnight sweet broken"
).split()
ACCENTED = ("Dónde", "Café", "Señor", "Über", "Mañana", "Élan")
FIRST_NAMES = ("Ada", "Lily", "Kevin", "Jacob", "Chloe", "Ryan", "Aleena", "Tegan", "Sara", "Noah")
LAST_NAMES = ("Koch", "Lynch", "Arellano", "Cuevas", "Levine", "Smith", "Garrison", "Kirby")
LOCATIONS = (
    "San Jose-Sunnyvale-Santa Clara, CA",
    "Chicago-Naperville-Elgin, IL-IN-WI",
    "New York-Newark-Jersey City, NY-NJ-PA",
    "Atlanta-Sandy Springs-Roswell, GA",
)
USER_AGENTS = (
    '"Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/36.0.1985.143 Safari/537.36"',
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.9; rv:31.0) Gecko/20100101 Firefox/31.0",
)
QUIRK_KINDS = (
    "malformed",
    "not_object",
    "missing_ts",
    "float_ts",
    "missing_page",
    "blank",
    "duplicate",
)


@dataclass(frozen=True)
class SampleLakeConfig:
    """What to generate.

    Attributes:
        songs: Catalogue songs.
        events: Event lines over all days (before quirks).
        users: Distinct users.
        days: Number of daily log files.
        start_date: The first day.
        match_share: Share of plays whose (song, artist, length) is a catalogue song.
        quirks: Plant bad lines, duplicates, unicode and boundary cases.
        seed: Seed of every random choice.
        artists: Distinct artists; 0 for one per three songs.
        song_folders: Folders the song files are spread over, one to a few files each, as
            in the Million Song Dataset; 0 for the folder each track id names (up to 36³).
    """

    songs: int = 400
    events: int = 20_000
    users: int = 60
    days: int = 30
    start_date: date = date(2018, 11, 1)
    match_share: float = 0.3
    quirks: bool = False
    seed: int = 42
    artists: int = 0
    song_folders: int = 0


@dataclass
class _DayResult:
    lines: int = 0
    valid_events: int = 0
    next_song: int = 0
    matched: int = 0
    users: set[str] = field(default_factory=set)
    quirks: Counter[str] = field(default_factory=Counter)


def generate_sample_lake(
    root: Path, config: SampleLakeConfig, workers: int | None = None
) -> dict[str, Any]:
    """Write the lake under ``root`` and return its manifest (also in ``root/_manifest.json``).

    Args:
        root: Folder that receives ``song_data/``, ``log_data/`` and the manifest.
        config: What to generate.
        workers: Processes generating days in parallel (default: CPU count).
    """
    songs = _catalogue(config)
    song_counts = _write_songs(root / SONG_SOURCE, songs, config)
    days = [config.start_date + timedelta(days=offset) for offset in range(config.days)]
    tasks = [(root, config, songs, day, index) for index, day in enumerate(days)]
    processes = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    # Spawned, not forked: a fork copies every lock of a threaded caller (a Prefect run, a
    # Spark session) in whatever state it is, and a child can wait on one for ever.
    with multiprocessing.get_context("spawn").Pool(processes=processes) as pool:
        results = pool.starmap(_write_day, tasks)
    manifest = _manifest(config, song_counts, results)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _catalogue(config: SampleLakeConfig) -> list[dict[str, Any]]:
    """Catalogue songs; some share title and artist with another song at another duration."""
    rng = random.Random(f"{config.seed}-songs")
    count = config.artists or max(1, config.songs // 3)
    artists = [_artist(rng, index, config.quirks) for index in range(count)]
    songs: list[dict[str, Any]] = []
    for _ in range(config.songs):
        artist = rng.choice(artists)
        if songs and rng.random() < 0.03:  # same title and artist, another duration
            twin = rng.choice(songs)
            artist = {k: twin[k] for k in twin if k.startswith("artist")}
            title = twin["title"]
        else:
            title = _title(rng, config.quirks)
        songs.append(
            {
                "num_songs": 1,
                **artist,
                "song_id": _id(rng, "SO"),
                "title": title,
                "duration": round(rng.uniform(60, 600), 5),
                "year": rng.choice([0, 0, 0, 1969, 1985, 1999, 2004, 2008]),
                "track_id": _id(rng, "TR"),
            }
        )
    return songs


def _artist(rng: random.Random, index: int, quirks: bool) -> dict[str, Any]:
    located = rng.random() < 0.45
    name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
    if quirks and index % 7 == 0:
        name = f"{rng.choice(ACCENTED)} {name}"
    return {
        "artist_id": _id(rng, "AR"),
        "artist_latitude": round(rng.uniform(-40, 60), 5) if located else None,
        "artist_longitude": round(rng.uniform(-120, 30), 5) if located else None,
        "artist_location": rng.choice(LOCATIONS) if rng.random() < 0.6 else "",
        "artist_name": name,
    }


def _title(rng: random.Random, quirks: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    if quirks and rng.random() < 0.05:
        words.insert(0, rng.choice(ACCENTED))
    return " ".join(words).capitalize()


def _id(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))


def _write_songs(
    folder: Path, songs: list[dict[str, Any]], config: SampleLakeConfig
) -> dict[str, int]:
    """One file per song like the real catalogue; with quirks, a few odd files too."""
    for number, song in enumerate(songs):
        record = {k: v for k, v in song.items() if k != "track_id"}
        path = _song_path(folder, song["track_id"], _slot(number, config.song_folders))
        path.write_text(json.dumps(record))
    counts = {"song_files": len(songs), "song_records": len(songs), "song_rejects": 0}
    if config.quirks and len(songs) >= 2:
        rng = random.Random(f"{config.seed}-song-quirks")
        pair = [{k: v for k, v in s.items() if k != "track_id"} for s in songs[:2]]
        # A file holding several records, one per line (the contract allows it).
        _song_path(folder, _id(rng, "TR")).write_text("\n".join(json.dumps(s) for s in pair))
        missing = {**pair[0], "song_id": _id(rng, "SO"), "artist_id": ""}
        _song_path(folder, _id(rng, "TR")).write_text(json.dumps(missing))
        _song_path(folder, _id(rng, "TR")).write_text('{"song_id": "SOBROKEN", "title": ')
        counts = {"song_files": len(songs) + 3, "song_records": len(songs) + 4, "song_rejects": 2}
    return counts


def _slot(number: int, song_folders: int) -> int | None:
    """Which of ``song_folders`` folders the ``number``-th song goes to (round robin)."""
    return number % song_folders if song_folders else None


def _song_path(folder: Path, track_id: str, slot: int | None = None) -> Path:
    """``A/B/C/<track id>.json``: the folder the track id names, or the ``slot``-th folder."""
    letters = track_id[2:5] if slot is None else _folder_letters(slot)
    path = folder.joinpath(*letters, f"{track_id}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _folder_letters(slot: int) -> str:
    """The ``slot``-th three-character folder name (base 36, as track ids are spelled)."""
    digits = string.ascii_uppercase + string.digits
    return "".join(digits[(slot // 36**power) % 36] for power in (2, 1, 0))


def _write_day(
    root: Path, config: SampleLakeConfig, songs: list[dict[str, Any]], day: date, index: int
) -> _DayResult:
    """Generate one day's sessions and write them, sorted by ts, as JSON lines."""
    rng = random.Random(f"{config.seed}-{day.isoformat()}")
    target = config.events // config.days + (1 if index < config.events % config.days else 0)
    result = _DayResult()
    events = _day_events(rng, config, songs, day, index, target, result)
    events.sort(key=lambda event: (event["ts"], event["sessionId"], event["itemInSession"]))
    lines = [json.dumps(event, separators=(",", ":")).replace("/", "\\/") for event in events]
    if config.quirks and index % 5 == 0 and lines:
        lines = _plant_quirks(rng, lines, events, result)
    path = root.joinpath(LOG_SOURCE, *day_log_parts(day))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    result.lines = len(lines)
    return result


def _day_events(
    rng: random.Random,
    config: SampleLakeConfig,
    songs: list[dict[str, Any]],
    day: date,
    index: int,
    target: int,
    result: _DayResult,
) -> list[dict[str, Any]]:
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    events: list[dict[str, Any]] = []
    users: dict[int, dict[str, Any]] = {}
    session_number = 0
    while len(events) < target:
        session_number += 1
        session_id = index * 100_000 + session_number
        number = rng.randrange(max(1, config.users))
        user = users.setdefault(number, _user(number, config.seed, index))
        logged_out = rng.random() < 0.04
        start = day_start + rng.randrange(DAY_MS)
        if config.quirks and session_number == 1:
            start = day_start  # a play at exactly midnight UTC
        events += _session(
            rng,
            songs,
            config.match_share,
            user,
            logged_out,
            session_id,
            start,
            day_start + DAY_MS,
            target - len(events),
            result,
        )
    return events


def _session(
    rng: random.Random,
    songs: list[dict[str, Any]],
    match_share: float,
    user: dict[str, Any],
    logged_out: bool,
    session_id: int,
    start: int,
    day_end: int,
    budget: int,
    result: _DayResult,
) -> list[dict[str, Any]]:
    """One session: pages in eventsim's mix, plays advancing the clock by their length."""
    pages = LOGGED_OUT_PAGES if logged_out else PAGES
    names, weights = list(pages), list(pages.values())
    events = []
    ts = start
    for item in range(min(budget, rng.randint(1, 40))):
        page = rng.choices(names, weights)[0]
        event = _event(user, logged_out, page, session_id, item, ts)
        if page == "NextSong":
            _fill_play(rng, songs, match_share, event, result)
        events.append(event)
        result.valid_events += 1
        if not logged_out:
            result.users.add(user["userId"])
            if page == "Submit Upgrade":
                user["level"] = "paid"
            elif page == "Submit Downgrade":
                user["level"] = "free"
        ts += int((event["length"] or rng.uniform(5, 60)) * 1000)
        if ts >= day_end:
            break
    return events


def _event(
    user: dict[str, Any], logged_out: bool, page: str, session_id: int, item: int, ts: int
) -> dict[str, Any]:
    person = {
        k: None
        for k in ("firstName", "gender", "lastName", "location", "registration", "userAgent")
    }
    if not logged_out:
        person = {k: user[k] for k in person}
    return {
        "artist": None,
        "auth": "Logged Out" if logged_out else "Logged In",
        "firstName": person["firstName"],
        "gender": person["gender"],
        "itemInSession": item,
        "lastName": person["lastName"],
        "length": None,
        "level": user["level"],
        "location": person["location"],
        "method": "PUT" if page == "NextSong" else "GET",
        "page": page,
        "registration": person["registration"],
        "sessionId": session_id,
        "song": None,
        "status": 307 if page in ("Logout", "Submit Upgrade") else 200,
        "ts": ts,
        "userAgent": person["userAgent"],
        "userId": "" if logged_out else user["userId"],
    }


def _fill_play(
    rng: random.Random,
    songs: list[dict[str, Any]],
    match_share: float,
    event: dict[str, Any],
    result: _DayResult,
) -> None:
    result.next_song += 1
    if songs and rng.random() < match_share:
        song = rng.choice(songs)
        event.update(artist=song["artist_name"], song=song["title"], length=song["duration"])
        result.matched += 1
    else:
        event.update(
            artist=f"{rng.choice(WORDS).title()} Unsigned",
            song=_title(rng, False),
            length=round(rng.uniform(30, 600), 5),
        )


def _user(number: int, seed: int, day_index: int) -> dict[str, Any]:
    """A user as of the start of a day: fixed identity, level from their upgrade day.

    Built from (seed, user, day) alone, so a day's events never depend on which other
    days the same process generated.
    """
    rng = random.Random(f"{seed}-user-{number}")
    upgrade_day = rng.randrange(-10, 60)
    return {
        "userId": str(number + 1),
        "firstName": rng.choice(FIRST_NAMES),
        "lastName": rng.choice(LAST_NAMES),
        "gender": rng.choice("MF"),
        "location": rng.choice(LOCATIONS),
        "userAgent": rng.choice(USER_AGENTS),
        "registration": float(1530000000796 + rng.randrange(10**7) * 1000),
        "level": "paid" if day_index >= upgrade_day else "free",
    }


def _plant_quirks(
    rng: random.Random, lines: list[str], events: list[dict[str, Any]], result: _DayResult
) -> list[str]:
    """Bad lines of every kind, a duplicate and a blank line, at random places."""
    sample = dict(events[0])
    planted = {
        "malformed": '{"ts": 1541, "page": "NextSong"',
        "not_object": '["NextSong"]',
        "missing_ts": json.dumps({**sample, "ts": None}),
        "float_ts": json.dumps({**sample, "ts": sample["ts"] + 0.5}),
        "missing_page": json.dumps({**sample, "page": ""}),
        "blank": "",
        "duplicate": lines[len(lines) // 2],
    }
    for kind, line in planted.items():
        lines.insert(rng.randrange(len(lines) + 1), line)
        result.quirks[kind] += 1
    result.valid_events += 1  # the duplicate is a valid event line
    return lines


def _manifest(
    config: SampleLakeConfig, song_counts: dict[str, int], days: list[_DayResult]
) -> dict[str, Any]:
    quirks: Counter[str] = Counter()
    for day in days:
        quirks.update(day.quirks)
    event_rejects = sum(
        quirks[kind]
        for kind in ("malformed", "not_object", "missing_ts", "float_ts", "missing_page")
    )
    users: set[str] = set().union(*(day.users for day in days)) if days else set()
    return {
        "config": {**asdict(config), "start_date": config.start_date.isoformat()},
        "counts": {
            **song_counts,
            "log_files": len(days),
            "event_lines": sum(day.lines for day in days) - quirks["blank"],
            "valid_events": sum(day.valid_events for day in days),
            "event_rejects": event_rejects,
            "next_song": sum(day.next_song for day in days),
            "matched_plays": sum(day.matched for day in days),
            "distinct_users": len(users),
            "quirks": {kind: quirks[kind] for kind in QUIRK_KINDS},
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate a lake into an empty (or --force'd) folder."""
    args = _parser().parse_args(argv)
    root = Path(args.output)
    if root.exists() and any(root.iterdir()):
        if not args.force:
            print(
                f"sample_lake: error: {root} is not empty (use --force to replace it)",
                file=sys.stderr,
            )
            return 2
        for child in (SONG_SOURCE, LOG_SOURCE, MANIFEST):
            target = root / child
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    config = SampleLakeConfig(
        songs=args.songs,
        events=args.events,
        users=args.users,
        days=args.days,
        start_date=args.start_date,
        match_share=args.match_share,
        quirks=args.quirks,
        seed=args.seed,
        artists=args.artists,
        song_folders=args.song_folders,
    )
    counts = generate_sample_lake(root, config, workers=args.workers)["counts"]
    print(
        f"sample_lake: wrote {counts['song_records']} songs and {counts['event_lines']} "
        f"event lines over {counts['log_files']} days to {root}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    defaults = SampleLakeConfig()
    parser = argparse.ArgumentParser(
        prog="python -m spark_etl.sample_lake", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", required=True, help="folder to write the lake into")
    for name, value in (
        ("songs", defaults.songs),
        ("events", defaults.events),
        ("users", defaults.users),
        ("days", defaults.days),
        ("seed", defaults.seed),
        ("artists", defaults.artists),
        ("song-folders", defaults.song_folders),
    ):
        parser.add_argument(f"--{name}", type=_count, default=value, help=f"default {value}")
    parser.add_argument("--start-date", type=date.fromisoformat, default=defaults.start_date)
    parser.add_argument("--match-share", type=_share, default=defaults.match_share)
    parser.add_argument(
        "--quirks", action="store_true", help="plant bad lines, duplicates, unicode"
    )
    parser.add_argument(
        "--workers", type=_count, default=None, help="processes (default: CPU count)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing lake")
    return parser


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def _share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return share


if __name__ == "__main__":
    sys.exit(main())
