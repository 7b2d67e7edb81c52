"""`dbtflow blocks`: create, update and rotate a target's Snowflake blocks in Prefect.

Contract
- `dbtflow blocks setup --target dev` writes the blocks the target's profiles.yml refers to
  (see `dbtflow.secrets._blocks`) and prints one line per block: created, updated or rotated with the
  names of the fields it changed, or unchanged. It never prints a value.
- Non-secret settings come from options or their environment variables
  (`--account` or DBTFLOW_SNOWFLAKE_ACCOUNT, ...); settings not given keep their stored value.
- Secrets come only from environment variables or a hidden prompt, never from argv:
  DBTFLOW_SNOWFLAKE_PRIVATE_KEY (PEM text) or a key file (`--private-key-file`, a path, not a
  secret), DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE, DBTFLOW_SNOWFLAKE_PASSWORD. The prompt is
  offered only on a terminal.
- `--rotate` replaces only the secrets of the credentials block; the other blocks refer to it,
  so runs pick up the new values with no file or deployment change.
- `dbtflow blocks secret <block>` creates or replaces one Prefect Secret block (the value of a
  dbt Cloud `DBT_ENV_SECRET_*` variable, named by `dbtflow cloud import-jobs`) from the
  environment variable DBTFLOW_SECRET_VALUE or a hidden prompt, and prints `created|updated <block>`.
- A user error is one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from dbtflow.cli._common import err, fail, out
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.settings import (
    SECRET_VALUE,
    SNOWFLAKE_PASSWORD,
    SNOWFLAKE_PRIVATE_KEY,
    SNOWFLAKE_PRIVATE_KEY_FILE,
    snowflake_setting_env,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Create, update and rotate Prefect blocks.")


def _setting(help: str, name: str) -> typer.models.OptionInfo:
    return cast(typer.models.OptionInfo, typer.Option(envvar=snowflake_setting_env(name), help=help, show_envvar=True))


@app.callback()
def main() -> None:
    """Prefect blocks that hold a target's Snowflake connection; secrets never come from argv."""


@app.command()
def setup(
    target: Annotated[str, typer.Option("--target", "-t", help="The profiles.yml target, e.g. dev or prod.")],
    project_dir: Annotated[Path, typer.Option(help="The dbt project folder.")] = Path("."),
    profiles_dir: Annotated[Path | None, typer.Option(help="Folder of profiles.yml.")] = None,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace only the secrets; keep the rest.")] = False,
    auth: Annotated[str | None, typer.Option(help="keypair (default for new blocks) or password.")] = None,
    account: Annotated[str | None, _setting("Snowflake account identifier, e.g. myorg-myaccount.", "account")] = None,
    user: Annotated[str | None, _setting("Snowflake (service) user.", "user")] = None,
    role: Annotated[str | None, _setting("Role to use.", "role")] = None,
    warehouse: Annotated[str | None, _setting("Warehouse.", "warehouse")] = None,
    database: Annotated[str | None, _setting("Database.", "database")] = None,
    schema: Annotated[str | None, _setting("Default schema.", "schema")] = None,
    host: Annotated[str | None, _setting("Endpoint host override (PrivateLink, proxy, test).", "host")] = None,
    port: Annotated[int | None, _setting("Endpoint port override.", "port")] = None,
    protocol: Annotated[str | None, _setting("Endpoint protocol override: https or http.", "protocol")] = None,
    private_key_file: Annotated[
        Path | None,
        typer.Option(envvar=SNOWFLAKE_PRIVATE_KEY_FILE, show_envvar=True, help="File holding the PEM private key."),
    ] = None,
) -> None:
    """Create or update the target's blocks; with --rotate, replace only their secrets.

    Secrets come from the environment (or a hidden prompt on a terminal), never from the command
    line: DBTFLOW_SNOWFLAKE_PRIVATE_KEY (PEM text) or --private-key-file, plus
    DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE for an encrypted key; DBTFLOW_SNOWFLAKE_PASSWORD
    with --auth password. Prints what was created, updated or rotated, never a value.
    """
    # lazy: the blocks module imports Prefect and its collections; importing it here keeps `dbtflow --help` fast
    from dbtflow.secrets._blocks import AuthKind, Settings, read_secrets, setup_target

    try:
        if auth not in (None, "keypair", "password"):
            raise UserError(f"--auth must be keypair or password, not {auth!r}")
        if protocol not in (None, "", "http", "https"):
            raise UserError(f"--protocol must be https or http, not {protocol!r}")
        if port is not None and not 0 <= port <= 65535:
            raise UserError(f"--port must be between 1 and 65535, not {port}")
        project = load_project(project_dir, profiles_dir)
        settings = Settings(account, user, role, warehouse, database, schema, host, port, protocol)
        kind = cast(AuthKind | None, auth)
        prompt = _hidden_prompt if sys.stdin.isatty() else None
        secrets = read_secrets(kind or _default_kind(), os.environ, key_file=private_key_file, prompt=prompt)
        _where_blocks_go()
        changes = setup_target(project, target, settings, secrets, auth=kind, rotate=rotate)
    except UserError as exc:
        raise fail(exc) from None
    for change in changes:
        out.print(str(change), markup=False, highlight=False, soft_wrap=True)


@app.command("secret")
def secret(
    block: Annotated[str, typer.Argument(help="The Secret block's name, e.g. dbt-env-secret-api-key-env-102.")],
) -> None:
    """Create or replace a Prefect Secret block (e.g. a DBT_ENV_SECRET_* value) from DBTFLOW_SECRET_VALUE or a prompt.

    The value never comes from the command line; runs read the block when they start.
    """
    # lazy: the env-vars module imports Prefect; importing it here keeps `dbtflow --help` fast
    from dbtflow.secrets._env_names import BLOCK_NAME
    from dbtflow.secrets._env_vars import store_secret

    try:
        if not BLOCK_NAME.match(block):
            raise UserError(f"{block[:80]!r} is not a Prefect block name: use lower-case letters, digits and dashes")
        value = os.environ.get(SECRET_VALUE) or (
            _hidden_prompt(f"value of {block} (hidden)") if sys.stdin.isatty() else ""
        )
        if not value:
            raise UserError(f"no value: set {SECRET_VALUE} (or run on a terminal to be prompted); nothing was written")
        _where_blocks_go()
        action = store_secret(block, value)
    except UserError as exc:
        raise fail(exc) from None
    out.print(f"{action} secret/{block}", markup=False, highlight=False)


def _where_blocks_go() -> None:
    """Say so when no Prefect API is configured (env or Prefect profile): the blocks would stay on this machine."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        err.print("note: no PREFECT_API_URL (env or Prefect profile): the blocks go to this machine's local Prefect")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _default_kind() -> Literal["keypair", "password"]:
    """With no --auth, a password in the environment means password auth; anything else key-pair."""
    if os.environ.get(SNOWFLAKE_PASSWORD) and not (
        os.environ.get(SNOWFLAKE_PRIVATE_KEY) or os.environ.get(SNOWFLAKE_PRIVATE_KEY_FILE)
    ):
        return "password"
    return "keypair"


def _hidden_prompt(text: str) -> str:
    return str(typer.prompt(text, hide_input=True, default="", show_default=False))
