"""Hostile or unusual input that reaches dbt: what dbt accepts we accept, and what a user must see, they see.

Each test runs the real flow on a small DuckDB project against the session's Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from dbtflow.run._flow import dbt_flow
from tests.conftest import BIN
from tests.run.reliability.conftest import make_project

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


SECRET = "s3cr3t-Tok3n-4242"  # pragma: allowlist secret (a made-up value the test looks for)


def test_secret_looking_vars_are_masked_everywhere_dbtflow_writes_or_prints(
    tmp_path: Path, runs_dir: Path, prefect_api: str
) -> None:
    """dbt gets the value (the table holds it); run.json, summary.md, dbt.log and the console show `*****`."""
    model = "{{ log('using token ' ~ var('api_token'), info=True) }}\nselect '{{ var('api_token') }}' as token"
    project = make_project(tmp_path / "mini", {"uses_token": model})
    env = {**os.environ, "DBTFLOW_RUNS_DIR": str(runs_dir), "PREFECT_API_URL": prefect_api}
    vars_text = json.dumps({"api_token": SECRET, "region": "eu"})

    done = subprocess.run(
        [str(BIN / "dbtflow"), "run", "--project-dir", str(project), "--vars", vars_text],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = runs_dir.iterdir()
    assert duckdb.connect(str(project / "mini.duckdb")).sql("select token from uses_token").fetchall() == [(SECRET,)]
    for name in ("run.json", "summary.md", "dbt.log"):
        text = (run / name).read_text()
        assert SECRET not in text, f"{name} holds the secret"
    record = json.loads((run / "run.json").read_text())
    assert json.loads(record["parameters"]["vars"]) == {"api_token": "*****", "region": "eu"}
    assert "using token *****" in (run / "dbt.log").read_text()
    assert SECRET not in done.stdout and SECRET not in done.stderr
    assert "using token *****" in done.stdout
    stored = stored_parameters(record["flow_run_id"])  # what Prefect's UI and API show of the flow run
    assert SECRET not in json.dumps(stored), "the flow run's parameters in Prefect hold the secret"
    assert json.loads(stored["vars"]) == {"api_token": "*****", "region": "eu"}


def stored_parameters(flow_run_id: str) -> dict[str, object]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_flow_run(flow_run_id).parameters)


def test_a_selection_that_matches_nothing_is_a_loud_warning_not_a_quiet_green(tmp_path: Path, runs_dir: Path) -> None:
    project = make_project(tmp_path / "mini", {"a": "select 1 as id"})

    state = dbt_flow(project, name="input_faults")(target="local", select="does_not_exist_model", return_state=True)

    assert state.is_completed(), state.message  # as plain dbt: nothing failed
    assert "matched no node" in state.message and "does_not_exist_model" in state.message, state.message
    summary = (folder(runs_dir, state) / "summary.md").read_text()
    assert "Completed with warnings" in summary
    assert "`build --select does_not_exist_model --target local` matched no node" in summary, summary
