"""dbtflow's settings: the names of the `DBTFLOW_*` environment variables, in one place.

Contract
- Every environment variable dbtflow reads is named here, and only here; modules import the
  name (or the helper that builds it), never spell the string themselves.
- Light: no Prefect, no dbt (the CLI imports it at start-up, and `dbtflow --help` stays fast).

Pitfalls
- The secret-bearing variables (`SNOWFLAKE_PRIVATE_KEY`, `SNOWFLAKE_PASSWORD`, ...) are read
  only where the secret is used (`dbtflow.secrets`); never log or echo their values.
"""

from __future__ import annotations

SNOWFLAKE_PRIVATE_KEY = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY"
SNOWFLAKE_PRIVATE_KEY_FILE = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY_FILE"
SNOWFLAKE_PRIVATE_KEY_PASSPHRASE = "DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
SNOWFLAKE_PASSWORD = "DBTFLOW_SNOWFLAKE_PASSWORD"


def snowflake_setting_env(name: str) -> str:
    """The environment variable a non-secret Snowflake setting can come from.

    Args:
        name: the setting, e.g. `account`.

    Returns:
        Its variable, e.g. `DBTFLOW_SNOWFLAKE_ACCOUNT`.
    """
    return f"DBTFLOW_SNOWFLAKE_{name.upper()}"
