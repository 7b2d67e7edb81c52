"""Cutover: switch chosen dbt Cloud jobs' triggers off and the Prefect schedules on, with a journal.

Contract
- `choose(file, deployment, slugs, job_ids)` resolves what to switch: the deployment (default: the
  schedules file's), the schedule slugs (default: every schedule in the file) and the dbt Cloud
  jobs (default: the `dbt_cloud_job_id` provenance of those schedules, as `cloud import-jobs` writes).
- `plan_cutover(...)` checks every precondition before anything changes, and raises `UserError`
  (one line) for the first that fails: the deployment and each schedule exist in Prefect; every
  target those schedules run (the schedule's `target`, else the deployment's) has a passing parity
  report no older than `max_age` (`cutover_gate`); every job exists in this dbt Cloud account.
  It returns the changes: each job with a trigger on (`TRIGGERS`: the schedule, the git webhooks
  of CI jobs, `on_merge` of merge jobs), each schedule that is paused.
- `apply_cutover(plan, ...)` makes them in order, dbt Cloud first, then Prefect (never both
  orchestrators on; a stop in between leaves neither running the jobs, which rollback undoes):
  for each change it saves the journal with the change pending, makes it, then saves it done.
  A dbt Cloud job is written by one read-modify-write of the whole job with only its `triggers`
  changed (every trigger of `TRIGGERS` that was on set false, any other key as read), `expect`ing
  the triggers and `updated_at` it planned from, so a job edited meanwhile is refused
  (`JobChanged`), not overwritten. One POST per job: a job is never left with some triggers off.
  The journal records the whole `triggers` object before and after, which rollback restores.
- Chains (`cutover._chain`): a job whose completion starts other dbt Cloud jobs is refused unless
  they are imported into Prefect (a deployment with a trigger) and `chain` is asked; with `chain`
  the children's dbt Cloud jobs, their deployments' schedules and their triggers are cut over in
  the same plan (dbt Cloud first, then schedules, then triggers), each journaled.
- The journal's `runs` list keeps, per applying run, who ran it and the parity reports it accepted.
- Idempotent: a second run plans no change and writes nothing, not even the journal.
- On failure midway it does NOT undo: the journal holds exactly the completed changes (plus the
  one in flight as `pending`), and `dbtflow rollback` restores everything from it; re-running
  cutover finishes the job instead. `CutoverStopped` says which and how many.
- `resolve_pending` settles a change a previous run left `pending` by looking at the object:
  it happened (-> an entry), it did not (-> dropped), or someone changed it (-> `UserError`).

Pitfalls
- A job-completion trigger (`job_completion_trigger_condition`, on the child job) is not a key
  of `triggers` and is not switched off here: the chain's cutover (`cutover._chain`) covers it;
  the plan names it.
- A CI or merge job's webhooks are switched off even though nothing in Prefect replaces them by
  itself: git CI must start its deployment (docs/ci-jobs.md) before the cutover.
- dbt Cloud has no transactions: `expect` narrows the window to one GET/POST, it cannot close it.
- Two cutovers at once on one journal are not locked against each other; run one at a time.
- A schedule is activated with its parameters sent along (`schedules.set_schedule_active`):
  Prefect's schedule PATCH resets omitted parameters, and prod would then run as the default target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient

from dbtflow.cloud._client import DbtCloudClient, DbtCloudError
from dbtflow.cutover import _chain as chained
from dbtflow.cutover._chain import TriggerChange
from dbtflow.cutover._gate import ParityEvidence, check_reports
from dbtflow.cutover._journal import Journal, JournalStore
from dbtflow.deploy import _schedules as schedules
from dbtflow.deploy._history import Actor, now_iso
from dbtflow.errors import UserError
from dbtflow.settings import DEPLOYMENT

TRIGGERS = ("schedule", "github_webhook", "git_provider_webhook", "on_merge")  # switched off by cutover


class CutoverStopped(Exception):
    """A change failed after `done` changes; the journal holds them. `exit_code` 2 (user) or 1."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class JobChange:
    job_id: int
    name: str
    before: dict[str, Any]  # the job's triggers as read
    updated_at: str | None
    notes: list[str] = field(default_factory=list)  # triggers cutover leaves on

    @property
    def switched(self) -> list[str]:
        """The triggers cutover switches off: those of `TRIGGERS` that are on."""
        return [t for t in TRIGGERS if self.before.get(t)]

    @property
    def after(self) -> dict[str, Any]:
        return {**self.before, **dict.fromkeys(self.switched, False)}

    @property
    def needed(self) -> bool:
        return self.before != self.after

    def object(self) -> dict[str, Any]:
        return {"kind": "dbt_cloud_job", "job_id": self.job_id, "name": self.name}


@dataclass
class ScheduleChange:
    deployment: str
    slug: str
    schedule_id: UUID
    active: bool
    target: str
    deployment_id: UUID | None = None  # None: the plan's deployment

    @property
    def needed(self) -> bool:
        return not self.active

    def object(self) -> dict[str, Any]:
        return {
            "kind": "prefect_schedule",
            "deployment": self.deployment,
            "slug": self.slug,
            "schedule_id": str(self.schedule_id),
        }


@dataclass
class CutoverPlan:
    deployment: str
    deployment_id: UUID
    evidence: list[ParityEvidence]
    jobs: list[JobChange]
    schedules: list[ScheduleChange]
    triggers: list[TriggerChange] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return (
            sum(j.needed for j in self.jobs)
            + sum(s.needed for s in self.schedules)
            + sum(t.needed for t in self.triggers)
        )

    def lines(self) -> list[str]:
        lines = ["preconditions:"]
        lines += [f"  ok {e.describe()}" for e in self.evidence]
        slugs = ", ".join(s.slug for s in self.schedules)
        lines.append(f"  ok deployment {self.deployment} has schedule(s) {slugs}")
        lines.append("changes, in order:")
        for job in self.jobs:
            what = f"dbt Cloud job {job.job_id} {job.name!r}"
            if job.needed:
                lines.append(f"  ~ {what}: " + ", ".join(f"triggers.{t} true -> false" for t in job.switched))
            else:
                lines.append(f"  = {what}: triggers already off")
            if job.notes:
                lines.append(f"    note: its {', '.join(job.notes)} trigger(s) stay on in dbt Cloud")
        for s in self.schedules:
            where = "" if s.deployment == self.deployment else f" of {s.deployment}"
            what = f"Prefect schedule {s.slug!r}{where} (target {s.target})"
            lines.append(f"  ~ {what}: paused -> active" if s.needed else f"  = {what}: already active")
        for t in self.triggers:
            what = f"Prefect trigger {t.name!r} of {t.deployment} (dbt Cloud job {t.job_id})"
            lines.append(f"  ~ {what}: disabled -> enabled" if t.needed else f"  = {what}: already enabled")
        return lines


def choose(
    file: Path | None, deployment: str | None, slugs: list[str] | None, job_ids: list[int] | None
) -> tuple[str, list[str], list[int]]:
    """(deployment, slugs, job ids) from the options, completed from the schedules file."""
    specs: list[schedules.ScheduleSpec] = []
    if file is not None:
        deployment, specs = schedules.load(file, deployment)
    deployment = deployment or DEPLOYMENT
    by_slug = {s.slug: s for s in specs}
    chosen = list(dict.fromkeys(slugs or [s.slug for s in specs]))
    if not chosen:
        raise UserError("no Prefect schedule to activate: pass --schedule SLUG or a schedules file that declares some")
    if not job_ids:
        job_ids = [by_slug[s].dbt_cloud_job_id for s in chosen if s in by_slug and by_slug[s].dbt_cloud_job_id]  # type: ignore[misc]
    if not job_ids:
        where = f"schedule(s) {', '.join(chosen)} carry no dbt_cloud_job_id in {file}" if file else "no schedules file"
        raise UserError(f"no dbt Cloud job to switch off ({where}): pass --job ID for each job")
    return deployment, chosen, list(dict.fromkeys(int(j) for j in job_ids))


def read_deployment(prefect: SyncPrefectClient, name: str) -> tuple[Any, dict[str, Any]]:
    """The deployment and its schedules by slug; `UserError` when it is not there."""
    found = schedules.find_deployment(prefect, name)
    current = {s.slug: s for s in prefect.read_deployment_schedules(found.id) if s.slug}
    return found, current


def plan_cutover(
    prefect: SyncPrefectClient,
    cloud: DbtCloudClient,
    deployment: str,
    slugs: list[str],
    job_ids: list[int],
    reports: dict[str, Path],
    max_age: timedelta,
    now: datetime | None = None,
    chain: bool = False,
) -> CutoverPlan:
    found, current = read_deployment(prefect, deployment)
    if missing := [s for s in slugs if s not in current]:
        raise UserError(
            f"deployment {deployment!r} has no schedule {missing[0]!r}: run `dbtflow schedules apply <file>` first"
        )
    changes = [_schedule_change(deployment, found, current[slug]) for slug in slugs]
    raws = {job_id: cloud.get_job_raw(job_id) for job_id in job_ids}
    children, deployments = chained.plan_chain(prefect, cloud, raws, chain, deployment)
    raws.update({job_id: cloud.get_job_raw(job_id) for job_id in children})
    for child in deployments:
        changes += [
            _schedule_change(child.name, child.deployment, s)
            for s in prefect.read_deployment_schedules(child.deployment.id)
        ]
    evidence = check_reports(sorted({c.target for c in changes}), reports, max_age, now)
    jobs = [_job_change(job_id, raw) for job_id, raw in raws.items()]
    return CutoverPlan(deployment, found.id, evidence, jobs, changes, chained.trigger_changes(deployments))


def _schedule_change(deployment: str, found: Any, schedule: Any) -> ScheduleChange:
    target = (schedule.parameters or {}).get("target") or (found.parameters or {}).get("target")
    if not target:
        raise UserError(f"schedule {schedule.slug!r} of {deployment!r} sets no target: add `target` to its parameters")
    return ScheduleChange(deployment, schedule.slug, schedule.id, bool(schedule.active), str(target), found.id)


def _job_change(job_id: int, raw: dict[str, Any]) -> JobChange:
    triggers = raw.get("triggers")
    if not isinstance(triggers, dict):
        raise UserError(f"dbt Cloud job {job_id} has no triggers object: check the job id and the host")
    notes = ["job completion"] if raw.get("job_completion_trigger_condition") else []
    return JobChange(job_id, str(raw.get("name") or ""), triggers, raw.get("updated_at"), notes)


def open_journal(store: JournalStore, deployment: str, cloud: DbtCloudClient) -> Journal:
    """The journal to append to: the existing one (same deployment and account) or a new one."""
    header = {"base_url": cloud.base_url, "account_id": cloud.account_id}
    journal = store.load()
    if journal is None:
        return Journal.new(deployment, header)
    if journal.doc["deployment"] != deployment or journal.doc["dbt_cloud"] != header:
        raise UserError(
            f"the journal ({store.where()}) belongs to {journal.doc['deployment']} and dbt Cloud "
            f"{journal.doc['dbt_cloud']}: pass another --journal and --journal-key for {deployment}"
        )
    return journal


def resolve_pending(
    journal: Journal, store: JournalStore, prefect: SyncPrefectClient, cloud: Callable[[], DbtCloudClient]
) -> str | None:
    """Settle a change an interrupted run left pending; returns what was decided, or None."""
    pending = journal.pending
    if pending is None:
        return None
    obj = pending["object"]
    if obj["kind"] == "dbt_cloud_job":
        now: Any = cloud().get_job_raw(int(obj["job_id"])).get("triggers")
    elif obj["kind"] == "prefect_trigger":
        now = chained.trigger_enabled(prefect, UUID(obj["automation_id"]))
    else:
        _, current = read_deployment(prefect, obj["deployment"])
        now = current[obj["slug"]].active if obj["slug"] in current else pending["before"]
    what = f"{obj['kind'].replace('_', ' ')} {obj.get('name') or obj.get('job_id') or obj.get('slug')}"
    if now == pending["intended"] and now != pending["before"]:
        journal.complete(now, note="interrupted, found done by the next run")
        decided = f"the interrupted change of {what} had happened: journaled"
    elif now == pending["before"]:
        journal.drop_pending()
        decided = f"the interrupted change of {what} had not happened: dropped"
    else:
        raise UserError(
            f"{what} changed since an interrupted {pending['op']} (now {now!r}, was {pending['before']!r}, "
            f"intended {pending['intended']!r}): review it by hand; the journal ({store.where()}) still lists it"
        )
    store.save(journal)
    return decided


def apply_cutover(
    plan: CutoverPlan,
    prefect: SyncPrefectClient,
    cloud: DbtCloudClient,
    store: JournalStore,
    journal: Journal,
    actor: Actor,
    echo: Callable[[str], None],
) -> int:
    """Make the plan's changes, journaling each before the next; returns how many were made."""
    done = 0
    todo = plan.changes
    evidence = [
        {"target": e.target, "report": str(e.path), "verdict": e.verdict, "generated_at": e.generated_at.isoformat()}
        for e in plan.evidence
    ]
    journal.doc.setdefault("runs", []).append({**actor.as_dict(), "at": now_iso(), "parity": evidence})
    try:
        for job in (j for j in plan.jobs if j.needed):
            journal.begin("cutover", job.object(), "triggers", job.before, job.after, actor)
            store.save(journal)
            try:
                expect = {"triggers": job.before, "updated_at": job.updated_at}
                update = cloud.update_job(job.job_id, {"triggers": job.after}, expect=expect)
            except DbtCloudError:  # refused (changed meanwhile, 4xx): nothing was written
                journal.drop_pending()
                store.save(journal)
                raise
            after = update.after.get("triggers")
            if not isinstance(after, dict) or any(after.get(t) is not False for t in job.switched):
                raise DbtCloudError(f"dbt Cloud accepted job {job.job_id}'s update but its triggers are {after!r}")
            entry = journal.complete(after)
            store.save(journal)
            done += 1
            off = ", ".join(job.switched)
            echo(f"switched off {off} of dbt Cloud job {job.job_id} {job.name!r} (journal #{entry['seq']})")
        for s in (s for s in plan.schedules if s.needed):
            journal.begin("cutover", s.object(), "active", False, True, actor)
            store.save(journal)
            # keeps its parameters
            schedules.set_schedule_active(prefect, s.deployment_id or plan.deployment_id, s.schedule_id, True)
            entry = journal.complete(True)
            store.save(journal)
            done += 1
            echo(f"activated Prefect schedule {s.slug!r} of {s.deployment} (journal #{entry['seq']})")
        for t in (t for t in plan.triggers if t.needed):
            journal.begin("cutover", t.object(), "enabled", False, True, actor)
            store.save(journal)
            entry = journal.complete(chained.set_enabled(prefect, t.automation_id, True))
            store.save(journal)
            done += 1
            echo(f"enabled Prefect trigger {t.name!r} of {t.deployment} (journal #{entry['seq']})")
    except Exception as exc:
        code = 2 if isinstance(exc, UserError) else 1
        raise CutoverStopped(
            f"cutover stopped after {done} of {todo} change(s): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "  # noqa: E501
            f"the journal ({store.where()}) holds what was done: `dbtflow rollback` undoes it, or fix the cause "
            "and re-run `dbtflow cutover --apply` to finish",
            code,
        ) from exc
    return done
