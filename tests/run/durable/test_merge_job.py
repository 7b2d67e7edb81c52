"""An imported dbt Cloud merge job runs as its deployment says: only what the merge changed, deferring to
the last prod run kept in the run store (moto's S3 on loopback), on a fresh clone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from dbtflow import cli
from dbtflow.run._flow import dbt_flow
from tests.conftest import REPO
from tests.fakes.dbtcloud_fixture import dbt_cloud  # noqa: F401
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud
from tests.run.durable.conftest import S3, STORE, fresh_clone


def test_the_merge_jobs_deployment_builds_what_the_merge_changed_deferring_to_the_stored_prod_run(
    s3: S3,
    container: Path,
    tmp_path: Path,
    dbt_cloud: FakeDbtCloud,  # noqa: F811
) -> None:
    env = {"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    argv = ["cloud", "import-jobs", "--base-url", dbt_cloud.url, "--account", "1", "--job", "1009",
            "--target-map", "Production=local", "--output", str(tmp_path / "deploy" / "s.yaml"),
            "--prefect-yaml", str(REPO / "prefect.yaml"), "--project-dir", str(container)]  # fmt: skip
    result = CliRunner().invoke(cli.app, argv, env=env)
    assert result.exit_code == 0, result.output
    (merge,) = yaml.safe_load((tmp_path / "deploy" / "prefect.yaml").read_text())["deployments"]
    params: dict[str, Any] = merge["parameters"]
    assert params["state"] == "latest-success:local" and params["defer"] is True

    flow = dbt_flow(container, name="run_dbt_wg_merge_test")
    prod = flow(target="local", run_storage=STORE, return_state=True)  # the last prod build, stored
    assert prod.is_completed(), prod.message

    merged = fresh_clone(tmp_path / "merged")  # the default branch after the merge, in a new container
    shutil.copytree(container / ".duckdb", merged / ".duckdb", dirs_exist_ok=True)  # the warehouse outlives it
    model = merged / "models" / "marts" / "core" / "dim_brands.sql"
    model.write_text(model.read_text() + "\n-- merged\n")
    run = dbt_flow(merged, name="run_dbt_wg_merge_test")(**params, run_storage=STORE, return_state=True)
    assert run.is_completed(), run.message
    runs = tmp_path / "container-runs" / str(run.state_details.flow_run_id)  # DBTFLOW_RUNS_DIR of `container`
    results = json.loads(next(runs.glob("*-build/run_results.json")).read_text())["results"]
    models = {r["unique_id"] for r in results if r["unique_id"].startswith("model.")}
    assert "model.dbt_williamgrant.dim_brands" in models and "model.dbt_williamgrant.stg_brands" not in models
    bad = [(r["unique_id"], r["status"]) for r in results if r["status"] not in ("success", "pass", "no-op")]
    assert not bad, bad
