"""Bad requests: one clear line on stderr, exit 2, and dbt never started (no target/, no logs, no run folder)."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from tests.conftest import BIN, free_port

runner = CliRunner()


def _alias_bomb(levels: int = 8, width: int = 9) -> str:
    """YAML whose aliases expand to width**levels values (43 million for 8 x 9) from ~300 bytes of text."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


CASES = [
    # (id, extra CLI args, expected fragment of the one error line)
    ("unknown-command", ["--command", "frobnicate"], "'frobnicate' is not an allowed dbt command"),
    ("forbidden-command", ["--command", "debug"], "'debug' is not an allowed dbt command"),
    ("unknown-target", ["--target", "staging"], "unknown target 'staging'"),
    ("select-semicolon", ["--select", "stg_brands;rm -rf /"], "contains ';'"),
    ("select-pipe", ["--select", "a|b"], "contains '|'"),
    ("select-backtick", ["--select", "`whoami`"], "contains '`'"),
    ("select-newline", ["--select", "stg_brands\n--full-refresh"], "line break"),
    ("select-leading-dashes", ["--select=--full-refresh"], "starts with '-'"),
    ("select-dollar", ["--select", "$(id)"], "contains '$'"),
    ("select-quote", ["--select", "a'b"], 'contains "\'"'),
    ("exclude-ampersand", ["--exclude", "a&&b"], "contains '&'"),
    ("unknown-selector-method", ["--select", "bogus:x"], "unknown selector method 'bogus'"),
    ("state-selection-without-state", ["--select", "state:modified+"], "needs state"),
    ("vars-not-mapping", ["--vars", "[1, 2]"], "must be a mapping"),
    ("vars-scalar", ["--vars", "42"], "must be a mapping"),
    ("vars-invalid-yaml", ["--vars", "{a: [}"], "is not valid JSON or YAML"),
    ("vars-alias-bomb", ["--vars", _alias_bomb()], "vars holds more than 10000 values once YAML aliases are expanded"),
    ("vars-self-alias", ["--vars", "a: &a [*a]"], "vars holds more than 10000 values"),
    ("vars-too-long", ["--vars", '{"k": "' + "x" * 200_000 + '"}'], "vars is 200009 characters long; the limit"),
    ("threads-zero", ["--threads", "0"], "threads must be between 1 and 64, not 0"),
    ("threads-negative", ["--threads", "-3"], "threads must be between 1 and 64, not -3"),
    ("threads-absurd", ["--threads", "10000"], "threads must be between 1 and 64, not 10000"),
    ("timeout-negative", ["--timeout-seconds", "-1"], "timeout_seconds must be between 1"),
    ("timeout-absurd", ["--timeout-seconds", "999999999"], "timeout_seconds must be between 1"),
    ("empty-step", ["--step", "  "], "steps[0] is empty"),
    ("step-forbidden-command", ["--step", "build", "--step", "debug"], "steps[1]: 'debug' is not an allowed"),
    ("step-shell-text", ["--step", "build; rm -rf /"], "'build;' is not an allowed dbt command"),
    ("step-target", ["--step", "build --target prod"], "--target is not allowed in a step"),
    ("step-profiles-dir", ["--step", "run --profiles-dir /tmp"], "--profiles-dir is not allowed in a step"),
    ("step-unknown-option", ["--step", "build --yolo"], "unknown or unsupported option '--yolo'"),
    ("step-option-wrong-command", ["--step", "test --full-refresh"], "dbt test does not take --full-refresh"),
    ("step-unbalanced-quotes", ["--step", "build --select 'a"], "balance its quotes"),
    ("step-positional", ["--step", "build my_model"], "unexpected word 'my_model'"),
    ("run-operation-without-macro", ["--step", "run-operation"], "exactly one macro name"),
    ("state-missing", ["--state", "/no/such/folder"], "'/no/such/folder' is not a folder"),
    ("defer-without-state", ["--defer"], "defer needs state"),
    ("unknown-selector", ["--selector", "nightly"], "no selector 'nightly'"),
    ("selector-with-select", ["--selector", "daily", "--select", "a"], "selector cannot be combined"),
    ("full-refresh-on-test", ["--command", "test", "--full-refresh"], "full_refresh does not apply to test"),
    ("env-var-no-value", ["--env-var", "DBT_REGION"], "--env-var 'DBT_REGION' must be NAME=VALUE"),
    ("env-var-bad-name", ["--env-var", "region=eu"], "'region' is not a valid environment variable name"),
    ("env-var-reserved", ["--env-var", "DBT_CLOUD_JOB_ID=1"], "DBT_CLOUD_JOB_ID uses the reserved prefix"),
    ("env-var-secret-pasted", ["--env-var", "DBT_ENV_SECRET_KEY=Hunter2!"], "must name the Prefect Secret block"),
]


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_is_one_line_and_starts_nothing(tenant: Path, tmp_path: Path, args: list[str], fragment: str):
    result = runner.invoke(app, ["run", "--project-dir", str(tenant), "--target", "local", *args])

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert not (tenant / "target").exists(), "dbt started: it wrote target/"
    assert not (tenant / "logs").exists(), "dbt started: it wrote logs/"
    assert not list((tenant / ".duckdb").glob("*.duckdb")), "dbt started: it opened the database"
    assert not (tmp_path / "runs").exists(), "a run folder was created for an invalid request"


def test_state_folder_without_manifest(tenant: Path, tmp_path: Path):
    empty = tmp_path / "empty-state"
    empty.mkdir()
    result = runner.invoke(app, ["run", "--project-dir", str(tenant), "--target", "local", "--state", str(empty)])
    assert result.exit_code == 2
    assert "has no manifest.json" in result.stderr


@pytest.mark.parametrize(
    "text", ['{"metadata": {"dbt_schema_version": "https://schemas.getdbt', "<html>503</html>", ""]
)
def test_state_folder_with_a_truncated_or_foreign_manifest(tenant: Path, tmp_path: Path, text: str):
    state = tmp_path / "state"
    state.mkdir()
    (state / "manifest.json").write_text(text)
    args = [
        "run",
        "--project-dir",
        str(tenant),
        "--target",
        "local",
        "--select",
        "state:modified+",
        "--state",
        str(state),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: state: {str(state)!r} holds a truncated or non-JSON manifest.json; "
        "copy the artifacts of a previous run again"
    ]
    assert not (tenant / "target").exists(), "dbt started: it wrote target/"


def test_missing_project(tmp_path: Path):
    result = runner.invoke(app, ["run", "--project-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere' / 'dbt_project.yml'} not found: run it from a dbt project or pass --project-dir"
    ]


def test_there_are_at_least_25_distinct_cases():
    assert len({c[2] for c in CASES}) >= 25


@pytest.fixture
def not_prefect() -> Iterator[str]:
    """A web server on loopback that is not Prefect: it answers every GET with 501."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


@pytest.mark.parametrize("kind", ["nothing-listening", "not-a-url", "not-prefect"])
def test_an_unreachable_or_garbage_prefect_api_url_is_one_line_and_dbt_never_starts(
    tenant: Path, tmp_path: Path, kind: str, not_prefect: str
) -> None:
    nothing = f"http://127.0.0.1:{free_port()}/api"
    url = {"nothing-listening": nothing, "not-a-url": "garbage", "not-prefect": not_prefect}
    env = {**os.environ, "PREFECT_API_URL": url[kind], "DBTFLOW_RUNS_DIR": str(tmp_path / "runs")}

    done = subprocess.run(
        [str(BIN / "dbtflow"), "run", "--project-dir", str(tenant), "--target", "local"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: PREFECT_API_URL {url[kind]!r} "), done.stderr
    assert lines[0].endswith("dbt did not start")
    assert ("is not a Prefect API" if kind == "not-prefect" else "cannot be reached") in lines[0]
    assert not (tenant / "target").exists(), "dbt started"
