"""`dbtflow status`: how a deployment's runs went lately, per target, and the first-week exit criteria.

Contract
- `collect(deployment, since, ...)` reads from the Prefect API the deployment's flow runs whose
  expected start is within `since` of now, their failed task runs, the upcoming scheduled runs
  and the deployment's schedules, and returns a `Status`: per target (the run's `target`
  parameter, else the deployment's, else the flow's default `dev`) the finished runs, how many
  completed / failed / crashed / timed out (cancelled runs are counted apart and left out of the
  success rate), the median and worst duration, the nodes that failed most, and how many runs the
  scheduler made. `to_json` is the `--json` form.
- The first-week exit criteria are declared in docs/runbook.md (the fenced ```yaml block with
  `exit_criteria:`); `load_criteria` reads them and `evaluate` turns each into pass/fail with the
  figure it was judged on. An unknown criterion is an error, so the doc and the code agree.

Pitfalls
- A failed node is a task run in a Failed state named `<resource_type> <name>` (dbtflow's reporter
  names them so). When a failed run has none (the reporter gave up, or dbt failed before any node),
  the nodes are read from the run's state message (`<type> <name> error|fail: ...`); that message
  names at most five nodes.
- Task runs reach the server as events and are written asynchronously: a run that ended seconds
  ago may not show its failed nodes yet.
- A run's duration is its end minus its start (time waiting for the target's slot included),
  falling back to Prefect's total run time.
- Parity is read from the markdown artifacts `dbtflow parity` publishes (key `parity-<project>`,
  description = verdict) on a flow run of the target; a verdict starting with "parity holds" passes.
- `--since` is bounded at 10 years: a longer window (`99999999w`) would overflow the date arithmetic.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.exceptions import ObjectNotFound

from dbtflow._text import parse_duration
from dbtflow.deploy._notify import automation_name
from dbtflow.errors import UserError
from dbtflow.run._parameters import DEFAULT_TARGET

FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
NODE_TYPES = ("model", "test", "seed", "snapshot", "unit_test", "source", "analysis", "operation", "exposure")
_MESSAGE_NODE = re.compile(rf"\b({'|'.join(NODE_TYPES)}) ([\w.\-]+) (?:error|fail|runtime error)\b")
CRITERIA_KEYS = {
    "target",
    "min_scheduled_runs",
    "min_success_rate",
    "max_timed_out",
    "max_duration_minutes",
    "parity_artifact_key",
    "alerts",
}


@dataclass
class Run:
    id: str
    name: str
    target: str
    state_type: str  # COMPLETED, FAILED, CRASHED, CANCELLED, RUNNING, ...
    state_name: str  # Completed, Failed, TimedOut, Crashed, ...
    message: str
    expected_start: datetime | None
    duration_seconds: float | None
    auto_scheduled: bool
    failed_nodes: list[str] = field(default_factory=list)


@dataclass
class TargetStats:
    target: str
    runs: int  # finished, cancelled excluded
    completed: int
    failed: int
    crashed: int
    timed_out: int
    cancelled: int
    scheduled_runs: int  # of `runs`, made by the scheduler
    success_rate: float | None  # percent
    median_seconds: float | None
    worst_seconds: float | None
    worst_run: str | None
    top_failed_nodes: list[tuple[str, int]]


@dataclass
class Upcoming:
    expected_start: str
    target: str
    name: str
    state: str


@dataclass
class Schedule:
    slug: str
    active: bool
    schedule: str
    target: str


@dataclass
class Criterion:
    name: str
    passed: bool
    detail: str


@dataclass
class Status:
    deployment: str
    since: str
    window_start: str
    now: str
    targets: list[TargetStats]
    upcoming: list[Upcoming]
    schedules: list[Schedule]
    running: int
    criteria: list[Criterion] = field(default_factory=list)
    criteria_source: str | None = None


def parse_since(text: str) -> timedelta:
    """`--since`: `7d`, `24h`, `90m`, `2w`, `1d12h` -> a timedelta; UserError otherwise."""
    return parse_duration(text, "--since")


def nodes_from_message(message: str | None) -> list[str]:
    """`model x`, `test y` named as failing in a dbtflow state message (at most five are named there)."""
    return list(dict.fromkeys(f"{kind} {name}" for kind, name in _MESSAGE_NODE.findall(message or "")))


def target_stats(target: str, runs: list[Run]) -> TargetStats:
    counted = [r for r in runs if r.state_type in ("COMPLETED", "FAILED", "CRASHED")]
    completed = sum(r.state_type == "COMPLETED" for r in counted)
    durations = [(r.duration_seconds, r.name) for r in counted if r.duration_seconds is not None]
    worst = max(durations, default=None)
    nodes: Counter[str] = Counter(n for r in counted if r.state_type != "COMPLETED" for n in set(r.failed_nodes))
    return TargetStats(
        target=target,
        runs=len(counted),
        completed=completed,
        failed=sum(r.state_type == "FAILED" and r.state_name != "TimedOut" for r in counted),
        crashed=sum(r.state_type == "CRASHED" for r in counted),
        timed_out=sum(r.state_name == "TimedOut" for r in counted),
        cancelled=sum(r.state_type == "CANCELLED" for r in runs),
        scheduled_runs=sum(r.auto_scheduled for r in counted),
        success_rate=round(100 * completed / len(counted), 1) if counted else None,
        median_seconds=round(statistics.median(d for d, _ in durations), 1) if durations else None,
        worst_seconds=round(worst[0], 1) if worst else None,
        worst_run=worst[1] if worst else None,
        top_failed_nodes=sorted(nodes.items(), key=lambda item: (-item[1], item[0]))[:5],
    )


def load_criteria(path: Path) -> dict[str, Any]:
    """The `exit_criteria:` mapping of the first ```yaml block of `path` that has one."""
    try:
        text = path.read_text()
    except OSError:
        raise UserError(f"cannot read the exit criteria from {path}: pass --runbook docs/runbook.md") from None
    for block in re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.M | re.S):
        try:
            doc = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("exit_criteria"), dict):
            criteria: dict[str, Any] = doc["exit_criteria"]
            unknown = sorted(set(criteria) - CRITERIA_KEYS)
            if unknown:
                raise UserError(f"{path}: unknown exit criteria {unknown}; known: {sorted(CRITERIA_KEYS)}")
            return criteria
    raise UserError(f"{path} has no ```yaml block with exit_criteria: (see docs/runbook.md)")


def evaluate(criteria: dict[str, Any], status: Status, parity: str | None, alerts: str | None) -> list[Criterion]:
    """Each declared criterion as pass/fail; `parity` / `alerts` are the verdict / state found (None: none)."""
    target = str(criteria.get("target", "prod"))
    stats = next((t for t in status.targets if t.target == target), None) or target_stats(target, [])
    results: list[Criterion] = []
    if "min_scheduled_runs" in criteria:
        want = int(criteria["min_scheduled_runs"])
        results.append(
            Criterion(
                f"scheduled {target} runs >= {want}",
                stats.scheduled_runs >= want,
                f"{stats.scheduled_runs} in the last {status.since}",
            )
        )
    if "min_success_rate" in criteria:
        want_rate = float(criteria["min_success_rate"])
        rate = stats.success_rate
        results.append(
            Criterion(
                f"{target} success rate >= {want_rate:g}%",
                rate is not None and rate >= want_rate,
                f"{rate:g}% of {stats.runs} runs" if rate is not None else "no finished runs",
            )
        )
    if "max_timed_out" in criteria:
        want = int(criteria["max_timed_out"])
        results.append(Criterion(f"{target} runs timed out <= {want}", stats.timed_out <= want, f"{stats.timed_out}"))
    if "max_duration_minutes" in criteria:
        limit = float(criteria["max_duration_minutes"]) * 60
        worst = stats.worst_seconds
        results.append(
            Criterion(
                f"{target} worst duration <= {float(criteria['max_duration_minutes']):g} min",
                worst is not None and worst <= limit,
                f"{worst / 60:.1f} min ({stats.worst_run})" if worst is not None else "no finished runs",
            )
        )
    if "parity_artifact_key" in criteria:
        results.append(
            Criterion(
                f"{target} parity report passes",
                parity is not None and parity.startswith("parity holds"),
                parity or f"no {criteria['parity_artifact_key']} artifact on a {target} run (run `dbtflow parity`)",
            )
        )
    if criteria.get("alerts"):
        results.append(
            Criterion(
                "failure alerts on", alerts == "enabled", alerts or "no alert automation (`dbtflow notify setup`)"
            )
        )
    return results


def collect(
    deployment: str,
    since: timedelta,
    since_text: str,
    criteria: dict[str, Any] | None = None,
    criteria_source: str | None = None,
    now: datetime | None = None,
) -> Status:
    """Read the deployment's recent runs from the Prefect API and summarize them (see the module docstring)."""

    now = now or datetime.now(UTC)
    start = now - since
    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise UserError(f"deployment {deployment!r} not found on {client.api_url}: check --deployment") from None
        default_target = str((found.parameters or {}).get("target") or DEFAULT_TARGET)
        runs = _runs(client, found.id, start, default_target)
        _add_failed_nodes(client, runs)
        by_target: dict[str, list[Run]] = {}
        for run in runs:
            if run.state_type in FINISHED:
                by_target.setdefault(run.target, []).append(run)
        upcoming = _upcoming(client, found.id, default_target)
        schedules = [_schedule(s, default_target) for s in client.read_deployment_schedules(found.id)]
        status = Status(
            deployment=deployment,
            since=since_text,
            window_start=start.isoformat(timespec="seconds"),
            now=now.isoformat(timespec="seconds"),
            targets=[target_stats(t, rs) for t, rs in sorted(by_target.items())],
            upcoming=upcoming,
            schedules=sorted(schedules, key=lambda s: s.slug),
            running=sum(r.state_type not in FINISHED for r in runs),
            criteria_source=criteria_source,
        )
        if criteria is not None:
            target = str(criteria.get("target", "prod"))
            key = criteria.get("parity_artifact_key")
            parity = _parity(client, str(key), target, default_target) if key else None
            found_alerts = client.read_automations_by_name(automation_name(deployment))
            alerts = ("enabled" if found_alerts[0].enabled else "disabled") if found_alerts else None
            status.criteria = evaluate(criteria, status, parity, alerts)
    return status


def to_json(status: Status) -> dict[str, Any]:
    data = asdict(status)
    for target in data["targets"]:
        target["top_failed_nodes"] = [{"node": n, "failures": c} for n, c in target["top_failed_nodes"]]
    data["exit_criteria_met"] = all(c.passed for c in status.criteria) if status.criteria else None
    return data


def _runs(client: Any, deployment_id: Any, start: datetime, default_target: str) -> list[Run]:

    runs: list[Run] = []
    flow_run_filter = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(after_=start),  # type: ignore[arg-type]
        state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])),
    )
    while True:
        page = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=flow_run_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
            offset=len(runs),
        )
        runs += [_run(r, default_target) for r in page]
        if len(page) < 200:
            return runs


def _run(flow_run: Any, default_target: str) -> Run:
    state = flow_run.state
    duration: float | None = None
    if flow_run.start_time and flow_run.end_time:
        duration = (flow_run.end_time - flow_run.start_time).total_seconds()
    elif flow_run.total_run_time:
        duration = flow_run.total_run_time.total_seconds()
    return Run(
        id=str(flow_run.id),
        name=flow_run.name,
        target=str((flow_run.parameters or {}).get("target") or default_target),
        state_type=state.type.value if state else "UNKNOWN",
        state_name=(state.name or "") if state else "",
        message=(state.message or "") if state else "",
        expected_start=flow_run.expected_start_time,
        duration_seconds=duration,
        auto_scheduled=bool(flow_run.auto_scheduled),
    )


def _add_failed_nodes(client: Any, runs: list[Run]) -> None:

    failed = {r.id: r for r in runs if r.state_type in ("FAILED", "CRASHED")}
    ids = list(failed)
    for chunk in (ids[i : i + 50] for i in range(0, len(ids), 50)):
        offset = 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in chunk])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED]))
                ),
                limit=200,
                offset=offset,
            )
            for task_run in page:
                if task_run.name.split(" ", 1)[0] in NODE_TYPES:
                    failed[str(task_run.flow_run_id)].failed_nodes.append(task_run.name)
            offset += len(page)
            if len(page) < 200:
                break
    for run in failed.values():
        run.failed_nodes = sorted(set(run.failed_nodes)) or nodes_from_message(run.message)


def _upcoming(client: Any, deployment_id: Any, default_target: str, limit: int = 5) -> list[Upcoming]:

    page = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=limit,
    )
    return [
        Upcoming(
            expected_start=r.expected_start_time.isoformat(timespec="seconds") if r.expected_start_time else "",
            target=str((r.parameters or {}).get("target") or default_target),
            name=r.name,
            state=r.state.name if r.state else "",
        )
        for r in page
    ]


def _schedule(schedule: Any, default_target: str) -> Schedule:
    inner = schedule.schedule
    if getattr(inner, "cron", None):
        text = f"cron {inner.cron!r} {inner.timezone or 'UTC'}"
    elif getattr(inner, "interval", None):
        text = f"every {inner.interval}"
    else:
        text = f"rrule {getattr(inner, 'rrule', inner)!r}"
    target = str((schedule.parameters or {}).get("target") or default_target)
    return Schedule(slug=str(schedule.slug or schedule.id), active=bool(schedule.active), schedule=text, target=target)


def _parity(client: Any, key: str, target: str, default_target: str) -> str | None:
    """The verdict of the latest parity artifact `key` published on a flow run of `target`."""

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=50
    )
    for artifact in artifacts:
        if artifact.flow_run_id is None:
            continue
        try:
            flow_run = client.read_flow_run(artifact.flow_run_id)
        except Exception:  # the run was deleted
            continue
        if str((flow_run.parameters or {}).get("target") or default_target) == target:
            return str(artifact.description or "")
    return None
