"""The target's slot: two runs of one target never run dbt at the same time.

Contract
- `slot_name(request)` is the Prefect global concurrency limit (of 1) of the request's project
  and target, `dbt-<project>-<target>`; `target_slot(name, timeout_seconds)` creates it if
  missing, waits for it (TimeoutError if it stays taken past `timeout_seconds`) and holds it
  through a lease, renewed every LEASE_SECONDS/4 on a thread, until the block ends.
- A crashed run's slot frees itself within LEASE_SECONDS (plus the server's lease sweep, every
  15 s): the next run of the target then starts.

Pitfalls
- Prefect's own renewal (`prefect.concurrency.sync.concurrency`) stops at the first failed
  renewal, so a short API outage would let the lease lapse while dbt still runs: `_Lease`
  keeps trying, with plain requests (no client-side retries that would block for a minute).
- An API outage longer than about LEASE_SECONDS loses the slot: a waiting run of the target
  may then start, and the run logs a warning.
- A server restarted with in-memory lease storage (Prefect's default) forgets the lease but
  not the slot: the run takes the slot again under a new lease. Self-hosted servers should keep
  leases on disk (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE, docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
from prefect import get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dbtflow._text import slug
from dbtflow.run._reporter import api_client
from dbtflow.run._request import RunRequest

LEASE_SECONDS = 60  # a crashed run's slot is free again at most this long after it died


def slot_name(request: RunRequest) -> str:
    """The Prefect global concurrency limit (of 1) that keeps two runs of one target apart."""
    return slug("dbt", request.project.name, request.target)


@contextlib.contextmanager
def target_slot(name: str, timeout_seconds: float | None) -> Iterator[None]:
    """Hold the slot `name` (waiting up to `timeout_seconds`; TimeoutError if it stays taken), renewing its lease."""
    _ensure_limit(name)
    acquired = acquire_concurrency_slots_with_lease(
        [name], 1, timeout_seconds=timeout_seconds, lease_duration=LEASE_SECONDS, strict=True
    )
    events = emit_concurrency_acquisition_events(acquired.limits, 1)
    lease = _Lease(acquired.lease_id, name)
    try:
        yield
    finally:
        lease.release()
        emit_concurrency_release_events(acquired.limits, 1, events)


class _Lease:
    """A slot's lease, renewed every LEASE_SECONDS/4 on a thread until released; API hiccups are retried.

    Prefect's own renewal gives up after one failed renewal (three tries in a few seconds), so a
    short API outage would let the lease lapse while dbt still runs: here it keeps trying, with
    plain requests (no client-side retries that would block for a minute). A server restarted
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
        self._http = api_client()
        self._thread = threading.Thread(target=self._loop, name="dbtflow-slot-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Give the slot back; a few tries through API hiccups, else the lease expires on its own."""
        self._stop.set()
        self._thread.join(15)
        try:
            for attempt in range(5):
                try:
                    return self._give_back()
                except httpx.HTTPError as exc:
                    if attempt == 4:
                        self._logger.warning(
                            "could not release the slot %r (it frees itself in %s s): %s", self.name, LEASE_SECONDS, exc
                        )
                    else:
                        time.sleep(2)
        finally:
            self._http.close()

    def _give_back(self) -> None:
        if self.lease_id is None:
            return
        if self._renew_status() in (404, 410):  # forgotten since the last renewal: decrement-with-lease ignores it
            self._lease_gone(retake=False)
            return
        body = {"lease_id": str(self.lease_id)}
        self._http.post("v2/concurrency_limits/decrement-with-lease", json=body).raise_for_status()
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
        response = self._http.post(
            f"v2/concurrency_limits/leases/{self.lease_id}/renew", json={"lease_duration": LEASE_SECONDS}
        )
        if response.status_code not in (404, 410):
            response.raise_for_status()
            self._renewed = time.monotonic()
        return response.status_code

    def _lease_gone(self, retake: bool) -> None:
        """The server does not know the lease: it expired (the slot is free) or it was forgotten (still counted)."""
        if self._forgotten is None:
            self._forgotten = time.monotonic() - self._renewed < LEASE_SECONDS - 5
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
            body = {"names": [self.name], "slots": 1, "occupancy_seconds": held}
            self._http.post("v2/concurrency_limits/decrement", json=body).raise_for_status()
            self._given_back = True
        if not retake:
            self.lease_id = None
            self._logger.warning("%s; released the slot by name", forgot)
            return
        response = self._http.post(
            "v2/concurrency_limits/increment-with-lease",
            json={"names": [self.name], "slots": 1, "mode": "concurrency", "lease_duration": LEASE_SECONDS},
        )
        if response.status_code == 423:  # another run took it meanwhile
            self.lease_id = None
            self._logger.warning("%s and another run took it: this run carries on without it", forgot)
            return
        response.raise_for_status()
        self.lease_id, self._renewed = UUID(response.json()["lease_id"]), time.monotonic()
        self._forgotten, self._given_back = None, False
        self._logger.warning("%s; took the slot again under a new lease", forgot)


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run of the target created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
