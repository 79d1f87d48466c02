"""The job as users and EMR start it: ``python -m spark_etl`` and spark-submit with the zip."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_etl.args import (
    DATE_FLAG,
    GLUE_DATABASE_FLAG,
    ICEBERG,
    LOGS_FLAG,
    MAX_REJECT_RATIO_FLAG,
    OUTPUT_FLAG,
    RUN_ID_FLAG,
    SONGS_FLAG,
    TABLE_FORMAT_FLAG,
    JobArgs,
    argv_problem,
    parse_args,
)
from spark_etl.summary import RunSummary, summary_uri
from tasks.ops.job_package import build_job_package, write_job_package
from tests.lakes import (
    DAYS,
    assert_same_tables,
    catalogue,
    day_events,
    job_args,
    write_lake,
)

VENV_BIN = Path(sys.executable).parent


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYSPARK_PYTHON": sys.executable, **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def argv_with(flag: str, value: str) -> list[str]:
    """A valid command line with one flag's value replaced (or added)."""
    argv = JobArgs("s", "l", "o", run_id="r").to_argv()
    if flag in argv:
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            JobArgs("s", "l", "o").to_argv()[2:],
            f"the following arguments are required: {SONGS_FLAG}",
        ),
        (argv_with(SONGS_FLAG, "s3a://b/s"), "is not a local path or an s3://"),
        (argv_with(SONGS_FLAG, "s3://Bad_Bucket/s"), "is not an s3://bucket/prefix URI"),
        (argv_with(OUTPUT_FLAG, "s3://bucket/a,b"), "holds a comma or a control character"),
        (argv_with(LOGS_FLAG, "s3://bucket/logs\n"), "holds a comma or a control character"),
        (argv_with(DATE_FLAG, "2018-13-01"), "is not a date"),
        (argv_with(MAX_REJECT_RATIO_FLAG, "2"), "not between 0 and 1"),
        (argv_with(MAX_REJECT_RATIO_FLAG, "nan"), "not between 0 and 1"),
        (argv_with(RUN_ID_FLAG, "../x"), "is not a run id"),
        (argv_with(GLUE_DATABASE_FLAG, "Sparkify-Lake"), "is not a Glue database name"),
        (argv_with(GLUE_DATABASE_FLAG, "sparkify_lake"), "add --table-format iceberg"),
        (
            [*argv_with(TABLE_FORMAT_FLAG, ICEBERG), GLUE_DATABASE_FLAG, "sparkify_lake"],
            "it needs an s3:// output, not 'o'",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_reason_before_spark_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    problem = argv_problem(argv)  # what preflight reports: the same reason, no exit
    assert problem is not None and message in problem


@pytest.mark.parametrize(
    "args",
    [
        JobArgs("s3://raw/song_data", "s3://raw/log_data", "s3://out/star"),
        JobArgs("songs", "logs", "/tmp/out", date(2018, 11, 30), 0.25, "daily-1"),
        JobArgs("file:/lake/songs", "file:/lake/logs", "out", None, 0.1 + 0.2, "x"),
        JobArgs("s", "l", "o", run_id="r", flow_run_id="8f1c-flow", take_over_from="dead-run"),
        JobArgs("s", "l", "o", run_id="r", table_format=ICEBERG),
        JobArgs("s", "l", "s3://out/star", run_id="r", table_format=ICEBERG, glue_database="lake"),
    ],
)
def test_parsing_the_command_line_of_job_args_gives_them_back(args: JobArgs) -> None:
    assert parse_args(args.to_argv()) == args
    assert argv_problem(args.to_argv()) is None


@pytest.mark.integration  # a real job process
def test_python_m_spark_etl_fails_with_a_one_line_reason(tmp_path: Path) -> None:
    result = run(
        [
            sys.executable,
            "-m",
            "spark_etl",
            *JobArgs(
                str(tmp_path / "missing"), str(tmp_path / "logs"), str(tmp_path / "out")
            ).to_argv(),
        ]
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"spark_etl: error: song_data location {tmp_path / 'missing'} does not exist"
    )


@pytest.mark.integration  # spark-submit
def test_spark_submit_with_the_zipped_package_in_another_time_zone_gives_the_same_tables(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = write_lake(tmp_path / "lake", {day: day_events(day) for day in DAYS}, catalogue())
    zip_path, entry_path = write_job_package(build_job_package(), tmp_path / "package")
    submitted = tmp_path / "submitted"
    isolated_python = _python_without_the_project(tmp_path)
    result = run(
        [
            str(VENV_BIN / "spark-submit"),
            "--master",
            "local[2]",
            "--py-files",
            str(zip_path),
            str(entry_path),
            *job_args(lake, submitted, run_id="submitted").to_argv(),
        ],
        TZ="Pacific/Kiritimati",  # UTC+14: the machine's zone must not shift any date
        PYSPARK_PYTHON=isolated_python,
        PYSPARK_DRIVER_PYTHON=isolated_python,
        PYTHONPATH=_site_packages(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = RunSummary.from_json(Path(summary_uri(str(submitted), "submitted")).read_text())
    assert summary.status == "succeeded"

    from spark_etl.job import run_job

    in_process = tmp_path / "in-process"
    run_job(spark, job_args(lake, in_process))
    assert_same_tables(spark, submitted, in_process)


def _site_packages() -> str:
    import pyspark

    return str(Path(pyspark.__file__).resolve().parents[1])


def _python_without_the_project(folder: Path) -> str:
    """A Python that sees site-packages but not the project's editable install (``-S``).

    ``-S`` skips the .pth files, so only the zip passed with --py-files can provide
    spark_etl, exactly as on EMR.
    """
    wrapper = folder / "python-without-project"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_job_package_is_reproducible_and_holds_the_package() -> None:
    import zipfile
    from io import BytesIO

    first, second = build_job_package(), build_job_package()
    assert first == second
    names = zipfile.ZipFile(BytesIO(first.zip_bytes)).namelist()
    assert {"spark_etl/__init__.py", "spark_etl/main.py", "spark_etl/job.py"} <= set(names)
    assert first.entry_bytes.startswith(b'"""spark-submit entry script')


def test_the_local_file_system_is_only_for_a_jvm_the_job_starts_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spark_etl.session import LOCAL_FS_JAR, LOCAL_JVM_SETTINGS, local_jvm_settings

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert LOCAL_FS_JAR.is_file()
    assert local_jvm_settings() == LOCAL_JVM_SETTINGS
    # Under spark-submit (EMR) the JVM is already up: its file systems are left alone.
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40123")
    assert local_jvm_settings() == {}
