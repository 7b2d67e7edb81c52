"""Reporter: dbt's event stream -> Prefect task runs, logs and asset events, off dbt's threads.

Contract
- `NodeReporter.on_event` is dbt's event callback. It runs on dbt's threads, so it only
  filters by event name and level and puts the event on a queue: dbt is never slowed by
  reporting. One background thread (`start`/`close`) turns the queue into Prefect objects:
  - per executed node, a task run named `<resource_type> <name>` whose states carry dbt's own
    start and end times: Completed (success/pass), Completed named `Warning` (warn), Failed
    with dbt's message (error/fail), Cancelled named `Skipped` with the upstream failure that
    caused the skip (skipped); its `__parents__` link the upstream nodes' task runs; a node
    that finishes within the flush window sends only its final state (which carries the start);
  - the node's dbt log lines on its task run, other dbt lines on the flow run, sent every
    second, so they arrive while dbt runs;
  - asset materialization events for models, seeds and snapshots with the same keys as
    prefect-dbt (`<adapter>://<relation path>`, see `asset_key`), upstream assets from
    the manifest, walking through ephemeral models (which are lineage, never task runs); a
    fan-in wider than Prefect's limit of related resources per event (100) relates the first
    upstream assets and counts the rest in the payload (`upstream_assets_not_related`).
  Task runs are created the way Prefect's own engine does it since 3.x, as task-run state
  events; events and log lines are sent in batches (`POST /events`, `POST /logs/`, one request
  per batch of up to 500), never one API call per node (Prefect's emit_event sends one by one,
  over a websocket).
- A node whose query the stop cancelled (`stopped_while_running(unique_id)` gives the reason)
  ends Cancelled named `Stopped`, not Failed with DuckDB's "INTERRUPT Error".
- `close(stopped=reason)` after dbt was stopped (a timeout, SIGINT/SIGTERM) ends the task runs
  of the nodes still running as Cancelled named `Stopped` with the reason; `close()` after dbt
  ended on its own ends any left Running (dbt crashed mid-node) as Crashed: no task run of a
  closed reporter stays Running in Prefect.
- Reporting never fails or stalls the run: every error is caught and counted; when the API is
  unreachable, batches are kept and retried until `close(timeout)`, which waits at most that
  long and then drops what is left with a warning that says how much. A batch the API refuses
  for its content (413, 422) is sent item by item; an item still refused is dropped and counted.

Pitfalls
- `start` must be called inside the flow run's context: it reads the flow run's related
  resources (flow, deployment, work pool) once, as Prefect's own EventsWorker would.
- dbt's lines also go to stdout, as plain dbt prints them, through the `dbtflow.dbt` logger with
  a plain stream handler (Prefect's rich console handler costs ~1 ms a line, on the GIL dbt needs).
- dbt fires NodeStart/NodeFinished for skipped nodes too, and for exposures (`no-op`).
- dbt's node timestamps are naive UTC strings.
- Events and log lines are plain dicts in the JSON shape of Prefect's `Event` and `LogCreate`
  (tests/run/test_reporter_events.py checks every kind against those models, and the server
  checks each batch); building the pydantic models per event cost ~0.1 ms each on the GIL dbt
  needs. Secret values are read from the environment once per step (`scrubber`), not per line.
"""

from __future__ import annotations

import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, TaskRun, TaskRunResult
from prefect.events.related import related_resources_from_run_context
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Completed, Crashed, Failed, Running
from prefect.types.names import MAX_ASSET_KEY_LENGTH, RESTRICTED_ASSET_CHARACTERS
from prefect.utilities.asyncutils import run_coro_as_sync

from dbtflow.run._outcome import failed_ancestors
from dbtflow.secrets._masking import scrubber

NODE_EVENTS = frozenset({"NodeStart", "NodeFinished"})
HOOK_EVENTS = frozenset({"LogHookStartLine", "LogHookEndLine"})  # on-run-start/-end hooks: no Node* events
LOG_LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
MATERIALIZED = frozenset({"model", "seed", "snapshot"})
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BATCH = 500
REFUSED = frozenset({413, 422})  # the API refuses the content itself: a retry cannot help, the item is dropped
FLUSH_SECONDS = 1.0
RETRY_SECONDS = 2.0
_STOP = object()


@dataclass(frozen=True)
class _EndOpen:
    """Queued by `close`: end the task runs left Running (`reason`: why dbt was stopped, None: it crashed)."""

    reason: str | None


# What Prefect's own task-run events leave out of the task run payload (server-side fields).
TASK_RUN_EXCLUDED = {"id", "created", "updated", "flow_run_id", "state_id", "state_type", "state_name", "state",
                     "estimated_start_time_delta", "estimated_run_time"}  # fmt: skip
console = logging.getLogger("dbtflow.dbt")
if not console.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | dbt | %(message)s", "%H:%M:%S")
    )
    console.addHandler(_handler)
    console.setLevel(logging.INFO)
    console.propagate = False


class NodeReporter:
    def __init__(
        self,
        flow_run_id: UUID,
        flow_run_name: str,
        step_index: int = 0,
        stopped_while_running: Callable[[str], str | None] | None = None,
    ) -> None:
        self.flow_run_id = flow_run_id
        self._stopped_while_running = stopped_while_running or (lambda unique_id: None)
        self.flow_run_name = flow_run_name
        self.step_index = step_index
        self.errors = 0
        self.last_error: str | None = None
        self.task_runs: dict[str, TaskRun] = {}
        self.sent = {"events": 0, "logs": 0}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox: dict[str, list[dict[str, Any]]] = {"events": [], "logs": []}
        self._manifest: Any = None
        self._adapter = "dbt"
        self._failed: set[str] = set()
        self._unsent_running: dict[UUID, dict[str, Any]] = {}
        self._related: list[dict[str, str]] = []
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None
        self._http: httpx.Client | None = None
        self._scrub = scrubber()  # a step's secrets are set before it starts
        self._max_related = get_current_settings().server.events.maximum_related_resources  # 100 by default

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
        self._related = _run_context_related(self.flow_run_id, self.flow_run_name)
        self._http = api_client()
        self._thread = threading.Thread(target=self._loop, name="dbtflow-reporter", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0, stopped: str | None = None) -> list[str]:
        """Process what is queued, end the task runs left Running, send it all, and stop; waits at most `timeout` s.

        Args:
            timeout: how long to wait for the API.
            stopped: why dbt was stopped, if it was (the open task runs end Cancelled saying so, else Crashed).

        Returns:
            The reporting warnings (what could not be sent, the errors).
        """
        self._deadline = time.monotonic() + timeout
        self._queue.put(_EndOpen(stopped))
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout + 1)
        if self._http is not None:
            self._http.close()
        warnings = []
        left = {kind: len(items) for kind, items in self._outbox.items() if items}
        if (self._thread is not None and self._thread.is_alive()) or left:
            what = " and ".join(f"{n} {kind}" for kind, n in left.items()) or "some events"
            warnings.append(
                f"reporting to Prefect gave up after {timeout:.0f} s ({self.last_error or 'API unreachable'}): "
                f"{what} not sent; the dbt run and its artifacts are unaffected"
            )
        elif self.errors:
            warnings.append(f"{self.errors} reporting error(s), the last: {self.last_error}")
        return warnings

    # --- the reporter thread ------------------------------------------------------------
    def _loop(self) -> None:
        next_flush = time.monotonic() + FLUSH_SECONDS
        stopping = False
        while True:
            if not stopping:
                stopping = self._drain_queue(max(0.0, next_flush - time.monotonic()))
            if stopping or time.monotonic() >= next_flush or self._pending() >= BATCH:
                sent = self._flush()
                next_flush = time.monotonic() + (FLUSH_SECONDS if sent else RETRY_SECONDS)
            if stopping and (not self._pending() or time.monotonic() >= (self._deadline or 0)):
                return
            if stopping and self._pending():
                time.sleep(min(RETRY_SECONDS, max(0.0, (self._deadline or 0) - time.monotonic())))

    def _drain_queue(self, wait: float) -> bool:
        """Handle queued dbt events for up to `wait` seconds; True once the stop marker is seen."""
        try:
            event = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return False
        while True:
            if event is _STOP:
                return True
            try:
                if isinstance(event, _EndOpen):
                    self._end_open(event.reason)
                else:
                    self._handle(event)
            except Exception as exc:  # observability never breaks the job
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self._pending() >= BATCH:
                return False
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _pending(self) -> int:
        return len(self._outbox["events"]) + len(self._outbox["logs"])

    def _flush(self) -> bool:
        """Send what is pending, a batch per request; keep what could not be sent. True if all went."""
        self._outbox["events"] = [e for e in self._outbox["events"] if e["event"] is not None]
        self._unsent_running.clear()  # from here on they are sent (or kept for a retry): final states follow
        for kind, path in (("events", "/events"), ("logs", "/logs/")):
            items = self._outbox[kind]
            while items:
                batch = items[:BATCH]
                try:
                    self.sent[kind] += self._send(path, batch)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    return False
                del items[: len(batch)]
        return True

    def _send(self, path: str, batch: list[dict[str, Any]]) -> int:
        """POST a batch; how many items the API took. One it refuses as invalid goes item by item, and an
        item still refused is dropped and counted as a reporting error: one bad item never holds back the rest."""
        assert self._http is not None
        response = self._http.post(path, json=batch)
        if response.status_code not in REFUSED:
            response.raise_for_status()
            return len(batch)
        if len(batch) > 1:
            return sum(self._send(path, [item]) for item in batch)
        self.errors += 1
        what = f"event {batch[0].get('event')}" if "event" in batch[0] else "log line"
        self.last_error = f"the API refused one {what} ({response.status_code}); dropped"
        return 0

    # --- dbt events -> Prefect ----------------------------------------------------------
    def _handle(self, event: Any) -> None:
        name = event.info.name
        node_info: Any = getattr(event.data, "node_info", None)
        unique_id = node_info.unique_id if node_info is not None and node_info.unique_id else None
        if name == "NodeStart" and unique_id:
            self._node_started(unique_id, node_info)
        elif name == "NodeFinished" and unique_id:
            result = event.data.run_result
            self._node_finished(unique_id, node_info, str(result.status or node_info.node_status), result.message)
        elif name in HOOK_EVENTS and unique_id and node_info.resource_type == "operation":
            self._hook(name, unique_id, node_info, event.data)
        if event.info.level in LOG_LEVELS and event.info.msg:
            self._log(event, unique_id)

    def _node_started(self, unique_id: str, node_info: Any) -> None:
        if node_info.materialized == "ephemeral":  # compiled into its children: lineage, not a task run
            return
        started = _timestamp(node_info.node_started_at)
        parents = [self.task_runs[p].id for p in self._upstream(unique_id) if p in self.task_runs]
        task_run = TaskRun(
            name=f"{node_info.resource_type} {node_info.node_name}",
            flow_run_id=self.flow_run_id,
            task_key=f"dbt:{unique_id}"[:2000],
            dynamic_key=str(self.step_index),
            tags=["dbt", f"dbt:{node_info.resource_type}"],
            task_inputs={"__parents__": [TaskRunResult(id=p) for p in parents]} if parents else {},
            expected_start_time=started,
        )
        self.task_runs[unique_id] = task_run
        self._set_state(task_run, Running(timestamp=started))

    def _hook(self, name: str, unique_id: str, node_info: Any, data: Any) -> None:
        """An on-run-start/-end hook (an `operation` node): dbt fires no NodeStart/NodeFinished for it.

        A hook skipped after a failed one gets only its end line; dbt puts a failed hook's error
        in the run's results, not in the event: its task run's message points to its log lines.
        """
        if name == "LogHookStartLine" or unique_id not in self.task_runs:
            self._node_started(unique_id, node_info)
        if name == "LogHookEndLine":
            status = str(data.status)
            message = f"{data.statement} failed: dbt's error is in this task run's log" if status == "error" else None
            self._node_finished(unique_id, node_info, status, message)

    def _node_finished(self, unique_id: str, node_info: Any, status: str, text: str | None) -> None:
        task_run = self.task_runs.get(unique_id)
        if task_run is None:
            return
        finished = _timestamp(node_info.node_finished_at)
        message = self._scrub(ANSI.sub("", text or "")) or None
        stopped = self._stopped_while_running(unique_id) if status == "error" else None
        if stopped is not None:  # its query was cancelled by the stop: not a failure of the node
            message = f"dbt was stopped ({stopped}) while it ran"
            state: State = Cancelled(timestamp=finished, name="Stopped", message=message)
        elif status in ("error", "fail", "runtime error"):
            self._failed.add(unique_id)
            state = Failed(timestamp=finished, message=message or f"dbt {status}")
        elif status == "warn":
            state = Completed(timestamp=finished, name="Warning", message=message)
        elif status == "skipped":
            causes = failed_ancestors(unique_id, self._upstream, self._failed)
            because = ", ".join(causes) if causes else "an upstream failure"
            state = Cancelled(timestamp=finished, name="Skipped", message=f"skipped because of {because}")
        elif status == "no-op":
            state = Completed(timestamp=finished, name="No-op", message=message)
        else:
            state = Completed(timestamp=finished, message=message)
        self._set_state(task_run, state)
        if node_info.resource_type in MATERIALIZED and status in ("success", "error"):
            self._asset_events(unique_id, task_run, succeeded=status == "success")

    def _end_open(self, stopped: str | None) -> None:
        """The task runs still Running once dbt is done: Cancelled `Stopped` (dbt was stopped), else Crashed."""
        now = datetime.now(UTC)
        for task_run in self.task_runs.values():
            if task_run.state is None or not task_run.state.is_running():
                continue
            if stopped is not None:
                message = f"dbt was stopped ({stopped}) while it ran"
                state: State = Cancelled(timestamp=now, name="Stopped", message=message)
            else:
                state = Crashed(timestamp=now, message="dbt ended without finishing this node")
            self._set_state(task_run, state)

    def _set_state(self, task_run: TaskRun, state: State) -> None:
        """Record a state change the way Prefect's task engine does: a `prefect.task-run.<state>` event.

        A node that finishes before its Running event was sent replaces that event: the final
        one carries the start time too, so the server records one event per short node.
        """
        previous = task_run.state
        unsent = self._unsent_running.pop(task_run.id, None)
        if unsent is not None and state.is_final():
            unsent["event"] = None  # dropped from the outbox at the next flush
            previous = None
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
        details = {"exclude_none": True, "exclude_unset": True, "exclude": {"flow_run_id", "task_run_id"}}
        resource = {
            "prefect.resource.id": f"prefect.task-run.{task_run.id}",
            "prefect.resource.name": task_run.name,
            "prefect.run-count": str(task_run.run_count),
            "prefect.state-message": state.message or "",
            "prefect.state-name": state.name or "",
            "prefect.state-timestamp": timestamp.isoformat(),
            "prefect.state-type": state.type.value,
            "prefect.orchestration": "client",
        }
        payload = {
            "intended": {"from": previous.type.value if previous else None, "to": state.type.value},
            "initial_state": {
                "type": previous.type.value,
                "name": previous.name,
                "message": previous.message,
                "state_details": previous.state_details.model_dump(mode="json", **details),  # type: ignore[arg-type]
            }
            if previous
            else None,
            "validated_state": {
                "type": state.type.value,
                "name": state.name,
                "message": state.message,
                "state_details": state.state_details.model_dump(mode="json", **details),  # type: ignore[arg-type]
                "data": None,
            },
            "task_run": task_run.model_dump(mode="json", exclude_none=True, exclude=TASK_RUN_EXCLUDED),
        }
        event = _event(
            f"prefect.task-run.{state.name}",
            timestamp,
            resource,
            [*self._related, *_tags(task_run.tags)],
            payload,
            event_id=state.id,
        )
        self._outbox["events"].append(event)
        if state.is_running():
            self._unsent_running[task_run.id] = event

    def _log(self, event: Any, unique_id: str | None) -> None:
        task_run = self.task_runs.get(unique_id) if unique_id else None
        message = self._scrub(ANSI.sub("", event.info.msg))  # dbt masks DBT_ENV_SECRET_* in its file, not in events
        level = LOG_LEVELS[event.info.level]
        ts = event.info.ts.ToDatetime(tzinfo=UTC) if event.info.HasField("ts") else datetime.now(UTC)
        self._outbox["logs"].append(
            {
                "name": "prefect.task_runs" if task_run else "prefect.flow_runs",
                "level": level,
                "message": message,
                "timestamp": ts.isoformat(),
                "flow_run_id": str(self.flow_run_id),
                "task_run_id": str(task_run.id) if task_run else None,
            }
        )
        if console.isEnabledFor(level):
            console.log(level, "%s%s", f"{task_run.name}: " if task_run else "", message)

    # --- lineage ------------------------------------------------------------------------
    def _node(self, unique_id: str) -> Any:
        m = self._manifest
        if m is None:
            return None
        return (
            m.nodes.get(unique_id)
            or m.sources.get(unique_id)
            or m.exposures.get(unique_id)
            or m.unit_tests.get(unique_id)
        )

    def _parents(self, unique_id: str) -> list[str]:
        return list(getattr(getattr(self._node(unique_id), "depends_on", None), "nodes", None) or [])

    def _upstream(self, unique_id: str) -> Iterable[str]:
        """Direct upstream nodes, looking through ephemeral models to what they select from."""
        seen: set[str] = set()
        stack = self._parents(unique_id)
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            if _is_ephemeral(self._node(uid)):
                stack.extend(self._parents(uid))
            else:
                yield uid

    def _asset_events(self, unique_id: str, task_run: TaskRun, succeeded: bool) -> None:
        """prefect-dbt's asset events: upstream `referenced`, then this node's materialization."""
        node = self._node(unique_id)
        if node is None or not node.relation_name:
            return
        now = datetime.now(UTC).isoformat()
        parents = [u for u in self._upstream(unique_id) if (n := self._node(u)) is not None and n.relation_name]
        upstream = [self._asset(self._node(u)) for u in parents]
        for uid, resource in zip(parents, upstream, strict=True):
            if uid not in self.task_runs:  # sources and nodes this run did not build: no event of their own
                self._outbox["events"].append(_event("prefect.asset.referenced", now, resource, []))
        ephemeral = [u for u in self._parents(unique_id) if _is_ephemeral(self._node(u))]
        own = [
            {"prefect.resource.id": "dbt", "prefect.resource.role": "asset-materialized-by"},
            {"prefect.resource.id": f"prefect.task-run.{task_run.id}", "prefect.resource.role": "task-run",
             "prefect.resource.name": task_run.name},
            *self._related,
        ]  # fmt: skip
        room = max(0, self._max_related - len(own))  # a wide fan-in: the first upstream assets, the rest counted
        assets = [{"prefect.resource.id": r["prefect.resource.id"], "prefect.resource.role": "asset"} for r in upstream]
        dbt: dict[str, Any] = {"unique_id": unique_id, "via_ephemeral": ephemeral} if ephemeral else {}
        if len(assets) > room:
            dbt = {"unique_id": unique_id, **dbt, "upstream_assets_not_related": len(assets) - room}
        outcome = "succeeded" if succeeded else "failed"
        event = _event(
            f"prefect.asset.materialization.{outcome}", now, self._asset(node), [*assets[:room], *own],
            {"dbt": dbt} if dbt else None,
        )  # fmt: skip
        self._outbox["events"].append(event)

    def _asset(self, node: Any) -> dict[str, str]:
        resource = {
            "prefect.resource.id": asset_key(self._adapter, node.relation_name),
            "prefect.resource.name": node.relation_name.replace('"', "").replace("`", ""),
        }
        if getattr(node, "description", None):
            resource["prefect.asset.description"] = node.description[:5000]
        return resource


def asset_key(adapter_type: str, relation_name: str) -> str:
    """prefect-dbt's asset key for a relation (`format_resource_id`), without importing prefect-dbt (~1.7 s)."""
    path = relation_name.replace('"', "").replace(".", "/")
    for char in RESTRICTED_ASSET_CHARACTERS:
        path = path.replace(char, "")
    return f"{adapter_type}://{path}"[:MAX_ASSET_KEY_LENGTH]


def _event(
    name: str,
    occurred: Any,
    resource: dict[str, str],
    related: list[dict[str, str]],
    payload: Any = None,
    event_id: UUID | None = None,
) -> dict[str, Any]:
    """One event as the JSON the events API takes: the fields of Prefect's `Event` (see the pitfalls)."""
    return {
        "occurred": occurred if isinstance(occurred, str) else occurred.isoformat(),
        "event": name,
        "resource": resource,
        "related": related,
        "payload": payload or {},
        "id": str(event_id or uuid4()),
        "follows": None,
    }


def _tags(tags: Iterable[str]) -> list[dict[str, str]]:
    return [{"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"} for t in sorted(tags)]


def _run_context_related(flow_run_id: UUID, flow_run_name: str) -> list[dict[str, str]]:
    """The flow run, flow, deployment... resources Prefect relates run events to (read once)."""

    async def read() -> list[dict[str, str]]:
        async with get_client() as client:
            return [dict(r) for r in await related_resources_from_run_context(client)]

    related: list[dict[str, str]]
    try:
        related = run_coro_as_sync(read()) or []
    except Exception:
        related = []
    if not any(r.get("prefect.resource.role") == "flow-run" for r in related):
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run",
                        "prefect.resource.name": flow_run_name})  # fmt: skip
    return related


def api_client() -> httpx.Client:
    """An httpx client for the Prefect API this run reports to (a server, Cloud, or the ephemeral
    API whose URL only Prefect's own client knows), without retries of its own."""

    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    key = get_current_settings().api.key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    return httpx.Client(base_url=url.rstrip("/") + "/", headers=headers, timeout=10.0)


def _is_ephemeral(node: Any) -> bool:
    return node is not None and getattr(getattr(node, "config", None), "materialized", None) == "ephemeral"


def _timestamp(value: str | None) -> Any:  # a datetime; Prefect's own DateTime type is version-specific
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
