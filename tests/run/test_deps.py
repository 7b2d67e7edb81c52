"""dbt packages through the flow: `deps` as a step, and the automatic `dbt deps` dbt Cloud runs first.

Offline: a `local:` package and a git package served from a `file://` repository made here
(git init, commit, tag); a hub package against a loopback "hub" that accepts and never answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from dbtflow.dbt import _packages as packages
from dbtflow.run._flow import runs_root

pytestmark = pytest.mark.usefixtures("prefect_api")

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def write_macro_package(folder: Path, name: str, macro: str, value: int) -> None:
    (folder / "macros").mkdir(parents=True, exist_ok=True)
    (folder / "dbt_project.yml").write_text(f'name: {name}\nversion: "1.0.0"\nconfig-version: 2\n')
    (folder / "macros" / f"{macro}.sql").write_text(f"{{% macro {macro}() %}}{value}{{% endmacro %}}\n")


def tag(repo: Path, name: str, value: int) -> None:
    write_macro_package(repo, "gitpkg", "git_value", value)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", f"value {value}")
    git(repo, "tag", name)


def packages_yml(project: Path, repo: Path, revision: str) -> None:
    (project / "packages.yml").write_text(
        f'packages:\n  - local: ../helper\n  - git: "{repo.as_uri()}"\n    revision: {revision}\n'
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dbt project whose model uses a macro of a local package and one of a git package (tags v1, v2)."""
    write_macro_package(tmp_path / "helper", "helper", "helper_value", 1)
    repo = tmp_path / "gitpkg"
    repo.mkdir()
    git(repo, "init", "-q")
    tag(repo, "v1", 2)
    tag(repo, "v2", 3)
    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    (proj / "dbt_project.yml").write_text('name: proj\nversion: "1.0.0"\nconfig-version: 2\nprofile: proj\n')
    (proj / "profiles.yml").write_text(
        "proj:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n"
        "      path: \"{{ env_var('DBTFLOW_PROJECT_DIR') }}/proj.duckdb\"\n      threads: 1\n"
    )
    (proj / "models" / "uses_packages.sql").write_text(
        "select {{ helper.helper_value() }} as from_local, {{ gitpkg.git_value() }} as from_git\n"
    )
    packages_yml(proj, repo, "v1")
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    return proj


def dbtflow_run(project: Path, *args: str) -> tuple[Any, dict[str, Any], Path | None]:
    result = CliRunner().invoke(app, ["run", "--project-dir", str(project), "--target", "local", *args])
    folders = sorted(runs_root().iterdir(), key=lambda p: p.stat().st_mtime) if runs_root().exists() else []
    folder = folders[-1] if folders else None
    record = json.loads((folder / "run.json").read_text()) if folder else {}
    return result, record, folder


def built_row(project: Path) -> tuple[int, int]:
    with duckdb.connect(str(project / "proj.duckdb"), read_only=True) as db:
        row = db.execute("select from_local, from_git from main.uses_packages").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_packages_are_installed_first_only_when_the_lock_does_not_match(project: Path) -> None:
    result, record, folder = dbtflow_run(project)

    assert result.exit_code == 0, result.output
    assert [s["command"] for s in record["steps"]] == ["deps", "build"]
    assert record["steps"][0]["step"] is None and record["steps"][0]["reason"] == "no package-lock.yml"
    assert record["steps"][0]["success"] is True and "--target-path" not in record["steps"][0]["argv"]
    assert folder is not None and sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["01-deps", "02-build"]
    assert "ran first, automatically: no package-lock.yml" in (folder / "summary.md").read_text()
    assert "| 1 | `deps --target local` | ok |" in (folder / "summary.md").read_text()
    assert built_row(project) == (1, 2)
    assert (project / "dbt_packages" / "helper").is_symlink()
    lock = (project / "package-lock.yml").read_text()
    assert git(project.parent / "gitpkg", "rev-parse", "v1") in lock

    installed = (project / "dbt_packages" / "gitpkg" / ".git").stat().st_ino
    started = time.perf_counter()
    assert packages.install_reason(project) is None  # the check the flow makes, in a process where it ran before
    check_ms = (time.perf_counter() - started) * 1000
    assert check_ms < 100, f"the deps check took {check_ms:.1f} ms"
    print(f"deps check when nothing needs installing: {check_ms:.1f} ms")

    result, record, folder = dbtflow_run(project)
    assert result.exit_code == 0, result.output
    assert [s["command"] for s in record["steps"]] == ["build"], "the lock matches: nothing to install"
    assert (project / "dbt_packages" / "gitpkg" / ".git").stat().st_ino == installed, "packages were reinstalled"

    packages_yml(project, project.parent / "gitpkg", "v2")
    result, record, folder = dbtflow_run(project)
    assert result.exit_code == 0, result.output
    assert [s["command"] for s in record["steps"]] == ["deps", "build"]
    assert record["steps"][0]["reason"] == "packages.yml changed since package-lock.yml was written"
    assert built_row(project) == (1, 3)


def test_installed_packages_that_differ_from_the_lock_are_reinstalled(project: Path) -> None:
    from dbt.cli.main import dbtRunner

    assert dbtRunner().invoke(["deps", "--project-dir", str(project), "--log-level", "none"]).success
    assert packages.install_reason(project) is None
    installed = project / "dbt_packages"

    (installed / "stray").mkdir()
    assert packages.install_reason(project) == "dbt_packages/stray is not in package-lock.yml"
    (installed / "stray").rmdir()

    repo = installed / "gitpkg"
    git(repo, "fetch", "-q", "origin", "v2")
    git(repo, "reset", "-q", "--hard", "FETCH_HEAD")
    assert str(packages.install_reason(project)).startswith("package 'gitpkg' is installed at revision ")

    (installed / "helper").unlink()
    assert packages.install_reason(project) == "package 'helper' is not installed"


def test_no_install_deps_runs_no_deps(project: Path) -> None:
    result, record, _ = dbtflow_run(project, "--no-install-deps")

    assert result.exit_code == 1, result.output
    assert [s["command"] for s in record["steps"]] == ["build"]
    assert "only 0 package(s) installed" in record["message"], "dbt itself says the packages are missing"
    assert not (project / "dbt_packages").exists()


@pytest.mark.parametrize("engine", ["fast", "prefect-dbt"])
def test_deps_as_the_command(project: Path, engine: str) -> None:
    result, record, _ = dbtflow_run(project, "--command", "deps", "--engine", engine)

    assert result.exit_code == 0, result.output
    assert [s["command"] for s in record["steps"]] == ["deps"], "an explicit deps is not doubled"
    assert record["steps"][0]["success"] is True
    assert packages.install_reason(project) is None


def test_deps_then_build_as_steps(project: Path) -> None:
    result, record, _ = dbtflow_run(project, "--step", "deps", "--step", "build", "--vars", '{"x": 1}')

    assert result.exit_code == 0, result.output
    assert [(s["command"], s["success"]) for s in record["steps"]] == [("deps", True), ("build", True)]
    assert record["steps"][0]["argv"] == ["deps", "--vars", '{"x": 1}', "--target", "local"]
    assert built_row(project) == (1, 2)


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback "hub" that accepts connections and never answers (a network that drops replies)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        monkeypatch.setenv("DBT_PACKAGE_HUB_URL", url)
        yield url


def test_unreachable_hub_fails_in_seconds_before_any_model(project: Path, silent_hub: str) -> None:
    (project / "packages.yml").write_text("packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n")
    started = time.monotonic()
    result, record, folder = dbtflow_run(project)
    seconds = time.monotonic() - started

    assert result.exit_code == 1, result.output
    deps_seconds = record["steps"][0]["seconds"]
    print(f"unreachable hub: deps failed after {deps_seconds:.1f} s, the run ended Failed after {seconds:.1f} s")
    assert deps_seconds < packages.HUB_TIMEOUT + 5, f"deps took {deps_seconds:.0f} s (dbt's retries: minutes)"
    assert [(s["command"], s.get("success")) for s in record["steps"]] == [("deps", False), ("build", None)]
    assert "folder" not in record["steps"][1], "build ran after a failed deps"
    error = record["steps"][0]["error"]
    assert "\n" not in error and "dbt-labs/dbt_utils" in error and silent_hub in error
    assert "vendor the package as a `local:` package" in error and "commit package-lock.yml and dbt_packages/" in error
    assert record["status"] == "failed" and "dbt-labs/dbt_utils" in record["message"]
    assert folder is not None and [p.name for p in folder.iterdir() if p.is_dir()] == ["01-deps"]
    assert not (project / "proj.duckdb").exists(), "a model ran"
    assert not (project / "package-lock.yml").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("packages:\n  - local: ../helper\n   - git: x\n", "packages.yml is not valid YAML"),
        ("packages:\n  - foo: bar\n", "packages[0] names no package source"),
        ("packages: dbt-labs/dbt_utils\n", "`packages` must be a list"),
    ],
    ids=["bad-yaml", "no-source", "not-a-list"],
)
def test_packages_file_that_does_not_parse_is_one_line_and_starts_nothing(
    project: Path, text: str, fragment: str
) -> None:
    (project / "packages.yml").write_text(text)
    result = CliRunner().invoke(app, ["run", "--project-dir", str(project), "--target", "local"])

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "fix it" in lines[0] or "give one of" in lines[0]
    assert not runs_root().exists(), "a run folder was written"
    for left in ("target", "logs", "dbt_packages", "package-lock.yml", "proj.duckdb"):
        assert not (project / left).exists(), f"{left} was written"


def test_a_flow_retry_plans_around_the_automatic_deps_step(project: Path, tmp_path: Path) -> None:
    from dbtflow.dbt._project import load_project
    from dbtflow.run._attempts import plan_attempt
    from dbtflow.run._request import build_request

    request = build_request(load_project(project), target="local")
    folder = tmp_path / "run"
    (folder / "01-deps").mkdir(parents=True)
    (folder / "02-build").mkdir()
    (folder / "02-build" / "run_results.json").write_text('{"results": [{"unique_id": "model.proj.uses_packages"}]}')
    deps = {"command": "deps", "argv": ["deps", "--target", "local"], "fatal": True, "attempt": 1, "step": None}
    build = {"command": "build", "argv": ["build", "--target", "local"], "fatal": True, "attempt": 1, "step": 0}

    def record(*steps: dict[str, Any]) -> None:
        (folder / "run.json").write_text(json.dumps({"attempt": 1, "status": "failed", "steps": list(steps)}))

    record({**deps, "folder": "01-deps", "success": False}, build)
    again = plan_attempt(request, folder, 2)
    assert [(p.index, p.step.command) for p in again.steps] == [(0, "build")], "a failed deps: the whole request"

    record({**deps, "folder": "01-deps", "success": True}, {**build, "folder": "02-build", "success": False})
    resumed = plan_attempt(request, folder, 2)
    assert [(p.index, p.step.command) for p in resumed.steps] == [(0, "retry")]
    assert resumed.first_index == 2, "attempt 2's folders come after 01-deps and 02-build"
