"""RunRequest: a run's parameters, validated against the project, turned into dbt argv lists.

Contract
- `build_request(project, **parameters)` checks the parameters with `RunParameters.parse`
  (everything that needs no project), then against the project, and returns a `RunRequest`
  whose `steps` each carry a dbt argv (a list of strings, never a shell line), or raises
  `InvalidRequest` with one line that says what was wrong and how to fix it. Nothing here
  starts dbt or talks to Prefect, so a bad request stops before either is touched.
- Parameters apply like a dbt Cloud job's settings: `target`, `threads`, `vars` go to every
  step; `select`, `exclude`, `selector`, `full_refresh`, `fail_fast`, `state`, `defer` go to
  every step whose subcommand accepts them. `steps` replaces `command`. `source_freshness`
  adds a first step and `generate_docs` a last one; neither fails the run (as in dbt Cloud).
- `install_deps` (default on): when the project declares packages (packages.yml or
  dependencies.yml) and no step is `deps`, `RunRequest.deps_step` is the `dbt deps` the flow
  runs first if the installed packages do not match package-lock.yml (`dbtflow.dbt._packages`
  decides, at run time). A packages file that does not parse is refused here, whatever
  `install_deps` says (dbt reads it on every command).
- `run_storage` (else the env `DBTFLOW_RUN_STORAGE`) is a Prefect block slug `<type>/<name>`
  where the run's artifacts are kept (see `dbtflow.run._storage`); empty: the local runs folder.
  `state` may be `latest-success` or `latest-success:<target>`: the flow replaces it with a
  folder holding that run's manifest, fetched from the run store, before building the request.
- `env_vars` (checked by `RunParameters`) are carried as `RunRequest.env_vars` for the flow to set
  while dbt runs; a secret one's value is its Prefect Secret block's name.

Pitfalls
- Selection values are checked by `RunParameters` (see its Pitfalls); here they become tokens.
- Options inside a step string are checked against an allowlist per subcommand; paths that
  dbtflow owns (`--target-path`, `--profiles-dir`, `--project-dir`, `--log-path`) and
  `--target` (a run has exactly one target) are refused there.
- This module must not import prefect or dbt: it is imported by the CLI before either loads.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.dbt._commands import (
    ALIASED_COMMANDS,
    ALIASES,
    BUILDING,
    CHOICE,
    CHOICES,
    COMMANDS,
    FLAG,
    INT,
    MANAGED,
    MAPPING,
    NAME,
    OPTIONS,
    PATH,
    SELECTION,
    TWO_WORD,
)
from dbtflow.dbt._packages import read_spec
from dbtflow.dbt._project import Project
from dbtflow.run._parameters import (
    IDENTIFIER,
    STORE_STATE,
    InvalidRequest,
    RunParameters,
    check_block_slug,
    check_identifier,
    check_int,
    check_mapping,
    check_positive,
    check_selection,
    check_threads,
)
from dbtflow.run._storage import storage_slug
from dbtflow.secrets._masking import masked_argv


@dataclass(frozen=True)
class Step:
    """One dbt invocation: its subcommand, its argv, and whether its failure fails the run."""

    command: str
    argv: list[str]
    fatal: bool = True
    run_options: tuple[tuple[str, str], ...] = ()  # --target/--vars/--threads as given, for `dbt parse` and `retry`

    def options_argv(self, *names: str) -> list[str]:
        """The step's run-level options among `names` (e.g. `--vars`), as argv: `[name, value, ...]`."""
        return [part for name, value in self.run_options if name in names for part in (name, value)]

    @property
    def builds(self) -> bool:
        return self.command in BUILDING

    def __str__(self) -> str:
        return shlex.join(masked_argv(self.argv))  # secret-looking vars as ***** (see dbtflow.secrets._masking)


@dataclass(frozen=True)
class RunRequest:
    """A validated request: the target, the steps in order, and run-level settings."""

    project: Project
    target: str
    steps: list[Step]
    timeout_seconds: int | None = None
    engine: str = "fast"
    parameters: dict[str, Any] = field(default_factory=dict)
    on_overlap: str = "wait"
    deps_step: Step | None = None  # `dbt deps`, run first when the installed packages do not match the lock
    run_storage: str | None = None  # a Prefect storage block slug; None: the local runs folder
    env_vars: dict[str, str] = field(default_factory=dict)  # for env_var(); secret ones name their Secret block


def build_request(project: Project, **values: Any) -> RunRequest:
    """Validate a run's parameters against the project and build its steps.

    Args:
        project: the dbt project the run is for.
        **values: the run's parameters (`RunParameters`' names); missing ones take their defaults.

    Returns:
        The request: its target, its steps' dbt argv lists and the run-level settings.

    Raises:
        InvalidRequest: one line naming the first problem and how to fix it.
    """
    params = RunParameters.parse(values)
    _check_target(project, params.target)
    spec = read_spec(project.project_dir)
    job_options: dict[str, list[str]] = {}
    if params.select is not None:
        job_options["--select"] = check_selection("select", params.select)
    if params.exclude is not None:
        job_options["--exclude"] = check_selection("exclude", params.exclude)
    if params.selector is not None:
        job_options["--selector"] = [_selector_name(project, "selector", params.selector)]
    if params.full_refresh:
        job_options["--full-refresh"] = []
    if params.fail_fast:
        job_options["--fail-fast"] = []
    if params.state is not None:
        job_options["--state"] = [_state_path("state", params.state, from_store=True)]
    if params.defer:
        job_options["--defer"] = []
    if params.threads is not None:
        job_options["--threads"] = [str(params.threads)]
    if params.vars is not None:
        job_options["--vars"] = [check_mapping("vars", params.vars)]

    texts = params.steps or [params.command]
    parsed = [_parse_step(project, f"steps[{i}]" if params.steps else "command", t) for i, t in enumerate(texts)]
    if params.source_freshness:
        parsed.insert(0, ("source freshness", {}, [], False))
    if params.generate_docs:
        parsed.append(("docs generate", {}, [], False))

    _check_job_options_apply(job_options, [p[0] for p in parsed])
    built = [
        _assemble(project, params.target, cmd, opts, positionals, fatal, job_options)
        for cmd, opts, positionals, fatal in parsed
    ]
    deps = None
    if params.install_deps and spec is not None and not any(s.command == "deps" for s in built):
        deps = _assemble(project, params.target, "deps", {}, [], True, job_options)
    return RunRequest(
        project,
        params.target,
        built,
        params.timeout_seconds,
        params.engine,
        params.model_dump(),
        params.on_overlap,
        deps,
        _run_storage(params.run_storage),
        dict(params.env_vars or {}),
    )


def _run_storage(value: str | None) -> str | None:
    """The parameter, else DBTFLOW_RUN_STORAGE, checked; None: the local runs folder."""
    slug = storage_slug(value)
    return None if slug is None else check_block_slug("run_storage", slug)


def _check_target(project: Project, target: str) -> None:
    if target not in project.targets:
        known = ", ".join(project.targets) or "none"
        raise InvalidRequest(
            f"unknown target {target!r}: profile {project.profile_name!r} in "
            f"{project.profiles_path} defines {known}; pass one of them"
        )


def _parse_step(project: Project, where: str, text: str) -> tuple[str, dict[str, list[str]], list[str], bool]:
    """Split one step string into (subcommand, options, positionals, fatal)."""
    if any(c in text for c in "\n\r\x00"):
        raise InvalidRequest(f"{where} contains a line break: write one dbt command per step")
    try:
        tokens = shlex.split(text.strip().removeprefix("dbt ").strip())
    except ValueError as exc:
        raise InvalidRequest(f"{where} {text!r} cannot be split into words ({exc}): balance its quotes") from None
    cmd = ALIASED_COMMANDS.get(tokens[0], tokens[0]) if tokens else ""
    rest = tokens[1:]
    if cmd in TWO_WORD and rest and rest[0] == TWO_WORD[cmd]:
        cmd, rest = f"{cmd} {rest[0]}", rest[1:]
    if cmd not in COMMANDS:
        allowed = ", ".join(sorted(COMMANDS))
        raise InvalidRequest(f"{where}: {cmd or text!r} is not an allowed dbt command; use one of: {allowed}")

    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("-"):
            positionals.append(token)
            i += 1
            continue
        name, _, inline_value = token.partition("=")
        name = ALIASES.get(name, name)
        if name in MANAGED:
            raise InvalidRequest(f"{where}: {name} is not allowed in a step; {MANAGED[name]}")
        if name not in OPTIONS:
            raise InvalidRequest(f"{where}: unknown or unsupported option {name!r} for dbt {cmd}")
        if name not in COMMANDS[cmd]:
            raise InvalidRequest(f"{where}: dbt {cmd} does not take {name}; remove it from the step")
        if name in options:
            raise InvalidRequest(f"{where}: {name} is given twice; give it once")
        kind = OPTIONS[name]
        i += 1
        values: list[str] = [inline_value] if inline_value else []
        if kind == SELECTION and not inline_value:
            while i < len(rest) and not rest[i].startswith("-"):
                values.append(rest[i])
                i += 1
        elif kind != FLAG and not inline_value:
            if i >= len(rest):
                raise InvalidRequest(f"{where}: {name} needs a value")
            values.append(rest[i])
            i += 1
        options[name] = _check_option(project, f"{where} {name}", name, kind, values)

    if cmd == "run-operation":
        if len(positionals) != 1 or not IDENTIFIER.match(positionals[0]):
            raise InvalidRequest(
                f"{where}: run-operation takes exactly one macro name, e.g. 'run-operation grant_select'"
            )
    elif positionals:
        raise InvalidRequest(f"{where}: unexpected word {positionals[0]!r} after dbt {cmd}; select nodes with --select")
    if cmd == "show" and "--select" not in options and "--inline" not in options:
        raise InvalidRequest(f"{where}: dbt show needs --select or --inline")
    return cmd, options, positionals, True


def _check_option(project: Project, where: str, name: str, kind: str, values: list[str]) -> list[str]:
    if kind == FLAG:
        return []
    if kind == SELECTION:
        return check_selection(where, values)
    value = values[0]
    if kind == NAME:
        return [_selector_name(project, where, value) if name == "--selector" else check_identifier(where, value)]
    if kind == INT:
        number = check_int(where, value)
        return [str(check_threads(where, number) if name == "--threads" else check_positive(where, number))]
    if kind == MAPPING:
        return [check_mapping(where, value)]
    if kind == PATH:
        return [_state_path(where, value)]
    if kind == CHOICE:
        if value not in CHOICES[name]:
            raise InvalidRequest(f"{where}: {value!r} is not one of {', '.join(CHOICES[name])}")
        return [value]
    if "\x00" in value:
        raise InvalidRequest(f"{where}: contains a NUL byte")
    return [value]


def _selector_name(project: Project, where: str, name: str) -> str:
    check_identifier(where, name)
    if name not in project.selectors:
        known = ", ".join(project.selectors) or "none"
        raise InvalidRequest(f"{where}: no selector {name!r} in selectors.yml (defined: {known})")
    return name


def _state_path(where: str, value: str, from_store: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{where} must be a path to a folder of dbt artifacts")
    if from_store and STORE_STATE.match(value):  # resolved by the flow from the run store before dbt starts
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise InvalidRequest(f"{where}: {value!r} is not a folder; point it at the artifacts of a previous run")
    if not (path / "manifest.json").is_file():
        raise InvalidRequest(f"{where}: {value!r} has no manifest.json; point it at the artifacts of a previous run")
    if not _looks_whole(path / "manifest.json"):
        raise InvalidRequest(
            f"{where}: {value!r} holds a truncated or non-JSON manifest.json; "
            "copy the artifacts of a previous run again"
        )
    return str(path.resolve())


def _looks_whole(path: Path) -> bool:
    """A JSON object from first to last byte: a cheap check (manifests are large) that catches a cut-off copy."""
    with path.open("rb") as file:
        head = file.read(64).lstrip()
        file.seek(max(0, path.stat().st_size - 64))
        tail = file.read().rstrip()
    return head.startswith(b"{") and tail.endswith(b"}")


def _check_job_options_apply(job_options: dict[str, list[str]], commands: list[str]) -> None:
    for name in job_options:
        if not any(name in COMMANDS[cmd] for cmd in commands):
            param = name.removeprefix("--").replace("-", "_")
            raise InvalidRequest(f"{param} does not apply to {' / '.join(commands)}; remove it or change the command")
    if "--selector" in job_options and ("--select" in job_options or "--exclude" in job_options):
        raise InvalidRequest("selector cannot be combined with select or exclude; put them in the selector instead")
    if "--defer" in job_options and "--state" not in job_options:
        raise InvalidRequest("defer needs state: pass state, the folder of the artifacts to defer to")


def _assemble(
    project: Project,
    target: str,
    cmd: str,
    options: dict[str, list[str]],
    positionals: list[str],
    fatal: bool,
    job_options: dict[str, list[str]],
) -> Step:
    merged = dict(options)
    for name, values in job_options.items():
        if name not in COMMANDS[cmd]:
            continue
        if name in merged and merged[name] != values:
            param = name.removeprefix("--").replace("-", "_")
            raise InvalidRequest(f"{param} is set both as a parameter and in step {cmd!r}; set it in one place")
        merged[name] = values
    selection = merged.get("--select", []) + merged.get("--exclude", [])
    if (
        any(t.split(":")[0].lstrip("@+0123456789") in ("state", "result") for t in selection)
        and "--state" not in merged
    ):
        raise InvalidRequest(
            f"dbt {cmd}: state:/result: selection needs state, the folder of a previous run's artifacts"
        )
    if "--defer" in merged and "--state" not in merged:
        raise InvalidRequest(f"dbt {cmd}: --defer needs --state, the folder of the artifacts to defer to")
    argv = cmd.split() + positionals
    for name, values in merged.items():
        argv += [name, *values]
    run_options = [(name, merged[name][0]) for name in ("--vars", "--threads") if name in merged]
    return Step(cmd, [*argv, "--target", target], fatal, (("--target", target), *run_options))
