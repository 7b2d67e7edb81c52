"""The generic Prefect flow: one dbt project, any request, artifacts kept, honest final state.

Contract
- `dbt_flow(project_dir, name=...)` returns a Prefect flow bound to one dbt project; a
  tenant's entrypoint is one call of it (see flows/dbt_wg_flow.py). Its parameters are the
  request's (see `dbtflow.request`), with types and descriptions Prefect shows in the UI.
- The flow validates the request before anything else (a bad request ends Failed with the
  one-line reason, and dbt never starts), runs the steps in order (stopping at the first
  failing step, like a dbt Cloud job; a docs step still runs), keeps every step's artifacts
  in the run's folder, publishes the summary artifact, and ends Completed, or Failed with a
  message naming the failing nodes, or TimedOut. A run that completes with warnings also emits
  the Prefect event `dbtflow.run.warned` (payload: target, message, warnings) on its flow run.
- Flow retries (`dbt_flow(..., retries=N)`, `flow.with_options(retries=N)`, or a flow run's
  `empirical_policy.retries` set through the API) rerun from the failure: attempt N+1 reruns
  only what failed or was skipped, through `dbt retry` on the previous attempt's artifacts,
  or the failed step in full when none of its nodes ran (see `dbtflow.attempts`). Each
  attempt's steps get their own folders in the run's folder, and the summary says which
  attempt built which node. A timeout, an invalid request or a profile that cannot be
  resolved is final: it is never retried.
- Two runs of one target never run dbt at the same time: each holds the target's slot, a
  Prefect global concurrency limit of 1 (`slot_name`, created if missing). A run that finds
  it taken waits (up to `timeout_seconds`), or ends Cancelled with `on_overlap="cancel"`.
  Runs of different targets (dev, prod) run side by side.

Pitfalls
- The target path is per target (`target/<target>/`) so dev and prod runs never share
  partial-parse state or run_results, and `dbt retry` finds the previous results.
- Artifacts left in the target path by an earlier run are removed before each step, so a
  step that dies before writing run_results is never credited with an old one. A `retry`
  step reads run_results.json there: an explicit `dbt retry` step keeps the one found, a flow
  retry copies the earlier attempt's; either is removed after the step if it wrote none.
- A failed attempt with retries left raises `RetryFromFailure` instead of returning a Failed
  state: Prefect retries a raised exception in the same process (AwaitingRetry, then Running),
  whereas a returned Failed state ends the engine's loop in AwaitingRetry. A final failure
  with retries left lowers the run's `retries` to the attempts made, so Prefect accepts it.
- The slot is held through a lease the run renews every LEASE_SECONDS/4 while its process
  lives, retrying through an API outage (Prefect's own renewal stops at the first failed
  renewal): a crashed run's slot frees itself within LEASE_SECONDS (plus the server's lease
  sweep, every 15 s). An API outage longer than about LEASE_SECONDS loses the slot: a
  waiting run of the target may then start, and the run logs a warning. A server restarted
  with in-memory lease storage (Prefect's default) forgets the lease but not the slot: the
  run takes the slot again under a new lease (see `_Lease`); self-hosted servers
  should keep leases on disk (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE, docs/reliability.md). The wait for the
  slot and dbt's own run each get `timeout_seconds`.
- dbt runs on a daemon thread so the flow can stop it at `timeout_seconds`: `invoke.Stopper`
  raises KeyboardInterrupt in that thread (dbt's own Ctrl-C path: no further node starts, its
  pool's threads are joined) and cancels the in-flight warehouse queries through the adapter;
  no further step starts. The run ends TimedOut naming the nodes that were running and those
  that never started. dbt gets STOP_SECONDS to stop (reporting's own 30 s bound included); a
  node busy outside the warehouse (a Python model) can outlast that, and its daemon thread is
  then left to end on its own, with a warning. Once dbt has stopped, or after every run, the
  warehouse connections dbt keeps open in the process (dbt-duckdb's database) are closed.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import httpx
from prefect import Flow, flow, get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import State
from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from dbtflow.artifacts import ARTIFACT_FILES, RunStore
from dbtflow.artifacts import runs_root as runs_root  # re-exported: the CLI and tests import it from here
from dbtflow.attempts import Attempt, PlannedStep, earlier_reports, plan_attempt
from dbtflow.errors import UserError
from dbtflow.invoke import StepOutcome, StepPaths, Stopper, release_connections, run_step
from dbtflow.outcome import RunOutcome, StepReport
from dbtflow.profiles import resolved_profiles
from dbtflow.project import load_project
from dbtflow.request import RunRequest, build_request
from dbtflow.summary import publish, summary_markdown

WARNED_EVENT = "dbtflow.run.warned"  # a run completed with warnings; `dbtflow notify setup --on-warning` reacts
LEASE_SECONDS = 60  # a crashed run's slot is free again at most this long after it died
STOP_SECONDS = 45  # how long a timed-out run waits for dbt to stop (reporting gets 30 s of it)
PARAMETERS = tuple(inspect.signature(build_request).parameters)[1:]


# The folder of the latest run in this process, for a caller (the CLI) whose flow call failed
# after dbt finished, e.g. when the Prefect API went away before the final state was set.
LATEST_RUN: list[Path | None] = [None]


class RetryFromFailure(Exception):
    """A failed attempt with flow retries left: Prefect retries the flow, which resumes from the failure."""


def dbt_flow(
    project_dir: str | Path,
    *,
    name: str,
    profiles_dir: str | Path | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0,
) -> Flow[..., Any]:
    """A Prefect flow that runs dbt requests against the project in `project_dir`.

    With `retries`, a failed run is retried from its failure after `retry_delay_seconds`.
    """

    @flow(name=name, log_prints=False, retries=retries, retry_delay_seconds=retry_delay_seconds)
    def run_dbt(
        command: str = "build",
        target: str = "dev",
        select: str | list[str] | None = None,
        exclude: str | list[str] | None = None,
        selector: str | None = None,
        vars: dict[str, Any] | str | None = None,
        full_refresh: bool = False,
        state: str | None = None,
        defer: bool = False,
        threads: int | None = None,
        steps: list[str] | None = None,
        source_freshness: bool = False,
        generate_docs: bool = False,
        timeout_seconds: int | None = None,
        fail_fast: bool = False,
        engine: Literal["fast", "prefect-dbt"] = "fast",
        on_overlap: Literal["wait", "cancel"] = "wait",
    ) -> State:
        """Run dbt Core for this project.

        Args:
            command: The dbt command, e.g. `build`, `run --select tag:daily`, `source freshness`.
            target: The profiles.yml target to run against (`local`, `dev`, `prod`).
            select: dbt selection, e.g. `tag:daily +fct_shipments` (space-separated or a list).
            exclude: dbt exclusion, same syntax as select.
            selector: The name of a selector in selectors.yml, e.g. `daily`.
            vars: dbt vars, as a mapping or a JSON/YAML string of one.
            full_refresh: Rebuild incremental models and seeds from scratch.
            state: Folder of a previous run's artifacts, for `state:` selection and deferral.
            defer: Defer unbuilt upstream references to `state`.
            threads: dbt threads (1-64); the target's own setting when empty.
            steps: Several dbt commands run in order, like a dbt Cloud job; replaces `command`.
            source_freshness: Run `dbt source freshness` first; its failure does not fail the run.
            generate_docs: Run `dbt docs generate` last; its failure does not fail the run.
            timeout_seconds: Stop the run after this many seconds; no limit when empty.
            fail_fast: Stop a step at its first failing node.
            engine: `fast` reports every dbt node to Prefect at the speed of plain dbt;
                `prefect-dbt` uses prefect-dbt's PrefectDbtRunner as it is.
            on_overlap: When another run of this target is running: `wait` for it, or `cancel` this run.
        """
        parameters = {name: value for name, value in locals().items() if name in PARAMETERS}
        return execute(project_dir, profiles_dir, parameters)

    return run_dbt


def execute(project_dir: str | Path, profiles_dir: str | Path | None, parameters: dict[str, Any]) -> State:
    logger = get_run_logger()
    try:
        request = build_request(load_project(project_dir, profiles_dir), **parameters)
    except UserError as exc:
        logger.error("invalid request: %s", exc)
        _final()
        return Failed(message=f"invalid request: {exc}")

    name = slot_name(request)
    _ensure_limit(name)
    cancel = request.on_overlap == "cancel"
    held = False
    try:
        wait = 1.0 if cancel else request.timeout_seconds
        with target_slot(name, wait):
            held = True
            return _execute(request)
    except TimeoutError:
        if held:
            raise
        if cancel:
            message = f"another run of {request.target} holds the slot {name!r} and on_overlap is 'cancel'"
            logger.warning("%s", message)
            return Cancelled(message=message)
        message = f"timed out after {request.timeout_seconds} s waiting for another run of {request.target}"
        logger.error("%s", message)
        _final()
        return Failed(name="TimedOut", message=message)


def _execute(request: RunRequest) -> State:
    logger = get_run_logger()
    store = RunStore(runs_root(), str(flow_run.id or "local"))
    LATEST_RUN[0] = store.folder
    attempt = plan_attempt(request, store.folder, max(1, int(flow_run.run_count or 1)))
    if attempt.number > 1:
        logger.info("%s", attempt.describe())
    store.write_json("run.json", _run_record(request, attempt, None))
    outcome = RunOutcome(request.target, attempt=attempt.number, earlier=earlier_reports(attempt, store.folder))
    try:
        with resolved_profiles(request.project, request.target) as profiles:
            _run_with_timeout(
                request,
                attempt,
                StepPaths(request.project.project_dir, profiles, _target_path(request), store.folder),
                store,
                outcome,
            )
    except UserError as exc:
        logger.error("%s", exc)
        store.write_json("run.json", {**_run_record(request, attempt, None), "status": "failed", "message": str(exc)})
        _final()
        return Failed(message=str(exc))

    store.write_json("run.json", _run_record(request, attempt, outcome))
    (store.folder / "summary.md").write_text(summary_markdown(outcome, store.folder))
    if not any("gave up" in w for step in outcome.steps for w in step.outcome.reporting):
        publish(outcome, store.folder, key=_artifact_key(request))  # else the API is down: don't wait on it again
        if not outcome.failed and outcome.warnings:
            _emit_warned(request, outcome)
    for failure in outcome.failures:
        logger.error("%s %s %s: %s", failure.resource_type, failure.name, failure.status, failure.message)
    for warning in {w for step in outcome.steps for w in step.outcome.reporting}:
        logger.warning("%s", warning)
    logger.info("%s; artifacts in %s", outcome.message, store.folder)
    if outcome.timed_out:
        _final()
        return Failed(name="TimedOut", message=f"{outcome.message} (timeout_seconds={request.timeout_seconds})")
    if outcome.failed and _retries_left():
        raise RetryFromFailure(f"{outcome.message} [attempt {attempt.number}; retrying from the failure]")
    return Failed(message=outcome.message) if outcome.failed else Completed(message=outcome.message)


def _retries_left() -> bool:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    retries = context.flow_run.empirical_policy.retries
    if retries is None:
        retries = context.flow.retries if context.flow is not None else 0
    return context.flow_run.run_count <= (retries or 0)


def _final() -> None:
    """This failure is one no retry can fix: lower the run's retries to the attempts made, so Prefect ends it."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or not _retries_left():
        return
    run = context.flow_run
    policy = run.empirical_policy.model_copy(update={"retries": max(0, run.run_count - 1)})
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, empirical_policy=policy)
    except Exception as exc:  # Prefect may retry it then; the next attempt reruns the request
        get_run_logger().warning("could not mark the failure final for Prefect's retries: %s", exc)


def slot_name(request: RunRequest) -> str:
    """The Prefect global concurrency limit (of 1) that keeps two runs of one target apart."""
    return re.sub(r"[^a-z0-9-]+", "-", f"dbt-{request.project.name}-{request.target}".lower()).strip("-")


@contextlib.contextmanager
def target_slot(name: str, timeout_seconds: float | None) -> Iterator[None]:
    """Hold the slot `name` (waiting up to `timeout_seconds`; TimeoutError if it stays taken), renewing its lease."""
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
        from dbtflow.reporter import _api_client

        self.lease_id: UUID | None = lease_id
        self.name = name
        self._renewed = self._acquired = time.monotonic()
        self._stop = threading.Event()
        self._logger = get_run_logger()
        self._http = _api_client()
        self._thread = threading.Thread(target=self._loop, name="dbtflow-slot-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        self._thread.join(15)
        try:
            if self.lease_id is not None and self._renew() in (404, 410):  # forgotten since the last renewal
                self._lease_gone(retake=False)
            if self.lease_id is not None:
                body = {"lease_id": str(self.lease_id)}
                self._http.post("v2/concurrency_limits/decrement-with-lease", json=body).raise_for_status()
        except Exception as exc:  # the API is away: the lease expires on its own
            self._logger.warning(
                "could not release the slot %r (it frees itself in %s s): %s", self.name, LEASE_SECONDS, exc
            )
        finally:
            self._http.close()

    def _renew(self) -> int | None:
        """The server's answer to a renewal (HTTP status), None when it could not be reached."""
        try:
            response = self._http.post(
                f"v2/concurrency_limits/leases/{self.lease_id}/renew", json={"lease_duration": LEASE_SECONDS}
            )
        except httpx.HTTPError:
            return None
        if response.is_success:
            self._renewed = time.monotonic()
        return response.status_code

    def _loop(self) -> None:
        failing_since: float | None = None
        while self.lease_id is not None and not self._stop.wait(LEASE_SECONDS / 4 if failing_since is None else 3):
            status = self._renew()
            if status in (404, 410):
                try:
                    self._lease_gone(retake=True)
                except Exception as exc:
                    self._logger.warning("could not take the slot %r again: %s", self.name, exc)
            elif status is None or status >= 300:
                if failing_since is None:
                    failing_since = time.monotonic()
                    why = f"HTTP {status}" if status else "the API is unreachable"
                    self._logger.warning("could not renew the slot %r (%s); retrying", self.name, why)
            elif failing_since is not None:
                self._logger.info("renewed the slot %r after %.0f s", self.name, time.monotonic() - failing_since)
                failing_since = None

    def _lease_gone(self, retake: bool) -> None:
        self.lease_id = None
        if time.monotonic() - self._renewed >= LEASE_SECONDS - 5:  # it may have expired: the server freed the slot
            self._logger.warning(
                "the slot %r was lost (its lease expired while the API was away): "
                "another run of this target may start before this one ends",
                self.name,
            )
            return
        # it cannot have expired: the server forgot it and still counts the slot, so give it back by name
        held = time.monotonic() - self._acquired
        self._http.post(
            "v2/concurrency_limits/decrement", json={"names": [self.name], "slots": 1, "occupancy_seconds": held}
        ).raise_for_status()
        forgot = f"the Prefect server forgot the lease of the slot {self.name!r} (restarted with in-memory leases)"
        if not retake:
            self._logger.warning("%s; released the slot by name", forgot)
            return
        response = self._http.post(
            "v2/concurrency_limits/increment-with-lease",
            json={"names": [self.name], "slots": 1, "mode": "concurrency", "lease_duration": LEASE_SECONDS},
        )
        if response.is_success:
            self.lease_id, self._renewed = UUID(response.json()["lease_id"]), time.monotonic()
            self._logger.warning("%s; took the slot again under a new lease", forgot)
        else:
            self._logger.warning(
                "%s and another run took it (HTTP %s): this run carries on without it", forgot, response.status_code
            )


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run of the target created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _target_path(request: RunRequest) -> Path:
    return request.project.project_dir / "target" / request.target


def _run_with_timeout(
    request: RunRequest, attempt: Attempt, paths: StepPaths, store: RunStore, outcome: RunOutcome
) -> None:
    """Run the steps on a daemon thread; past the timeout, stop dbt as Ctrl-C would and cancel its queries."""
    stopper = Stopper()
    context = contextvars.copy_context()  # the flow run context, for prefect-dbt's task runs
    runner = threading.Thread(
        target=context.run,
        args=(_run_steps, request, attempt, paths, store, outcome, stopper),
        name="dbtflow-dbt",
        daemon=True,
    )
    runner.start()
    runner.join(request.timeout_seconds)
    if runner.is_alive():
        outcome.timed_out = True
        stopping = time.monotonic()
        stopper.stop(f"timed out after {request.timeout_seconds} s")
        runner.join(STOP_SECONDS)
        outcome.stop_seconds = round(time.monotonic() - stopping, 2)
        if runner.is_alive():
            outcome.stop_warning = f"dbt did not stop within {STOP_SECONDS} s of the timeout; left to end on its own"
    if not runner.is_alive():
        release_connections()


def _run_steps(
    request: RunRequest, attempt: Attempt, paths: StepPaths, store: RunStore, outcome: RunOutcome, stopper: Stopper
) -> None:
    for position, planned in enumerate(attempt.steps):
        step, index = planned.step, attempt.first_index + position
        if stopper.stopped or outcome.timed_out:
            outcome.steps_not_started = [str(p.step) for p in attempt.steps[position:]]
            break
        if outcome.failed and step.fatal:
            break
        previous = _clear(paths.target_path, keep_results=step.command == "retry")
        if planned.retry_of is not None:  # a flow retry: dbt retry reads the earlier attempt's run_results
            paths.target_path.mkdir(parents=True, exist_ok=True)
            shutil.copy2(planned.retry_of / "run_results.json", paths.target_path / "run_results.json")
            previous = _results_signature(paths.target_path)
        try:
            result = run_step(step, paths, request.engine, index, stopper)  # type: ignore[arg-type]
        except Exception as exc:  # dbt raised something it should have returned
            result = StepOutcome(step, success=False, error=f"{type(exc).__name__}: {exc}")
        if previous is not None and _results_signature(paths.target_path) == previous:
            _clear(paths.target_path)  # dbt retry stopped before writing results: never credit it with the old ones
        artifacts = store.keep_step(index, step.command, paths.target_path)
        outcome.steps.append(StepReport(index, result, artifacts, attempt=attempt.number))


def _clear(target_path: Path, keep_results: bool = False) -> tuple[int, int] | None:
    """Remove the artifacts of an earlier step; `dbt retry` reads run_results.json, so it may keep that one."""
    kept = _results_signature(target_path) if keep_results else None
    for name in ARTIFACT_FILES:
        if not (kept and name == "run_results.json"):
            (target_path / name).unlink(missing_ok=True)
    return kept


def _results_signature(target_path: Path) -> tuple[int, int] | None:
    try:
        stat = (target_path / "run_results.json").stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _run_record(request: RunRequest, attempt: Attempt, outcome: RunOutcome | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "project": request.project.name,
        "project_dir": str(request.project.project_dir),
        "target": request.target,
        "engine": request.engine,
        "parameters": request.parameters,
        "attempt": attempt.number,
        "steps": [*attempt.earlier, *(_planned_entry(p, attempt.number) for p in attempt.steps)],
    }
    if outcome is not None:
        record["status"] = "timed_out" if outcome.timed_out else ("failed" if outcome.failed else "completed")
        record["message"] = outcome.message
        for position, report in enumerate(outcome.steps):
            record["steps"][len(attempt.earlier) + position].update(
                folder=report.artifacts.folder.name,
                success=report.outcome.success,
                error=report.outcome.error,
                parse=str(report.outcome.parse) if report.outcome.parse else None,
                reporting=list(report.outcome.reporting),
            )
            if report.outcome.interrupted is not None:
                record["steps"][len(attempt.earlier) + position]["interrupted"] = report.outcome.interrupted
        if outcome.timed_out:
            record["steps_not_started"] = outcome.steps_not_started
            record["stop_warning"] = outcome.stop_warning
            record["stop_seconds"] = outcome.stop_seconds  # from the stop to dbt's thread ending
    return record


def _planned_entry(planned: PlannedStep, attempt: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": planned.step.command,
        "argv": planned.step.argv,
        "fatal": planned.step.fatal,
        "attempt": attempt,
        "step": planned.index,
    }
    if planned.retry_of is not None:
        entry["retry_of"] = planned.retry_of.name
    return entry


def _emit_warned(request: RunRequest, outcome: RunOutcome) -> None:
    """`dbtflow.run.warned` on the flow run: what `dbtflow notify setup --on-warning` reacts to (best effort)."""
    if flow_run.id is None:
        return
    warned = [
        f"{r.resource_type} {r.name} {r.status}: {' '.join((r.message or '').split())[:300]}" for r in outcome.warnings
    ]
    more = f"; and {len(warned) - 5} more" if len(warned) > 5 else ""
    message = f"dbt on {request.target} completed with {len(warned)} warning(s): " + "; ".join(warned[:5]) + more
    emit_event(
        event=WARNED_EVENT,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": str(flow_run.name),
        },
        payload={"target": request.target, "message": message, "warnings": [w.split(":")[0] for w in warned[:50]]},
    )


def _artifact_key(request: RunRequest) -> str:
    return slot_name(request)
