"""Declared schedules -> a deployment's schedules in Prefect, exactly, by slug.

Contract
- `load(path, deployment)` reads the declared schedules from either a schedules file
  (`deployment:` + `schedules:`, as `dbtflow cloud import-jobs` writes it) or a prefect.yaml
  (the `schedules:` of the deployment named `deployment`, default: the file's only one).
  Each entry has Prefect's prefect.yaml schedule keys: `slug`, `cron`, `timezone`, `active`,
  `parameters` (extra provenance keys such as `dbt_cloud_job_id` are kept, not applied). A
  prefect.yaml deployment tagged `dbt-cloud-job-<id>` (one job's deployment, as the import writes
  chained jobs) gives its schedules that `dbt_cloud_job_id` (prefect.yaml schedules take no extra key).
- `plan(current, desired)` is the diff: create, update (the fields that differ) and delete,
  by slug; a schedule in Prefect with no slug, or a slug not declared, is deleted, so after
  `apply` the deployment has exactly the declared schedules. An empty plan means in sync.
- `apply(client, deployment_id, changes)` makes the changes through Prefect's API.
- `set_active(client, deployment, slugs, active)` pauses or resumes named schedules (a redeploy
  keeping their state); `set_schedule_active(client, deployment, schedule_id, active)` one by id
  (cutover, rollback). Both keep the schedule's parameters.

Pitfalls
- `uvx prefect-cloud schedule` replaces every schedule of a deployment with one: a dev and a
  prod schedule on one deployment need per-schedule `parameters` (Prefect >= 3.2), set here.
- A schedule's parameters are merged over the deployment's by Prefect at run creation; they
  are checked against the flow's parameters here, and fully (`build_request`) by the CLI when
  it knows the project, so a typo fails before it is applied rather than at 06:00.
- Prefect's `PATCH /deployments/{id}/schedules/{schedule_id}` resets `parameters` to {} when the
  body leaves them out (PrefectHQ/prefect#17982; its UI sends them since): never send `active`
  alone, or a resumed prod schedule runs with the deployment's default target. `_patch_active`
  sends the schedule's current parameters with the new state.
- Cron is evaluated in `timezone` (default UTC, like dbt Cloud); a bad cron or timezone is a
  one-line error from Prefect's own schedule model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, ValidationError

from dbtflow.errors import UserError
from dbtflow.settings import JOB_TAG_PREFIX

PROVENANCE = ("dbt_cloud_job_id", "dbt_cloud_job_name")


class ScheduleSpec(BaseModel):
    """One declared schedule, in prefect.yaml's terms."""

    model_config = ConfigDict(extra="forbid")

    slug: str
    cron: str
    timezone: str = "UTC"
    active: bool = True
    parameters: dict[str, Any] = {}
    dbt_cloud_job_id: int | None = None
    dbt_cloud_job_name: str | None = None

    def schedule(self) -> CronSchedule:
        return CronSchedule(cron=self.cron, timezone=self.timezone)


@dataclass
class Change:
    action: str  # create | update | delete
    slug: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (now, declared)
    spec: ScheduleSpec | None = None
    schedule_id: UUID | None = None

    def __str__(self) -> str:
        if self.action == "create" and self.spec is not None:
            s = self.spec
            return f"+ {s.slug}: cron {s.cron!r} {s.timezone} active={s.active} parameters={s.parameters}"
        if self.action == "delete":
            return f"- {self.slug}"
        diffs = ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in self.fields.items())
        return f"~ {self.slug}: {diffs}"


def load(path: Path, deployment: str | None = None) -> tuple[str, list[ScheduleSpec]]:
    """(deployment name, declared schedules) from a schedules file or a prefect.yaml."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read schedules from {path}: {exc}".splitlines()[0]) from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds no schedules: expected `schedules:` or a prefect.yaml `deployments:`")
    if "deployments" in doc:
        name, entries = _from_prefect_yaml(path, doc, deployment)
    elif "schedules" in doc:
        name = deployment or doc.get("deployment") or ""
        entries = doc["schedules"] or []
        if not name:
            raise UserError(f"{path} names no deployment: add `deployment: <flow>/<name>` or pass --deployment")
    else:
        raise UserError(f"{path} holds no schedules: expected `schedules:` or a prefect.yaml `deployments:`")
    if not isinstance(entries, list):
        raise UserError(f"{path}: `schedules` must be a list of schedules")
    specs = [_spec(path, i, entry) for i, entry in enumerate(entries)]
    slugs = [s.slug for s in specs]
    if dupes := sorted({s for s in slugs if slugs.count(s) > 1}):
        raise UserError(f"{path}: slug {dupes[0]!r} is declared twice; each schedule needs its own slug")
    return name, specs


def _from_prefect_yaml(path: Path, doc: dict[str, Any], deployment: str | None) -> tuple[str, list[Any]]:
    deployments = [d for d in doc.get("deployments") or [] if isinstance(d, dict)]
    wanted = deployment.split("/")[-1] if deployment else None
    chosen = [d for d in deployments if wanted is None or d.get("name") == wanted]
    if len(chosen) != 1:
        names = ", ".join(str(d.get("name")) for d in deployments) or "none"
        raise UserError(f"{path}: pass --deployment to choose one deployment (it declares: {names})")
    entrypoint = str(chosen[0].get("entrypoint", ""))
    flow_name = entrypoint.rsplit(":", 1)[-1]
    name = deployment if deployment and "/" in deployment else f"{flow_name}/{chosen[0]['name']}"
    entries = chosen[0].get("schedules") or []
    job_ids = [t.removeprefix(JOB_TAG_PREFIX) for t in chosen[0].get("tags") or [] if str(t).startswith(JOB_TAG_PREFIX)]
    if len(job_ids) == 1 and job_ids[0].isdigit() and isinstance(entries, list):  # a deployment of one dbt Cloud job
        entries = [{**e, "dbt_cloud_job_id": int(job_ids[0])} if isinstance(e, dict) else e for e in entries]
    return name, entries


def _spec(path: Path, index: int, entry: Any) -> ScheduleSpec:
    try:
        spec = ScheduleSpec.model_validate(entry)
        spec.schedule()  # Prefect's own cron and timezone checks
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise UserError(f"{path}: schedules[{index}] {where}: {error['msg']}") from None
    return spec


def check_parameters(specs: list[ScheduleSpec], known: set[str]) -> None:
    """Refuse a schedule whose parameters the flow does not take."""
    for spec in specs:
        if unknown := sorted(set(spec.parameters) - known):
            takes = ", ".join(sorted(known))
            raise UserError(f"schedule {spec.slug!r} sets unknown parameter {unknown[0]!r}; the flow takes: {takes}")


def plan(current: list[DeploymentSchedule], desired: list[ScheduleSpec]) -> list[Change]:
    by_slug = {s.slug: s for s in current if s.slug}
    changes: list[Change] = []
    for spec in desired:
        now = by_slug.get(spec.slug)
        if now is None:
            changes.append(Change("create", spec.slug, spec=spec))
            continue
        fields = _differences(now, spec)
        if fields:
            changes.append(Change("update", spec.slug, fields, spec, now.id))
    declared = {s.slug for s in desired}
    for now in current:
        if not now.slug or now.slug not in declared:
            changes.append(Change("delete", now.slug or f"(no slug) {now.id}", schedule_id=now.id))
    return changes


def _differences(now: DeploymentSchedule, spec: ScheduleSpec) -> dict[str, tuple[Any, Any]]:
    current = {
        "cron": getattr(now.schedule, "cron", None),
        "timezone": getattr(now.schedule, "timezone", None) or "UTC",
        "active": now.active,
        "parameters": now.parameters or {},
    }
    declared = {"cron": spec.cron, "timezone": spec.timezone, "active": spec.active, "parameters": spec.parameters}
    return {k: (current[k], declared[k]) for k in declared if current[k] != declared[k]}


def apply(client: SyncPrefectClient, deployment_id: UUID, changes: list[Change]) -> None:
    for change in changes:
        if change.action == "delete" and change.schedule_id is not None:
            client.delete_deployment_schedule(deployment_id, change.schedule_id)
        elif change.action == "create" and change.spec is not None:
            s = change.spec
            new = DeploymentScheduleCreate(schedule=s.schedule(), active=s.active, parameters=s.parameters, slug=s.slug)
            client.create_deployment_schedules(deployment_id, [new])
        elif change.action == "update" and change.spec is not None and change.schedule_id is not None:
            s = change.spec
            client.update_deployment_schedule(
                deployment_id, change.schedule_id, active=s.active, schedule=s.schedule(), parameters=s.parameters
            )


def find_deployment(client: SyncPrefectClient, name: str) -> Any:
    """The deployment `flow/deployment`; `UserError` (one line) when the API does not have it."""
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise UserError(
            f"deployment {name!r} not found on {client.api_url}: deploy it first (`dbtflow deploy`)"
        ) from None


def set_active(client: SyncPrefectClient, deployment_id: UUID, slugs: list[str], active: bool) -> list[str]:
    """Pause or resume the named schedules, keeping their parameters; returns the slugs whose state changed."""
    current = {s.slug: s for s in client.read_deployment_schedules(deployment_id) if s.slug}
    if missing := [slug for slug in slugs if slug not in current]:
        raise UserError(f"the deployment has no schedule {missing[0]!r}; run `dbtflow schedules apply` first")
    changed = [slug for slug in slugs if current[slug].active != active]
    for slug in changed:
        _patch_active(client, deployment_id, current[slug], active)
    return changed


def set_schedule_active(client: SyncPrefectClient, deployment_id: UUID, schedule_id: UUID, active: bool) -> None:
    """Pause or resume one schedule by id (read just before, so the parameters sent back are its current ones)."""
    current = {s.id: s for s in client.read_deployment_schedules(deployment_id)}
    if schedule_id not in current:
        raise UserError(f"schedule {schedule_id} of deployment {deployment_id} is gone: run `dbtflow schedules apply`")
    _patch_active(client, deployment_id, current[schedule_id], active)


def _patch_active(client: SyncPrefectClient, deployment_id: UUID, schedule: DeploymentSchedule, active: bool) -> None:
    # Prefect's PATCH of a schedule is not a partial update: a body without `parameters` resets them to {}
    # (PrefectHQ/prefect#17982), and a prod schedule resumed so would run with the deployment's defaults.
    client.update_deployment_schedule(deployment_id, schedule.id, active=active, parameters=dict(schedule.parameters))
