"""S3 operations of the EMR path (Prefect-free): URI checks, uploads, logs and summaries."""

from __future__ import annotations

import gzip
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from spark_etl.lake import S3_URI, is_valid_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


class InvalidS3UriError(ValueError):
    """A string is not an ``s3://bucket/key`` URI with a valid bucket name."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key (or key prefix)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The location as ``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Location:
        """The location ``parts`` below this one."""
        key = "/".join([self.key.rstrip("/"), *parts]) if self.key else "/".join(parts)
        return S3Location(self.bucket, key)


def parse_s3_uri(uri: str) -> S3Location:
    """Split ``s3://bucket/key``.

    Raises:
        InvalidS3UriError: Not an s3:// URI, or an invalid bucket name (``s3a://`` included:
            EMR reads ``s3://`` through EMRFS).
    """
    match = S3_URI.match(uri or "")
    if match is None or not is_valid_s3_uri(uri):
        raise InvalidS3UriError(
            f"{uri!r} is not an s3://bucket/prefix URI with a valid bucket name"
        )
    return S3Location(match["bucket"], (match["key"] or "").rstrip("/"))


def prefix_has_objects(s3: S3Client, location: S3Location) -> bool:
    """True when at least one object lies below the prefix (``list_objects_v2``)."""
    prefix = f"{location.key}/" if location.key else ""
    response = s3.list_objects_v2(Bucket=location.bucket, Prefix=prefix, MaxKeys=1)
    return response.get("KeyCount", 0) > 0


def object_exists(s3: S3Client, location: S3Location) -> bool:
    """True when the object exists (``head_object``)."""
    try:
        s3.head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def check_writable(s3: S3Client, location: S3Location) -> None:
    """Prove the output location is writable: put and delete a marker object.

    Raises:
        botocore.exceptions.ClientError: AccessDenied or a missing bucket.
    """
    marker = location.child(f"_preflight-{uuid.uuid4().hex}")
    s3.put_object(Bucket=marker.bucket, Key=marker.key, Body=b"")
    s3.delete_object(Bucket=marker.bucket, Key=marker.key)


def upload_unless_present(s3: S3Client, location: S3Location, body: bytes) -> bool:
    """Upload ``body`` unless the (content-addressed) key already exists.

    Returns:
        True when the object was uploaded, False when it was already there.
    """
    if object_exists(s3, location):
        return False
    s3.put_object(Bucket=location.bucket, Key=location.key, Body=body)
    return True


def read_text(s3: S3Client, location: S3Location) -> str:
    """The object's body as UTF-8 text (``get_object``)."""
    return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read().decode("utf-8")


def read_gzip_tail(s3: S3Client, location: S3Location, lines: int) -> str | None:
    """The last ``lines`` lines of a gzipped text object, or None when it does not exist."""
    if not object_exists(s3, location):
        return None
    body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    text = gzip.decompress(body).decode("utf-8", errors="replace")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
