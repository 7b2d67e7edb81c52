"""ArtifactSet: one run's artifacts for parity, from the step(s) that built.

Contract
- `load_artifact_set(path, label)` accepts a folder that is either one dbt step (manifest.json
  + run_results.json, e.g. a `target/` folder or a single downloaded step) or a run folder of
  step sub-folders (`01-source-freshness/`, `02-build/`, `03-docs-generate/`: dbtflow's run
  store, or a dbt Cloud run downloaded step by step), with an optional `run.json`.
  `artifact_set_from_json(manifest, run_results, label)` does the same for documents already in
  memory. Both return an `ArtifactSet`: the results of the steps that built (build, run, test,
  seed, snapshot, retry; later steps win for a node run twice), the manifest of the last of
  them, each building step's selection, and every step with whether it was used and why not.
  Its `env_vars` are run.json's (`name -> value`, null for a secret): the variables dbtflow's
  run set for dbt, or those dbt Cloud's job defines (written by `dbtflow parity --cloud-run/-job`);
  None when the folder does not record them.
  Its `target` is run.json's `target` (dbtflow's run store), else the `--target` in the
  building steps' run_results `args`, else None (a dbt Cloud download rarely names one).
- `resolve_run(runs_dir, run_id)` finds a stored Prefect flow run's folder; `latest` is the
  run whose run.json was written last.
- Bad input (missing folder or files, non-JSON or truncated artifacts, unsupported schema
  versions, no building step) raises `ParityInputError`: one line, the CLI exits 2.

Pitfalls
- compile and docs generate write run_results with every node `success`; they are never used,
  and a single-step folder holding one of them is refused rather than compared.
- A step's command comes from run.json, else the folder name (`NN-<cmd>`), else run_results
  `args.which`; the chosen run_results must agree, so a mislabelled folder is not trusted.
- Only the last building step's manifest is parsed (they describe the same project);
  earlier building steps contribute their results and their selection.
- Pure: no dbt, no Prefect.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.dbt._artifacts import ArtifactError, Document, NodeResult, StepArtifacts, no_gc, step_from_json
from dbtflow.dbt._commands import BUILDING
from dbtflow.dbt._selection import Selection, evaluate
from dbtflow.errors import UserError

WHY_NOT = {
    "compile": "compiles only; its run_results mark every node success",
    "docs generate": "docs only; its run_results mark every node success",
    "source freshness": "checks source freshness, builds nothing",
    "ls": "lists nodes, builds nothing",
    "list": "lists nodes, builds nothing",
    "parse": "parses only",
    "deps": "installs packages only",
    "run-operation": "runs a macro, builds no nodes",
    "show": "previews a query, builds nothing",
    "clone": "clones relations from another environment, builds nothing",
}
_WHICH = {"generate": "docs generate", "freshness": "source freshness", "list": "ls"}


class ParityInputError(UserError):
    """Input parity cannot use; str() is one line that says what and how to fix it."""


@dataclass(frozen=True)
class StepUse:
    folder: str
    command: str
    used: bool
    why: str
    invocation: str = ""


@dataclass
class ArtifactSet:
    label: str
    source: str
    step: StepArtifacts  # the last building step: its manifest is the run's manifest
    results: dict[str, NodeResult]  # every building step's results, later steps winning
    selection: Selection  # the union of the building steps' selections
    steps: list[StepUse] = field(default_factory=list)
    flow_run_id: str | None = None
    project: str | None = None
    target: str | None = None  # the profile target it ran against, when the run says so
    env_vars: dict[str, str | None] | None = None  # run.json's: name -> value (None: a secret); None: not recorded

    @property
    def dbt_version(self) -> str | None:
        return self.step.manifest_dbt_version or self.step.dbt_version

    @property
    def used_steps(self) -> list[StepUse]:
        return [s for s in self.steps if s.used]


def load_artifact_set(path: Path, label: str) -> ArtifactSet:
    """The artifacts of the building step(s) in `path` (a step folder or a run folder).

    Args:
        path: a folder of dbt artifacts, or a run folder of dbtflow's store.
        label: which side this is (`cloud`, `prefect`), for messages.

    Returns:
        The set: the run's building steps' nodes and results, and what selected them.

    Raises:
        ParityInputError: the folder holds nothing parity can use (one line, with the fix).
    """
    with no_gc():  # millions of short-lived acyclic objects: the cyclic GC would only rescan them
        return _load(path, label)


def _load(path: Path, label: str) -> ArtifactSet:
    path = path.expanduser()
    if not path.is_dir():
        raise ParityInputError(f"{label}: {path} is not a folder; give a folder of dbt artifacts or a run folder")
    record = _run_record(path)
    if (path / "run_results.json").exists() or (path / "manifest.json").exists():
        step = _read(label, path / "manifest.json", path / "run_results.json", path)
        command = _command(step.command)
        if command not in BUILDING:
            raise ParityInputError(
                f"{label}: {path / 'run_results.json'} is from `dbt {command}` ({WHY_NOT.get(command, 'not a build')});"
                " give the artifacts of the step that built (build, run, test, seed or snapshot)"
            )
        return _assemble(label, str(path), [step], [StepUse(path.name, command, True, "built")], record)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and (re.match(r"\d+-", p.name) or _has_artifacts(p)))
    if not folders:
        raise ParityInputError(
            f"{label}: no dbt artifacts in {path}: expected manifest.json and run_results.json,"
            " or step folders like 01-build/ holding them"
        )
    commands = {s.get("folder"): s.get("command") for s in record.get("steps") or [] if isinstance(s, dict)}
    uses: list[StepUse] = []
    chosen: list[Path] = []
    for folder in folders:
        command = _command(commands.get(folder.name) or _folder_command(folder))
        if command not in BUILDING:
            uses.append(StepUse(folder.name, command, False, WHY_NOT.get(command, "not a building step")))
        elif not (folder / "run_results.json").exists():
            uses.append(
                StepUse(folder.name, command, False, "no run_results.json: the step ended before running nodes")
            )
        else:
            chosen.append(folder)
            uses.append(StepUse(folder.name, command, True, "built"))
    if not chosen:
        listed = ", ".join(f"{u.folder} ({u.command}: {u.why})" for u in uses)
        raise ParityInputError(f"{label}: no step in {path} built anything: {listed}")
    # only the last building step's manifest is read: the steps of one run share the project
    steps = [_read(label, f / "manifest.json" if f == chosen[-1] else None, f / "run_results.json", f) for f in chosen]
    for folder, step in zip(chosen, steps, strict=True):
        if _command(step.command) not in BUILDING:
            raise ParityInputError(
                f"{label}: {folder.name}/run_results.json is from `dbt {_command(step.command)}`, not a building"
                " step; the run folder is inconsistent: fetch the run's artifacts again"
            )
    return _assemble(label, str(path), steps, uses, record)


def artifact_set_from_json(manifest: Document, run_results: Document, label: str, source: str = "") -> ArtifactSet:
    """An ArtifactSet from one building step's documents (paths, bytes, text or dicts)."""
    with no_gc():
        step = _read(label, manifest, run_results)
    command = _command(step.command)
    if command not in BUILDING:
        raise ParityInputError(f"{label}: the run_results are from `dbt {command}` ({WHY_NOT.get(command, '')})")
    use = StepUse(source or "documents", command, True, "built")
    with no_gc():
        return _assemble(label, source or "documents", [step], [use], {})


def resolve_run(runs_dir: Path, run_id: str) -> Path:
    """A stored flow run's folder under `runs_dir`; `latest` is the most recently written run.json."""
    runs_dir = runs_dir.expanduser()
    runs = [p.parent for p in runs_dir.glob("*/run.json")] if runs_dir.is_dir() else []
    if not runs:
        raise ParityInputError(f"no stored runs in {runs_dir}: run `dbtflow run` first, or pass --runs-dir")
    if run_id == "latest":
        return max(runs, key=lambda p: (p / "run.json").stat().st_mtime)
    folder = runs_dir / run_id
    if folder in runs:
        return folder
    recent = sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)[:5]
    raise ParityInputError(
        f"no run {run_id} in {runs_dir}; the latest are: {', '.join(p.name for p in recent)} (or pass latest)"
    )


def _assemble(
    label: str, source: str, steps: list[StepArtifacts], uses: list[StepUse], record: dict[str, Any]
) -> ArtifactSet:
    last = steps[-1]
    results: dict[str, NodeResult] = {}
    for step in steps:
        for result in step.results:
            node = last.nodes.get(result.unique_id)
            if node and node.resource_type != result.resource_type:  # typed from this step's own (absent) manifest
                result = dataclasses.replace(result, resource_type=node.resource_type, name=node.name)
            elif node and result.name != node.name:
                result = dataclasses.replace(result, name=node.name)
            results[result.unique_id] = result
    selections = [_selection_of(step, last) for step in steps]
    used = iter(selections)
    uses = [dataclasses.replace(u, invocation=next(used).text) if u.used else u for u in uses]
    if len(steps) > 1:  # `dbt retry` re-runs part of the step before it: that step's selection covers it
        selections = [s for s, step in zip(selections, steps, strict=True) if step.command != "retry"]
    return ArtifactSet(
        label=label,
        source=source,
        step=last,
        results=results,
        selection=_union(selections),
        steps=uses,
        flow_run_id=record.get("flow_run_id"),
        project=record.get("project") or _project(last),
        target=_target(record, steps),
        env_vars=_env_vars(record),
    )


def _selection_of(step: StepArtifacts, manifest: StepArtifacts) -> Selection:
    """`step`'s args evaluated against `manifest`'s nodes (the run's last building step)."""
    if step is manifest:
        return evaluate(step)
    return evaluate(dataclasses.replace(manifest, args=step.args, command=step.command))


def _union(selections: list[Selection]) -> Selection:
    if len(selections) == 1:
        return selections[0]
    text = "; ".join(s.text for s in selections)
    unsupported = [s.unsupported for s in selections if s.unsupported]
    if unsupported:
        return Selection(text, None, "; ".join(unsupported))
    return Selection(text, frozenset().union(*(s.nodes or frozenset() for s in selections)))


def _read(label: str, manifest: Document | None, run_results: Document, folder: Path | None = None) -> StepArtifacts:
    try:
        return step_from_json(manifest, run_results, folder=folder)
    except ArtifactError as exc:
        raise ParityInputError(f"{label}: {exc}") from None
    except OSError as exc:
        raise ParityInputError(f"{label}: cannot read {exc.filename}: {exc.strerror}") from None


def _run_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _has_artifacts(folder: Path) -> bool:
    return (folder / "run_results.json").exists() or (folder / "manifest.json").exists()


def _folder_command(folder: Path) -> str:
    """`03-docs-generate` -> docs generate; else the run_results' own `which`."""
    name = re.sub(r"^\d+-", "", folder.name).replace("-", " ")
    known = {*BUILDING, *WHY_NOT}
    if name in known or name.replace(" ", "-") in known:
        return name if name in known else name.replace(" ", "-")
    try:
        args = json.loads((folder / "run_results.json").read_text()).get("args") or {}
    except (OSError, ValueError, AttributeError):
        return name
    return str(args.get("which") or name)


def _command(which: str | None) -> str:
    return _WHICH.get(which or "", which or "unknown")


def _target(record: dict[str, Any], steps: list[StepArtifacts]) -> str | None:
    """The run's target: run.json's (dbtflow's run store), else a `--target` the building steps' dbt args name."""
    named = record.get("target") or next((s.args.get("target") for s in reversed(steps) if s.args.get("target")), None)
    return str(named) if named else None


def _env_vars(record: dict[str, Any]) -> dict[str, str | None] | None:
    """run.json's `env_vars` (name -> value, null for a secret); None when the run did not record them."""
    found = record.get("env_vars")
    if not isinstance(found, dict):
        return None
    return {str(k): None if v is None else str(v) for k, v in found.items()}


def _project(step: StepArtifacts) -> str | None:
    if step.project_name:
        return step.project_name
    packages = Counter(n.package_name for n in step.nodes.values() if n.resource_type == "model" and n.package_name)
    return packages.most_common(1)[0][0] if packages else None
