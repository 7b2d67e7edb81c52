"""What a user sees of hooks and of skips in Prefect and in the summary (engine `fast`, the session's server).

On-run-start/-end hooks are dbt `operation` nodes without NodeStart/NodeFinished events: each
still gets its task run. A model skipped under `dbt build` because a test on its source failed
names that test, as the task run's message and in the summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbtflow.run._flow import dbt_flow
from tests.run.reliability.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_api")


def api(path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{os.environ['PREFECT_API_URL']}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def task_runs(flow_run_id: str, expected: int, timeout: float = 60) -> dict[str, dict[str, Any]]:
    """name -> task run of the flow run, once the server has recorded `expected` of them in a final state."""
    deadline = time.monotonic() + timeout
    while True:
        found = api("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        final = [t for t in found if t["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")]
        if len(final) >= expected or time.monotonic() > deadline:
            return {t["name"]: t for t in found}
        time.sleep(0.5)


def logs_of(task_run_id: str) -> str:
    lines = api("/logs/filter", {"logs": {"task_run_id": {"any_": [task_run_id]}}})
    return "\n".join(line["message"] for line in lines)


HOOKS = """\
on-run-start:
  - "create or replace table main.lookup as select * from no_such_table"
  - "select 1"
on-run-end:
  - "select 2"
"""


def test_a_failing_on_run_start_hook_has_its_task_run_and_the_failures_it_causes(
    tmp_path: Path, runs_dir: Path
) -> None:
    project = make_project(
        tmp_path / "mini",
        {"uses_lookup": "select * from main.lookup", "plain": "select 1 as id"},
        project_yml=HOOKS,
    )

    state = dbt_flow(project, name="hooks")(target="local", return_state=True)

    assert state.is_failed()
    assert "operation mini-on-run-start-0 error" in state.message and "no_such_table" in state.message
    runs = task_runs(str(state.state_details.flow_run_id), expected=5)
    hook = runs["operation mini-on-run-start-0"]
    assert (hook["state"]["type"], hook["state"]["name"]) == ("FAILED", "Failed")
    assert "mini.on-run-start.0 failed" in hook["state"]["message"]
    assert "no_such_table" in logs_of(hook["id"]), "dbt's error must reach the hook's task-run log"
    skipped = runs["operation mini-on-run-start-1"]["state"]
    assert (skipped["type"], skipped["name"]) == ("CANCELLED", "Skipped")
    assert "operation.mini.mini-on-run-start-0" in skipped["message"]
    assert runs["operation mini-on-run-end-0"]["state"]["type"] == "COMPLETED"
    assert runs["model uses_lookup"]["state"]["type"] == "FAILED"
    assert runs["model plain"]["state"]["type"] == "COMPLETED"
    assert "dbt:operation" in hook["tags"]
    summary = (runs_dir / str(state.state_details.flow_run_id) / "summary.md").read_text()
    assert "- operation `mini-on-run-start-1`: skipped because of `operation.mini.mini-on-run-start-0`" in summary


SOURCES = """\
version: 2
sources:
  - name: raw
    schema: main
    tables:
      - name: events
        columns:
          - name: id
            data_tests: [not_null]
"""


def test_a_model_skipped_by_a_failing_source_test_names_that_test(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(
        tmp_path / "mini",
        {
            "stg_events": "select id from {{ source('raw', 'events') }}",
            "fct_events": "select * from {{ ref('stg_events') }}",
        },
        project_yml='on-run-start:\n  - "create or replace table main.events as select null::int as id"\n',
    )
    (project / "models" / "sources.yml").write_text(SOURCES)

    state = dbt_flow(project, name="source_test_skips")(target="local", return_state=True)

    assert state.is_failed() and "(2 skipped)" in state.message, state.message
    runs = task_runs(str(state.state_details.flow_run_id), expected=4)
    failed = [name for name, t in runs.items() if t["state"]["type"] == "FAILED"]
    assert failed == ["test source_not_null_raw_events_id"], failed
    for model in ("stg_events", "fct_events"):
        skip = runs[f"model {model}"]["state"]
        assert (skip["type"], skip["name"]) == ("CANCELLED", "Skipped")
        assert skip["message"].startswith("skipped because of test.mini.source_not_null_raw_events_id"), skip
    summary = (runs_dir / str(state.state_details.flow_run_id) / "summary.md").read_text()
    assert "- model `stg_events`: skipped because of `test.mini.source_not_null_raw_events_id" in summary
    assert "an upstream failure" not in summary
