"""The generic Prefect flow: one dbt project, any request, artifacts kept, honest final state.

Contract
- `dbt_flow(project_dir, name=...)` returns a Prefect flow bound to one dbt project (what
  `dbtflow run --project-dir` runs). Its parameters are the `RunParameters`' (see
  `dbtflow.run._parameters`), with types and descriptions Prefect shows in the UI. A deployed
  entrypoint repeats them in a literal `def` that calls `execute` (see flows/dbt_wg_flow.py,
  why: prefect-cloud's AST search; tests/run/test_entrypoint.py keeps the copy equal).
- The flow validates the request before anything else (a bad request ends Failed with the
  one-line reason, and dbt never starts), runs the steps in order (stopping at the first
  failing step, like a dbt Cloud job; a docs step still runs), keeps every step's artifacts
  in the run's folder, publishes the summary artifact, and ends Completed, or Failed with a
  message naming the failing nodes, or TimedOut. A run that completes with warnings also emits
  the Prefect event `dbtflow.run.warned` (payload: target, message, warnings) on its flow run.
- Flow retries (`dbt_flow(..., retries=N)`, `flow.with_options(retries=N)`, or a flow run's
  `empirical_policy.retries` set through the API) rerun from the failure: attempt N+1 reruns
  only what failed or was skipped, through `dbt retry` on the previous attempt's artifacts,
  or the failed step in full when none of its nodes ran (see `dbtflow.run._attempts`). Each
  attempt's steps get their own folders in the run's folder, and the summary says which
  attempt built which node. A timeout, an invalid request or a profile that cannot be
  resolved is final: it is never retried.
- Packages, as dbt Cloud does at the start of every job: with `install_deps` (default) and
  packages declared, a run whose installed packages do not match package-lock.yml runs
  `dbt deps` first, as its own step (`01-deps/`, in the summary, and in run.json with
  `step: null` and its `reason`); a failed deps ends the run Failed before any later step.
  Nothing needs installing: no deps step (the check is milliseconds, see `dbtflow.dbt._packages`).
- Two runs of one target never run dbt at the same time: each holds the target's slot, a
  Prefect global concurrency limit of 1 (`slot_name`, created if missing). A run that finds
  it taken waits (up to `timeout_seconds`), or ends Cancelled with `on_overlap="cancel"`.
  Runs of different targets (dev, prod) run side by side.
- On Prefect's ephemeral API (no PREFECT_API_URL; it stops with the process) the flow waits, at
  its end and at most 60 s, until the API has recorded every task run the steps created in a
  final state (`dbtflow.run._recorded`), else warns how many are missing and to start a server.
- The Prefect API gone at the end of a run (reporting gave up after its 30 s and `/health` does
  not answer): once the slot's release was tried (5 s at most) and everything is kept locally,
  the final state goes to `UNRECORDED_END` when a caller set it (`dbtflow run` prints one line
  and exits with dbt's outcome); else the engine tries to record it under its own retries.

Pitfalls
- The target path is per target (`target/<target>/`) so dev and prod runs never share
  partial-parse state or run_results, and `dbt retry` finds the previous results.
- With a `run_storage` block (see `dbtflow.run._durable`, `dbtflow.run._storage`): the store is probed
  before the slot is taken and dbt starts, `state="latest-success[:target]"` is fetched from it,
  a retried attempt on a new worker gets the earlier attempt back from it, the partial-parse
  cache is restored from it (`dbtflow.run._parse_cache`), and the run is uploaded to it at the end
  (a failed upload is a warning; the final state is still dbt's).
- Artifacts left in the target path by an earlier run are removed before each step, so a
  step that dies before writing run_results is never credited with an old one. A `retry`
  step reads run_results.json there: an explicit `dbt retry` step keeps the one found, a flow
  retry copies the earlier attempt's; either is removed after the step if it wrote none.
- A failed attempt with retries left raises `RetryFromFailure` instead of returning a Failed
  state: Prefect retries a raised exception in the same process (AwaitingRetry, then Running),
  whereas a returned Failed state ends the engine's loop in AwaitingRetry. A final failure
  with retries left lowers the run's `retries` to the attempts made, so Prefect accepts it.
- The runs folder is checked writable before the slot is taken (`dbtflow.run._runs_dir`). A disk
  that fills during the run does not lose dbt's outcome: a step's artifacts that cannot be
  copied are read where dbt wrote them (its half-copied folder removed), run.json and summary.md
  are written whole or not at all, dbt.log's write errors are not printed per line, and the run
  ends with dbt's own state, its message saying once what could not be saved.
- `env_vars` are set in the process's environment from before the packages check (packages.yml may
  read one, e.g. a private package's token) to the run's end (`dbtflow.secrets._env_vars`);
  a `DBT_ENV_SECRET_*` one is read from its Prefect Secret block then, never earlier, so no deployment
  or parameter holds its value; run.json's `env_vars` maps the names set to their values (null for a secret).
- Vars whose names look secret (`api_token`, `db_password`) are masked in run.json, summary.md,
  dbt.log and the console (see `dbtflow.secrets._masking`), and, once the flow starts, in the flow
  run's parameters stored by Prefect (`dbtflow.run._stored_parameters`); dbt still gets them, and
  so do in-process flow retries. A run started from the stored (masked) parameters is refused.
- The target's slot and its lease: see `dbtflow.run._slot`. The wait for the slot and dbt's own
  run each get `timeout_seconds`.
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

import contextvars
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from prefect import Flow, flow, get_client, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Completed, Failed

from dbtflow.dbt._artifacts import ARTIFACT_FILES, RunStore, StepArtifacts, read_step
from dbtflow.dbt._artifacts import runs_root as runs_root  # re-exported: the CLI and tests import it from here
from dbtflow.dbt._packages import install_reason, vars_of
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.run import _durable as durable
from dbtflow.run import _parse_cache as parse_cache
from dbtflow.run._attempts import Attempt, PlannedStep, earlier_reports, plan_attempt, with_deps
from dbtflow.run._invoke import StepPaths, run_step
from dbtflow.run._outcome import RunOutcome, StepOutcome, StepReport
from dbtflow.run._parameters import RunParameters
from dbtflow.run._recorded import on_ephemeral_api, wait_recorded
from dbtflow.run._request import RunRequest, build_request
from dbtflow.run._runs_dir import check_runs_root, quiet_logging_errors, storage_problem
from dbtflow.run._slot import SlotTaken, slot_name, target_slot
from dbtflow.run._stopper import Stopper, on_signals
from dbtflow.run._storage import FolderStore, Store
from dbtflow.run._stored_parameters import mask_stored
from dbtflow.run._summary import publish, summary_markdown
from dbtflow.run._warehouse import release_connections
from dbtflow.secrets._env_names import is_secret
from dbtflow.secrets._env_vars import SecretUnavailable, run_env
from dbtflow.secrets._masking import masked_argv, masked_parameters, scrub_files, secret_env
from dbtflow.secrets._profiles import resolved_profiles

WARNED_EVENT = "dbtflow.run.warned"  # a run completed with warnings; `dbtflow notify setup --on-warning` reacts
STOP_SECONDS = 45  # how long a timed-out run waits for dbt to stop (reporting gets 30 s of it)
PARAMETERS = tuple(RunParameters.model_fields)  # the flow's parameters, in RunParameters' order


# The folder of the latest run in this process, for a caller (the CLI) whose flow call failed
# after dbt finished, e.g. when the Prefect API went away before the final state was set.
LATEST_RUN: list[Path | None] = [None]


# `dbtflow run` sets this: called (with the final state and the API's URL) once a run has kept
# everything locally while Prefect's API is gone, so that the process leaves at once rather than
# through the engine's retries of a final state no server will take (a minute and a traceback).
UNRECORDED_END: contextvars.ContextVar[Callable[[State, str], None] | None] = contextvars.ContextVar(
    "dbtflow_unrecorded_end", default=None
)
_GAVE_UP: contextvars.ContextVar[bool] = contextvars.ContextVar("dbtflow_reporting_gave_up", default=False)


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

    Args:
        project_dir: the dbt project folder.
        name: the flow's name in Prefect.
        profiles_dir: the folder of profiles.yml (None: looked up as dbt does).
        retries: flow retries, each rerunning from the failure.
        retry_delay_seconds: the wait before a retry.

    Returns:
        The flow; its parameters are `RunParameters`' (see `tests/run/test_parameters.py`).
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
        install_deps: bool = True,
        run_storage: str | None = None,
        env_vars: dict[str, str] | None = None,
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
            install_deps: Run `dbt deps` first when packages.yml or dependencies.yml lists packages
                that are missing or do not match package-lock.yml (as dbt Cloud does every job).
            run_storage: A Prefect storage block (e.g. `s3-bucket/dbtflow-runs`) that keeps each run's
                artifacts; empty: env DBTFLOW_RUN_STORAGE, else the worker's local runs folder.
            env_vars: Environment variables for dbt's `env_var()` while the run runs (names DBT_*, as in
                dbt Cloud); a `DBT_ENV_SECRET_*` entry's value is the name of the Prefect Secret block
                holding it (read when the run starts, masked as dbt masks secrets), never the secret.
        """
        parameters = {name: value for name, value in locals().items() if name in PARAMETERS}
        return execute(project_dir, profiles_dir, parameters)

    return run_dbt


def execute(project_dir: str | Path, profiles_dir: str | Path | None, parameters: dict[str, Any]) -> State:
    """Run one flow run's request: validate, hold the target's slot, run the steps, end in an honest state.

    Args:
        project_dir: the dbt project folder.
        profiles_dir: the folder of profiles.yml (None: looked up as dbt does, see `load_project`).
        parameters: the flow run's parameters (`RunParameters`' names).

    Returns:
        The flow run's final state: Completed, Failed (naming the failing nodes), TimedOut or Cancelled.
    """
    logger = get_run_logger()
    unmasked = mask_stored(flow_run.id, parameters)  # Prefect's stored copy: no secret-looking var in clear
    if unmasked:
        logger.warning("%s", unmasked)
    try:
        project = load_project(project_dir, profiles_dir)
        request = build_request(project, **parameters)
    except UserError as exc:
        logger.error("invalid request: %s", exc)
        _final()
        return Failed(message=f"invalid request: {exc}")
    state_folder = None
    try:
        check_runs_root(runs_root())  # no record could be kept: dbt must not start
        store = durable.open_checked(request, _run_id())
        request, state_folder = durable.store_state(request, store, parameters, project)
    except UserError as exc:
        logger.error("%s", exc)
        _final()
        return Failed(message=str(exc))
    try:
        return _in_slot(request, store)
    finally:
        if state_folder is not None:
            shutil.rmtree(state_folder, ignore_errors=True)


def _in_slot(request: RunRequest, store: Store) -> State:
    logger = get_run_logger()
    name = slot_name(request)
    cancel = request.on_overlap == "cancel"
    held = False
    try:
        wait = 1.0 if cancel else request.timeout_seconds
        with target_slot(name, wait, request.target):
            held = True
            state = _execute(request, store)
        _leave_if_api_gone(state)
        return state
    except TimeoutError as exc:
        if held:
            raise
        durable.forget(store, _run_id())  # it never ran: not listed as an incomplete run
        by = exc.holder if isinstance(exc, SlotTaken) else "another run"
        hint = f"; if that run is gone, free the slot with `dbtflow slot release --target {request.target}`"
        if cancel:
            message = f"the slot {name!r} of {request.target} is held by {by} and on_overlap is 'cancel'{hint}"
            logger.warning("%s", message)
            return Cancelled(message=message)
        message = f"timed out after {request.timeout_seconds} s waiting for the slot {name!r}, held by {by}{hint}"
        logger.error("%s", message)
        _final()
        return Failed(name="TimedOut", message=message)


def _leave_if_api_gone(state: State) -> None:
    """Hand the final state to UNRECORDED_END when reporting gave up and the API still does not answer."""
    leave, url = UNRECORDED_END.get(), get_current_settings().api.url
    if leave is None or not _GAVE_UP.get() or url is None:
        return
    try:
        if httpx.get(f"{url.rstrip('/')}/health", timeout=3).status_code == 200:
            return  # back in time: the engine records the final state
    except httpx.HTTPError:
        pass
    leave(state, url)


def _run_id() -> str:
    return str(flow_run.id or "local")


def _execute(request: RunRequest, remote: Store) -> State:
    """The run with its `env_vars` set from before the packages check (packages.yml may read a token) to its end."""
    try:
        with run_env(request.env_vars):  # env_var()'s values; secret ones read from their Secret blocks now
            return _execute_with_env(request, remote)
    except SecretUnavailable as exc:  # a Secret block could not be read: dbt has not started
        get_run_logger().error("%s", exc)
        durable.forget(remote, _run_id())  # it never ran: not listed as an incomplete run
        _final()
        return Failed(message=str(exc))


def _execute_with_env(request: RunRequest, remote: Store) -> State:
    logger = get_run_logger()
    store = RunStore(runs_root(), _run_id())
    LATEST_RUN[0] = store.folder
    if int(flow_run.run_count or 1) > 1 and durable.restore_attempt(remote, _run_id(), store.folder):
        logger.info("restored the earlier attempt of this run from the run store %s", remote.where)
    attempt = plan_attempt(request, store.folder, max(1, int(flow_run.run_count or 1)))
    if attempt.number > 1:
        logger.info("%s", attempt.describe())
    outcome = RunOutcome(request.target, attempt=attempt.number, earlier=earlier_reports(attempt, store.folder))
    restored = parse_cache.restore(remote, request, _target_path(request))
    if restored:
        logger.info("%s", restored)
    try:
        attempt = _with_deps_if_needed(request, attempt)
        store.write_json("run.json", _run_record(request, attempt, None))
    except UserError as exc:  # the installed packages cannot be read: dbt has not started
        logger.error("%s", exc)
        store.write_json("run.json", {**_run_record(request, attempt, None), "status": "failed", "message": str(exc)})
        _final()
        return Failed(message=str(exc))
    except OSError as exc:  # the disk filled since the check: dbt has not started
        logger.error("%s (dbt did not start)", storage_problem(store.folder, exc))
        return Failed(message=f"{storage_problem(store.folder, exc)} (dbt did not start)")
    try:
        with (
            resolved_profiles(request.project, request.target) as profiles,
            secret_env([s.argv for s in request.steps]),  # dbt scrubs secret vars from dbt.log
            quiet_logging_errors(),  # a full disk: said once below, not per dbt.log line
        ):
            _run_with_timeout(
                request,
                attempt,
                StepPaths(request.project.project_dir, profiles, _target_path(request), store.folder),
                store,
                outcome,
            )
    except UserError as exc:
        logger.error("%s", exc)
        record = {**_run_record(request, attempt, None), "status": "failed", "message": str(exc)}
        store.write_json("run.json", record)
        durable.keep(remote, store.folder, _run_id(), record)
        _final()
        return Failed(message=str(exc))

    record = _run_record(request, attempt, outcome)
    problem = _save_record(record, outcome, store, _stored_at(remote))
    parse_cache.save(remote, request, _target_path(request))  # before the run's upload: its marker comes last
    stored, upload_warning = durable.keep(remote, store.folder, _run_id(), record)
    if upload_warning:
        logger.warning("%s", upload_warning)
        problem = _save_record(record, outcome, store, stored) or problem
    gave_up = any("gave up" in w for step in outcome.steps for w in step.outcome.reporting)
    _GAVE_UP.set(gave_up)
    task_runs = sum(step.outcome.task_runs for step in outcome.steps)
    if not gave_up and task_runs and flow_run.id and on_ephemeral_api():  # it stops with this process
        wait_began = time.monotonic()
        lost = wait_recorded(flow_run.id, task_runs)
        if lost:
            logger.warning("%s", lost)
        elif (waited := time.monotonic() - wait_began) > 1:  # the run's end is later by that: say why
            logger.info("waited %.1f s for Prefect's ephemeral API to record the %d task runs", waited, task_runs)
    if not gave_up:
        publish(outcome, store.folder, key=_artifact_key(request), stored=stored)  # else the API is down
        if not outcome.failed and outcome.warnings:
            _emit_warned(request, outcome)
    for failure in outcome.failures:
        logger.error("%s %s %s: %s", failure.resource_type, failure.name, failure.status, failure.message)
    for warning in {w for step in outcome.steps for w in step.outcome.reporting}:
        logger.warning("%s", warning)
    if outcome.unmatched:
        logger.warning("%s", outcome.unmatched_line())
    if problem:  # dbt's outcome still stands; what could not be kept is said once
        logger.error("%s; dbt's outcome: %s", problem, outcome.message)
    else:
        logger.info("%s; artifacts in %s", outcome.message, store.folder)
    message = f"{outcome.message}; {problem}" if problem else outcome.message
    if outcome.signalled is not None:  # an operator's stop: never retried; `dbt retry` resumes it
        _final()
        return Cancelled(message=message)
    if outcome.timed_out:
        _final()
        return Failed(name="TimedOut", message=f"{message} (timeout_seconds={request.timeout_seconds})")
    if outcome.failed and _retries_left():
        raise RetryFromFailure(f"{message} [attempt {attempt.number}; retrying from the failure]")
    return Failed(message=message) if outcome.failed else Completed(message=message)


def _save_record(record: dict[str, Any], outcome: RunOutcome, store: RunStore, stored: str | None) -> str | None:
    """run.json and summary.md, each whole or not at all; the one-line problem when the disk is full."""
    summary = store.folder / "summary.md"
    tmp = summary.with_suffix(".md.tmp")
    try:
        store.write_json("run.json", record)
        tmp.write_text(summary_markdown(outcome, store.folder, stored))
        tmp.replace(summary)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return outcome.storage_problem or storage_problem(store.folder, exc)
    return outcome.storage_problem


def _with_deps_if_needed(request: RunRequest, attempt: Attempt) -> Attempt:
    """`dbt deps` first when the installed packages do not match package-lock.yml (see dbtflow.dbt._packages)."""
    if request.deps_step is None:
        return attempt
    reason = install_reason(request.project.project_dir, vars_of(request.deps_step.argv))
    if reason is None:
        return attempt
    get_run_logger().info("installing dbt packages first (dbt deps): %s", reason)
    return with_deps(attempt, request.deps_step, reason)


def _stored_at(remote: Store) -> str | None:
    """The summary's line on where the run store keeps this run (None for the local folder)."""
    if isinstance(remote, FolderStore):
        return None
    return f"Stored in the run store `{remote.where}:{_run_id()}/` (`dbtflow runs show {_run_id()}`)."


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


def _target_path(request: RunRequest) -> Path:
    return request.project.project_dir / "target" / request.target


def _run_with_timeout(
    request: RunRequest, attempt: Attempt, paths: StepPaths, store: RunStore, outcome: RunOutcome
) -> None:
    """Run the steps on a daemon thread; past the timeout, or on SIGINT/SIGTERM, stop dbt as Ctrl-C would."""
    stopper = Stopper()
    caller = os.getcwd()  # each step runs in the project's folder (see dbtflow.run._invoke)
    context = contextvars.copy_context()  # the flow run context, for prefect-dbt's task runs
    runner = threading.Thread(
        target=context.run,
        args=(_run_steps, request, attempt, paths, store, outcome, stopper),
        name="dbtflow-dbt",
        daemon=True,
    )
    deadline = None if request.timeout_seconds is None else time.monotonic() + request.timeout_seconds
    with on_signals() as signals:
        runner.start()
        while runner.is_alive() and not signals.event.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            runner.join(0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic())))
        if runner.is_alive():
            stopping = time.monotonic()
            if signals.name is not None:
                outcome.signalled = signals.name
                get_run_logger().warning("%s received: stopping dbt (up to %s s)", signals.name, STOP_SECONDS)
                stopper.stop(f"stopped by {signals.name}")
            else:
                outcome.timed_out = True
                stopper.stop(f"timed out after {request.timeout_seconds} s")
            runner.join(STOP_SECONDS)
            outcome.stop_seconds = round(time.monotonic() - stopping, 2)
            if runner.is_alive():
                why = outcome.signalled or "the timeout"
                outcome.stop_warning = f"dbt did not stop within {STOP_SECONDS} s of {why}; left to end on its own"
                os.chdir(caller)  # its step restores the same folder when it ends
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
        started = time.monotonic()
        try:
            result = run_step(step, paths, request.engine, index, stopper)  # type: ignore[arg-type]
        except Exception as exc:  # dbt raised something it should have returned
            result = StepOutcome(step, success=False, error=f"{type(exc).__name__}: {exc}")
        if previous is not None and _results_signature(paths.target_path) == previous:
            _clear(paths.target_path)  # dbt retry stopped before writing results: never credit it with the old ones
        artifacts = _keep_step(store, index, step.command, paths.target_path, outcome)
        seconds = round(time.monotonic() - started, 2)
        outcome.steps.append(StepReport(index, result, artifacts, attempt.number, planned.reason, seconds))
        if planned.automatic and not result.success:
            break  # the packages did not install: no later step, not even a non-fatal one, can parse the project


def _keep_step(store: RunStore, index: int, command: str, target_path: Path, outcome: RunOutcome) -> StepArtifacts:
    """The step's artifacts copied into the run's folder; on a full disk, read where dbt wrote them."""
    try:
        artifacts = store.keep_step(index, command, target_path)
        scrub_files(store.step_folder(index, command))  # dbt wrote the vars into run_results' args
        return artifacts
    except OSError as exc:
        shutil.rmtree(store.step_folder(index, command), ignore_errors=True)  # no half-copied step folder
        outcome.storage_problem = outcome.storage_problem or storage_problem(store.folder, exc)
        return read_step(target_path)


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
        "parameters": masked_parameters(request.parameters),
        # what the run set for dbt, for parity: name -> value, a secret's never (null)
        "env_vars": {n: None if is_secret(n) else v for n, v in sorted(request.env_vars.items())},
        "attempt": attempt.number,
        "steps": [*attempt.earlier, *(_planned_entry(p, attempt.number) for p in attempt.steps)],
    }
    if outcome is not None:
        record["status"] = outcome.status
        record["message"] = outcome.message
        if outcome.signalled is not None:
            record["signal"] = outcome.signalled
        for position, report in enumerate(outcome.steps):
            record["steps"][len(attempt.earlier) + position].update(
                folder=report.artifacts.folder.name,
                success=report.outcome.success,
                error=report.outcome.error,
                parse=str(report.outcome.parse) if report.outcome.parse else None,
                reporting=list(report.outcome.reporting),
                seconds=report.seconds,
            )
            if report.outcome.interrupted is not None:
                record["steps"][len(attempt.earlier) + position]["interrupted"] = report.outcome.interrupted
        if outcome.stopped:
            record["steps_not_started"] = outcome.steps_not_started
            record["stop_warning"] = outcome.stop_warning
            record["stop_seconds"] = outcome.stop_seconds  # from the stop to dbt's thread ending
    return record


def _planned_entry(planned: PlannedStep, attempt: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": planned.step.command,
        "argv": masked_argv(planned.step.argv),
        "fatal": planned.step.fatal,
        "attempt": attempt,
        "step": None if planned.automatic else planned.index,
    }
    if planned.reason is not None:
        entry["reason"] = planned.reason
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
