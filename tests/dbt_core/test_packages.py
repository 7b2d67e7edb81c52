"""Packages in the request: the automatic `dbt deps` step, and packages files refused in one line (no dbt)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dbtflow.dbt._packages import read_spec
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.run._request import InvalidRequest, build_request
from tests.conftest import TENANT


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(TENANT, copy, ignore=shutil.ignore_patterns("target", "logs", ".duckdb"))
    return copy


def request(project_dir: Path, **params):
    return build_request(load_project(project_dir), target="local", **params)


def test_no_packages_no_deps_step(project_dir: Path) -> None:
    assert request(project_dir).deps_step is None


def test_packages_give_a_deps_step_with_the_runs_vars_and_target(project_dir: Path) -> None:
    (project_dir / "packages.yml").write_text("packages:\n  - local: ../helper\n")

    deps = request(project_dir, vars={"a": 1}, threads=4).deps_step

    assert deps is not None and deps.fatal
    assert deps.argv == ["deps", "--vars", '{"a": 1}', "--target", "local"], "dbt deps takes no --threads"


def test_dependencies_yml_counts_and_projects_alone_do_not(project_dir: Path) -> None:
    (project_dir / "dependencies.yml").write_text("projects:\n  - name: upstream\n")
    assert request(project_dir).deps_step is None
    (project_dir / "dependencies.yml").write_text("packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n")
    assert request(project_dir).deps_step is not None


def test_install_deps_false_or_an_explicit_deps_step_means_no_automatic_one(project_dir: Path) -> None:
    (project_dir / "packages.yml").write_text("packages:\n  - local: ../helper\n")

    assert request(project_dir, install_deps=False).deps_step is None
    explicit = request(project_dir, steps=["deps", "build"])
    assert explicit.deps_step is None
    assert [s.argv for s in explicit.steps] == [["deps", "--target", "local"], ["build", "--target", "local"]]


def test_deps_step_refuses_options_dbt_deps_does_not_take(project_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="dbt deps does not take --threads"):
        request(project_dir, command="deps --threads 4")
    with pytest.raises(InvalidRequest, match="--target-path is not allowed in a step"):
        request(project_dir, command="deps --target-path x")


def test_install_deps_must_be_a_boolean(project_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="install_deps must be true or false, not 'yes'"):
        request(project_dir, install_deps="yes")


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"packages.yml": "packages:\n  - local: a\n   - git: b\n"}, "packages.yml is not valid YAML"),
        ({"packages.yml": "- local: a\n"}, "must be a mapping with a `packages:` list"),
        ({"packages.yml": "packages: {local: a}\n"}, "`packages` must be a list of packages, not a dict"),
        ({"packages.yml": "packages:\n  - name: x\n"}, "packages[0] names no package source"),
        ({"packages.yml": "packages:\n  - 42\n"}, "packages[0] names no package source"),
        (
            {"packages.yml": "packages: []\n", "dependencies.yml": "packages:\n  - local: a\n"},
            "both list packages",
        ),
    ],
    ids=["bad-yaml", "a-list", "packages-a-mapping", "no-source", "not-a-mapping", "both-files"],
)
def test_a_packages_file_that_does_not_parse_is_one_line(
    project_dir: Path, files: dict[str, str], fragment: str
) -> None:
    for name, text in files.items():
        (project_dir / name).write_text(text)

    for install_deps in (True, False):  # dbt reads the file on every command
        with pytest.raises(UserError) as raised:
            request(project_dir, install_deps=install_deps)
        assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_empty_packages_file_declares_nothing(project_dir: Path) -> None:
    (project_dir / "packages.yml").write_text("")
    assert read_spec(project_dir) is None
    (project_dir / "packages.yml").write_text("packages:\n")
    assert read_spec(project_dir) is None


def test_hub_probe_names_the_packages_hides_credentials_and_passes_a_live_hub(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import socket
    import threading
    import time

    from dbtflow.dbt._packages import hub_problem

    (project_dir / "packages.yml").write_text(
        "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n  - local: ../helper\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("DBT_PACKAGE_HUB_URL", f"http://someone:s3cr3t@127.0.0.1:{closed}/")  # pragma: allowlist secret
    started = time.monotonic()
    line = hub_problem(project_dir)
    assert line is not None and time.monotonic() - started < 5
    assert line.startswith(f"cannot install dbt-labs/dbt_utils: the dbt package hub http://127.0.0.1:{closed}/")
    assert "s3cr3t" not in line and "someone" not in line and "\n" not in line

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/api/v1/index.json" else 404)
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DBT_PACKAGE_HUB_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        assert hub_problem(project_dir) is None
    finally:
        server.shutdown()
        server.server_close()
    (project_dir / "packages.yml").write_text("packages:\n  - local: ../helper\n")
    monkeypatch.setenv("DBT_PACKAGE_HUB_URL", f"http://127.0.0.1:{closed}/")
    assert hub_problem(project_dir) is None, "no hub package: the hub is not asked"
