"""Rollback: undo what the cutover journal says cutover did, exactly and idempotently.

Contract
- `plan_rollback(journal, prefect, cloud)` reads the current state of every object the journal's
  open changes touched (`Journal.open_changes`: cutover entries no rollback has undone, one per
  object) and decides, before anything changes:
  - a Prefect schedule goes back to its recorded `active` (so one cutover activated is paused;
    one that was already active before cutover stays active); a deleted schedule is skipped;
  - a Prefect trigger of a chained job (an automation) goes back to its recorded `enabled`;
  - a dbt Cloud job whose `triggers` are what cutover left gets the recorded `triggers` back
    (exactly as journaled, not simply "on"); one already as recorded needs no write;
  - a job whose triggers are neither was edited since: refused (`UserError`), unless `force`.
- `apply_rollback` makes the changes most recent first (Prefect schedules before dbt Cloud jobs),
  each journaled like cutover's (pending, change, done) with `undoes` naming the entries it undoes.
  A dbt Cloud write `expect`s the triggers it planned from. Objects already as recorded are
  journaled as undone without a write, so a second rollback finds nothing open and does nothing.

Pitfalls
- The dbt Cloud client is made only when a job needs it: a rollback of Prefect schedules alone
  needs no dbt Cloud token.
- Rollback does not touch dbt Cloud jobs cutover did not change, nor schedules outside the journal.
- A schedule is paused with its parameters sent along (`schedules.set_schedule_active`), since
  Prefect's schedule PATCH resets the parameters it is not given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient

from dbtflow.cloud._client import DbtCloudClient
from dbtflow.cutover import _chain as chained
from dbtflow.cutover._cutover import read_deployment
from dbtflow.cutover._journal import Journal, JournalStore, OpenChange, object_key
from dbtflow.deploy._history import Actor
from dbtflow.deploy._schedules import set_schedule_active
from dbtflow.errors import UserError


@dataclass
class Undo:
    change: OpenChange
    now: Any  # the object's current value of the field (None: the schedule is gone)
    write: bool  # False: already as recorded (or gone): journal it as undone, change nothing
    deployment_id: UUID | None = None
    schedule_id: UUID | None = None

    def line(self) -> str:
        what = object_key(self.change.object)
        field = self.change.field
        if self.change.object["kind"] in ("prefect_schedule", "prefect_trigger"):
            if self.now is None:
                return f"  = {what}: no longer exists, nothing to pause"
            state = {True: "active", False: "paused"}
            if self.change.object["kind"] == "prefect_trigger":
                state = {True: "enabled", False: "disabled"}
            if not self.write:
                return f"  = {what}: already {state[bool(self.change.before)]}"
            return f"  ~ {what}: {state[bool(self.now)]} -> {state[bool(self.change.before)]}"
        if not self.write:
            return f"  = {what}: already as recorded ({_short(self.change.before)})"
        if isinstance(self.now, dict) and isinstance(self.change.before, dict):
            keys = [k for k in {**self.now, **self.change.before} if self.now.get(k) != self.change.before.get(k)]
            diffs = ", ".join(
                f"{field}.{k} {_short(self.now.get(k))} -> {_short(self.change.before.get(k))}" for k in keys
            )
            return f"  ~ {what}: {diffs}"
        return f"  ~ {what}: {_short(self.now)} -> {_short(self.change.before)}"


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in sorted(value.items())) + "}"
    return "null" if value is None else str(value)


def plan_rollback(
    journal: Journal, prefect: SyncPrefectClient, cloud: Callable[[], DbtCloudClient], force: bool = False
) -> list[Undo]:
    undos = []
    for change in journal.open_changes():
        obj = change.object
        if obj["kind"] == "prefect_schedule":
            found, current = read_deployment(prefect, obj["deployment"])
            schedule = current.get(obj["slug"])
            if schedule is None:
                undos.append(Undo(change, None, False))
                continue
            active = bool(schedule.active)
            undos.append(Undo(change, active, active != change.before, found.id, schedule.id))
            continue
        if obj["kind"] == "prefect_trigger":
            enabled = chained.trigger_enabled(prefect, UUID(obj["automation_id"]))
            undos.append(Undo(change, enabled, enabled is not None and enabled != change.before))
            continue
        now = cloud().get_job_raw(int(obj["job_id"])).get("triggers")
        if now == change.before:
            undos.append(Undo(change, now, False))
        elif now == change.after or force:
            undos.append(Undo(change, now, True))
        else:
            raise UserError(
                f"dbt Cloud job {obj['job_id']} {obj.get('name', '')!r} was edited since cutover: its triggers are "
                f"{_short(now)}, cutover left {_short(change.after)} and recorded {_short(change.before)} before; "
                "nothing was changed: set it by hand in dbt Cloud, or pass --force to write the recorded triggers"
            )
    return undos


def apply_rollback(
    undos: list[Undo],
    journal: Journal,
    store: JournalStore,
    prefect: SyncPrefectClient,
    cloud: Callable[[], DbtCloudClient],
    actor: Actor,
    echo: Callable[[str], None],
) -> int:
    """Make the undos in order, journaling each; returns how many writes were made."""
    writes = 0
    for undo in undos:
        change, obj = undo.change, undo.change.object
        intended = change.before if undo.write else undo.now
        journal.begin("rollback", obj, change.field, undo.now, intended, actor, undoes=change.seqs)
        store.save(journal)
        if undo.write and obj["kind"] == "prefect_schedule":
            assert undo.deployment_id is not None and undo.schedule_id is not None
            set_schedule_active(prefect, undo.deployment_id, undo.schedule_id, bool(change.before))
            after: Any = bool(change.before)
        elif undo.write and obj["kind"] == "prefect_trigger":
            after = chained.set_enabled(prefect, UUID(obj["automation_id"]), bool(change.before))
        elif undo.write:
            update = cloud().update_job(int(obj["job_id"]), {"triggers": change.before}, expect={"triggers": undo.now})
            after = update.after.get("triggers")
        else:
            after = undo.now
        note = None if undo.write else ("already as recorded" if undo.now is not None else "gone")
        entry = journal.complete(after, note=note)
        store.save(journal)
        writes += undo.write
        undone = ", #".join(map(str, change.seqs))
        echo(f"restored {object_key(obj)} {change.field} (journal #{entry['seq']}, undoes #{undone})")
    return writes
