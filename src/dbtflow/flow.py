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
- Two runs of one target never run dbt at the same time: each holds the target's slot, a
  Prefect global concurrency limit of 1 (`slot_name`, created if missing). A run that finds
  it taken waits (up to `timeout_seconds`), or ends Cancelled with `on_overlap="cancel"`.
  Runs of different targets (dev, prod) run side by side.

Pitfalls
- The target path is per target (`target/<target>/`) so dev and prod runs never share
  partial-parse state or run_results, and `dbt retry` finds the previous results.
- Artifacts left in the target path by an earlier run are removed before each step, so a
  step that dies before writing run_results is never credited with an old one. `dbt retry`
  reads the previous run_results.json there: it is kept for a retry step, and removed after it
  if the retry wrote none.
- The slot is held through a lease that Prefect renews while the run's process lives: a
  crashed run's slot frees itself within LEASE_SECONDS. The wait for the slot and dbt's own
  run each get `timeout_seconds`.
- On timeout the warehouse connections are cancelled through the adapter and no further step
  starts; the dbt thread is a daemon and ends with its in-flight node.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import threading
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow, get_client, get_run_logger
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import State
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from dbtflow.artifacts import ARTIFACT_FILES, RunStore
from dbtflow.artifacts import runs_root as runs_root  # re-exported: the CLI and tests import it from here
from dbtflow.errors import UserError
from dbtflow.invoke import StepOutcome, StepPaths, run_step
from dbtflow.outcome import RunOutcome, StepReport
from dbtflow.profiles import resolved_profiles
from dbtflow.project import load_project
from dbtflow.request import RunRequest, build_request
from dbtflow.summary import publish, summary_markdown

WARNED_EVENT = "dbtflow.run.warned"  # a run completed with warnings; `dbtflow notify setup --on-warning` reacts
LEASE_SECONDS = 60  # a crashed run's slot is free again at most this long after it died
PARAMETERS = tuple(inspect.signature(build_request).parameters)[1:]


# The folder of the latest run in this process, for a caller (the CLI) whose flow call failed
# after dbt finished, e.g. when the Prefect API went away before the final state was set.
LATEST_RUN: list[Path | None] = [None]


def dbt_flow(project_dir: str | Path, *, name: str, profiles_dir: str | Path | None = None) -> Flow[..., Any]:
    """A Prefect flow that runs dbt requests against the project in `project_dir`."""

    @flow(name=name, log_prints=False)
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
        return Failed(message=f"invalid request: {exc}")

    name = slot_name(request)
    _ensure_limit(name)
    cancel = request.on_overlap == "cancel"
    held = False
    try:
        wait = 1.0 if cancel else request.timeout_seconds
        with concurrency(
            name,
            occupy=1,
            timeout_seconds=wait,
            lease_duration=LEASE_SECONDS,
            strict=True,
            raise_on_lease_renewal_failure=False,
        ):
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
        return Failed(name="TimedOut", message=message)


def _execute(request: RunRequest) -> State:
    logger = get_run_logger()
    store = RunStore(runs_root(), str(flow_run.id or "local"))
    LATEST_RUN[0] = store.folder
    store.write_json("run.json", _run_record(request, None))
    outcome = RunOutcome(request.target)
    try:
        with resolved_profiles(request.project, request.target) as profiles:
            _run_with_timeout(
                request,
                StepPaths(request.project.project_dir, profiles, _target_path(request), store.folder),
                store,
                outcome,
            )
    except UserError as exc:
        logger.error("%s", exc)
        store.write_json("run.json", {**_run_record(request, None), "status": "failed", "message": str(exc)})
        return Failed(message=str(exc))

    store.write_json("run.json", _run_record(request, outcome))
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
        return Failed(name="TimedOut", message=f"{outcome.message} (timeout_seconds={request.timeout_seconds})")
    return Failed(message=outcome.message) if outcome.failed else Completed(message=outcome.message)


def slot_name(request: RunRequest) -> str:
    """The Prefect global concurrency limit (of 1) that keeps two runs of one target apart."""
    return re.sub(r"[^a-z0-9-]+", "-", f"dbt-{request.project.name}-{request.target}".lower()).strip("-")


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run of the target created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _target_path(request: RunRequest) -> Path:
    return request.project.project_dir / "target" / request.target


def _run_with_timeout(request: RunRequest, paths: StepPaths, store: RunStore, outcome: RunOutcome) -> None:
    """Run the steps on a daemon thread; past the timeout, cancel the warehouse queries."""
    context = contextvars.copy_context()  # the flow run context, for prefect-dbt's task runs
    runner = threading.Thread(
        target=context.run, args=(_run_steps, request, paths, store, outcome), name="dbtflow-dbt", daemon=True
    )
    runner.start()
    runner.join(request.timeout_seconds)
    if runner.is_alive():
        outcome.timed_out = True
        _cancel_warehouse_queries()
        runner.join(30)


def _run_steps(request: RunRequest, paths: StepPaths, store: RunStore, outcome: RunOutcome) -> None:
    for index, step in enumerate(request.steps):
        if outcome.timed_out or (outcome.failed and step.fatal):
            break
        previous = _clear(paths.target_path, keep_results=step.command == "retry")
        try:
            result = run_step(step, paths, request.engine, index)  # type: ignore[arg-type]
        except Exception as exc:  # dbt raised something it should have returned
            result = StepOutcome(step, success=False, error=f"{type(exc).__name__}: {exc}")
        if previous is not None and _results_signature(paths.target_path) == previous:
            _clear(paths.target_path)  # dbt retry stopped before writing results: never credit it with the old ones
        outcome.steps.append(StepReport(index, result, store.keep_step(index, step.command, paths.target_path)))


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


def _cancel_warehouse_queries() -> None:
    try:
        from dbt.adapters.factory import FACTORY

        adapters: list[Any] = list(FACTORY.adapters.values())
        for adapter in adapters:
            adapter.cancel_open_connections()
    except Exception:  # best effort: the run is already ending as TimedOut
        pass


def _run_record(request: RunRequest, outcome: RunOutcome | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "project": request.project.name,
        "project_dir": str(request.project.project_dir),
        "target": request.target,
        "engine": request.engine,
        "parameters": request.parameters,
        "steps": [{"command": s.command, "argv": s.argv, "fatal": s.fatal} for s in request.steps],
    }
    if outcome is not None:
        record["status"] = "timed_out" if outcome.timed_out else ("failed" if outcome.failed else "completed")
        record["message"] = outcome.message
        for report in outcome.steps:
            record["steps"][report.index].update(
                folder=report.artifacts.folder.name,
                success=report.outcome.success,
                error=report.outcome.error,
                parse=str(report.outcome.parse) if report.outcome.parse else None,
                reporting=list(report.outcome.reporting),
            )
    return record


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
