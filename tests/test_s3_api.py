"""The bench's S3 server: moto's listing, narrowed to a prefix, answers as moto's own does."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3.models import S3Backend

from bench.s3_api import narrow_moto_listing

BUCKET = "listing-bucket"
KEYS = (
    "lake/song_data/A/A/song-1.json",
    "lake/song_data/A/B/song-2.json",
    "lake/log_data/2018-11-01-events.json",
    "star/songs/year=2001/artist_id=A1/part-0.parquet",
    "star/songs/year=2001/artist_id=A2/part-0.parquet",
    "star/songs/year=2002/artist_id=A1/part-0.parquet",
    "star/songsx/part-0.parquet",  # shares the string "star/songs" but not its folder
    "star/songs/_SUCCESS",
    "star/_staging/run-1/songs/year=2001/artist_id=A1/part-1.parquet",
    "star/songs/deleted/part-9.parquet",
)
# (prefix, delimiter, page size): listings as S3A, the reader and the job ask for them.
LISTINGS = (
    ("star/songs/", "", 1000),
    ("star/songs/", "/", 1000),
    ("star/songs", "/", 1000),
    ("star/songs/year=2001/", "", 1),
    ("star/", "/", 2),
    ("lake/song_data/A/", "", 1000),
    ("star/songs/deleted/", "", 1000),
    ("nothing/", "/", 1000),
    ("", "/", 1000),
    ("", "", 3),
)


def every_listing(s3: Any) -> list[list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Each listing's pages: the keys and the common prefixes of each page, in order."""
    listings = []
    for prefix, delimiter, page_size in LISTINGS:
        paginator = s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=BUCKET,
            Prefix=prefix,
            Delimiter=delimiter,
            PaginationConfig={"PageSize": page_size},
        )
        listings.append(
            [
                (
                    tuple(item["Key"] for item in page.get("Contents", [])),
                    tuple(common["Prefix"] for common in page.get("CommonPrefixes", [])),
                )
                for page in pages
            ]
        )
    return listings


def test_a_narrowed_listing_answers_every_listing_as_moto_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(S3Backend, "list_objects", S3Backend.list_objects)  # restored after
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        # Versioned, so a deleted key stays in moto's store behind a delete marker.
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for key in KEYS:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        s3.put_object(Bucket=BUCKET, Key=KEYS[3], Body=b"a second version")
        s3.delete_object(Bucket=BUCKET, Key="star/songs/deleted/part-9.parquet")

        by_moto = every_listing(s3)
        narrow_moto_listing()
        narrowed = every_listing(s3)

    assert S3Backend.list_objects.__name__ == "list_keys_under_prefix"
    assert narrowed == by_moto
    visible_under_songs = (
        "star/songs/_SUCCESS",
        "star/songs/year=2001/artist_id=A1/part-0.parquet",
        "star/songs/year=2001/artist_id=A2/part-0.parquet",
        "star/songs/year=2002/artist_id=A1/part-0.parquet",
    )
    assert by_moto[0] == [(visible_under_songs, ())]
