"""The lease on an S3 output, by S3's conditional writes, through boto3.

The one module of the job that imports more than PySpark and the standard library, and
only when an output is on S3: neither EMRFS (``s3://`` on EMR) nor Hadoop's S3A can ask
for a conditional write, while boto3 comes with the Python of EMR and EMR Serverless.
boto3 finds the credentials the cluster or job run was given, and
``AWS_ENDPOINT_URL_S3`` when a test points it at a local S3.

- create: ``PutObject`` with ``If-None-Match: *``, which fails if the object exists;
- replace: ``PutObject`` with ``If-Match: <ETag read>``, which fails if it changed;
- delete: ``DeleteObject`` with ``If-Match: <ETag held>``.

https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spark_etl.errors import JobError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# What S3 answers when a condition failed (412), or when another conditional write to the
# same key was in flight (409): either way another writer got there first.
_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_ABSENT = frozenset({"NoSuchKey", "404"})


class S3LeaseStore:
    """A lease object on S3; its version is its ETag."""

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        self._client, self._bucket, self._key = client, bucket, key

    @classmethod
    def for_uri(cls, uri: str) -> S3LeaseStore:
        """The store of ``s3://bucket/key`` (``s3a://`` and ``s3n://`` name the same object).

        Raises:
            JobError: boto3 is not installed on this Python.
        """
        try:
            import boto3
        except ImportError as err:
            raise JobError(
                f"the lease on {uri} needs boto3 (S3's conditional writes), which this "
                "Python lacks: install it where the job runs (EMR and EMR Serverless "
                "ship it)"
            ) from err
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        return cls(boto3.client("s3"), bucket, key)

    def read(self) -> tuple[str | None, str | None]:
        """The object's text and ETag, or (None, None) when it does not exist."""
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except self._client.exceptions.ClientError as err:
            if _code(err) in _ABSENT:
                return None, None
            raise
        return response["Body"].read().decode("utf-8"), response["ETag"]

    def create(self, text: str) -> str | None:
        """Write ``text`` if the object is absent; its ETag, or None if it exists."""
        return self._put(text, IfNoneMatch="*")

    def replace(self, text: str, version: str) -> str | None:
        """Write ``text`` if the object's ETag is still ``version``; the new one, or None."""
        return self._put(text, IfMatch=version)

    def delete(self, version: str) -> bool:
        """Delete the object if its ETag is still ``version``; False if it changed."""
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key, IfMatch=version)
        except self._client.exceptions.ClientError as err:
            if _code(err) in _LOST_RACE:
                return False
            if _code(err) in _ABSENT:
                return True
            raise
        return True

    def _put(self, text: str, **condition: Any) -> str | None:
        try:
            response = self._client.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=text.encode("utf-8"),
                ContentType="application/json",
                **condition,
            )
        except self._client.exceptions.ClientError as err:
            if _code(err) in _LOST_RACE | _ABSENT:  # absent: If-Match on a deleted lease
                return None
            raise
        return response["ETag"]


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))
