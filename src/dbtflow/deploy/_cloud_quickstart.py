"""The Prefect Cloud quickstart (`dbtflow deploy --print-cloud-commands`): the commands, checked first.

Contract
- `commands(entrypoint, repo, parameters)` is the text `--print-cloud-commands` prints: the
  `uvx prefect-cloud deploy` of the entrypoint with its `--parameter` defaults (`command=build`,
  `target=dev`, then the caller's, by name), `dbtflow schedules apply`, an ad-hoc `prefect-cloud run`.
- `check(entrypoint, root, parameters)` refuses, with one line (UserError), what prefect-cloud
  would refuse or deploy broken, before anything is printed: an entry file that is missing or has
  no literal `def <function>` (prefect-cloud's own rule: an AST search, the file is not imported),
  a `--parameter` that is not NAME=VALUE, and one the flow or dbtflow's request does not accept
  (every printed parameter, the run command's too). Nothing is created, here or anywhere.
- `parse_parameters` is prefect-cloud's reading of `--parameter` (`process_key_value_pairs(...,
  as_json=True)`): split at the first `=`, strip quotes, JSON when it parses, else the string.

Pitfalls
- Checking the parameters imports the entry file (Prefect and dbtflow): the flow's own
  validation and `build_request` on its `PROJECT_DIR` are the checks a run would make.
- Prefect logs a failed parameter validation on `prefect.flows` at ERROR: that logger is muted
  here so a bad `--parameter` stays one line.
- Why `--with-requirements` and not the seed form (`--with prefect --with "prefect-dbt[all_extras]"
  --with dbt-snowflake==<pin>`): SEED_FORM says; tests/e2e/test_managed_runtime.py proves it.
"""

from __future__ import annotations

import ast
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from dbtflow import settings
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.run._request import build_request

ENTRYPOINT = settings.ENTRYPOINT
DEPLOY_PARAMETERS = ("command=build", "target=dev")
RUN_PARAMETERS = ("target=prod", 'vars={"key":"value"}')
SEED = "--with prefect --with 'prefect-dbt[all_extras]' --with dbt-snowflake==1.12.4"
SEED_FORM = (
    "it installs neither dbtflow (the requirements' `-e .`) nor dbt-duckdb, and dbt-core 1.12, not the pinned 1.11.16"
)
TEMPLATE = """\
# 0. Sign in to Prefect Cloud (once per machine):
uvx prefect-cloud login
# 1. Deploy from the repository on a Prefect Cloud managed pool (Python 3.12, the pinned runtime):
uvx prefect-cloud deploy {entrypoint} --from {repo} --name {name} --with-python 3.12 \\
    --with-requirements requirements-prefect.txt {deploy_parameters}
#    Not the seed form ({seed}):
#    {seed_form}.
# 2. Give it the dev and prod schedules with their own parameters (prefect-cloud keeps only one):
dbtflow schedules apply prefect.yaml
# 3. An ad-hoc run with overrides, followed until it ends:
uvx prefect-cloud run {flow}/{name} {run_parameters} --follow"""


def commands(entrypoint: str, repo: str, parameters: list[str]) -> str:
    return TEMPLATE.format(
        entrypoint=entrypoint,
        repo=repo,
        deploy_parameters=_options(merged(parameters)),
        seed=SEED,
        seed_form=SEED_FORM,
        flow=entrypoint.rsplit(":", 1)[-1],
        name=settings.DEPLOYMENT_NAME,
        run_parameters=_options(list(RUN_PARAMETERS)),
    )


def merged(parameters: list[str]) -> list[str]:
    """The deploy command's `--parameter` pairs: the defaults, replaced or extended by the caller's, by name."""
    given = {pair.split("=", 1)[0].strip(): pair for pair in parameters}
    defaults = [p for p in DEPLOY_PARAMETERS if p.split("=", 1)[0] not in given]
    return [*defaults, *given.values()]


def check(entrypoint: str, root: Path, parameters: list[str]) -> None:
    path, function = _split(entrypoint)
    find_function(root / path, function)
    deploy = parse_parameters(merged(parameters))
    run = {**deploy, **parse_parameters(list(RUN_PARAMETERS))}
    flow, project_dir = _load(root / path, function)
    for values in (deploy, run):
        _check_values(flow, project_dir, values)


def find_function(path: Path, function: str) -> None:
    """prefect-cloud's rule: a literal `def function` (or `async def`) anywhere in the file's AST."""
    if not path.is_file():
        raise UserError(
            f"entry file {path} not found: run from the repository root or pass --entrypoint file.py:function"
        )
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise UserError(f"entry file {path} does not parse ({exc.msg}, line {exc.lineno}): fix it") from None
    found = any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function for node in ast.walk(tree)
    )
    if not found:
        raise UserError(
            f"{path} has no literal `def {function}`: prefect-cloud finds the flow by an AST search of the file's "
            f"text (an assignment such as `{function} = dbt_flow(...)` is not found); define it with "
            f"`@flow def {function}(...)` or pass --entrypoint path/to/file.py:function"
        )


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """prefect-cloud's `process_key_value_pairs(pairs, as_json=True)`."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UserError(f"--parameter {pair!r} is not NAME=VALUE, e.g. --parameter target=prod")
        value = value.strip().strip("\"'")
        try:
            result[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            result[key.strip()] = value
    return result


def _load(path: Path, function: str) -> tuple[Any, Path | None]:
    """The entry file's flow and the project it binds (`PROJECT_DIR`), imported as Prefect's runner would."""
    # lazy: prefect loads only when the entry file is checked, so `dbtflow --help` stays fast
    from prefect import Flow
    from prefect.utilities.importtools import load_script_as_module

    try:
        module = load_script_as_module(str(path))
    except Exception as exc:  # Prefect's ScriptError wraps what the file raised
        cause = exc.__cause__ or exc
        raise UserError(f"cannot import {path}: {type(cause).__name__}: {cause}; fix the file") from None
    flow = getattr(module, function, None)
    if not isinstance(flow, Flow):
        raise UserError(f"{path}:{function} is not a Prefect flow: decorate it with @flow")
    project_dir = getattr(module, "PROJECT_DIR", None)
    return flow, Path(project_dir) if project_dir is not None else None


def _check_values(flow: Any, project_dir: Path | None, values: dict[str, Any]) -> None:
    function = flow.fn.__name__
    unknown = sorted(set(values) - set(flow.parameters.properties))
    if unknown:
        raise UserError(
            f"--parameter {unknown[0]}: {function} takes no such parameter; it takes "
            + ", ".join(flow.parameters.properties)
        )
    prefect_flows = logging.getLogger("prefect.flows")
    was_disabled, prefect_flows.disabled = prefect_flows.disabled, True
    try:
        validated = flow.validate_parameters(values)
    except Exception as exc:  # Prefect's ParameterTypeError: "...invalid parameters:\n - name: reason"
        reasons = [line.strip().removeprefix("- ") for line in str(exc).splitlines()[1:]] or [str(exc)]
        raise UserError(f"--parameter {'; '.join(reasons)}") from None
    finally:
        prefect_flows.disabled = was_disabled
    if project_dir is not None:
        try:
            build_request(load_project(project_dir), **validated)
        except UserError as exc:
            raise UserError(f"--parameter {exc}") from None


def _split(entrypoint: str) -> tuple[str, str]:
    path, sep, function = entrypoint.rpartition(":")
    if not sep or not path.endswith(".py") or not function.isidentifier():
        raise UserError(f"--entrypoint {entrypoint!r} is not path/to/file.py:function")
    return path, function


def _options(pairs: list[str]) -> str:
    return " ".join(f"--parameter {_quote(pair)}" for pair in pairs)


def _quote(pair: str) -> str:
    key, _, value = pair.partition("=")
    return f"{key}={shlex.quote(value)}"
