"""Bad artifacts: a cut-off or corrupt artifact leads to a safe fallback or one clear line, never a wrong result.

The other bad artifacts have their own tests: a `state` folder whose manifest.json is cut off
(tests/run/test_bad_requests.py), dbt Cloud artifacts that are truncated or of an
unknown schema (tests/parity/test_cli.py, tests/parity/test_inputs.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbtflow.dbt._project import load_project
from dbtflow.run._attempts import plan_attempt
from dbtflow.run._flow import dbt_flow
from dbtflow.run._request import build_request
from tests.run.reliability.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

MODELS = {"a": "select 1 as id", "b": "select * from {{ ref('a') }}"}


def summary(runs_dir: Path, state) -> str:
    return (runs_dir / str(state.state_details.flow_run_id) / "summary.md").read_text()


def test_a_corrupt_partial_parse_file_costs_a_full_parse_not_the_run(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", MODELS)
    flow = dbt_flow(project, name="reliability_artifacts")
    assert flow(target="local", return_state=True).is_completed()
    saved = project / "target" / "local" / "partial_parse.msgpack"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])  # a disk that filled up mid-write

    state = flow(target="local", return_state=True)

    assert state.is_completed(), state.message
    assert "full parse in" in summary(runs_dir, state)
    again = flow(target="local", return_state=True)  # the full parse wrote a good file back
    assert again.is_completed() and "partial parse in" in summary(runs_dir, again)


def test_a_retry_never_trusts_a_cut_off_record(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {**MODELS, "broken": "select no_such_column from {{ ref('b') }}"})
    state = dbt_flow(project, name="reliability_artifacts")(target="local", return_state=True)
    assert state.is_failed(), state.message
    folder = runs_dir / str(state.state_details.flow_run_id)
    request = build_request(load_project(project), target="local")
    assert plan_attempt(request, folder, 2).steps[0].retry_of == folder / "01-build"  # sound: dbt retry

    results = folder / "01-build" / "run_results.json"
    results.write_text(results.read_text()[:100])
    retry = plan_attempt(request, folder, 2)
    assert retry.steps[0].retry_of is None and retry.steps[0].step.command == "build"
    assert retry.describe() == "attempt 2: step 1 in full (no results of it to retry from)"

    record = folder / "run.json"
    record.write_text(record.read_text()[:100])
    whole = plan_attempt(request, folder, 2)
    assert not whole.resumed and [p.step for p in whole.steps] == list(request.steps)
    assert whole.first_index == 1, "attempt 2 must not overwrite attempt 1's step folder"
    assert json.loads(results.with_name("manifest.json").read_text())  # attempt 1's other artifacts are untouched
