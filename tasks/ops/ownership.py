"""Who owns an AWS resource of the project: one tag shape for clusters and job runs.

Every cluster and job run a run starts carries these tags. Retries find their resource by
them, the flow's hooks end what a run left, and the sweeper judges only its own API's.
"""

from __future__ import annotations

from collections.abc import Mapping

PROJECT_TAG_KEY = "project"
PROJECT_TAG_VALUE = "sparkify-lake"
FLOW_RUN_TAG_KEY = "prefect-flow-run-id"
# The Prefect API the flow run lives in: a sweeper only judges resources of its own API,
# never those of another Prefect server or workspace in the same AWS account.
PREFECT_API_TAG_KEY = "prefect-api"
# AWS tag values hold 256 characters.
MAX_TAG_VALUE = 256


def ownership_tags(flow_run_id: str, prefect_api: str) -> dict[str, str]:
    """The tags that name the project, the flow run and its Prefect API."""
    return {
        PROJECT_TAG_KEY: PROJECT_TAG_VALUE,
        FLOW_RUN_TAG_KEY: flow_run_id,
        PREFECT_API_TAG_KEY: prefect_api[:MAX_TAG_VALUE],
    }


def is_project_resource(tags: Mapping[str, str]) -> bool:
    """True when the resource carries the project's tag."""
    return tags.get(PROJECT_TAG_KEY) == PROJECT_TAG_VALUE


def flow_run_of(tags: Mapping[str, str]) -> str | None:
    """The flow run that started the resource, from its tag."""
    return tags.get(FLOW_RUN_TAG_KEY)


def owned_by(tags: Mapping[str, str], prefect_api: str) -> bool:
    """True when the resource carries this API's tag and a flow-run tag."""
    return tags.get(PREFECT_API_TAG_KEY) == prefect_api and bool(flow_run_of(tags))
