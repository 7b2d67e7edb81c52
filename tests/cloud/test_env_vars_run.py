"""A job's dbt Cloud environment variables, imported, then run by the real flow with dbt Core on DuckDB.

The dbt project reads DBT_REGION and DBT_LABEL with `env_var()` in a model, and the secret
DBT_ENV_SECRET_API_KEY in profiles.yml (dbt allows secrets only there): the model stores the
secret's md5 (read back from DuckDB), so the test knows the secret reached dbt without it being
written anywhere. "dbt Cloud" is plain `dbt build` with the values dbt Cloud gives job 4001; the
import's parameters for job 4001, run through the flow against the session's Prefect server, must
build the same rows, and the canary must be in no file, log or Prefect log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from tests.conftest import BIN, REPO
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
CANARY = "canary-prod-S3CR3T-9b2c"  # the value typed into dbt Cloud (fixtures), stored in Prefect by the operator
PROD_KEY = "dbt-env-secret-api-key-environment-400"

PROFILES = """\
envvars_demo:
  target: local
  outputs:
    local:
      type: duckdb
      path: "{{ env_var('DBTFLOW_PROJECT_DIR', '.') }}/demo.duckdb"
      threads: 1
      settings:
        "variable dbt_api_key": "{{ env_var('DBT_ENV_SECRET_API_KEY') }}"
"""
MODEL = """\
{{ config(materialized='table') }}
select '{{ env_var("DBT_REGION") }}' as region,
       '{{ env_var("DBT_LABEL", "none") }}' as label,
       md5(getvariable('dbt_api_key')) as api_key_md5
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "envvars_demo"
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text("name: envvars_demo\nversion: '1.0'\nprofile: envvars_demo\n")
    (folder / "profiles.yml").write_text(PROFILES)
    (folder / "models" / "settings_check.sql").write_text(MODEL)
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("DBT_REGION", raising=False)
    return folder


def rows(project: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(project / "demo.duckdb"), read_only=True) as con:
        return con.sql("select region, label, api_key_md5 from settings_check").fetchall()


def imported_parameters(fake: FakeDbtCloud, folder: Path) -> dict[str, Any]:
    env = {"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    argv = ["cloud", "import-jobs", "--base-url", fake.url, "--account", "1", "--job", "4001"]
    argv += ["--target-map", "Production=local", "--output", str(folder / "schedules.yaml")]
    result = runner.invoke(cli.app, [*argv, "--prefect-yaml", str(REPO / "prefect.yaml")], env=env)
    assert result.exit_code == 0, result.output
    assert f"dbtflow blocks secret {PROD_KEY}" in result.output
    (entry,) = yaml.safe_load((folder / "schedules.yaml").read_text())["schedules"]
    return dict(entry["parameters"])


def run_flow(project: Path, parameters: dict[str, Any]) -> Any:
    from dbtflow.run._flow import dbt_flow

    return dbt_flow(project, name="envvars-demo", profiles_dir=project)(**parameters, return_state=True)


def flow_run_logs(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return "\n".join(log.message for log in logs)


def test_an_imported_job_builds_what_dbt_cloud_built_and_its_secret_lands_nowhere(
    dbt_cloud: FakeDbtCloud, project: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # dbt Cloud's run of job 4001: its values, by dbt Cloud's precedence (job > environment > project)
    cloud_env = {"DBT_REGION": "eu", "DBT_LABEL": "nightly", "DBT_ENV_SECRET_API_KEY": CANARY}
    dbt = [str(BIN / "dbt"), "build", "--project-dir", str(project), "--profiles-dir", str(project)]
    done = subprocess.run(dbt, env={**os.environ, **cloud_env, "DBTFLOW_PROJECT_DIR": str(project)}, cwd=project,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    expected = rows(project)
    assert expected == [("eu", "nightly", hashlib.md5(CANARY.encode()).hexdigest())]
    (project / "demo.duckdb").unlink()

    parameters = imported_parameters(dbt_cloud, tmp_path)
    assert parameters["env_vars"]["DBT_ENV_SECRET_API_KEY"] == PROD_KEY
    stored = runner.invoke(cli.app, ["blocks", "secret", PROD_KEY], env={"DBTFLOW_SECRET_VALUE": CANARY})
    assert stored.exit_code == 0 and stored.output.strip() in (
        f"created secret/{PROD_KEY}",
        f"updated secret/{PROD_KEY}",
    )

    state = run_flow(project, parameters)
    assert state.is_completed(), state.message
    assert rows(project) == expected  # the same rows as dbt Cloud's run
    assert not any(CANARY in os.environ.get(k, "") for k in os.environ)  # the run's environment was restored
    (run_folder,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_folder / "run.json").read_text())
    assert record["env_vars"] == {"DBT_ENV_SECRET_API_KEY": None, "DBT_LABEL": "nightly", "DBT_REGION": "eu"}
    assert record["parameters"]["env_vars"]["DBT_ENV_SECRET_API_KEY"] == PROD_KEY

    captured = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".duckdb"]
    assert any(p.name == "dbt.log" for p in written) and any(p.name == "manifest.json" for p in written)
    leaks = [str(p) for p in written if CANARY.encode() in p.read_bytes()]
    assert leaks == [], leaks
    assert CANARY not in captured.out + captured.err
    logs = flow_run_logs(state.state_details.flow_run_id)
    assert "settings_check" in logs and CANARY not in logs


def test_a_secret_block_not_set_yet_fails_before_dbt_with_the_command_to_set_it(project: Path, tmp_path: Path) -> None:
    block = f"dbt-env-secret-missing-{uuid.uuid4().hex[:8]}"
    parameters = {"target": "local", "steps": ["build"], "env_vars": {"DBT_ENV_SECRET_API_KEY": block}}
    state = run_flow(project, parameters)
    assert state.is_failed()
    assert state.message == (
        f"Prefect Secret block {block!r} (for DBT_ENV_SECRET_API_KEY) does not exist: "
        f"store its value with `dbtflow blocks secret {block}`"
    )
    assert not (project / "target").exists() and not (project / "demo.duckdb").exists()  # dbt never started


def test_packages_yml_reads_the_runs_env_vars_when_packages_are_checked(project: Path) -> None:
    """dbt Cloud jobs often read a package's location or token from an env var in packages.yml."""
    helpers = project / "helpers"
    (helpers / "macros").mkdir(parents=True)
    (helpers / "dbt_project.yml").write_text("name: helpers\nversion: '1.0'\nmacro-paths: [macros]\n")
    (helpers / "macros" / "region_label.sql").write_text("{% macro region_label() %}'from-helpers'{% endmacro %}")
    (project / "packages.yml").write_text("packages:\n  - local: \"{{ env_var('DBT_HELPERS_DIR') }}\"\n")
    (project / "models" / "settings_check.sql").write_text(
        "{{ config(materialized='table') }}\nselect '{{ env_var(\"DBT_REGION\") }}' as region, "
        "{{ helpers.region_label() }} as label, null as api_key_md5\n"
    )
    parameters = {"target": "local", "steps": ["build"], "env_vars": {"DBT_HELPERS_DIR": "helpers", "DBT_REGION": "eu"}}
    profiles = project / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("      settings:\n", "").replace(
        "        \"variable dbt_api_key\": \"{{ env_var('DBT_ENV_SECRET_API_KEY') }}\"\n", ""))  # fmt: skip
    state = run_flow(project, parameters)
    assert state.is_completed(), state.message
    assert rows(project) == [("eu", "from-helpers", None)]
    assert "DBT_HELPERS_DIR" not in os.environ
