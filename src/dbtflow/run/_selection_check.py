"""Selection check: refuse a request whose building step selects no node, by dbt's own selector.

Contract
- `SelectionCheck(project)` is a context manager; `check(where, request)` raises `UserError`
  (one line naming `where`, the step and how to fix it) when a building step of `request` that
  selects (`--select`, `--exclude`, `--selector`) lists no node its command would run. "Lists"
  is dbt's own answer: `dbt ls` through dbtRunner with the step's selection options and the
  command's resource types, on a manifest parsed once per `SelectionCheck` (the first `check`
  that needs it runs `dbt parse`; later ones reuse the manifest, ~0.1 s per step).
- The parse uses the profile's default target (profiles.yml `target:`, else its first), its
  block references resolved as for a run (`secrets._profiles.resolved_profiles`), dbt's working
  folder the project's (as `run._invoke` runs it), artifacts in a temporary folder removed after.
- A parse that fails is a `UserError` ("cannot check the selections: dbt parse failed: ..."):
  the caller asked for the check, so nothing is written unchecked.
- Not checked (dbt cannot answer without what the run has): `retry` steps and steps with
  `--state`/`--defer`, or a `state:`/`result:`/`source_status:` selection.

Pitfalls
- Nodes are those of the default target without the job's vars: a model enabled only on
  another target or by a var (`enabled: var(...)`) is not seen; say so rather than parse per job.
- `dbt ls` lists ephemeral models; a `dbt run` that selects only ephemeral ones passes here.
- Imports dbt on first use (`# lazy:`) so the CLI commands that take this module stay fast
  when no project is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, chdir, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from dbtflow.dbt._commands import OPTIONS
from dbtflow.dbt._project import Project
from dbtflow.dbt._selection import COMMAND_TYPES
from dbtflow.errors import UserError
from dbtflow.run._request import RunRequest, Step
from dbtflow.secrets._env_names import environment
from dbtflow.secrets._profiles import resolved_profiles
from dbtflow.settings import PROJECT_DIR

PASSED = ("--select", "--exclude", "--selector", "--indirect-selection", "--exclude-resource-type")
SELECTING = ("--select", "--exclude", "--selector")
NEEDS_STATE = ("state:", "result:", "source_status:")
NO_MATCH = "does not match any enabled nodes"  # dbt's NoNodesForSelectionCriteria
QUIET = ["--log-level", "none", "--log-level-file", "none", "--no-write-json"]


class SelectionCheck:
    """dbt's `ls` over one parsed manifest, for every request a command validates."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.target = project.default_target or (project.targets[0] if project.targets else "")
        self._stack = ExitStack()
        self._manifest: Any = None
        self._common: list[str] = []

    def __enter__(self) -> SelectionCheck:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def check(self, where: str, request: RunRequest) -> None:
        """Raise UserError when a building step of `request` selects no node.

        Args:
            where: what the request is, for the message (`schedule 'daily'`, `job 12 'Nightly'`).
            request: the validated request.

        Raises:
            UserError: one line naming `where` and the step, or saying why dbt could not parse.
        """
        for step in request.steps:
            argv = ls_argv(step)
            if argv is None:
                continue
            if not self._listed(argv):
                raise UserError(
                    f"{where}: step `{step}` selects no node in {self.project.project_dir} "
                    "(dbt ls lists none): fix the selection (a typo?) or remove the step"
                )

    def _listed(self, argv: list[str]) -> bool:
        # lazy: dbt takes seconds to import; only a command given --project-dir pays for it
        from dbt.cli.main import dbtRunner

        with _in_project(self.project.project_dir):
            if self._manifest is None:
                self._manifest = self._parse(dbtRunner)
            result = dbtRunner(manifest=self._manifest).invoke([*argv, *self._common])
        if not result.success and NO_MATCH in str(result.exception):  # the project's warn_error made it an error
            return False
        if not result.success:
            raise UserError(f"cannot check the selection `{' '.join(argv)}`: dbt ls failed: {_line(result.exception)}")
        return bool(result.result)

    def _parse(self, runner: Any) -> Any:
        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="dbtflow-selection-")))
        profiles = self._stack.enter_context(resolved_profiles(self.project, self.target))
        self._common = [
            *("--project-dir", str(self.project.project_dir), "--profiles-dir", str(profiles)),
            *("--target-path", str(folder), "--log-path", str(folder), "--target", self.target, *QUIET),
        ]
        result = runner().invoke(["parse", *self._common])
        if not result.success:
            raise UserError(
                f"cannot check the selections: dbt parse of {self.project.project_dir} on target "
                f"{self.target!r} failed: {_line(result.exception)}"
            )
        return result.result


def ls_argv(step: Step) -> list[str] | None:
    """`dbt ls` with the step's selection and its command's resource types; None: not a step to check."""
    if step.command not in COMMAND_TYPES:  # not building, or `retry`
        return None
    options = _options(step)
    values = [v for name in SELECTING for v in options.get(name, [])]
    if not any(name in options for name in SELECTING) or "--state" in options or "--defer" in options:
        return None
    if any(v.lstrip("@+0123456789").startswith(NEEDS_STATE) for v in values):
        return None
    types = set(COMMAND_TYPES[step.command])
    chosen = set(options.get("--resource-type", [])) - {"all", "default"}
    types = types & chosen if chosen else types
    argv = ["ls"]
    for name in PASSED:
        if name in options:
            argv += [name, *options[name]]
    for kind in sorted(types):
        argv += ["--resource-type", kind]
    return argv


def _options(step: Step) -> dict[str, list[str]]:
    """The step's argv as {option: values} (`_request._assemble` writes `name, *values`)."""
    options: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in step.argv[len(step.command.split()) :]:
        if token in OPTIONS or token == "--target":
            current = options.setdefault(token, [])
        elif current is not None:
            current.append(token)
    return options


@contextmanager
def _in_project(project_dir: Path) -> Iterator[None]:
    """The working folder and DBTFLOW_PROJECT_DIR are the project's while dbt runs (as in `run._invoke`)."""
    with chdir(project_dir), environment({PROJECT_DIR: str(project_dir)}):
        yield


def _line(exc: object) -> str:
    return (str(exc or "no reason given").strip().splitlines() or ["no reason given"])[0]
