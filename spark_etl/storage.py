"""File operations on the output, through Hadoop's FileSystem, counted as S3 requests.

Publication, the journal, the lease and the lake check move, list and delete single
files. Each operation is counted as the S3 requests it would cost (a rename on S3 is a
COPY and a DELETE; a listing is one LIST per 1,000 keys), so a local run tells what the
same run would ask of S3 (``RunSummary.requests``).
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

LIST_PAGE = 1000  # keys per S3 ListObjectsV2 page
# S3A renames into a folder that does not exist (HADOOP-16721); its mkdirs would leave a
# zero-byte `folder/` marker object in the table, and cost a PUT and lookups per file.
_S3A = "org.apache.hadoop.fs.s3a.S3AFileSystem"


@dataclass(frozen=True)
class StoredFile:
    """A file below some folder: its path relative to that folder, and its size."""

    path: str
    size: int
    modified_ms: int = 0

    @property
    def hidden(self) -> bool:
        """True when a part of the path begins with ``_`` or ``.`` (readers skip it)."""
        return any(part.startswith(("_", ".")) for part in self.path.split("/"))


@dataclass
class RequestCounts:
    """S3 requests a run makes or would make, by kind, and what its files weigh."""

    put: int = 0
    copy: int = 0
    list: int = 0
    delete: int = 0
    files_written: int = 0
    bytes_written: int = 0
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The counts, for the run summary."""
        return {
            "put": self.put,
            "copy": self.copy,
            "list": self.list,
            "delete": self.delete,
            "files_written": self.files_written,
            "bytes_written": self.bytes_written,
        }


class Storage:
    """Single-file operations on any Hadoop location (local folder, ``s3://`` on EMR)."""

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self.requests = RequestCounts()
        # Publication moves and deletes files from several threads at once.
        self._counting = threading.Lock()

    def _count(self, kind: str, requests: int = 1) -> None:
        with self._counting:
            setattr(self.requests, kind, getattr(self.requests, kind) + requests)

    def list_files(self, uri: str) -> list[StoredFile]:
        """Every file below ``uri`` (recursively), hidden ones included; none if missing.

        A local folder is walked by the operating system: through the JVM, every file
        costs several Py4J round trips, seconds for a catalogue of 20,000 songs.
        """
        local = local_path(uri)
        if local is not None:
            found = _walk(local)
            self._count("list", 1 + len(found) // LIST_PAGE)
            return found
        fs, path = self._filesystem(uri)
        if not fs.exists(path):
            self._count("list")
            return []
        root = path.toUri().getPath().rstrip("/")
        found = []
        files = fs.listFiles(path, True)
        while files.hasNext():
            status = files.next()
            relative = status.getPath().toUri().getPath()[len(root) + 1 :]
            found.append(StoredFile(relative, status.getLen(), status.getModificationTime()))
        self._count("list", 1 + len(found) // LIST_PAGE)
        return found

    def exists(self, uri: str) -> bool:
        """True when ``uri`` exists."""
        local = local_path(uri)
        if local is not None:
            return os.path.exists(local)
        fs, path = self._filesystem(uri)
        return bool(fs.exists(path))

    def move(self, source: str, target: str) -> None:
        """Move one file into place, creating its folder; S3 does it as COPY + DELETE."""
        self._count("copy")
        self._count("delete")
        local_source, local_target = local_path(source), local_path(target)
        if local_source is not None and local_target is not None:
            os.makedirs(os.path.dirname(local_target), exist_ok=True)
            os.rename(local_source, local_target)  # atomic within one file system
            return
        fs, source_path = self._filesystem(source)
        target_path = self._path(target)
        if fs.getClass().getName() != _S3A:
            fs.mkdirs(target_path.getParent())
        if not fs.rename(source_path, target_path):
            raise OSError(f"could not move {source} to {target}")

    def delete(self, uri: str) -> None:
        """Delete a file or a folder and everything below it, if it exists.

        A local file goes with its Hadoop checksum (``.name.crc``), as Hadoop would.
        """
        local = local_path(uri)
        if local is None:
            fs, path = self._filesystem(uri)
            if fs.exists(path):
                fs.delete(path, True)
                self._count("delete")
            return
        if os.path.isdir(local):
            self._count("delete", 1 + len(_walk(local)) // LIST_PAGE)
            shutil.rmtree(local)
        elif os.path.exists(local):
            self._count("delete")
            os.remove(local)
            folder, name = os.path.split(local)
            checksum = os.path.join(folder, f".{name}.crc")
            if os.path.exists(checksum):
                os.remove(checksum)

    def read_text(self, uri: str) -> str | None:
        """A small text file's content, or None when it does not exist.

        Local files are read directly: Hadoop's local checksums would refuse a state file
        a person repaired by hand, and the job's own files need none.
        """
        local = local_path(uri)
        if local is not None:
            try:
                with open(local, encoding="utf-8") as stream:
                    return stream.read()
            except FileNotFoundError:
                return None
        fs, path = self._filesystem(uri)
        if not fs.exists(path):
            return None
        jvm = self._jvm()
        stream = fs.open(path)
        try:
            return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        """Write a small text file in place (S3: one PUT, which is atomic)."""
        self._count("put")
        local = local_path(uri)
        if local is not None:
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
            with open(local, "w", encoding="utf-8") as stream:
                stream.write(text)
            return
        fs, path = self._filesystem(uri)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def write_text_atomically(self, uri: str, text: str) -> None:
        """Replace a small text file so that a reader sees the old or the new text, whole.

        Locally the text goes to a hidden sibling first and is renamed over the file,
        which the operating system makes atomic. On S3 a single PUT is atomic already.
        """
        local = local_path(uri)
        if local is None:
            self.write_text(uri, text)
            return
        folder, name = os.path.split(local)
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        self.write_text(temporary, text)
        os.replace(temporary, local)

    def _filesystem(self, uri: str) -> tuple[Any, Any]:
        path = self._path(uri)
        return path.getFileSystem(self._spark.sparkContext._jsc.hadoopConfiguration()), path

    def _path(self, uri: str) -> Any:
        return self._jvm().org.apache.hadoop.fs.Path(uri)

    def _jvm(self) -> Any:
        jvm = self._spark.sparkContext._jvm
        assert jvm is not None
        return jvm


def _walk(root: str) -> list[StoredFile]:
    """Every file below a local folder (or the file itself), relative to it.

    ``os.scandir`` with relative paths built as it goes: ``os.walk`` with ``relpath``
    per file took twice as long on a catalogue of 50,000 songs.
    """
    if os.path.isfile(root):
        stat = os.stat(root)
        return [StoredFile("", stat.st_size, stat.st_mtime_ns // 1_000_000)]
    found = []
    folders = [("", root)] if os.path.isdir(root) else []
    while folders:
        relative, folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = relative + entry.name
                if entry.is_dir():
                    if not entry.is_symlink():  # as os.walk: a linked folder is not entered
                        folders.append((path + "/", entry.path))
                else:
                    stat = entry.stat()
                    found.append(StoredFile(path, stat.st_size, stat.st_mtime_ns // 1_000_000))
    return found


def local_path(uri: str) -> str | None:
    """The local path of ``uri``, or None for a remote location."""
    for scheme in ("file://", "file:"):
        if uri.startswith(scheme):
            return uri[len(scheme) :]
    return None if "://" in uri else uri
