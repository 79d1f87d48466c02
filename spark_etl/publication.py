"""Crash-safe publication (contract rule 9): finished files are moved into place, nothing else.

A run computes everything into ``<output>/_staging/<run_id>/``, checks it, and only then
publishes: it writes a journal (``_state/publication.json``) naming every file to move in
and every file to retire, moves the new files in, deletes the retired ones, writes the
new manifest and removes the journal. Readers skip ``_`` and ``.`` names, so staging is
invisible to them. New files go in before old ones leave: during the swap a reader may
briefly see both, never fewer rows. Files move in, and retire, many at a time: on S3 a
move is several round trips, and one file after the other would make the swap last minutes.

A run that dies before the journal leaves the tables as they were. A run that dies after
it leaves a journal; the next run on the output completes the swap before its own work
(every step is idempotent). The manifest (``_state/manifest.json``) lists each table's
files and rows as the last publication left them: a run checks the lake against it
before building on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from spark_etl import failpoints
from spark_etl.args import PARQUET
from spark_etl.errors import DamagedLakeError
from spark_etl.lake import join_uri
from spark_etl.storage import Storage, StoredFile

logger = logging.getLogger(__name__)

STATE_FOLDER = "_state"
STAGING_FOLDER = "_staging"
JOURNAL_FILE = "_state/publication.json"
MANIFEST_FILE = "_state/manifest.json"
# The folders a publication fills: the five tables and the state kept beside them.
USER_STATE = "_state/users"
SONG_LOOKUP = "_state/song_lookup"
WHOLE_SET = "all"  # the one file set of a table that is replaced whole
# Files moved or retired at once. A move on S3 is a COPY and a DELETE with lookups around
# them, each a round trip of tens of milliseconds: one at a time, a full run at lake M
# (about 15,000 files) would keep readers seeing two file sets for many minutes.
PUBLICATION_THREADS = 16
# How a damaged lake is repaired: rebuilt from the raw inputs.
FULL_RUN_REPAIR = (
    "Rebuild it with a full run (the same command without --date, or the songs_etl flow "
    "without run_date), which replaces every table and the state"
)


@dataclass
class FolderEntry:
    """One published folder (a table or a state): its files and its rows per file set.

    Event tables keep one file set per log day (``2018-11-05``), so a daily run replaces
    its own day's files and leaves the month's other files alone; every other folder is
    one set, replaced whole.
    """

    files: dict[str, str] = field(default_factory=dict)  # relative path -> file set
    sizes: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    rows: dict[str, int] = field(default_factory=dict)  # file set -> rows
    # file set -> [first, last] start time (epoch ms) of an event table's set: a daily
    # run reads another set's keys only when its span meets the day's.
    spans: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        """Rows of every file set together."""
        return sum(self.rows.values())

    def files_of(self, file_set: str) -> list[str]:
        """The files of one set."""
        return sorted(path for path, owner in self.files.items() if owner == file_set)


@dataclass
class Manifest:
    """What the last publication left: every published folder, and the catalogue it saw.

    With the Iceberg format the tables are Iceberg's to track: ``folders`` then holds
    only the state kept beside them.
    """

    run_id: str = ""
    folders: dict[str, FolderEntry] = field(default_factory=dict)
    catalogue: dict[str, Any] = field(default_factory=dict)
    table_format: str = PARQUET

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    def table_rows(self) -> dict[str, int]:
        """Rows of each published table (not the state folders), in registry order."""
        from spark_etl.tables import TABLES

        return {name: self.folders[name].total_rows for name in TABLES if name in self.folders}

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read a manifest.

        Raises:
            ValueError: The text is not a manifest.
        """
        try:
            payload = json.loads(text)
            folders = {name: FolderEntry(**entry) for name, entry in payload["folders"].items()}
            return cls(
                payload["run_id"],
                folders,
                payload.get("catalogue", {}),
                payload.get("table_format", PARQUET),  # manifests before Iceberg: parquet
            )
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a sparkify-lake manifest: {err}") from err


@dataclass
class Publication:
    """The journal: the moves and deletions that make a run's results the lake's.

    With the Iceberg format it also lists the table commits to make from the staged
    folders, each ``[table, mode, by_day]`` (:mod:`spark_etl.iceberg`); they come first.
    """

    run_id: str
    moves: list[tuple[str, str]] = field(default_factory=list)  # staged -> published
    retired: list[str] = field(default_factory=list)
    manifest: Manifest = field(default_factory=Manifest)
    summary_json: str = ""
    table_commits: list[list[Any]] = field(default_factory=list)

    def to_json(self) -> str:
        payload = asdict(self)
        return json.dumps(payload)

    @classmethod
    def from_json(cls, text: str) -> Publication:
        payload = json.loads(text)
        manifest = Manifest.from_json(json.dumps(payload["manifest"]))
        moves = [(source, target) for source, target in payload["moves"]]
        return cls(
            payload["run_id"],
            moves,
            payload["retired"],
            manifest,
            payload["summary_json"],
            payload.get("table_commits", []),
        )


def staging_uri(output_uri: str, run_id: str, *parts: str) -> str:
    """A folder of the run's staging area."""
    return join_uri(output_uri, STAGING_FOLDER, run_id, *parts)


def read_manifest(storage: Storage, output_uri: str) -> Manifest | None:
    """The manifest of the last publication, or None when the output has none.

    Raises:
        DamagedLakeError: A manifest exists but cannot be read.
    """
    text = storage.read_text(join_uri(output_uri, MANIFEST_FILE))
    if text is None:
        return None
    try:
        return Manifest.from_json(text)
    except ValueError as err:
        raise DamagedLakeError(
            f"{join_uri(output_uri, MANIFEST_FILE)} is unreadable: {err}"
        ) from err


# Makes a journal's table commits (the Iceberg format): given the publication, it commits
# each table from the run's staged folder. Every commit can be made again after a crash.
TableCommitter = Callable[[Publication], None]


def publish(
    storage: Storage,
    output_uri: str,
    publication: Publication,
    commit_tables: TableCommitter | None = None,
) -> None:
    """Journal the publication, then carry it out (the next run finishes it after a crash)."""
    storage.write_text_atomically(join_uri(output_uri, JOURNAL_FILE), publication.to_json())
    _carry_out(storage, output_uri, publication, commit_tables)


def complete_interrupted_publication(
    storage: Storage, output_uri: str, commit_tables: TableCommitter | None = None
) -> str | None:
    """Finish a publication a dead run left half done; return its run id, or None.

    Raises:
        DamagedLakeError: The journal is unreadable (it is written atomically, so this
            means someone else damaged it), or it lists table commits and no committer
            was given.
    """
    uri = join_uri(output_uri, JOURNAL_FILE)
    text = storage.read_text(uri)
    if text is None:
        return None
    try:
        publication = Publication.from_json(text)
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedLakeError(f"the publication journal {uri} is unreadable: {err}") from err
    logger.warning("completing the publication of run %s, interrupted", publication.run_id)
    _carry_out(storage, output_uri, publication, commit_tables)
    return publication.run_id


def _carry_out(
    storage: Storage,
    output_uri: str,
    publication: Publication,
    commit_tables: TableCommitter | None,
) -> None:
    """Table commits, new files in, retired files out, the manifest and summary, then the
    journal off.

    Every step can run again after a crash: a commit replaces a table with the same rows
    or merges rows it already holds, a move whose source is gone was done, a deletion of
    a missing file is a no-op.
    """
    if publication.table_commits:
        if commit_tables is None:
            raise DamagedLakeError(
                f"{join_uri(output_uri, JOURNAL_FILE)} lists Iceberg commits of run "
                f"{publication.run_id} that only a run of the job can make"
            )
        commit_tables(publication)

    def move_in(move: tuple[str, str]) -> None:
        source, target = move
        if storage.exists(source):
            storage.move(source, target)

    _in_two_halves(move_in, publication.moves, "moving")
    _in_two_halves(storage.delete, publication.retired, "retiring")
    storage.write_text_atomically(
        join_uri(output_uri, MANIFEST_FILE), publication.manifest.to_json()
    )
    if publication.summary_json:
        from spark_etl.summary import last_success_uri  # standard library only

        storage.write_text_atomically(last_success_uri(output_uri), publication.summary_json)
    storage.delete(join_uri(output_uri, JOURNAL_FILE))
    remove_staging(storage, output_uri, publication.run_id)


def _in_two_halves(action: Callable[[Any], None], items: Sequence[Any], point: str) -> None:
    """``action`` on every item, many at a time, with the failpoint ``point`` between the
    halves: a crash test held there finds exactly the first half done."""
    half = len(items) // 2
    with ThreadPoolExecutor(PUBLICATION_THREADS, thread_name_prefix="publication") as pool:
        list(pool.map(action, items[:half]))
        if items:
            failpoints.reach(point)
        list(pool.map(action, items[half:]))


def remove_staging(storage: Storage, output_uri: str, run_id: str) -> None:
    """Delete a run's staging, and the staging folder once no run has any.

    On S3 a folder is only a prefix: S3A keeps an emptied ``_staging/`` alive with a marker
    object when the last run's staging goes, so the folder itself is removed too.
    """
    storage.delete(staging_uri(output_uri, run_id))
    root = join_uri(output_uri, STAGING_FOLDER)
    if not storage.list_files(root):
        storage.delete(root)


def remove_dead_staging(storage: Storage, output_uri: str, run_id: str) -> list[str]:
    """Delete the staging of runs that died before publishing (this run holds the lease)."""
    root = join_uri(output_uri, STAGING_FOLDER)
    runs = sorted({entry.path.split("/", 1)[0] for entry in storage.list_files(root)})
    dead = [run for run in runs if run != run_id]
    for run in dead:
        storage.delete(join_uri(root, run))
    if dead:
        logger.warning("removed the staging of dead runs: %s", ", ".join(dead))
    return dead


def check_lake(
    storage: Storage, output_uri: str, manifest: Manifest | None, folders: Iterable[str]
) -> None:
    """Refuse a lake that is not what the last publication left.

    Each folder is listed and compared with the manifest: a missing file means the table
    lost rows since the last successful run; a visible file the manifest does not name,
    or any hidden leftover (``_temporary``, ``.spark-staging-*``), is what an interrupted
    or foreign writer left.

    Raises:
        DamagedLakeError: What is wrong, and the full run that rebuilds the lake.
    """
    problems = []
    for name in folders:
        entry = manifest.folders.get(name) if manifest else None
        listed = storage.list_files(join_uri(output_uri, name))
        if entry is None:
            if listed:
                problems.append(f"{name} holds files no publication of this job wrote")
            continue
        problems += _folder_problems(name, entry, listed)
    if problems:
        raise DamagedLakeError(
            f"{output_uri} is not as its last successful run "
            f"({manifest.run_id if manifest else 'none'}) left it: {'; '.join(problems)}. "
            + FULL_RUN_REPAIR
        )


def _folder_problems(name: str, entry: FolderEntry, listed: list[StoredFile]) -> list[str]:
    visible = {stored.path: stored.size for stored in listed if not stored.hidden}
    leftovers = sorted(
        stored.path for stored in listed if stored.hidden and not _is_checksum(stored.path)
    )
    missing = sorted(set(entry.files) - set(visible))
    unknown = sorted(set(visible) - set(entry.files))
    changed = sorted(p for p in set(visible) & set(entry.sizes) if visible[p] != entry.sizes[p])
    problems = []
    if entry.files and not visible:
        problems.append(f"{name} is missing")
    elif missing:
        problems.append(
            f"{name} lost {len(missing)} of its {len(entry.files)} files ({missing[0]}, ...)"
        )
    if changed:
        problems.append(f"{name} has {len(changed)} files changed since ({changed[0]}, ...)")
    if unknown:
        problems.append(f"{name} holds {len(unknown)} files no run published ({unknown[0]}, ...)")
    if leftovers:
        problems.append(f"{name} holds leftovers of an interrupted write ({leftovers[0]}, ...)")
    return problems


def _is_checksum(path: str) -> bool:
    """Hadoop's local checksum file (``.name.crc``), which moves and goes with its file."""
    name = path.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".crc")
