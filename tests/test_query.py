"""`make query` on a missing lake (the answers are tested on a real job run in test_job.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.query import main


def test_a_missing_lake_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--lake", str(tmp_path)]) == 1
    assert "no table songplays under" in capsys.readouterr().err
