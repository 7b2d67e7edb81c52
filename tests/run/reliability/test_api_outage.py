"""The Prefect API goes away during a run and comes back (same address, same database)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, PrefectServer
from tests.run.reliability.conftest import WAITER, make_project

pytestmark = [pytest.mark.slow]

MODELS = {
    "before": "select 1 as id",
    "after_waiter": "select * from {{ ref('waiter') }}",
    **{f"after_{i}": f"select id + {i} as id from {{{{ ref('after_waiter') }}}}" for i in range(5)},
}


def read_all(api: str, path: str, body: dict[str, object]) -> list[dict[str, object]]:
    response = httpx.post(f"{api}{path}", json={**body, "limit": 200}, timeout=30)
    response.raise_for_status()
    return list(response.json())


def test_dbt_finishes_through_an_outage_and_everything_reaches_prefect_when_it_is_back(tmp_path: Path) -> None:
    project = make_project(tmp_path / "mini", MODELS)
    (project / "models" / "waiter.py").write_text(WAITER)
    release, runs, home = tmp_path / "release", tmp_path / "runs", tmp_path / "server"
    home.mkdir()
    server = PrefectServer(home)  # Prefect's defaults, in-memory lease storage included
    env = {**os.environ, "PREFECT_API_URL": server.url, "DBTFLOW_RUNS_DIR": str(runs)}
    env["DBTFLOW_TEST_RELEASE"] = str(release)
    cmd = [str(BIN / "dbtflow"), "run", "--project-dir", str(project), "--target", "local"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any("python table model main.waiter" in p.read_text() for p in runs.glob("*/dbt.log")):
            assert time.monotonic() < deadline and proc.poll() is None, "dbt never reached the waiting model"
            time.sleep(0.2)
        server.stop()
        went_away = time.monotonic()
        time.sleep(55)  # batches and lease renewals meet a dead API; longer than the lease, as a slow restart is
        server = PrefectServer(home, port=server.port)  # the same server again: same address, same database
        outage = time.monotonic() - went_away
        release.touch()  # dbt runs its last nodes with the API back
        output, _ = proc.communicate(timeout=300)
        (folder,) = runs.iterdir()
        flow_run_id = folder.name
        flow_run = httpx.get(f"{server.url}/flow_runs/{flow_run_id}", timeout=30).json()
        slot = httpx.get(f"{server.url}/v2/concurrency_limits/dbt-mini-local", timeout=30).json()
        task_runs = read_all(server.url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        logs = read_all(server.url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}})
        artifact = httpx.get(f"{server.url}/artifacts/dbt-mini-local/latest", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    print(f"API outage: {outage:.0f} s")

    # dbt finished, its artifacts are kept, the run succeeded
    assert proc.returncode == 0, output[-3000:]
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    assert len(results) == 8 and {r["status"] for r in results} == {"success"}
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed" and not record["steps"][0]["reporting"], record["steps"][0]
    # and Prefect has all of it: the final state, a task run per node, the logs, the summary
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    assert sorted(t["name"] for t in task_runs) == sorted(f"model {r['unique_id'].split('.')[-1]}" for r in results)
    assert {t["state_type"] for t in task_runs} == {"COMPLETED"}
    assert any("after_4" in log["message"] for log in logs), "node logs after the outage never arrived"
    assert artifact.status_code == 200 and "8 success" in artifact.json()["description"]
    # the server forgot the slot's lease when it restarted (in-memory leases): the run took it back and freed it
    print("\n".join(line for line in output.splitlines() if "slot" in line or "lease" in line))
    assert "the Prefect server forgot the lease of the slot 'dbt-mini-local'" in output, output[-3000:]
    assert slot["active_slots"] == 0, slot
