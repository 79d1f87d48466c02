"""Serve every deployment of prefect.yaml, with its schedule, from this one process.

For users who want schedules without a work pool and worker: ``make serve``. The
deployments are read from prefect.yaml, so the two ways of running never drift apart.
Stop with Ctrl-C (Prefect pauses the served deployments on exit).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

from tasks.ops.names import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def load_deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` section of prefect.yaml, anchors resolved."""
    return list(yaml.safe_load(path.read_text())["deployments"])


def to_runner_deployment(spec: dict[str, Any]) -> Any:
    """A deployment to serve, built from one prefect.yaml entry."""
    from prefect.schedules import Cron

    flow = _load_flow(spec["entrypoint"])
    # Each schedule as declared, its `active: false` included: a schedule left off in
    # prefect.yaml (one of two daily runners) must stay off when served.
    schedules = [
        Cron(schedule["cron"], timezone=schedule.get("timezone"), active=schedule["active"])
        for schedule in spec.get("schedules", [])
    ]
    return flow.to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        parameters=spec.get("parameters", {}),
        schedules=schedules or None,
        concurrency_limit=spec.get("concurrency_limit"),
    )


def _load_flow(entrypoint: str) -> Any:
    """Import ``path/to/file.py:flow_name`` relative to the project folder."""
    file_name, flow_name = entrypoint.split(":")
    path = PROJECT_ROOT / file_name
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Prefect finds a flow's file through sys.modules[flow.__module__] to set the
    # deployment's entrypoint; a module missing there makes every deployment fail.
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return getattr(module, flow_name)


def main() -> None:
    """Serve all deployments until interrupted."""
    from prefect import serve

    sys.path.insert(0, str(PROJECT_ROOT))
    serve(*[to_runner_deployment(spec) for spec in load_deployment_specs()])


if __name__ == "__main__":
    main()
