"""Timeouts: a run past `timeout_seconds` is stopped, its queries cancelled, and nothing outlives it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from dbtflow.run._flow import dbt_flow
from tests.run.reliability.conftest import SLOW_SQL, can_write, live_threads, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

TIMEOUT = 15


def test_a_run_past_its_timeout_is_stopped_and_nothing_outlives_it(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(
        tmp_path / "mini",
        {
            "first": "select 1 as id",
            "slow": SLOW_SQL.replace("range(1000000) b", "range(1000000) b, {{ ref('first') }}"),
            "after_slow": "select * from {{ ref('slow') }}",
            **{f"quick_{i}": f"select {i} as id" for i in range(3)},
        },
    )
    flow = dbt_flow(project, name="reliability_timeout", retries=1)  # a timeout is final: never retried
    warm = flow(target="local", command="parse", return_state=True)  # parse once: the timeout then times dbt's run
    assert warm.is_completed(), warm.message
    before = live_threads()

    started = time.monotonic()
    state = flow(target="local", steps=["build", "test"], timeout_seconds=TIMEOUT, return_state=True)
    elapsed = time.monotonic() - started

    assert state.is_failed() and state.name == "TimedOut", (state.name, state.message)
    assert "stopped model slow while running" in state.message, state.message
    assert "never started model after_slow" in state.message, state.message
    assert "never started step(s) `test --target local`" in state.message, state.message
    assert elapsed < TIMEOUT + 20, f"the run took {elapsed:.1f} s to stop after a {TIMEOUT} s timeout"

    # no thread and no warehouse connection outlives the run
    assert set(live_threads()) - set(before) == set(), {i: n for i, n in live_threads().items() if i not in before}
    assert can_write(project / "mini.duckdb") == "ok"
    api = os.environ["PREFECT_API_URL"]
    assert httpx.get(f"{api}/v2/concurrency_limits/dbt-mini-local").json()["active_slots"] == 0
    assert httpx.get(f"{api}/flow_runs/{state.state_details.flow_run_id}").json()["run_count"] == 1

    folder = runs_dir / str(state.state_details.flow_run_id)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "timed_out"
    print(f"timeout {TIMEOUT} s: run took {elapsed:.1f} s, dbt stopped {record['stop_seconds']} s after the stop")
    assert record["stop_seconds"] < 10
    stopped = record["steps"][0]["interrupted"]
    assert stopped["running"] == ["model slow"]
    assert "model after_slow" in stopped["not_started"] and "model quick_0" not in stopped["not_started"]
    assert record["steps_not_started"] == ["test --target local"]
    # the warehouse query was cancelled through the adapter (DuckDB's interrupt), not waited for
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    by_id = {r["unique_id"]: r for r in results}
    assert by_id["model.mini.quick_0"]["status"] == "success"
    # never started: recorded as skipped, so `dbt retry` would build it
    assert by_id["model.mini.after_slow"]["status"] == "skipped"
    assert by_id["model.mini.after_slow"]["message"] == f"not started: timed out after {TIMEOUT} s"
    log = (folder / "dbt.log").read_text()
    assert "cancelling query on connection model.mini.slow" in log
    summary = (folder / "summary.md").read_text()
    assert "## Timed out" in summary and "`model after_slow`" in summary
