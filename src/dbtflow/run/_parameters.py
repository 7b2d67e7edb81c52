"""RunParameters: the flow's parameters, their defaults, and the checks that need no project.

Contract
- `RunParameters` is the one list of a run's parameters (name, type, default, description). The
  flow's signature (`dbtflow.run._flow`, the tenant entry file), `dbtflow run`'s options and
  `build_request` follow it; `tests/run/test_parameters.py` fails when one of them drifts.
- `RunParameters.parse(values)` validates what needs no project (types, ranges, selector
  syntax, the vars mapping, engine and on_overlap) and raises `InvalidRequest`, one line: what
  was wrong and how to fix it. The checks that need the project (the target and the selector
  exist, `state` is a folder of artifacts, each step's command and options) are
  `build_request`'s, on top of this.
- The flow's default target is `DEFAULT_TARGET`; `dbtflow run` defaults to the profile's own
  target (`default_target(project)`), falling back to it.

Pitfalls
- Selection values are matched token by token against dbt's selector grammar; anything that
  starts with `-` or holds shell text (`;`, `|`, backticks, `$`, newlines, quotes) is refused,
  so a value can never become another flag. Names and values may be any Unicode letters or
  digits (dbt's grammar takes them), not ASCII only.
- `vars` and `--args` are bounded (MAX_VARS_CHARS of text and of values, MAX_VARS_VALUES keys
  and values) with YAML aliases expanded: 300 bytes of nested aliases expand to millions of
  values, which json.dumps would spend minutes and hundreds of MB on. A cycle hits the bound too.
- `run_storage` is a Prefect block slug `<block-type>/<name>`; `state` may also be
  `latest-success[:<target>]` (STORE_STATE), which the flow resolves from the run store.
- A secret-looking var whose value is the mask `*****` is refused: the flow masks those in the
  flow run's parameters stored by Prefect, so a run started from the stored ones (a retry on a
  new worker, "Run again") would hand dbt the mask (`dbtflow.secrets._masking`).
- `env_vars` names follow dbt Cloud's rule (`dbtflow.secrets._env_names`); a `DBT_ENV_SECRET_*` entry's
  value is the name of the Prefect Secret block holding the secret, never the secret (flow-run
  parameters are stored and shown in clear by Prefect); the flow reads the block when it starts.
- Must not import prefect or dbt: the CLI validates with it before either loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dbtflow.dbt._commands import SELECTOR_METHODS
from dbtflow.dbt._project import Project
from dbtflow.errors import UserError
from dbtflow.secrets._env_names import check_env_vars
from dbtflow.secrets._masking import MASK, masked_vars


class InvalidRequest(UserError):
    """A request a user can fix; its message is one line: what was wrong, how to fix it."""


DEFAULT_TARGET = "dev"
MAX_THREADS = 64
ENGINES = ("fast", "prefect-dbt")
OVERLAP = ("wait", "cancel")  # what a run does when another run of its target holds the slot
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_VARS_CHARS = 100_000  # vars/args text, and the characters of their values once aliases are expanded
MAX_VARS_VALUES = 10_000  # keys and values, aliases expanded: an alias bomb stops here, not in json.dumps

# dbt selector grammar, token by token: graph operators around a method:value or a name.
_VALUE = r"[\w*?\[\]./\-]+"  # \w is Unicode: dbt selects `stg_ünïcødé_名前` by name, so must we
_METHOD = r"(?:[a-z_]+(?:\.[A-Za-z0-9_]+)*:)"
_ATOM = rf"(?:@|\d*\+)?{_METHOD}?{_VALUE}(?:\+\d*)?"
SELECTOR_TOKEN = re.compile(rf"^{_ATOM}(?:,{_ATOM})*$")
STORE_STATE = re.compile(r"^latest-success(?::[A-Za-z_][A-Za-z0-9_\-]*)?$")  # state from the run store
BLOCK_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
SHELL_TEXT = re.compile(r"[;|&`$<>\n\r\x00\"'\\]")


class RunParameters(BaseModel):
    """A run's parameters, as the flow, the deployment and `dbtflow run` take them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field("build", description="The dbt command, e.g. `build`, `run --select tag:daily`.")
    target: str = Field(DEFAULT_TARGET, description="The profiles.yml target to run against (`local`, `dev`, `prod`).")
    select: str | list[str] | None = Field(None, description="dbt selection, e.g. `tag:daily +fct_shipments`.")
    exclude: str | list[str] | None = Field(None, description="dbt exclusion, same syntax as select.")
    selector: str | None = Field(None, description="The name of a selector in selectors.yml, e.g. `daily`.")
    vars: dict[str, Any] | str | None = Field(None, description="dbt vars, as a mapping or a JSON/YAML string of one.")
    full_refresh: bool = Field(False, description="Rebuild incremental models and seeds from scratch.")
    state: str | None = Field(None, description="Folder of a previous run's artifacts, for `state:` and deferral.")
    defer: bool = Field(False, description="Defer unbuilt upstream references to `state`.")
    threads: int | None = Field(None, description="dbt threads (1-64); the target's own setting when empty.")
    steps: list[str] | None = Field(None, description="Several dbt commands run in order; replaces `command`.")
    source_freshness: bool = Field(False, description="Run `dbt source freshness` first; it never fails the run.")
    generate_docs: bool = Field(False, description="Run `dbt docs generate` last; it never fails the run.")
    timeout_seconds: int | None = Field(None, description="Stop the run after this many seconds; no limit when empty.")
    fail_fast: bool = Field(False, description="Stop a step at its first failing node.")
    engine: Literal["fast", "prefect-dbt"] = Field("fast", description="`fast`, or prefect-dbt's PrefectDbtRunner.")
    on_overlap: Literal["wait", "cancel"] = Field("wait", description="When the target is busy: `wait` or `cancel`.")
    install_deps: bool = Field(
        True, description="Run `dbt deps` first when the installed packages do not match the lock."
    )
    run_storage: str | None = Field(
        None, description="A Prefect storage block slug (`s3-bucket/dbtflow-runs`) that keeps the run's artifacts."
    )
    env_vars: dict[str, str] | None = Field(
        None,
        description="Environment variables for dbt's env_var() (DBT_*); a DBT_ENV_SECRET_* one names its Secret block.",
    )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> RunParameters:
        """Validate `values` (parameter name -> value; missing ones take their defaults).

        Args:
            values: the parameters as a flow run, a schedule or the CLI gives them.

        Returns:
            The parameters, checked.

        Raises:
            InvalidRequest: one line naming the first problem and how to fix it.
        """
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise InvalidRequest(f"unknown parameter {unknown[0]!r}; use one of: {', '.join(cls.model_fields)}")
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            first = exc.errors()[0]
            cause = (first.get("ctx") or {}).get("error")
            if isinstance(cause, InvalidRequest):
                raise cause from None
            name = ".".join(str(p) for p in first["loc"]) or "parameters"
            raise InvalidRequest(f"{name}: {first['msg']} (got {first.get('input')!r})") from None

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        """The checks with dbtflow's own one-line messages, in the order a request was always checked."""
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        if "target" in data and not isinstance(data["target"], str):
            raise InvalidRequest(f"target must be a profiles.yml target name, not {data['target']!r}")
        for name in ("select", "exclude"):
            if data.get(name) is not None:
                check_selection(name, data[name])
        if data.get("selector") is not None:
            check_identifier("selector", data["selector"])
        if data.get("threads") is not None:
            checked["threads"] = check_threads("threads", data["threads"])
        if data.get("vars") is not None:
            check_mapping("vars", data["vars"])
            _check_not_masked(data)
        checked["timeout_seconds"] = check_timeout(data.get("timeout_seconds"))
        if data.get("engine", "fast") not in ENGINES:
            raise InvalidRequest(f"engine {data['engine']!r} is unknown; use one of: {', '.join(ENGINES)}")
        if data.get("on_overlap", "wait") not in OVERLAP:
            raise InvalidRequest(f"on_overlap {data['on_overlap']!r} is unknown; use one of: {', '.join(OVERLAP)}")
        if not isinstance(data.get("install_deps", True), bool):
            raise InvalidRequest(f"install_deps must be true or false, not {data['install_deps']!r}")
        if data.get("run_storage") is not None:
            check_block_slug("run_storage", data["run_storage"])
        if data.get("env_vars") is not None:
            checked["env_vars"] = _env_vars(data["env_vars"])
        checked["steps"] = _steps(data.get("steps"))
        if checked["steps"] is None:
            _command(data.get("command", "build"))
        return checked


def default_target(project: Project) -> str:
    """The target a run without one uses from the CLI: the profile's own, else `DEFAULT_TARGET`.

    Args:
        project: the loaded dbt project.

    Returns:
        A target name.
    """
    return project.default_target or DEFAULT_TARGET


def _check_not_masked(data: Mapping[str, Any]) -> None:
    """A secret var whose value is the mask: parameters dbtflow masked in Prefect, passed back (a retry elsewhere)."""
    masked = masked_vars(data)
    if masked:
        raise InvalidRequest(
            f"vars {', '.join(masked)}: the value is the mask {MASK}, not the secret (dbtflow masks secret-looking "
            "vars in the flow run's stored parameters, and this run was started from them): pass the value again, "
            "or keep it in a Prefect Secret block (env_vars DBT_ENV_SECRET_<NAME>, docs/secrets.md)"
        )


def _env_vars(value: Any) -> dict[str, str]:
    try:
        return check_env_vars("env_vars", value)
    except UserError as exc:
        raise InvalidRequest(str(exc)) from None


def _command(command: Any) -> str:
    if not isinstance(command, str) or not command.strip():
        raise InvalidRequest("command is empty: pass a dbt command such as 'build'")
    return command


def _steps(steps: Any) -> list[str] | None:
    if steps is None:
        return None
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


def check_selection(where: str, value: str | Sequence[str]) -> list[str]:
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


def check_block_slug(where: str, value: Any) -> str:
    if not isinstance(value, str) or not BLOCK_SLUG.match(value.strip()):
        raise InvalidRequest(
            f"{where} {value!r} is not a Prefect block slug; use <block-type>/<block-name>, "
            "e.g. s3-bucket/dbtflow-runs (or leave it empty for the local runs folder)"
        )
    return value.strip()


def check_identifier(where: str, value: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidRequest(f"{where}: {value!r} is not a plain name (letters, digits, _ and -)")
    return value


def check_int(where: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{where} must be a whole number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where} must be a whole number, not {value!r}") from None


def check_positive(where: str, number: int) -> int:
    if number < 1:
        raise InvalidRequest(f"{where} must be 1 or more, not {number}")
    return number


def check_threads(where: str, value: Any) -> int:
    number = check_int(where, value)
    if not 1 <= number <= MAX_THREADS:
        raise InvalidRequest(f"{where} must be between 1 and {MAX_THREADS}, not {number}")
    return number


def check_timeout(value: Any) -> int | None:
    if value is None:
        return None
    number = check_int("timeout_seconds", value)
    if not 1 <= number <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequest(
            f"timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS} (7 days), not {number}; "
            "leave it unset for no limit"
        )
    return number


def check_mapping(where: str, value: Mapping[str, Any] | str) -> str:
    """A mapping, or a JSON/YAML text of one, as the JSON text dbt's --vars/--args expect."""
    if isinstance(value, str) and len(value) > MAX_VARS_CHARS:
        raise InvalidRequest(
            f"{where} is {len(value)} characters long; the limit is {MAX_VARS_CHARS}: "
            "put large data in a seed or a table, not in vars"
        )
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
    _bounded(where, value)
    return json.dumps(dict(value), default=str, sort_keys=True)


def _bounded(where: str, value: Any) -> None:
    """Walk the values as json.dumps would, YAML aliases expanded, and stop past the limits (an alias bomb)."""
    count, chars, stack = 0, 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VARS_VALUES:
            raise InvalidRequest(
                f"{where} holds more than {MAX_VARS_VALUES} values once YAML aliases are expanded; "
                "pass a smaller mapping (put large data in a seed or a table)"
            )
        if isinstance(item, Mapping):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            stack += item
        else:
            chars += len(str(item))
    if chars > MAX_VARS_CHARS:
        raise InvalidRequest(
            f"{where} holds {chars} characters of values; the limit is {MAX_VARS_CHARS}: "
            "put large data in a seed or a table, not in vars"
        )
