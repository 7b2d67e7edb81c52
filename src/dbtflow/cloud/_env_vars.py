"""dbt Cloud environment variables -> each imported job's `env_vars` parameter (`dbtflow cloud import-jobs`).

Contract
- `job_env_vars(job, environment)` resolves the variables one job runs with, by dbt Cloud's
  precedence: the job's override over the environment's value over the project's default (the
  `env_var()` default in code stays the lowest, in code). It reads the environment's
  `custom_environment_variables` (the project defaults and that environment's values) and the
  job's (its overrides; the client asks for them with `include_related`). Deleted values
  (`state` 2) and personal ones (`type: user`, the IDE's) are left out; so is a level whose
  value is null (not set there).
- A non-secret variable's value is its `display_value`. A `DBT_ENV_SECRET*` one's value is never
  read (dbt Cloud does not serve it: it is masked): the parameter holds the name of the Prefect
  Secret block to hold it (`secret_block`: one per variable and level, `dbt-env-secret-<name>-
  <level>-<id>`, so a job that inherits the environment's secret shares its block), which the run
  reads when it starts (`dbtflow.secrets._env_vars`).
- A name dbt Cloud's rule refuses (`dbtflow.secrets._env_names`) is a `UserError` naming the
  job, the level and the variable: the import stops before anything is written.
- `secrets_to_set(entries)` lists each Secret block the imported jobs need (block, variable,
  level, jobs), for the one line per secret the CLI prints with the command that stores its
  value (`dbtflow blocks secret <block>`).
- `job_env_record(client, job_id)` is the same resolution read from the API for parity: name ->
  value, None for a secret (`dbtflow parity --cloud-run/--cloud-job` writes it into run.json).

Pitfalls
- The block name is a reference, never a `{{ prefect.blocks.secret.x }}` placeholder: `prefect
  deploy` resolves placeholders in job variables and parameters at deploy time and would store
  the value in the deployment in clear.
- Values are text: dbt Cloud stores them as strings, and dbt's `env_var()` returns strings.
- `job_env_record` reads the job's variables as they are *now*: dbt Cloud's API keeps no record of
  the values a past run used, so parity against an old run can blame a variable changed since.
- Pure but for `job_env_record` (two API reads): no Prefect API, no dbt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dbtflow._text import slug
from dbtflow.cloud._client import ENV_VARS, DbtCloudClient, Environment, EnvVar, Job
from dbtflow.errors import UserError
from dbtflow.secrets._env_names import is_secret, name_problem

PARAMETER = "env_vars"
LEVELS = ("project", "environment", "job")  # lowest to highest precedence


@dataclass
class SecretToSet:
    block: str
    name: str
    level: str  # e.g. `environment 400 (Production)`
    jobs: list[int] = field(default_factory=list)


def secret_block(name: str, level: str, level_id: int | None) -> str:
    """The Prefect Secret block for secret `name` set at `level` (`project` / `environment` / `job`) `level_id`."""
    return slug(name, level, str(level_id if level_id is not None else "default"))


def job_env_vars(job: Job, environment: Environment | None) -> dict[str, str]:
    """The `env_vars` one job runs with (names sorted); secret ones are Prefect Secret block names.

    Args:
        job: the job, read with its `custom_environment_variables` (its overrides).
        environment: its environment, with the project's defaults and its own values (None: unknown).

    Returns:
        name -> value, or name -> Secret block name for `DBT_ENV_SECRET*` names.

    Raises:
        UserError: a variable's name is not one dbt Cloud accepts.
    """
    chosen: dict[str, tuple[str, EnvVar]] = {}
    for level, var in _values(job, environment):
        problem = name_problem(var.name)
        if problem:
            raise UserError(
                f"dbt Cloud job {job.id} {job.name!r}: the {_where(level, var, environment)} environment variable "
                f"{problem}; fix it in dbt Cloud and import again (nothing was written)"
            )
        if is_secret(var.name) or var.display_value is not None:
            chosen[var.name] = (level, var)  # a higher level comes later and wins
    return {name: _value(level, var) for name, (level, var) in sorted(chosen.items())}


def job_env_record(client: DbtCloudClient, job_id: int) -> dict[str, str | None]:
    """The variables dbt Cloud's job `job_id` runs with, as run.json keeps them: name -> value (None: a secret).

    Args:
        client: the account's client.
        job_id: the job.

    Returns:
        What `job_env_vars` resolves, secret values (block names) left out as None, for parity.
    """
    job = client.get_job(job_id, include_related=[ENV_VARS])
    environment = next((e for e in client.list_environments(job.project_id) if e.id == job.environment_id), None)
    return {n: None if is_secret(n) else v for n, v in job_env_vars(job, environment).items()}


def secrets_to_set(entries: Iterable[Any]) -> list[SecretToSet]:
    """The Secret blocks the imported entries' `env_vars` name, each once, with the jobs that need it."""
    found: dict[str, SecretToSet] = {}
    for entry in entries:
        for name, block in (entry.parameters.get(PARAMETER) or {}).items():
            if is_secret(name):
                level = _level_of(block, name)
                found.setdefault(block, SecretToSet(block, name, level)).jobs.append(entry.job.id)
    return sorted(found.values(), key=lambda s: s.block)


def _values(job: Job, environment: Environment | None) -> list[tuple[str, EnvVar]]:
    """Every active value that applies to the job, lowest precedence first."""
    env_values = (environment.custom_environment_variables or []) if environment else []
    applies: Mapping[str, Any] = {
        "project": lambda v: v.project_id in (None, job.project_id),
        "environment": lambda v: v.environment_id == job.environment_id,
        "job": lambda v: v.job_definition_id in (None, job.id),
    }
    out: list[tuple[str, EnvVar]] = []
    for level in LEVELS:
        source = (job.custom_environment_variables or []) if level == "job" else env_values
        out += [(level, v) for v in source if v.type == level and v.state == 1 and applies[level](v)]
    return out


def _value(level: str, var: EnvVar) -> str:
    if not is_secret(var.name):
        return str(var.display_value)
    ids = {"project": var.project_id, "environment": var.environment_id, "job": var.job_definition_id}
    return secret_block(var.name, level, ids[level])


def _where(level: str, var: EnvVar, environment: Environment | None) -> str:
    if level == "environment" and environment is not None:
        return f"environment {environment.id} ({environment.name})"
    return level if level == "project" else f"{level}-level"


def _level_of(block: str, name: str) -> str:
    """`environment 400` from `dbt-env-secret-x-environment-400` (the name's slug is its prefix)."""
    rest = block.removeprefix(slug(name)).strip("-")
    level, _, level_id = rest.partition("-")
    return f"{level} {level_id}".strip()
