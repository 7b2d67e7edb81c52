"""`make run` against its background Prefect server (scripts/run-server.sh), and `make stop`.

Each test runs the README's commands in a copy of the checkout (Makefile, scripts, the tenant;
.venv linked) with the server's home in tmp and a free port, so a developer's own `make run`
server and folders are never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, TENANT, _build_outputs, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, root / name)  # copy2 keeps mtimes: .venv/.synced stays newer, no re-sync
    shutil.copytree(REPO / "scripts", root / "scripts")
    shutil.copytree(TENANT, root / "tenants" / TENANT.name, ignore=_build_outputs)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBTFLOW_", "MAKE"))}
    env.update(DBTFLOW_SERVER_HOME=str(home), DBTFLOW_SERVER_PORT=str(port), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    return env


def _make(root: Path, env: dict[str, str], target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_starts_one_server_reuses_it_fails_a_failed_run_and_make_stop_stops_it(tmp_path: Path) -> None:
    root, home, port = _checkout(tmp_path), tmp_path / "prefect-home", free_port()
    env, api = _env(home, port), f"http://127.0.0.1:{port}/api"
    try:
        first = _make(root, env, "run")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"Prefect UI: http://127.0.0.1:{port} (server pid" in first.stdout
        assert "started;" in first.stdout
        pid = int((home / "server.pid").read_text())

        second = _make(root, env, "run")
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"server pid {pid}, reused;" in second.stdout  # it answered before the run: no second start
        assert "starting the Prefect server" not in second.stdout
        assert f"View at http://127.0.0.1:{port}/runs/flow-run/" in second.stdout + second.stderr

        (root / "tenants" / TENANT.name / "models" / "zz_broken.sql").write_text("select * from no_such_table\n")
        failed = _make(root, env, "run")
        assert failed.returncode != 0, failed.stdout
        assert "failed: " in failed.stdout and "zz_broken" in failed.stdout

        runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC"}, timeout=30).json()
        assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED", "FAILED"]
        assert int((home / "server.pid").read_text()) == pid and _alive(pid)
    finally:
        stopped = _make(root, env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"stopped the Prefect server (pid {pid})" in stopped.stdout
    assert not _alive(pid)
    assert not (home / "server.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api}/health", timeout=5)
    again = _make(root, env, "stop")
    assert again.returncode == 0 and "no Prefect server of this checkout is running" in again.stdout


def test_make_run_on_a_port_taken_by_another_program_fails_in_one_line_before_dbt(tmp_path: Path) -> None:
    root, home = _checkout(tmp_path), tmp_path / "prefect-home"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = _make(root, _env(home, port), "run")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert lines == [
        f"error: port {port} on 127.0.0.1 is taken by another program, not this checkout's Prefect server; "
        "stop it, or use another port: make run DBTFLOW_SERVER_PORT=<port>"
    ]
    assert not (root / "tenants" / TENANT.name / "target").exists()  # dbt never started
    assert not (home / "server.pid").exists()
