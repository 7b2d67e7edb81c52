"""Warehouse faults: a clear failure that names the cause, never a hang."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from dbtflow.run._flow import dbt_flow
from tests.fakesnowflake import FakeSnowflake
from tests.run.reliability.conftest import duckdb_locked, make_project

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


# Snowflake: fakesnow's server behind the login gate (tests/fakesnowflake.py), a plain profile, one thread.
SNOWFLAKE_PROFILE = """\
mini:
  target: snow
  outputs:
    snow:
      type: snowflake
      account: fakesnow
      user: FAULT
      password: "{{{{ env_var('DBT_ENV_SECRET_FAULT_PASSWORD') }}}}"
      role: FAULT_ROLE
      warehouse: WG_WH
      database: WG
      schema: DBT
      host: 127.0.0.1
      port: {port}
      protocol: http
      threads: 1
      connect_retries: 2
      connect_timeout: 1
"""
FIRST_DONE = re.compile(r"OK created sql table model \S+\.first\b", re.I)
CHAIN = 20  # views after the first table, one thread: the server goes away with most of them still to run


def test_snowflake_gone_mid_run_fails_naming_it_within_a_bound(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = uuid.uuid4().hex
    snowflake = FakeSnowflake(tmp_path)
    snowflake.set_user("FAULT", passwords=[password])
    monkeypatch.setenv("DBT_ENV_SECRET_FAULT_PASSWORD", password)
    monkeypatch.setenv("DBTFLOW_SNOWFLAKE_RETRY_SECONDS", "10")  # default 120
    chain = {
        f"v{i:02d}": f"select id from {{{{ ref('{'first' if i == 1 else f'v{i - 1:02d}'}') }}}}"
        for i in range(1, CHAIN + 1)
    }
    project = make_project(tmp_path / "mini", {"first": "{{ config(materialized='table') }}\nselect 1 as id", **chain})
    (project / "profiles.yml").write_text(SNOWFLAKE_PROFILE.format(port=snowflake.port))
    stopped: list[float] = []

    def stop_after_the_first_node() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if any(FIRST_DONE.search(p.read_text(errors="replace")) for p in runs_dir.glob("*/dbt.log")):
                snowflake.stop()
                stopped.append(time.monotonic())
                return
            time.sleep(0.05)

    stopper = threading.Thread(target=stop_after_the_first_node, daemon=True)
    stopper.start()
    try:
        state = dbt_flow(project, name="reliability_warehouse")(target="snow", return_state=True)
        ended = time.monotonic()
    finally:
        stopper.join(5)
        snowflake.stop()

    assert stopped, "the server was never stopped: dbt did not build the first model"
    print(f"Snowflake stopped mid-run: the run failed {ended - stopped[0]:.1f} s later; {state.message}")
    assert state.is_failed(), state.message
    assert ended - stopped[0] < 90, "the run hung on a warehouse that was gone"
    folder = runs_dir / str(state.state_details.flow_run_id)
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    statuses = [r["status"] for r in sorted(results, key=lambda r: r["unique_id"].split(".")[-1])]  # first, v01, ...
    failed = statuses.index("error")  # the first node that met the stopped server
    assert statuses == ["success"] * failed + ["error"] + ["skipped"] * (CHAIN - failed), statuses
    assert failed < CHAIN, "the chain finished before the server stopped"
    message = next(r["message"] for r in results if r["status"] == "error")
    cause = "Snowflake at 127.0.0.1 did not answer for 10 s of retries; giving up (DBTFLOW_SNOWFLAKE_RETRY_SECONDS=10)"
    assert cause in message and cause in state.message, state.message
    assert password not in (folder / "dbt.log").read_text()
