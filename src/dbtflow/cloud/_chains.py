"""dbt Cloud job-completion triggers -> Prefect's own deployment triggers (prefect.yaml `triggers:`).

Contract
- `links(jobs)` reads every job's `job_completion_trigger_condition` (`{condition: {job_id,
  project_id, statuses}}`) into a `Link` per child job (a job has at most one parent in dbt Cloud)
  and refuses, with one `UserError` line and before anything is written: a parent in another dbt
  Cloud project, statuses other than 10 / 20 / 30, a malformed condition, and a cycle (named
  job by job).
- `trigger(link, parent_deployment, flow, parameters)` is the prefect.yaml trigger of the child's
  deployment: a `DeploymentEventTrigger` (`type: event`, posture Reactive, threshold 1) that
  `expect`s `prefect.flow-run.<State>` for each dbt Cloud status (10 -> Completed; 20 -> Failed,
  Crashed, TimedOut; 30 -> Cancelled) of a flow run whose related deployment is the parent's
  (`match_related`: role deployment + its name, and role flow + the flow's name), and runs the
  child with its parameters. It is written `enabled: false`: `dbtflow cutover --chain` enables it
  when the parent's dbt Cloud schedule goes off. Checked by Prefect's own `DeploymentTriggerTypes`.
- `descendants(job_id, links)` lists the jobs a job's completion starts, transitively; `tree(jobs)`
  is the unchecked graph of an account's jobs, as dbt Cloud would run it (for cutover).

Pitfalls
- Prefect's flow-run events carry the deployment, not the schedule that created the run, so a
  trigger can only tell a parent by its deployment: every job of a chain is its own deployment.
- A trigger enabled while dbt Cloud still runs the chain would build the child twice (an ad-hoc or
  parity run of the parent on Prefect would start it): triggers start disabled.
- dbt Cloud's "error" (20) covers infrastructure failures too: Prefect's Crashed and TimedOut are
  matched with Failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect.events import DeploymentTriggerTypes
from pydantic import TypeAdapter, ValidationError

from dbtflow.cloud._client import Job
from dbtflow.errors import UserError

STATES = {10: ("Completed",), 20: ("Failed", "Crashed", "TimedOut"), 30: ("Cancelled",)}
STATUS_NAMES = {10: "success", 20: "error", 30: "cancelled"}


@dataclass(frozen=True)
class Link:
    """Job `child` runs when job `parent` ends with one of `statuses` (dbt Cloud run statuses)."""

    child: int
    parent: int
    statuses: tuple[int, ...]

    @property
    def events(self) -> list[str]:
        return [f"prefect.flow-run.{state}" for status in self.statuses for state in STATES[status]]

    def describe(self) -> str:
        return f"when job {self.parent} ends in {' or '.join(STATUS_NAMES[s] for s in self.statuses)}"


def completion_condition(job: Job) -> dict[str, Any] | None:
    """The job-completion trigger's condition ({job_id, project_id, statuses}), or None."""
    trigger = job.job_completion_trigger_condition
    if not isinstance(trigger, dict):
        return None
    condition = trigger.get("condition", trigger)
    return condition if isinstance(condition, dict) and condition else None


def links(jobs: Mapping[int, Job]) -> dict[int, Link]:
    """Child job id -> its Link, for every job of `jobs` with a completion trigger; checked (see Contract)."""
    found: dict[int, Link] = {}
    for job in sorted(jobs.values(), key=lambda j: j.id):
        condition = completion_condition(job)
        if condition is None:
            continue
        found[job.id] = _link(job, condition, jobs)
    _refuse_cycles(found, jobs)
    return found


def _link(job: Job, condition: Mapping[str, Any], jobs: Mapping[int, Job]) -> Link:
    what = f"job {job.id} {job.name!r}"
    parent, statuses, project = condition.get("job_id"), condition.get("statuses"), condition.get("project_id")
    if not isinstance(parent, int) or not isinstance(statuses, list) or not statuses:
        raise UserError(
            f"{what} has a job-completion trigger dbtflow cannot read ({dict(condition)}): "
            "set its parent job and statuses in dbt Cloud and import again"
        )
    if bad := [s for s in statuses if s not in STATES]:
        raise UserError(
            f"{what}'s job-completion trigger has status {bad[0]!r}: dbt Cloud statuses are 10 (success), "
            "20 (error) and 30 (cancelled); fix the trigger in dbt Cloud and import again"
        )
    parent_project = jobs[parent].project_id if parent in jobs else project
    if parent_project is not None and parent_project != job.project_id:
        raise UserError(
            f"{what} (dbt Cloud project {job.project_id}) is triggered by job {parent} of project {parent_project}: "
            "a chain must stay within one project; move the trigger in dbt Cloud, or import without this job"
        )
    return Link(job.id, parent, tuple(sorted(set(statuses))))


def _refuse_cycles(found: Mapping[int, Link], jobs: Mapping[int, Job]) -> None:
    for start in found:
        path, current = [start], start
        while current in found:
            current = found[current].parent
            if current in path:
                cycle = [*path[path.index(current) :], current]
                names = " -> ".join(f"job {j} {jobs[j].name!r}" if j in jobs else f"job {j}" for j in reversed(cycle))
                raise UserError(
                    f"job-completion triggers form a cycle: {names} (each runs when the one before it ends): "
                    "break the cycle in dbt Cloud and import again; nothing was written"
                )
            path.append(current)


def tree(jobs: Mapping[int, Job]) -> dict[int, Link]:
    """Child job id -> Link for every readable completion trigger, unchecked (what dbt Cloud would run)."""
    found: dict[int, Link] = {}
    for job in jobs.values():
        condition = completion_condition(job) or {}
        parent, statuses = condition.get("job_id"), condition.get("statuses")
        if isinstance(parent, int) and isinstance(statuses, list):
            found[job.id] = Link(job.id, parent, tuple(sorted({s for s in statuses if s in STATES})))
    return found


def descendants(job_id: int, found: Mapping[int, Link]) -> list[int]:
    """The jobs `job_id`'s completion starts, their children, and so on (ids, in breadth-first order)."""
    out: list[int] = []
    frontier = [job_id]
    while frontier:
        children = sorted(c for c, link in found.items() if link.parent in frontier and c not in out)
        out += children
        frontier = children
    return out


def trigger(link: Link, parent_deployment: str, flow: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The prefect.yaml trigger of the child's deployment (checked by Prefect's own schema)."""
    spec: dict[str, Any] = {
        "type": "event",
        "name": f"dbt Cloud job {link.child} {link.describe()}",
        "description": f"dbt Cloud job-completion trigger of job {link.child}, imported by dbtflow",
        "enabled": False,
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": [
            {"prefect.resource.role": "deployment", "prefect.resource.name": parent_deployment},
            {"prefect.resource.role": "flow", "prefect.resource.name": flow},
        ],
        "expect": link.events,
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
        "parameters": dict(parameters),
    }
    check_trigger(spec)
    return spec


def check_trigger(spec: Mapping[str, Any]) -> None:
    """Raise UserError unless Prefect's `DeploymentTriggerTypes` (what `prefect deploy` reads) accepts `spec`."""
    try:
        TypeAdapter(DeploymentTriggerTypes).validate_python(dict(spec))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"Prefect refuses the trigger {spec.get('name')!r}: {error['msg']}") from None
