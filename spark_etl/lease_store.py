"""Where a lease lies, changed only by compare-and-swap on the version last read.

Two stores, one contract: ``create`` writes only if the file is absent, ``replace`` and
``delete`` act only if the file is still the version given; each answers None or False
when another writer got there first, and never overwrites it.

- :class:`LocalLeaseStore`: a local file, every operation under an exclusive ``flock`` of
  a sibling lock file, so read-compare-write is one step for every process on the host.
- :class:`spark_etl.s3_lease.S3LeaseStore`: an S3 object, by S3's conditional writes
  (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace and delete). EMRFS and
  S3A offer no conditional write, so the job calls S3 itself there, through boto3.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from spark_etl.storage import local_path

S3_SCHEMES = ("s3://", "s3a://", "s3n://")


class LeaseStore(Protocol):
    """One lease file, changed only by compare-and-swap."""

    def read(self) -> tuple[str | None, str | None]:
        """The file's text and version, or (None, None) when it does not exist."""

    def create(self, text: str) -> str | None:
        """Write ``text`` if the file is absent; its version, or None if it exists."""

    def replace(self, text: str, version: str) -> str | None:
        """Write ``text`` if the file is still ``version``; the new version, or None."""

    def delete(self, version: str) -> bool:
        """Delete the file if it is still ``version``; False if it changed."""


class LocalLeaseStore:
    """A lease file on local disk; its version is a digest of its text."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> tuple[str | None, str | None]:
        """The file's text and version, or (None, None) when it does not exist."""
        try:
            with open(self.path, encoding="utf-8") as stream:
                text = stream.read()
        except FileNotFoundError:
            return None, None
        return text, _digest(text)

    def create(self, text: str) -> str | None:
        """Write ``text`` if the file is absent; its version, or None if it exists."""
        with self._locked():
            if os.path.exists(self.path):
                return None
            return self._write(text)

    def replace(self, text: str, version: str) -> str | None:
        """Write ``text`` if the file is still ``version``; the new version, or None."""
        with self._locked():
            if self.read()[1] != version:
                return None
            return self._write(text)

    def delete(self, version: str) -> bool:
        """Delete the file if it is still ``version``; False if it changed."""
        with self._locked():
            if self.read()[1] != version:
                return False
            os.remove(self.path)
            return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock file for one read-compare-write.

        The lock file stays: removing it would let a process that opened the old one and
        a process that creates a new one both think they hold the lock.
        """
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        descriptor = os.open(self._sibling("lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing drops the lock

    def _write(self, text: str) -> str:
        """Replace the file whole (a reader sees the old text or the new one)."""
        temporary = self._sibling(f"{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, self.path)
        return _digest(text)

    def _sibling(self, suffix: str) -> str:
        """A hidden file beside the lease (``.lease.json.<suffix>``), which readers skip."""
        folder, name = os.path.split(self.path)
        return os.path.join(folder, f".{name}.{suffix}")


def open_lease_store(uri: str) -> LeaseStore:
    """The store for a lease at ``uri``.

    Args:
        uri: The lease file: a local path, ``file:``, or ``s3://``/``s3a://``/``s3n://``.

    Raises:
        ValueError: No store for the location's scheme.
    """
    local = local_path(uri)
    if local is not None:
        return LocalLeaseStore(local)
    if uri.startswith(S3_SCHEMES):
        from spark_etl.s3_lease import S3LeaseStore

        return S3LeaseStore.for_uri(uri)
    raise ValueError(f"no lease store for {uri}: outputs are local folders or s3:// locations")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
