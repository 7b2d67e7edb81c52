"""Invocation: run one dbt step in-process and say how it went.

Contract
- `run_step(step, paths, engine, index)` runs dbt Core in this process and returns a
  `StepOutcome`: dbt's success flag, the error when dbt could not run its nodes (parse or
  compile error, connection failure), how the project was parsed, and any reporting warnings.
  Node results come from the run_results.json dbt writes (read by `dbtflow.artifacts`).
- Engine `fast` (default): `dbt parse` first (partial parsing reuses target/partial_parse.msgpack
  when project, target and vars are unchanged; the outcome says full or partial and how long),
  then the command with that manifest, so dbt parses once; every dbt event goes to the
  `NodeReporter`, whose callback only enqueues. Engine `prefect-dbt`: prefect-dbt's
  `PrefectDbtRunner` as it is, the fallback and the benchmark's reference.
- dbt's events are also offered to `event_listeners` (the CLI's progress bar); a listener must
  only record, never block: it runs on dbt's threads.
- dbt gets an argv list; the paths dbtflow owns are appended here: project, resolved profiles,
  a per-target target path and the run's log folder. dbt's console output is off (its lines
  reach Prefect's logs through the reporter; dbt.log keeps the debug detail).
- A `Stopper` passed to `run_step` stops dbt from another thread (the flow's timeout) the way
  Ctrl-C stops it: `stop()` raises KeyboardInterrupt in the thread that runs dbt and cancels
  the in-flight warehouse queries through the adapter (`cancel_open_connections`; dbt-duckdb
  interrupts the DuckDB query). dbt's own KeyboardInterrupt path then writes run_results for
  the nodes done, drains its thread pool (no further node starts), joins its workers and
  closes its connections. The step's outcome says which nodes were running and which of the
  nodes dbt had selected never started (`Interrupted`). `release_connections()` closes what
  dbt keeps open between invocations (dbt-duckdb's `keep_open` database).

Pitfalls
- `deps` and `parse` run without the pre-parse (deps must not need installed packages).
- `PrefectDbtRunner.invoke` raises ValueError when dbt returns an exception; that is an
  outcome here, not a crash.
- dbt-duckdb resolves a relative database path against the process cwd; profiles can use
  `env_var('DBTFLOW_PROJECT_DIR')`, which is set to the project folder before each step.
- Must not talk to the Prefect API itself: the reporter does.
- The stop is an asynchronous exception (`PyThreadState_SetAsyncExc`): Python delivers it when
  the thread next runs bytecode, so a dbt thread blocked waiting for a node wakes when that
  node ends, which the query cancel makes happen at once; a node busy outside the warehouse
  (a Python model, a sleep) ends first. It is raised at most once per Stopper and only while
  `Stopper.call` runs dbt; a stop that lands just outside dbt's own handler is caught there.
- The nodes that never started come from dbt's task (its `_flattened_nodes`), found on the
  KeyboardInterrupt's traceback; when the stop lands before dbt selected nodes (during parse)
  they are unknown and the outcome says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from dbt.cli.main import dbtRunner
from prefect.runtime import flow_run

from dbtflow.request import Step

Engine = Literal["fast", "prefect-dbt"]
EventListener = Callable[[Any], None]
event_listeners: ContextVar[tuple[EventListener, ...]] = ContextVar("dbtflow_event_listeners", default=())
NO_PREPARSE = frozenset({"deps", "parse"})
T = TypeVar("T")
DRIVER_ERROR = re.compile(r"\d{3,6} \(\w{5}\): ")  # DB-API drivers' "errno (sqlstate): message"


@dataclass(frozen=True)
class StepPaths:
    project_dir: Path
    profiles_dir: Path
    target_path: Path
    log_path: Path

    def argv(self) -> list[str]:
        return [
            "--project-dir", str(self.project_dir),
            "--profiles-dir", str(self.profiles_dir),
            "--target-path", str(self.target_path),
            "--log-path", str(self.log_path),
        ]  # fmt: skip


@dataclass(frozen=True)
class ParseInfo:
    partial: bool
    seconds: float
    reason: str | None = None

    def __str__(self) -> str:
        kind = "partial" if self.partial else "full"
        return f"{kind} parse in {self.seconds:.1f} s" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class Interrupted:
    """A step stopped from outside: why, the nodes running then, the selected nodes that never started."""

    reason: str
    running: tuple[str, ...] = ()  # "<resource_type> <name>"
    not_started: tuple[str, ...] | None = None  # None: dbt had not selected its nodes yet


@dataclass(frozen=True)
class StepOutcome:
    step: Step
    success: bool
    error: str | None = None
    parse: ParseInfo | None = None
    reporting: tuple[str, ...] = ()
    interrupted: Interrupted | None = None


class Stopper:
    """Stops the dbt invocation of a run from another thread, the way Ctrl-C stops dbt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self.reason: str | None = None
        self._names: dict[str, str] = {}
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._running_at_stop: set[str] = set()
        self._selected: dict[str, str] | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def begin_step(self) -> None:
        with self._lock:
            self._started.clear()
            self._finished.clear()
            self._running_at_stop.clear()
            self._selected = None

    def on_event(self, event: Any) -> None:
        """A dbt event callback (dbt's threads): records node starts and ends, nothing else."""
        name = event.info.name
        if name != "NodeStart" and name != "NodeFinished":
            return
        info = event.data.node_info
        with self._lock:
            self._names[info.unique_id] = f"{info.resource_type} {info.node_name}"
            if name == "NodeStart":
                self._started.add(info.unique_id)
                if self.reason is not None:  # started in the moment between the stop and dbt seeing it
                    self._running_at_stop.add(info.unique_id)
            else:
                self._finished.add(info.unique_id)

    def quiet(self, callback: EventListener) -> EventListener:
        """`callback` without dbt's traceback of the KeyboardInterrupt once stopped (a stop is no crash)."""

        def listener(event: Any) -> None:
            if self.reason is None or event.info.name not in ("MainEncounteredError", "MainStackTrace"):
                callback(event)

        return listener

    def call(self, invoke: Callable[[], T]) -> T | None:
        """`invoke()` (a dbt invocation) on this thread, stoppable; None when stopped before it ran."""
        with self._lock:
            if self.reason is not None:
                return None
            self._thread = threading.get_ident()
        try:
            result = invoke()
        except KeyboardInterrupt:
            if self.reason is None:
                raise  # a real Ctrl-C
            return None
        finally:
            with self._lock:
                self._thread = None
                if self.reason is not None:
                    _async_raise(threading.get_ident(), None)  # drop the stop if it is still pending
        self._find_selected(getattr(result, "exception", None))
        return result

    def stop(self, reason: str) -> None:
        """Stop now (any thread, once): KeyboardInterrupt in dbt's thread, then cancel the warehouse queries."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self._running_at_stop = self._started - self._finished
            if self._thread is not None:
                _async_raise(self._thread, KeyboardInterrupt)
        cancel_queries()

    def interrupted(self) -> Interrupted | None:
        if self.reason is None:
            return None
        with self._lock:
            running = tuple(sorted(self._names.get(u, u) for u in self._running_at_stop))
            selected = self._selected
            not_started = (
                None if selected is None else tuple(sorted(n for u, n in selected.items() if u not in self._started))
            )
        return Interrupted(self.reason, running, not_started)

    def _find_selected(self, exc: BaseException | None) -> None:
        """The nodes dbt selected, from its task on the KeyboardInterrupt's traceback."""
        if not isinstance(exc, KeyboardInterrupt):
            return
        tb = exc.__traceback__
        while tb is not None:
            task = tb.tb_frame.f_locals.get("self")
            nodes = getattr(task, "_flattened_nodes", None)
            if nodes is not None:
                with contextlib.suppress(Exception), self._lock:
                    self._selected = {
                        n.unique_id: f"{n.resource_type} {n.name}"
                        for n in nodes
                        if not getattr(n, "is_ephemeral_model", False)
                    }
                return
            tb = tb.tb_next


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in another thread at its next bytecode (None: drop a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def cancel_queries() -> None:
    """Cancel the warehouse queries dbt's connections are running, through each adapter."""
    try:
        from dbt.adapters.factory import FACTORY

        adapters: list[Any] = list(FACTORY.adapters.values())
    except Exception:
        return
    for adapter in adapters:
        with contextlib.suppress(Exception):  # best effort: the step is ending anyway
            adapter.cancel_open_connections()


def release_connections() -> None:
    """Close every warehouse connection dbt holds in this process, once no dbt runs.

    dbt-duckdb keeps its database open between invocations (`keep_open`, the default), which
    holds the file's lock for the life of the process; a run must not leave it held.
    """
    try:
        from dbt.adapters.factory import FACTORY

        adapters: list[Any] = list(FACTORY.adapters.values())
    except Exception:
        return
    for adapter in adapters:
        with contextlib.suppress(Exception):
            adapter.cleanup_connections()
        manager = type(adapter.connections)
        environment = getattr(manager, "_ENV", None)  # dbt-duckdb's process-wide database
        if environment is not None:
            with contextlib.suppress(Exception):
                manager.close_all_connections()
                environment.close()


def run_step(
    step: Step, paths: StepPaths, engine: Engine = "fast", index: int = 0, stopper: Stopper | None = None
) -> StepOutcome:
    os.environ["DBTFLOW_PROJECT_DIR"] = str(paths.project_dir)
    stopper = stopper or Stopper()
    stopper.begin_step()
    token = event_listeners.set((*event_listeners.get(), stopper.on_event))
    try:
        if engine == "prefect-dbt":
            outcome = _run_prefect_dbt(step, paths, stopper)
        else:
            outcome = _run_fast(step, paths, index, stopper)
    except KeyboardInterrupt:
        if not stopper.stopped:
            raise
        outcome = StepOutcome(step, success=False)
    finally:
        event_listeners.reset(token)
    interrupted = stopper.interrupted()
    if interrupted is not None:
        outcome = replace(outcome, success=False, error=f"stopped: {interrupted.reason}", interrupted=interrupted)
    return outcome


def _run_fast(step: Step, paths: StepPaths, index: int, stopper: Stopper) -> StepOutcome:
    from dbtflow.reporter import NodeReporter

    reporter = NodeReporter(flow_run.id, flow_run.name, index) if flow_run.id else None
    callbacks = list(event_listeners.get())
    if reporter is not None:
        callbacks.append(stopper.quiet(reporter.on_event))
        reporter.start()
    quiet = ["--log-level", "none", "--log-level-file", "debug"]  # console off (the reporter logs), dbt.log as usual
    try:
        outcome = _invoke_parsed(step, [*paths.argv(), *quiet], callbacks, reporter, stopper)
    finally:
        warnings = tuple(reporter.close()) if reporter is not None else ()
    return replace(outcome, reporting=warnings)


def _invoke_parsed(
    step: Step, common: list[str], callbacks: list[EventListener], reporter: Any, stopper: Stopper
) -> StepOutcome:
    manifest, parse = None, None
    if step.command not in NO_PREPARSE:
        manifest, parse, error = _parse(step, common, callbacks, stopper)
        if manifest is None:
            return StepOutcome(step, success=False, error=error, parse=parse)
        if reporter is not None:
            reporter.set_manifest(manifest)
    runner = dbtRunner(manifest=manifest, callbacks=callbacks)
    result = stopper.call(lambda: runner.invoke([*step.argv, *common]))
    if result is None:
        return StepOutcome(step, success=False, parse=parse)
    error = _first_line(str(result.exception)) if result.exception else None
    return StepOutcome(step, success=bool(result.success), error=error, parse=parse)


def _parse(
    step: Step, common: list[str], callbacks: list[EventListener], stopper: Stopper
) -> tuple[Any, ParseInfo, str | None]:
    """`dbt parse` with the step's target and vars; returns (manifest, how it parsed, error)."""
    seen: dict[str, str] = {}

    def probe(event: Any) -> None:
        name = event.info.name
        if name in ("UnableToPartialParse", "PartialParsingNotEnabled", "PartialParsingEnabled",
                    "PartialParsingSkipParsing"):  # fmt: skip
            seen[name] = getattr(event.data, "reason", "") or ""

    globals_ = []
    for flag in ("--target", "--vars", "--threads"):
        if flag in step.argv:
            globals_ += [flag, step.argv[step.argv.index(flag) + 1]]
    started = time.perf_counter()
    runner = dbtRunner(callbacks=[probe, *callbacks])
    result = stopper.call(lambda: runner.invoke(["parse", *globals_, *common]))
    seconds = time.perf_counter() - started
    full = "UnableToPartialParse" in seen or "PartialParsingNotEnabled" in seen or not seen
    reason = seen.get("UnableToPartialParse") or (
        "partial parsing is off" if "PartialParsingNotEnabled" in seen else None
    )
    info = ParseInfo(partial=not full, seconds=seconds, reason=reason)
    if result is None:
        return None, info, "stopped"
    if not result.success:
        return None, info, _first_line(str(result.exception or "dbt parse failed"))
    return result.result, info, None


def _run_prefect_dbt(step: Step, paths: StepPaths, stopper: Stopper) -> StepOutcome:
    from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

    class Runner(PrefectDbtRunner):
        """PrefectDbtRunner that also hands every dbt event to our listeners."""

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
        return StepOutcome(step, success=False, error=_first_line(str(exc)))
    if result is None:
        return StepOutcome(step, success=False)
    error = _first_line(str(result.exception)) if result.exception else None
    return StepOutcome(step, success=bool(result.success), error=error)


def _first_line(text: str) -> str:
    """dbt's first lines say what it was doing; a driver's error (`390144 (28000): ...`) nested below says why."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = [line for line in lines[3:] if DRIVER_ERROR.match(line)][-1:]
    return " ".join(lines[:3] + cause)[:500] if lines else "dbt failed without a message"
