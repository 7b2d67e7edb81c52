"""`dbtflow cutover` of a job whose completion starts other dbt Cloud jobs (a chain), and its rollback.

The child's deployment is made as `prefect deploy` makes it (a tagged deployment, then its trigger as
a Prefect automation through Prefect's own `DeploymentTriggerTypes.as_automation`), on the session's
real Prefect server; `tests/cloud/test_chains.py` runs the real `prefect deploy` on the import's file.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from pydantic import TypeAdapter

from dbtflow.cloud._chains import Link, trigger
from tests.cutover.conftest import FLOW, PULL, SCHEMA, Site

pytestmark = pytest.mark.timeout(300)
CHILD_PARAMS = {"target": "prod", "steps": ["build --select tag:weekly"]}


def add_child(site: Site, deployed: bool, waits_on: str | None = None) -> int:
    """A dbt Cloud job run when 1001 succeeds (a fresh id: the Prefect server is shared by the session).

    Deployed, its trigger waits on a run of `waits_on` (default: the site's deployment, which job 1001 is cut over to).
    """
    child = random.randint(10**6, 10**8)
    site.cloud.add_job(
        id=child,
        account_id=1,
        project_id=10,
        environment_id=102,
        name="Exposures after daily",
        triggers={"github_webhook": False, "schedule": False, "git_provider_webhook": False, "on_merge": False},
        job_completion_trigger_condition={"condition": {"job_id": 1001, "project_id": 10, "statuses": [10]}},
    )
    if deployed:
        deploy_child(child, waits_on or site.short)
    return child


def deploy_child(job_id: int, waits_on: str) -> None:
    from prefect import get_client
    from prefect.events import DeploymentTriggerTypes

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(FLOW)
        deployment_id = client.create_deployment(
            flow_id,
            f"exposures-{uuid.uuid4().hex[:6]}",
            entrypoint="flows/dbt_wg_flow.py:run_dbt_wg",
            parameters=CHILD_PARAMS,
            parameter_openapi_schema=SCHEMA,
            pull_steps=PULL,
            tags=[f"dbt-cloud-job-{job_id}"],
        )
        spec = trigger(Link(job_id, 1001, (10,)), waits_on, FLOW, CHILD_PARAMS)
        made: Any = TypeAdapter(DeploymentTriggerTypes).validate_python(spec)
        made.set_deployment_id(deployment_id)
        client.create_automation(made.as_automation())


def trigger_enabled(job_id: int) -> list[bool]:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    with get_client(sync_client=True) as client:
        tags = DeploymentFilterTags(all_=[f"dbt-cloud-job-{job_id}"])
        (found,) = client.read_deployments(deployment_filter=DeploymentFilter(tags=tags))
        return [bool(a.enabled) for a in client.read_resource_related_automations(f"prefect.deployment.{found.id}")]


def schedule_on(site: Site, job_id: int) -> bool:
    return bool(json.loads(site.cloud.job_snapshot(job_id))["triggers"]["schedule"])


@pytest.mark.parametrize(
    ("deployed", "extra", "expected"),
    [
        (False, (), "have no deployment with a trigger in Prefect"),
        (False, ("--chain",), "have no deployment with a trigger in Prefect"),
        (True, (), "pass --chain to enable their Prefect triggers"),
    ],
)
def test_a_job_with_chained_children_is_refused_unless_they_come_along(
    site: Site, deployed: bool, extra: tuple[str, ...], expected: str
) -> None:
    child = add_child(site, deployed)
    original = site.cloud.snapshot_jobs()
    result = site.run(*site.cutover_args("--apply", *extra))
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert f"dbt Cloud job 1001 'Prod daily build' starts job(s) {child} 'Exposures after daily'" in line
    assert expected in line and "nothing was changed" in line
    assert site.cloud.snapshot_jobs() == original and site.job_posts() == 0
    assert site.schedules() == {"prod": False, "dev": False}
    assert not site.journal_file.exists()


def test_a_child_whose_trigger_waits_on_another_deployment_is_refused(site: Site) -> None:
    # imported with its chain, job 1001 is deployment prod-daily-build; cut over on the site's, it would never start it
    child = add_child(site, deployed=True, waits_on="prod-daily-build")
    original = site.cloud.snapshot_jobs()
    result = site.run(*site.cutover_args("--apply", "--chain"))
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert f"dbt Cloud job {child}'s Prefect trigger" in line
    assert (
        f"after a run of deployment 'prod-daily-build', but job 1001 is cut over to deployment {site.short!r}" in line
    )
    assert "nothing was changed" in line and trigger_enabled(child) == [False]
    assert site.cloud.snapshot_jobs() == original and site.job_posts() == 0
    assert site.schedules() == {"prod": False, "dev": False} and not site.journal_file.exists()


def test_chain_cuts_over_the_children_and_rollback_disables_their_triggers(site: Site) -> None:
    child = add_child(site, deployed=True)
    original = site.cloud.snapshot_jobs()
    plan = site.run(*site.cutover_args("--plan", "--chain"))
    assert plan.exit_code == 0, plan.output
    assert f"(dbt Cloud job {child}): disabled -> enabled" in plan.output and trigger_enabled(child) == [False]

    result = site.run(*site.cutover_args("--apply", "--chain"))
    assert result.exit_code == 0, result.output
    assert "cutover done: 5 change(s)" in result.output
    assert not schedule_on(site, 1001) and trigger_enabled(child) == [True]
    assert site.schedules() == {"prod": True, "dev": True}
    kinds = [e["object"]["kind"] for e in site.journal_on_disk()["entries"]]
    assert kinds[-1] == "prefect_trigger" and site.journal_in_prefect() == site.journal_on_disk()
    again = site.run(*site.cutover_args("--apply", "--chain"))
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output

    back = site.run("rollback", "--deployment", site.deployment)
    assert back.exit_code == 0, back.output
    assert "rollback done: 5 change(s)" in back.output
    assert trigger_enabled(child) == [False] and site.schedules() == {"prod": False, "dev": False}
    assert site.cloud.snapshot_jobs() == original
