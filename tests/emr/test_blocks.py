"""Blocks: the credentials helper never shows a secret; the cluster config maps to the request."""

from __future__ import annotations

import pytest
from prefect_aws import AwsCredentials

from deployments.aws_credentials import main
from tasks.emr import EmrClusterConfig
from tests.emr.conftest import FAKE_SECRET

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_credentials_from_the_environment_are_stored_as_secrets_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    assert main(["--name", "env-creds", "--from-env", "--region", "eu-west-1"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed
        == "Saved AwsCredentials block 'env-creds' in eu-west-1: access keys (stored as secrets)\n"
    )
    loaded = AwsCredentials.load("env-creds")
    assert loaded.aws_secret_access_key.get_secret_value() == FAKE_SECRET
    assert FAKE_SECRET not in repr(loaded) and FAKE_SECRET not in str(loaded.model_dump())


def test_a_profile_stores_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert main(["--name", "profile-creds", "--profile", "analytics"]) == 0
    loaded = AwsCredentials.load("profile-creds")
    assert (loaded.profile_name, loaded.aws_secret_access_key) == ("analytics", None)
    assert main(["--name", "x", "--from-env"]) == 2  # no keys in the environment


def test_cluster_config_block_defaults() -> None:
    spec = EmrClusterConfig(log_uri="s3://logs/emr").cluster_spec()
    assert (spec.release_label, spec.core_instance_count, spec.idle_timeout_seconds) == (
        "emr-spark-8.0.0",
        2,
        3600,
    )
