"""RunRequest: the flow's parameters, validated, turned into dbt argv lists.

Contract
- `build_request(project, **parameters)` returns a `RunRequest` whose `steps` each carry a
  dbt argv (a list of strings, never a shell line), or raises `InvalidRequest` with one line
  that says what was wrong and how to fix it. Nothing here starts dbt or talks to Prefect, so
  a bad request stops before either is touched.
- Parameters apply like a dbt Cloud job's settings: `target`, `threads`, `vars` go to every
  step; `select`, `exclude`, `selector`, `full_refresh`, `fail_fast`, `state`, `defer` go to
  every step whose subcommand accepts them. `steps` replaces `command`. `source_freshness`
  adds a first step and `generate_docs` a last one; neither fails the run (as in dbt Cloud).
- `run_storage` (else the env `DBTFLOW_RUN_STORAGE`) is a Prefect block slug `<type>/<name>`
  where the run's artifacts are kept (see `dbtflow.runstore`); empty: the local runs folder.
  `state` may be `latest-success` or `latest-success:<target>`: the flow replaces it with a
  folder holding that run's manifest, fetched from the run store, before building the request.

Pitfalls
- Selection values are matched token by token against dbt's selector grammar; anything that
  starts with `-` or holds shell text (`;`, `|`, backticks, `$`, newlines, quotes) is refused,
  so a value can never become another flag.
- Options inside a step string are checked against an allowlist per subcommand; paths that
  dbtflow owns (`--target-path`, `--profiles-dir`, `--project-dir`, `--log-path`) and
  `--target` (a run has exactly one target) are refused there.
- This module must not import prefect or dbt: it is imported by the CLI before either loads.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbtflow.errors import UserError
from dbtflow.project import Project


class InvalidRequest(UserError):
    """A request a user can fix; its message is one line: what was wrong, how to fix it."""


MAX_THREADS = 64
ENGINES = ("fast", "prefect-dbt")
OVERLAP = ("wait", "cancel")  # what a run does when another run of its target holds the slot
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

# Option kinds: how the value(s) after an option are checked.
FLAG, SELECTION, NAME, INT, MAPPING, PATH, CHOICE, TEXT = (
    "flag",
    "selection",
    "name",
    "int",
    "mapping",
    "path",
    "choice",
    "text",
)

RESOURCE_TYPES = [
    "analysis",
    "exposure",
    "metric",
    "model",
    "saved_query",
    "seed",
    "semantic_model",
    "snapshot",
    "source",
    "test",
    "unit_test",
    "function",
    "all",
    "default",
]
CHOICES: dict[str, tuple[str, ...]] = {
    "--resource-type": tuple(RESOURCE_TYPES),
    "--exclude-resource-type": tuple(RESOURCE_TYPES),
    "--indirect-selection": ("eager", "cautious", "buildable", "empty"),
    "--output": ("json", "name", "path", "selector", "text"),
}

# Long option -> kind. Short aliases map onto these.
OPTIONS: dict[str, str] = {
    "--select": SELECTION,
    "--exclude": SELECTION,
    "--selector": NAME,
    "--full-refresh": FLAG,
    "--fail-fast": FLAG,
    "--threads": INT,
    "--vars": MAPPING,
    "--state": PATH,
    "--defer": FLAG,
    "--favor-state": FLAG,
    "--resource-type": CHOICE,
    "--exclude-resource-type": CHOICE,
    "--indirect-selection": CHOICE,
    "--store-failures": FLAG,
    "--empty": FLAG,
    "--warn-error": FLAG,
    "--output": CHOICE,
    "--output-keys": NAME,
    "--args": MAPPING,
    "--inline": TEXT,
    "--limit": INT,
    "--no-compile": FLAG,
    "--static": FLAG,
    "--empty-catalog": FLAG,
}
ALIASES = {
    "-s": "--select",
    "-m": "--select",
    "--models": "--select",
    "--model": "--select",
    "-f": "--full-refresh",
    "-x": "--fail-fast",
}
MANAGED = {
    "--target": "set `target` as a run parameter, not inside a step",
    "-t": "set `target` as a run parameter, not inside a step",
    "--profiles-dir": "dbtflow resolves profiles itself; pass --profiles-dir to `dbtflow run`",
    "--project-dir": "dbtflow binds the project; pass --project-dir to `dbtflow run`",
    "--target-path": "dbtflow keeps each run's artifacts; remove --target-path",
    "--log-path": "dbtflow keeps each run's dbt.log; remove --log-path",
    "--profile": "the profile comes from dbt_project.yml; remove --profile",
}

_SEL = ("--select", "--exclude", "--selector")
_DEFER = ("--state", "--defer", "--favor-state")
_COMMON = ("--threads", "--vars", "--warn-error")
# Subcommand -> the options it accepts (a subset of dbt's own, the ones a job needs).
COMMANDS: dict[str, frozenset[str]] = {
    name: frozenset(opts)
    for name, opts in {
        "build": (
            *_SEL,
            *_DEFER,
            *_COMMON,
            "--full-refresh",
            "--fail-fast",
            "--resource-type",
            "--exclude-resource-type",
            "--indirect-selection",
            "--store-failures",
            "--empty",
        ),
        "run": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--fail-fast", "--empty"),
        "test": (
            *_SEL,
            *_DEFER,
            *_COMMON,
            "--fail-fast",
            "--resource-type",
            "--exclude-resource-type",
            "--indirect-selection",
            "--store-failures",
        ),
        "seed": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--fail-fast"),
        "snapshot": (*_SEL, *_DEFER, *_COMMON, "--fail-fast", "--empty"),
        "source freshness": (*_SEL, *_COMMON),
        "docs generate": (*_SEL, *_COMMON, "--no-compile", "--static", "--empty-catalog"),
        "compile": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--inline", "--empty"),
        "ls": (*_SEL, "--state", "--vars", "--resource-type", "--exclude-resource-type", "--output", "--output-keys"),
        "parse": ("--threads", "--vars"),
        "retry": (*_COMMON, "--full-refresh", "--fail-fast"),
        "deps": (),
        "run-operation": ("--args", "--vars", "--threads"),
        "show": (*_SEL[:2], *_DEFER, "--threads", "--vars", "--inline", "--limit"),
        "clone": (*_SEL, "--state", *_COMMON, "--full-refresh", "--resource-type", "--exclude-resource-type"),
    }.items()
}
ALIASED_COMMANDS = {"list": "ls"}
TWO_WORD = {"source": "freshness", "docs": "generate"}
# Subcommands whose run_results describe what was built (parity and summaries key on these).
BUILDING = frozenset({"build", "run", "test", "seed", "snapshot", "retry", "clone"})

# dbt selector grammar, token by token: graph operators around a method:value or a name.
SELECTOR_METHODS = [
    "tag",
    "path",
    "file",
    "fqn",
    "package",
    "config",
    "test_name",
    "test_type",
    "state",
    "exposure",
    "metric",
    "result",
    "source",
    "source_status",
    "group",
    "access",
    "version",
    "semantic_model",
    "saved_query",
    "unit_test",
    "resource_type",
    "wildcard",
]
_VALUE = r"[A-Za-z0-9_*?\[\]./\-]+"
_METHOD = r"(?:[a-z_]+(?:\.[A-Za-z0-9_]+)*:)"
_ATOM = rf"(?:@|\d*\+)?{_METHOD}?{_VALUE}(?:\+\d*)?"
SELECTOR_TOKEN = re.compile(rf"^{_ATOM}(?:,{_ATOM})*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
SHELL_TEXT = re.compile(r"[;|&`$<>\n\r\x00\"'\\]")


@dataclass(frozen=True)
class Step:
    """One dbt invocation: its subcommand, its argv, and whether its failure fails the run."""

    command: str
    argv: list[str]
    fatal: bool = True

    @property
    def builds(self) -> bool:
        return self.command in BUILDING

    def __str__(self) -> str:
        return shlex.join(self.argv)


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
    run_storage: str | None = None  # a Prefect storage block slug; None: the local runs folder


STORE_STATE = re.compile(r"^latest-success(?::[A-Za-z_][A-Za-z0-9_\-]*)?$")
_BLOCK_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def build_request(
    project: Project,
    *,
    command: str = "build",
    target: str = "dev",
    select: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    selector: str | None = None,
    vars: Mapping[str, Any] | str | None = None,
    full_refresh: bool = False,
    state: str | None = None,
    defer: bool = False,
    threads: int | None = None,
    steps: Sequence[str] | None = None,
    source_freshness: bool = False,
    generate_docs: bool = False,
    timeout_seconds: int | None = None,
    fail_fast: bool = False,
    engine: str = "fast",
    on_overlap: str = "wait",
    run_storage: str | None = None,
) -> RunRequest:
    """Validate every parameter and build the steps; raise InvalidRequest on the first problem."""
    parameters = {k: v for k, v in locals().items() if k != "project"}
    _check_target(project, target)
    job_options: dict[str, list[str]] = {}
    if select is not None:
        job_options["--select"] = _selection("select", select)
    if exclude is not None:
        job_options["--exclude"] = _selection("exclude", exclude)
    if selector is not None:
        job_options["--selector"] = [_selector_name(project, "selector", selector)]
    if full_refresh:
        job_options["--full-refresh"] = []
    if fail_fast:
        job_options["--fail-fast"] = []
    if state is not None:
        job_options["--state"] = [_state_path("state", state, from_store=True)]
    if defer:
        job_options["--defer"] = []
    if threads is not None:
        job_options["--threads"] = [str(_threads("threads", threads))]
    if vars is not None:
        job_options["--vars"] = [_mapping("vars", vars)]
    timeout = _timeout(timeout_seconds)
    if engine not in ENGINES:
        raise InvalidRequest(f"engine {engine!r} is unknown; use one of: {', '.join(ENGINES)}")
    if on_overlap not in OVERLAP:
        raise InvalidRequest(f"on_overlap {on_overlap!r} is unknown; use one of: {', '.join(OVERLAP)}")

    texts = _step_texts(command, steps)
    parsed = [_parse_step(project, f"steps[{i}]" if steps else "command", t) for i, t in enumerate(texts)]
    if source_freshness:
        parsed.insert(0, ("source freshness", {}, [], False))
    if generate_docs:
        parsed.append(("docs generate", {}, [], False))

    _check_job_options_apply(job_options, [p[0] for p in parsed])
    built = [
        _assemble(project, target, cmd, opts, positionals, fatal, job_options)
        for cmd, opts, positionals, fatal in parsed
    ]
    storage = _run_storage(run_storage)
    return RunRequest(project, target, built, timeout, engine, parameters, on_overlap, storage)


def _run_storage(value: str | None) -> str | None:
    slug = (value or os.environ.get("DBTFLOW_RUN_STORAGE") or "").strip() or None
    if slug is not None and not _BLOCK_SLUG.match(slug):
        raise InvalidRequest(
            f"run_storage {slug!r} is not a Prefect block slug; use <block-type>/<block-name>, "
            "e.g. s3-bucket/dbtflow-runs (or leave it empty for the local runs folder)"
        )
    return slug


def _check_target(project: Project, target: str) -> None:
    if not isinstance(target, str) or target not in project.targets:
        known = ", ".join(project.targets) or "none"
        raise InvalidRequest(
            f"unknown target {target!r}: profile {project.profile_name!r} in "
            f"{project.profiles_path} defines {known}; pass one of them"
        )


def _step_texts(command: str, steps: Sequence[str] | None) -> list[str]:
    if steps is None:
        if not isinstance(command, str) or not command.strip():
            raise InvalidRequest("command is empty: pass a dbt command such as 'build'")
        return [command]
    if isinstance(steps, str) or not isinstance(steps, Sequence):
        raise InvalidRequest(
            'steps must be a list of dbt commands, e.g. ["source freshness", "build --select tag:daily"]'
        )
    if not steps:
        raise InvalidRequest("steps is empty: give at least one dbt command, or leave steps unset to use command")
    for i, text in enumerate(steps):
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(f"steps[{i}] is empty: each step is a dbt command such as 'build'")
    return list(steps)


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
        return _selection(where, values)
    value = values[0]
    if kind == NAME:
        return [_selector_name(project, where, value) if name == "--selector" else _identifier(where, value)]
    if kind == INT:
        number = _int(where, value)
        return [str(_threads(where, number) if name == "--threads" else _positive(where, number))]
    if kind == MAPPING:
        return [_mapping(where, value)]
    if kind == PATH:
        return [_state_path(where, value)]
    if kind == CHOICE:
        if value not in CHOICES[name]:
            raise InvalidRequest(f"{where}: {value!r} is not one of {', '.join(CHOICES[name])}")
        return [value]
    if "\x00" in value:
        raise InvalidRequest(f"{where}: contains a NUL byte")
    return [value]


def _selection(where: str, value: str | Sequence[str]) -> list[str]:
    """dbt selector syntax, one token per element; unions by space, intersections by comma."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise InvalidRequest(f"{where} must be a string or a list of strings, e.g. 'tag:daily +fct_orders'")
    if any(c in v for v in values for c in "\n\r"):
        raise InvalidRequest(f"{where} contains a line break: separate selectors with spaces")
    tokens = [t for v in values for t in v.split()]
    if not tokens:
        raise InvalidRequest(f"{where} is empty: leave it unset, or give a selector such as 'tag:daily'")
    for token in tokens:
        bad = SHELL_TEXT.search(token)
        if token.startswith("-"):
            raise InvalidRequest(f"{where}: {token!r} starts with '-'; it would be read as an option, not a selector")
        if bad:
            raise InvalidRequest(f"{where}: {token!r} contains {bad.group()!r}, which is not dbt selector syntax")
        if not SELECTOR_TOKEN.match(token):
            raise InvalidRequest(
                f"{where}: {token!r} is not dbt selector syntax (e.g. 'my_model', '+tag:daily', 'path:models/marts')"
            )
        for atom in token.split(","):
            method = re.sub(r"^(?:@|\d*\+)", "", atom).partition(":")
            if method[1] and method[0].split(".")[0] not in SELECTOR_METHODS:
                raise InvalidRequest(f"{where}: unknown selector method {method[0]!r} in {token!r}")
    return tokens


def _selector_name(project: Project, where: str, name: str) -> str:
    _identifier(where, name)
    if name not in project.selectors:
        known = ", ".join(project.selectors) or "none"
        raise InvalidRequest(f"{where}: no selector {name!r} in selectors.yml (defined: {known})")
    return name


def _identifier(where: str, value: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidRequest(f"{where}: {value!r} is not a plain name (letters, digits, _ and -)")
    return value


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{where} must be a whole number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where} must be a whole number, not {value!r}") from None


def _positive(where: str, number: int) -> int:
    if number < 1:
        raise InvalidRequest(f"{where} must be 1 or more, not {number}")
    return number


def _threads(where: str, value: Any) -> int:
    number = _int(where, value)
    if not 1 <= number <= MAX_THREADS:
        raise InvalidRequest(f"{where} must be between 1 and {MAX_THREADS}, not {number}")
    return number


def _timeout(value: Any) -> int | None:
    if value is None:
        return None
    number = _int("timeout_seconds", value)
    if not 1 <= number <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequest(
            f"timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS} (7 days), not {number}; "
            "leave it unset for no limit"
        )
    return number


def _mapping(where: str, value: Mapping[str, Any] | str) -> str:
    """A mapping, or a JSON/YAML text of one, as the JSON text dbt's --vars/--args expect."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise InvalidRequest(
                f'{where} is not valid JSON or YAML ({problem}); pass e.g. \'{{"key": "value"}}\''
            ) from None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f'{where} must be a mapping such as {{"key": "value"}}, not a {type(value).__name__}')
    if not all(isinstance(k, str) for k in value):
        raise InvalidRequest(f"{where} keys must be strings")
    return json.dumps(dict(value), default=str, sort_keys=True)


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
    return Step(cmd, [*argv, "--target", target], fatal)
