"""The local Prefect stack (`scripts/local-stack.sh`, what `make deploy-local` runs) for e2e tests.

One stack per test session (the fixture `stack`, defined in tests/conftest.py so that
tests/run/reliability shares it), stopped at its end. It runs in a temporary folder from a
git snapshot of this working tree: each flow run clones it and runs the pull steps of
prefect.yaml, as on any Prefect server. In the snapshot the tenant's dev and prod targets are
DuckDB (the project is otherwise the same), so scheduled dev and prod runs build for real
without Snowflake.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, free_port

DEPLOYMENT = "run_dbt_wg/dbt_wg"
DUCKDB_PROFILES = """\
dbt_williamgrant:
  target: local
  outputs:
{outputs}
"""


@dataclass
class Stack:
    api: str
    folder: Path
    env: dict[str, str]

    def cli(self, *argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> None:
        self._call("PATCH", path, body)

    def delete(self, path: str) -> None:
        self._call("DELETE", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One API call, retried as Prefect's client retries: on 502/503 and, for calls safe to repeat, on a
        timeout or a dropped connection. The stack's SQLite-backed server can stall for its database's
        busy timeout (60 s) on a loaded machine and then answer 503 (the write rolled back): the client
        waits longer than that, so even a POST that creates gets that 503 and is retried, never repeated blind."""
        repeatable = method != "POST" or path.endswith("/filter")
        for attempt in range(6):
            last = attempt == 5
            try:
                response = httpx.request(method, f"{self.api}{path}", json=body, timeout=150)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError):
                if last or not repeatable:
                    raise
            else:
                if response.status_code not in (502, 503) or last:
                    return response.raise_for_status().json() if response.content else None
            time.sleep(2 + attempt * 2)

    def deployment(self) -> dict[str, Any]:
        flow, name = DEPLOYMENT.split("/")
        return self.get(f"/deployments/name/{flow}/{name}")  # type: ignore[no-any-return]

    def run_folder(self, flow_run_id: str) -> Path:
        return self.folder / "runs" / flow_run_id


def _snapshot(folder: Path) -> Path:
    """This working tree (committed or not) as a one-commit git repository, dev/prod on DuckDB."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            (folder / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name.decode())
    outputs = "\n".join(
        f"    {t}:\n      type: duckdb\n      schema: main\n      threads: 4\n"
        f"      path: \"{{{{ env_var('DBTFLOW_PROJECT_DIR', '.') }}}}/.duckdb/wg_{t}.duckdb\""
        for t in ("local", "dev", "prod")
    )
    (folder / "tenants/dbt_williamgrant/profiles.yml").write_text(DUCKDB_PROFILES.format(outputs=outputs))
    git = ["git", "-c", "user.email=e2e@dbtflow", "-c", "user.name=e2e"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=folder, check=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=folder, check=True)
    return folder


def start_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack behind the session fixture `stack` (tests/conftest.py, shared with tests/run/reliability)."""
    root = tmp_path_factory.mktemp("stack")
    repo = _snapshot(root / "repo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBTFLOW_"))}
    env.update(
        DBTFLOW_LOCAL_DIR=str(root / "local"),
        DBTFLOW_LOCAL_PORT=str(port),
        DBTFLOW_GIT_REPOSITORY=str(repo),
        DBTFLOW_GIT_BRANCH="main",
        DBTFLOW_WORK_POOL="local-process",
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_HOME=str(root / "local" / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
        # a run waiting for its target's slot asks again after ~2 s on average (the server's Retry-After:
        # random, around min(this, the slot's mean hold); Prefect's default cap is 30 s), so the load
        # test's queue of 20 runs drains in minutes, not in 20 handoffs of up to half a minute
        PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS="2",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    script = [str(REPO / "scripts" / "local-stack.sh")]
    started = subprocess.run([*script, "start"], env=env, capture_output=True, text=True, timeout=600)
    stack = Stack(env["PREFECT_API_URL"], root / "local", env)
    try:
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"
        yield stack
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=120)
