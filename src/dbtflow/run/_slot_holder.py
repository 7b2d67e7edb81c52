"""Who holds a target's slot, and freeing a slot whose holder is gone (`dbtflow slot release`).

Contract
- `find_holder(client, limit_id)` names the run holding the slot `dbt-<project>-<target>` (see
  `dbtflow.run._slot`) from the limit's newest `prefect.concurrency-limit.acquired` and
  `.released` events: the newest acquired event not followed by a released one of the same lease
  or flow run. dbtflow's acquired events carry the holder's `flow_run_id` and `lease_id` in their
  payload; for other events the related `prefect.flow-run.<id>` resource names the run. None when
  no event names one. `Holder.describe()` is the phrase the waiting run logs.
- `release_slot(name, force)` frees a slot whose holder is gone and returns the line saying why:
  the holder's flow run is in a final state, or its lease is unknown to the server (forgotten by
  a restart with in-memory leases), or no event names a holder. A holder whose run is not final
  and whose lease is live is refused (UserError) unless `force`. The slot is given back through
  its lease when the server knows it, else by name (one slot), and a `released` event is emitted
  so later runs no longer name that holder.

Pitfalls
- Prefect 3.9's API cannot list a limit's holders (the lease storage is server-side only): the
  events are the record. Events are sent asynchronously and the server stores them in batches
  (every few seconds): a run that took the slot a moment ago, or just before its server was
  killed, may not be named ("a run no event names"; the release hint is then given).
- A holder whose flow run says Running may be dead: a run whose server was killed before its end
  never recorded it. Its lease tells: a lease the server does not know cannot be renewed by
  anyone. Probing renews a live lease for LEASE_SECONDS, as its holder does every 15 s anyway; only
  the explicit command probes, never a waiting run (it would keep a crashed run's lease alive).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound

from dbtflow.errors import UserError

ACQUIRED, RELEASED = "prefect.concurrency-limit.acquired", "prefect.concurrency-limit.released"
PROBE_SECONDS = 60  # a probe renews a live lease for this long (the holder's own renewals use the same)


@dataclass(frozen=True)
class Holder:
    """The run holding a slot, as its acquired event and its flow run tell."""

    flow_run_id: str | None
    lease_id: UUID | None
    acquired_at: datetime
    run_name: str | None = None
    state: str | None = None  # the flow run's state name, None when Prefect does not know the run
    final: bool = False

    def describe(self) -> str:
        since = self.acquired_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.flow_run_id is None:
            return f"a run that took it at {since}"
        state = f"{self.state}" if self.state else "unknown to Prefect"
        return f"flow run {self.flow_run_id} '{self.run_name or '?'}' ({state}; took the slot at {since})"


def find_holder(client: SyncPrefectClient, limit_id: UUID) -> Holder | None:
    """The run holding the limit's slot, from its newest acquired/released events; None when none is named."""
    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[ACQUIRED, RELEASED]),
            resource=EventResourceFilter(id=[f"prefect.concurrency-limit.{limit_id}"]),
        ),
        limit=50,
    )
    released: set[str] = set()
    for event in page.events:  # newest first
        keys = {k for k in (str(event.payload.get("lease_id") or ""), _flow_run_of(event) or "") if k}
        if event.event == RELEASED:
            released |= keys
            continue
        if keys & released:
            return None  # the newest holder gave it back: whoever holds it now is not named yet
        lease = event.payload.get("lease_id")
        return _with_state(client, Holder(_flow_run_of(event), UUID(lease) if lease else None, event.occurred))
    return None


def _flow_run_of(event: Any) -> str | None:
    if event.payload.get("flow_run_id"):
        return str(event.payload["flow_run_id"])
    for related in event.related:
        if related.id.startswith("prefect.flow-run."):
            return str(related.id.removeprefix("prefect.flow-run."))
    return None


def _with_state(client: SyncPrefectClient, holder: Holder) -> Holder:
    if holder.flow_run_id is None:
        return holder
    try:
        run = client.read_flow_run(UUID(holder.flow_run_id))
    except (ObjectNotFound, ValueError):
        return holder
    state = run.state
    return Holder(
        holder.flow_run_id,
        holder.lease_id,
        holder.acquired_at,
        run.name,
        state.name if state else None,
        bool(state and state.is_final()),
    )


def lease_known(client: SyncPrefectClient, lease_id: UUID) -> bool:
    """Whether the server knows the lease (renewing it for PROBE_SECONDS); raises while the API cannot say."""
    try:
        client.renew_concurrency_lease(lease_id, PROBE_SECONDS)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (404, 410):
            return False
        raise
    return True


def release_slot(name: str, force: bool = False) -> str:
    """Free the slot `name` when its holder is gone (or with `force`); the line saying what was done.

    Args:
        name: the slot, `dbt-<project>-<target>`.
        force: free it even though its holder looks alive.

    Returns:
        One line: what held the slot and why it was freed (or that it was free).
    """
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise UserError(f"there is no slot {name!r} on this Prefect server: no run of the target took it") from None
        if limit.active_slots == 0:
            return f"the slot {name!r} is free: nothing to release"
        holder = find_holder(client, limit.id)
        known = holder is not None and holder.lease_id is not None and lease_known(client, holder.lease_id)
        gone = _why_gone(holder, known)
        if gone is None and not force:
            assert holder is not None
            raise UserError(
                f"the slot {name!r} is held by {holder.describe()} and its lease is live: wait for that run, "
                "cancel it in Prefect, or pass --force to free the slot anyway"
            )
        if known and holder is not None and holder.lease_id is not None:
            client.release_concurrency_slots_with_lease(holder.lease_id)
        else:
            client.release_concurrency_slots([name], 1, 1.0)
    payload = {"lease_id": str(holder.lease_id) if holder and holder.lease_id else None}
    payload["flow_run_id"] = holder.flow_run_id if holder else None
    emit_event(
        RELEASED,
        resource={"prefect.resource.id": f"prefect.concurrency-limit.{limit.id}", "prefect.resource.name": name},
        payload={**payload, "released_by": "dbtflow slot release"},
    )
    who = holder.describe() if holder else "a run no event names"
    return f"released the slot {name!r}, held by {who}: {gone or 'forced (--force)'}"


def _why_gone(holder: Holder | None, lease_known: bool) -> str | None:
    """Why the holder cannot be using the slot any more; None when it may still be."""
    if holder is None:
        return "no run is named as its holder"
    if holder.final:
        return f"that run has ended ({holder.state})"
    if holder.lease_id is not None and not lease_known:
        return "the server does not know its lease (restarted with in-memory leases, or the run died)"
    return None
