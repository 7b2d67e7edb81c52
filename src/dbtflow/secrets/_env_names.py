"""The rule for a run's environment variables (`env_vars`): which names are valid, which are secret.

Contract
- A name is valid when dbt Cloud would accept it: `DBT_` then upper-case letters, digits and `_`
  (dbt Cloud: "prefixed with DBT_, DBT_ENV_SECRET_ or DBT_ENV_CUSTOM_ENV_ ... uppercased").
  `DBT_CLOUD_*` is refused (dbt Cloud sets those itself: a run must not fake them), and so is
  `DBT_ENV_SECRET_DBTFLOW_*` (the variables dbtflow uses to hand profile secrets to dbt).
- A name is secret when it starts with `DBT_ENV_SECRET` (dbt's own `SECRET_ENV_PREFIX`: dbt scrubs
  those values from its logs and refuses them outside profiles.yml and packages.yml). The value of
  a secret entry in `env_vars` is never the secret: it is the name of the Prefect Secret block
  holding it (`block_name_problem` checks it looks like one), read when the run starts.
- `environment(values)` sets variables while its block runs and puts back what was there after
  (unset ones unset again): the one way dbtflow hands dbt variables for a run.
- `check_env_vars(where, value)` returns the mapping, or raises `UserError` with one line naming
  the first bad entry. A secret entry's value is never quoted in a message (it may be a value
  pasted by mistake).

Pitfalls
- Pure: no Prefect, no dbt (the run's parameters, the CLI and the dbt Cloud import use it before
  either loads).
- Prefect block names are lower-case letters, digits and dashes; a value with anything else in
  a secret entry is most likely the secret itself, pasted where its block's name belongs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from dbtflow.errors import UserError

NAME = re.compile(r"^DBT_[A-Z0-9_]+$")
SECRET_PREFIX = "DBT_ENV_SECRET"  # dbt_common.constants.SECRET_ENV_PREFIX  # pragma: allowlist secret
RESERVED = ("DBT_CLOUD_", "DBT_ENV_SECRET_DBTFLOW_")
BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_ENV_VARS = 500
MAX_VALUE_CHARS = 10_000


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, the process environment also holds `values`; what was there before, after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in before.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def is_secret(name: str) -> bool:
    """Whether dbt treats `name` as a secret (`DBT_ENV_SECRET*`)."""
    return name.startswith(SECRET_PREFIX)


def name_problem(name: Any) -> str | None:
    """Why `name` is not a valid environment variable name, or None when it is."""
    if not isinstance(name, str) or not NAME.match(name):
        shown = repr(name)[:80]
        return (
            f"{shown} is not a valid environment variable name: dbt Cloud's rule is DBT_ followed by upper-case "
            "letters, digits and _ (e.g. DBT_REGION, DBT_ENV_SECRET_API_KEY)"
        )
    reserved = next((p for p in RESERVED if name.startswith(p)), None)
    if reserved:
        return f"{name} uses the reserved prefix {reserved} (set by dbt Cloud or by dbtflow itself): rename it"
    return None


def block_name_problem(name: str, value: Any) -> str | None:
    """Why the value of secret entry `name` is not a Prefect Secret block name, or None; never shows the value."""
    if isinstance(value, str) and BLOCK_NAME.match(value) and len(value) <= 200:
        return None
    return (
        f"{name} is a secret, so its value must name the Prefect Secret block that holds it (lower-case letters, "
        "digits and dashes), never the secret itself: store it with `dbtflow blocks secret <block-name>` and pass "
        "that name"
    )


def check_env_vars(where: str, value: Any) -> dict[str, str]:
    """`value` as {name: value}, checked; raises UserError (one line) at the first bad entry.

    Args:
        where: the parameter or option, for the message (`env_vars`, `--env-var`).
        value: the mapping given.

    Returns:
        The mapping (non-secret values as given; secret ones are Prefect Secret block names).
    """
    if not isinstance(value, Mapping):
        raise UserError(f'{where} must be a mapping such as {{"DBT_REGION": "eu"}}, not a {type(value).__name__}')
    if len(value) > MAX_ENV_VARS:
        raise UserError(f"{where} holds {len(value)} variables; the limit is {MAX_ENV_VARS}")
    for name, item in value.items():
        problem = name_problem(name)
        if problem is None and is_secret(name):
            problem = block_name_problem(name, item)
        elif problem is None and not isinstance(item, str):
            problem = f"{name} must be a string (environment variables are text), not {type(item).__name__}"
        elif problem is None and (len(item) > MAX_VALUE_CHARS or "\x00" in item):
            problem = f"{name} is longer than {MAX_VALUE_CHARS} characters or holds a NUL character"
        if problem:
            raise UserError(f"{where}: {problem}")
    return dict(value)
