"""Fixtures for the fault tests: a small dbt project on DuckDB that a test shapes to its fault.

The tenant project is the real thing, but parsing it costs seconds that a timeout or a retry
test would have to budget for on a loaded machine; a project of a few models keeps the fault,
not dbt's parse, in the measurement. Every project runs through the same generic flow.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROFILES = """\
mini:
  target: local
  outputs:
    local:
      type: duckdb
      path: "{{ env_var('DBTFLOW_PROJECT_DIR') }}/mini.duckdb"
      schema: main
      threads: 4
"""
# A query DuckDB needs minutes for (10^11 rows), as a table so dbt waits for it; cancellable.
SLOW_SQL = (
    "{{ config(materialized='table') }}\nselect sum(a.range * b.range) as n from range(100000) a, range(1000000) b"
)


# A Python model that holds dbt until the test touches $DBTFLOW_TEST_RELEASE: a fault happens while dbt runs.
WAITER = """
import os, time

def model(dbt, session):
    dbt.config(materialized="table")
    deadline = time.time() + 600
    while not os.path.exists(os.environ["DBTFLOW_TEST_RELEASE"]) and time.time() < deadline:
        time.sleep(0.2)
    return session.sql("select 1 as id")
"""


def make_project(root: Path, models: dict[str, str], project_yml: str = "", target_yml: str = "") -> Path:
    """A dbt project `mini` in `root` with these models (name -> SQL) and a DuckDB `local` target.

    `project_yml` is added to dbt_project.yml, `target_yml` (YAML at the target's level) to the target.
    """
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(
        'name: mini\nversion: "1.0"\nprofile: mini\nconfig-version: 2\n' + textwrap.dedent(project_yml)
    )
    (root / "profiles.yml").write_text(PROFILES + textwrap.indent(textwrap.dedent(target_yml), " " * 6))
    for name, sql in models.items():
        (root / "models" / f"{name}.sql").write_text(sql + "\n")
    return root


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(runs))
    return runs


def can_write(database: Path) -> str:
    """Open the DuckDB file for writing from another process: 'ok', or DuckDB's error."""
    code = (
        "import duckdb, sys; "
        "duckdb.connect(sys.argv[1]).execute('create or replace table probe as select 1'); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code, str(database)], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def live_threads() -> dict[int, str]:
    return {t.ident or 0: t.name for t in threading.enumerate()}


# A process that holds a DuckDB file open for writing (DuckDB's file lock), as another tool would.
# It lets go at stdin's EOF, or some seconds after a file matching a glob contains a text.
_HOLDER = """
import duckdb, glob, sys, time
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists holder as select 1 as x")
print("locked", flush=True)
if len(sys.argv) > 3:
    def seen():
        for path in glob.glob(sys.argv[2]):
            try:
                if sys.argv[3] in open(path, errors="replace").read():
                    return True
            except OSError:
                pass
        return False
    while not seen():
        time.sleep(0.1)
    time.sleep(float(sys.argv[4]))
else:
    sys.stdin.read()
con.close()
"""


@contextlib.contextmanager
def duckdb_locked(
    database: Path, release_when: tuple[str, str] | None = None, delay: float = 0
) -> Iterator[subprocess.Popen[str]]:
    """Hold `database` locked until the block ends, or `delay` s after a file matching a glob contains a text."""
    database.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", _HOLDER, str(database), *(release_when or ()), str(delay)]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        try:
            holder.wait(30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
