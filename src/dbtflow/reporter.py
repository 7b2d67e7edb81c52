"""Reporter: dbt's event stream -> Prefect task runs, logs and asset events, off dbt's threads.

Contract
- `NodeReporter.on_event` is dbt's event callback. It runs on dbt's threads, so it only
  filters by event name and level and puts the event on a queue: dbt is never slowed by
  reporting. One background thread (`start`/`close`) turns the queue into Prefect objects:
  - per executed node, a task run named `<resource_type> <name>` whose states carry dbt's own
    start and end times: Completed (success/pass), Completed named `Warning` (warn), Failed
    with dbt's message (error/fail), Cancelled named `Skipped` with the upstream failure that
    caused the skip (skipped); its `__parents__` link the upstream nodes' task runs;
  - the node's dbt log lines on its task run, other dbt lines on the flow run, both through
    Prefect's batching log worker, so they arrive while dbt runs;
  - asset materialization events for models, seeds and snapshots with the same keys as
    prefect-dbt (`<adapter>://<relation path>`, `format_resource_id`), upstream assets from
    the manifest, walking through ephemeral models (which are lineage, never task runs).
  Task runs are created the way Prefect's own engine does it since 3.x: as task-run state
  events, sent in batches over one websocket by Prefect's EventsWorker; no per-node API call.
- Reporting never fails the run: every error is caught and counted, `close(timeout)` waits a
  bounded time for Prefect's workers to flush, and returns the warnings to show.

Pitfalls
- `start` must be called inside the flow run's context (the thread runs in a copy of it), so
  that events are related to the flow run and logs carry its id.
- dbt fires NodeStart/NodeFinished for skipped nodes too, and for exposures (`no-op`).
- dbt's node timestamps are naive UTC strings.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import State, TaskRun, TaskRunResult
from prefect.events import emit_event
from prefect.states import Cancelled, Completed, Failed, Pending, Running
from prefect.utilities.engine import emit_task_run_state_change_event
from prefect_dbt.utilities import format_asset_name, format_resource_id

NODE_EVENTS = frozenset({"NodeStart", "NodeFinished"})
LOG_LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
MATERIALIZED = frozenset({"model", "seed", "snapshot"})
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BATCH = 500
_STOP = object()
# Prefect's logging config sends these two loggers (and only these) to the API.
flow_logger = logging.getLogger("prefect.flow_runs")
task_logger = logging.getLogger("prefect.task_runs")


class NodeReporter:
    def __init__(self, flow_run_id: UUID, flow_run_name: str, step_index: int = 0) -> None:
        self.flow_run_id = flow_run_id
        self.flow_run_name = flow_run_name
        self.step_index = step_index
        self.errors = 0
        self.last_error: str | None = None
        self.task_runs: dict[str, TaskRun] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._manifest: Any = None
        self._adapter = "dbt"
        self._failed: set[str] = set()
        self._thread: threading.Thread | None = None

    # --- dbt's threads ------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        info = event.info
        if info.name in NODE_EVENTS or info.level in LOG_LEVELS:
            self._queue.put(event)

    # --- lifecycle ----------------------------------------------------------------------
    def set_manifest(self, manifest: Any) -> None:
        """The parsed manifest: names, relations and lineage of every node (set before nodes run)."""
        self._manifest = manifest
        self._adapter = manifest.metadata.adapter_type or "dbt"

    def start(self) -> None:
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="dbtflow-reporter", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> list[str]:
        """Stop after the queue is processed, flush Prefect's workers; bounded by `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        warnings = []
        if self._thread is not None and self._thread.is_alive():
            warnings.append(
                f"reporting to Prefect did not finish within {timeout:.0f} s; some node states may be missing"
            )
        if not flush_prefect(max(1.0, deadline - time.monotonic())):
            warnings.append("Prefect's API did not take every log line and event in time; the dbt run is unaffected")
        if self.errors:
            warnings.append(f"{self.errors} reporting error(s), the last: {self.last_error}")
        return warnings

    # --- the reporter thread ------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for event in batch:
                if event is _STOP:
                    return
                try:
                    self._handle(event)
                except Exception as exc:  # observability never breaks the job
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"

    def _handle(self, event: Any) -> None:
        name = event.info.name
        node_info = getattr(event.data, "node_info", None)
        unique_id = node_info.unique_id if node_info is not None and node_info.unique_id else None
        if name == "NodeStart" and unique_id:
            self._node_started(unique_id, node_info)
        elif name == "NodeFinished" and unique_id:
            self._node_finished(unique_id, node_info, event.data.run_result)
        if event.info.level in LOG_LEVELS and event.info.msg:
            self._log(event, unique_id)

    def _node_started(self, unique_id: str, node_info: Any) -> None:
        if node_info.materialized == "ephemeral":  # compiled into its children: lineage, not a task run
            return
        started = _timestamp(node_info.node_started_at)
        parents = [
            self.task_runs[p].id for p in self._upstream(unique_id, through_ephemeral=True) if p in self.task_runs
        ]
        pending: State = Pending(timestamp=started)
        task_run = TaskRun(
            name=f"{node_info.resource_type} {node_info.node_name}",
            flow_run_id=self.flow_run_id,
            task_key=f"dbt:{unique_id}"[:2000],
            dynamic_key=str(self.step_index),
            tags=["dbt", f"dbt:{node_info.resource_type}"],
            task_inputs={"__parents__": [TaskRunResult(id=p) for p in parents]} if parents else {},
            expected_start_time=started,
            state=pending,
        )
        pending.state_details.task_run_id = task_run.id
        pending.state_details.flow_run_id = self.flow_run_id
        self.task_runs[unique_id] = task_run
        self._set_state(task_run, Running(timestamp=started + timedelta(microseconds=1)))

    def _node_finished(self, unique_id: str, node_info: Any, run_result: Any) -> None:
        task_run = self.task_runs.get(unique_id)
        if task_run is None:
            return
        finished = _timestamp(node_info.node_finished_at)
        status = str(run_result.status or node_info.node_status)
        message = ANSI.sub("", run_result.message or "") or None
        if status in ("error", "fail", "runtime error"):
            self._failed.add(unique_id)
            state: State = Failed(timestamp=finished, message=message or f"dbt {status}")
        elif status == "warn":
            state = Completed(timestamp=finished, name="Warning", message=message)
        elif status == "skipped":
            causes = self._skip_causes(unique_id)
            because = ", ".join(causes) if causes else "an upstream failure"
            state = Cancelled(timestamp=finished, name="Skipped", message=f"skipped because of {because}")
        elif status == "no-op":
            state = Completed(timestamp=finished, name="No-op", message=message)
        else:
            state = Completed(timestamp=finished, message=message)
        self._set_state(task_run, state)
        if node_info.resource_type in MATERIALIZED and status in ("success", "error"):
            self._emit_asset(unique_id, task_run, succeeded=status == "success")

    def _set_state(self, task_run: TaskRun, state: State) -> None:
        previous = task_run.state
        state.state_details.task_run_id = task_run.id
        state.state_details.flow_run_id = self.flow_run_id
        timestamp: Any = state.timestamp
        if state.is_running():
            task_run.run_count += 1
            task_run.start_time = timestamp
        if state.is_final():
            task_run.end_time = timestamp
            if task_run.start_time:
                task_run.total_run_time = timestamp - task_run.start_time
        task_run.state, task_run.state_id = state, state.id
        task_run.state_type, task_run.state_name = state.type, state.name
        emit_task_run_state_change_event(task_run, previous, state)

    def _log(self, event: Any, unique_id: str | None) -> None:
        task_run = self.task_runs.get(unique_id) if unique_id else None
        extra: dict[str, Any] = {
            "flow_run_id": str(self.flow_run_id),
            "flow_run_name": self.flow_run_name,
            "send_to_api": True,
        }
        logger = flow_logger
        if task_run is not None:
            extra.update(task_run_id=str(task_run.id), task_run_name=task_run.name)
            logger = task_logger
        message = ANSI.sub("", event.info.msg)
        record = logger.makeRecord(logger.name, LOG_LEVELS[event.info.level], "dbt", 0, message, (), None, extra=extra)
        ts = event.info.ts.ToDatetime(tzinfo=UTC).timestamp() if event.info.HasField("ts") else time.time()
        record.created, record.msecs = ts, (ts % 1) * 1000
        logger.handle(record)

    # --- lineage ------------------------------------------------------------------------
    def _node(self, unique_id: str) -> Any:
        m = self._manifest
        if m is None:
            return None
        return m.nodes.get(unique_id) or m.sources.get(unique_id) or m.exposures.get(unique_id)

    def _upstream(self, unique_id: str, through_ephemeral: bool) -> Iterable[str]:
        node = self._node(unique_id)
        seen: set[str] = set()
        stack = list(getattr(getattr(node, "depends_on", None), "nodes", []) or [])
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            parent = self._node(uid)
            if through_ephemeral and parent is not None and _is_ephemeral(parent):
                stack.extend(parent.depends_on.nodes)
            else:
                yield uid

    def _skip_causes(self, unique_id: str) -> list[str]:
        causes, seen = [], set()
        stack = list(self._upstream(unique_id, through_ephemeral=True))
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            if uid in self._failed:
                causes.append(uid)
            else:
                stack.extend(self._upstream(uid, through_ephemeral=True))
        return sorted(causes)

    def _emit_asset(self, unique_id: str, task_run: TaskRun, succeeded: bool) -> None:
        node = self._node(unique_id)
        if node is None or not node.relation_name:
            return
        upstream = [self._node(u) for u in self._upstream(unique_id, through_ephemeral=True)]
        upstream_resources = [self._asset_resource(u) for u in upstream if u is not None and u.relation_name]
        for resource in upstream_resources:
            emit_event(event="prefect.asset.referenced", resource=resource, related=[])
        ephemeral = [u for u in self._node_parents(unique_id) if _is_ephemeral(self._node(u))]
        emit_event(
            event=f"prefect.asset.materialization.{'succeeded' if succeeded else 'failed'}",
            resource=self._asset_resource(node),
            related=[
                *(
                    {"prefect.resource.id": r["prefect.resource.id"], "prefect.resource.role": "asset"}
                    for r in upstream_resources
                ),
                {"prefect.resource.id": "dbt", "prefect.resource.role": "asset-materialized-by"},
                {
                    "prefect.resource.id": f"prefect.task-run.{task_run.id}",
                    "prefect.resource.role": "task-run",
                    "prefect.resource.name": task_run.name,
                },
            ],
            payload={"dbt": {"unique_id": unique_id, "via_ephemeral": ephemeral}} if ephemeral else None,
        )

    def _node_parents(self, unique_id: str) -> list[str]:
        node = self._node(unique_id)
        return list(getattr(getattr(node, "depends_on", None), "nodes", []) or [])

    def _asset_resource(self, node: Any) -> dict[str, str]:
        resource = {
            "prefect.resource.id": format_resource_id(self._adapter, node.relation_name),
            "prefect.resource.name": format_asset_name(node.relation_name),
        }
        if getattr(node, "description", None):
            resource["prefect.asset.description"] = node.description[:5000]
        return resource


def _is_ephemeral(node: Any) -> bool:
    return node is not None and getattr(getattr(node, "config", None), "materialized", None) == "ephemeral"


def _timestamp(value: str | None) -> Any:  # a datetime; Prefect's own DateTime type is version-specific
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def flush_prefect(timeout: float) -> bool:
    """Flush Prefect's event and log workers, waiting at most `timeout` seconds in all."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    done = threading.Event()

    def drain() -> None:
        try:
            EventsWorker.drain_all(timeout=timeout)
            APILogWorker.drain_all(timeout=timeout)
        except Exception:
            return
        done.set()

    worker = threading.Thread(target=drain, name="dbtflow-flush", daemon=True)
    worker.start()
    worker.join(timeout)
    return done.is_set()
