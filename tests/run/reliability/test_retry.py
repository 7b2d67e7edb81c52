"""Retry from failure: with flow retries, a retry reruns only what failed or was skipped (`dbt retry`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbtflow.run._flow import dbt_flow
from tests.run.reliability.conftest import duckdb_locked, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

# `flaky` reads a table that the project's on-run-end hook creates: it fails on the first attempt
# and succeeds on any later one, with no help from the test.
FLAKY = {
    "quick": "select 1 as id",
    "flaky": "{{ config(materialized='table') }}\nselect ok from main.flag",
    "after_flaky": "select ok from {{ ref('flaky') }}",
}
SCHEMA = """
version: 2
models:
  - name: after_flaky
    columns:
      - name: ok
        data_tests: [not_null]
"""
ON_RUN_END = """
on-run-end:
  - "create table if not exists main.flag as select 1 as ok"
"""


def flow_run(flow_run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{os.environ['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    return dict(response.json())


def results(folder: Path) -> dict[str, str]:
    return {r["unique_id"]: r["status"] for r in json.loads((folder / "run_results.json").read_text())["results"]}


def test_a_retry_reruns_only_what_failed_or_was_skipped(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", FLAKY, ON_RUN_END)
    (project / "models" / "schema.yml").write_text(SCHEMA)
    flow = dbt_flow(project, name="reliability_retry", retries=1)

    state = flow(target="local", return_state=True)

    assert state.is_completed(), state.message
    assert "attempt 2 reran 3 node(s)" in state.message, state.message
    folder = runs_dir / str(state.state_details.flow_run_id)
    first, second = results(folder / "01-build"), results(folder / "02-retry")
    assert first["model.mini.quick"] == "success" and first["model.mini.flaky"] == "error"
    again = {uid for uid, status in first.items() if status in ("error", "fail", "skipped")}
    assert {uid.rsplit(".", 1)[0] if uid.startswith("test.") else uid for uid in again} == {
        "model.mini.flaky",
        "model.mini.after_flaky",
        "test.mini.not_null_after_flaky_ok",
    }, first
    nodes = {uid for uid in second if not uid.startswith("operation.")}  # the project's hooks run on every attempt
    assert nodes == again, "attempt 2 must rerun exactly what failed or was skipped"
    assert {second[uid] for uid in nodes} <= {"success", "pass"}, second

    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and record["attempt"] == 2
    assert [(s["attempt"], s["command"], s["folder"], s["success"]) for s in record["steps"]] == [
        (1, "build", "01-build", False),
        (2, "retry", "02-retry", True),
    ]
    assert record["steps"][1]["retry_of"] == "01-build"
    summary = (folder / "summary.md").read_text()
    assert "## Attempts" in summary
    assert "Built on attempt 2: model `after_flaky`, model `flaky`, test `not_null_after_flaky_ok`." in summary
    assert "Built on attempt 1: model `quick`." in summary
    assert flow_run(str(state.state_details.flow_run_id))["run_count"] == 2


def test_a_retry_after_no_node_ran_reruns_the_whole_request(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {"a": "select 1 as id", "b": "select * from {{ ref('a') }}"})
    flow = dbt_flow(project, name="reliability_retry", retries=1, retry_delay_seconds=3)

    # the database is locked by another process until the first attempt has failed on it
    with duckdb_locked(project / "mini.duckdb", release_when=(f"{runs_dir}/*/run.json", '"status": "failed"')):
        state = flow(target="local", return_state=True)

    assert state.is_completed(), state.message
    folder = runs_dir / str(state.state_details.flow_run_id)
    assert not (folder / "01-build" / "run_results.json").exists() or not results(folder / "01-build")
    assert set(results(folder / "02-build")) == {"model.mini.a", "model.mini.b"}
    record = json.loads((folder / "run.json").read_text())
    first, second = record["steps"]
    assert (first["attempt"], first["command"], first["success"]) == (1, "build", False)
    assert "Could not set lock on file" in first["error"], first["error"]
    assert (second["attempt"], second["command"], second["folder"], second["success"]) == (2, "build", "02-build", True)
    assert "retry_of" not in second


def test_a_failure_no_retry_can_fix_is_final(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {"a": "select 1 as id"})
    flow = dbt_flow(project, name="reliability_retry", retries=2)

    state = flow(target="local", select="a;rm -rf /", return_state=True)

    assert state.is_failed() and state.message.startswith("invalid request:"), (state.type, state.message)
    assert flow_run(str(state.state_details.flow_run_id))["run_count"] == 1


SECRET = "s3cr3t-Tok3n-4242"  # pragma: allowlist secret (a made-up value the test looks for)


def test_a_retry_gets_secret_vars_that_prefect_only_holds_masked(tmp_path: Path, runs_dir: Path) -> None:
    """Issue 19 item 12: the stored parameters are masked at the start; the in-process retry still has the value.

    A run started from the stored parameters (a retry on a new worker, "Run again") would get the
    mask: it is refused in one line before dbt starts, never run with `*****`.
    """
    models = {**FLAKY, "flaky": FLAKY["flaky"].replace("select ok", "select ok, '{{ var(\"api_token\") }}' as token")}
    project = make_project(tmp_path / "mini", models, ON_RUN_END)
    flow = dbt_flow(project, name="reliability_retry", retries=1)
    vars_ = {"api_token": SECRET, "region": "eu"}

    state = flow(target="local", vars=vars_, return_state=True)

    assert state.is_completed(), state.message
    import duckdb

    with duckdb.connect(str(project / "mini.duckdb")) as db:
        assert db.sql("select token from flaky").fetchall() == [(SECRET,)], "the retry must get the real value"
    stored = flow_run(str(state.state_details.flow_run_id))
    assert stored["run_count"] == 2
    assert SECRET not in json.dumps(stored), "Prefect's stored flow run holds the secret"
    assert stored["parameters"]["vars"] == {"api_token": "*****", "region": "eu"}

    again = flow(**stored["parameters"], return_state=True)  # what a run from the stored parameters gets

    assert again.is_failed()
    assert str(again.message).startswith("invalid request: vars api_token: the value is the mask *****"), again.message
    assert not (runs_dir / str(again.state_details.flow_run_id)).exists(), "dbt must not start"


def test_dbtflow_retry_of_a_run_with_secret_vars_is_refused_not_run_with_the_mask(
    tmp_path: Path, runs_dir: Path
) -> None:
    """`dbt retry` reads vars from the kept run_results, which hold `*****`: refused in one line, nothing put back."""
    from typer.testing import CliRunner

    from dbtflow.cli import app

    models = {**FLAKY, "flaky": FLAKY["flaky"].replace("select ok", "select ok, '{{ var(\"api_token\") }}' as token")}
    project = make_project(tmp_path / "mini", models, ON_RUN_END)
    failed = dbt_flow(project, name="reliability_retry")(target="local", vars={"api_token": SECRET}, return_state=True)
    assert failed.is_failed(), failed.message
    left = project / "target" / "local" / "run_results.json"  # what the failed run left where dbt retry reads
    before = left.read_bytes()
    left.write_bytes(b"{}")  # a fresh clone: dbtflow retry would put the stored results here

    result = CliRunner().invoke(app, ["retry", str(failed.state_details.flow_run_id), "--project-dir", str(project)])

    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "vars api_token are kept only masked (*****)" in line and "Secret blocks" in line, line
    assert left.read_bytes() == b"{}" != before, "nothing may be put back"
