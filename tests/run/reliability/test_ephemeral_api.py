"""Prefect's ephemeral API (no PREFECT_API_URL): every node's task run is recorded before it goes.

The ephemeral API is a server process `dbtflow run` starts and stops at exit; its
task_run_recorder turns the task-run events into task runs after they arrive. Stopped too early
it loses them (CancelledError in the recorder): the test reads what it kept, from its database
file in PREFECT_HOME, after the process ended.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.run.reliability.conftest import make_project

pytestmark = [pytest.mark.slow]

MODELS = int(os.environ.get("MODELS", 100))  # 200 nodes: prefect-dbt kept 163 before the fix (80 kept all)


def project(root: Path) -> Path:
    """MODELS views in a chain of fan-outs, each with a not_null test: 2 * MODELS nodes."""
    models = {"m0": "select 1 as id"}
    models |= {f"m{i}": f"select id from {{{{ ref('m{(i - 1) // 2}') }}}}" for i in range(1, MODELS)}
    make_project(root, models)
    tests = "\n".join(
        f"  - name: m{i}\n    columns:\n      - name: id\n        data_tests: [not_null]" for i in range(MODELS)
    )
    (root / "models" / "schema.yml").write_text(f"version: 2\nmodels:\n{tests}\n")
    return root


def run_on_ephemeral_api(tmp_path: Path, engine: str) -> tuple[subprocess.CompletedProcess[str], Counter[str]]:
    """`dbtflow run` without PREFECT_API_URL; the task runs per state its ephemeral API kept."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env |= {"PREFECT_HOME": str(home), "DBTFLOW_RUNS_DIR": str(tmp_path / "runs")}
    argv = [str(BIN / "dbtflow"), "run", "--project-dir", str(project(tmp_path / "mini")), "--target", "local",
            "--engine", engine]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    with sqlite3.connect(home / "prefect.db") as db:
        states = Counter(state for (state,) in db.execute("select state_type from task_run"))
    return result, states


@pytest.mark.parametrize("engine", ["fast", "prefect-dbt"])
def test_every_nodes_task_run_is_recorded_final_on_the_ephemeral_api(tmp_path: Path, engine: str) -> None:
    result, states = run_on_ephemeral_api(tmp_path, engine)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Starting temporary server" in output
    assert states == {"COMPLETED": 2 * MODELS}, f"{engine}: {dict(states)}\n{output[-2000:]}"
