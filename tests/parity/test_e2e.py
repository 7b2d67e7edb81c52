"""End to end: the tenant built through the flow vs a "dbt Cloud" run made by plain dbt with another selection.

The "dbt Cloud" side is plain `dbt build` with a different selection, run first as a subprocess
with its own target path (dbt Cloud's last run). Then a model's code changes (a newer commit)
and the Prefect side is a real flow run (embedded DuckDB target, real Prefect server on
loopback) with a docs step after the build. Every difference must be explained; the report is
published to the flow run. The same "dbt Cloud" run is then served by the fake dbt Cloud API on
loopback (`--cloud-job`: its last successful run, steps fetched with `?step=N`) and must give the
same report.

Order matters: the flow runs dbt in this process, whose DuckDB connection keeps the database
file locked, so the plain dbt subprocess must run before it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from tests.conftest import BIN
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud, FakeStep, artifacts_from_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

CLOUD_SELECT = ["--select", "+tag:daily", "--exclude", "stg_fx_rates+"]


def test_flow_run_against_plain_dbt_every_difference_explained(
    tenant: Path, tmp_path: Path, dbt_cloud: FakeDbtCloud, monkeypatch: pytest.MonkeyPatch
):
    from dbtflow.run._flow import dbt_flow, runs_root

    cloud_target = tmp_path / "cloud-target"
    env = {**os.environ, "DBTFLOW_PROJECT_DIR": str(tenant), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    cmd = [
        str(BIN / "dbt"),
        "build",
        *CLOUD_SELECT,
        "--target",
        "local",
        "--profiles-dir",
        str(tenant),
        "--project-dir",
        str(tenant),
        "--target-path",
        str(cloud_target),
        "--log-path",
        str(tmp_path / "logs"),
    ]
    done = subprocess.run(cmd, env=env, cwd=tenant, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]

    changed = tenant / "models" / "marts" / "core" / "dim_brands.sql"
    changed.write_text(changed.read_text() + "\n-- a commit after dbt Cloud's last run\n")
    state = dbt_flow(tenant, name="run_dbt_wg_parity")(target="local", generate_docs=True, return_state=True)
    assert state.is_completed(), state.message
    run_folder = runs_root() / str(state.state_details.flow_run_id)
    assert [p.name for p in sorted(run_folder.iterdir()) if p.is_dir()] == ["01-build", "02-docs-generate"]

    report_json = tmp_path / "parity.json"
    result = CliRunner().invoke(
        app,
        [
            "parity",
            "--cloud-artifacts",
            str(cloud_target),
            "--prefect-run",
            "latest",
            "--json-out",
            str(report_json),
            "--markdown-out",
            str(tmp_path / "parity.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report_json.read_text())
    assert data["counts"]["unexplained"] == 0 and data["exit_code"] == 0
    assert all(d["explained"] for d in data["differences"])
    reasons = Counter(d["reason"] for d in data["differences"])
    assert reasons["selection"] >= 20 and reasons["changed_code"] == 1, reasons
    assert {d["kind"] for d in data["differences"] if d["reason"] == "selection"} == {"only_prefect"}
    by_id = {d["unique_id"]: d for d in data["differences"]}
    assert by_id["model.dbt_williamgrant.dim_brands"]["kind"] == "changed_code"
    assert by_id["model.dbt_williamgrant.stg_fx_rates"]["reason"] == "selection"
    assert (
        "`dbt build --select +tag:daily --exclude stg_fx_rates+`"
        in by_id["model.dbt_williamgrant.stg_fx_rates"]["explanation"]
    )
    assert data["counts"]["same"] > 50
    prefect_steps = {s["folder"]: s["used"] for s in data["prefect"]["steps"]}
    assert prefect_steps == {"01-build": True, "02-docs-generate": False}
    assert data["prefect"]["flow_run_id"] == str(state.state_details.flow_run_id)

    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/artifacts/filter",
        json={
            "artifacts": {
                "flow_run_id": {"any_": [data["prefect"]["flow_run_id"]]},
                "key": {"any_": ["parity-dbt-williamgrant"]},
            }
        },
    )
    response.raise_for_status()
    (artifact,) = response.json()
    assert artifact["type"] == "markdown" and "# dbt parity: ✅" in artifact["data"]

    # The same run as dbt Cloud serves it: a job whose last successful run built, then generated docs.
    job_id = next(j["id"] for j in dbt_cloud.jobs.values() if j["account_id"] == 1)
    build = " ".join(["dbt", "build", *CLOUD_SELECT])
    dbt_cloud.add_run(job_id, [FakeStep(build, artifacts_from_dir(cloud_target)), FakeStep("dbt docs generate", {})])
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", ADMIN_TOKEN)
    served_json = tmp_path / "parity-served.json"
    args = ["--cloud-job", str(job_id), "--cloud-host", dbt_cloud.url, "--cloud-account-id", "1"]
    served = CliRunner().invoke(app, ["parity", *args, "--prefect-run", "latest", "--json-out", str(served_json)])
    assert served.exit_code == 0, served.output
    again = json.loads(served_json.read_text())
    assert again["counts"] == data["counts"]
    assert [(d["unique_id"], d["reason"]) for d in again["differences"]] == [
        (d["unique_id"], d["reason"]) for d in data["differences"]
    ]
