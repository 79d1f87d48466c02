"""Follow log objects that grow while a job runs (Prefect-free).

EMR (and EMR Serverless) copy a running job's stdout and stderr to the log URI every few
minutes, each time rewriting the whole object (gzipped when the key ends in ``.gz``) with
everything so far. :class:`GrowingLogs` reads them again on each poll and hands back only
the complete lines that appeared since the previous poll, so the flow logs each line once.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.ops.names import LOG_FILES
from tasks.ops.s3 import S3Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# Not there yet (EMR copies the first logs minutes after the start), or not changed since
# the last read (the answer to IfNoneMatch).
_NOTHING_NEW_CODES = frozenset({"NoSuchKey", "404", "NotFound", "304", "NotModified"})


def driver_log_sources(folder: S3Location) -> dict[str, S3Location]:
    """A driver's log objects in ``folder`` by label (``stdout``, ``stderr``), to follow."""
    return {name.removesuffix(".gz"): folder.child(name) for name in LOG_FILES}


class _FollowedLog:
    """One log object: how much of it was handed out, and the version last read."""

    def __init__(self, label: str, location: S3Location) -> None:
        self.label, self.location = label, location
        self.handed_out = 0  # bytes of the decompressed text already turned into lines
        self.unread = b""  # the decompressed text after them
        self.etag: str | None = None

    def refresh(self, s3: S3Client) -> None:
        """Read the object again when it changed; keep what was read when it cannot be."""
        request: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.location.key}
        if self.etag:
            request["IfNoneMatch"] = self.etag  # an unchanged object is not downloaded again
        try:
            response = s3.get_object(**request)
            body = response["Body"].read()
            text = gzip.decompress(body) if self.location.key.endswith(".gz") else body
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _NOTHING_NEW_CODES:
                self._warn(err)
            return
        except (BotoCoreError, OSError, EOFError, zlib.error) as err:
            # A lost connection or a damaged object: the next poll reads it again.
            self._warn(err)
            return
        if len(text) < self.handed_out:
            # Rewritten shorter (a new attempt's log): start over rather than lose lines.
            logger.warning("%s shrank: reading it from the start", self.location.uri)
            self.handed_out = 0
        self.etag = response.get("ETag")
        self.unread = text[self.handed_out :]

    def take_lines(self, final: bool) -> list[str]:
        """The unread complete lines (and, when ``final``, an unterminated last one)."""
        end = len(self.unread) if final else self.unread.rfind(b"\n") + 1
        taken, self.unread = self.unread[:end], self.unread[end:]
        self.handed_out += end
        # Lines end at b"\n", so a multi-byte character is never cut in two here.
        text = taken.decode("utf-8", errors="replace")
        return [f"{self.label}: {line}" for line in text.splitlines()]

    def _warn(self, err: BaseException) -> None:
        # A log is a help, never a reason to fail the run: warn and try again next time.
        logger.warning("Could not read %s (%s); trying again later", self.location.uri, err)


class GrowingLogs:
    """The new lines of a job's log objects, poll after poll.

    Args:
        s3: An S3 client.
        sources: Each label (``"stdout"``, ``"stderr"``) and the S3 object its log grows in.
    """

    def __init__(self, s3: S3Client, sources: Mapping[str, S3Location]) -> None:
        self._s3 = s3
        self._logs = [_FollowedLog(label, location) for label, location in sources.items()]

    def poll(self, final: bool = False) -> list[str]:
        """The lines that appeared since the previous poll, as ``"<label>: <line>"``.

        Only complete lines are handed out: a line still being written waits for the next
        poll, so it is never logged in two halves. A missing object, an unchanged one or a
        failed read gives no lines (never an error).

        Args:
            final: The job has ended: hand out an unterminated last line too.
        """
        lines: list[str] = []
        for log in self._logs:
            log.refresh(self._s3)
            lines += log.take_lines(final)
        return lines


class LogFollower:
    """Hands the new lines of :class:`GrowingLogs` to ``emit``, at most every ``interval``.

    A runner's wait calls :meth:`tick` at each poll of the job's state and
    :meth:`finish` once the job has ended, so its logs show in the run's log as they grow.

    Args:
        logs: The job's log objects.
        emit: Called with each new line (the run logger's ``info``).
        interval: Seconds between two reads of the logs.
    """

    def __init__(self, logs: GrowingLogs, emit: Callable[[str], None], interval: float) -> None:
        self._logs, self._emit, self._interval = logs, emit, interval
        self._last = time.monotonic()  # nothing to read at the start: wait one interval

    def tick(self) -> None:
        """Read the logs when the interval has passed since the last read."""
        if time.monotonic() - self._last >= self._interval:
            self._hand_out(final=False)

    def finish(self) -> None:
        """Read the logs one last time, an unterminated last line included."""
        self._hand_out(final=True)

    def _hand_out(self, final: bool) -> None:
        self._last = time.monotonic()
        for line in self._logs.poll(final=final):
            self._emit(line)
