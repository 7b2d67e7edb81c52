"""The tenant through the flow on the embedded DuckDB target, against a real Prefect server."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbtflow.run._flow import dbt_flow

pytestmark = pytest.mark.usefixtures("prefect_api")


def run(project: Path, **params: Any):
    flow = dbt_flow(project, name="run_dbt_wg_test")
    return flow(**params, return_state=True)


def run_folder(state) -> Path:
    from dbtflow.run._flow import runs_root

    return runs_root() / str(state.state_details.flow_run_id)


def step_results(folder: Path, index: int = 0) -> dict[str, Any]:
    step = sorted(p for p in folder.iterdir() if p.is_dir())[index]
    return json.loads((step / "run_results.json").read_text())


def expected_build_counts(manifest: dict[str, Any]) -> Counter[str]:
    """What `dbt build` must execute, from the manifest: every enabled node but ephemeral models and sources."""
    counts: Counter[str] = Counter()
    for node in manifest["nodes"].values():
        if (
            node["resource_type"] in ("model", "seed", "snapshot", "test")
            and node["config"]["materialized"] != "ephemeral"
        ):
            counts[node["resource_type"]] += 1
    counts["unit_test"] += len(manifest.get("unit_tests") or {})
    counts["exposure"] += len(manifest.get("exposures") or {})  # dbt >= 1.10 runs them as no-ops
    return +counts


def summary_artifact(flow_run_id) -> str:
    """The run's markdown summary, read through the Prefect API as the UI does."""
    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}, "type": {"any_": ["markdown"]}}},
    )
    response.raise_for_status()
    (artifact,) = response.json()
    return str(artifact["data"])


def test_tenant_builds_then_rebuilds(tenant: Path):
    state = run(tenant, target="local")

    assert state.is_completed(), state.message
    folder = run_folder(state)
    results = step_results(folder)
    manifest = json.loads((folder / "01-build" / "manifest.json").read_text())
    executed = Counter(r["unique_id"].split(".")[0] for r in results["results"])
    assert executed == expected_build_counts(manifest)
    assert executed["model"] >= 25 and executed["snapshot"] >= 1
    statuses = Counter(r["status"] for r in results["results"])
    assert statuses["warn"] == 1, statuses
    assert set(statuses) == {"success", "pass", "warn", "no-op"}
    warned = [r["unique_id"] for r in results["results"] if r["status"] == "warn"]
    assert manifest["nodes"][warned[0]]["config"]["severity"].lower() == "warn"
    assert (folder / "dbt.log").stat().st_size > 0
    markdown = summary_artifact(state.state_details.flow_run_id)
    assert "Completed with warnings" in markdown and manifest["nodes"][warned[0]]["name"] in markdown

    again = run(tenant, target="local")  # incremental and snapshot, second time
    assert again.is_completed(), again.message
    second = step_results(run_folder(again))
    kinds = {r["unique_id"]: r["status"] for r in second["results"]}
    incremental = [u for u, n in manifest["nodes"].items() if n["config"]["materialized"] == "incremental"]
    assert incremental and all(kinds[u] == "success" for u in incremental)


def test_failing_model_fails_the_flow_and_skips_downstream(tenant: Path):
    broken = tenant / "models" / "intermediate" / "int_shipments_priced.sql"
    broken.write_text("select no_such_column from {{ ref('stg_shipments') }}\n")

    state = run(tenant, target="local")

    assert state.is_failed()
    assert "int_shipments_priced" in state.message and "no_such_column" in state.message
    folder = run_folder(state)
    results = {r["unique_id"]: r for r in step_results(folder)["results"]}
    broken_id = "model.dbt_williamgrant.int_shipments_priced"
    assert results[broken_id]["status"] == "error"
    manifest = json.loads((folder / "01-build" / "manifest.json").read_text())
    downstream = [c for c in manifest["child_map"][broken_id] if c.startswith("model.")]
    assert downstream and all(results[c]["status"] == "skipped" for c in downstream)
    assert (folder / "01-build" / "manifest.json").exists() and (folder / "dbt.log").exists()
    kept_sql = list((folder / "01-build").rglob("int_shipments_priced.sql"))
    assert kept_sql and "no_such_column" in kept_sql[0].read_text()
    markdown = summary_artifact(state.state_details.flow_run_id)
    assert "skipped because of `model.dbt_williamgrant.int_shipments_priced`" in markdown


def test_parameters_reach_dbt(tenant: Path, tmp_path: Path):
    state = run(
        tenant,
        target="local",
        steps=["seed --select brands markets", "run --select stg_brands stg_markets"],
        exclude="stg_markets",
        vars={"wg_probe": "seen"},
        full_refresh=True,
        threads=2,
    )
    assert state.is_completed(), state.message
    folder = run_folder(state)
    seed, run_ = step_results(folder, 0), step_results(folder, 1)
    for results, which, select in ((seed, "seed", ["brands", "markets"]), (run_, "run", ["stg_brands", "stg_markets"])):
        args = results["args"]
        assert args["which"] == which
        assert args["select"] == select
        assert args["exclude"] == ["stg_markets"]
        assert args["vars"] == {"wg_probe": "seen"}
        assert args["full_refresh"] is True
        assert args["threads"] == 2
    assert {r["unique_id"] for r in run_["results"]} == {"model.dbt_williamgrant.stg_brands"}

    state = run(tenant, target="local", command="compile", selector="daily", state=str(folder / "01-seed"))
    assert state.is_completed(), state.message
    args = step_results(run_folder(state))["args"]
    assert args["which"] == "compile" and args["selector"] == "daily"
    assert Path(args["state"]) == folder / "01-seed"


def test_invalid_request_through_the_flow_starts_no_dbt(tenant: Path, tmp_path: Path):
    for params, fragment in (
        ({"steps": []}, "steps is empty"),
        ({"threads": 0}, "threads must be between 1 and 64"),
        ({"target": "qa"}, "unknown target 'qa'"),
        ({"vars": "[1]"}, "vars must be a mapping"),
    ):
        state = run(tenant, target=params.pop("target", "local"), **params)
        assert state.is_failed()
        assert fragment in state.message
    assert not (tenant / "target").exists()
    assert not (tmp_path / "runs").exists()


def test_entrypoint_binds_the_tenant_and_describes_parameters():
    from flows.dbt_wg_flow import PROJECT_DIR, run_dbt_wg

    assert run_dbt_wg.name == "run_dbt_wg"
    assert (PROJECT_DIR / "dbt_project.yml").exists()
    schema = run_dbt_wg.parameters.model_dump()
    props = schema["properties"]
    for name in (
        "command",
        "target",
        "select",
        "exclude",
        "selector",
        "vars",
        "full_refresh",
        "state",
        "defer",
        "threads",
        "steps",
        "generate_docs",
        "timeout_seconds",
        "fail_fast",
    ):
        assert props[name].get("description"), name
    assert props["command"]["default"] == "build" and props["target"]["default"] == "dev"


def test_cli_runs_any_project_and_prints_the_summary(tenant: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from dbtflow.cli import app

    other = tmp_path / "other_project"
    shutil.copytree(tenant, other)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--project-dir",
            str(other),
            "--step",
            "build --select +stg_markets --indirect-selection cautious",
            "--target",
            "local",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "artifacts:" in result.stdout and "Completed" in result.stdout


def test_timeout_ends_the_run_timed_out(tenant: Path):
    state = run(tenant, target="local", timeout_seconds=2)

    assert state.is_failed() and state.name == "TimedOut"
    assert "timed out" in state.message and "timeout_seconds=2" in state.message
    record = json.loads((run_folder(state) / "run.json").read_text())
    assert record["status"] == "timed_out"


def test_make_run_path_on_the_ephemeral_api_reports_without_warnings(tenant: Path, tmp_path: Path):
    """`make run`'s path: no PREFECT_API_URL, so Prefect starts its ephemeral API; the reporter must find it."""
    import subprocess

    from tests.conftest import BIN

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    cmd = [str(BIN / "dbtflow"), "run", "--project-dir", str(tenant), "--target", "local", "--select", "brands"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Starting temporary server" in output
    assert "gave up" not in output and "could not" not in output, output[-3000:]
    assert "completed: dbt on local: 1 success" in output
