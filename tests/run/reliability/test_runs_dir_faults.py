"""The runs folder (DBTFLOW_RUNS_DIR) read-only, a file, or on a full disk: real mounts, real dbt.

A read-only folder is a tmpfs mounted `ro` (root, which runs these tests here, ignores permission
bits, so `chmod` would prove nothing); a full disk is a small tmpfs. Mounting needs root
(CAP_SYS_ADMIN): without it these tests are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from dbtflow.run._flow import dbt_flow
from tests.conftest import BIN
from tests.run.reliability.conftest import make_project

MODELS = {f"m{i:02d}": "select 1 as id" for i in range(20)}


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(folder: Path) -> None:
    """Write until the file system says no space is left."""
    with (folder / "filler").open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"x" * 4096)


def dbt_started(project: Path) -> bool:
    return (project / "target").exists() or (project / "mini.duckdb").exists()


@pytest.mark.parametrize("fault", ["read-only", "a-file", "full"])
def test_a_runs_folder_dbtflow_cannot_write_is_one_line_before_dbt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    project = make_project(tmp_path / "mini", MODELS)
    with contextlib.ExitStack() as stack:
        if fault == "read-only":
            runs = stack.enter_context(tmpfs(tmp_path / "mnt", "ro,size=1m")) / "runs"
            expected = "is on a read-only file system"
        elif fault == "a-file":
            runs = tmp_path / "runs"
            runs.write_text("not a folder\n")
            expected = "is a file, not a folder"
        else:
            runs = stack.enter_context(tmpfs(tmp_path / "mnt", "size=256k"))
            fill(runs)
            expected = "is on a full disk (no space left on device)"
        monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(runs))

        result = CliRunner().invoke(app, ["run", "--project-dir", str(project)])

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: DBTFLOW_RUNS_DIR {runs} {expected}; free space there, or point DBTFLOW_RUNS_DIR at a "
        "writable folder (dbt did not start)"
    ], result.stderr
    assert not dbt_started(project)


@pytest.mark.usefixtures("prefect_api")
def test_the_flow_refuses_a_read_only_runs_folder_before_dbt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment's run (no CLI in front of it) ends Failed with the same line, and dbt never starts."""
    project = make_project(tmp_path / "mini", MODELS)
    with tmpfs(tmp_path / "mnt", "ro,size=1m") as mount:
        monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(mount / "runs"))
        state = dbt_flow(project, name="runs_dir_faults")(target="local", return_state=True)

    assert state.is_failed()
    assert state.message.startswith(f"DBTFLOW_RUNS_DIR {mount / 'runs'} is on a read-only file system"), state.message
    assert not dbt_started(project)


def test_a_runs_disk_that_fills_during_the_run_says_so_once_and_keeps_dbts_outcome(
    tmp_path: Path, prefect_api: str
) -> None:
    project = make_project(tmp_path / "mini", MODELS)
    with tmpfs(tmp_path / "mnt", "size=160k") as runs:
        env = {**os.environ, "DBTFLOW_RUNS_DIR": str(runs), "PREFECT_API_URL": prefect_api}
        done = subprocess.run(
            [str(BIN / "dbtflow"), "run", "--project-dir", str(project)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        leftovers = [p.name for p in runs.rglob("*.tmp") if p.stat().st_size == 0]

    output = done.stdout + done.stderr
    assert "--- Logging error ---" not in output, output[-3000:]
    assert output.count("no space left on device") >= 1, output[-3000:]
    assert len(output.splitlines()) < 200, f"{len(output.splitlines())} lines of output"
    tables = duckdb.connect(str(project / "mini.duckdb")).sql("select count(*) from information_schema.tables")
    assert tables.fetchone() == (20,), "dbt built every model"
    results = json.loads((project / "target" / "local" / "run_results.json").read_text())
    assert {r["status"] for r in results["results"]} == {"success"}
    assert "completed: dbt on local: 20 success" in done.stdout, output[-3000:]  # dbt's own outcome
    assert not leftovers, f"half-written files left: {leftovers}"
