"""Per-node observability in Prefect (engine `fast`), read back through a real server's API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect_dbt.utilities import format_resource_id

from dbtflow.run._flow import dbt_flow, runs_root
from tests.conftest import BIN, PrefectServer

BROKEN = "model.dbt_williamgrant.int_depletions_enriched"


def api(path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{os.environ['PREFECT_API_URL']}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def read_all(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a `/filter` endpoint (the server caps a page at 200)."""
    items: list[dict[str, Any]] = []
    while True:
        page = api(path, {**body, "limit": 200, "offset": len(items)})
        items += page
        if len(page) < 200:
            return items


def settled(read, expected: int, timeout: float = 180) -> list[dict[str, Any]]:
    """Poll until the server's background services have recorded `expected` items."""
    deadline = time.monotonic() + timeout
    while True:
        items = read()
        if len(items) >= expected or time.monotonic() > deadline:
            return items
        time.sleep(1)


def break_the_tenant(tenant: Path) -> None:
    """One model errors (its downstream is skipped), one singular test fails; the warn test still warns."""
    (tenant / "models" / "intermediate" / "int_depletions_enriched.sql").write_text(
        "select no_such_column from {{ ref('stg_depletions') }}\n"
    )
    (tenant / "tests" / "assert_always_fails.sql").write_text("select 1 as failing_row\n")


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> dict[str, Any]:
    """One failing build of the tenant, shared by the assertions below."""
    import shutil

    from tests.conftest import TENANT, _build_outputs

    root = tmp_path_factory.mktemp("observability")
    tenant = root / "dbt_williamgrant"
    shutil.copytree(TENANT, tenant, ignore=_build_outputs)
    break_the_tenant(tenant)
    os.environ["DBTFLOW_RUNS_DIR"] = str(root / "runs")
    try:
        state = dbt_flow(tenant, name="run_dbt_wg_observed")(target="local", return_state=True)
    finally:
        del os.environ["DBTFLOW_RUNS_DIR"]
    folder = root / "runs" / str(state.state_details.flow_run_id)
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    manifest = json.loads((folder / "01-build" / "manifest.json").read_text())
    flow_run_id = str(state.state_details.flow_run_id)
    task_runs = settled(
        lambda: read_all("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}),
        expected=len(results),
    )
    return {"state": state, "results": results, "manifest": manifest, "task_runs": task_runs, "id": flow_run_id}


def node_name(manifest: dict[str, Any], unique_id: str) -> str:
    node = manifest["nodes"].get(unique_id) or manifest["exposures"].get(unique_id)
    return f"{node['resource_type']} {node['name']}"


def test_exactly_one_task_run_per_executed_node(broken_run):
    names = [t["name"] for t in broken_run["task_runs"]]
    expected = [node_name(broken_run["manifest"], r["unique_id"]) for r in broken_run["results"]]
    assert sorted(names) == sorted(expected)
    ephemeral = [
        n["name"] for n in broken_run["manifest"]["nodes"].values() if n["config"]["materialized"] == "ephemeral"
    ]
    assert ephemeral and not any(name.endswith(f" {e}") for name in names for e in ephemeral)


def test_task_run_states_tell_the_truth(broken_run):
    by_name = {t["name"]: t for t in broken_run["task_runs"]}
    expected_state = {
        "success": ("COMPLETED", "Completed"),
        "pass": ("COMPLETED", "Completed"),
        "no-op": ("COMPLETED", "No-op"),
        "warn": ("COMPLETED", "Warning"),
        "error": ("FAILED", "Failed"),
        "fail": ("FAILED", "Failed"),
        "skipped": ("CANCELLED", "Skipped"),
    }
    seen = set()
    for result in broken_run["results"]:
        task_run = by_name[node_name(broken_run["manifest"], result["unique_id"])]
        assert (task_run["state_type"], task_run["state_name"]) == expected_state[result["status"]], result["unique_id"]
        seen.add(result["status"])
        message = task_run["state"]["message"] or ""
        if result["status"] in ("error", "fail"):
            assert result["message"].split("\n")[0][:40] in message
        if result["status"] == "skipped":
            assert "int_depletions_enriched" in message, (result["unique_id"], message)
        # the task run starts when dbt started the node (its node_started_at), at or before its compile step
        started = result["timing"][0]["started_at"] if result["timing"] else None
        if started and task_run["start_time"]:
            lead = _epoch(started) - _epoch(task_run["start_time"])
            assert -0.05 < lead < 5.0, (result["unique_id"], task_run["start_time"], started)
    assert {"success", "pass", "warn", "error", "fail", "skipped"} <= seen
    assert broken_run["state"].is_failed()


def test_node_logs_are_on_their_task_runs_while_dbt_runs(broken_run):
    logs = read_all("/logs/filter", {"logs": {"flow_run_id": {"any_": [broken_run["id"]]}}})
    task_logs = [log for log in logs if log["task_run_id"]]
    assert logs and task_logs
    by_id = {t["id"]: t["name"] for t in broken_run["task_runs"]}
    for log in task_logs:
        name = by_id[log["task_run_id"]].split(" ", 1)[1]
        assert name in log["message"] or "compiled code" in log["message"] or "Got " in log["message"], log
    fct = next(t for t in broken_run["task_runs"] if t["name"] == "model fct_shipments")
    assert any("fct_shipments" in log["message"] for log in task_logs if log["task_run_id"] == fct["id"])
    last_node_end = max(_epoch(t["end_time"]) for t in broken_run["task_runs"] if t["end_time"])
    first_log_received = min(_epoch(log["created"]) for log in task_logs)
    assert first_log_received < last_node_end, "node logs reached Prefect only after dbt had finished"


def test_asset_events_use_prefect_dbt_keys_with_lineage(broken_run):
    manifest = broken_run["manifest"]
    materialized = [
        r for r in broken_run["results"]
        if r["unique_id"].split(".")[0] in ("model", "seed", "snapshot") and r["status"] in ("success", "error")
        and manifest["nodes"][r["unique_id"]].get("relation_name")
    ]  # fmt: skip
    # the server persists events asynchronously: wait for every materialization event
    events = settled(lambda: _asset_events(broken_run["id"]), expected=len(materialized), timeout=60)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_key.setdefault(event["resource"]["prefect.resource.id"], []).append(event)
    statuses = {r["unique_id"]: r["status"] for r in broken_run["results"]}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed", "snapshot") or not node.get("relation_name"):
            continue
        key = format_resource_id("duckdb", node["relation_name"])
        kinds = {e["event"].rsplit(".", 1)[-1] for e in by_key.get(key, [])}
        if statuses.get(uid) == "success":
            assert kinds == {"succeeded"}, (uid, kinds)
        elif statuses.get(uid) == "error":
            assert kinds == {"failed"}, (uid, kinds)
        else:
            assert not kinds, (uid, kinds)
    priced = manifest["nodes"]["model.dbt_williamgrant.int_shipments_priced"]
    event = by_key[format_resource_id("duckdb", priced["relation_name"])][0]
    upstream = {r["prefect.resource.id"] for r in event["related"] if r["prefect.resource.role"] == "asset"}
    price_lists = manifest["nodes"]["model.dbt_williamgrant.stg_price_lists"]["relation_name"]
    assert format_resource_id("duckdb", price_lists) in upstream, "lineage must walk through the ephemeral model"


def _asset_events(flow_run_id: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"prefix": ["prefect.asset.materialization."]},
            "related": {"resources_in_roles": [[f"prefect.flow-run.{flow_run_id}", "flow-run"]]},
        },
        "limit": 50,
    }
    page = api("/events/filter", body)
    events = list(page["events"])
    while page.get("next_page"):  # the events API pages by 50, with a link to the next page
        response = httpx.get(page["next_page"], timeout=30)
        response.raise_for_status()
        page = response.json()
        events += page["events"]
    return events


def _epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.usefixtures("prefect_api")
def test_repeated_runs_reuse_the_parse(tenant: Path):
    flow = dbt_flow(tenant, name="run_dbt_wg_parse")
    first = flow(target="local", command="compile", select="stg_brands", return_state=True)
    second = flow(target="local", command="compile", select="stg_brands", return_state=True)
    other_vars = flow(target="local", command="compile", select="stg_brands", vars={"x": 1}, return_state=True)

    def parse_of(state) -> str:
        record = json.loads((runs_root() / str(state.state_details.flow_run_id) / "run.json").read_text())
        return str(record["steps"][0]["parse"])

    assert parse_of(first).startswith("full parse")
    assert parse_of(second).startswith("partial parse")
    assert parse_of(other_vars).startswith("full parse") and "vars" in parse_of(other_vars)
    summary = (runs_root() / str(second.state_details.flow_run_id) / "summary.md").read_text()
    assert "partial parse in" in summary


@pytest.mark.usefixtures("prefect_api")
def test_prefect_dbt_engine_is_a_working_fallback(tenant: Path):
    state = dbt_flow(tenant, name="run_dbt_wg_fallback")(
        target="local",
        command="build --select +stg_markets --indirect-selection cautious",
        engine="prefect-dbt",
        return_state=True,
    )
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    folder = runs_root() / flow_run_id
    executed = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    # the server records task runs from events, asynchronously: wait for all of them
    task_runs = settled(
        lambda: read_all("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}), len(executed)
    )
    assert any(t["name"] == "model stg_markets" for t in task_runs)


@pytest.mark.slow
def test_server_killed_mid_run_dbt_finishes_and_the_process_exits(tenant: Path, tmp_path: Path):
    server = PrefectServer(tmp_path)
    runs = tmp_path / "runs"
    env = {**os.environ, "PREFECT_API_URL": server.url, "DBTFLOW_RUNS_DIR": str(runs), "PREFECT_HOME": str(tmp_path)}
    env["PREFECT_CLIENT_MAX_RETRIES"] = "1"
    cmd = [str(BIN / "dbtflow"), "run", "--project-dir", str(tenant), "--target", "local"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("START" in p.read_text() for p in runs.glob("*/dbt.log")):
            assert time.monotonic() < deadline and proc.poll() is None, "dbt never started"
            time.sleep(0.2)
        server.stop()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    (folder,) = runs.iterdir()
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    assert len(results) > 100 and {r["status"] for r in results} <= {"success", "pass", "warn", "no-op"}
    assert "reporting" in output.lower() or "prefect's api" in output.lower(), output[-3000:]
