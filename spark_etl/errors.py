"""Errors the job reports as a one-line reason and a non-zero exit code."""

from __future__ import annotations


class JobError(Exception):
    """A failure the job explains in one line (bad input, too many rejects, failed check)."""


class InputNotFoundError(JobError):
    """An input location is missing or holds no file to read."""


class RejectThresholdExceededError(JobError):
    """Rejected records exceed the allowed share of the input."""


class PostLoadCheckError(JobError):
    """A table failed a post-load check (empty, duplicate or null key, dangling foreign key)."""
