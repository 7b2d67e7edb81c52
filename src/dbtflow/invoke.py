"""Invocation: run one dbt step in-process and say how it went.

Contract
- `run_step(step, paths)` runs dbt Core in this process through prefect-dbt's
  `PrefectDbtRunner` (inside a flow run it mirrors each node as a Prefect task) and returns a
  `StepOutcome`: dbt's success flag and, when dbt could not even start its nodes (a parse or
  compile error, a connection failure), the error text. Node results come from the
  run_results.json dbt writes, read by `dbtflow.artifacts`, not from here.
- dbt's event stream is also offered to the listeners in `event_listeners` (the CLI's
  progress bar); a listener must only record, never block, since it runs on dbt's threads.
- The dbt argv is a list; the paths dbtflow owns are appended here: project, resolved
  profiles, a per-target target path (so dev and prod never share partial-parse state or
  run_results) and the run's own log folder.

Pitfalls
- `PrefectDbtRunner.invoke` raises ValueError when dbt returns an exception (parse error...);
  that is an outcome here, not a crash.
- dbt-duckdb resolves a relative database path against the process cwd; profiles can use
  `env_var('DBTFLOW_PROJECT_DIR')`, which is set to the project folder before each step.
- Must not talk to the Prefect API itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

from dbtflow.request import Step

EventListener = Callable[[Any], None]
event_listeners: ContextVar[tuple[EventListener, ...]] = ContextVar("dbtflow_event_listeners", default=())


@dataclass(frozen=True)
class StepPaths:
    project_dir: Path
    profiles_dir: Path
    target_path: Path
    log_path: Path


@dataclass(frozen=True)
class StepOutcome:
    step: Step
    success: bool
    error: str | None = None


class _Runner(PrefectDbtRunner):
    """PrefectDbtRunner that also hands every dbt event to our listeners."""

    def __init__(self, listeners: tuple[EventListener, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listeners = listeners

    def _create_unified_callback(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        inner = super()._create_unified_callback(*args, **kwargs)
        listeners = self._listeners

        def callback(event: Any) -> None:
            for listener in listeners:
                with contextlib.suppress(Exception):  # a listener never breaks dbt
                    listener(event)
            inner(event)

        return callback


def run_step(step: Step, paths: StepPaths) -> StepOutcome:
    os.environ["DBTFLOW_PROJECT_DIR"] = str(paths.project_dir)
    settings = PrefectDbtSettings(
        project_dir=paths.project_dir,
        profiles_dir=paths.profiles_dir,
        target_path=paths.target_path,
    )
    runner = _Runner(event_listeners.get(), settings=settings, raise_on_failure=False)
    argv = [*step.argv, "--log-path", str(paths.log_path)]
    try:
        result = runner.invoke(argv)
    except ValueError as exc:
        return StepOutcome(step, success=False, error=_first_line(str(exc)))
    error = _first_line(str(result.exception)) if result.exception else None
    return StepOutcome(step, success=bool(result.success), error=error)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:3])[:500] if lines else "dbt failed without a message"
