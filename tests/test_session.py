"""A local JVM the job starts keeps to this machine: UI and driver on 127.0.0.1, no kill links."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spark_etl.session import LOOPBACK_SETTINGS, loopback_settings
from tasks.ops.names import PROJECT_ROOT

# Run in a fresh process, as `python -m spark_etl` does: start the job's session, then report
# what its UI says about itself and every socket its process tree listens on.
_SESSION_REPORT = """
import json, os
from spark_etl.session import create_session
from tests.listening import listening_sockets
spark = create_session()
context = spark.sparkContext
print("REPORT " + json.dumps({
    "ui": context.uiWebUrl,
    "kill_enabled": context.getConf().get("spark.ui.killEnabled"),
    "listening": listening_sockets(os.getpid()),
}), flush=True)
spark.stop()
"""


@pytest.mark.integration  # a fresh JVM
def test_the_local_jvm_listens_on_loopback_only_with_kill_disabled() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYSPARK_GATEWAY_PORT", "SPARK_LOCAL_IP", "PYSPARK_SUBMIT_ARGS", "MASTER"}
    }
    result = subprocess.run(
        [sys.executable, "-c", _SESSION_REPORT],
        cwd=PROJECT_ROOT,
        env={**env, "PYSPARK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    reports = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and len(reports) == 1, result.stderr[-3000:]
    report = json.loads(reports[0].removeprefix("REPORT "))
    ui_port = int(report["ui"].rsplit(":", 1)[1])

    assert report["ui"] == f"http://127.0.0.1:{ui_port}"
    assert report["kill_enabled"] == "false"
    # The UI, the driver's RPC and block manager, pyspark's own servers: all on loopback.
    listening = [tuple(socket) for socket in report["listening"]]
    assert ("127.0.0.1", ui_port) in listening
    assert {address for address, _ in listening} == {"127.0.0.1"}


def test_loopback_is_only_for_a_local_jvm_the_job_starts_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PYSPARK_GATEWAY_PORT", "SPARK_LOCAL_IP", "PYSPARK_SUBMIT_ARGS", "MASTER"):
        monkeypatch.delenv(name, raising=False)
    assert loopback_settings() == LOOPBACK_SETTINGS
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master local[2] pyspark-shell")
    assert loopback_settings() == LOOPBACK_SETTINGS

    # Executors on other machines must reach the driver.
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master=spark://head:7077 pyspark-shell")
    assert loopback_settings() == {}
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    monkeypatch.setenv("MASTER", "yarn")
    assert loopback_settings() == {}
    monkeypatch.delenv("MASTER")
    # An address the user chose.
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.0.0.5")
    assert loopback_settings() == {}
    monkeypatch.delenv("SPARK_LOCAL_IP")
    # Under spark-submit (EMR) the JVM is already up and configured by the cluster.
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40123")
    assert loopback_settings() == {}
