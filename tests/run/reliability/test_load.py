"""Load: 20 ad-hoc runs of one target queued at once on the local stack all complete, one at a time, none lost.

The work pool gets a concurrency limit for the test, as a production pool should have: the
worker then starts at most POOL_LIMIT flow processes and the other runs wait in the pool's
queue. Without one, 20 processes start at once (each cloning and installing, then waiting for
the target's slot), which on this 2-core machine starves the stack's SQLite-backed server.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_deployment import _dbt_span, _wait_final

pytestmark = [pytest.mark.slow]

RUNS = 20
POOL_LIMIT = 3
SMALL = {"target": "local", "select": "+stg_markets", "command": "build --indirect-selection cautious"}
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


@pytest.fixture
def limited_pool(stack: Stack) -> Iterator[str]:
    pool = stack.deployment()["work_pool_name"]
    stack.patch(f"/work_pools/{pool}", {"concurrency_limit": POOL_LIMIT})
    yield pool
    stack.patch(f"/work_pools/{pool}", {"concurrency_limit": None})


def test_twenty_runs_of_one_target_queued_at_once_all_complete_one_at_a_time(stack: Stack, limited_pool: str) -> None:
    create = f"/deployments/{stack.deployment()['id']}/create_flow_run"
    started = time.monotonic()
    ids = [str(stack.post(create, {"parameters": SMALL})["id"]) for _ in range(RUNS)]
    try:
        runs = _wait_final(stack, ids, timeout=1500)
    finally:  # a failed test must not leave runs behind for the next test of the shared stack
        for flow_run_id in ids:
            if stack.get(f"/flow_runs/{flow_run_id}")["state"]["type"] not in FINAL:
                body = {"state": {"type": "CANCELLED", "message": "load test ended"}, "force": True}
                stack.post(f"/flow_runs/{flow_run_id}/set_state", body)
    took = time.monotonic() - started

    assert [r["state"]["type"] for r in runs] == ["COMPLETED"] * RUNS, [r["state"] for r in runs]
    assert all(r["run_count"] == 1 for r in runs)
    spans = sorted(_dbt_span(stack, i) for i in ids)  # every run kept its artifacts: none lost
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two runs of one target ran dbt at the same time"
    busy = sum((end - start).total_seconds() for start, end in spans)
    gaps = [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(spans)]
    print(f"{RUNS} runs in {took:.0f} s: dbt busy {busy:.0f} s, handoff gaps max {max(gaps):.1f} s")
    assert stack.get("/v2/concurrency_limits/dbt-dbt-williamgrant-local")["active_slots"] == 0
