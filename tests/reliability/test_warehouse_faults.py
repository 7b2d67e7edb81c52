"""Warehouse faults: a clear failure that names the cause, never a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dbtflow.flow import dbt_flow
from tests.reliability.conftest import duckdb_locked, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_a_duckdb_file_locked_by_another_process_fails_fast_naming_the_lock(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {"a": "select 1 as id", "b": "select * from {{ ref('a') }}"})
    flow = dbt_flow(project, name="reliability_warehouse")

    with duckdb_locked(project / "mini.duckdb") as holder:
        started = time.monotonic()
        state = flow(target="local", return_state=True)
        elapsed = time.monotonic() - started

    assert state.is_failed(), state.message
    assert "Could not set lock on file" in state.message and f"(PID {holder.pid})" in state.message, state.message
    assert elapsed < 120, f"a locked database took {elapsed:.0f} s to fail"
    folder = runs_dir / str(state.state_details.flow_run_id)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and "Could not set lock" in record["steps"][0]["error"]
    assert "failed before running nodes" in (folder / "summary.md").read_text()

    # nothing is left behind: once the other process lets go, the next run builds
    again = flow(target="local", return_state=True)
    assert again.is_completed(), again.message


def test_a_lock_released_within_the_profiles_connect_retries_is_waited_for(tmp_path: Path, runs_dir: Path) -> None:
    retries = "retries:\n  connect_attempts: 6  # dbt-duckdb waits 1, 2, 4, 8, 16 s between attempts\n"
    project = make_project(tmp_path / "mini", {"a": "select 1 as id"}, target_yml=retries)
    flow = dbt_flow(project, name="reliability_warehouse")

    # the other process lets go 4 s after dbt started to connect (dbt logs its concurrency line just before)
    with duckdb_locked(project / "mini.duckdb", release_when=(f"{runs_dir}/*/dbt.log", "Concurrency: "), delay=4):
        state = flow(target="local", command="build", return_state=True)

    assert state.is_completed(), state.message
    log = (runs_dir / str(state.state_details.flow_run_id) / "dbt.log").read_text()
    connecting, first_node = _clock(log, "Concurrency: "), _clock(log, " START ")
    assert first_node - connecting >= 4, "dbt connected before the lock was released: no retry was needed"


def _clock(log: str, text: str) -> float:
    """Seconds of the day of dbt.log's first line containing `text` (`[0m01:58:46.985105 [info ] ...`)."""
    line = next(line for line in log.splitlines() if text in line)
    hours, minutes, seconds = line.split(" ", 1)[0].removeprefix("\x1b[0m").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
