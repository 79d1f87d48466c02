"""The local runner when the real job fails after the inputs passed validation.

Starts one real Spark process (~20 s): inputs that exist and hold .json files, so the
flow's own checks pass, but whose lines are mostly garbage, so the job stops at its
reject threshold, prints its one-line reason and exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.songs_etl import songs_etl
from tasks.local_spark import LocalSparkJobError
from tests.lineage_receiver import lineage_receiver, parsed

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]  # a real job process

GOOD_SONG = '{"song_id": "SO1", "artist_id": "AR1", "title": "Song", "duration": 200.0}'
GARBAGE_EVENTS = ["not json at all", "{broken", "<html>oops</html>"]


def write_mostly_garbage_lake(root: Path) -> tuple[Path, Path]:
    """One good song and three event lines that are not JSON: 3 of 4 records rejected."""
    songs, logs = root / "song_data", root / "log_data" / "2018" / "11"
    songs.mkdir(parents=True)
    logs.mkdir(parents=True)
    (songs / "TRAAA.json").write_text(GOOD_SONG + "\n")
    (logs / "2018-11-01-events.json").write_text("\n".join(GARBAGE_EVENTS) + "\n")
    return root / "song_data", root / "log_data"


def test_a_job_that_exits_non_zero_fails_the_flow_with_its_own_one_line_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    songs, logs = write_mostly_garbage_lake(tmp_path / "lake")
    output = tmp_path / "out"

    with lineage_receiver() as receiver:  # lineage on: the FAIL event says why too
        monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
        state = songs_etl(
            runner="local",
            songs_uri=str(songs),
            logs_uri=str(logs),
            output_uri=str(output),
            return_state=True,
        )
        flow_events = receiver.of_job("songs_etl")

    assert state.is_failed()
    with pytest.raises(LocalSparkJobError) as failure:
        state.result()
    error = failure.value
    expected_reason = (
        "3 of 4 input records rejected (75.00%), more than the allowed 1.00%; "
        f"see {output}/_rejects/"
    )
    assert (error.return_code, error.reason) == (1, expected_reason)
    assert error.summary_uri == f"{output}/_runs/{error.run_id}.json"
    # The job wrote its summary on the way out, with the same reason: the flow did not
    # make the reason up.
    summary = json.loads(Path(error.summary_uri).read_text())
    assert (summary["status"], summary["error"]) == ("failed", expected_reason)
    assert not (output / "songplays").exists()  # stopped before any table was written
    assert [event["eventType"] for event in flow_events] == ["START", "FAIL"]
    fail = parsed(flow_events[1])
    assert fail.run.facets["errorMessage"].message == f"LocalSparkJobError: {error}"
    assert expected_reason in str(error)
