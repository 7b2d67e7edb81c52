"""SIGINT or SIGTERM mid-run: dbt stops cleanly, what finished is kept, Prefect is told, `dbt retry` resumes.

A real `dbtflow run` child process on a DuckDB project with a query that takes minutes, real
signals, the session's Prefect server.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN
from tests.run.reliability.conftest import SLOW_SQL, can_write, make_project

pytestmark = pytest.mark.usefixtures("prefect_api")

# slow for the first run, quick for the retry (MINI_SLOW=0): the retry must finish what the stop cut short
SLOW = "{% if env_var('MINI_SLOW', '1') == '1' %}" + SLOW_SQL + "{% else %}select 1 as n{% endif %}"


def _wait_for(pattern: str, text: str, child: subprocess.Popen[str], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in glob.glob(pattern):
            if text in Path(path).read_text(errors="replace"):
                return
        assert child.poll() is None, f"dbtflow ended (rc {child.returncode}) before {text!r}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen in {pattern} within {seconds} s")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_dbt_cleanly_and_retry_resumes(
    tmp_path: Path, prefect_api: str, sig: signal.Signals, code: int
) -> None:
    project = make_project(
        tmp_path / "mini",
        {
            "first": "select 1 as id",
            "slow": SLOW.replace("range(1000000) b", "range(1000000) b, {{ ref('first') }}"),
            "after_slow": "select * from {{ ref('slow') }}",
            **{f"quick_{i}": f"select {i} as id" for i in range(3)},
        },
        target_yml="threads: 2\n",
    )
    runs = tmp_path / "runs"
    target_path = project / "target" / "local"
    env = {**os.environ, "DBTFLOW_RUNS_DIR": str(runs), "PREFECT_API_URL": prefect_api}
    argv = [str(BIN / "dbtflow"), "run", "--project-dir", str(project), "--target", "local"]
    out = (tmp_path / "out.txt").open("w")
    child = subprocess.Popen(
        [*argv, "--step", "build", "--step", "test"], stdout=out, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        _wait_for(str(runs / "*" / "dbt.log"), "Began running node model.mini.slow", child)
        time.sleep(2)  # the slow query is in DuckDB now
        stopped_at = time.monotonic()
        child.send_signal(sig)
        rc = child.wait(90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        out.close()
    output = (tmp_path / "out.txt").read_text()

    assert rc == code, f"rc {rc}:\n{output[-4000:]}"
    assert time.monotonic() - stopped_at < 60
    assert "terminate called" not in output and "Traceback" not in output, output[-4000:]
    assert f"cancelled: dbt on local stopped by {sig.name}" in output, output[-3000:]
    (run,) = runs.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "cancelled" and record["signal"] == sig.name
    assert record["steps_not_started"] == ["test --target local"]
    assert record["steps"][0]["interrupted"]["running"] == ["model slow"]
    kept = json.loads((run / "01-build/run_results.json").read_text())["results"]
    results = {r["unique_id"]: r["status"] for r in kept}
    assert results["model.mini.quick_0"] == "success" and results["model.mini.first"] == "success"
    assert results["model.mini.after_slow"] == "skipped"  # never started: recorded so `dbt retry` runs it
    assert "## Stopped by " + sig.name in (run / "summary.md").read_text()
    assert can_write(project / "mini.duckdb") == "ok"

    # Prefect: the flow run Cancelled, no task run left Running, the slot free
    flow_run = httpx.get(f"{prefect_api}/flow_runs/{run.name}").json()
    assert flow_run["state"]["type"] == "CANCELLED", flow_run["state"]
    tasks = httpx.post(f"{prefect_api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run.name]}}}).json()
    states = {t["name"]: (t["state"]["type"], t["state"]["name"]) for t in tasks}
    assert states["model slow"] == ("CANCELLED", "Stopped"), states
    assert not [name for name, (kind, _) in states.items() if kind == "RUNNING"], states
    assert httpx.get(f"{prefect_api}/v2/concurrency_limits/dbt-mini-local").json()["active_slots"] == 0

    # the project's own `dbt retry` (SIGINT), or `dbtflow retry <flow-run-id>` from the stored run (SIGTERM)
    again_argv = [*argv, "--command", "retry"]
    if sig == signal.SIGTERM:
        (target_path / "run_results.json").unlink()  # as on a fresh clone: only the stored run has them
        again_argv = [str(BIN / "dbtflow"), "retry", run.name, "--project-dir", str(project)]
    retried = subprocess.run(again_argv, capture_output=True, text=True, env={**env, "MINI_SLOW": "0"}, timeout=300)

    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    (again,) = [r for r in runs.iterdir() if r != run]
    rerun = {r["unique_id"] for r in json.loads((again / "01-retry/run_results.json").read_text())["results"]}
    assert {"model.mini.slow", "model.mini.after_slow"} <= rerun
    assert "model.mini.quick_0" not in rerun
