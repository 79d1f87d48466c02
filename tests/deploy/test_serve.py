"""`make serve` builds its deployments from prefect.yaml: each one as the file declares it.

Nothing is served: the deployments are built and compared with prefect.yaml read here,
on its own, with yaml.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deployments.serve import load_deployment_specs, to_runner_deployment
from tasks.ops.names import PROJECT_ROOT

DECLARED: list[dict[str, Any]] = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())[
    "deployments"
]
# The names the flows give themselves in @flow(name=...), written out by hand.
FLOW_NAMES = {
    "flows/songs_etl.py:songs_etl": "songs_etl",
    "flows/terminate_emr_clusters.py:terminate_emr_clusters": "terminate_emr_clusters",
    "flows/lake_maintenance.py:lake_maintenance": "lake_maintenance",
}


def test_every_deployment_of_prefect_yaml_is_read_with_its_anchors_resolved() -> None:
    specs = load_deployment_specs()

    assert [spec["name"] for spec in specs] == [
        "songs-etl-daily",
        "songs-etl-daily-serverless",
        "songs-etl-local",
        "lake-maintenance-weekly",
        "terminate-emr-clusters",
    ]
    assert specs == DECLARED
    # The daily run's block names come from a YAML merge key (<<: *aws_blocks).
    daily = specs[0]["parameters"]
    assert (daily["aws_credentials_block"], daily["cluster_config_block"]) == (
        "sparkify-aws",
        "sparkify-emr",
    )


@pytest.mark.parametrize("declared", DECLARED, ids=[spec["name"] for spec in DECLARED])
def test_each_served_deployment_is_the_one_prefect_yaml_declares(
    declared: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT_ROOT)  # `make serve` runs here; entrypoints are relative to it
    [spec] = [spec for spec in load_deployment_specs() if spec["name"] == declared["name"]]

    deployment = to_runner_deployment(spec)

    assert deployment.name == declared["name"]
    assert deployment.flow_name == FLOW_NAMES[declared["entrypoint"]]
    assert deployment.entrypoint == declared["entrypoint"]
    assert deployment.description == declared["description"]
    assert deployment.parameters == declared["parameters"]
    served_schedules = [
        # Prefect evaluates a cron without a time zone in UTC: None means UTC when served.
        (schedule.schedule.cron, schedule.schedule.timezone or "UTC", schedule.active)
        for schedule in deployment.schedules or []
    ]
    assert served_schedules == [
        (schedule["cron"], schedule["timezone"], schedule["active"])
        for schedule in declared.get("schedules", [])
    ]
    assert deployment.concurrency_limit == declared.get("concurrency_limit")
