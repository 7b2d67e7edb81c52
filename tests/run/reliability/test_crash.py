"""A run's process killed mid-run on a real worker: Crashed, the target's slot freed, the next run succeeds."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_deployment import _dbt_span, _wait_final

pytestmark = [pytest.mark.slow]

SLOT = "dbt-dbt-williamgrant-local"
SMALL = {"target": "local", "select": "+stg_markets", "command": "build --indirect-selection cautious"}


def flow_process(flow_run_id: str) -> int | None:
    """The pid of the flow run's engine process the process worker started (it carries the run's id)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ and b"prefect.engine" in cmdline:
            return int(proc.name)
    return None


def test_a_killed_run_is_crashed_and_the_next_run_of_its_target_starts_and_succeeds(stack: Stack) -> None:
    create = f"/deployments/{stack.deployment()['id']}/create_flow_run"
    crashed = str(stack.post(create, {"parameters": {"target": "local"}})["id"])  # a whole build
    deadline = time.monotonic() + 600
    while True:  # until dbt runs nodes in that run's process
        log = stack.run_folder(crashed) / "dbt.log"
        pid = flow_process(crashed)
        if pid and log.exists() and " START " in log.read_text(errors="replace"):
            break
        assert time.monotonic() < deadline, "the run never started dbt"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    following = str(stack.post(create, {"parameters": SMALL})["id"])

    first, second = _wait_final(stack, [crashed, following], timeout=900)

    assert first["state"]["type"] == "CRASHED", first["state"]
    assert second["state"]["type"] == "COMPLETED", second["state"]
    start, _ = _dbt_span(stack, following)
    waited = (start - killed_at).total_seconds()
    print(f"the next run of the target started dbt {waited:.0f} s after the kill")
    assert 0 < waited < 120, f"the slot of the killed run was free only {waited:.0f} s after the kill"
    assert stack.get(f"/v2/concurrency_limits/{SLOT}")["active_slots"] == 0
