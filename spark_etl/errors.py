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


class OutputLockedError(JobError):
    """Another live run holds the output's lease."""


class DamagedLakeError(JobError):
    """The output is not what the last successful run left: a run refuses to build on it."""


class TableFormatError(JobError):
    """The output's tables are in another format than the run was asked to write."""


class CommitConflictError(JobError):
    """Another writer committed to an Iceberg table while the run wrote it."""


class EmptyInputError(JobError):
    """An input file holds no record (a daily run's day file, say)."""


def describe_error(error: BaseException) -> str:
    """One line that says why a run failed, whatever failed.

    A :class:`JobError` is its own message. Anything else (out of memory, a Py4J error,
    an interrupt) is named by its type and the first line that says something: a Java
    error's own message rather than Py4J's "An error occurred while calling".
    """
    if isinstance(error, JobError):
        return str(error)
    java = getattr(error, "java_exception", None)
    text = str(java) if java is not None else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith("An error occurred")), "")
    return f"unexpected {type(error).__name__}: {first or 'no message'}"[:1000]
