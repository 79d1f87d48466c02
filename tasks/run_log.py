"""The ops' own log lines, in the Prefect run's log where people read it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger

OPS_LOGGER = "tasks.ops"


class _ToRunLog(logging.Handler):
    """Passes records of one thread on to a Prefect run logger."""

    def __init__(self, run_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._run_logger, self._thread = run_logger, threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:  # tasks of other runs log for themselves
            self._run_logger.log(record.levelno, "%s", record.getMessage())


@contextmanager
def ops_logs_in_run_log() -> Iterator[None]:
    """While a task runs, what its ops log (warnings above all) reaches its run log.

    The ops are Prefect-free and log to ``logging.getLogger(__name__)``; without this
    their warnings (a step log that never arrived, a cancel that failed) reach no one.
    """
    ops_logger = logging.getLogger(OPS_LOGGER)
    handler = _ToRunLog(get_run_logger())
    previous_level = ops_logger.level
    ops_logger.addHandler(handler)
    if ops_logger.getEffectiveLevel() > logging.INFO:
        ops_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        ops_logger.removeHandler(handler)
        ops_logger.setLevel(previous_level)
