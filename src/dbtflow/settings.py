"""dbtflow's settings: the `DBTFLOW_*` environment and the deployment's name, in one place.

Contract
- Every environment variable dbtflow reads is named here, and only here; modules import the
  name (or the helper that builds it), never spell the string themselves.
- The deployment's name (`FLOW_NAME`/`DEPLOYMENT_NAME`, together `DEPLOYMENT`) and its entry point
  are here: every command's default deployment is this one. (prefect.yaml and the entry file
  spell it too, as Prefect and prefect-cloud need literals there.)
- Light: no Prefect, no dbt (the CLI imports it at start-up, and `dbtflow --help` stays fast).

Pitfalls
- The secret-bearing variables (`SNOWFLAKE_PRIVATE_KEY`, `SNOWFLAKE_PASSWORD`, ...) are read
  only where the secret is used (`dbtflow.secrets`); never log or echo their values.
- A relative `DBTFLOW_RUNS_DIR` is the caller's folder's: `from_env` makes it absolute, and the
  flow reads it before dbt's steps move the process into the project's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FLOW_NAME = "run_dbt_wg"
DEPLOYMENT_NAME = "dbt_wg"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"  # how Prefect's CLI and API name it: flow/deployment
ENTRYPOINT = f"flows/{DEPLOYMENT_NAME}_flow.py:{FLOW_NAME}"
JOB_TAG_PREFIX = "dbt-cloud-job-"  # the tag of a deployment that runs one dbt Cloud job: dbt-cloud-job-<id>

RUNS_DIR = "DBTFLOW_RUNS_DIR"  # where run folders are kept
RUN_STORAGE = "DBTFLOW_RUN_STORAGE"  # the run store's Prefect block slug, when the run_storage parameter is empty
PROJECT_DIR = "DBTFLOW_PROJECT_DIR"  # set by dbtflow before each step, for profiles' env_var()
ALERT_URL = "DBTFLOW_ALERT_URL"  # the default variable holding a notification webhook URL
SNOWFLAKE_RETRY_SECONDS = "DBTFLOW_SNOWFLAKE_RETRY_SECONDS"
BLOCK_VALUE_PREFIX = "DBTFLOW_BLOCK_"  # a Prefect block's non-secret value passed to dbt (secrets: DBT_ENV_SECRET_)
DEFAULT_RETRY_SECONDS = 120
SNOWFLAKE_PRIVATE_KEY = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY"
SNOWFLAKE_PRIVATE_KEY_FILE = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY_FILE"
SNOWFLAKE_PRIVATE_KEY_PASSPHRASE = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
SNOWFLAKE_PASSWORD = "DBTFLOW_SNOWFLAKE_PASSWORD"
# `dbtflow blocks secret`: the value to store (else a hidden prompt)
SECRET_VALUE = "DBTFLOW_SECRET_VALUE"  # pragma: allowlist secret


def snowflake_setting_env(name: str) -> str:
    """The environment variable a non-secret Snowflake setting can come from.

    Args:
        name: the setting, e.g. `account`.

    Returns:
        Its variable, e.g. `DBTFLOW_SNOWFLAKE_ACCOUNT`.
    """
    return f"DBTFLOW_SNOWFLAKE_{name.upper()}"


@dataclass(frozen=True)
class Settings:
    """The `DBTFLOW_*` environment a run reads, as one object."""

    runs_dir: Path
    snowflake_retry_seconds: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings now (tests and the CLI change the environment between runs).

        Args:
            environ: the environment to read; `os.environ` when None.

        Returns:
            The settings, defaults filled in: runs under `./.dbtflow/runs`, 120 s of Snowflake retries.
            `runs_dir` is absolute, resolved against the current folder now (dbt's steps run in the
            project's folder, so a relative path read later would move there).
        """
        env = os.environ if environ is None else environ
        retry = env.get(SNOWFLAKE_RETRY_SECONDS, "")
        return cls(
            runs_dir=Path(env.get(RUNS_DIR) or Path.cwd() / ".dbtflow" / "runs").expanduser().absolute(),
            snowflake_retry_seconds=int(retry) if retry.isdigit() and int(retry) > 0 else DEFAULT_RETRY_SECONDS,
        )
