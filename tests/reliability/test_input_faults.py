"""Hostile or unusual input that reaches dbt: what dbt accepts we accept, and what a user must see, they see.

Each test runs the real flow on a small DuckDB project against the session's Prefect server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbtflow.flow import dbt_flow
from tests.reliability.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

UNICODE = "stg_ünïcødé_名前"


def folder(runs_dir: Path, state) -> Path:
    return runs_dir / str(state.state_details.flow_run_id)


def executed(run: Path, step: str = "01-build") -> list[str]:
    return [r["unique_id"] for r in json.loads((run / step / "run_results.json").read_text())["results"]]


def test_a_unicode_model_name_is_selected_as_dbt_selects_it(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {UNICODE: "select 1 as id", "other": "select 2 as id"})

    state = dbt_flow(project, name="input_faults")(target="local", select=UNICODE, return_state=True)

    assert state.is_completed(), state.message
    assert executed(folder(runs_dir, state)) == [f"model.mini.{UNICODE}"]
