"""Chained jobs at cutover: the jobs a cut-over job starts in dbt Cloud, and their Prefect triggers.

Contract
- `plan_chain(prefect, cloud, jobs, chain)` finds, for every dbt Cloud job being cut over, the
  jobs its completion starts in dbt Cloud (`job_completion_trigger_condition`, transitively, read
  from the job's project). Once the parent's schedule is off in dbt Cloud they never run there
  again, so it refuses (one `UserError` line naming them, nothing changed):
  - children with no Prefect deployment tagged `dbt-cloud-job-<id>` that carries a trigger (not
    imported, or imported but not deployed);
  - children that are imported, unless `chain` (`dbtflow cutover --chain`) asks to cut them over too.
  - children whose trigger waits on another deployment than the one their parent runs on after
    cutover (the plan's `deployment` for the jobs cut over, the child's own for a grandchild):
    Prefect's flow-run events name the deployment, so the chain would silently never start.
  With `chain` it returns the children's job ids (their dbt Cloud jobs are cut over like the
  parent's), a `TriggerChange` per trigger to enable, and a `ScheduleChange` per schedule of the
  children's own deployments (a child dbt Cloud also schedules).
- `set_enabled(prefect, automation_id, enabled)` turns a trigger (a Prefect automation) on or off
  and returns what Prefect then reports; `trigger_enabled` reads it (None: gone).

Pitfalls
- A trigger is matched to its child by the deployment it runs (`run-deployment` action), not by
  name: `prefect deploy` names automations `<deployment>__automation_<n>` unless told otherwise.
- dbt Cloud's job-completion trigger is read-only in its API: cutover cannot switch it off, only
  the parent's schedule (which stops the chain in dbt Cloud).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

from dbtflow.cloud import _chains as chains
from dbtflow.cloud._client import DbtCloudClient, Job
from dbtflow.errors import UserError
from dbtflow.settings import JOB_TAG_PREFIX


@dataclass
class TriggerChange:
    job_id: int
    deployment: str
    automation_id: UUID
    name: str
    enabled: bool

    @property
    def needed(self) -> bool:
        return not self.enabled

    def object(self) -> dict[str, Any]:
        return {
            "kind": "prefect_trigger",
            "deployment": self.deployment,
            "automation_id": str(self.automation_id),
            "name": self.name,
            "job_id": self.job_id,
        }


@dataclass
class ChildDeployment:
    job_id: int
    deployment: Any  # Prefect's DeploymentResponse
    name: str  # flow/deployment
    triggers: list[Any]  # Prefect automations that run it


def plan_chain(
    prefect: SyncPrefectClient,
    cloud: DbtCloudClient,
    jobs: dict[int, dict[str, Any]],
    chain: bool,
    deployment: str,
) -> tuple[list[int], list[ChildDeployment]]:
    """(children's job ids, their deployments) of the jobs cut over on `deployment`; refusals: see the Contract."""
    projects: dict[int, dict[int, Job]] = {}
    links: dict[int, chains.Link] = {}
    deployed: dict[int, ChildDeployment | None] = {}
    children: list[int] = []
    names: dict[int, str] = {}
    for job_id, raw in jobs.items():
        project = int(raw.get("project_id") or 0)
        if project not in projects:
            projects[project] = {j.id: j for j in cloud.list_jobs(project_id=project)}
        names.update({j.id: j.name for j in projects[project].values()})
        tree = chains.tree(projects[project])
        links.update(tree)
        below = [c for c in chains.descendants(job_id, tree) if c not in jobs]
        children += [c for c in below if c not in children]
        if not below:
            continue
        found = {c: _deployment(prefect, c) for c in below}
        deployed.update(found)
        what = f"dbt Cloud job {job_id} {raw.get('name', '')!r} starts job(s) " + ", ".join(
            f"{c} {names.get(c, '')!r}" for c in below
        )
        if missing := [c for c in below if found[c] is None]:
            raise UserError(
                f"{what} when it ends, and job(s) {', '.join(map(str, missing))} have no deployment with a trigger in "
                f"Prefect (tag {JOB_TAG_PREFIX}<id>): import them (`dbtflow cloud import-jobs`), deploy the file it "
                "writes (`prefect deploy --prefect-file deploy/prefect.yaml --all`), then cut over again; nothing "
                "was changed"
            )
        if not chain:
            raise UserError(
                f"{what} when it ends; once its schedule is off in dbt Cloud they run only from Prefect: pass --chain "
                "to enable their Prefect triggers and cut them over with it; nothing was changed"
            )
    deployments = {c: d for c in children if (d := deployed.get(c)) is not None}
    runs_on = {job_id: deployment.split("/")[-1] for job_id in jobs}
    runs_on.update({c: d.deployment.name for c, d in deployments.items()})
    for child, child_deployment in deployments.items():
        _refuse_other_parent(child_deployment, links[child].parent, runs_on.get(links[child].parent))
    return children, list(deployments.values())


def _refuse_other_parent(child: ChildDeployment, parent: int, parent_deployment: str | None) -> None:
    """A trigger must wait on the deployment its parent job runs on, or the chain never starts."""
    for automation in child.triggers:
        waits_on = _waits_on(automation)
        if parent_deployment is not None and waits_on is not None and waits_on != parent_deployment:
            raise UserError(
                f"dbt Cloud job {child.job_id}'s Prefect trigger {automation.name!r} runs {child.name} after a run of "
                f"deployment {waits_on!r}, but job {parent} is cut over to deployment {parent_deployment!r}: its runs "
                f"would never start job {child.job_id}; cut job {parent} over on {waits_on!r} (`--deployment "
                f"<flow>/{waits_on}`, from the file `dbtflow cloud import-jobs` wrote), or point the trigger at "
                f"{parent_deployment!r}; nothing was changed"
            )


def _waits_on(automation: Any) -> str | None:
    """The deployment name a trigger's `match_related` waits on (None: it names none)."""
    related = getattr(automation.trigger, "match_related", None) or []
    for spec in related if isinstance(related, list) else [related]:
        labels: dict[str, Any] = dict(getattr(spec, "root", spec) or {})
        if labels.get("prefect.resource.role") == "deployment":
            name = labels.get("prefect.resource.name")
            return name if isinstance(name, str) else None
    return None


def _deployment(prefect: SyncPrefectClient, job_id: int) -> ChildDeployment | None:
    """The Prefect deployment tagged for `job_id` that a trigger runs, or None."""
    tag = f"{JOB_TAG_PREFIX}{job_id}"
    for found in prefect.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[tag]))):
        related = prefect.read_resource_related_automations(f"prefect.deployment.{found.id}")
        triggers = [a for a in related if any(_runs(action, found.id) for action in a.actions)]
        if triggers:
            flow = prefect.read_flow(found.flow_id).name
            return ChildDeployment(job_id, found, f"{flow}/{found.name}", triggers)
    return None


def _runs(action: Any, deployment_id: UUID) -> bool:
    return getattr(action, "type", None) == "run-deployment" and getattr(action, "deployment_id", None) == deployment_id


def trigger_changes(children: list[ChildDeployment]) -> list[TriggerChange]:
    return [TriggerChange(c.job_id, c.name, t.id, t.name, bool(t.enabled)) for c in children for t in c.triggers]


def trigger_enabled(prefect: SyncPrefectClient, automation_id: UUID) -> bool | None:
    found = prefect.read_automation(automation_id)
    return None if found is None else bool(found.enabled)


def set_enabled(prefect: SyncPrefectClient, automation_id: UUID, enabled: bool) -> bool | None:
    """Enable or disable one trigger; what Prefect reports afterwards (None: it is gone)."""
    if enabled:
        prefect.resume_automation(automation_id)
    else:
        prefect.pause_automation(automation_id)
    return trigger_enabled(prefect, automation_id)
