"""Shared fixtures: the tenant copied per test, a real Prefect server on loopback per session.

Prefect's home, database and settings are isolated before Prefect is imported, so the suite
never touches ~/.prefect or a server of the developer's.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.shared_dir import SHARED  # noqa: F401 (re-exported: tests import SHARED from here)

REPO = Path(__file__).resolve().parents[1]
TENANT = REPO / "tenants" / "dbt_williamgrant"
BIN = Path(sys.executable).parent

_HOME = Path(tempfile.mkdtemp(prefix="dbtflow-test-prefect-"))
os.environ.update(
    PREFECT_HOME=str(_HOME),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    PREFECT_LOGGING_LEVEL="INFO",
)


_KEEP: list[object] = []


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the local stack share one stack: under xdist (`make test`) they run on one worker, in order."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("stack"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run the stack tests split over workers (two stacks at once; a module's fixtures set up twice)."""
    if not session.config.getoption("loadgroup", False):  # set on xdist's workers under --dist loadgroup
        return
    lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {lost[0]} (pytest-xdist#1386, pytest 9.2): keep pytest <9.2 in pyproject.toml"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrefectServer:
    """A `prefect server start` on a free loopback port, with its own home and database.

    With `port` (and the home of a stopped one), the same server again: same address, same database.
    `env` adds server settings (e.g. PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE).
    """

    def __init__(self, home: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log = (home / "server.log").open("a")
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            "PREFECT_UI_ENABLED": "false",
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real Prefect server for the whole session; this process points at it from now on."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    # Stopped at interpreter exit, after Prefect's own exit hooks (registered later, run earlier)
    # have sent the last logs and events: stopping it at session teardown loses them noisily.
    atexit.register(server.stop)
    # Point this process at the server for the rest of its life, not just the session: Prefect's
    # exit hooks still send logs and events, and without an API URL they would start an ephemeral one.
    os.environ["PREFECT_API_URL"] = server.url
    settings = temporary_settings(updates={PREFECT_API_URL: server.url})
    settings.__enter__()
    _KEEP.append(settings)  # an unreferenced context manager would be closed by the GC
    return server.url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The local Prefect stack (server, process worker, the deployment): one per session, see tests/e2e/conftest.py."""
    from tests.e2e.conftest import start_stack

    yield from start_stack(tmp_path_factory)


def _build_outputs(folder: str, names: list[str]) -> set[str]:
    if Path(folder).name == ".duckdb":
        return {n for n in names if n != ".gitignore"}
    return {n for n in names if n in ("target", "logs")}


@pytest.fixture
def tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tenant project (no target/, logs/ or database), runs kept in tmp."""
    copy = tmp_path / "dbt_williamgrant"
    shutil.copytree(TENANT, copy, ignore=_build_outputs)
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    return copy
