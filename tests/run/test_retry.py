"""`dbt retry` through the flow: it finds the previous run's results in the target's folder (the runbook's recipe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbtflow.run._flow import dbt_flow, runs_root

pytestmark = pytest.mark.usefixtures("prefect_api")


def run(project: Path, **params: Any) -> Any:
    return dbt_flow(project, name="run_dbt_wg_retry_test")(**params, return_state=True)


def results(state: Any) -> dict[str, str]:
    folder = runs_root() / str(state.state_details.flow_run_id)
    (step,) = [p for p in folder.iterdir() if p.is_dir()]
    if not (step / "run_results.json").exists():
        return {}
    return {r["unique_id"]: r["status"] for r in json.loads((step / "run_results.json").read_text())["results"]}


def test_retry_reruns_what_failed_once_it_is_fixed(tenant: Path) -> None:
    model = tenant / "models" / "intermediate" / "int_months.sql"
    original = model.read_text()

    nothing_yet = run(tenant, target="local", command="retry")
    assert nothing_yet.is_failed() and "Could not find previous run" in nothing_yet.message
    assert results(nothing_yet) == {}  # no stale results credited to the failed retry

    model.write_text("select no_such_column from no_such_table\n")
    failed = run(tenant, target="local", select="int_months")
    assert failed.is_failed() and results(failed)["model.dbt_williamgrant.int_months"] == "error"

    model.write_text(original)
    retried = run(tenant, target="local", command="retry")

    assert retried.is_completed(), retried.message
    again = results(retried)  # the failed model and the tests skipped because of it, now built
    names = {uid.split(".")[2]: status for uid, status in again.items()}
    assert names == {"int_months": "success", "not_null_int_months_month_start": "pass",
                     "unique_int_months_month_start": "pass"}  # fmt: skip
