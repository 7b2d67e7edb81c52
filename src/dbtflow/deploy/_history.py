"""A deployment's earlier configurations, recorded at deploy time, and re-applying one (any Prefect server).

Contract
- `record(client, name, reason, actor)` snapshots the deployment as it is now (entrypoint, path,
  parameters, parameter schema, pull steps - which hold the git repository and branch/commit -,
  job variables, work pool and queue, tags, description, version, and its schedules) into the
  history kept in Prefect (`prefect_docs`, artifact `history_key(name)`), at most `LIMIT` entries.
  `dbtflow deploy` calls it before deploying (reason `deploy`); nothing is recorded when the
  deployment does not exist yet.
- `resolve(history, current, which)`: `which` is `previous` or an entry `id`. `previous` is the
  configuration the last effective `dbtflow deploy` replaced: the newest `deploy` entry whose
  configuration differs from what came after it (a re-deploy of the same configuration is skipped).
  Rolling back does not move it, so rolling back twice is rolling back once.
- `restore(client, name, entry, actor)` records the current configuration (reason `rollback`,
  so it can be restored by id) and re-applies the entry through Prefect's API: the deployment's
  fields by PATCH, its schedules by slug (definitions and parameters; added and removed ones too).
  It changes nothing and records nothing when the deployment already has that configuration.
  A deployment that no longer exists is created again from the entry.

Pitfalls
- Schedules' `active` flags are kept as they are now for schedules that exist (pausing and
  resuming is cutover's and rollback's job, from their journal); a re-created schedule gets its
  recorded flag. Prefect Cloud's own deployment versions do not carry schedules at all.
- Only what the server stores is re-applied: the code at the recorded git branch is whatever the
  branch holds at run time; pin `commit_sha` in the git_clone pull step to make a version exact.
"""

from __future__ import annotations

import getpass
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.exceptions import ObjectNotFound

from dbtflow.deploy import _prefect_docs as prefect_docs
from dbtflow.errors import UserError

FORMAT = "dbtflow-deploy-history/1"
LIMIT = 10
CONFIG = (
    "entrypoint",
    "path",
    "parameters",
    "parameter_openapi_schema",
    "enforce_parameter_schema",
    "pull_steps",
    "job_variables",
    "work_pool_name",
    "work_queue_name",
    "tags",
    "description",
    "version",
)


@dataclass(frozen=True)
class Actor:
    user: str
    host: str
    command: str
    invocation: str

    @classmethod
    def current(cls, command: str) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(user, socket.gethostname(), command, uuid.uuid4().hex[:12])

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "host": self.host, "command": self.command, "invocation": self.invocation}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history_key(name: str) -> str:
    return prefect_docs.artifact_key("dbtflow-deploy-history", name.split("/")[-1])


def snapshot(client: SyncPrefectClient, name: str) -> dict[str, Any] | None:
    """The deployment's configuration and schedules as plain JSON; None when it does not exist."""
    try:
        found = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
    data = found.model_dump(mode="json")
    schedules = []
    for s in client.read_deployment_schedules(found.id):
        plain = s.model_dump(mode="json")
        schedules.append({k: plain[k] for k in ("slug", "active", "schedule")} | {"parameters": s.parameters or {}})
    schedules.sort(key=lambda s: (s["slug"] is None, s["slug"] or "", str(s["schedule"])))
    return {"config": {k: data.get(k) for k in CONFIG}, "schedules": schedules, "deployment_id": str(found.id)}


def git_ref(config: dict[str, Any]) -> str:
    """`repository@branch` (or commit) from the git_clone pull step, for people to read."""
    for step in config.get("pull_steps") or []:
        for kind, args in step.items():
            if kind.endswith("git_clone") and isinstance(args, dict):
                ref = args.get("commit_sha") or args.get("branch") or "default branch"
                return f"{args.get('repository')}@{ref}"
    return "-"


def load(client: SyncPrefectClient, name: str) -> dict[str, Any]:
    doc = prefect_docs.load(client, history_key(name))
    if doc is None:
        return {"format": FORMAT, "deployment": name, "entries": []}
    if doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
        raise UserError(f"the Prefect artifact {history_key(name)!r} is not a dbtflow deploy history ({FORMAT})")
    return doc


def _save(client: SyncPrefectClient, name: str, doc: dict[str, Any]) -> None:
    doc["entries"] = doc["entries"][-LIMIT:]
    lines = ["| id | recorded | reason | by | entrypoint | git |", "|---|---|---|---|---|---|"]
    for e in reversed(doc["entries"]):
        by = f"{e['by']['user']}@{e['by']['host']}"
        cfg = e["config"]
        lines.append(
            f"| {e['id']} | {e['recorded_at']} | {e['reason']} | {by} | {cfg['entrypoint']} | {git_ref(cfg)} |"
        )
    prefect_docs.save(client, history_key(name), doc, f"dbtflow deploy history: {name}", lines)


def record(
    client: SyncPrefectClient, name: str, reason: str, actor: Actor, extra: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Append the deployment's current configuration to its history; None when it does not exist."""
    current = snapshot(client, name)
    if current is None:
        return None
    doc = load(client, name)
    entry = {"id": uuid.uuid4().hex[:8], "recorded_at": now_iso(), "reason": reason, "by": actor.as_dict()}
    entry.update(current, **(extra or {}))
    doc["entries"].append(entry)
    _save(client, name, doc)
    return entry


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same configuration and schedule definitions (`active` flags are cutover's, not a version's)."""

    def shape(entry: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "active"} for s in entry["schedules"]]

    return bool(a["config"] == b["config"] and shape(a) == shape(b))


def resolve(history: dict[str, Any], current: dict[str, Any] | None, which: str) -> dict[str, Any]:
    entries = history["entries"]
    if not entries:
        raise UserError(
            f"no deploy history for {history['deployment']} (artifact {history_key(history['deployment'])!r}): "
            "`dbtflow deploy` records one each time it replaces the deployment"
        )
    if which != "previous":
        for entry in entries:
            if entry["id"] == which:
                return dict(entry)
        ids = ", ".join(e["id"] for e in entries)
        raise UserError(f"--deployment-version {which!r} is not in the deploy history: pass previous or one of {ids}")
    for i in range(len(entries) - 1, -1, -1):
        after = entries[i + 1] if i + 1 < len(entries) else current
        if entries[i]["reason"] == "deploy" and (after is None or not same(entries[i], after)):
            return dict(entries[i])
    raise UserError(f"the deploy history of {history['deployment']} has no earlier configuration to go back to")


def restore(client: SyncPrefectClient, name: str, entry: dict[str, Any], actor: Actor) -> bool:
    """Re-apply `entry`; False when the deployment already has that configuration."""
    current = snapshot(client, name)
    if current is not None and same(current, entry):
        return False
    if current is None:
        flow_name, _, short = name.partition("/")
        flow_id = client.create_flow_from_name(flow_name)
        client.create_deployment(flow_id, short, **entry["config"], schedules=[_create(s) for s in entry["schedules"]])
        return True
    record(client, name, "rollback", actor, {"restores": entry["id"]})
    deployment_id = uuid.UUID(current["deployment_id"])
    client.update_deployment(deployment_id, DeploymentUpdate(**entry["config"]))
    _apply_schedules(client, deployment_id, entry["schedules"])
    return True


def _create(recorded: dict[str, Any], active: bool | None = None) -> DeploymentScheduleCreate:
    return DeploymentScheduleCreate.model_validate(
        {
            "schedule": recorded["schedule"],
            "active": recorded["active"] if active is None else active,
            "parameters": recorded["parameters"],
            "slug": recorded["slug"],
        }
    )


def _apply_schedules(client: SyncPrefectClient, deployment_id: uuid.UUID, recorded: list[dict[str, Any]]) -> None:
    current = client.read_deployment_schedules(deployment_id)
    by_slug = {s.slug: s for s in current if s.slug}
    wanted = {s["slug"] for s in recorded if s["slug"]}
    for s in current:
        if not s.slug or s.slug not in wanted:
            client.delete_deployment_schedule(deployment_id, s.id)
    for spec in recorded:
        now = by_slug.get(spec["slug"]) if spec["slug"] else None
        if now is None:
            client.create_deployment_schedules(deployment_id, [_create(spec)])
            continue
        new = _create(spec, active=now.active)
        client.update_deployment_schedule(
            deployment_id, now.id, active=now.active, schedule=new.schedule, parameters=new.parameters
        )
