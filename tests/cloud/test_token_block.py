"""The dbt Cloud token from a Prefect Secret block (a real Prefect server on loopback)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from dbtflow.cloud._client import DbtCloudClient, resolve_token
from dbtflow.errors import UserError
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud


def test_token_from_a_prefect_secret_block(prefect_api: str, dbt_cloud: FakeDbtCloud) -> None:
    from prefect.blocks.system import Secret

    Secret(value=ADMIN_TOKEN).save("dbt-cloud-token", overwrite=True)
    token = resolve_token("dbt-cloud-token")
    assert token.source == "Prefect Secret block 'dbt-cloud-token'"
    assert ADMIN_TOKEN not in repr(token) and ADMIN_TOKEN not in str(token)
    with DbtCloudClient(dbt_cloud.url, token, 1) as client:
        assert client.get_job(1001).name == "Prod daily build"

    with pytest.raises(UserError, match="Prefect Secret block 'no-such-block'") as exc:
        resolve_token("no-such-block")
    assert "\n" not in str(exc.value)

    result = CliRunner().invoke(
        cli.app,
        ["cloud", "import-jobs", "--account", "1", "--job", "1001", "--base-url", dbt_cloud.url,
         "--token-block", "dbt-cloud-token", "-o", "-"],
        env={"DBT_CLOUD_API_TOKEN": None},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["schedules"][0]["dbt_cloud_job_id"] == 1001
    assert ADMIN_TOKEN not in result.output
