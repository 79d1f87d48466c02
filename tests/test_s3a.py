"""The S3A connector's jars (pinned, checked, fetched once) and the settings that use them.

The fetches here read a Maven repository laid out in a temporary folder (``file://``),
so nothing leaves the machine; ``make jars`` fetches the real pins the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from spark_etl import jars, s3a
from spark_etl.errors import JobError
from spark_etl.session import s3a_jvm_settings

JAR = b"PK\x03\x04 a jar's bytes"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(jars.CACHE_ENV, str(folder))
    return folder


def repository_with(tmp_path: Path, content: bytes) -> str:
    """A Maven repository holding ``org.example:tool:1.0`` with ``content``."""
    jar = tmp_path / "repo" / "org" / "example" / "tool" / "1.0" / "tool-1.0.jar"
    jar.parent.mkdir(parents=True)
    jar.write_bytes(content)
    return (tmp_path / "repo").as_uri()


def lock_of(tmp_path: Path, content: bytes) -> Path:
    lock = tmp_path / "s3a-hadoop-9.9.9.lock"
    digest = hashlib.sha256(content).hexdigest()
    lock.write_text(f"# a comment\norg.example:tool:1.0  {digest}  {len(content)}\n")
    return lock


def test_a_fetch_downloads_once_and_replaces_a_damaged_jar(cache: Path, tmp_path: Path) -> None:
    lock, repository = lock_of(tmp_path, JAR), repository_with(tmp_path, JAR)

    first = jars.fetch(lock, repository)
    second = jars.fetch(lock, repository)
    (cache / "s3a-hadoop-9.9.9" / "tool-1.0.jar").write_bytes(b"cut sho")
    third = jars.fetch(lock, repository)

    assert [(r.jars, r.downloaded) for r in (first, second, third)] == [(1, 1), (1, 0), (1, 1)]
    assert (cache / "s3a-hadoop-9.9.9" / "tool-1.0.jar").read_bytes() == JAR


def test_a_download_that_is_not_the_pinned_jar_is_refused_and_not_kept(
    cache: Path, tmp_path: Path
) -> None:
    lock, repository = lock_of(tmp_path, JAR), repository_with(tmp_path, b"something else")

    with pytest.raises(JobError, match=r"tool-1.0.jar is not the pinned tool-1.0.jar: SHA-256"):
        jars.fetch(lock, repository)

    assert list((cache / "s3a-hadoop-9.9.9").iterdir()) == []


def test_the_project_pins_the_hadoop_of_its_pyspark_and_names_the_fetch_when_a_jar_is_missing(
    cache: Path,
) -> None:
    hadoop = s3a.bundled_hadoop_version()
    assert s3a.lock_for(hadoop).name == f"s3a-hadoop-{hadoop}.lock"
    assert s3a.lock_for("3.4.1").is_file()  # the EMR line's (.venv-emr)
    with pytest.raises(JobError, match=r"run `make jars` once$"):
        s3a.classpath()
    with pytest.raises(JobError, match=r"no S3A connector is pinned for Hadoop 1.0.0"):
        s3a.lock_for("1.0.0")


def test_the_standard_endpoint_variables_name_the_store_with_path_style_access() -> None:
    settings = s3a.hadoop_settings(
        {"AWS_ENDPOINT_URL": "http://other:1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000/"}
    )
    assert settings == {
        **s3a.S3A_FILE_SYSTEMS,
        "fs.s3a.endpoint": "http://127.0.0.1:9000",
        "fs.s3a.path.style.access": "true",
    }
    assert s3a.hadoop_settings({"AWS_REGION": "eu-west-1"}) == {
        **s3a.S3A_FILE_SYSTEMS,
        "fs.s3a.endpoint.region": "eu-west-1",
    }
    with pytest.raises(JobError, match=r"AWS_ENDPOINT_URL must be an http:// or https:// address"):
        s3a.hadoop_settings({"AWS_ENDPOINT_URL": "minio:9000"})


def test_only_a_jvm_the_job_starts_for_s3_gets_s3a(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert s3a_jvm_settings(["/lake/song_data", "file:/out"]) == {}
    own = s3a_jvm_settings(["s3://lake/song_data"])
    assert own["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert "hadoop-aws-" in own["spark.driver.extraClassPath"]
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")  # spark-submit's JVM: EMR's EMRFS
    assert s3a_jvm_settings(["s3://lake/song_data"]) == {}
