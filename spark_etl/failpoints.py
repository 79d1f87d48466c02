"""Named points at which a crash test holds a run still, to kill it there.

With ``SPARKIFY_HOLD_AT=<point>`` and ``SPARKIFY_HOLD_MARKER=<file>`` in its environment,
the job creates the marker file when it reaches that point and then waits for ever; the
test kills its process tree with SIGKILL and checks what a reader and the next run see.
Without the variables (every real run) a point costs one dictionary lookup.

Points: ``staged`` (everything built and checked, nothing published), ``moving`` (half
of the new files moved in), ``retiring`` (every new file in, half of the old ones out),
``committing`` (the Iceberg format: half of the table commits made).
"""

from __future__ import annotations

import os
import time

HOLD_AT = "SPARKIFY_HOLD_AT"
HOLD_MARKER = "SPARKIFY_HOLD_MARKER"


def reach(point: str) -> None:
    """Hold here for ever when a crash test asked for this point."""
    if os.environ.get(HOLD_AT) != point:
        return
    with open(os.environ[HOLD_MARKER], "w", encoding="utf-8") as marker:
        marker.write(point)
    while True:
        time.sleep(60)
