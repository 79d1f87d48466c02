"""Create the alerts of songs-etl-daily (deployments/alerts.yaml) as Prefect automations.

    python -m deployments.alerts --block sparkify-alerts
    python -m deployments.alerts --block slack-webhook/sparkify-alerts --if-block-exists

Each alert sends through the notification block you name: a Slack Webhook, a Custom
Webhook, an email block, any block that can notify (docs/operations.md shows Slack).
Running it again updates the alerts of the same name instead of adding more, so
``make deploy`` can run it every time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.schemas.automations import AutomationCore

DEFINITIONS = Path(__file__).with_name("alerts.yaml")
DEFAULT_BLOCK = "sparkify-alerts"


class NotificationBlockNotFoundError(LookupError):
    """No notification block (or more than one) answers to the name."""


def load_alerts(
    block_document_id: UUID, definitions: Path = DEFINITIONS, late_after: timedelta | None = None
) -> list[AutomationCore]:
    """The automations of the definition file, each notifying through the block.

    Args:
        block_document_id: The notification block every send-notification action uses.
        definitions: The YAML file (``automations:``, Prefect's automation fields).
        late_after: Replaces the deadline of the proactive (lateness) alerts: a try-out
            or a test that cannot wait 50 minutes.
    """
    specs: list[dict[str, Any]] = yaml.safe_load(definitions.read_text())["automations"]
    alerts = []
    for spec in specs:
        for action in spec["actions"]:
            if action["type"] == "send-notification":
                action["block_document_id"] = str(block_document_id)
        if late_after is not None and spec["trigger"].get("posture") == "Proactive":
            spec["trigger"]["within"] = late_after.total_seconds()
        alerts.append(AutomationCore.model_validate(spec))
    return alerts


def find_notification_block(client: SyncPrefectClient, name: str) -> tuple[UUID, str]:
    """The id and ``type/name`` of the notification block called ``name``.

    ``name`` may carry its block type (``slack-webhook/alerts``), as Prefect's CLI writes
    it; without one, every block type that can notify is searched.

    Raises:
        NotificationBlockNotFoundError: None, or several of different types.
    """
    wanted_type, _, wanted_name = name.rpartition("/")
    found = []
    for document in _all_block_documents(client):
        slug = document.block_type.slug if document.block_type else ""
        capabilities = document.block_schema.capabilities if document.block_schema else []
        if document.name == wanted_name and "notify" in capabilities and wanted_type in ("", slug):
            found.append((document.id, f"{slug}/{document.name}"))
    if len(found) != 1:
        names = ", ".join(full for _, full in found) or "none"
        raise NotificationBlockNotFoundError(
            f"{len(found)} notification blocks named {name!r} ({names}): create one "
            "(docs/operations.md, Alerts), or name it as type/name"
        )
    return found[0]


def _all_block_documents(client: SyncPrefectClient) -> list[Any]:
    documents: list[Any] = []
    while page := client.read_block_documents(
        offset=len(documents), limit=200, include_secrets=False
    ):
        documents += page
    return documents


def apply_alerts(client: SyncPrefectClient, alerts: list[AutomationCore]) -> list[str]:
    """Create each alert, or update the one of its name (removing duplicates of it).

    Returns:
        One line per alert: its name and whether it was created or updated.
    """
    done = []
    for alert in alerts:
        existing = client.read_automations_by_name(alert.name)
        if existing:
            client.update_automation(existing[0].id, alert)
            for duplicate in existing[1:]:  # two alike would notify twice
                client.delete_automation(duplicate.id)
            done.append(f"updated alert {alert.name!r}")
        else:
            client.create_automation(alert)
            done.append(f"created alert {alert.name!r}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """Create or update the alerts; say which block they notify through."""
    parser = argparse.ArgumentParser(prog="python -m deployments.alerts", description=__doc__)
    parser.add_argument(
        "--block", default=DEFAULT_BLOCK, help=f"notification block (default {DEFAULT_BLOCK})"
    )
    parser.add_argument("--definitions", type=Path, default=DEFINITIONS)
    parser.add_argument(
        "--if-block-exists",
        action="store_true",
        help="without the block, say so and succeed (make deploy before the block exists)",
    )
    parser.add_argument(
        "--late-after-minutes",
        type=float,
        default=None,
        help="another deadline for the lateness alert (at least 1/6: Prefect's minimum)",
    )
    args = parser.parse_args(argv)
    late_after = (
        None if args.late_after_minutes is None else timedelta(minutes=args.late_after_minutes)
    )
    with get_client(sync_client=True) as client:
        try:
            block_id, block = find_notification_block(client, args.block)
        except NotificationBlockNotFoundError as err:
            print(f"alerts: {'no alerts created' if args.if_block_exists else 'error'}: {err}")
            return 0 if args.if_block_exists else 2
        for line in apply_alerts(client, load_alerts(block_id, args.definitions, late_after)):
            print(f"{line}: notifies through {block}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
