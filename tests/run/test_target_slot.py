"""Two runs of one target never run dbt at once: the target's slot, against a real Prefect server.

A test holds the slot of the `local` target as another run would; the flow then waits (and times
out) or cancels itself, without starting dbt. The end-to-end overlap of real runs on a worker is
in tests/e2e/test_deployment.py.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from prefect.concurrency.sync import concurrency

from dbtflow.run._flow import dbt_flow, runs_root
from dbtflow.run._slot import _ensure_limit

pytestmark = pytest.mark.usefixtures("prefect_api")

SLOT = "dbt-dbt-williamgrant-local"


def limit(name: str) -> dict[str, object]:
    response = httpx.get(f"{os.environ['PREFECT_API_URL']}/v2/concurrency_limits/{name}")
    response.raise_for_status()
    return dict(response.json())


def holder(name: str, seconds: float, held: threading.Event) -> threading.Thread:
    """Another run holding the slot, on a thread that sees this test's Prefect settings."""

    def hold() -> None:
        _ensure_limit(name)
        with concurrency(name, occupy=1, strict=True):
            held.set()
            time.sleep(seconds)

    return threading.Thread(target=contextvars.copy_context().run, args=(hold,))


def test_the_slot_is_created_once_with_one_slot_and_released_after_the_run(tenant: Path) -> None:
    flow = dbt_flow(tenant, name="run_dbt_wg_test")
    state = flow(target="local", command="seed", return_state=True)
    assert state.is_completed(), state.message
    slot = limit(SLOT)
    assert slot["limit"] == 1 and slot["active_slots"] == 0


def test_a_run_of_a_busy_target_cancels_itself_when_told_to(tenant: Path) -> None:
    flow = dbt_flow(tenant, name="run_dbt_wg_test")
    held = threading.Event()
    other = holder(SLOT, 8, held)
    other.start()
    try:
        assert held.wait(30)
        state = flow(target="local", on_overlap="cancel", return_state=True)
    finally:
        other.join()
    assert state.is_cancelled()
    message = state.message or ""
    assert message.startswith(f"the slot {SLOT!r} of local is held by ") and "on_overlap is 'cancel'" in message
    assert not (runs_root() / str(state.state_details.flow_run_id)).exists(), "dbt must not have started"


def test_a_waiting_run_gives_up_at_its_timeout_and_a_free_target_runs_at_once(tenant: Path) -> None:
    flow = dbt_flow(tenant, name="run_dbt_wg_test")
    held = threading.Event()
    other = holder(SLOT, 15, held)
    other.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        state = flow(target="local", timeout_seconds=3, return_state=True)
        waited = time.monotonic() - started
    finally:
        other.join()
    assert state.name == "TimedOut" and state.is_failed()
    assert (state.message or "").startswith(f"timed out after 3 s waiting for the slot {SLOT!r}, held by ")
    assert 3 <= waited < 14
    assert limit(SLOT)["active_slots"] == 0
