"""The song catalogue of a run: parsed and rebuilt, or the one the last run kept.

songs and artists reflect the catalogue as it is at the run (rule 7). Parsing tens of
thousands of small song files is most of a daily run's cost, and the catalogue rarely
changes, so the listing of its files (path, size, modification time) is fingerprinted.
When a daily run finds the fingerprint the last publication recorded, it leaves songs
and artists as they are and matches plays against ``_state/song_lookup``, the good
catalogue records that run kept. Any change to the listing rebuilds everything.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from spark_etl import io, transform
from spark_etl.args import JobArgs
from spark_etl.checks import count_records
from spark_etl.lake import SONG_SOURCE, join_uri
from spark_etl.publication import SONG_LOOKUP, Manifest
from spark_etl.schemas import SONG_FIELD_TYPES, SONG_REQUIRED
from spark_etl.staging import StagedFolder, stage_whole
from spark_etl.storage import Storage
from spark_etl.summary import RejectCount
from spark_etl.tables import ARTISTS, SONGS

# What the matching needs of a catalogue record (transform.build_song_lookup).
LOOKUP_COLUMNS = ("title", "artist_name", "song_id", "duration", "artist_id")
# Given to the reader of the kept lookup: inferring it costs a Spark job of its own.
LOOKUP_SCHEMA = T.StructType(
    [T.StructField(name, SONG_FIELD_TYPES[name]) for name in LOOKUP_COLUMNS]
)
REBUILT, UNCHANGED = "rebuilt", "unchanged"


@dataclass
class Catalogue:
    """The catalogue of one run.

    Attributes:
        how: ``rebuilt`` (parsed, songs and artists staged) or ``unchanged`` (kept).
        records: Song records read (as the last run counted them when unchanged).
        rejects: Song rejects by reason.
        lookup: The good records' matching columns.
        state: What the manifest records of it (fingerprint, counts); empty when kept.
        built: songs and artists as built, when rebuilt.
    """

    how: str
    records: int
    rejects: list[RejectCount]
    lookup: DataFrame
    state: dict[str, Any] = field(default_factory=dict)
    built: dict[str, DataFrame] = field(default_factory=dict)
    _staged_lookup: DataFrame | None = None

    def song_lookup(self) -> DataFrame:
        """Songs grouped for the matching of plays."""
        return transform.build_song_lookup(self._matching_records())

    def _matching_records(self) -> DataFrame:
        """The lookup as staged once rebuilt (read back from its file), else as kept."""
        return self.lookup if self._staged_lookup is None else self._staged_lookup

    def tables(self) -> dict[str, DataFrame]:
        """songs and artists as built (none when unchanged: they are not republished)."""
        return dict(self.built)

    def dimension_keys(self) -> dict[str, DataFrame]:
        """The song and artist ids the published songs and artists hold."""
        lookup = self._matching_records()
        return {
            SONGS.name: lookup.select("song_id").distinct(),
            ARTISTS.name: lookup.select("artist_id").distinct(),
        }

    def stage(self, spark: SparkSession, args: JobArgs) -> list[StagedFolder]:
        """Stage songs, artists and the lookup when rebuilt; nothing when unchanged."""
        if self.how == UNCHANGED:
            return []
        staged_lookup = stage_whole(spark, self.lookup, SONG_LOOKUP, args, files=1)
        self._staged_lookup = staged_lookup.frame
        songs, artists = self.built[SONGS.name], self.built[ARTISTS.name]
        return [
            stage_whole(
                spark, songs, SONGS.name, args, partition_by=SONGS.partition_by, read_back=False
            ),
            stage_whole(spark, artists, ARTISTS.name, args, files=1, read_back=False),
            staged_lookup,
        ]

    def unpersist(self) -> None:
        for frame in (self.lookup, *self.built.values()):
            frame.unpersist()


def read_catalogue(
    spark: SparkSession, storage: Storage, args: JobArgs, manifest: Manifest | None
) -> Catalogue:
    """Keep the last run's catalogue when its listing is unchanged, else parse it.

    Args:
        manifest: The last publication's manifest; None to always parse (a full run).
    """
    fingerprint = fingerprint_listing(storage, args.songs_uri)
    kept = manifest.catalogue if manifest else {}
    if (
        kept.get("fingerprint") == fingerprint
        and kept.get("songs_uri") == args.songs_uri
        and manifest is not None
        and SONG_LOOKUP in manifest.folders
    ):
        lookup = spark.read.schema(LOOKUP_SCHEMA).parquet(join_uri(args.output_uri, SONG_LOOKUP))
        rejects = [RejectCount(**reject) for reject in kept["rejects"]]
        return Catalogue(UNCHANGED, int(kept["records"]), rejects, lookup)
    return _parse_catalogue(spark, args, fingerprint)


def _parse_catalogue(spark: SparkSession, args: JobArgs, fingerprint: str) -> Catalogue:
    parsed = transform.parse_records(
        io.read_lines(spark, args.songs_uri), SONG_FIELD_TYPES, SONG_REQUIRED
    ).persist(StorageLevel.MEMORY_AND_DISK)
    counted = count_records(parsed, SONG_SOURCE)
    records, rejects = counted.records, counted.rejects
    io.write_rejects(transform.rejected_records(parsed), args.output_uri, SONG_SOURCE, None)
    songs = transform.good_records(parsed)
    built = {
        SONGS.name: transform.build_songs(songs).persist(StorageLevel.MEMORY_AND_DISK),
        ARTISTS.name: transform.build_artists(songs).persist(StorageLevel.MEMORY_AND_DISK),
    }
    state = {
        "fingerprint": fingerprint,
        "songs_uri": args.songs_uri,
        "records": records,
        "rejects": [asdict(reject) for reject in rejects],
    }
    lookup = songs.select(*LOOKUP_COLUMNS)
    return Catalogue(REBUILT, records, rejects, lookup, state, built)


def fingerprint_listing(storage: Storage, songs_uri: str) -> str:
    """A digest of the catalogue's files as listed: path, size, modification time.

    Hidden files are left out, as Spark's reader leaves them out.
    """
    listing = sorted(
        f"{stored.path}\t{stored.size}\t{stored.modified_ms}"
        for stored in storage.list_files(songs_uri)
        if (stored.path.endswith(".json") and not stored.hidden) or stored.path == ""
    )
    return hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest()
