"""Summary: a run's outcome as markdown, published to Prefect as an artifact.

Contract
- `summary_markdown(outcome, run_folder)` renders: the steps with their status, counts per
  resource type and status, after a flow retry the attempts (every step with its attempt, and
  which attempt built which node), every failure with dbt's message and where its compiled SQL is,
  skipped nodes with the failure that caused the skip, warnings, the slowest nodes, and where
  the artifacts are kept (and `stored`: where the run store holds them, or why the upload
  failed). Deterministic for a given outcome.
- `publish(outcome, run_folder, key)` creates the Prefect markdown artifact; a failure to
  publish is logged as a warning and never fails the run (observability never breaks the job).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from dbtflow.run._outcome import RunOutcome, StepReport

SLOWEST = 10
logger = logging.getLogger(__name__)


def summary_markdown(outcome: RunOutcome, run_folder: Path, stored: str | None = None) -> str:
    warned = outcome.warnings or outcome.unmatched
    status = "⚠️ Completed with warnings" if warned else "✅ Completed"
    if outcome.failed:
        status = "🛑 Cancelled" if outcome.signalled else "❌ Failed"
    lines = [f"# dbt on `{outcome.target}`: {status}", "", outcome.message, "", "## Steps", ""]
    lines += ["| # | command | result | nodes | seconds | parse |", "|---|---|---|---|---|---|"]
    for s in outcome.steps:
        result = "ok" if not s.failed else ("failed" if s.outcome.step.fatal else "failed (not fatal)")
        nodes, parse = len(s.artifacts.results), s.outcome.parse or "-"
        seconds = s.artifacts.elapsed_time or s.seconds or 0.0  # dbt deps writes no run_results: its wall time
        lines.append(f"| {s.index + 1} | `{s.outcome.step}` | {result} | {nodes} | {seconds:.1f} | {parse} |")
    lines += [
        f"\nStep {s.index + 1} ran first, automatically: {s.reason} (run with install_deps=false to skip it)."
        for s in outcome.steps
        if s.reason
    ]
    lines += _counts_table(outcome)
    if outcome.earlier:
        lines += ["", "## Attempts", "", *_attempts(outcome)]
    if outcome.stopped:
        heading = f"Stopped by {outcome.signalled}" if outcome.signalled else "Timed out"
        lines += ["", f"## {heading}", "", *_stopped(outcome)]
    if outcome.failures or outcome.failed_steps:
        lines += ["", "## Failures", ""]
        for step in outcome.steps:
            lines += _failures(step)
    if outcome.skipped:
        lines += ["", "## Skipped", ""]
        for step in outcome.steps:
            for r in step.artifacts.results:
                if r.status == "skipped" and (r.message or "").startswith("not started: "):  # a stop's
                    lines.append(f"- {r.resource_type} `{r.name}`: {r.message}")
                elif r.status == "skipped":
                    causes = ", ".join(f"`{c}`" for c in step.skipped_because(r)) or "an upstream failure"
                    lines.append(f"- {r.resource_type} `{r.name}`: skipped because of {causes}")
    if warned:
        lines += ["", "## Warnings", ""]
        lines += [f"- {r.resource_type} `{r.name}` {r.status}: {_one_line(r.message)}" for r in outcome.warnings]
        lines += [f"- step `{s}` matched no node: check its selection for a typo" for s in outcome.unmatched]
    reporting = [w for s in outcome.steps for w in s.outcome.reporting]
    if reporting:
        lines += ["", "## Reporting to Prefect", ""] + [f"- {w}" for w in reporting]
    slowest = sorted(outcome.results, key=lambda r: r.execution_time, reverse=True)[:SLOWEST]
    if slowest:
        lines += ["", "## Slowest nodes", "", "| node | status | seconds |", "|---|---|---|"]
        lines += [f"| {r.resource_type} `{r.name}` | {r.status} | {r.execution_time:.2f} |" for r in slowest]
    lines += ["", f"Artifacts and dbt.log: `{run_folder}`", ""]
    if stored:
        lines += [stored, ""]
    return "\n".join(lines)


def _attempts(outcome: RunOutcome) -> list[str]:
    lines = [f"This is attempt {outcome.attempt}; it resumed from the first failure of the attempt before.", ""]
    lines += ["| attempt | # | command | result | nodes |", "|---|---|---|---|---|"]
    for s in [*outcome.earlier, *outcome.steps]:
        result = "ok" if not s.failed else ("failed" if s.outcome.step.fatal else "failed (not fatal)")
        lines.append(f"| {s.attempt} | {s.index + 1} | `{s.outcome.step}` | {result} | {len(s.artifacts.results)} |")
    built = outcome.built_by_attempt()
    for attempt in sorted(built, reverse=True):
        nodes = sorted(built[attempt], key=lambda r: (r.resource_type, r.name))
        if attempt == 1 and attempt != outcome.attempt and len(nodes) > SLOWEST:
            lines += ["", f"Built on attempt 1: the other {len(nodes)} nodes (its step folders list them)."]
        else:
            names = ", ".join(f"{r.resource_type} `{r.name}`" for r in nodes)
            lines += ["", f"Built on attempt {attempt}: {names}."]
    return lines


def _stopped(outcome: RunOutcome) -> list[str]:
    lines: list[str] = []
    for step in outcome.steps:
        stopped = step.outcome.interrupted
        if stopped is None:
            continue
        lines.append(f"Step {step.index + 1} `{step.outcome.step}` was stopped ({stopped.reason}).")
        lines.append(f"- running when stopped: {', '.join(f'`{n}`' for n in stopped.running) or 'none'}")
        if stopped.not_started is None:
            lines.append("- never started: every node of the step (stopped before dbt selected them)")
        else:
            lines.append(f"- never started: {', '.join(f'`{n}`' for n in stopped.not_started) or 'none'}")
    if outcome.steps_not_started:
        lines.append(f"- steps never started: {', '.join(f'`{s}`' for s in outcome.steps_not_started)}")
    if outcome.stop_warning:
        lines.append(f"- {outcome.stop_warning}")
    return lines


def _counts_table(outcome: RunOutcome) -> list[str]:
    counts = outcome.counts()
    if not counts:
        return []
    statuses = sorted({status for _, status in counts})
    types = sorted({rtype for rtype, _ in counts})
    lines = ["", "## Nodes", "", "| resource type | " + " | ".join(statuses) + " |"]
    lines.append("|---" * (len(statuses) + 1) + "|")
    for rtype in types:
        lines.append(f"| {rtype} | " + " | ".join(str(counts.get((rtype, s), 0)) for s in statuses) + " |")
    return lines


def _failures(step: StepReport) -> list[str]:
    lines: list[str] = []
    failed = [r for r in step.artifacts.results if r.failed]
    for r in failed:
        where = step.artifacts.folder / "compiled"
        sql = f" Compiled SQL: `{where}` (`{r.compiled_path}`)." if r.compiled_path else ""
        lines.append(f"- **{r.resource_type} `{r.name}`** {r.status}: {_one_line(r.message)}.{sql}")
    if step.failed and not failed:
        lines.append(f"- **dbt {step.command}** failed before running nodes: {_one_line(step.outcome.error)}")
    return lines


def _one_line(text: str | None) -> str:
    return " ".join((text or "no message").split())


def publish(outcome: RunOutcome, run_folder: Path, key: str, stored: str | None = None) -> None:

    try:
        create_markdown_artifact(
            markdown=summary_markdown(outcome, run_folder, stored),
            key=key,
            description=outcome.message[:500],
        )
    except Exception as exc:  # observability never breaks the job
        logger.warning("could not publish the run summary to Prefect: %s", exc)
