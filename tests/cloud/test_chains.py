"""Chained dbt Cloud jobs (job-completion triggers) -> Prefect deployments with Prefect's own triggers.

The import's output is deployed with the real `prefect deploy` to the session's Prefect server on
loopback, and the trigger is made to fire by a real flow-run state change of the parent deployment.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from dbtflow.cloud._chains import Link, descendants
from tests.conftest import BIN, REPO
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

runner = CliRunner()
SCHEDULED = {"github_webhook": False, "schedule": True, "git_provider_webhook": False, "on_merge": False}
UNSCHEDULED = {**SCHEDULED, "schedule": False}
DAILY = {"cron": "0 6 * * *", "date": {"type": "every_day"}, "time": {"type": "at_exact_hours", "hours": [6]}}


def job(fake: FakeDbtCloud, **fields: Any) -> int:
    """A job in project 10's Production environment, like the fixtures' defaults."""
    base = {"account_id": 1, "project_id": 10, "environment_id": 102, "settings": {"threads": 4, "target_name": "prod"}}
    return int(fake.add_job(**{**base, **fields})["id"])


def chained(parent: int, statuses: list[int], project_id: int = 10) -> dict[str, Any]:
    return {"condition": {"job_id": parent, "project_id": project_id, "statuses": statuses}}


def invoke(fake: FakeDbtCloud, folder: Path, *args: str) -> Any:
    env = {"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    argv = ["cloud", "import-jobs", "--base-url", fake.url, "--account", "1", "--output", str(folder / "s.yaml")]
    return runner.invoke(cli.app, [*argv, "--prefect-yaml", str(REPO / "prefect.yaml"), *args], env=env)


def add_chain(fake: FakeDbtCloud, tag: str) -> tuple[int, int, int]:
    """A scheduled parent, a child on its success, a grandchild on the child's error or cancellation."""
    parent = job(fake, name=f"Chain {tag} parent", triggers=SCHEDULED, schedule=DAILY, execute_steps=["dbt seed"])
    child = job(
        fake,
        name=f"Chain {tag} child",
        triggers=UNSCHEDULED,
        execute_steps=["dbt build --select tag:daily"],
        job_completion_trigger_condition=chained(parent, [10]),
    )
    grandchild = job(
        fake,
        name=f"Chain {tag} cleanup",
        triggers=UNSCHEDULED,
        execute_steps=["dbt run --select tag:sales"],
        settings={"threads": 2, "target_name": "prod"},
        job_completion_trigger_condition=chained(child, [20, 30]),
    )
    return parent, child, grandchild


def test_a_chain_becomes_deployments_with_triggers(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    parent, child, grandchild = add_chain(dbt_cloud, "a")
    result = invoke(dbt_cloud, tmp_path, "--job", str(grandchild))  # the parents are read along
    assert result.exit_code == 0, result.output
    deployments = {d["tags"][0]: d for d in yaml.safe_load((tmp_path / "prefect.yaml").read_text())["deployments"]}
    assert list(deployments) == [f"dbt-cloud-job-{j}" for j in (parent, child, grandchild)]
    top, middle, last = deployments.values()
    assert top["schedules"][0]["cron"] == "0 6 * * *" and top["schedules"][0]["active"] is False
    assert "triggers" not in top
    assert middle["triggers"][0]["expect"] == ["prefect.flow-run.Completed"]
    assert last["triggers"][0]["expect"] == [
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
        "prefect.flow-run.Cancelled",
    ]
    related = last["triggers"][0]["match_related"]
    assert {"prefect.resource.role": "deployment", "prefect.resource.name": middle["name"]} in related
    assert {"prefect.resource.role": "flow", "prefect.resource.name": "run_dbt_wg"} in related
    assert last["triggers"][0]["parameters"] == last["parameters"]
    assert last["parameters"]["steps"] == ["run --select tag:sales"] and last["parameters"]["threads"] == 2
    schedules = yaml.safe_load((tmp_path / "s.yaml").read_text())["schedules"]
    assert not {parent, child, grandchild} & {s["dbt_cloud_job_id"] for s in schedules}  # not twice


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("cycle", "job-completion triggers form a cycle: job {a} 'Loop a' -> job {b} 'Loop b' -> job {a} 'Loop a'"),
        ("other project", "(dbt Cloud project 10) is triggered by job 2000 of project 20"),
        ("bad status", "job-completion trigger has status 1"),
    ],
)
def test_a_chain_dbtflow_refuses_is_one_line_and_nothing_is_written(
    dbt_cloud: FakeDbtCloud, tmp_path: Path, how: str, expected: str
) -> None:
    a = job(dbt_cloud, name="Loop a", triggers=SCHEDULED, schedule=DAILY)
    b = job(dbt_cloud, name="Loop b", triggers=UNSCHEDULED, job_completion_trigger_condition=chained(a, [10]))
    if how == "cycle":
        dbt_cloud.jobs[a]["job_completion_trigger_condition"] = chained(b, [10])
    elif how == "other project":
        dbt_cloud.jobs[b]["job_completion_trigger_condition"] = chained(2000, [10], project_id=20)
    else:
        dbt_cloud.jobs[b]["job_completion_trigger_condition"] = chained(a, [1])
    result = invoke(dbt_cloud, tmp_path, "--project", "10")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and expected.format(a=a, b=b) in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_a_child_whose_parent_is_not_imported_is_skipped_with_its_own(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    parent, child, grandchild = add_chain(dbt_cloud, "b")
    dbt_cloud.jobs[parent]["execute_steps"] = ["dbt sl export"]  # dbtflow cannot run it
    result = invoke(
        dbt_cloud, tmp_path, "--job", str(grandchild), "--project-dir", str(REPO / "tenants/dbt_williamgrant")
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(
        f"job {child} " in x and f"runs when job {parent} ends, and job {parent} is not imported" in x for x in lines
    )
    assert any(f"job {grandchild} " in x and f"runs when job {child} ends" in x for x in lines)
    assert not (tmp_path / "prefect.yaml").exists()


def test_descendants_are_the_whole_chain_below_a_job() -> None:
    found = {2: Link(2, 1, (10,)), 3: Link(3, 2, (20,)), 4: Link(4, 1, (30,)), 6: Link(6, 5, (10,))}
    assert descendants(1, found) == [2, 4, 3]
    assert descendants(3, found) == []


def test_prefect_deploys_the_chain_and_the_trigger_runs_the_child(
    dbt_cloud: FakeDbtCloud, tmp_path: Path, prefect_api: str
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Completed, Running

    tag = uuid.uuid4().hex[:6]
    _, child, _ = add_chain(dbt_cloud, tag)
    result = invoke(dbt_cloud, tmp_path, "--job", str(child))
    assert result.exit_code == 0, result.output
    pool = f"chain-{tag}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "DBTFLOW_WORK_POOL": pool,
        "DBTFLOW_GIT_REPOSITORY": "https://example.com/wg/dbtflow.git",
        "DBTFLOW_GIT_BRANCH": "main",
    }
    argv = [str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", str(tmp_path / "prefect.yaml"), "--all"]
    deployed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        top = client.read_deployment_by_name(f"run_dbt_wg/chain-{tag}-parent")
        below = client.read_deployment_by_name(f"run_dbt_wg/chain-{tag}-child")
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{below.id}")
        assert automation.enabled is False  # off until `dbtflow cutover --chain`
        assert automation.trigger.expect == {"prefect.flow-run.Completed"}  # type: ignore[union-attr]
        (action,) = automation.actions
        assert action.type == "run-deployment" and action.deployment_id == below.id  # type: ignore[union-attr]
        assert action.parameters == below.parameters  # type: ignore[union-attr]
        assert [s.active for s in client.read_deployment_schedules(top.id)] == [False]
        client.resume_automation(automation.id)
        time.sleep(2)  # the triggers service loads the automation
        run = client.create_flow_run_from_deployment(top.id)
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Completed(), force=True)
        deadline, runs = time.monotonic() + 60, []
        while not runs and time.monotonic() < deadline:
            time.sleep(1)
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[below.id])))
        assert len(runs) == 1, "the parent's Completed flow run did not start the child deployment"
        assert runs[0].parameters["steps"] == ["build --select tag:daily"]


def test_deactivated_jobs_and_jobs_of_deleted_environments_are_skipped_with_the_reason(
    dbt_cloud: FakeDbtCloud, tmp_path: Path
) -> None:
    dbt_cloud.environments[103] = {**dbt_cloud.environments[102], "id": 103, "name": "Old prod", "state": 2}
    orphan = job(dbt_cloud, name="Job of a deleted environment", environment_id=103, triggers=SCHEDULED, schedule=DAILY)
    gone = job(dbt_cloud, name="Deactivated job", state=2, triggers=SCHEDULED, schedule=DAILY)
    result = invoke(dbt_cloud, tmp_path, "--job", str(orphan), "--job", str(gone))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(f"job {orphan} " in x and "its environment 103 is deleted in dbt Cloud" in x for x in lines)
    assert any(f"job {gone} " in x and "deactivated or deleted in dbt Cloud (state 2)" in x for x in lines)
    assert yaml.safe_load((tmp_path / "s.yaml").read_text())["schedules"] == []
