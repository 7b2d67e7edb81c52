"""RunOutcome: what a run did, per step and per node, from dbt's own artifacts.

Contract
- `RunOutcome` collects each step's `StepOutcome` (defined here, returned by invoke) and `StepArtifacts` (from
  artifacts) and answers the questions a person asks of a run: did it fail, which nodes
  failed and why, which were skipped because of which failure, what warned.
- `message` is the flow state's message: it names the failing nodes and their errors in one
  paragraph, bounded in length, so it reads well in the Prefect UI and in a notification.
- On a flow retry (`attempt` > 1), `earlier` holds the steps earlier attempts ran; `steps`,
  `failures` and `skipped` are this attempt's, and `latest_results` / `counts` are the run's
  (each node's latest result over every attempt), so a retry that fixes the failures reads as
  a success that says how many nodes it reran. `built_by_attempt` says which attempt built which node.
- `counts` and the success message count each node once, over every step: a `seed` then a
  `build` step ran each seed twice, but the run has one result per seed (the later one).

Pitfalls
- A step can fail with no node failed (parse error, connection error): its error text is then
  the reason. A timed-out run's message starts with what the stop cut short: the nodes that
  were running, the selected nodes that never started, the steps that never started; a run
  stopped by SIGINT or SIGTERM (`signalled`) says the same, as "stopped by SIGTERM", and is
  cancelled (`cancelled`), not failed by dbt.
- A skipped node's causes (`failed_ancestors`) are its nearest failed ancestors and the failed
  tests on its ancestors: under `dbt build` a failing test on a source skips the models that
  select from it, and the test is no ancestor of theirs (dbt's build graph adds that edge).
  A non-fatal step (source freshness, docs generate added by the job settings) never fails
  the run; its problems are warnings.
- A building step whose selection matched no node succeeds in dbt ("Nothing to do"); `unmatched`
  names it and the success message ends with a warning, so a schedule with a typo in its
  selection does not stay green unnoticed.
- Pure: no Prefect, no dbt, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dbtflow.dbt._artifacts import NodeResult, StepArtifacts

if TYPE_CHECKING:  # types only: invoke and stopper import dbt
    from dbtflow.run._request import Step
    from dbtflow.run._stopper import Interrupted

MAX_IN_MESSAGE = 5
SELECTING = ("--select", "--exclude", "--selector")
MAX_NAMES = 5


@dataclass(frozen=True)
class ParseInfo:
    partial: bool
    seconds: float
    reason: str | None = None

    def __str__(self) -> str:
        kind = "partial" if self.partial else "full"
        return f"{kind} parse in {self.seconds:.1f} s" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class StepOutcome:
    step: Step
    success: bool
    error: str | None = None
    parse: ParseInfo | None = None
    reporting: tuple[str, ...] = ()
    interrupted: Interrupted | None = None
    task_runs: int = 0  # the Prefect task runs the step created (its engine's count)


@dataclass
class StepReport:
    index: int
    outcome: StepOutcome
    artifacts: StepArtifacts
    attempt: int = 1
    reason: str | None = None  # why an automatic step (`dbt deps` first) ran
    seconds: float | None = None  # the step's wall time in the flow (dbt's elapsed_time excludes parsing)

    @property
    def command(self) -> str:
        return self.outcome.step.command

    @property
    def failed(self) -> bool:
        return not self.outcome.success

    def skipped_because(self, result: NodeResult) -> list[str]:
        """The failed ancestors of a skipped node, from the manifest's parent map."""
        failed = {r.unique_id for r in self.artifacts.results if r.failed}
        return failed_ancestors(result.unique_id, lambda uid: self.artifacts.parent_map.get(uid, []), failed)


@dataclass
class RunOutcome:
    target: str
    steps: list[StepReport] = field(default_factory=list)
    timed_out: bool = False
    signalled: str | None = None  # "SIGINT" / "SIGTERM": the signal that stopped dbt
    steps_not_started: list[str] = field(default_factory=list)  # after a timeout or a signal
    stop_warning: str | None = None  # dbt did not stop in time after a timeout or a signal
    stop_seconds: float | None = None  # how long dbt took to stop after a timeout or a signal
    attempt: int = 1  # the flow run's attempt (Prefect's run_count)
    earlier: list[StepReport] = field(default_factory=list)  # steps earlier attempts ran
    storage_problem: str | None = None  # the run's folder could not take its artifacts (a full disk)

    @property
    def results(self) -> list[NodeResult]:
        return [r for s in self.steps for r in s.artifacts.results]

    @property
    def failed_steps(self) -> list[StepReport]:
        return [s for s in self.steps if s.failed and s.outcome.step.fatal]

    @property
    def stopped(self) -> bool:
        """Stopped from outside: a timeout or a signal."""
        return self.timed_out or self.signalled is not None

    @property
    def status(self) -> str:
        """run.json's status: completed, failed, timed_out or cancelled (a signal)."""
        if self.signalled is not None:
            return "cancelled"
        return "timed_out" if self.timed_out else ("failed" if self.failed else "completed")

    @property
    def failed(self) -> bool:
        return self.stopped or bool(self.failed_steps)

    @property
    def failures(self) -> list[NodeResult]:
        return [r for s in self.steps if s.outcome.step.fatal for r in s.artifacts.results if r.failed]

    @property
    def warnings(self) -> list[NodeResult]:
        nonfatal = [r for s in self.steps if not s.outcome.step.fatal for r in s.artifacts.results if r.failed]
        return [r for r in self.results if r.status == "warn"] + nonfatal

    @property
    def unmatched(self) -> list[str]:
        """Building steps with a selection that matched no node: green in dbt, most likely a typo."""
        return [
            str(s.outcome.step)
            for s in self.steps
            if s.outcome.step.builds
            and s.outcome.success
            and not s.artifacts.results
            and any(flag in s.outcome.step.argv for flag in SELECTING)
        ]

    def unmatched_line(self) -> str:
        steps = ", ".join(f"`{s}`" for s in self.unmatched)
        return f"warning: the selection of {steps} matched no node; check it for a typo (`dbt ls` lists what matches)"

    @property
    def skipped(self) -> list[NodeResult]:
        return [r for r in self.results if r.status == "skipped"]

    def latest_results(self) -> list[NodeResult]:
        """Every node's latest result over every step and attempt, each node once.

        A node two steps ran (`seed` then `build`) counts once, with the later result; a step that
        builds nothing (`compile`, `docs generate`: every node `success`) never hides a building one's.
        """
        latest: dict[str, NodeResult] = {}
        for step in [*self.earlier, *self.steps]:
            for result in step.artifacts.results:
                if result.unique_id in latest and not step.outcome.step.builds:
                    continue
                latest.pop(result.unique_id, None)
                latest[result.unique_id] = result
        return list(latest.values())

    def built_by_attempt(self) -> dict[int, list[NodeResult]]:
        """attempt -> the nodes whose latest result (success, pass, warn) came from it, building steps only."""
        latest: dict[str, tuple[int, NodeResult]] = {}
        for step in [*self.earlier, *self.steps]:
            if step.outcome.step.builds:
                for result in step.artifacts.results:
                    latest[result.unique_id] = (step.attempt, result)
        built: dict[int, list[NodeResult]] = {}
        for attempt, result in latest.values():
            if result.status in ("success", "pass", "warn") and result.resource_type != "operation":
                built.setdefault(attempt, []).append(result)
        return built

    def counts(self) -> Counter[tuple[str, str]]:
        """(resource_type, status) -> number of nodes, over every step (each node's latest, after a retry)."""
        return Counter((r.resource_type, r.status) for r in self.latest_results())

    @property
    def message(self) -> str:
        if not self.failed:
            counts = Counter(r.status for r in self.latest_results())
            parts = [f"{n} {status}" for status, n in sorted(counts.items())]
            rerun = ""
            if self.earlier:
                count = len(
                    {
                        r.unique_id
                        for s in self.steps
                        if s.outcome.step.builds
                        for r in s.artifacts.results
                        if r.resource_type != "operation"  # hooks run on every attempt
                    }
                )
                rerun = f" (attempt {self.attempt} reran {count} node(s))"
            unmatched = f"; {self.unmatched_line()}" if self.unmatched else ""
            return f"dbt on {self.target}: " + (", ".join(parts) or "no nodes ran") + rerun + unmatched
        reasons = [f"{r.resource_type} {r.name} {r.status}: {_short(r.message)}" for r in self.failures]
        for step in self.failed_steps:
            if not any(r.failed for r in step.artifacts.results) and step.outcome.interrupted is None:
                reasons.append(f"dbt {step.command} failed: {_short(step.outcome.error)}")
        if self.stopped:
            reasons.insert(0, self.stopped_line())
        more = len(reasons) - MAX_IN_MESSAGE
        text = "; ".join(reasons[:MAX_IN_MESSAGE]) + (f"; and {more} more" if more > 0 else "")
        if self.signalled is not None:
            return f"dbt on {self.target} {text}"
        skipped = f" ({len(self.skipped)} skipped)" if self.skipped else ""
        return f"dbt on {self.target} failed{skipped}: {text}"

    def stopped_line(self) -> str:
        """What a timeout or a signal cut short, in one line: running nodes, nodes and steps that never started."""
        parts = []
        for step in self.steps:
            stopped = step.outcome.interrupted
            if stopped is None:
                continue
            if stopped.running:
                parts.append(f"stopped {_names(stopped.running)} while running")
            if stopped.not_started is None:
                parts.append(f"dbt {step.command} stopped before it selected its nodes")
            elif stopped.not_started:
                parts.append(f"never started {_names(stopped.not_started)}")
        if self.steps_not_started:
            parts.append("never started step(s) " + ", ".join(f"`{s}`" for s in self.steps_not_started))
        if self.stop_warning:
            parts.append(self.stop_warning)
        what = f"stopped by {self.signalled}" if self.signalled is not None else "timed out"
        return what + (f" ({'; '.join(parts)})" if parts else "")


def _names(names: tuple[str, ...] | list[str]) -> str:
    more = len(names) - MAX_NAMES
    return ", ".join(names[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def failed_ancestors(unique_id: str, parents: Callable[[str], Iterable[str]], failed: Collection[str]) -> list[str]:
    """The failures that made dbt skip a node: its nearest failed ancestors, and the failed tests on its ancestors.

    A walk up `parents` stops at each failed node. `dbt build` also runs a node's data tests
    before its children (a failing test on a source or a model skips what selects from it), and
    a model's unit tests before the model: those tests are no ancestors, and are found by their
    own parents. A hook (`operation`) is skipped after a failed hook: the failed hooks are its causes.
    """
    if unique_id.startswith("operation."):
        return sorted(uid for uid in failed if uid.startswith("operation."))
    causes: set[str] = set()
    seen: set[str] = set()
    stack = list(parents(unique_id))
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen.add(uid)
        if uid in failed:
            causes.add(uid)
        else:
            stack.extend(parents(uid))
    for test in failed:
        kind = test.split(".", 1)[0]
        before = {"test": seen, "unit_test": {unique_id, *seen}}.get(kind, set())  # what the test runs before
        if before.intersection(parents(test)):
            causes.add(test)
    return sorted(causes)


def _short(text: str | None, limit: int = 300) -> str:
    flat = " ".join((text or "no message").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
