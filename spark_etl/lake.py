"""The lake's layout, named once: where a day's log file lies, what an S3 URI looks like.

Standard library only: the job reads and writes by these names, and the orchestration
side (preflight, local checks, the sample-lake generator) imports them from here.
"""

from __future__ import annotations

import re
from datetime import date

SONG_SOURCE = "song_data"
LOG_SOURCE = "log_data"

# S3's bucket naming rules: 3-63 characters, lower case letters, digits, dots and hyphens.
S3_BUCKET_PATTERN = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
S3_URI = re.compile(rf"^s3://(?P<bucket>{S3_BUCKET_PATTERN})(?:/(?P<key>.*))?$")

# A day's log file sits at log_data/YYYY/MM/YYYY-MM-DD-events.json.
DAY_FILE_SUFFIX = "-events.json"
DAY_FILE_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})" + re.escape(DAY_FILE_SUFFIX) + "$")


def day_log_parts(day: date) -> tuple[str, str, str]:
    """The folders and file name of one day's log below ``log_data``: ``(YYYY, MM, file)``."""
    return f"{day:%Y}", f"{day:%m}", f"{day:%Y-%m-%d}{DAY_FILE_SUFFIX}"


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` without doubled slashes (local paths and s3:// URIs alike)."""
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def day_log_uri(logs_uri: str, day: date) -> str:
    """The log file of one day: ``log_data/YYYY/MM/YYYY-MM-DD-events.json``."""
    return join_uri(logs_uri, *day_log_parts(day))


def is_valid_s3_uri(uri: str) -> bool:
    """True for ``s3://bucket[/key]`` with a bucket name S3 accepts."""
    match = S3_URI.match(uri)
    return match is not None and ".." not in match["bucket"]
