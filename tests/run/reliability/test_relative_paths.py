"""Relative paths in a project resolve against the project, as `cd project && dbt build` and dbt Cloud do.

`dbtflow run --project-dir project` is started from another folder, through the real command,
against the session's Prefect server; dbtflow's own relative paths stay the caller's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import BIN
from tests.run.reliability.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

RELATIVE_PROFILE = """\
mini:
  target: local
  outputs:
    local:
      type: duckdb
      path: ./db.duckdb
      schema: main
      threads: 2
"""
HOOK = "create or replace table main.raw_orders as select * from read_csv('demo_files/orders.csv')"


def test_relative_paths_in_profile_hooks_and_models_are_the_projects(tmp_path: Path, prefect_api: str) -> None:
    project = make_project(
        tmp_path / "project",
        {
            "orders": "select * from main.raw_orders",
            "orders_export": "{{ config(materialized='external', location='exports/orders.parquet') }}\n"
            "select * from {{ ref('orders') }}",
        },
        project_yml=f'on-run-start:\n  - "{HOOK}"\n',
    )
    (project / "profiles.yml").write_text(RELATIVE_PROFILE)
    (project / "demo_files").mkdir()
    (project / "exports").mkdir()  # DuckDB writes into a folder that exists, under plain dbt too
    (project / "demo_files" / "orders.csv").write_text("id,amount\n1,10\n2,20\n3,30\n")
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DBTFLOW_RUNS_DIR", "DBTFLOW_PROJECT_DIR")}
    env["PREFECT_API_URL"] = prefect_api

    def dbtflow_run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "dbtflow"), "run", "--project-dir", "../project", "--target", "local"],
            cwd=caller, capture_output=True, text=True, env={**env, **extra}, timeout=300,
        )  # fmt: skip

    done = dbtflow_run(DBTFLOW_RUNS_DIR="my-runs")  # relative: the caller's folder, not the project's

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (caller / "db.duckdb").exists()
    with duckdb.connect(str(project / "db.duckdb"), read_only=True) as con:
        assert con.execute("select sum(amount) from main.orders").fetchone() == (60,)
    assert duckdb.sql(f"select count(*) from '{project / 'exports' / 'orders.parquet'}'").fetchone() == (3,)
    (run,) = (caller / "my-runs").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert not (project / "my-runs").exists()

    again = dbtflow_run()  # the default runs folder `.dbtflow/runs` is the caller's too

    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(list((caller / ".dbtflow" / "runs").iterdir())) == 1
    assert not (project / ".dbtflow").exists()
