"""Recorded: on Prefect's ephemeral API, wait until it has recorded the run's task runs, before it stops.

Contract
- `on_ephemeral_api()`: no `PREFECT_API_URL`, so Prefect started its ephemeral API for this
  process (`SubprocessASGIServer`, a server in a child process, stopped at the process's exit).
- `wait_recorded(flow_run_id, expected, timeout)` polls the API's task-run count of the flow run
  (`POST /task_runs/count`, final states only) until it reaches `expected` (the task runs the run
  created: the fast engine's reporter, prefect-dbt's `_call_task`), at most `timeout` seconds.
  None when they all are; else one warning line: how many of how many, and the fix (a server).
- The flow calls it at its end, on the ephemeral API only: a real server or Prefect Cloud outlives
  the process, and records the rest after it ended.

Pitfalls
- The server turns task-run events into task runs in its `task_run_recorder` service, in batches,
  after they arrived: the events are accepted long before the task runs exist. At exit Prefect
  terminates the ephemeral server (5 s grace), and the recorder's batches in flight are cancelled
  (`CancelledError` in `task_run_recorder.flush`): without this wait a 200-node `dbt build` with
  prefect-dbt kept 163 task runs (measured, tests/run/reliability/test_ephemeral_api.py).
- prefect-dbt's task runs send their state events through Prefect's `EventsWorker` (a websocket,
  in the background): "none Running" proves nothing while some were never recorded at all; count.
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect.settings import get_current_settings

from dbtflow.run._reporter import api_client

FINAL_TYPES = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]
POLL_SECONDS = 0.25


def on_ephemeral_api() -> bool:
    settings = get_current_settings()
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


def wait_recorded(flow_run_id: UUID, expected: int, timeout: float = 60.0) -> str | None:
    """Wait until the API counts `expected` final task runs of the flow run; a warning line if it does not in time."""
    body = {
        "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
        "task_runs": {"state": {"type": {"any_": FINAL_TYPES}}},
    }
    recorded, error = 0, None
    deadline = time.monotonic() + timeout
    with api_client() as http:
        while True:
            try:
                response = http.post("/task_runs/count", json=body)
                response.raise_for_status()
                recorded, error = int(response.json()), None
            except Exception as exc:  # observability never breaks the job
                error = f"{type(exc).__name__}: {exc}"
            if recorded >= expected or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    if recorded >= expected:
        return None
    return (
        f"Prefect's ephemeral API recorded {recorded} of the run's {expected} task runs within {timeout:.0f} s"
        f"{f' ({error})' if error else ''} and stops with this process, so the rest are lost; the dbt run and "
        "its artifacts are unaffected. To keep every task run, start a server (`prefect server start`) "
        "and set PREFECT_API_URL=http://127.0.0.1:4200/api"
    )
