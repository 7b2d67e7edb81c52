"""Attempts: what a flow retry reruns, from the previous attempt's record (dbt Cloud's "rerun from failure").

Contract
- `plan_attempt(request, folder, number)` returns the `Attempt` a flow run's attempt `number`
  (Prefect's `flow_run.run_count`) makes of `request`, from the run folder's `run.json`:
  - attempt 1, or no usable record of the previous attempt (another machine, a crash before
    its end): every step of the request;
  - after a failed attempt: the steps before its first failed fatal step are not rerun; that
    step reruns through `dbt retry` on its run_results (dbt reruns what failed or was skipped,
    with the original command's selection and vars) when it ran nodes and its command is one
    dbt can retry, else in full (no node ran: e.g. a connection error before the first node,
    so an attempt where nothing ran reruns the whole request); the steps after it run as
    planned.
- `Attempt.earlier` are the run.json entries of the steps earlier attempts ran; this attempt's
  step folders continue the run's numbering (`01-build/`, then `02-retry/` on attempt 2), so
  no attempt overwrites another's artifacts and readers that take "later steps win" (parity)
  see the final result of every node.
- `earlier_reports` reads those steps back as `StepReport`s for the summary (which attempt
  built which node).

Pitfalls
- `dbt retry` reads run_results.json from the target path: the flow copies the earlier step's
  run_results there (after clearing the target path) just before the retry step runs.
- dbt retry keeps the previous invocation's arguments (`args` in run_results) except paths;
  only `--vars` and `--threads` may be overridden, and are passed as the request had them.
- An automatic `dbt deps` step (`with_deps`, index -1) is recorded with `step: null`: when it
  failed, the next attempt plans the whole request again, and decides about deps afresh.
- A timed-out or invalid run is never retried (the flow makes that failure final), so a
  record with status `timed_out` is not planned from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dbtflow.dbt._artifacts import read_step
from dbtflow.run._outcome import StepOutcome, StepReport
from dbtflow.run._request import RunRequest, Step

# Commands `dbt retry` can rerun whose run_results list the nodes they ran.
RETRYABLE = frozenset({"build", "run", "test", "seed", "snapshot", "clone", "compile", "retry"})
_STEP_FOLDER = re.compile(r"^\d{2,}-")


@dataclass(frozen=True)
class PlannedStep:
    index: int  # the request step it stands for; -1 for an automatic step (`dbt deps` first)
    step: Step
    retry_of: Path | None = None  # the earlier step folder whose run_results `dbt retry` reads
    reason: str | None = None  # why an automatic step runs

    @property
    def automatic(self) -> bool:
        return self.index < 0


@dataclass(frozen=True)
class Attempt:
    number: int
    steps: list[PlannedStep]
    earlier: list[dict[str, Any]]  # run.json entries of the steps earlier attempts ran
    first_index: int = 0  # this attempt's first step folder is `first_index + 1`

    @property
    def resumed(self) -> bool:
        return bool(self.earlier)

    def describe(self) -> str:
        if self.number == 1:
            return "attempt 1"
        if not self.resumed:
            return f"attempt {self.number}: the whole request again (no earlier step to resume from)"
        first = self.steps[0] if self.steps else None
        how = (
            f"`dbt retry` of step {first.index + 1} (what failed or was skipped)"
            if first and first.retry_of
            else f"step {first.index + 1} in full (no results of it to retry from)"
            if first
            else "nothing"
        )
        later = len(self.steps) - 1
        return f"attempt {self.number}: {how}" + (f", then {later} later step(s)" if later > 0 else "")


def plan_attempt(request: RunRequest, folder: Path, number: int) -> Attempt:
    whole = [PlannedStep(i, s) for i, s in enumerate(request.steps)]
    first_index = _existing_step_folders(folder)
    previous = _read_record(folder / "run.json") if number > 1 else None
    if previous is None or int(previous.get("attempt") or 1) >= number or previous.get("status") != "failed":
        return Attempt(number, whole, [], first_index)
    entries = [e for e in previous.get("steps") or [] if isinstance(e, dict)]
    ran = [e for e in entries if e.get("folder")]
    last = int(previous.get("attempt") or 1)
    failed = next(
        (e for e in ran if int(e.get("attempt") or 1) == last and e.get("fatal", True) and e.get("success") is False),
        None,
    )
    index = failed.get("step") if failed else None
    if failed is None or not isinstance(index, int) or not 0 <= index < len(request.steps):
        return Attempt(number, whole, ran, first_index)
    original = request.steps[index]
    step_folder = folder / str(failed["folder"])
    if failed.get("command") in RETRYABLE and _ran_nodes(step_folder):
        first = PlannedStep(index, retry_step(original, request.target), retry_of=step_folder)
    else:
        first = PlannedStep(index, original)
    later = [PlannedStep(i, s) for i, s in enumerate(request.steps) if i > index]
    return Attempt(number, [first, *later], ran, first_index)


def with_deps(attempt: Attempt, deps: Step, reason: str) -> Attempt:
    """The attempt with `dbt deps` first, as an automatic step that stands for no request step."""
    return replace(attempt, steps=[PlannedStep(-1, deps, reason=reason), *attempt.steps])


def retry_step(original: Step, target: str) -> Step:
    """`dbt retry` standing for `original`: its vars and threads (the only overrides dbt retry takes)."""
    kept = tuple((name, value) for name, value in original.run_options if name in ("--vars", "--threads"))
    argv = ["retry", *original.options_argv("--vars", "--threads")]
    return Step("retry", [*argv, "--target", target], original.fatal, (("--target", target), *kept))


def earlier_reports(attempt: Attempt, folder: Path) -> list[StepReport]:
    reports = []
    for position, entry in enumerate(attempt.earlier):
        step = Step(str(entry.get("command")), list(entry.get("argv") or []), bool(entry.get("fatal", True)))
        outcome = StepOutcome(step, success=bool(entry.get("success")), error=entry.get("error"))
        number = _folder_number(str(entry["folder"]), position)
        artifacts = read_step(folder / str(entry["folder"]))
        reports.append(StepReport(number, outcome, artifacts, attempt=int(entry.get("attempt") or 1)))
    return reports


def _ran_nodes(step_folder: Path) -> bool:
    record = _read_record(step_folder / "run_results.json")
    return bool(record and record.get("results"))


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _existing_step_folders(folder: Path) -> int:
    """The highest step folder number in the run folder (0 when none): the next attempt continues from it."""
    if not folder.is_dir():
        return 0
    numbers = [int(p.name.split("-", 1)[0]) for p in folder.iterdir() if p.is_dir() and _STEP_FOLDER.match(p.name)]
    return max(numbers, default=0)


def _folder_number(name: str, default: int) -> int:
    digits = name.split("-", 1)[0]
    return int(digits) - 1 if digits.isdigit() else default
