"""`dbtflow blocks secret <block>`: the value of a dbt Cloud DBT_ENV_SECRET_* variable into a Prefect Secret block.

Against the session's real Prefect server; the value comes from DBTFLOW_SECRET_VALUE, never argv.
"""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
VALUE = "canary-S3CR3T-7d1a-rotated"  # pragma: allowlist secret (a test value)


def stored(block: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(block).get())  # type: ignore[union-attr]
    except ValueError:
        return None


def test_it_creates_then_rotates_and_never_prints_the_value() -> None:
    block = f"dbt-env-secret-api-key-environment-{uuid.uuid4().hex[:8]}"
    first = runner.invoke(app, ["blocks", "secret", block], env={"DBTFLOW_SECRET_VALUE": "first-value-1234"})
    assert first.exit_code == 0 and first.stdout.strip() == f"created secret/{block}", first.output
    second = runner.invoke(app, ["blocks", "secret", block], env={"DBTFLOW_SECRET_VALUE": VALUE})
    assert second.exit_code == 0 and second.stdout.strip() == f"updated secret/{block}", second.output
    assert stored(block) == VALUE
    assert VALUE not in first.output + second.output and "first-value" not in first.output


@pytest.mark.parametrize(
    ("block", "env", "message"),
    [
        ("Not_A_Block", {"DBTFLOW_SECRET_VALUE": VALUE}, "'Not_A_Block' is not a Prefect block name"),
        ("dbt-env-secret-unset", {"DBTFLOW_SECRET_VALUE": ""}, "no value: set DBTFLOW_SECRET_VALUE"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(block: str, env: dict[str, str], message: str) -> None:
    result = runner.invoke(app, ["blocks", "secret", block], env=env)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.output
    assert VALUE not in result.output
    assert stored(block.lower().replace("_", "-")) is None
