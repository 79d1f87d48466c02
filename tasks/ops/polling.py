"""Waiting on AWS: look at a state every few seconds, and let one bad look pass."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from tasks.ops.retry import is_transient

logger = logging.getLogger(__name__)

# A poll that keeps failing this many times in a row is not a blip: the error is raised.
MAX_FAILED_POLLS = 10


def poll_states(
    read: Callable[[], tuple[str, str]], delay: float, max_wait: float
) -> Iterator[tuple[str, str]]:
    """Yield the state every ``delay`` seconds until ``max_wait`` has passed.

    A transient error (throttling, 5xx, a lost connection) skips one look instead of
    failing the wait: one bad poll must not end a run whose job is still writing.
    """
    deadline = time.monotonic() + max_wait
    failed_in_a_row = 0
    while True:
        try:
            state = read()
        except Exception as err:
            failed_in_a_row += 1
            if not is_transient(err) or failed_in_a_row >= MAX_FAILED_POLLS:
                raise
            logger.warning("Could not read the state (%s); trying again in %.0f s", err, delay)
        else:
            failed_in_a_row = 0
            yield state
        if time.monotonic() + delay > deadline:
            return
        time.sleep(delay)
