"""`dbtflow deploy` records the deployment it replaces; `dbtflow rollback --deployment-version` re-applies it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbtflow.cli import _deploy as cli_deploy
from dbtflow.cli import app
from dbtflow.deploy import _history as deploy_history
from tests.cutover.conftest import PULL, Site

pytestmark = pytest.mark.timeout(300)
NEW_PULL = [
    {"prefect.deployments.steps.git_clone": {**PULL[0]["prefect.deployments.steps.git_clone"], "branch": "release-2"}},
    PULL[1],
]


def snapshot(site: Site) -> dict[str, Any]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        found = deploy_history.snapshot(client, site.deployment)
    assert found is not None
    return found


def crons(snap: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {s["slug"]: (s["schedule"]["cron"], s["active"]) for s in snap["schedules"]}


def fake_prefect_deploy(site: Site, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`prefect deploy` stands in as an API update of what a deploy of a new commit changes."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if "deploy" not in argv or "prefect" not in argv:
            return real_run(argv, *args, **kwargs)
        calls.append(list(argv))
        update = DeploymentUpdate(
            entrypoint="flows/dbt_wg_flow_v2.py:run_dbt_wg",
            parameters={"command": "build", "target": "dev", "threads": 8},
            pull_steps=NEW_PULL,
            tags=["v2"],
        )
        with get_client(sync_client=True) as client:
            client.update_deployment(site.deployment_id, update)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(cli_deploy.subprocess, "run", run)
    return calls


def write_prefect_yaml(site: Site, folder: Path) -> Path:
    schedules = [
        {"slug": "prod", "cron": "30 7 * * 1-5", "timezone": "UTC", "active": False, "parameters": {"target": "prod"}},
        {"slug": "weekly", "cron": "0 8 * * 0", "timezone": "UTC", "active": False, "parameters": {"target": "prod"}},
    ]
    deployment = {"name": site.short, "entrypoint": "flows/dbt_wg_flow.py:run_dbt_wg", "schedules": schedules}
    path = folder / "prefect.yaml"
    path.write_text(yaml.safe_dump({"name": "dbtflow", "deployments": [deployment]}, sort_keys=False))
    return path


def test_rollback_re_applies_the_configuration_the_last_deploy_replaced(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = snapshot(site)
    calls = fake_prefect_deploy(site, monkeypatch)
    result = CliRunner().invoke(
        app, ["deploy", "--prefect-file", str(write_prefect_yaml(site, tmp_path)), "--name", site.short]
    )
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and f"recorded {site.deployment}'s current configuration as " in result.output
    deployed = snapshot(site)
    assert deployed["config"]["entrypoint"] == "flows/dbt_wg_flow_v2.py:run_dbt_wg"
    assert crons(deployed) == {"prod": ("30 7 * * 1-5", False), "weekly": ("0 8 * * 0", False)}

    # cutover happened since: prod is active; a deployment rollback keeps that (the journal's business)
    from prefect import get_client

    with get_client(sync_client=True) as client:
        prod = next(s for s in client.read_deployment_schedules(site.deployment_id) if s.slug == "prod")
        client.update_deployment_schedule(site.deployment_id, prod.id, active=True)

    plan = site.run("rollback", "--deployment", site.deployment, "--deployment-version", "previous", "--plan")
    assert plan.exit_code == 0, plan.output
    assert "~ re-apply deployment" in plan.output and "flows/dbt_wg_flow.py:run_dbt_wg" in plan.output
    assert "@main" in plan.output and snapshot(site)["config"] == deployed["config"]

    result = site.run("rollback", "--deployment", site.deployment, "--deployment-version", "previous")
    assert result.exit_code == 0, result.output
    restored = snapshot(site)
    assert restored["config"] == before["config"]  # entrypoint, parameters, pull steps (git branch), tags...
    assert crons(restored) == {"prod": ("0 6 * * 1-5", True), "dev": ("0 5 * * *", False)}
    assert [s["parameters"] for s in restored["schedules"]] == [s["parameters"] for s in before["schedules"]]

    again = site.run("rollback", "--deployment", site.deployment, "--deployment-version", "previous")
    assert again.exit_code == 0, again.output
    assert "= already has" in again.output and "nothing to roll back" in again.output

    with get_client(sync_client=True) as client:
        history = deploy_history.load(client, site.deployment)
    assert [e["reason"] for e in history["entries"]] == ["deploy", "rollback"]
    forward = history["entries"][1]["id"]  # what the rollback replaced: roll forward to it by id
    result = site.run("rollback", "--deployment", site.deployment, "--deployment-version", forward)
    assert result.exit_code == 0, result.output
    assert snapshot(site)["config"] == deployed["config"]


def test_deploy_refuses_when_it_cannot_record_the_current_configuration(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    with get_client(sync_client=True) as client:
        key = deploy_history.history_key(site.deployment)
        client.create_artifact(ArtifactCreate(key=key, type="markdown", data="# edited by hand"))
    calls = fake_prefect_deploy(site, monkeypatch)
    result = CliRunner().invoke(
        app, ["deploy", "--prefect-file", str(write_prefect_yaml(site, tmp_path)), "--name", site.short]
    )
    assert result.exit_code == 2
    assert "cannot record" in result.output and calls == []


def test_unknown_version_and_empty_history_are_one_line(site: Site) -> None:
    result = site.run("rollback", "--deployment", site.deployment, "--deployment-version", "previous")
    assert result.exit_code == 2 and "no deploy history for" in result.stderr


def history_entries(site: Site) -> list[dict[str, Any]]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return list(deploy_history.load(client, site.deployment)["entries"])


def test_deploy_with_an_unknown_name_names_the_deployments_and_the_right_option(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = fake_prefect_deploy(site, monkeypatch)
    before = history_entries(site)

    result = CliRunner().invoke(
        app, ["deploy", "--prefect-file", str(write_prefect_yaml(site, tmp_path)), "--name", "nosuch"]
    )

    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'prefect.yaml'} declares no deployment 'nosuch' (it declares: {site.short}); "
        "pass --name with one of them"
    ]
    assert "--deployment" not in result.output
    assert calls == [] and history_entries(site) == before


def test_deploy_without_the_work_pool_variable_stops_before_recording_anything(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_prefect_yaml(site, tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["deployments"][0]["work_pool"] = {"name": "{{ $DBTFLOW_WORK_POOL }}"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.delenv("DBTFLOW_WORK_POOL", raising=False)
    calls = fake_prefect_deploy(site, monkeypatch)
    before = history_entries(site)

    result = CliRunner().invoke(app, ["deploy", "--prefect-file", str(path), "--name", site.short])

    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: DBTFLOW_WORK_POOL is not set: ") and "export DBTFLOW_WORK_POOL=" in line, line
    assert "does not exist" not in result.output
    assert calls == [] and history_entries(site) == before, "nothing may be recorded or deployed"


def test_schedules_apply_says_when_parameters_were_not_validated(site: Site, tmp_path: Path) -> None:
    from tests.conftest import TENANT

    path = write_prefect_yaml(site, tmp_path)
    args = ["schedules", "apply", str(path), "--deployment", site.deployment, "--dry-run"]

    unchecked = CliRunner().invoke(app, args)
    checked = CliRunner().invoke(app, [*args, "--project-dir", str(TENANT)])

    assert unchecked.exit_code == 0 and checked.exit_code == 0, unchecked.output + checked.output
    note = "parameters were not validated against a dbt project: pass --project-dir to check them"
    assert note in unchecked.output
    assert note not in checked.output


def test_schedules_apply_refuses_a_selection_that_matches_no_node(site: Site, tmp_path: Path) -> None:
    """Issue 19 item 11: a typo'd --select stays green forever in dbt; with --project-dir it is refused."""
    from tests.conftest import TENANT

    path = write_prefect_yaml(site, tmp_path)
    doc = yaml.safe_load(path.read_text())
    prod, weekly = doc["deployments"][0]["schedules"]
    prod["parameters"]["select"] = "tag:daily"  # matches: passes
    weekly["parameters"]["steps"] = ["seed", "build --select does_not_exist_model"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    before = snapshot(site)
    args = ["schedules", "apply", str(path), "--deployment", site.deployment, "--project-dir", str(TENANT)]

    refused = CliRunner().invoke(app, args)

    assert refused.exit_code == 2, refused.output
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: schedule 'weekly': step `build --select does_not_exist_model") and (
        "selects no node" in line
    ), line
    assert crons(snapshot(site)) == crons(before), "no schedule may change"

    weekly["parameters"]["steps"] = ["seed", "build --select tag:weekly"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    applied = CliRunner().invoke(app, args)

    assert applied.exit_code == 0, applied.output
    assert crons(snapshot(site)) == {"prod": ("30 7 * * 1-5", False), "weekly": ("0 8 * * 0", False)}
