"""`dbtflow deploy --print-cloud-commands`: what it prints is docs/deploy.md's quickstart, and passes
prefect-cloud's own functions; what prefect-cloud would refuse is refused first, in one line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import REPO

PLACEHOLDER = "<org>/<repo>"


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def print_commands(*argv: str) -> Done:
    """`dbtflow deploy --print-cloud-commands ARGV` in the current folder (in-process: Prefect imports once)."""
    from typer.testing import CliRunner

    from dbtflow.cli import app

    result = CliRunner().invoke(app, ["deploy", "--print-cloud-commands", *argv])
    return Done(result.exit_code, result.stdout, result.stderr)


def printed() -> str:
    done = print_commands()
    assert done.returncode == 0, done.stderr
    return re.sub(r"--from \S+", f"--from {PLACEHOLDER}", done.stdout.strip())  # origin's org/repo, if on GitHub


def documented() -> str:
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("## Prefect Cloud (quickstart)", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/deploy.md's quickstart has no bash block"
    return block.group(1).strip()


def commands(text: str) -> list[list[str]]:
    """The shell commands in the text, as argv lists (comments dropped, continued lines joined)."""
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


def parameters(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--parameter"]


def test_the_docs_show_exactly_what_the_command_prints():
    assert documented() == printed()


def test_the_printed_entrypoint_and_parameters_pass_prefect_clouds_functions():
    from prefect_cloud.cli.utilities import process_key_value_pairs
    from prefect_cloud.utilities.callables import get_parameter_schema_from_content

    from dbtflow.dbt._project import load_project
    from dbtflow.run._request import build_request
    from flows.dbt_wg_flow import PROJECT_DIR, run_dbt_wg

    login, deploy, run = (argv for argv in commands(printed()) if argv[:2] == ["uvx", "prefect-cloud"])
    assert (login[2], deploy[2], run[2]) == ("login", "deploy", "run")
    path, function = deploy[3].split(":")
    schema = get_parameter_schema_from_content((REPO / path).read_text(), function)
    assert set(schema.properties) == set(run_dbt_wg.parameters.properties)
    assert deploy[deploy.index("--with-requirements") + 1] == "requirements-prefect.txt"
    assert run[3] == f"{function}/{deploy[deploy.index('--name') + 1]}"
    defaults = process_key_value_pairs(parameters(deploy), as_json=True)
    overrides = process_key_value_pairs(parameters(run), as_json=True)
    assert defaults == {"command": "build", "target": "dev"}
    assert overrides == {"target": "prod", "vars": {"key": "value"}}
    for values in (defaults, {**defaults, **overrides}):
        build_request(load_project(PROJECT_DIR), **run_dbt_wg.validate_parameters(values))


def test_given_parameters_are_printed_quoted_for_the_shell():
    done = print_commands("-p", 'select=["tag:daily","fct_x"]', "-p", "threads=8", "-p", "target=prod")
    assert done.returncode == 0, done.stderr
    (deploy,) = (argv for argv in commands(done.stdout) if argv[:3] == ["uvx", "prefect-cloud", "deploy"])
    assert parameters(deploy) == ["command=build", 'select=["tag:daily","fct_x"]', "threads=8", "target=prod"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "threads=many"], "error: --parameter threads: Input should be a valid integer"),
        (["-p", "engine=slow"], "error: --parameter engine: Input should be 'fast' or 'prefect-dbt'"),
        (["-p", "nope=1"], "error: --parameter nope: run_dbt_wg takes no such parameter; it takes command, target,"),
        (["-p", "target=staging"], "error: --parameter unknown target 'staging'"),
        (["-p", "threads"], "error: --parameter 'threads' is not NAME=VALUE"),
        (["--entrypoint", "flows/dbt_wg_flow.py:run_dbt"], "has no literal `def run_dbt`: prefect-cloud finds"),
        (["--entrypoint", "flows/missing.py:run_dbt_wg"], "not found: run from the repository root"),
    ],
)
def test_bad_input_is_one_line_and_prints_no_commands(argv: list[str], message: str):
    done = print_commands(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_an_entry_file_that_assigns_the_flow_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The entry file as it was (`run_dbt_wg = dbt_flow(...)`), which prefect-cloud exits on."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "dbt_wg_flow.py").write_text(
        "from dbtflow.run._flow import dbt_flow\n\n"
        "run_dbt_wg = dbt_flow('tenants/dbt_williamgrant', name='run_dbt_wg')\n"
    )
    monkeypatch.chdir(tmp_path)
    done = print_commands()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: ") and "no literal `def run_dbt_wg`" in done.stderr
    assert "`run_dbt_wg = dbt_flow(...)` is not found" in done.stderr
