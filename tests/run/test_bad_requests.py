"""Bad requests: one clear line on stderr, exit 2, and dbt never started (no target/, no logs, no run folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app

runner = CliRunner()

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
