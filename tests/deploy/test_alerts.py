"""The alerts of songs-etl-daily, evaluated by a real Prefect server, posting to a webhook.

One ``prefect server`` on a free loopback port (its own PREFECT_HOME, PREFECT_UI_URL set so
notifications carry links), a webhook receiver on 127.0.0.1 behind a Custom Webhook
notification block, the songs-etl-daily deployment, and the alerts as ``make deploy``
creates them (deployments/alerts.py), with a 20 s deadline instead of 50 minutes. Then,
at once: a daily run that really fails (the flow, run by Prefect's engine), a songs_etl
run outside the deployments that fails too, a daily run that stays Running, and runs of
two more deployments set to Failed through the API: songs-etl-daily-serverless (a daily
one too) and songs-etl-local (not daily). The server alone decides what to post. Every
process started here is stopped, and checked.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed, Pending, Running

import deployments.alerts as alerts
from flows.songs_etl import songs_etl
from tests.deploy.processes import (
    deliver_client_events,
    free_port,
    start,
    stopped_with_its_children,
    wait_healthy,
)

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent
# Long enough for the run that really fails to end before it is due, or it is posted as
# late too: at 10 s that happened once in CI, at 20 s twice in full runs of the suite (the
# run holds its output and looks for a lease to take over before its preflight fails, and
# it is the first flow run of its process).
LATE_AFTER = timedelta(seconds=60)
# Parameters that make songs_etl fail in its preflight, before any AWS call.
FAILING = {"runner": "emr", "code_bucket_uri": "not-an-s3-uri"}


class WebhookReceiver(ThreadingHTTPServer):
    """Records the JSON body of every POST it receives."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _RecordPosts)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _RecordPosts(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@dataclass
class Stack:
    api_url: str
    ui_url: str
    receiver: WebhookReceiver
    created: list[str]
    runs: dict[str, UUID] = field(default_factory=dict)
    # What the runs posted, taken when the wait ends: a test that updates the alerts
    # (updated automations start their triggers afresh) must not add to what the others
    # read.
    posts: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The server, the receiver, the block, the deployment and the alerts; then the runs,
    and the wait until every alert due has had its time."""
    home = tmp_path_factory.mktemp("alerts-prefect-home")
    port = free_port()
    api_url, ui_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_URL": ui_url,  # the links in the notifications
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",  # look for late runs every second
    }
    receiver = WebhookReceiver()
    listening = threading.Thread(target=receiver.serve_forever, daemon=True)
    listening.start()
    server = start(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home / "server.log",
    )
    try:
        wait_healthy(api_url, 90)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            created = set_up_alerts(receiver)
            stack = Stack(api_url, ui_url, receiver, created)
            start_runs(stack)
            wait_for_the_alerts(stack, home / "server.log")
            stack.posts = list(receiver.posts)
            yield stack
            deliver_client_events()
    finally:
        receiver.shutdown()
        receiver.server_close()
        listening.join(timeout=5)
        server_stopped = stopped_with_its_children(server)
    assert (server_stopped, listening.is_alive()) == (True, False)


def set_up_alerts(receiver: WebhookReceiver) -> list[str]:
    """The notification block, the daily deployment, and the alerts through their module."""
    CustomWebhookNotificationBlock(
        name="sparkify test",
        url=receiver.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("test-webhook", overwrite=True)
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(songs_etl)
        for name in ("songs-etl-daily", "songs-etl-daily-serverless", "songs-etl-local"):
            client.create_deployment(
                flow_id=flow_id,
                name=name,
                entrypoint="flows/songs_etl.py:songs_etl",
                parameters=FAILING,
            )
        block_id, _ = alerts.find_notification_block(client, "test-webhook")
        return alerts.apply_alerts(client, alerts.load_alerts(block_id, late_after=LATE_AFTER))


def start_runs(stack: Stack) -> None:
    """A daily run left Running (a hung process), a daily run and a run outside the
    deployments that both fail for real, and runs of the other two that fail through
    the API (what a worker reports)."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("songs_etl/songs-etl-daily")
        hung = client.create_flow_run_from_deployment(deployment.id)
        client.set_flow_run_state(hung.id, Pending())
        client.set_flow_run_state(hung.id, Running())
        failing = client.create_flow_run_from_deployment(deployment.id)
        for name in ("songs-etl-daily-serverless", "songs-etl-local"):
            other = client.read_deployment_by_name(f"songs_etl/{name}")
            run = client.create_flow_run_from_deployment(other.id)
            for state in (Pending(), Running(), Failed(message="the job failed")):
                client.set_flow_run_state(run.id, state)
            stack.runs[name] = run.id
    failed_state = run_flow(songs_etl, flow_run=failing, parameters=FAILING, return_type="state")
    outside_state = songs_etl(**FAILING, return_state=True)
    assert (failed_state.is_failed(), outside_state.is_failed()) == (True, True)
    stack.runs.update(
        hung=hung.id, failed=failing.id, outside=outside_state.state_details.flow_run_id
    )


# The runs that must alert: the hung one (late), and the daily ones that failed.
ALERTING_RUNS = ("hung", "failed", "songs-etl-daily-serverless")


def wait_for_the_alerts(stack: Stack, server_log: Path, seconds: float = 150) -> None:
    """Until every run that must alert has (a failure's alert can come after the
    lateness one on a loaded machine), then a little longer: a wrong alert for another
    run, due at about the same time, would be in too."""
    deadline = time.monotonic() + seconds
    while not all(
        any(str(stack.runs[key]) in post["body"] for post in stack.receiver.posts)
        for key in ALERTING_RUNS
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"missing alerts; {stack.receiver.posts}\n{server_log.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    time.sleep(5)


def distinct(posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The posts, each different one once, in the order they came."""
    return [post for index, post in enumerate(posts) if post not in posts[:index]]


def flow_run_name(flow_run_id: UUID, api_url: str) -> str:
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id).name


def test_the_alerts_are_created_once_then_updated_in_place(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.created == [
        "created alert 'songs-etl-daily failed'",
        "created alert 'songs-etl-daily late'",
    ]
    # Again, as `make alerts` runs it, with another deadline: the same two, updated.
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        exit_code = alerts.main(["--block", "test-webhook", "--late-after-minutes", "0.5"])
        with get_client(sync_client=True) as client:
            stored = client.read_automations()
            block_id, _ = alerts.find_notification_block(client, "custom-webhook/test-webhook")
    assert exit_code == 0
    assert capsys.readouterr().out.splitlines() == [
        "updated alert 'songs-etl-daily failed': notifies through custom-webhook/test-webhook",
        "updated alert 'songs-etl-daily late': notifies through custom-webhook/test-webhook",
    ]
    assert sorted((a.name, a.trigger.posture.value, a.trigger.within) for a in stored) == [
        ("songs-etl-daily failed", "Reactive", timedelta(0)),
        ("songs-etl-daily late", "Proactive", timedelta(seconds=30)),
    ]
    assert {action.block_document_id for a in stored for action in a.actions} == {block_id}


def test_without_the_block_deploy_goes_on_and_make_alerts_fails_naming_it(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        lenient = alerts.main(["--block", "no-such-block", "--if-block-exists"])
        strict = alerts.main(["--block", "no-such-block"])
    printed = capsys.readouterr().out.splitlines()
    reason = (
        "0 notification blocks named 'no-such-block' (none): create one "
        "(docs/operations.md, Alerts), or name it as type/name"
    )
    assert (lenient, strict) == (0, 2)
    assert printed == [f"alerts: no alerts created: {reason}", f"alerts: error: {reason}"]


def test_a_failing_daily_run_posts_once_naming_and_linking_it(stack: Stack) -> None:
    run_id = stack.runs["failed"]
    name = flow_run_name(run_id, stack.api_url)
    # One notification, though the server may deliver it more than once: its events reach
    # the triggers at least once (CI saw the same post 3 times for one failed run).
    [post] = distinct([post for post in stack.posts if str(run_id) in post["body"]])

    assert post["subject"] == f"sparkify-lake: songs-etl-daily run {name} is Failed"
    first, advice, link = post["body"].split("\n")
    assert first.startswith(f"The songs-etl-daily run {name} (scheduled for ")
    assert ") ended Failed: " in first
    assert advice == "The lake misses that day until a run succeeds: retry it from the run's page."
    assert link == f"{stack.ui_url}/runs/flow-run/{run_id}"


def test_a_daily_run_still_running_past_its_deadline_posts_that_it_is_late(stack: Stack) -> None:
    run_id = stack.runs["hung"]
    name = flow_run_name(run_id, stack.api_url)
    [post] = distinct([post for post in stack.posts if str(run_id) in post["body"]])

    assert post["subject"] == f"sparkify-lake: songs-etl-daily run {name} is late"
    first, link = post["body"].split("\n")
    assert first.startswith(f"The songs-etl-daily run {name} (scheduled for ")
    assert first.endswith(
        f") is Running, not Completed {round(LATE_AFTER.total_seconds() / 60)} minutes after it "
        "was due: the 7am dashboard may miss a day."
    )
    assert link == f"{stack.ui_url}/runs/flow-run/{run_id}"


def test_the_other_daily_deployment_alerts_too_and_nothing_else_is_posted(stack: Stack) -> None:
    # Not the failed run's lateness (it ended), not the run outside the deployments, not
    # songs-etl-local's.
    names = {key: flow_run_name(run_id, stack.api_url) for key, run_id in stack.runs.items()}
    serverless = names["songs-etl-daily-serverless"]
    assert sorted({post["subject"] for post in stack.posts}) == sorted(
        [
            f"sparkify-lake: songs-etl-daily run {names['failed']} is Failed",
            f"sparkify-lake: songs-etl-daily run {names['hung']} is late",
            f"sparkify-lake: songs-etl-daily-serverless run {serverless} is Failed",
        ]
    )
