"""dbt Cloud environment variables -> each imported job's `env_vars`, against the fake dbt Cloud API on loopback.

Project 40 of the fixtures sets DBT_REGION as a project default overridden per environment,
DBT_LABEL as a project default overridden for job 4001, and DBT_ENV_SECRET_API_KEY (a secret
dbt Cloud never serves) per project and for the Production environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from dbtflow.run._parameters import InvalidRequest, RunParameters
from tests.conftest import REPO
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

runner = CliRunner()
CANARIES = ("canary-project-S3CR3T-4f1e", "canary-prod-S3CR3T-9b2c")  # what was typed into dbt Cloud's UI
PROD_KEY = "dbt-env-secret-api-key-environment-400"
PROJECT_KEY = "dbt-env-secret-api-key-project-40"


def invoke(fake: FakeDbtCloud, folder: Path, *args: str) -> Any:
    env = {"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    argv = ["cloud", "import-jobs", "--base-url", fake.url, "--account", "1", "--output", str(folder / "s.yaml")]
    return runner.invoke(cli.app, [*argv, "--prefect-yaml", str(REPO / "prefect.yaml"), *args], env=env)


def test_the_fake_serves_env_vars_as_the_spec_says_and_never_a_secret(dbt_cloud: FakeDbtCloud) -> None:
    headers = {"Authorization": f"Token {ADMIN_TOKEN}"}
    base = f"{dbt_cloud.url}/api/v2/accounts/1"
    env = httpx.get(f"{base}/environments/400/", headers=headers).json()
    assert dbt_cloud.spec.errors("EnvironmentV2Enveloped", env) == []
    served = {(v["name"], v["type"], v["display_value"]) for v in env["data"]["custom_environment_variables"]}
    assert served == {
        ("DBT_REGION", "project", "us"),
        ("DBT_REGION", "environment", "eu"),
        ("DBT_LABEL", "project", "default-label"),
        ("DBT_ENV_SECRET_API_KEY", "project", "*****"),
        ("DBT_ENV_SECRET_API_KEY", "environment", "*****"),
    }  # not staging's, not the deleted DBT_RETIRED, not a developer's personal value
    plain = httpx.get(f"{base}/jobs/4001/", headers=headers).json()["data"]
    assert "custom_environment_variables" not in plain  # only with include_related
    job = httpx.get(f"{base}/jobs/4001/?include_related=[custom_environment_variables]", headers=headers).json()
    assert dbt_cloud.spec.errors("HumanReadableJobDefinitionEnveloped", job) == []
    (override,) = job["data"]["custom_environment_variables"]
    assert (override["name"], override["type"], override["display_value"]) == ("DBT_LABEL", "job", "nightly")
    for item in [*env["data"]["custom_environment_variables"], override]:
        assert dbt_cloud.spec.errors("CustomEnvironmentVariable", item) == []
    listed = httpx.get(f"{base}/jobs/?project_id=40&include_related=custom_environment_variables", headers=headers)
    assert [len(j["custom_environment_variables"]) for j in listed.json()["data"]] == [1, 0, 0]
    assert not any(c in httpx.get(f"{base}/environments/", headers=headers).text for c in CANARIES)


def test_import_resolves_job_over_environment_over_project(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    result = invoke(dbt_cloud, tmp_path, "--project", "40", "--target-map", "Production=prod", "--target-map",
                    "Staging=dev")  # fmt: skip
    assert result.exit_code == 0, result.output
    (staging,) = yaml.safe_load((tmp_path / "s.yaml").read_text())["schedules"]
    assert staging["dbt_cloud_job_id"] == 4003
    assert staging["parameters"]["env_vars"] == {
        "DBT_ENV_SECRET_API_KEY": PROJECT_KEY,  # the project's default secret: its own block
        "DBT_LABEL": "default-label",
        "DBT_ONLY_STAGING": "yes",
        "DBT_REGION": "eu-staging",  # the environment's value over the project's
    }
    # 4001 and its chained child 4002 are deployments of their own: the same parameter in prefect.yaml
    chained = {d["name"]: d for d in yaml.safe_load((tmp_path / "prefect.yaml").read_text())["deployments"]}
    nightly, after = chained["eu-nightly"], chained["eu-after-nightly"]
    assert nightly["parameters"]["env_vars"] == {
        "DBT_ENV_SECRET_API_KEY": PROD_KEY,
        "DBT_LABEL": "nightly",  # job 4001's override
        "DBT_REGION": "eu",
    }
    assert nightly["schedules"][0]["parameters"]["env_vars"] == nightly["parameters"]["env_vars"]
    assert after["parameters"]["env_vars"]["DBT_LABEL"] == "default-label"  # no override on 4002
    assert after["triggers"][0]["parameters"]["env_vars"] == after["parameters"]["env_vars"]
    assert "job_variables" not in nightly  # a deploy-time placeholder would store the secret in clear
    # one line per secret block, with the exact command that stores its value
    lines = result.output.splitlines()
    assert f"  DBT_ENV_SECRET_API_KEY (environment 400; job 4001, 4002): dbtflow blocks secret {PROD_KEY}" in lines
    assert f"  DBT_ENV_SECRET_API_KEY (project 40; job 4003): dbtflow blocks secret {PROJECT_KEY}" in lines
    written = "".join(p.read_text() for p in tmp_path.iterdir()) + result.output
    assert not any(c in written for c in CANARIES) and "*****" not in written
    assert "prefect.blocks" not in written  # no block placeholder anywhere (prefect deploy would resolve it)
    jobs_read = dbt_cloud.requests_to("GET", r"/jobs/$")
    assert jobs_read and all("custom_environment_variables" in r.query["include_related"][0] for r in jobs_read)


def test_the_imported_parameters_are_what_the_flow_accepts(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    assert invoke(dbt_cloud, tmp_path, "--job", "4003", "--target-map", "Staging=dev").exit_code == 0
    (entry,) = yaml.safe_load((tmp_path / "s.yaml").read_text())["schedules"]
    assert RunParameters.parse(entry["parameters"]).env_vars == entry["parameters"]["env_vars"]


@pytest.mark.parametrize(
    ("name", "level", "why"),
    [
        ("MY_VAR", {"type": "environment", "environment_id": 400}, "'MY_VAR' is not a valid environment variable"),
        ("DBT_lower", {"type": "project"}, "'DBT_lower' is not a valid environment variable name"),
        ("DBT_CLOUD_RUN_ID", {"type": "job", "job_definition_id": 4003}, "uses the reserved prefix DBT_CLOUD_"),
    ],
)
def test_an_invalid_name_is_one_line_and_nothing_is_written(
    dbt_cloud: FakeDbtCloud, tmp_path: Path, name: str, level: dict[str, Any], why: str
) -> None:
    dbt_cloud.add_env_var(project_id=40, name=name, display_value="x", **level)
    result = invoke(dbt_cloud, tmp_path, "--project", "40", "--target-map", "Production=prod", "--target-map",
                    "Staging=dev")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and why in result.stderr, result.stderr
    assert result.stderr.startswith("error: dbt Cloud job 40") and "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("env_vars", "why"),
    [
        ({"region": "eu"}, "'region' is not a valid environment variable name"),
        ({"DBT_PORT": 5432}, "DBT_PORT must be a string"),
        (
            {"DBT_ENV_SECRET_API_KEY": "hunter2-Pasted-Value!"},  # pragma: allowlist secret
            "must name the Prefect Secret block that holds it",
        ),
        ({"DBT_ENV_SECRET_DBTFLOW_X": "blk"}, "reserved prefix DBT_ENV_SECRET_DBTFLOW_"),  # pragma: allowlist secret
        ("DBT_REGION=eu", "env_vars must be a mapping"),
    ],
)
def test_bad_env_vars_parameters_are_one_line_and_never_show_a_secret(env_vars: Any, why: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        RunParameters.parse({"env_vars": env_vars})
    message = str(caught.value)
    assert why in message and "\n" not in message and "hunter2" not in message
