"""A run's environment variables (`env_vars`): set for dbt while the run's steps run, secrets read at run time.

Contract
- `run_env(env_vars)` is a context manager: it reads every secret entry's Prefect Secret block
  (the entry's value is the block's name, see `dbtflow.secrets._env_names`) when the run starts,
  then puts every variable in this process's environment, where dbt's `env_var()` reads it, and
  restores what was there before when the context ends. It yields the names it set (the run
  record keeps the names, never a value; parity compares them with the dbt Cloud job's).
- Secret values go in under their own `DBT_ENV_SECRET*` names, so dbt scrubs them from dbt.log
  and its messages, and dbtflow's `scrub` / `scrub_files` (`dbtflow.secrets._masking`, which mask
  every `DBT_ENV_SECRET*` value) keep them out of the console, Prefect logs and the run folder.
- A Secret block that cannot be read (missing, another type, the API down) is one `SecretUnavailable`
  naming the block and the variable and the command that stores it; nothing has started, and no
  variable is set.
- `store_secret(block, value)` writes (or replaces) a Prefect Secret block: `dbtflow blocks secret`.

Pitfalls
- The value is never looked up at deploy time: a `{{ prefect.blocks.secret.x }}` placeholder in a
  deployment's job variables or parameters is resolved by `prefect deploy` and stored in the
  deployment in clear. The block's name travels; its value is read here, by the run.
- The environment is process-wide: two runs in one process that set the same name to different
  values see each other's (a worker runs each flow run in its own process, so deployments are safe).
- A variable already in the worker's environment is overridden for the run and restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prefect.blocks.system import Secret

from dbtflow.errors import UserError
from dbtflow.secrets._env_names import environment, is_secret


@contextlib.contextmanager
def run_env(env_vars: Mapping[str, str] | None) -> Iterator[list[str]]:
    """While the context is open, dbt sees `env_vars` (secret entries read from their Secret blocks).

    Args:
        env_vars: name -> value; a `DBT_ENV_SECRET*` name -> the Prefect Secret block holding its value.

    Returns:
        (yields) the names set, sorted.

    Raises:
        SecretUnavailable: a Secret block could not be read (nothing is set then).
    """
    values = {name: _secret(name, value) if is_secret(name) else value for name, value in (env_vars or {}).items()}
    with environment(values):
        yield sorted(values)


class SecretUnavailable(UserError):
    """A Secret block an `env_vars` entry names could not be read; one line, nothing set."""


def _secret(name: str, block: str) -> str:
    fix = f"store its value with `dbtflow blocks secret {block}`"
    try:
        loaded = Secret.load(block)
        value = loaded.get()  # type: ignore[union-attr]
    except ValueError:  # Prefect: "Unable to find block document named ..."
        raise SecretUnavailable(f"Prefect Secret block {block!r} (for {name}) does not exist: {fix}") from None
    except Exception as exc:
        raise SecretUnavailable(
            f"cannot read Prefect Secret block {block!r} (for {name}) ({type(exc).__name__}): check PREFECT_API_URL "
            f"and that it is a Secret block, or {fix}"
        ) from None
    if not isinstance(value, str) or not value:
        raise SecretUnavailable(f"Prefect Secret block {block!r} (for {name}) holds no text: {fix}")
    return value


def store_secret(block: str, value: str) -> str:
    """Create or replace the Prefect Secret block `block` with `value`; 'created' or 'updated'.

    Args:
        block: the block's name (lower-case letters, digits, dashes).
        value: the secret.

    Returns:
        What was done, for the one line the CLI prints (never the value).
    """
    try:
        Secret.load(block)
        action = "updated"
    except ValueError:
        action = "created"
    try:
        Secret(value=value).save(block, overwrite=True)  # type: ignore[arg-type]
    except Exception as exc:
        raise UserError(
            f"cannot save Prefect Secret block {block!r} ({type(exc).__name__}): check PREFECT_API_URL "
            "(and PREFECT_API_KEY for Prefect Cloud)"
        ) from None
    return action
