"""The processes of the cancellation test (tests/deploy/test_cancel_emr_run.py).

``python -m tests.deploy.emr_cancel_processes moto PORT`` runs moto's server on
127.0.0.1:PORT with one addition, ``CancelSteps``, which moto does not implement: it
answers HTTP 500, which botocore retries 8 times (about a minute) before the flow gives
up on it. Here a cancelled step ends as CANCELLED, as on EMR, and each call is printed.

``python -m tests.deploy.emr_cancel_processes serve NAME`` serves ``songs_etl`` as the
deployment ``songs_etl/NAME``: a runner that runs each flow run in its own process and,
when a run is cancelled through the API, stops that process and runs the flow's
``on_cancellation`` hooks, as a deployment does.
"""

from __future__ import annotations

import sys
from typing import Any


def serve_moto_with_cancel_steps(port: int) -> None:
    """moto's server, plus CancelSteps (the only EMR call of the flow moto lacks)."""
    from moto import server
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.emr.responses import ElasticMapReduceResponse

    def cancel_steps(self: ElasticMapReduceResponse) -> ActionResult:
        cluster_id, step_ids = self._get_param("ClusterId"), self._get_param("StepIds", [])
        results = []
        for step_id in step_ids:
            step: Any = self.backend.describe_step(cluster_id, step_id)
            if step is not None and step.state in ("PENDING", "RUNNING"):
                step.state, step.end_date_time = "CANCELLED", utcnow()
                results.append({"StepId": step_id, "Status": "SUBMITTED"})
            else:
                results.append({"StepId": step_id, "Status": "FAILED", "Reason": "not active"})
        print(f"CancelSteps {cluster_id} {step_ids}: {results}", flush=True)
        return ActionResult({"CancelStepsInfoList": results})

    ElasticMapReduceResponse.cancel_steps = cancel_steps  # type: ignore[attr-defined]
    server.main(["--host", "127.0.0.1", "--port", str(port)])


def serve_songs_etl(name: str) -> None:
    """Serve songs_etl until interrupted (the test stops it with SIGINT)."""
    from flows.songs_etl import songs_etl

    songs_etl.serve(name=name)


if __name__ == "__main__":
    command, argument = sys.argv[1:3]
    if command == "moto":
        serve_moto_with_cancel_steps(int(argument))
    elif command == "serve":
        serve_songs_etl(argument)
    else:
        raise SystemExit(f"unknown command {command!r}: moto PORT or serve NAME")
