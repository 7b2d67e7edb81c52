"""Invocation: run one dbt step in-process and say how it went.

Contract
- `run_step(step, paths, engine, index)` runs dbt Core in this process and returns a
  `StepOutcome`: dbt's success flag, the error when dbt could not run its nodes (parse or
  compile error, connection failure), how the project was parsed, and any reporting warnings.
  Node results come from the run_results.json dbt writes (read by `dbtflow.dbt._artifacts`).
- Engine `fast` (default): one dbt invocation per step, as plain dbt runs it (partial parsing
  reuses target/partial_parse.msgpack when project, target and vars are unchanged; the outcome
  says full or partial and how long); every dbt event goes to the `NodeReporter`, whose callback
  only enqueues, and the reporter gets the manifest dbt parsed, from dbt's own click context, at
  the first event after the parse (`FoundStats`, before any node starts). Engine `prefect-dbt`:
  prefect-dbt's `PrefectDbtRunner` as it is, the fallback and the benchmark's reference.
- dbt's events are also offered to `event_listeners` (the CLI's progress bar); a listener must
  only record, never block: it runs on dbt's threads.
- dbt gets an argv list; the paths dbtflow owns are appended here: project, resolved profiles,
  a per-target target path and the run's log folder, each only where dbt's own click command
  for the step accepts it (`dbt deps` takes no `--target-path`: it would fail "No such option").
- A `deps` step whose packages need the dbt package hub first checks that the hub answers
  (`packages.hub_problem`, one bounded GET): if not, the step fails with one line naming the
  packages and the fix, without starting dbt (dbt's hub client would retry for minutes).
- dbt's console output is off (its lines reach Prefect's logs through the reporter; dbt.log
  keeps the debug detail).
- A `Stopper` (`dbtflow.run._stopper`) passed to `run_step` stops dbt from another thread.
- dbt runs with the project's folder as the process's working folder, as dbt Cloud runs it (and
  as `cd project && dbt build` does): a profile's `path: ./db.duckdb`, `external_location`, a
  hook's `read_csv('data/x.csv')` resolve against the project wherever `dbtflow` was started.
  The caller's folder is restored after the step.
- A stopped step (timeout, SIGINT, SIGTERM) gets the selected nodes that never started added
  to its run_results.json as `skipped` ("not started: stopped by SIGTERM"): dbt lists
  only the nodes that ran, and `dbt retry` (the flow's `command: retry`, `dbtflow retry`) then
  builds the rest too.

Pitfalls
- The manifest is dbt's `ctx.obj["manifest"]` (dbt.cli.requires.setup_manifest puts it there), read
  on the invoking thread only (click's context is thread-local; node events come from dbt's
  worker threads, after it is set). A dbt that stopped putting it there leaves the reporter
  without lineage or asset keys, never the run failed. A `deps` step parses nothing: no parse info.
  (Before, a `dbt parse` ran first to get the manifest: ~0.3 s more per step at 200 models.)
- The working folder is the process's, not the thread's: while a step runs, a relative path
  read on any thread resolves in the project. dbtflow's own paths (the runs folder, `state`,
  the profiles folder, the project) are made absolute before the first step; `run_step`
  restores the caller's folder after the step (also after `dbt deps`, which moves into the
  project itself: dbt's `move_to_nearest_project_dir`).
- The step's outcome counts the Prefect task runs it created (`task_runs`: the reporter's, or
  prefect-dbt's `_call_task` calls, one task per call), so the flow can wait for Prefect's
  ephemeral API to record them all (`dbtflow.run._recorded`) before the process stops it.
- `PrefectDbtRunner.invoke` raises ValueError when dbt returns an exception; that is an
  outcome here, not a crash.
- dbt-duckdb resolves a relative database path against the process cwd (the project's, see
  above); profiles can also use `env_var('DBTFLOW_PROJECT_DIR')`, set to the project folder
  before each step.
- Must not talk to the Prefect API itself: the reporter does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import click
from dbt.cli.main import cli, dbtRunner
from prefect.runtime import flow_run

from dbtflow.dbt import _packages as packages
from dbtflow.run import _warehouse as warehouse
from dbtflow.run._outcome import ParseInfo, StepOutcome
from dbtflow.run._reporter import NodeReporter
from dbtflow.run._request import Step
from dbtflow.run._stopper import EventListener, Interrupted, Stopper
from dbtflow.settings import PROJECT_DIR

Engine = Literal["fast", "prefect-dbt"]
event_listeners: ContextVar[tuple[EventListener, ...]] = ContextVar("dbtflow_event_listeners", default=())
PARTIAL_PARSE_EVENTS = frozenset(
    {"UnableToPartialParse", "PartialParsingNotEnabled", "PartialParsingEnabled", "PartialParsingSkipParsing"}
)
# A run_results entry (v6) for a node a stop kept from starting; `dbt retry` reruns what is `skipped`.
NOT_STARTED: dict[str, Any] = {
    **dict.fromkeys(("failures", "compiled", "compiled_code", "relation_name", "batch_results")),
    "status": "skipped", "timing": [], "thread_id": "", "execution_time": 0.0, "adapter_response": {},
}  # fmt: skip
DRIVER_ERROR = re.compile(r"\d{3,6} \(\w{5}\): ")  # DB-API drivers' "errno (sqlstate): message"


@dataclass(frozen=True)
class StepPaths:
    project_dir: Path
    profiles_dir: Path
    target_path: Path
    log_path: Path

    def argv(self, command: str = "build") -> list[str]:
        """The paths as options, only those dbt's `command` accepts (`dbt deps` has no --target-path)."""
        accepted = _accepted_options(command)
        options = {
            "project_dir": ("--project-dir", self.project_dir),
            "profiles_dir": ("--profiles-dir", self.profiles_dir),
            "target_path": ("--target-path", self.target_path),
            "log_path": ("--log-path", self.log_path),
        }
        return [text for name, (flag, path) in options.items() if name in accepted for text in (flag, str(path))]


@functools.cache
def _accepted_options(command: str) -> frozenset[str]:
    """The parameter names of dbt's own click command for `command` (e.g. `source freshness`)."""
    found: Any = cli
    for word in command.split():
        found = found.commands[word]
    return frozenset(str(p.name) for p in found.params)


def run_step(
    step: Step, paths: StepPaths, engine: Engine = "fast", index: int = 0, stopper: Stopper | None = None
) -> StepOutcome:
    """Run one dbt step in this process.

    Args:
        step: the step (its dbt argv and run-level options).
        paths: the project, the resolved profiles, the per-target target path and the run's folder.
        engine: `fast` (dbt with dbtflow's reporter) or `prefect-dbt` (PrefectDbtRunner as it is).
        index: the step's position in the run (names its task runs).
        stopper: stops dbt from another thread (the run's timeout); a fresh one when None.

    Returns:
        dbt's success flag, the error when dbt could not run its nodes, how it parsed, what it
        could not report, and why it was stopped if it was.
    """
    os.environ[PROJECT_DIR] = str(paths.project_dir)
    warehouse.start_step()
    stopper = stopper or Stopper()
    stopper.begin_step()
    token = event_listeners.set((*event_listeners.get(), warehouse.on_event, stopper.on_event))
    cwd = os.getcwd()  # the caller's folder, back after the step
    try:
        os.chdir(paths.project_dir)  # relative paths in profiles, hooks and models are the project's, as in dbt Cloud
        hub = packages.hub_problem(paths.project_dir) if step.command == "deps" else None
        if hub is not None:
            outcome = StepOutcome(step, success=False, error=hub)
        elif engine == "prefect-dbt":
            outcome = _run_prefect_dbt(step, paths, stopper)
        else:
            outcome = _run_fast(step, paths, index, stopper)
    except KeyboardInterrupt:
        if not stopper.stopped:
            raise
        outcome = StepOutcome(step, success=False)
    finally:
        event_listeners.reset(token)
        os.chdir(cwd)
    interrupted = stopper.interrupted()
    if interrupted is not None:
        outcome = replace(outcome, success=False, error=f"stopped: {interrupted.reason}", interrupted=interrupted)
        _record_not_started(paths.target_path / "run_results.json", interrupted)
    return outcome


def _run_fast(step: Step, paths: StepPaths, index: int, stopper: Stopper) -> StepOutcome:
    reporter = NodeReporter(flow_run.id, flow_run.name, index, stopper.stopped_while_running) if flow_run.id else None
    callbacks = list(event_listeners.get())
    if reporter is not None:
        callbacks.append(stopper.quiet(reporter.on_event))
        reporter.start()
    quiet = ["--log-level", "none", "--log-level-file", "debug"]  # console off (the reporter logs), dbt.log as usual
    try:
        outcome = _invoke(step, [*step.argv, *paths.argv(step.command), *quiet], callbacks, reporter, stopper)
    finally:
        warnings = tuple(reporter.close(stopped=stopper.reason)) if reporter is not None else ()
    return replace(outcome, reporting=warnings, task_runs=len(reporter.task_runs) if reporter is not None else 0)


def _invoke(
    step: Step, argv: list[str], callbacks: list[EventListener], reporter: NodeReporter | None, stopper: Stopper
) -> StepOutcome:
    """The step in one dbt invocation; how it parsed, and the parsed manifest handed to the reporter."""
    probe = _ParseProbe(reporter)
    runner = dbtRunner(callbacks=[probe.on_event, *callbacks])
    result = stopper.call(lambda: runner.invoke(argv))
    parse = probe.info()
    if result is None:
        return StepOutcome(step, success=False, parse=parse)
    error = _first_line(str(result.exception)) if result.exception else None
    return StepOutcome(step, success=bool(result.success), error=error, parse=parse)


class _ParseProbe:
    """dbt's callback that notes how dbt parsed and, once it has, gives the reporter dbt's manifest."""

    def __init__(self, reporter: NodeReporter | None) -> None:
        self._reporter = reporter
        self._started = time.perf_counter()
        self._seconds: float | None = None  # until the manifest was there
        self._seen: dict[str, str] = {}

    def on_event(self, event: Any) -> None:
        if self._seconds is not None:
            return
        name = event.info.name
        if name in PARTIAL_PARSE_EVENTS:
            self._seen[name] = getattr(event.data, "reason", "") or ""
        context = click.get_current_context(silent=True)  # None on dbt's worker threads
        manifest = context.obj.get("manifest") if context is not None and context.obj else None
        if manifest is not None:
            self._seconds = time.perf_counter() - self._started
            if self._reporter is not None:
                self._reporter.set_manifest(manifest)

    def info(self) -> ParseInfo | None:
        """Full or partial, and how long; None when dbt parsed nothing (`dbt deps`)."""
        if self._seconds is None and not self._seen:
            return None
        seen = self._seen
        full = "UnableToPartialParse" in seen or "PartialParsingNotEnabled" in seen or not seen
        reason = seen.get("UnableToPartialParse") or (
            "partial parsing is off" if "PartialParsingNotEnabled" in seen else None
        )
        seconds = self._seconds if self._seconds is not None else time.perf_counter() - self._started
        return ParseInfo(partial=not full, seconds=seconds, reason=reason)


def _run_prefect_dbt(step: Step, paths: StepPaths, stopper: Stopper) -> StepOutcome:
    from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings  # lazy: ~0.5 s of imports the fast engine never needs

    class Runner(PrefectDbtRunner):
        """PrefectDbtRunner that also hands every dbt event to our listeners and counts the task runs it starts."""

        task_runs = 0

        def _call_task(self, *args: Any, **kwargs: Any) -> Any:
            self.task_runs += 1  # one Prefect task run per call (prefect-dbt's own count is reset by invoke)
            return super()._call_task(*args, **kwargs)

        def _create_unified_callback(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
            inner = super()._create_unified_callback(*args, **kwargs)
            listeners = event_listeners.get()

            def callback(event: Any) -> None:
                for listener in listeners:
                    with contextlib.suppress(Exception):  # a listener never breaks dbt
                        listener(event)
                inner(event)

            return callback

    settings = PrefectDbtSettings(
        project_dir=paths.project_dir, profiles_dir=paths.profiles_dir, target_path=paths.target_path
    )
    runner = Runner(settings=settings, raise_on_failure=False)
    try:
        result = stopper.call(lambda: runner.invoke([*step.argv, "--log-path", str(paths.log_path)]))
    except ValueError as exc:
        return StepOutcome(step, success=False, error=_first_line(str(exc)), task_runs=runner.task_runs)
    if result is None:
        return StepOutcome(step, success=False, task_runs=runner.task_runs)
    error = _first_line(str(result.exception)) if result.exception else None
    return StepOutcome(step, success=bool(result.success), error=error, task_runs=runner.task_runs)


def _record_not_started(run_results: Path, interrupted: Interrupted) -> None:
    """Add the selected nodes a stop kept from starting to dbt's run_results as `skipped`, so `dbt retry` runs them.

    dbt's own KeyboardInterrupt path lists only the nodes that ran; `dbt retry` reruns what
    errored or was skipped, and would never build the rest.
    """
    if not interrupted.not_started_ids:
        return
    try:
        document = json.loads(run_results.read_text())
    except (OSError, ValueError):
        return  # dbt wrote none: nothing to complete (`dbt retry` then says so itself)
    listed = {r.get("unique_id") for r in document.get("results", [])}
    message = f"not started: {interrupted.reason}"
    document["results"] += [
        {**NOT_STARTED, "message": message, "unique_id": unique_id}
        for unique_id in interrupted.not_started_ids
        if unique_id not in listed
    ]
    run_results.write_text(json.dumps(document))


def _first_line(text: str) -> str:
    """dbt's first lines say what it was doing; a driver's error (`390144 (28000): ...`) nested below says why."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = [line for line in lines[3:] if DRIVER_ERROR.match(line)][-1:]
    return " ".join(lines[:3] + cause)[:500] if lines else "dbt failed without a message"
