"""The target's slot: two runs of one target never run dbt at the same time.

Contract
- `slot_name(request)` is the Prefect global concurrency limit (of 1) of the request's project
  and target, `dbt-<project>-<target>`; `target_slot(name, timeout_seconds)` creates it if
  missing, waits for it (TimeoutError if it stays taken past `timeout_seconds`) and holds it
  through a lease, renewed every LEASE_SECONDS/4 on a thread, until the block ends.
- A crashed run's slot frees itself within LEASE_SECONDS (plus the server's lease sweep, every
  15 s): the next run of the target then starts.
- A run that finds the slot taken logs at once, and every WAIT_LOG_SECONDS, what it waits for and
  on whom (the holder's flow run, from the limit's events: `dbtflow.run._slot_holder`), with the
  `dbtflow slot release` hint when that run has ended or none is named; SlotTaken (a TimeoutError)
  names the holder too. The acquired events carry the flow run's id and the lease's id.
- The end of a run tries to give the slot back for RELEASE_SECONDS at most (the API may be gone);
  a slot it could not give back is not announced as released, its lease lapses on its own.

Pitfalls
- Prefect's own renewal (`prefect.concurrency.sync.concurrency`) stops at the first failed
  renewal, so a short API outage would let the lease lapse while dbt still runs: `_Lease`
  keeps trying, through the Prefect client's lease methods with its retries off
  (`PREFECT_CLIENT_MAX_RETRIES=0` for these calls: its backoff would block for a minute).
- Acquiring is the client's `increment_concurrency_slots_with_lease`, waiting out each 423 for
  the server's Retry-After; the acquired/released events are Prefect's own event names, built
  with `prefect.events.emit_event`, so the limit's page in the UI shows the run holding it.
- An API outage longer than about LEASE_SECONDS loses the slot: a waiting run of the target
  may then start, and the run logs a warning.
- A server restarted with in-memory lease storage (Prefect's default) forgets the lease but
  not the slot: the run takes the slot again under a new lease. A lease unknown after an outage
  of about LEASE_SECONDS may have expired or been forgotten: it counts as forgotten when the limit
  still counts a slot and its newest acquired event is this run's lease (a loaded server restarts
  slowly; telling by the outage's length alone leaked the slot). Self-hosted servers should keep
  leases on disk (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE, docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect import get_client, get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse, MinimalConcurrencyLimitResponse
from prefect.events import Event, emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from dbtflow._text import slug
from dbtflow.run._request import RunRequest
from dbtflow.run._slot_holder import find_holder

LEASE_SECONDS = 60  # a crashed run's slot is free again at most this long after it died
REQUEST_SECONDS = 10.0  # one lease call's bound, so that a dead API is noticed and retried soon
WAIT_LOG_SECONDS = 30  # a waiting run says again on whom it waits this often
RELEASE_SECONDS = 5.0  # how long the end of a run tries to give the slot back before leaving it to its lease
T = TypeVar("T")


def slot_name(request: RunRequest) -> str:
    """The Prefect global concurrency limit (of 1) that keeps two runs of one target apart.

    Args:
        request: the validated request.

    Returns:
        `dbt-<project>-<target>`, slugged.
    """
    return slot_name_of(request.project.name, request.target)


def slot_name_of(project: str, target: str) -> str:
    """`slot_name` from the project's name and the target (what `dbtflow slot release` frees)."""
    return slug("dbt", project, target)


class SlotTaken(TimeoutError):
    """The slot stayed taken; `holder` says by whom (`Holder.describe()`, or that no event names one)."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def target_slot(name: str, timeout_seconds: float | None, target: str = "") -> Iterator[None]:
    """Hold the slot `name` (waiting up to `timeout_seconds`; SlotTaken if it stays taken), renewing its lease.

    Args:
        name: the slot (`slot_name`).
        timeout_seconds: how long to wait for it; None waits as long as it takes.
        target: the target, for the `dbtflow slot release` hint a waiting run logs.
    """
    _ensure_limit(name)
    acquired = _acquire(name, timeout_seconds, target)
    limit = acquired.limits[0]
    held = _limit_event("acquired", limit, payload=_holder_payload(acquired.lease_id))
    lease = _Lease(acquired.lease_id, name)
    try:
        yield
    finally:
        if lease.release():  # a slot that could not be given back is not announced as released
            _limit_event("released", limit, follows=held)


def _acquire(name: str, timeout_seconds: float | None, target: str) -> ConcurrencyLimitWithLeaseResponse:
    """One slot of `name` under a lease, waiting out the server's 423 (slot taken) for its Retry-After.

    While it waits it says for what and on whom, at once and every WAIT_LOG_SECONDS.
    """
    started = time.monotonic()
    deadline = None if timeout_seconds is None else started + timeout_seconds
    said: float | None = None
    holder = "a run no event names"
    with get_client(sync_client=True) as client:
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS, holder=_holder()
                )
                if said is not None:
                    get_run_logger().info("took the slot %r after %.0f s", name, time.monotonic() - started)
                return ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                wait = float(exc.response.headers.get("Retry-After") or 1)
            if said is None or time.monotonic() - said >= WAIT_LOG_SECONDS:
                holder = _say_waiting(client, name, target, time.monotonic() - started, timeout_seconds)
                said = time.monotonic()
            if deadline is not None:
                if time.monotonic() >= deadline:
                    raise SlotTaken(f"the slot {name!r} stayed taken for {timeout_seconds} s", holder)
                wait = min(wait, deadline - time.monotonic())
            time.sleep(max(wait, 0))


def _say_waiting(client: SyncPrefectClient, name: str, target: str, waited: float, timeout: float | None) -> str:
    """Log what the run waits for and on whom; the holder's description."""
    limit = client.read_global_concurrency_limit_by_name(name)
    found = find_holder(client, limit.id)
    holder = found.describe() if found else "a run no event names"
    bound = "as long as it takes" if timeout is None else f"up to {timeout:.0f} s"
    if found is None or found.final:
        ended = "that run has ended" if found else "no run is named"
        hint = f"; {ended} but the slot is still taken: free it with `dbtflow slot release --target {target}`"
    else:  # Running may be a run whose end was never recorded (its server was killed)
        hint = f"; if that run is gone, `dbtflow slot release --target {target}` frees it (it refuses a live one)"
    first = "waiting" if waited < 1 else f"still waiting ({waited:.0f} s)"
    get_run_logger().info(
        "%s for the slot %r (one run of the target at a time, %s): held by %s%s", first, name, bound, holder, hint
    )
    return holder


def _holder() -> ConcurrencyLeaseHolder | None:
    return ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None


def _holder_payload(lease_id: UUID) -> dict[str, str]:
    """The acquired event's payload: who holds the slot under which lease (see `dbtflow.run._slot_holder`)."""
    return {"lease_id": str(lease_id), **({"flow_run_id": str(flow_run.id)} if flow_run.id else {})}


def _limit_event(
    phase: str,
    limit: MinimalConcurrencyLimitResponse,
    follows: Event | None = None,
    payload: dict[str, str] | None = None,
) -> Event | None:
    """Prefect's `prefect.concurrency-limit.<phase>` event for the slot (what its own `concurrency()` emits)."""
    resource = {
        "prefect.resource.id": f"prefect.concurrency-limit.{limit.id}",
        "prefect.resource.name": limit.name,
        "slots-acquired": "1",
        "limit": str(limit.limit),
    }
    return emit_event(f"prefect.concurrency-limit.{phase}", resource=resource, follows=follows, payload=payload)


def _no_retries(client: SyncPrefectClient, call: Callable[[SyncPrefectClient], T]) -> T:
    """`call(client)` with the Prefect client's own retries off: the lease loop retries on its own terms."""
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
        return call(client)


def _status(exc: httpx.HTTPStatusError) -> int:
    return exc.response.status_code


class _Lease:
    """A slot's lease, renewed every LEASE_SECONDS/4 on a thread until released; API hiccups are retried.

    Prefect's own renewal gives up after one failed renewal (three tries in a few seconds), so a
    short API outage would let the lease lapse while dbt still runs: here it keeps trying, with
    the client's retries off (its backoff would block for a minute). A server restarted
    with in-memory lease storage (Prefect's default) forgets the lease but keeps the slot
    counted: the lease then meets 410 before it could have expired, and the slot is taken again
    under a new lease (released by name, acquired anew), else it would stay taken forever. A
    lease that did expire (an outage past LEASE_SECONDS) is gone and the server freed the slot:
    the run warns and carries on without it.
    """

    def __init__(self, lease_id: UUID, name: str) -> None:
        self.lease_id: UUID | None = lease_id
        self.name = name
        self._renewed = self._acquired = time.monotonic()
        self._forgotten: bool | None = None  # decided at the first 404/410: forgotten by the server, or expired
        self._given_back = False  # the forgotten lease's slot was released by name
        self._stop = threading.Event()
        self._logger = get_run_logger()
        self._payload = _holder_payload(lease_id)  # the flow run is read here: the lease's thread has no context
        self._client = get_client(sync_client=True, httpx_settings={"timeout": REQUEST_SECONDS}).__enter__()
        self._thread = threading.Thread(target=self._loop, name="dbtflow-slot-lease", daemon=True)
        self._thread.start()

    def release(self) -> bool:
        """Give the slot back (True when given back); tries through API hiccups for RELEASE_SECONDS at most.

        Past that the lease expires on its own: a run whose API is gone must not wait any longer for it.
        """
        self._stop.set()
        self._thread.join(REQUEST_SECONDS)
        deadline = time.monotonic() + RELEASE_SECONDS
        try:
            while True:
                try:
                    self._give_back()
                    return True
                except httpx.HTTPError as exc:
                    if time.monotonic() + 1 >= deadline:
                        self._logger.warning(
                            "could not release the slot %r (it frees itself in %s s): %s", self.name, LEASE_SECONDS, exc
                        )
                        return False
                    time.sleep(1)
        finally:
            self._client.__exit__(None, None, None)

    def _give_back(self) -> None:
        if self.lease_id is None:
            return
        if self._renew_status() in (404, 410):  # forgotten since the last renewal: decrement-with-lease ignores it
            self._lease_gone(retake=False)
            return
        lease_id = self.lease_id
        _no_retries(self._client, lambda client: client.release_concurrency_slots_with_lease(lease_id))
        self.lease_id = None

    def _loop(self) -> None:
        failing_since: float | None = None
        while self.lease_id is not None and not self._stop.wait(LEASE_SECONDS / 4 if failing_since is None else 3):
            try:
                if self._renew_status() in (404, 410):
                    self._lease_gone(retake=True)
            except httpx.HTTPError as exc:  # unreachable, or 5xx (a restarting or busy server): try again soon
                if failing_since is None:
                    failing_since = time.monotonic()
                    self._logger.warning("could not renew the slot %r (%s); retrying", self.name, exc)
                continue
            if failing_since is not None:
                self._logger.info("renewed the slot %r after %.0f s", self.name, time.monotonic() - failing_since)
                failing_since = None

    def _renew_status(self) -> int:
        """Renew the lease: 2xx, or 404/410 when the server does not know it; raises while the API cannot say."""
        lease_id = self.lease_id
        assert lease_id is not None
        try:
            response: Any = _no_retries(
                self._client, lambda client: client.renew_concurrency_lease(lease_id, LEASE_SECONDS)
            )
        except httpx.HTTPStatusError as exc:
            if _status(exc) in (404, 410):
                return _status(exc)
            raise
        self._renewed = time.monotonic()
        return int(response.status_code)

    def _still_counted_as_ours(self) -> bool:
        """After an outage as long as the lease: the server still counts the slot and no other run took it since."""
        try:
            limit = _no_retries(self._client, lambda client: client.read_global_concurrency_limit_by_name(self.name))
            holder = find_holder(self._client, limit.id) if limit.active_slots else None
        except (httpx.HTTPError, ObjectNotFound):
            return False
        return holder is not None and holder.lease_id == self.lease_id

    def _lease_gone(self, retake: bool) -> None:
        """The server does not know the lease: it expired (the slot is free) or it was forgotten (still counted)."""
        if self._forgotten is None:
            self._forgotten = time.monotonic() - self._renewed < LEASE_SECONDS - 5 or self._still_counted_as_ours()
        if not self._forgotten:
            self.lease_id = None
            self._logger.warning(
                "the slot %r was lost (its lease expired while the API was away): "
                "another run of this target may start before this one ends",
                self.name,
            )
            return
        forgot = f"the Prefect server forgot the lease of the slot {self.name!r} (restarted with in-memory leases)"
        if not self._given_back:  # it still counts the slot: give it back by name, once
            held = time.monotonic() - self._acquired
            _no_retries(self._client, lambda client: client.release_concurrency_slots([self.name], 1, held))
            self._given_back = True
        if not retake:
            self.lease_id = None
            self._logger.warning("%s; released the slot by name", forgot)
            return
        try:
            response = _no_retries(
                self._client,
                lambda client: client.increment_concurrency_slots_with_lease(
                    names=[self.name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
                ),
            )
        except httpx.HTTPStatusError as exc:
            if _status(exc) != 423:
                raise
            self.lease_id = None  # another run took it meanwhile
            self._logger.warning("%s and another run took it: this run carries on without it", forgot)
            return
        retaken = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        self.lease_id, self._renewed = retaken.lease_id, time.monotonic()
        self._forgotten, self._given_back = None, False
        _limit_event("acquired", retaken.limits[0], payload={**self._payload, "lease_id": str(retaken.lease_id)})
        self._logger.warning("%s; took the slot again under a new lease", forgot)


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run of the target created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
