"""Blocks setup, rotation and the one-line errors against the session's real Prefect server (no dbt).

Each test works on a copy of the tenant whose block names are unique to it, so tests never
see each other's blocks on the shared server.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtflow.dbt._project import Project, load_project
from dbtflow.errors import UserError
from dbtflow.secrets._blocks import (
    CONNECTOR,
    CREDENTIALS,
    PROFILE,
    TARGET_CONFIGS,
    Secrets,
    Settings,
    block_names,
    setup_target,
)
from dbtflow.secrets._profiles import resolved_profiles
from tests.keys import new_key

pytestmark = pytest.mark.usefixtures("prefect_api")

SETTINGS = Settings(
    account="acme-wg", user="DBT_WG_DEV", role="DBT_DEV", warehouse="WG_WH", database="WG_DEV", schema="DBT"
)


@pytest.fixture
def project(tenant: Path) -> Project:
    profiles = tenant / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("dbt-wg-", f"t{uuid.uuid4().hex[:10]}-"))
    return load_project(tenant)


def document(slug: str, name: str, *, include_secrets: bool) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_block_document_by_name(name, slug, include_secrets=include_secrets)


def delete(slug: str, name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name(name, slug).id)


def dbt_cli_profile(name: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from prefect_dbt.cli import DbtCliProfile

    profile = DbtCliProfile.load(name)
    return dict(profile.get_profile()[profile.name]["outputs"][profile.target])


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_setup_creates_the_blocks_once_and_stores_each_secret_once_masked(project: Project):
    key = new_key("a passphrase")
    secrets = Secrets(private_key=key.private_pem, private_key_passphrase="a passphrase")
    names = block_names(project, "dev")

    changes = setup_target(project, "dev", SETTINGS, secrets)
    assert [str(c).split(" (")[0] for c in changes] == [
        f"created {CREDENTIALS}/{names.credentials}",
        f"created {CONNECTOR}/{names.connector}",
        f"created {TARGET_CONFIGS}/{names.target_configs}",
        f"created {PROFILE}/{names.profile}",
    ]
    assert {"account", "private_key", "private_key_passphrase"} <= set(changes[0].fields)
    assert all(c.action == "unchanged" for c in setup_target(project, "dev", SETTINGS, secrets))
    nothing_given = setup_target(project, "dev", Settings(), None)  # keeps everything
    assert all(c.action == "unchanged" for c in nothing_given)

    moved = setup_target(project, "dev", Settings(warehouse="WG_WH_L", host="h.privatelink", port=8443), None)
    assert [(c.action, c.fields) for c in moved] == [
        ("unchanged", ()),
        ("updated", ("warehouse",)),
        ("updated", ("extras",)),
        ("unchanged", ()),
    ]

    for slug in (CREDENTIALS, CONNECTOR, TARGET_CONFIGS, PROFILE):  # what a Viewer sees through the API or UI
        text = json.dumps(document(slug, names.credentials, include_secrets=False).data)
        assert not any(line in text for line in key.secret_lines()) and "a passphrase" not in text, slug
    stored = document(CREDENTIALS, names.credentials, include_secrets=True).data
    assert stored["private_key"].strip() == key.private_pem.strip() and stored["authenticator"] == "snowflake_jwt"

    profile = dbt_cli_profile(names.profile)  # prefect-dbt's block-based path renders a whole profile
    assert profile["private_key"].strip() == key.private_pem.strip()
    assert (profile["warehouse"], profile["host"], profile["port"]) == ("WG_WH_L", "h.privatelink", 8443)


def test_rotate_replaces_only_the_secrets_and_reaches_every_block(project: Project):
    old, new = new_key(), new_key()
    names = block_names(project, "dev")
    setup_target(project, "dev", SETTINGS, Secrets(private_key=old.private_pem))
    before = document(CREDENTIALS, names.credentials, include_secrets=True)

    rotated = Secrets(private_key=new.private_pem)
    changes = setup_target(project, "dev", Settings(account="ignored"), rotated, rotate=True)

    assert [(c.action, c.block, c.fields) for c in changes] == [
        ("rotated", f"{CREDENTIALS}/{names.credentials}", ("private_key",))
    ]
    after = document(CREDENTIALS, names.credentials, include_secrets=True)
    assert after.id == before.id and after.data["account"] == "acme-wg"
    assert after.data["private_key"].strip() == new.private_pem.strip()
    assert dbt_cli_profile(names.profile)["private_key"].strip() == new.private_pem.strip()
    assert setup_target(project, "dev", Settings(), Secrets(private_key=new.private_pem), rotate=True)[0].action == (
        "unchanged"
    )

    to_password = setup_target(project, "dev", Settings(), Secrets(password="pw-rotated"), auth="password", rotate=True)
    assert to_password[0].action == "rotated"
    assert set(to_password[0].fields) == {"authenticator", "password", "private_key"}
    stored = document(CREDENTIALS, names.credentials, include_secrets=True).data
    assert stored["private_key"] is None and stored["password"] == "pw-rotated"


def test_setup_mistakes_are_one_line_errors(project: Project):
    key = new_key("pp")
    plain = Secrets(private_key=new_key().private_pem)
    assert error_of(setup_target, project, "dev", SETTINGS, None).startswith(
        "set DBTFLOW_SNOWFLAKE_PRIVATE_KEY (or DBTFLOW_SNOWFLAKE_PRIVATE_KEY_FILE) in the environment to create"
    )
    assert "set DBTFLOW_SNOWFLAKE_PASSWORD" in error_of(setup_target, project, "dev", SETTINGS, None, auth="password")
    assert error_of(setup_target, project, "dev", Settings(account="a", user="u"), plain) == (
        "missing settings for target 'dev': --warehouse (or DBTFLOW_SNOWFLAKE_WAREHOUSE), "
        "--database (or DBTFLOW_SNOWFLAKE_DATABASE), --schema (or DBTFLOW_SNOWFLAKE_SCHEMA)"
    )
    assert "is not a private key in PEM" in error_of(setup_target, project, "dev", SETTINGS, Secrets(private_key="x"))
    encrypted = Secrets(private_key=key.private_pem)
    assert "is encrypted and no passphrase was given" in error_of(setup_target, project, "dev", SETTINGS, encrypted)
    assert "nothing to rotate" in error_of(setup_target, project, "dev", SETTINGS, plain, rotate=True)
    assert "unknown target 'qa'" in error_of(setup_target, project, "qa", SETTINGS, plain)
    assert "refers to no snowflake-credentials block" in error_of(setup_target, project, "local", SETTINGS, plain)
    setup_target(project, "dev", SETTINGS, plain)
    assert "to switch to password auth for" in error_of(setup_target, project, "dev", Settings(), None, auth="password")


def test_the_cli_prints_what_changed_never_a_value(project: Project):
    from typer.testing import CliRunner

    from dbtflow.cli import app

    key = new_key("cli passphrase")
    env = {"DBTFLOW_SNOWFLAKE_PRIVATE_KEY": key.private_pem}
    env["DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = "cli passphrase"
    env |= {f"DBTFLOW_SNOWFLAKE_{k.upper()}": v for k, v in vars(SETTINGS).items() if v}
    args = ["blocks", "setup", "--target", "dev", "--project-dir", str(project.project_dir)]

    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    names = block_names(project, "dev")
    assert f"created snowflake-credentials/{names.credentials} (account, user" in result.output
    assert "cli passphrase" not in result.output and not any(line in result.output for line in key.secret_lines())
    assert "WG_DEV" not in result.output  # not even a non-secret value

    missing = CliRunner().invoke(app, [*args, "--rotate"], env={})
    assert missing.exit_code == 2 and missing.output.startswith("error: set DBTFLOW_SNOWFLAKE_PRIVATE_KEY")
    bad = CliRunner().invoke(app, [*args, "--auth", "oauth"], env=env)
    assert bad.exit_code == 2 and "--auth must be keypair or password" in bad.output


def test_run_time_errors_name_the_block_and_the_setup_command(project: Project):
    from prefect.blocks.system import Secret
    from prefect_snowflake import SnowflakeCredentials

    names = block_names(project, "dev")
    setup_cmd = "create them with `dbtflow blocks setup --target dev`"

    def resolve_error() -> str:
        with pytest.raises(UserError) as info, resolved_profiles(project, "dev"):
            pass
        assert "\n" not in str(info.value)
        return str(info.value)

    assert resolve_error() == (
        f"target 'dev' has no Prefect blocks yet (profiles.yml needs {CREDENTIALS}/{names.credentials}): {setup_cmd}"
    )
    setup_target(project, "dev", SETTINGS, Secrets(private_key=new_key().private_pem))
    delete(CONNECTOR, names.connector)
    assert resolve_error() == (
        f"Prefect block {CONNECTOR}/{names.connector} does not exist (profiles.yml target 'dev' needs it): "
        "create it with `dbtflow blocks setup --target dev`"
    )
    Secret(value="not a connector").save(names.connector)
    assert f"expects a {CONNECTOR} block named '{names.connector}', but '{names.connector}' is a secret block" in (
        resolve_error()
    )
    setup_target(project, "dev", SETTINGS, None)  # recreates the connector; the secret block stays beside it
    profiles = project.profiles_path
    good, wrong = f"{CONNECTOR}.{names.connector}.warehouse", f"{CREDENTIALS}.{names.credentials}.warehouse"
    profiles.write_text(profiles.read_text().replace(good, wrong))
    project = load_project(project.project_dir)  # a run reads profiles.yml once, when it loads the project
    assert f"Prefect block {CREDENTIALS}/{names.credentials} has no field 'warehouse'" in resolve_error()
    profiles.write_text(profiles.read_text().replace(wrong, good))
    project = load_project(project.project_dir)

    encrypted = new_key("pp")  # stored by hand (UI, API) without its passphrase
    creds = SnowflakeCredentials(account="a", user="u", private_key=encrypted.private_pem)
    creds.save(names.credentials, overwrite=True)
    message = resolve_error()
    assert message == (
        f"the private key in Prefect block {CREDENTIALS}/{names.credentials} is encrypted and no passphrase was given "
        "(DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE): store a good one with `dbtflow blocks setup --target dev --rotate`"
    )
    SnowflakeCredentials(account="a", user="u", private_key="garbage", authenticator="snowflake_jwt").save(
        names.credentials, overwrite=True
    )
    assert "is not a private key in PEM" in resolve_error()


def test_the_rendered_profile_holds_no_block_value_and_the_environment_is_cleaned(project: Project):
    from prefect.variables import Variable

    Variable.set("dbtflow_test_query_tag", "tag-from-a-variable", overwrite=True)
    profiles = project.profiles_path
    profiles.write_text(
        profiles.read_text().replace(
            "query_tag: dbtflow-dev", 'query_tag: "{{ prefect.variables.dbtflow_test_query_tag }}"'
        )
    )
    project = load_project(project.project_dir)  # a run reads profiles.yml once, when it loads the project
    key = new_key("render passphrase")
    setup_target(project, "dev", SETTINGS, Secrets(key.private_pem, private_key_passphrase="render passphrase"))
    before = dict(os.environ)

    with resolved_profiles(project, "dev") as folder:
        path = folder / "profiles.yml"
        text = path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "render passphrase" not in text and "BEGIN" not in text and "acme-wg" not in text and "WG_WH" not in text
        output = yaml.safe_load(text)["dbt_williamgrant"]["outputs"]["dev"]
        for field in ("private_key", "private_key_passphrase", "password"):  # dbt scrubs these from its logs
            assert output[field].startswith("{{ env_var('DBT_ENV_SECRET_DBTFLOW_SNOWFLAKE_CREDENTIALS_"), field
        assert output["account"].startswith("{{ env_var('DBTFLOW_BLOCK_SNOWFLAKE_CREDENTIALS_")
        assert output["port"].endswith("| as_number }}")  # port stays a number
        assert output["query_tag"] == "tag-from-a-variable"  # Prefect variables are not secrets: resolved in place
        added = {k: v for k, v in os.environ.items() if k not in before}
        secret_vars = {k for k in added if k.startswith("DBT_ENV_SECRET_")}
        assert any(k.endswith("_PRIVATE_KEY") for k in secret_vars)
        assert any(k.endswith("_PRIVATE_KEY_PASSPHRASE") for k in secret_vars)
        assert "render passphrase" in added.values() and "acme-wg" in added.values()
        assert all("_DEV_" in k for k in added)  # dev's blocks only

    assert dict(os.environ) == before and not folder.exists()
